use std::path::PathBuf;
use thiserror::Error;

/// Errors of the networks crate; every one names the file it concerns.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{}: {reason}", file.display())]
    Io { file: PathBuf, reason: String },
    #[error("{}: invalid config: {reason}", file.display())]
    Config { file: PathBuf, reason: String },
    #[error("{}: codi does not implement {what}", file.display())]
    Unsupported { file: PathBuf, what: String },
    #[error("{}: weights do not match the model:\n{details}", file.display())]
    Weights { file: PathBuf, details: String },
}
