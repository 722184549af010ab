//! The library's one error type: what a caller can match on ([`ErrorKind`]) plus the cause
//! kept as a [`source`](std::error::Error::source) chain, never flattened into a string.
//!
//! Internally every layer keeps its own precise error enum (plugin, storage, restore,
//! configuration, ...); they become the source of an [`Error`] at the facade, so a caller
//! that needs the detail can still [`downcast`](Error::downcast_ref) to it.

use std::error::Error as StdError;
use std::fmt;

use crate::backend::BackendError;
use crate::config::ConfigError;
use crate::key_groups::KeyGroupError;
use crate::operator_backend::OperatorStateError;
use crate::restore::RestoreError;
use crate::runtime::PluginError;
use crate::storage::StorageError;

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is: the question a caller decides on (retry, fall back,
/// alert, fix the configuration), independent of which layer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting (configuration key, builder argument, parallelism) is invalid. Retrying does
    /// not help; the input must change.
    Config,
    /// Checkpoint storage (the primary, or a local copy) failed: I/O, the object store, a
    /// missing file. Often transient.
    Storage,
    /// The strategy plugin cannot be loaded or failed on its own (trapped, returned an error,
    /// cannot read this checkpoint's format).
    Plugin,
    /// The plugin broke the host's contract (wrote outside its stream, skipped a key group,
    /// restored entries of another range): a bug in the plugin.
    Contract,
    /// Stored bytes do not match the checksums recorded when they were written, or metadata is
    /// damaged. The restore falls back to another copy; this kind surfaces when none is left.
    Corrupt,
    /// A limit was reached: the plugin's memory, fuel, deadline or output, or the shared memory
    /// budget.
    Limit,
    /// The operation was cancelled (its checkpoint was aborted, or the caller cancelled).
    Cancelled,
    /// The API was used out of order or with foreign arguments (an acknowledgement handed to
    /// another job's coordinator, a key outside the subtask's key groups).
    Usage,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Config => "configuration",
            ErrorKind::Storage => "storage",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Contract => "contract violation",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::Limit => "limit",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Usage => "usage",
        })
    }
}

/// An error of the snapshot host: a [`kind`](Error::kind), optionally what was being done
/// when it happened, and the cause.
///
/// `Display` shows the context when there is one (the cause is then the first
/// [`source`](StdError::source)), otherwise the cause itself; printing the whole chain (as
/// `anyhow` does with `{:#}`) therefore says everything once.
///
/// ```
/// use snapshot_host::{ErrorKind, SnapshotHost};
///
/// let error = SnapshotHost::builder("job").parallelism(0).build().unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::Config);
/// assert!(error.to_string().contains("parallelism"), "{error}");
/// ```
pub struct Error {
    kind: ErrorKind,
    context: Option<String>,
    cause: Box<dyn StdError + Send + Sync + 'static>,
}

impl Error {
    /// An error of `kind` caused by `cause`.
    pub fn new(kind: ErrorKind, cause: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Error { kind, context: None, cause: cause.into() }
    }

    /// An error of `kind` described by `message` alone.
    pub fn msg(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error::new(kind, message.to_string())
    }

    /// Adds what was being done; the previous text becomes the first cause.
    pub fn context(self, what: impl fmt::Display) -> Self {
        match self.context {
            None => Error { kind: self.kind, context: Some(what.to_string()), cause: self.cause },
            Some(_) => {
                let kind = self.kind;
                Error { kind, context: Some(what.to_string()), cause: Box::new(self) }
            }
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message and its causes on one line, `a: b: c`, leaving out a cause whose text is
    /// already part of what precedes it (many layers quote their cause): for logs and reports.
    pub fn display_chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = StdError::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = cause.source();
        }
        out
    }

    /// The cause, to inspect the layer's own error type.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        let mut current: Option<&(dyn StdError + 'static)> = Some(self.cause.as_ref());
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `unwrap()` and `main() -> Result` print Debug: make that readable, with the chain.
        write!(f, "{} error: {self}", self.kind)?;
        let mut source = StdError::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.context {
            Some(context) => f.write_str(context),
            None => fmt::Display::fmt(&self.cause, f),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.context {
            Some(_) => Some(self.cause.as_ref()),
            None => self.cause.source(),
        }
    }
}

/// The kind of a plugin failure.
pub(crate) fn plugin_kind(e: &PluginError) -> ErrorKind {
    match e {
        PluginError::Contract { .. } => ErrorKind::Contract,
        PluginError::Limit { .. } => ErrorKind::Limit,
        PluginError::Storage { .. } => ErrorKind::Storage,
        PluginError::Corrupt { .. } => ErrorKind::Corrupt,
        PluginError::Cancelled { .. } => ErrorKind::Cancelled,
        _ => ErrorKind::Plugin,
    }
}

fn restore_kind(e: &RestoreError) -> ErrorKind {
    match e {
        RestoreError::PluginMismatch { .. } => ErrorKind::Plugin,
        RestoreError::MaxParallelismMismatch { .. } => ErrorKind::Config,
        RestoreError::Cancelled { .. } => ErrorKind::Cancelled,
        RestoreError::AllAlternativesFailed { failures, .. } => {
            let kinds: Vec<ErrorKind> = failures.iter().map(|f| plugin_kind(&f.error)).collect();
            if !kinds.is_empty() && kinds.iter().all(|k| *k == ErrorKind::Corrupt) {
                ErrorKind::Corrupt
            } else {
                // The primary is tried last: its failure is the one that decided.
                kinds.last().copied().unwrap_or(ErrorKind::Storage)
            }
        }
    }
}

impl From<PluginError> for Error {
    fn from(e: PluginError) -> Self {
        Error::new(plugin_kind(&e), e)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        let kind = match &e {
            StorageError::Corrupted { .. } => ErrorKind::Corrupt,
            StorageError::InvalidId(_) => ErrorKind::Config,
            _ => ErrorKind::Storage,
        };
        Error::new(kind, e)
    }
}

impl From<RestoreError> for Error {
    fn from(e: RestoreError) -> Self {
        Error::new(restore_kind(&e), e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::new(ErrorKind::Config, e)
    }
}

impl From<KeyGroupError> for Error {
    fn from(e: KeyGroupError) -> Self {
        Error::new(ErrorKind::Config, e)
    }
}

impl From<BackendError> for Error {
    fn from(e: BackendError) -> Self {
        Error::new(ErrorKind::Usage, e)
    }
}

impl From<OperatorStateError> for Error {
    fn from(e: OperatorStateError) -> Self {
        Error::new(ErrorKind::Usage, e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Storage, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_cause_as_source_and_says_each_part_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::from(io).context("reading chk-3/_metadata").context("restoring checkpoint 3");
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert_eq!(e.to_string(), "restoring checkpoint 3");
        let chain: Vec<String> =
            std::iter::successors(StdError::source(&e), |c: &&(dyn StdError + 'static)| (*c).source())
                .map(|c| c.to_string())
                .collect();
        assert_eq!(chain, ["reading chk-3/_metadata", "no such file"]);
        assert!(e.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(e.display_chain(), "restoring checkpoint 3: reading chk-3/_metadata: no such file");
    }

    #[test]
    fn kinds_follow_the_layer_error() {
        let limit = PluginError::Limit { plugin: "p".into(), operation: "snapshot".into(), message: "fuel".into() };
        assert_eq!(Error::from(limit).kind(), ErrorKind::Limit);
        let corrupt = StorageError::Corrupted { location: "x".into(), reason: "crc".into() };
        assert_eq!(Error::from(corrupt).kind(), ErrorKind::Corrupt);
        let cancelled = RestoreError::Cancelled { what: "key groups 0-1".into() };
        assert_eq!(Error::from(cancelled).kind(), ErrorKind::Cancelled);
    }
}
