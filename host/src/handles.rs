//! State handles: serializable references to snapshot bytes, stored in checkpoint metadata and
//! in local snapshot metadata.

use std::fs::File;
use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::key_groups::KeyGroupRange;
use crate::streams::CheckpointInputStream;

/// Errors of handle construction and use.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The offsets table does not have one offset per key group of its range.
    #[error("key-group offsets: {offsets} offsets for the {groups} key groups of range {range}")]
    OffsetsLength {
        /// The range.
        range: KeyGroupRange,
        /// Number of key groups in it.
        groups: u32,
        /// Number of offsets given.
        offsets: usize,
    },
    /// A key group outside the handle's range.
    #[error("key group {key_group} is not in range {range}")]
    KeyGroupNotInRange {
        /// The key group asked for.
        key_group: u32,
        /// The handle's range.
        range: KeyGroupRange,
    },
    /// Opening or discarding the underlying bytes failed.
    #[error("state handle {handle}: {source}")]
    Io {
        /// Which handle.
        handle: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A reference to the complete bytes of one snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamStateHandle {
    /// A file written by a file stream.
    File {
        /// Path of the file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// Bytes small enough to travel inside the metadata itself.
    Inline {
        /// The bytes.
        bytes: Vec<u8>,
    },
}

impl StreamStateHandle {
    /// Size of the referenced bytes.
    pub fn size(&self) -> u64 {
        match self {
            StreamStateHandle::File { size, .. } => *size,
            StreamStateHandle::Inline { bytes } => bytes.len() as u64,
        }
    }

    /// Opens the bytes for reading. A file whose size differs from the recorded one is
    /// refused: it was truncated or replaced.
    pub fn open(&self) -> Result<Box<dyn CheckpointInputStream>, HandleError> {
        match self {
            StreamStateHandle::File { path, size } => {
                let io_err = |source| HandleError::Io {
                    handle: self.describe(),
                    source,
                };
                let file = File::open(path).map_err(io_err)?;
                let actual = file.metadata().map_err(io_err)?.len();
                if actual != *size {
                    return Err(io_err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("file has {actual} bytes, the handle recorded {size}"),
                    )));
                }
                Ok(Box::new(io::BufReader::with_capacity(256 * 1024, file)))
            }
            StreamStateHandle::Inline { bytes } => Ok(Box::new(Cursor::new(bytes.clone()))),
        }
    }

    /// Deletes the referenced bytes. A file that is already gone counts as deleted.
    pub fn discard(&self) -> Result<(), HandleError> {
        match self {
            StreamStateHandle::File { path, .. } => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(HandleError::Io {
                    handle: self.describe(),
                    source,
                }),
            },
            StreamStateHandle::Inline { .. } => Ok(()),
        }
    }

    /// A short description for messages: the file path, or the inline size.
    pub fn describe(&self) -> String {
        match self {
            StreamStateHandle::File { path, .. } => path.display().to_string(),
            StreamStateHandle::Inline { bytes } => format!("<inline, {} bytes>", bytes.len()),
        }
    }
}

/// Where each key group of a range starts in a snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupRangeOffsets {
    range: KeyGroupRange,
    offsets: Vec<u64>,
}

impl KeyGroupRangeOffsets {
    /// Offsets for `range`, one per key group, in key-group order.
    pub fn new(range: KeyGroupRange, offsets: Vec<u64>) -> Result<Self, HandleError> {
        if offsets.len() != range.len() as usize {
            return Err(HandleError::OffsetsLength {
                range,
                groups: range.len(),
                offsets: offsets.len(),
            });
        }
        Ok(KeyGroupRangeOffsets { range, offsets })
    }

    /// The key groups covered.
    pub fn range(&self) -> KeyGroupRange {
        self.range
    }

    /// Offset of `key_group`.
    pub fn offset(&self, key_group: u32) -> Result<u64, HandleError> {
        self.range
            .index_of(key_group)
            .map(|i| self.offsets[i])
            .ok_or(HandleError::KeyGroupNotInRange {
                key_group,
                range: self.range,
            })
    }

    /// (key group, offset) pairs in ascending key-group order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.range.iter().zip(self.offsets.iter().copied())
    }

    /// The offsets of the key groups in both this range and `range`.
    pub fn intersection(&self, range: &KeyGroupRange) -> KeyGroupRangeOffsets {
        let common = self.range.intersection(range);
        let offsets = match common.start() {
            Some(start) => {
                let from = self
                    .range
                    .index_of(start)
                    .expect("intersection lies in range");
                self.offsets[from..from + common.len() as usize].to_vec()
            }
            None => Vec::new(),
        };
        KeyGroupRangeOffsets {
            range: common,
            offsets,
        }
    }
}

/// A keyed snapshot: a stream plus where each of its key groups starts. The primary copy and
/// the local copy of one snapshot share one offsets table, which is why their streams must
/// stay byte-aligned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupsStateHandle {
    offsets: Arc<KeyGroupRangeOffsets>,
    stream: StreamStateHandle,
}

impl KeyGroupsStateHandle {
    /// A handle over `stream` with `offsets`.
    pub fn new(offsets: Arc<KeyGroupRangeOffsets>, stream: StreamStateHandle) -> Self {
        KeyGroupsStateHandle { offsets, stream }
    }

    /// The key groups this snapshot holds.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.offsets.range()
    }

    /// The offsets table.
    pub fn offsets(&self) -> &Arc<KeyGroupRangeOffsets> {
        &self.offsets
    }

    /// The stream.
    pub fn stream(&self) -> &StreamStateHandle {
        &self.stream
    }

    /// Size of the stream.
    pub fn state_size(&self) -> u64 {
        self.stream.size()
    }

    /// The part of this snapshot that `range` needs (as after rescaling): the same stream with
    /// the offsets of the common key groups, or `None` when there are none.
    pub fn intersection(&self, range: &KeyGroupRange) -> Option<KeyGroupsStateHandle> {
        let offsets = self.offsets.intersection(range);
        (!offsets.range().is_empty()).then(|| KeyGroupsStateHandle {
            offsets: Arc::new(offsets),
            stream: self.stream.clone(),
        })
    }

    /// Deletes the stream's bytes.
    pub fn discard(&self) -> Result<(), HandleError> {
        self.stream.discard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_must_match_range() {
        assert!(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 3), vec![0, 1, 2]).is_err());
        let o = KeyGroupRangeOffsets::new(KeyGroupRange::new(2, 4), vec![10, 20, 30]).unwrap();
        assert_eq!(o.offset(3).unwrap(), 20);
        assert!(matches!(
            o.offset(5),
            Err(HandleError::KeyGroupNotInRange { key_group: 5, .. })
        ));
        assert_eq!(
            o.iter().collect::<Vec<_>>(),
            vec![(2, 10), (3, 20), (4, 30)]
        );
    }

    #[test]
    fn intersection_slices_offsets_and_shares_the_stream() {
        let o = Arc::new(
            KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 9), (0..10).map(|i| i * 100).collect())
                .unwrap(),
        );
        let h = KeyGroupsStateHandle::new(
            o,
            StreamStateHandle::Inline {
                bytes: vec![1, 2, 3],
            },
        );
        let part = h.intersection(&KeyGroupRange::new(7, 20)).unwrap();
        assert_eq!(part.key_group_range(), KeyGroupRange::new(7, 9));
        assert_eq!(
            part.offsets().iter().collect::<Vec<_>>(),
            vec![(7, 700), (8, 800), (9, 900)]
        );
        assert_eq!(part.stream(), h.stream());
        assert!(h.intersection(&KeyGroupRange::new(10, 20)).is_none());
    }

    #[test]
    fn file_handle_detects_truncation_and_discard_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let h = StreamStateHandle::File {
            path: path.clone(),
            size: 6,
        };
        assert!(h.open().is_ok());
        std::fs::write(&path, b"abc").unwrap();
        let err = h.open().err().unwrap().to_string();
        assert!(
            err.contains("3 bytes") && err.contains(&path.display().to_string()),
            "{err}"
        );
        h.discard().unwrap();
        h.discard().unwrap();
        assert!(!path.exists());
    }
}
