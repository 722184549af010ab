//! Checkpoint streams: where snapshot bytes go and where they are read back from.
//!
//! The output side is a trait so that the primary can be a directory, memory or (later) an
//! object store with multipart upload, and so that the duplicating stream can wrap any two of
//! them. A stream that is dropped without [`CheckpointOutputStream::close_and_get_handle`]
//! discards what it wrote: a handle exists only for complete, durable bytes.

mod fault;
mod file;
mod memory;
mod object;

use std::io::{self, Read, Seek};

pub use fault::FaultInjectingStream;
pub use file::{FileCheckpointOutputStream, FileStreamFactory, IN_PROGRESS_SUFFIX};
pub use memory::{MemoryCheckpointOutputStream, MemoryStreamFactory};
pub use object::{delete_object, ObjectCheckpointOutputStream, ObjectInputStream, ObjectStreamFactory};

use crate::handles::StreamStateHandle;
use crate::result::SnapshotResult;

/// A stream a snapshot is written into.
pub trait CheckpointOutputStream: Send + std::fmt::Debug {
    /// Appends `bytes`.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Bytes written so far: the offset the next byte will have.
    fn position(&self) -> u64;
    /// Pushes buffered bytes towards storage.
    fn flush(&mut self) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Completes the stream (durably) and returns a handle to its bytes. Dropping a stream
    /// instead discards it and removes whatever it stored.
    fn close_and_get_handle(self: Box<Self>) -> io::Result<StreamStateHandle>;

    /// Completes the stream into a snapshot result: the primary handle and, for a stream that
    /// also keeps a local copy, the local handle. A primary failure is an error; a failed
    /// local copy only means the result has no local part.
    fn close_and_finalize(self: Box<Self>) -> io::Result<SnapshotResult<StreamStateHandle>> {
        Ok(SnapshotResult::of(self.close_and_get_handle()?))
    }
}

/// A stream a snapshot is read back from.
pub trait CheckpointInputStream: Read + Seek + Send {}

impl<T: Read + Seek + Send> CheckpointInputStream for T {}

/// Whether state belongs to one checkpoint only or may be referenced by later ones
/// (incremental snapshots). Storage keeps the two apart so that discarding a checkpoint never
/// deletes files another checkpoint still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateScope {
    /// Owned by one checkpoint; deleted with it.
    Exclusive,
    /// Shared between checkpoints; deleted when no retained checkpoint refers to it.
    Shared,
}

/// Creates output streams in one checkpoint storage location.
pub trait CheckpointStreamFactory: Send + Sync + std::fmt::Debug {
    /// A new, empty stream for state of `scope`.
    fn create_output_stream(&self, scope: StateScope) -> io::Result<Box<dyn CheckpointOutputStream>>;
}

#[cfg(test)]
mod tests;
