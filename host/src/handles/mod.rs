//! State handles: serializable references to snapshot bytes, stored in checkpoint metadata and
//! in local snapshot metadata.
//!
//! Handles are persisted, so they are versioned: [`StateHandleEnvelope`] wraps any handle with
//! a magic and a format version, and refuses what it does not understand with an error that
//! says so, instead of misreading it.

mod chain;
mod checksums;
mod directory;
mod keyed;
mod operator;
mod stream;

use std::io;

use serde::{Deserialize, Serialize};

pub use chain::{chain_stats, restore_pieces, ChainLink, ChainStats, GroupPart, KeyedChain, KeyedRestorePiece};
pub use checksums::{
    ChecksumMismatch, Segment, SegmentChecksums, SegmentLabel, SegmentRecorder, SegmentVerifier, StreamIdentity,
    VerifyError,
};
pub use directory::{DirectoryKeyedStateHandle, DirectoryStateHandle, IncrementalLocalKeyedStateHandle, LocalLinkCopy};
pub use keyed::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
pub use operator::{DistributionMode, OperatorPartitions, OperatorStateHandle, PartitionInfo};
pub use stream::StreamStateHandle;

use crate::key_groups::KeyGroupRange;

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
    /// Encoding or decoding persisted handles failed.
    #[error("{0}")]
    Encoding(String),
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
/// Any state handle, for persisting handles of mixed kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateHandle {
    /// A plain stream.
    Stream(StreamStateHandle),
    /// A keyed snapshot stream with key-group offsets.
    KeyGroups(KeyGroupsStateHandle),
    /// An operator (non-keyed) state stream.
    Operator(OperatorStateHandle),
    /// A directory.
    Directory(DirectoryStateHandle),
    /// A directory holding the state of a key-group range.
    DirectoryKeyed(DirectoryKeyedStateHandle),
    /// A local copy of an incremental keyed snapshot.
    IncrementalLocalKeyed(IncrementalLocalKeyedStateHandle),
}

impl StateHandle {
    /// The key groups of a keyed handle.
    pub fn key_group_range(&self) -> Option<KeyGroupRange> {
        match self {
            StateHandle::KeyGroups(h) => Some(h.key_group_range()),
            StateHandle::DirectoryKeyed(h) => Some(h.key_group_range()),
            StateHandle::IncrementalLocalKeyed(h) => Some(h.key_group_range()),
            _ => None,
        }
    }
}

const ENVELOPE_MAGIC: [u8; 4] = *b"SHSH";
/// Version of the handle encoding this build writes and reads.
///
/// Version 2 added segment checksums to keyed and operator handles; version 1 handles are
/// refused (they cannot be verified). Version 3 added incremental chains to subtask states;
/// version 2 checkpoint metadata is still read (see [`StateHandleEnvelope::decode_or_legacy`]).
pub const ENVELOPE_VERSION: u16 = 3;
/// The previous version, read where a structure says how to upgrade it.
pub const LEGACY_ENVELOPE_VERSION: u16 = 2;

/// Persists handles with a magic and a version, so that a reader never misreads a handle
/// written by another version or something that is not a handle at all.
#[derive(Debug)]
pub struct StateHandleEnvelope;

impl StateHandleEnvelope {
    /// Encodes `value` (a handle, or any serde structure of handles).
    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, HandleError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&ENVELOPE_MAGIC);
        out.extend_from_slice(&ENVELOPE_VERSION.to_le_bytes());
        bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
            .map_err(|e| HandleError::Encoding(format!("cannot encode state handle: {e}")))?;
        Ok(out)
    }

    /// Decodes what [`encode`](Self::encode) wrote; refuses foreign bytes, other versions and
    /// trailing garbage.
    pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, HandleError> {
        match Self::version(bytes)? {
            ENVELOPE_VERSION => Self::decode_body(bytes),
            version => Err(HandleError::Encoding(format!(
                "state handle format version {version} is not supported (this build reads version {ENVELOPE_VERSION})"
            ))),
        }
    }

    /// Like [`decode`](Self::decode), but also reads what a build of the previous version
    /// wrote, as `L` (that version's layout of the structure), upgraded into `T`.
    pub fn decode_or_legacy<T, L>(bytes: &[u8]) -> Result<T, HandleError>
    where
        T: for<'de> Deserialize<'de>,
        L: for<'de> Deserialize<'de> + Into<T>,
    {
        match Self::version(bytes)? {
            ENVELOPE_VERSION => Self::decode_body(bytes),
            LEGACY_ENVELOPE_VERSION => Self::decode_body::<L>(bytes).map(Into::into),
            version => Err(HandleError::Encoding(format!(
                "state handle format version {version} is not supported (this build reads versions {LEGACY_ENVELOPE_VERSION} and {ENVELOPE_VERSION})"
            ))),
        }
    }

    fn version(bytes: &[u8]) -> Result<u16, HandleError> {
        if bytes.len() < 6 || bytes[..4] != ENVELOPE_MAGIC {
            return Err(HandleError::Encoding("not a state handle (bad magic)".into()));
        }
        Ok(u16::from_le_bytes([bytes[4], bytes[5]]))
    }

    fn decode_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, HandleError> {
        let (value, used) = bincode::serde::decode_from_slice(&bytes[6..], bincode::config::standard())
            .map_err(|e| HandleError::Encoding(format!("corrupted state handle: {e}")))?;
        if used != bytes.len() - 6 {
            return Err(HandleError::Encoding(format!(
                "corrupted state handle: {} trailing bytes",
                bytes.len() - 6 - used
            )));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn samples() -> Vec<StateHandle> {
        let stream = StreamStateHandle::File { path: "/ckpt/chk-1/abc".into(), size: 42, crc32c: Some(7) };
        let offsets = Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(3, 5), vec![0, 10, 20]).unwrap());
        let mut partitions = BTreeMap::new();
        partitions.insert(
            "buffer".to_string(),
            PartitionInfo { offsets: vec![0, 7], mode: DistributionMode::SplitDistribute },
        );
        let dir = DirectoryStateHandle::new("/local/chk_1".into(), 99);
        vec![
            StateHandle::Stream(StreamStateHandle::Inline { bytes: vec![1, 2, 3] }),
            StateHandle::KeyGroups(KeyGroupsStateHandle::new(offsets.clone(), stream.clone())),
            StateHandle::Operator(OperatorStateHandle::new(partitions, stream.clone())),
            StateHandle::Directory(dir.clone()),
            StateHandle::DirectoryKeyed(DirectoryKeyedStateHandle::new(dir.clone(), KeyGroupRange::new(0, 9))),
            StateHandle::IncrementalLocalKeyed(IncrementalLocalKeyedStateHandle {
                checkpoint_id: 7,
                key_group_range: KeyGroupRange::new(3, 5),
                links: vec![LocalLinkCopy {
                    primary: stream.identity(),
                    copy: KeyGroupsStateHandle::new(offsets.clone(), stream.clone()),
                }],
            }),
        ]
    }

    #[test]
    fn every_handle_kind_round_trips_through_the_envelope() {
        for h in samples() {
            let bytes = StateHandleEnvelope::encode(&h).unwrap();
            assert_eq!(StateHandleEnvelope::decode::<StateHandle>(&bytes).unwrap(), h);
        }
    }

    #[test]
    fn foreign_versioned_truncated_and_padded_bytes_are_refused() {
        let bytes = StateHandleEnvelope::encode(&samples()[1]).unwrap();
        let err = |b: &[u8]| StateHandleEnvelope::decode::<StateHandle>(b).unwrap_err().to_string();
        assert!(err(b"hello world").contains("bad magic"));
        let mut other = bytes.clone();
        other[4] = 9;
        assert!(err(&other).contains("version 9"));
        assert!(err(&bytes[..bytes.len() - 3]).contains("corrupted"));
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(err(&padded).contains("trailing"));
    }
}
