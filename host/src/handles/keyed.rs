//! Keyed handles: a snapshot stream plus where each key group starts in it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{HandleError, SegmentChecksums, StreamStateHandle};
use crate::key_groups::KeyGroupRange;

/// Where each key group of a range starts in a snapshot stream, and the checksum of every
/// segment of that stream (recorded by the host as the strategy wrote it). Both describe the
/// bytes, not a copy of them: the primary and the local copy share one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupRangeOffsets {
    range: KeyGroupRange,
    offsets: Vec<u64>,
    // The whole stream's segments, also after an intersection: a strategy may read a header
    // or run past its key group, and every byte it reads is verified.
    checksums: Arc<SegmentChecksums>,
}

impl KeyGroupRangeOffsets {
    /// Offsets for `range`, one per key group, in key-group order.
    pub fn new(range: KeyGroupRange, offsets: Vec<u64>) -> Result<Self, HandleError> {
        if offsets.len() != range.len() as usize {
            return Err(HandleError::OffsetsLength { range, groups: range.len(), offsets: offsets.len() });
        }
        Ok(KeyGroupRangeOffsets { range, offsets, checksums: Arc::default() })
    }

    /// The same offsets with the stream's segment checksums.
    pub fn with_checksums(mut self, checksums: Arc<SegmentChecksums>) -> Self {
        self.checksums = checksums;
        self
    }

    /// The stream's segment checksums (empty for a table built without them, which a restore
    /// refuses: it cannot verify what it would read).
    pub fn checksums(&self) -> &Arc<SegmentChecksums> {
        &self.checksums
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
            .ok_or(HandleError::KeyGroupNotInRange { key_group, range: self.range })
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
                let from = self.range.index_of(start).expect("intersection lies in range");
                self.offsets[from..from + common.len() as usize].to_vec()
            }
            None => Vec::new(),
        };
        KeyGroupRangeOffsets { range: common, offsets, checksums: self.checksums.clone() }
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

    /// The same handle over `f(stream)` (to relocate its file).
    pub fn map_stream(self, f: impl FnOnce(StreamStateHandle) -> StreamStateHandle) -> Self {
        KeyGroupsStateHandle { offsets: self.offsets, stream: f(self.stream) }
    }

    /// The part of this snapshot that `range` needs (as after rescaling): the same stream with
    /// the offsets of the common key groups, or `None` when there are none.
    pub fn intersection(&self, range: &KeyGroupRange) -> Option<KeyGroupsStateHandle> {
        let offsets = self.offsets.intersection(range);
        (!offsets.range().is_empty())
            .then(|| KeyGroupsStateHandle { offsets: Arc::new(offsets), stream: self.stream.clone() })
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
        assert!(matches!(o.offset(5), Err(HandleError::KeyGroupNotInRange { key_group: 5, .. })));
        assert_eq!(o.iter().collect::<Vec<_>>(), vec![(2, 10), (3, 20), (4, 30)]);
    }

    #[test]
    fn intersection_slices_offsets_and_shares_the_stream() {
        let o =
            Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 9), (0..10).map(|i| i * 100).collect()).unwrap());
        let h = KeyGroupsStateHandle::new(o, StreamStateHandle::Inline { bytes: vec![1, 2, 3] });
        let part = h.intersection(&KeyGroupRange::new(7, 20)).unwrap();
        assert_eq!(part.key_group_range(), KeyGroupRange::new(7, 9));
        assert_eq!(part.offsets().iter().collect::<Vec<_>>(), vec![(7, 700), (8, 800), (9, 900)]);
        assert_eq!(part.stream(), h.stream());
        assert!(h.intersection(&KeyGroupRange::new(10, 20)).is_none());
    }
}
