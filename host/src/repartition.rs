//! Redistribution of operator list state when a job restores with another parallelism.
//!
//! - SPLIT_DISTRIBUTE: the elements of all old subtasks are pooled (in subtask order) and split
//!   into contiguous, as-equal-as-possible runs, one per new subtask.
//! - UNION: every new subtask gets every element of every old subtask.
//! - BROADCAST: every old subtask held the same list; new subtask `i` gets old subtask
//!   `i % old_parallelism`'s copy.
//!
//! With an unchanged parallelism and no union state, every subtask simply gets its own state
//! back: that is the only case where a local copy can stand in for the primary.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::handles::{DistributionMode, OperatorStateHandle, SegmentChecksums, StreamStateHandle};

/// What one new subtask reads from one stream: per state, its mode and the element offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStreamAssignment {
    /// The stream to read.
    pub stream: StreamStateHandle,
    /// Its segment checksums, to verify every partition read.
    pub checksums: Arc<SegmentChecksums>,
    /// (state name, mode, offsets of the elements to read).
    pub states: Vec<(String, DistributionMode, Vec<u64>)>,
}

impl OperatorStreamAssignment {
    /// Everything in `handle`, unchanged.
    pub fn whole(handle: &OperatorStateHandle) -> Self {
        OperatorStreamAssignment {
            stream: handle.stream().clone(),
            checksums: handle.checksums().clone(),
            states: handle.partitions().iter().map(|(name, p)| (name.clone(), p.mode, p.offsets.clone())).collect(),
        }
    }
}

/// Whether restoring `old` (by old subtask) at `new_parallelism` gives every subtask exactly
/// its own state back.
pub fn is_identity(old: &[Option<OperatorStateHandle>], new_parallelism: u32) -> bool {
    old.len() == new_parallelism as usize
        && !old.iter().flatten().any(|h| h.partitions().values().any(|p| p.mode == DistributionMode::Union))
}

/// Per state: its mode and, per old subtask, the (stream index, offset) of each element.
type ElementsByOldSubtask<'a> = BTreeMap<&'a str, (DistributionMode, Vec<Vec<(usize, u64)>>)>;
/// Per new subtask, per stream index, per state: mode and offsets.
type Assigned = Vec<BTreeMap<usize, BTreeMap<String, (DistributionMode, Vec<u64>)>>>;

/// The assignment of every new subtask (index = new subtask).
pub fn repartition(old: &[Option<OperatorStateHandle>], new_parallelism: u32) -> Vec<Vec<OperatorStreamAssignment>> {
    let p = new_parallelism as usize;
    if is_identity(old, new_parallelism) {
        return old.iter().map(|h| h.iter().map(OperatorStreamAssignment::whole).collect()).collect();
    }
    // Per state: its mode and, per old subtask, (stream index, offsets).
    let streams: Vec<(&StreamStateHandle, &Arc<SegmentChecksums>)> =
        old.iter().flatten().map(|h| (h.stream(), h.checksums())).collect();
    let mut states: ElementsByOldSubtask = BTreeMap::new();
    let mut stream_index = 0;
    for (subtask, handle) in old.iter().enumerate() {
        let Some(handle) = handle else { continue };
        for (name, info) in handle.partitions() {
            let entry = states.entry(name).or_insert_with(|| (info.mode, vec![Vec::new(); old.len()]));
            entry.1[subtask].extend(info.offsets.iter().map(|&o| (stream_index, o)));
        }
        stream_index += 1;
    }
    // Per new subtask, per stream, per state: offsets.
    let mut out: Assigned = vec![BTreeMap::new(); p];
    for (name, (mode, by_old)) in &states {
        let give = |out: &mut Assigned, target: usize, parts: &[(usize, u64)]| {
            for &(stream, offset) in parts {
                out[target]
                    .entry(stream)
                    .or_default()
                    .entry(name.to_string())
                    .or_insert_with(|| (*mode, Vec::new()))
                    .1
                    .push(offset);
            }
        };
        match mode {
            DistributionMode::SplitDistribute => {
                let pooled: Vec<(usize, u64)> = by_old.iter().flatten().copied().collect();
                let (base, extra) = (pooled.len() / p, pooled.len() % p);
                let mut at = 0;
                for (target, _) in out.clone().iter().enumerate() {
                    let n = base + usize::from(target < extra);
                    give(&mut out, target, &pooled[at..at + n]);
                    at += n;
                }
            }
            DistributionMode::Union => {
                let all: Vec<(usize, u64)> = by_old.iter().flatten().copied().collect();
                for target in 0..p {
                    give(&mut out, target, &all);
                }
            }
            DistributionMode::Broadcast => {
                for target in 0..p {
                    give(&mut out, target, &by_old[target % by_old.len()]);
                }
            }
        }
        // Every new subtask knows the state, even if it got no element of it.
        for subtask in out.iter_mut() {
            if !subtask.values().any(|s| s.contains_key(*name)) {
                let first = by_old.iter().flatten().map(|(s, _)| *s).next().unwrap_or(0);
                if !streams.is_empty() {
                    subtask.entry(first).or_default().insert(name.to_string(), (*mode, Vec::new()));
                }
            }
        }
    }
    out.into_iter()
        .map(|by_stream| {
            by_stream
                .into_iter()
                .map(|(stream, states)| OperatorStreamAssignment {
                    stream: streams[stream].0.clone(),
                    checksums: streams[stream].1.clone(),
                    states: states.into_iter().map(|(n, (m, o))| (n, m, o)).collect(),
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handles::PartitionInfo;

    fn handle(tag: u8, states: &[(&str, DistributionMode, usize)]) -> OperatorStateHandle {
        let partitions = states
            .iter()
            .map(|(n, m, count)| {
                (n.to_string(), PartitionInfo { offsets: (0..*count as u64).map(|i| i * 10).collect(), mode: *m })
            })
            .collect();
        OperatorStateHandle::new(partitions, StreamStateHandle::Inline { bytes: vec![tag] })
    }

    /// (stream tag, offset) pairs of state `name` for each new subtask.
    fn of(assignments: &[Vec<OperatorStreamAssignment>], name: &str) -> Vec<Vec<(u8, u64)>> {
        assignments
            .iter()
            .map(|a| {
                let mut v: Vec<(u8, u64)> = a
                    .iter()
                    .flat_map(|s| {
                        let StreamStateHandle::Inline { bytes } = &s.stream else { unreachable!() };
                        s.states
                            .iter()
                            .filter(|(n, _, _)| n == name)
                            .flat_map(move |(_, _, o)| o.iter().map(move |&o| (bytes[0], o)))
                    })
                    .collect();
                v.sort();
                v
            })
            .collect()
    }

    #[test]
    fn same_parallelism_without_union_is_identity() {
        let old = vec![
            Some(handle(0, &[("s", DistributionMode::SplitDistribute, 2)])),
            Some(handle(1, &[("s", DistributionMode::SplitDistribute, 1)])),
        ];
        assert!(is_identity(&old, 2));
        let a = repartition(&old, 2);
        assert_eq!(a[0], vec![OperatorStreamAssignment::whole(old[0].as_ref().unwrap())]);
    }

    #[test]
    fn split_distribute_pools_and_splits_evenly() {
        let old: Vec<_> = (0..4).map(|i| Some(handle(i, &[("s", DistributionMode::SplitDistribute, 3)]))).collect();
        for new_p in [3u32, 6, 1, 12, 13] {
            let a = of(&repartition(&old, new_p), "s");
            let total: usize = a.iter().map(Vec::len).sum();
            assert_eq!(total, 12, "every element exactly once at p={new_p}");
            let (min, max) = (a.iter().map(Vec::len).min().unwrap(), a.iter().map(Vec::len).max().unwrap());
            assert!(max - min <= 1, "even split at p={new_p}: {a:?}");
            let mut all: Vec<_> = a.into_iter().flatten().collect();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 12);
        }
    }

    #[test]
    fn union_gives_everything_to_everyone_even_at_the_same_parallelism() {
        let old: Vec<_> = (0..2).map(|i| Some(handle(i, &[("u", DistributionMode::Union, 2)]))).collect();
        assert!(!is_identity(&old, 2));
        for new_p in [2u32, 3] {
            for got in of(&repartition(&old, new_p), "u") {
                assert_eq!(got, vec![(0, 0), (0, 10), (1, 0), (1, 10)]);
            }
        }
    }

    #[test]
    fn broadcast_gives_each_new_subtask_one_copy() {
        let old: Vec<_> = (0..2).map(|i| Some(handle(i, &[("b", DistributionMode::Broadcast, 2)]))).collect();
        let a = of(&repartition(&old, 5), "b");
        for (i, got) in a.iter().enumerate() {
            let source = (i % 2) as u8;
            assert_eq!(got, &vec![(source, 0), (source, 10)]);
        }
    }

    #[test]
    fn states_without_elements_are_still_assigned() {
        let old = vec![Some(handle(
            0,
            &[("empty", DistributionMode::SplitDistribute, 0), ("s", DistributionMode::SplitDistribute, 1)],
        ))];
        let a = repartition(&old, 3);
        for subtask in &a {
            assert!(subtask.iter().any(|s| s.states.iter().any(|(n, _, _)| n == "empty")), "{a:?}");
        }
    }
}
