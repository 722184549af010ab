//! Buffered `std::io` adapters over the host's streams.
//!
//! Every host call costs a round trip across the component boundary (about 0.1 µs) plus a
//! copy; small writes would be dominated by it. The adapters batch into 64 KiB chunks, the
//! size at which the host's in-place copy runs at 0.9-1.0x native speed.

use std::io::{self, Read, Write};

use crate::__private::bindings::{InputStream, OutputStream};
use crate::error::host_to_io;
use crate::Result;

/// Size of the adapters' buffers: large enough that the per-call cost disappears, small
/// enough to stay far below the guest's memory limit.
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

/// The snapshot output stream, buffered. Implements [`std::io::Write`].
///
/// Its [`position`](Self::position) counts buffered bytes too, so it is the offset the next
/// byte will have in the finished snapshot.
pub struct SnapshotWriter<'a> {
    stream: &'a OutputStream,
    buffer: Vec<u8>,
    capacity: usize,
}

impl<'a> SnapshotWriter<'a> {
    pub(crate) fn new(stream: &'a OutputStream) -> Self {
        Self::with_capacity(stream, DEFAULT_BUFFER_SIZE)
    }

    pub(crate) fn with_capacity(stream: &'a OutputStream, capacity: usize) -> Self {
        SnapshotWriter { stream, buffer: Vec::with_capacity(capacity), capacity }
    }

    /// Announces that the bytes of `key_group` start here. Flushes the buffer first, because
    /// the host records the offset from its own position.
    pub fn begin_key_group(&mut self, key_group: u32) -> Result<()> {
        self.flush_buffer()?;
        self.stream.begin_key_group(key_group)?;
        Ok(())
    }

    /// Announces that one element of operator state `state` (an index into
    /// [`OperatorStateView::states`](crate::OperatorStateView::states)) starts here. Flushes
    /// the buffer first, like [`begin_key_group`](Self::begin_key_group).
    pub fn begin_partition(&mut self, state: u32) -> Result<()> {
        self.flush_buffer()?;
        self.stream.begin_partition(state)?;
        Ok(())
    }

    /// Offset of the next byte written.
    pub fn position(&self) -> u64 {
        self.stream.position() + self.buffer.len() as u64
    }

    /// Appends the packed bytes of the batch `entries` last returned from
    /// [`Entries::next_pending`](crate::Entries::next_pending), copied on the host side.
    pub fn write_pending(&mut self, entries: &crate::Entries) -> Result<()> {
        self.flush_buffer()?;
        self.stream.write_pending(entries.reader())?;
        Ok(())
    }

    /// Hands buffered bytes to the host and asks it to make everything durable. The host syncs
    /// at the end of a snapshot anyway; strategies rarely need this.
    pub fn sync(&mut self) -> Result<()> {
        self.flush_buffer()?;
        self.stream.sync()?;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        self.flush_buffer()?;
        Ok(())
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.stream.write(&self.buffer).map_err(host_to_io)?;
            self.buffer.clear();
        }
        Ok(())
    }
}

impl Write for SnapshotWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buffer.len() + bytes.len() > self.capacity {
            self.flush_buffer()?;
        }
        if bytes.len() >= self.capacity {
            // Large slices go straight to the host: no copy into the buffer.
            self.stream.write(bytes).map_err(host_to_io)?;
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()?;
        self.stream.flush().map_err(host_to_io)
    }
}

impl std::fmt::Debug for SnapshotWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter").field("buffered", &self.buffer.len()).finish()
    }
}

/// The restore input stream, buffered. Implements [`std::io::Read`].
pub struct RestoreReader<'a> {
    stream: &'a InputStream,
    buffer: Vec<u8>,
    consumed: usize,
    capacity: usize,
}

impl<'a> RestoreReader<'a> {
    pub(crate) fn new(stream: &'a InputStream) -> Self {
        RestoreReader { stream, buffer: Vec::new(), consumed: 0, capacity: DEFAULT_BUFFER_SIZE }
    }

    /// Offset of the next byte read.
    pub fn position(&self) -> u64 {
        self.stream.position() - (self.buffer.len() - self.consumed) as u64
    }

    /// Moves to `offset` bytes from the start of the snapshot, dropping buffered bytes.
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        self.buffer.clear();
        self.consumed = 0;
        self.stream.seek(offset)?;
        Ok(())
    }
}

impl Read for RestoreReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.consumed == self.buffer.len() {
            let want = self.capacity.max(out.len()).min(u32::MAX as usize) as u32;
            self.buffer = self.stream.read(want).map_err(host_to_io)?;
            self.consumed = 0;
            if self.buffer.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buffer.len() - self.consumed);
        out[..n].copy_from_slice(&self.buffer[self.consumed..self.consumed + n]);
        self.consumed += n;
        Ok(n)
    }
}

impl std::fmt::Debug for RestoreReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreReader").field("position", &self.position()).finish()
    }
}
