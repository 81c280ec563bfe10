//! The error type of codi-core.

use thiserror::Error;

/// Errors of the maths crate: every one names the value that was wrong.
#[derive(Debug, Error, PartialEq)]
pub enum CoreError {
    /// A name (of a schedule, sampler, spacing, …) that is not one of the accepted ones.
    #[error("unknown {what} '{value}' (expected one of: {expected})")]
    UnknownName {
        /// What kind of name it was, e.g. "beta schedule".
        what: &'static str,
        /// The name as given.
        value: String,
        /// The accepted names, comma-separated.
        expected: &'static str,
    },
    /// A value outside its valid range or inconsistent with another.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What the value was, e.g. "num_train_timesteps".
        what: &'static str,
        /// Why it is invalid, with the value itself.
        reason: String,
    },
}

pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> CoreError {
    CoreError::Invalid {
        what,
        reason: reason.into(),
    }
}
