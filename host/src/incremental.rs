//! A subtask's side of incremental checkpoints: which chain each change base stands for, and
//! what each key group writes next.
//!
//! The backend counts changes ([`crate::changes`]); a delta it produces is relative to its
//! *base*, the snapshot confirmed last. The tracker remembers, for every snapshot this subtask
//! wrote, the chain its keyed state became, so that when the checkpoint completes
//! ([`ChainTracker::confirm`]) and the backend's base moves to that snapshot, the next delta is
//! written on top of exactly that chain. A snapshot whose base the tracker does not know (a
//! backend from elsewhere, a base never confirmed) writes every key group in full: a delta is
//! only ever written on top of the very state it was computed against.

use std::collections::{BTreeMap, VecDeque};

use crate::changes::SnapshotChanges;
use crate::config::IncrementalConfig;
use crate::handles::{chain_stats, ChainLink, GroupPart};
use crate::key_groups::KeyGroupRange;

/// A change base: the backend's tracking identity and the counter of the snapshot.
type BaseKey = (u64, u64);

/// Bases and written snapshots kept; older ones can no longer be confirmed or built on (a
/// snapshot on an unknown base is simply written in full).
const KEPT: usize = 16;

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub(crate) struct ChainTracker {
    /// Confirmed bases, newest last: the chain each one's state is.
    bases: VecDeque<(BaseKey, Vec<ChainLink>)>,
    /// Snapshots written and not confirmed yet, by checkpoint id.
    written: BTreeMap<u64, (BaseKey, Vec<ChainLink>)>,
}

impl ChainTracker {
    /// The chain a snapshot with `changes` writes its deltas on top of, if its base is known.
    pub(crate) fn base_links(&self, changes: SnapshotChanges) -> Option<&[ChainLink]> {
        let key = (changes.tracker, changes.base?);
        self.bases.iter().rev().find(|(k, _)| *k == key).map(|(_, links)| links.as_slice())
    }

    /// Records the chain checkpoint `id`'s snapshot (taken with `changes`) became.
    pub(crate) fn written(&mut self, id: u64, changes: SnapshotChanges, links: Vec<ChainLink>) {
        self.written.insert(id, ((changes.tracker, changes.upto), links));
        while self.written.len() > KEPT {
            self.written.pop_first();
        }
    }

    /// Checkpoint `id` completed: its snapshot becomes a base. Returns the backend tracking
    /// identity and counter to confirm ([`KeyedStateBackend::confirm_base`]), or `None` when
    /// this subtask wrote no such snapshot.
    ///
    /// [`KeyedStateBackend::confirm_base`]: crate::backend::KeyedStateBackend::confirm_base
    pub(crate) fn confirm(&mut self, id: u64) -> Option<(u64, u64)> {
        let (key, links) = self.written.remove(&id)?;
        // Older written snapshots can never become bases once a newer one did.
        self.written.retain(|&other, _| other > id);
        self.push_base(key, links);
        Some(key)
    }

    /// The backend was restored to the state of `links` (tracking identity and counter `key`).
    pub(crate) fn restored(&mut self, key: (u64, u64), links: Vec<ChainLink>) {
        self.written.clear();
        self.bases.clear();
        self.push_base(key, links);
    }

    fn push_base(&mut self, key: BaseKey, links: Vec<ChainLink>) {
        self.bases.retain(|(k, _)| *k != key);
        self.bases.push_back((key, links));
        while self.bases.len() > KEPT {
            self.bases.pop_front();
        }
    }
}

/// What each key group of `range` writes on top of `base` (the base checkpoint's chain, oldest
/// first): a delta while its chain stays within `config`'s bounds, else (or without a chain to
/// add to) its full state. Compaction this way keeps a group's chain at most
/// `max_chain_length` parts and its deltas at about `max_delta_ratio` of its full part, so
/// restore work and storage stay bounded whatever the number of checkpoints.
pub(crate) fn plan(base: &[ChainLink], range: KeyGroupRange, config: &IncrementalConfig) -> Vec<GroupPart> {
    range
        .iter()
        .map(|key_group| {
            let stats = chain_stats(base, key_group);
            let fits = stats.complete
                && stats.length > 0
                && stats.length < config.max_chain_length
                && stats.delta_bytes * 1000 <= stats.full_bytes * config.max_delta_permille as u64;
            if fits {
                GroupPart::Delta
            } else {
                GroupPart::Full
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::handles::{KeyGroupRangeOffsets, KeyGroupsStateHandle, StreamStateHandle};

    fn link(id: u64, parts: Vec<GroupPart>, sizes: &[u64]) -> ChainLink {
        let range = KeyGroupRange::new(0, parts.len() as u32 - 1);
        let offsets: Vec<u64> = sizes.iter().scan(0, |at, s| Some(std::mem::replace(at, *at + s))).collect();
        let stream = StreamStateHandle::Inline { bytes: vec![0; sizes.iter().sum::<u64>() as usize] };
        let handle = KeyGroupsStateHandle::new(Arc::new(KeyGroupRangeOffsets::new(range, offsets).unwrap()), stream);
        ChainLink { checkpoint_id: id, handle, parts, format_version: 1 }
    }

    #[test]
    fn groups_compact_when_their_chain_is_too_long_or_their_deltas_too_big() {
        use GroupPart::{Delta as D, Full as F};
        let config = IncrementalConfig { enabled: true, max_chain_length: 3, max_delta_permille: 500 };
        let range = KeyGroupRange::new(0, 2);
        assert_eq!(plan(&[], range, &config), [F, F, F], "nothing to add a delta to");
        // Group 0: full 100, deltas 10 + 10 (chain of 3: full next). Group 1: full 100, delta 60
        // (over half: full next). Group 2: full 100, delta 10: delta next.
        let base = [
            link(1, vec![F, F, F], &[100, 100, 100]),
            link(2, vec![D, D, D], &[10, 60, 10]),
            link(3, vec![D, F, F], &[10, 100, 100]),
        ];
        assert_eq!(plan(&base[..2], range, &config), [D, F, D]);
        assert_eq!(plan(&base, range, &config), [F, D, D]);
    }

    #[test]
    fn only_a_confirmed_snapshot_of_the_same_backend_is_a_base() {
        let mut tracker = ChainTracker::default();
        let changes = |tracker, upto, base| SnapshotChanges { tracker, upto, base };
        let links = vec![link(1, vec![GroupPart::Full], &[5])];
        tracker.written(1, changes(7, 10, Some(0)), links.clone());
        assert!(tracker.base_links(changes(7, 12, Some(10))).is_none(), "not confirmed yet");
        assert_eq!(tracker.confirm(1), Some((7, 10)));
        assert_eq!(tracker.base_links(changes(7, 12, Some(10))), Some(links.as_slice()));
        assert!(tracker.base_links(changes(8, 12, Some(10))).is_none(), "another backend's counter");
        assert_eq!(tracker.confirm(1), None, "confirmed once");
    }
}
