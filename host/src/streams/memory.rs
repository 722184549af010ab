//! In-memory checkpoint streams, for tests and for state small enough to travel inline.

use std::io;

use super::{CheckpointOutputStream, CheckpointStreamFactory, StateScope};
use crate::handles::StreamStateHandle;

/// Collects a snapshot in memory; closing yields an inline handle. A size limit turns a
/// runaway snapshot into an error instead of exhausting the host's memory.
#[derive(Debug, Default)]
pub struct MemoryCheckpointOutputStream {
    bytes: Vec<u8>,
    max_size: Option<usize>,
}

impl MemoryCheckpointOutputStream {
    /// An unbounded stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream that fails writes beyond `max_size` bytes.
    pub fn with_max_size(max_size: usize) -> Self {
        MemoryCheckpointOutputStream { bytes: Vec::new(), max_size: Some(max_size) }
    }
}

impl CheckpointOutputStream for MemoryCheckpointOutputStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(max) = self.max_size {
            if self.bytes.len() + bytes.len() > max {
                return Err(io::Error::new(
                    io::ErrorKind::QuotaExceeded,
                    format!("in-memory checkpoint stream is limited to {max} bytes"),
                ));
            }
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn position(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn close_and_get_handle(self: Box<Self>) -> io::Result<StreamStateHandle> {
        Ok(StreamStateHandle::Inline { bytes: self.bytes })
    }
}

/// Creates in-memory streams.
#[derive(Debug, Clone, Default)]
pub struct MemoryStreamFactory {
    max_size: Option<usize>,
}

impl MemoryStreamFactory {
    /// Streams limited to `max_size` bytes each (or unbounded).
    pub fn new(max_size: Option<usize>) -> Self {
        MemoryStreamFactory { max_size }
    }
}

impl CheckpointStreamFactory for MemoryStreamFactory {
    fn create_output_stream(&self, _scope: StateScope) -> io::Result<Box<dyn CheckpointOutputStream>> {
        Ok(Box::new(MemoryCheckpointOutputStream { bytes: Vec::new(), max_size: self.max_size }))
    }
}
