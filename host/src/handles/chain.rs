//! Incremental keyed state: every checkpoint writes one keyed stream holding each key group of
//! its range either in full or as a delta on the checkpoint before, and a key group's state is
//! its newest full part followed by every delta after it (its *chain*).
//!
//! The streams live in the primary's shared area because later checkpoints refer to them; a
//! checkpoint's [`KeyedChain`] names the earlier streams its key groups still need, so the
//! shared-state registry keeps exactly those alive. Restoring walks the streams oldest first and
//! restores from each one the key groups whose chain runs through it: a group's full part comes
//! first, then its deltas in order, whatever the number of streams.

use serde::{Deserialize, Serialize};

use super::{KeyGroupsStateHandle, StreamStateHandle};
use crate::key_groups::KeyGroupRange;

/// What one stored part of a key group holds (the WIT `group-part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupPart {
    /// Every entry of the key group.
    Full,
    /// The rows changed or removed since the checkpoint before.
    Delta,
}

impl std::fmt::Display for GroupPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupPart::Full => "full",
            GroupPart::Delta => "delta",
        })
    }
}

/// One checkpoint's keyed stream as part of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The checkpoint that wrote it.
    pub checkpoint_id: u64,
    /// The stream and its key-group offsets and checksums.
    pub handle: KeyGroupsStateHandle,
    /// What each key group of the handle's range holds in it, in key-group order.
    pub parts: Vec<GroupPart>,
    /// The format version of the plugin that wrote it (restore is told it).
    pub format_version: u32,
}

impl ChainLink {
    /// What `key_group` holds in this stream (`None` outside its range).
    pub fn part(&self, key_group: u32) -> Option<GroupPart> {
        self.handle.key_group_range().index_of(key_group).and_then(|i| self.parts.get(i).copied())
    }

    /// Bytes `key_group` takes in this stream: from its offset to the next group's (or to the
    /// end of the stream).
    pub fn group_bytes(&self, key_group: u32) -> u64 {
        let offsets = self.handle.offsets();
        let Ok(start) = offsets.offset(key_group) else { return 0 };
        let end = offsets.offset(key_group + 1).unwrap_or_else(|_| self.handle.stream().size());
        end.saturating_sub(start)
    }
}

/// The incremental side of a subtask's keyed state in one checkpoint: what the checkpoint's own
/// stream (the subtask's `keyed` handle) holds per key group, and the earlier streams its
/// chains still run through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedChain {
    /// The checkpoint the state belongs to (its own stream's writer).
    pub checkpoint_id: u64,
    /// What each key group holds in the own stream, in key-group order.
    pub parts: Vec<GroupPart>,
    /// Format version of the own stream.
    pub format_version: u32,
    /// Earlier checkpoints' streams that some key group's chain still needs, oldest first.
    pub earlier: Vec<ChainLink>,
}

/// What to restore from one keyed stream: for each key group of the handle's range, the part
/// to restore (`None`: not from this stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRestorePiece {
    /// The stream (the primary's, or a local copy of it).
    pub handle: KeyGroupsStateHandle,
    /// Per key group of the handle's range, what to restore from it.
    pub parts: Vec<Option<GroupPart>>,
    /// Format version of the plugin that wrote it.
    pub format_version: u32,
}

impl KeyedRestorePiece {
    /// Every key group of `handle` in full: a full (non-incremental) snapshot.
    pub fn full(handle: KeyGroupsStateHandle, format_version: u32) -> Self {
        let parts = vec![Some(GroupPart::Full); handle.key_group_range().len() as usize];
        KeyedRestorePiece { handle, parts, format_version }
    }

    /// What to restore of `key_group` from this stream.
    pub fn part(&self, key_group: u32) -> Option<GroupPart> {
        self.handle.key_group_range().index_of(key_group).and_then(|i| self.parts.get(i).copied().flatten())
    }
}

impl KeyedChain {
    /// Every link, oldest first, the own stream (`own`, the subtask's keyed handle) last.
    pub fn links(&self, own: &KeyGroupsStateHandle) -> Vec<ChainLink> {
        let mut links = self.earlier.clone();
        links.push(ChainLink {
            checkpoint_id: self.checkpoint_id,
            handle: own.clone(),
            parts: self.parts.clone(),
            format_version: self.format_version,
        });
        links
    }

    /// The chain of a checkpoint whose own stream holds `parts`, written on top of the chain
    /// `base` (every link of the base checkpoint, oldest first). Keeps only the earlier links some
    /// key group still needs: those at or after its newest full part.
    pub fn on_top_of(
        base: &[ChainLink],
        checkpoint_id: u64,
        parts: Vec<GroupPart>,
        format_version: u32,
        range: KeyGroupRange,
    ) -> Self {
        let mut needed = vec![false; base.len()];
        for (index, key_group) in range.iter().enumerate() {
            if parts.get(index) == Some(&GroupPart::Full) {
                continue;
            }
            // The group's chain: back from the newest link to its full part.
            for (i, link) in base.iter().enumerate().rev() {
                needed[i] = true;
                if link.part(key_group) != Some(GroupPart::Delta) {
                    break;
                }
            }
        }
        let earlier = base.iter().zip(needed).filter(|(_, n)| *n).map(|(l, _)| l.clone()).collect();
        KeyedChain { checkpoint_id, parts, format_version, earlier }
    }

    /// Every stream of the earlier links.
    pub fn streams(&self) -> impl Iterator<Item = &StreamStateHandle> {
        self.earlier.iter().map(|l| l.handle.stream())
    }

    /// The same chain with every earlier stream mapped by `f`.
    pub fn map_streams(self, f: &impl Fn(StreamStateHandle) -> StreamStateHandle) -> Self {
        let earlier = self.earlier.into_iter().map(|l| ChainLink { handle: l.handle.map_stream(f), ..l }).collect();
        KeyedChain { earlier, ..self }
    }
}

/// The length of `key_group`'s chain in `links` (1 for a full part in the newest link; 0 when
/// the newest link does not hold the group) and the bytes of its full part and of its deltas.
pub fn chain_stats(links: &[ChainLink], key_group: u32) -> ChainStats {
    let mut stats = ChainStats::default();
    for link in links.iter().rev() {
        match link.part(key_group) {
            Some(GroupPart::Delta) => {
                stats.length += 1;
                stats.delta_bytes += link.group_bytes(key_group);
            }
            Some(GroupPart::Full) => {
                stats.length += 1;
                stats.full_bytes = link.group_bytes(key_group);
                return stats;
            }
            None => break,
        }
    }
    // No full part: not a chain that can be restored; report it as unusable.
    ChainStats { complete: false, ..stats }
}

/// See [`chain_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainStats {
    /// Parts in the chain, full part included.
    pub length: u32,
    /// Bytes of the full part.
    pub full_bytes: u64,
    /// Bytes of every delta.
    pub delta_bytes: u64,
    /// Whether the chain starts with a full part.
    pub complete: bool,
}

impl Default for ChainStats {
    fn default() -> Self {
        ChainStats { length: 0, full_bytes: 0, delta_bytes: 0, complete: true }
    }
}

/// The pieces restoring the key groups of `range` from `links` (one subtask's chain, oldest
/// first): from each link, the groups of `range` whose chain runs through it, each with its part.
/// Links from which nothing is restored are left out. A group whose chain has no full part is an
/// error naming it.
pub fn restore_pieces(links: &[ChainLink], range: &KeyGroupRange) -> Result<Vec<KeyedRestorePiece>, String> {
    let mut pieces: Vec<KeyedRestorePiece> = links
        .iter()
        .map(|l| KeyedRestorePiece {
            handle: l.handle.clone(),
            parts: vec![None; l.handle.key_group_range().len() as usize],
            format_version: l.format_version,
        })
        .collect();
    let Some(newest) = links.last() else { return Ok(Vec::new()) };
    for key_group in newest.handle.key_group_range().intersection(range).iter() {
        let mut found_full = false;
        for (i, link) in links.iter().enumerate().rev() {
            let Some(part) = link.part(key_group) else { break };
            let index = link.handle.key_group_range().index_of(key_group).expect("part() found it");
            pieces[i].parts[index] = Some(part);
            if part == GroupPart::Full {
                found_full = true;
                break;
            }
        }
        if !found_full {
            return Err(format!(
                "key group {key_group} of checkpoint {}: its chain of deltas has no full part (a stream of an earlier checkpoint is missing from the metadata)",
                newest.checkpoint_id
            ));
        }
    }
    pieces.retain(|p| p.parts.iter().any(Option::is_some));
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::handles::KeyGroupRangeOffsets;

    fn link(id: u64, parts: &[GroupPart], sizes: &[u64]) -> ChainLink {
        let range = KeyGroupRange::new(0, parts.len() as u32 - 1);
        let mut offsets = Vec::new();
        let mut at = 0;
        for s in sizes {
            offsets.push(at);
            at += s;
        }
        // Bytes that differ per checkpoint, so that every link's handle is its own.
        let stream = StreamStateHandle::Inline { bytes: vec![id as u8; at as usize] };
        let handle = KeyGroupsStateHandle::new(Arc::new(KeyGroupRangeOffsets::new(range, offsets).unwrap()), stream);
        ChainLink { checkpoint_id: id, handle, parts: parts.to_vec(), format_version: 1 }
    }

    use GroupPart::{Delta as D, Full as F};

    #[test]
    fn pieces_restore_each_group_from_its_newest_full_part_on() {
        let links = [link(1, &[F, F, F], &[5, 5, 5]), link(2, &[D, F, D], &[1, 6, 2]), link(3, &[D, D, F], &[1, 1, 7])];
        let pieces = restore_pieces(&links, &KeyGroupRange::new(0, 2)).unwrap();
        let parts: Vec<_> = pieces.iter().map(|p| p.parts.clone()).collect();
        assert_eq!(parts, [vec![Some(F), None, None], vec![Some(D), Some(F), None], vec![Some(D), Some(D), Some(F)]]);
        // Only group 1 after rescaling: the first stream is not read at all.
        let pieces = restore_pieces(&links, &KeyGroupRange::new(1, 1)).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].handle, links[1].handle);
        let stats = chain_stats(&links, 0);
        assert_eq!((stats.length, stats.full_bytes, stats.delta_bytes, stats.complete), (3, 5, 2, true));
    }

    #[test]
    fn a_chain_without_a_full_part_is_refused() {
        let links = [link(2, &[D], &[1]), link(3, &[D], &[1])];
        let err = restore_pieces(&links, &KeyGroupRange::new(0, 0)).unwrap_err();
        assert!(err.contains("key group 0 of checkpoint 3") && err.contains("no full part"), "{err}");
        assert!(!chain_stats(&links, 0).complete);
    }

    proptest! {
        /// Building chains checkpoint by checkpoint with random parts, the earlier links kept
        /// are exactly those some group's chain needs, and each group's restore order is its
        /// newest full part, then every later delta.
        #[test]
        fn chains_keep_exactly_the_links_their_groups_need(rounds in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 4), 1..12)) {
            let range = KeyGroupRange::new(0, 3);
            let mut base: Vec<ChainLink> = Vec::new();
            let mut history: Vec<Vec<GroupPart>> = Vec::new();
            for (round, fulls) in rounds.iter().enumerate() {
                let id = round as u64 + 1;
                // The first checkpoint writes everything in full: there is no base.
                let parts: Vec<GroupPart> = fulls.iter().map(|&f| if f || base.is_empty() { F } else { D }).collect();
                history.push(parts.clone());
                let own = link(id, &parts, &[1, 1, 1, 1]);
                let chain = KeyedChain::on_top_of(&base, id, parts, 1, range);
                base = chain.links(&own.handle);
                for kg in 0..4u32 {
                    let newest_full = history.iter().rposition(|p| p[kg as usize] == F).unwrap() as u64 + 1;
                    let expected: Vec<u64> = (newest_full..=id).collect();
                    let pieces = restore_pieces(&base, &KeyGroupRange::new(kg, kg)).unwrap();
                    let order: Vec<u64> = pieces.iter().map(|p| base.iter().find(|l| l.handle == p.handle).unwrap().checkpoint_id).collect();
                    prop_assert_eq!(&order, &expected);
                }
                let oldest_needed = (0..4).map(|kg| history.iter().rposition(|p| p[kg] == F).unwrap() as u64 + 1).min().unwrap();
                let kept: Vec<u64> = base.iter().map(|l| l.checkpoint_id).collect();
                prop_assert_eq!(kept, (oldest_needed..=id).collect::<Vec<_>>());
            }
        }
    }
}
