//! Change tracking in the keyed backend: which (key, namespace) rows changed or were deleted
//! since the state a delta will be based on, per state and key group. The foundation of
//! incremental checkpoints, for any strategy and any format.
//!
//! Every mutation is stamped with a sequence number from the backend's counter and recorded
//! in a per-key-group table beside the data, shared copy-on-write with snapshots exactly like
//! the data itself, so taking a snapshot stays `O(key groups)`. A snapshot remembers the
//! counter (`upto`) and the base in force when it was taken. Its delta against that base is
//! every row stamped after the base: its value in the snapshot, or its deletion when the row
//! is gone. When a checkpoint completes and becomes the new base
//! ([`KeyedStateBackend::confirm_base`]), rows stamped up to it are forgotten; a checkpoint
//! that fails or is aborted confirms nothing, so its changes are carried into the next delta.
//! Rows changed again after a snapshot keep their newer stamp and stay.
//!
//! [`KeyedStateBackend::confirm_base`]: crate::backend::KeyedStateBackend::confirm_base

use std::collections::BTreeMap;

use crate::backend::{RowKey, StateValue};

/// Per key group: the rows changed since the base, with the sequence number of their last
/// change.
pub type Touched = BTreeMap<RowKey, u64>;

/// The backend's counters: the last sequence number handed out, and the base deltas are
/// relative to (`None` until one exists: then only full snapshots can be written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounters {
    /// Identifies this backend's tracking (random), so that a base recorded for one backend
    /// is never taken for another's with the same counter.
    pub tracker: u64,
    /// The last mutation's sequence number.
    pub sequence: u64,
    /// Sequence number of the base state: rows stamped after it are in a delta.
    pub base: Option<u64>,
}

/// What a snapshot knows about changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotChanges {
    /// The backend's tracking identity ([`ChangeCounters::tracker`]).
    pub tracker: u64,
    /// The counter when the snapshot was taken: it holds every change up to it.
    pub upto: u64,
    /// The base in force then (`None`: no delta possible, write a full snapshot).
    pub base: Option<u64>,
}

/// One row of a delta: what (key, namespace) holds now, or that it is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowChange<'a> {
    /// The row's whole value now (a whole list or map: it replaces the base's).
    Upsert(&'a StateValue),
    /// The row was removed.
    Delete,
}

/// The rows of `touched` stamped after `base`, with their value in `group` (the snapshot's
/// data for the same key group and state).
pub(crate) fn delta<'a>(
    touched: &'a Touched,
    group: &'a BTreeMap<RowKey, StateValue>,
    base: u64,
) -> impl Iterator<Item = (&'a RowKey, RowChange<'a>)> + 'a {
    touched.iter().filter(move |(_, &seq)| seq > base).map(move |(row, _)| match group.get(row) {
        Some(value) => (row, RowChange::Upsert(value)),
        None => (row, RowChange::Delete),
    })
}

/// Forgets the rows of `touched` stamped up to `upto` (they are in the new base).
pub(crate) fn prune(touched: &mut Touched, upto: u64) {
    touched.retain(|_, seq| *seq > upto);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::RowChange;
    use crate::backend::{KeyedStateBackend, RowKey, StateKind, StateValue};
    use crate::key_groups::KeyGroupRange;

    type Contents = Vec<BTreeMap<RowKey, StateValue>>;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Add(u8, u8),
        PutMap(u8, u8, u8),
        Remove(usize, u8),
        Snapshot,
        /// Confirm the n-th snapshot taken so far (modulo), as its checkpoint completing.
        Complete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k % 40, v)),
            3 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Add(k % 40, v)),
            3 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(k, u, v)| Op::PutMap(k % 40, u % 4, v)),
            2 => (0..3usize, any::<u8>()).prop_map(|(s, k)| Op::Remove(s, k % 40)),
            1 => Just(Op::Snapshot),
            1 => any::<usize>().prop_map(Op::Complete),
        ]
    }

    /// Every state's rows, over all key groups (states in index order).
    fn contents(b: &KeyedStateBackend) -> Contents {
        let by_name = b.contents();
        ["v", "l", "m"].iter().map(|n| by_name.get(*n).map(|(_, rows)| rows.clone()).unwrap_or_default()).collect()
    }

    fn key(k: u8) -> Vec<u8> {
        format!("key-{k}").into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Whatever happens in between (writes, deletions, snapshots that never complete,
        /// completions out of order), a snapshot's delta applied to its base gives exactly
        /// the snapshot's state.
        #[test]
        fn a_delta_applied_to_its_base_is_the_snapshot(ops in proptest::collection::vec(op(), 1..120)) {
            let mut b = KeyedStateBackend::new(8, KeyGroupRange::new(0, 7)).unwrap();
            let states = [
                b.register_state("v", StateKind::Value).unwrap(),
                b.register_state("l", StateKind::List).unwrap(),
                b.register_state("m", StateKind::Map).unwrap(),
            ];
            b.track_changes();
            // The first base: the empty state, as after a restore of nothing.
            b.mark_base_now();
            let mut at: BTreeMap<u64, Contents> = BTreeMap::from([(0, contents(&b))]);
            let mut snapshots = Vec::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => b.put(states[0], &key(k), b"", &[v]).unwrap(),
                    Op::Add(k, v) => b.add(states[1], &key(k), b"ns", &[v]).unwrap(),
                    Op::PutMap(k, u, v) => b.put_map(states[2], &key(k), b"", &[u], &[v]).unwrap(),
                    Op::Remove(s, k) => {
                        let ns: &[u8] = if s == 1 { b"ns" } else { b"" };
                        b.remove(states[s], &key(k), ns).unwrap()
                    }
                    Op::Snapshot => {
                        let view = b.snapshot();
                        let upto = view.changes().unwrap().upto;
                        at.insert(upto, contents(&b));
                        snapshots.push(view);
                    }
                    Op::Complete(n) if !snapshots.is_empty() => {
                        b.confirm_base(snapshots[n % snapshots.len()].changes().unwrap().upto);
                    }
                    Op::Complete(_) => {}
                }
            }
            for view in &snapshots {
                let changes = view.changes().unwrap();
                let mut rebuilt = at[&changes.base.unwrap()].clone();
                for (index, rows) in rebuilt.iter_mut().enumerate() {
                    for kg in 0..8 {
                        for (row, change) in view.delta(index as u32, kg).unwrap() {
                            match change {
                                RowChange::Upsert(v) => { rows.insert(row.clone(), v.clone()); }
                                RowChange::Delete => { rows.remove(row); }
                            }
                        }
                    }
                }
                prop_assert_eq!(&rebuilt, &at[&changes.upto]);
            }
        }
    }

    #[test]
    fn without_a_base_there_is_no_delta_and_tracking_is_off_by_default() {
        let mut b = KeyedStateBackend::new(8, KeyGroupRange::new(0, 7)).unwrap();
        let v = b.register_state("v", StateKind::Value).unwrap();
        b.put(v, b"k", b"", b"1").unwrap();
        assert_eq!(b.change_counters(), None);
        assert!(b.snapshot().delta(v, 0).is_err());
        b.track_changes();
        b.put(v, b"k", b"", b"2").unwrap();
        assert!(b.snapshot().delta(v, 0).is_err(), "no full snapshot confirmed yet");
        assert_eq!(b.snapshot().changed_rows(), None);
    }

    #[test]
    fn a_failed_checkpoints_changes_are_carried_into_the_next_delta() {
        let mut b = KeyedStateBackend::new(1, KeyGroupRange::new(0, 0)).unwrap();
        let v = b.register_state("v", StateKind::Value).unwrap();
        b.track_changes();
        b.put(v, b"a", b"", b"1").unwrap();
        let base = b.snapshot();
        b.confirm_base(base.changes().unwrap().upto);
        b.put(v, b"b", b"", b"2").unwrap();
        let _failed = b.snapshot(); // its checkpoint is aborted: nothing is confirmed
        b.put(v, b"c", b"", b"3").unwrap();
        b.remove(v, b"a", b"").unwrap();
        let next = b.snapshot();
        let rows: Vec<(Vec<u8>, bool)> =
            next.delta(v, 0).unwrap().into_iter().map(|(r, c)| (r.0.clone(), c == RowChange::Delete)).collect();
        assert_eq!(rows, [(b"a".to_vec(), true), (b"b".to_vec(), false), (b"c".to_vec(), false)]);
        assert_eq!(next.changed_rows(), Some(3));
        // Confirming the newer one prunes everything it holds; a late confirmation of an older
        // snapshot does not move the base back.
        b.confirm_base(next.changes().unwrap().upto);
        b.confirm_base(base.changes().unwrap().upto);
        assert_eq!(b.snapshot().changed_rows(), Some(0));
        assert_eq!(b.change_counters().unwrap().base, next.changes().map(|c| c.upto));
    }
}
