//! Directory handles: state kept as a directory of files (local copies of incremental
//! snapshots, native engine checkpoints).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HandleError, StreamStateHandle};
use crate::key_groups::KeyGroupRange;

/// A directory and the size of its content when the handle was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryStateHandle {
    directory: PathBuf,
    size: u64,
}

impl DirectoryStateHandle {
    /// A handle to `directory` holding `size` bytes.
    pub fn new(directory: PathBuf, size: u64) -> Self {
        DirectoryStateHandle { directory, size }
    }

    /// The directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Size of its content.
    pub fn state_size(&self) -> u64 {
        self.size
    }

    /// Deletes the directory and its content; a missing directory counts as deleted.
    pub fn discard(&self) -> Result<(), HandleError> {
        match std::fs::remove_dir_all(&self.directory) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(HandleError::Io { handle: self.directory.display().to_string(), source }),
        }
    }
}

/// A directory holding the state of a key-group range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryKeyedStateHandle {
    directory: DirectoryStateHandle,
    key_group_range: KeyGroupRange,
}

impl DirectoryKeyedStateHandle {
    /// A handle for `directory` holding `key_group_range`.
    pub fn new(directory: DirectoryStateHandle, key_group_range: KeyGroupRange) -> Self {
        DirectoryKeyedStateHandle { directory, key_group_range }
    }

    /// The key groups.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    /// The directory.
    pub fn directory(&self) -> &DirectoryStateHandle {
        &self.directory
    }
}

/// The local copy of an incremental keyed snapshot: the directory of files, the metadata
/// stream, and which shared files it references (so later incremental snapshots of a restored
/// backend can keep referencing them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalLocalKeyedStateHandle {
    /// Identifies the backend instance that wrote the files.
    pub backend_id: String,
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The directory of files.
    pub directory: DirectoryStateHandle,
    /// The key groups.
    pub key_group_range: KeyGroupRange,
    /// The metadata stream.
    pub metadata: StreamStateHandle,
    /// Identifiers of the shared files referenced.
    pub shared_state_ids: Vec<String>,
}

impl IncrementalLocalKeyedStateHandle {
    /// The key groups.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    /// Deletes the directory and the metadata, attempting both.
    pub fn discard(&self) -> Result<(), HandleError> {
        let dir = self.directory.discard();
        let meta = self.metadata.discard();
        dir.and(meta)
    }
}
