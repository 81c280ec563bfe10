pub mod bench;
pub mod bench_models;
pub mod distill;
pub mod eval;
pub mod inspect;
pub mod pretrain;
pub mod sample;
pub mod schedule;
