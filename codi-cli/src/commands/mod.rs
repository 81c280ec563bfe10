pub mod bench;
pub mod schedule;
