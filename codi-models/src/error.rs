//! The error type of codi-models.

use std::path::PathBuf;
use thiserror::Error;

/// Errors of the networks crate; every one names the file it concerns.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file or folder is missing, cannot be read or written, or is rejected by the tokenizer or the
    /// safetensors store.
    #[error("{}: {reason}", file.display())]
    Io {
        /// The file or folder concerned.
        file: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A config file (or tokenizer vocabulary) is malformed or inconsistent.
    #[error("{}: invalid config: {reason}", file.display())]
    Config {
        /// The file concerned.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A config asks for an option or a model class codi does not implement.
    #[error("{}: codi does not implement {what}", file.display())]
    Unsupported {
        /// The config file.
        file: PathBuf,
        /// The option and its value, or the class.
        what: String,
    },
    /// The weight files do not match the model.
    #[error("{}: weights do not match the model:\n{details}", file.display())]
    Weights {
        /// The first weight file.
        file: PathBuf,
        /// The missing keys, unused keys and shape mismatches, one per line under a heading each.
        details: String,
    },
}
