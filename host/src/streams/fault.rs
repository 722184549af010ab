//! A stream wrapper that fails on purpose, for testing what happens when storage fails at a
//! chosen point (used by the duplicating-stream tests and the plugin harness).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::CheckpointOutputStream;
use crate::handles::StreamStateHandle;

/// Wraps a stream and fails its `n`-th operation (write, flush, sync or close, counted from 0)
/// and every later one. Dropping it drops the inner stream, which discards it.
pub struct FaultInjectingStream {
    inner: Box<dyn CheckpointOutputStream>,
    fail_at: Option<usize>,
    operations: Arc<AtomicUsize>,
}

impl std::fmt::Debug for FaultInjectingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjectingStream")
            .field("fail_at", &self.fail_at)
            .field("operations", &self.operations)
            .finish()
    }
}

impl FaultInjectingStream {
    /// Wraps `inner`; `fail_at: None` never fails.
    pub fn new(inner: Box<dyn CheckpointOutputStream>, fail_at: Option<usize>) -> Self {
        FaultInjectingStream { inner, fail_at, operations: Arc::new(AtomicUsize::new(0)) }
    }

    /// A counter of operations attempted so far, shared with the wrapper.
    pub fn operations(&self) -> Arc<AtomicUsize> {
        self.operations.clone()
    }

    fn tick(&self, what: &str) -> io::Result<()> {
        let n = self.operations.fetch_add(1, Ordering::SeqCst);
        match self.fail_at {
            Some(at) if n >= at => {
                Err(io::Error::other(format!("injected fault: {what} (operation {n}, failing from {at})")))
            }
            _ => Ok(()),
        }
    }
}

impl CheckpointOutputStream for FaultInjectingStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tick("write")?;
        self.inner.write(bytes)
    }
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tick("flush")?;
        self.inner.flush()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.tick("sync")?;
        self.inner.sync()
    }
    fn close_and_get_handle(self: Box<Self>) -> io::Result<StreamStateHandle> {
        self.tick("close")?;
        self.inner.close_and_get_handle()
    }
}
