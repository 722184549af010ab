//! The duplicating stream: writes one snapshot to the primary (durable) stream and, byte for
//! byte, to a secondary (local) stream, so the local copy can be restored with the primary's
//! key-group offsets.
//!
//! Rules, in order of importance:
//! - the primary is the ground truth: its failures are raised at once, and the stream stays
//!   failed: every later call (write, flush, sync, close) fails again with the same cause, so
//!   a stream that lost bytes can never be completed into a handle;
//! - the secondary is best effort: its first failure (write, flush, sync, close, or a position
//!   mismatch) is recorded, the secondary is closed (discarding its file) and skipped from then
//!   on; it is never raised to the writer, only reported when its handle is asked for;
//! - both see identical bytes at identical positions, through one internal buffer.
//!
//! `position` cannot fail in this design (every stream counts the bytes it accepted), so a
//! "position failure" of the secondary is the misalignment checked at construction.
//! The secondary is written on the writer's thread: on one disk a second writer thread would
//! only compete for the same device, and the local copy skips fsync instead (see
//! `FileCheckpointOutputStream::create`).

use std::io;
use std::sync::Arc;

use crate::handles::StreamStateHandle;
use crate::result::SnapshotResult;
use crate::streams::CheckpointOutputStream;

/// Default size of the shared buffer.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

/// Writes to a primary and a secondary stream at once. See the module docs for the rules.
pub struct DuplicatingOutputStream {
    primary: Option<Box<dyn CheckpointOutputStream>>,
    secondary: Option<Box<dyn CheckpointOutputStream>>,
    buffer: Vec<u8>,
    capacity: usize,
    secondary_failure: Option<Arc<io::Error>>,
    primary_failure: Option<Arc<io::Error>>,
}

impl std::fmt::Debug for DuplicatingOutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuplicatingOutputStream")
            .field("buffered", &self.buffer.len())
            .field("secondary_alive", &self.secondary.is_some())
            .field("secondary_failure", &self.secondary_failure)
            .field("primary_failure", &self.primary_failure)
            .finish()
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the primary stream was already closed")
}

impl DuplicatingOutputStream {
    /// Duplicates into `primary` and `secondary` with the default buffer.
    pub fn new(primary: Box<dyn CheckpointOutputStream>, secondary: Box<dyn CheckpointOutputStream>) -> Self {
        Self::with_buffer_size(primary, secondary, DEFAULT_BUFFER_SIZE)
    }

    /// Duplicates with a buffer of `capacity` bytes. If the two streams are not at the same
    /// position, the secondary is failed right away: offsets recorded from the primary would
    /// be wrong for it.
    pub fn with_buffer_size(
        primary: Box<dyn CheckpointOutputStream>,
        secondary: Box<dyn CheckpointOutputStream>,
        capacity: usize,
    ) -> Self {
        let (p, s) = (primary.position(), secondary.position());
        let mut stream = DuplicatingOutputStream {
            primary: Some(primary),
            secondary: Some(secondary),
            buffer: Vec::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            secondary_failure: None,
            primary_failure: None,
        };
        if p != s {
            stream.fail_secondary(io::Error::other(format!(
                "stream positions are out of sync: primary at {p}, secondary at {s}"
            )));
        }
        stream
    }

    /// The recorded secondary failure, if any.
    pub fn secondary_failure(&self) -> Option<&Arc<io::Error>> {
        self.secondary_failure.as_ref()
    }

    fn fail_secondary(&mut self, error: io::Error) {
        // Recorded once: after the first failure the secondary is gone and never used again.
        debug_assert!(self.secondary_failure.is_none());
        tracing::warn!(error = %error, "local copy of the snapshot failed; continuing with the primary only");
        self.secondary = None; // Dropping an unclosed stream discards what it wrote.
        self.secondary_failure = Some(Arc::new(error));
    }

    fn on_secondary(&mut self, op: impl FnOnce(&mut dyn CheckpointOutputStream) -> io::Result<()>) {
        if let Some(secondary) = self.secondary.as_mut() {
            if let Err(e) = op(secondary.as_mut()) {
                self.fail_secondary(e);
            }
        }
    }

    /// The primary, or the error that failed it earlier.
    fn primary(&mut self) -> io::Result<&mut Box<dyn CheckpointOutputStream>> {
        if let Some(cause) = &self.primary_failure {
            return Err(io::Error::new(cause.kind(), PrimaryFailed(cause.clone())));
        }
        self.primary.as_mut().ok_or_else(closed)
    }

    /// Runs `op` on the primary; a failure fails the whole stream for good: both streams are
    /// dropped (discarding what they wrote) and the cause is kept for every later call.
    fn on_primary(&mut self, op: impl FnOnce(&mut dyn CheckpointOutputStream) -> io::Result<()>) -> io::Result<()> {
        let result = op(self.primary()?.as_mut());
        if let Err(e) = result {
            let cause = Arc::new(io::Error::new(e.kind(), e.to_string()));
            self.primary_failure = Some(cause);
            self.primary = None;
            self.secondary = None;
            self.buffer.clear();
            return Err(e);
        }
        Ok(())
    }

    fn write_both(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.on_primary(|p| p.write(bytes))?;
        self.on_secondary(|s| s.write(bytes));
        Ok(())
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let buffer = std::mem::take(&mut self.buffer);
            let result = self.write_both(&buffer);
            self.buffer = buffer;
            self.buffer.clear();
            result?;
        }
        Ok(())
    }

    /// Completes the primary and returns its handle. On failure the secondary is discarded
    /// too: there is no checkpoint, so there must be no local copy either.
    pub fn close_and_get_primary_handle(&mut self) -> io::Result<StreamStateHandle> {
        let flushed = self.flush_buffer();
        let primary = self.primary().map(|_| ()).and_then(|()| self.primary.take().ok_or_else(closed));
        let result = flushed.and(primary).and_then(|p| p.close_and_get_handle());
        if result.is_err() {
            self.secondary = None;
        }
        result
    }

    /// Completes the secondary and returns its handle, or the recorded cause if it failed
    /// earlier (or the error of closing it now).
    pub fn close_and_get_secondary_handle(&mut self) -> io::Result<StreamStateHandle> {
        self.flush_buffer()?;
        if let Some(cause) = &self.secondary_failure {
            return Err(io::Error::new(cause.kind(), SecondaryFailed(cause.clone())));
        }
        let secondary = self
            .secondary
            .take()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the secondary stream was already closed"))?;
        secondary.close_and_get_handle().inspect_err(|e| {
            self.secondary_failure = Some(Arc::new(io::Error::new(e.kind(), e.to_string())));
        })
    }
}

/// The error for any call after the primary failed; its source is the recorded cause.
#[derive(Debug, thiserror::Error)]
#[error("the primary stream failed earlier: {0}")]
pub struct PrimaryFailed(#[source] pub Arc<io::Error>);

/// The error for a secondary handle requested after the secondary failed; its source is the
/// recorded cause.
#[derive(Debug, thiserror::Error)]
#[error("the secondary (local) stream failed earlier: {0}")]
pub struct SecondaryFailed(#[source] pub Arc<io::Error>);

impl CheckpointOutputStream for DuplicatingOutputStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.primary()?;
        if self.buffer.len() + bytes.len() > self.capacity {
            self.flush_buffer()?;
        }
        if bytes.len() >= self.capacity {
            // Large writes bypass the buffer: no copy.
            self.write_both(bytes)
        } else {
            self.buffer.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn position(&self) -> u64 {
        self.primary.as_ref().map_or(0, |p| p.position()) + self.buffer.len() as u64
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()?;
        self.on_primary(|p| p.flush())?;
        self.on_secondary(|s| s.flush());
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.flush_buffer()?;
        self.on_primary(|p| p.sync())?;
        self.on_secondary(|s| s.sync());
        Ok(())
    }

    fn close_and_get_handle(mut self: Box<Self>) -> io::Result<StreamStateHandle> {
        self.close_and_get_primary_handle()
    }

    fn close_and_finalize(mut self: Box<Self>) -> io::Result<SnapshotResult<StreamStateHandle>> {
        let primary = self.close_and_get_primary_handle()?;
        match self.close_and_get_secondary_handle() {
            Ok(local) => Ok(SnapshotResult::with_local(primary, local)),
            Err(e) => {
                tracing::warn!(error = %e, "snapshot has no local copy");
                Ok(SnapshotResult::of(primary))
            }
        }
    }
}

#[cfg(test)]
mod tests;
