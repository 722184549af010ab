//! Cancelling an invocation from another thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Cancels the plugin invocations it is passed to. The guest is interrupted at its next epoch
/// check (within about one [`EPOCH_TICK`](super::EPOCH_TICK), also in a tight loop), and host
/// calls refuse to continue; the invocation fails with [`PluginError::Cancelled`](super::PluginError::Cancelled)
/// (super::PluginError::Cancelled) and its streams are discarded.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every invocation using this token (now or later).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
