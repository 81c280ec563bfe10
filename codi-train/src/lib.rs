//! Training for codi: datasets and (to come) task pipelines, pretraining and distillation with burn-train.

pub mod conditional;
pub mod curves;
pub mod data;
pub mod demo;
pub mod distill;
pub mod error;
pub mod evaluate;
pub mod image_io;
pub mod pipeline;
pub mod pretrain;
pub mod tasks;
pub mod text;
pub mod training;

pub use error::TrainError;
