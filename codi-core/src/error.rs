use thiserror::Error;

/// Errors of the maths crate: every one names the value that was wrong.
#[derive(Debug, Error, PartialEq)]
pub enum CoreError {
    #[error("unknown {what} '{value}' (expected one of: {expected})")]
    UnknownName {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> CoreError {
    CoreError::Invalid {
        what,
        reason: reason.into(),
    }
}
