//! Directory handles: state kept as a directory of files (local copies of incremental
//! snapshots, native engine checkpoints).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HandleError, KeyGroupsStateHandle, StreamIdentity};
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

/// The local copy of an incremental keyed snapshot's chain: for each earlier checkpoint's stream
/// that some key group of the snapshot still runs through, a local file with the same bytes,
/// kept in this checkpoint's own local directory (hard-linked, or copied across disks, from
/// the earlier local checkpoint's copy, never read back from the primary).
///
/// With it, the checkpoint's own local keyed copy and these links restore the whole chain
/// from local disk; the earlier local checkpoints can go as soon as a newer one completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalLocalKeyedStateHandle {
    /// The checkpoint whose chain this is.
    pub checkpoint_id: u64,
    /// The key groups of the snapshot.
    pub key_group_range: KeyGroupRange,
    /// The earlier links found locally, oldest first. A link with no local copy (its local
    /// checkpoint was already gone) is missing here and restored from the primary.
    pub links: Vec<LocalLinkCopy>,
}

/// One earlier stream of a chain, copied locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalLinkCopy {
    /// The primary stream it copies (file name, size and checksum).
    pub primary: StreamIdentity,
    /// The local copy, with the primary's offsets and segment checksums.
    pub copy: KeyGroupsStateHandle,
}

impl IncrementalLocalKeyedStateHandle {
    /// The key groups.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    /// The local copy of the earlier stream `primary`, if this chain holds one that has its
    /// identity, offsets and bytes (size and checksum).
    pub fn copy_of(&self, primary: &KeyGroupsStateHandle) -> Option<&KeyGroupsStateHandle> {
        let identity = primary.stream().identity();
        self.links
            .iter()
            .find(|l| {
                let local = l.copy.stream().identity();
                l.primary == identity
                    && local.size == identity.size
                    && local.crc32c == identity.crc32c
                    && l.copy.offsets() == primary.offsets()
            })
            .map(|l| &l.copy)
    }

    /// Deletes every local copy, attempting all.
    pub fn discard(&self) -> Result<(), HandleError> {
        // Every copy is attempted; the first failure is reported.
        let results: Vec<_> = self.links.iter().map(|l| l.copy.discard()).collect();
        results.into_iter().collect()
    }
}
