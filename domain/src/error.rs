use thiserror::Error;

/// A value that cannot be accepted, with a stable machine-readable code.
///
/// The `code` is part of the HTTP contract (`{"code": ..., "message": ...}`), so
/// codes are only ever added, never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            field,
            message: message.into(),
        }
    }
}
