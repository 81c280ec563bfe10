//! Training for codi: datasets, the tasks' training pairs, pretraining of the embedded default and CoDi / PE-CoDi
//! distillation with burn-train, evaluation runs. Sampling and loading pipelines live in codi-pipelines.

pub mod compare;
pub mod data;
pub mod demo;
pub mod distill;
pub mod error;
pub mod evaluate;
pub mod pretrain;
pub mod tasks;
pub mod text;
pub mod training;

pub use error::TrainError;
