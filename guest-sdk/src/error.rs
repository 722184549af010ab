use std::fmt;

use crate::__private::bindings::snapshot::strategy::types::{ErrorKind, HostError};

/// Why a strategy call failed. The message reaches the user as the reason for a failed
/// snapshot or restore, so it should name what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

/// Result type of the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with this message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error { message: message.into() }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error { message }
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::msg(message)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::msg(e.to_string())
    }
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        Error::msg(host_error_message(&e))
    }
}

pub(crate) fn host_error_message(e: &HostError) -> String {
    let kind = match e.kind {
        ErrorKind::Io => "storage error",
        ErrorKind::Invalid => "invalid call",
        ErrorKind::Limit => "limit reached",
        ErrorKind::Closed => "resource closed",
    };
    format!("{kind}: {}", e.message)
}

pub(crate) fn host_to_io(e: HostError) -> std::io::Error {
    let kind = match e.kind {
        ErrorKind::Io => std::io::ErrorKind::Other,
        ErrorKind::Invalid => std::io::ErrorKind::InvalidInput,
        ErrorKind::Limit => std::io::ErrorKind::QuotaExceeded,
        ErrorKind::Closed => std::io::ErrorKind::BrokenPipe,
    };
    std::io::Error::new(kind, host_error_message(&e))
}
