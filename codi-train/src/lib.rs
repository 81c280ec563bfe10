//! Training for codi: datasets and (to come) task pipelines, pretraining and distillation with burn-train.

pub mod data;
pub mod error;

pub use error::TrainError;
