use std::path::PathBuf;
use thiserror::Error;

/// Errors of the inference crate; each names the file it concerns.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// A file that could not be read, written or understood.
    #[error("{}: {reason}", file.display())]
    Data {
        /// The file concerned.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Tensors given to a pipeline in a shape it cannot take.
    #[error("{0}")]
    Shape(String),
    /// A network's config or weights.
    #[error(transparent)]
    Model(#[from] codi_models::ModelError),
    /// A schedule, sampler or loss setting.
    #[error(transparent)]
    Core(#[from] codi_core::CoreError),
}
