pub mod bench;
pub mod bench_models;
pub mod inspect;
pub mod schedule;
