use std::path::PathBuf;
use thiserror::Error;

/// Errors of the training crate; each names the file it concerns and, for missing data, how to get it.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("{}: {reason}", file.display())]
    Data { file: PathBuf, reason: String },
    /// A config (after the command line's changes) outside its bounds.
    #[error("the run's config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] codi_models::ModelError),
    #[error(transparent)]
    Core(#[from] codi_core::CoreError),
    #[error(transparent)]
    Pipeline(#[from] codi_pipelines::PipelineError),
}
