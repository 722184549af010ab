//! Incremental cases (WIT 0.2.0): a full snapshot, then deltas of what changed, restored as the
//! host restores a chain (each group's full part, then its deltas in order) and compared with
//! the state itself. They cover changed and new entries, removed rows, whole lists replaced,
//! chains where some groups are compacted to full parts while others stay deltas, and a chain
//! restored at another parallelism. A plugin that declares no deltas skips them.

use std::sync::Arc;

use super::data::{self, MAX_P};
use super::diagnose::compare_keyed;
use super::{CaseError, CaseOutput, Context, Passed};
use crate::backend::{KeyedStateBackend, StateKind};
use crate::handles::{restore_pieces, ChainLink, GroupPart, KeyGroupsStateHandle, KeyedChain};
use crate::key_groups::{range_for_operator, KeyGroupRange};
use crate::runtime::CancelToken;
use crate::streams::{CheckpointOutputStream, MemoryCheckpointOutputStream};

/// A backend being checkpointed incrementally: its chain so far, as the host keeps it.
struct Chained {
    backend: KeyedStateBackend,
    links: Vec<ChainLink>,
    next_id: u64,
    bytes: u64,
}

impl Chained {
    /// Starts tracking `backend` and writes its first snapshot, in full.
    fn start(cx: &Context, mut backend: KeyedStateBackend) -> Result<Self, CaseError> {
        backend.track_changes();
        let mut chained = Chained { backend, links: Vec::new(), next_id: 1, bytes: 0 };
        let all_full = vec![GroupPart::Full; chained.backend.key_group_range().len() as usize];
        chained.checkpoint(cx, all_full)?;
        Ok(chained)
    }

    /// One snapshot writing each group as `parts` says, confirmed as the next base; the chain
    /// then keeps only the links some group still needs (as the host's does).
    fn checkpoint(&mut self, cx: &Context, parts: Vec<GroupPart>) -> Result<(), CaseError> {
        let snapshot = self.backend.snapshot();
        let upto = snapshot.changes().map(|c| c.upto);
        let out: Box<dyn CheckpointOutputStream> = Box::new(MemoryCheckpointOutputStream::new());
        let deltas = parts.iter().filter(|p| **p == GroupPart::Delta).count();
        let (stream, offsets) = cx
            .plugin
            .snapshot_keyed_parts(snapshot, Some(parts.clone()), out, &CancelToken::new())
            .map_err(|e| CaseError::plugin(&format!("snapshot {} ({deltas} delta groups) failed", self.next_id), e))?;
        let stream = stream.close_and_get_handle().map_err(|e| CaseError::msg(format!("closing the snapshot: {e}")))?;
        let handle = KeyGroupsStateHandle::new(Arc::new(offsets), stream);
        self.bytes += handle.state_size();
        let range = self.backend.key_group_range();
        let format_version = cx.plugin.info().format_version;
        let chain = KeyedChain::on_top_of(&self.links, self.next_id, parts, format_version, range);
        self.links = chain.links(&handle);
        self.next_id += 1;
        if let Some(upto) = upto {
            self.backend.confirm_base(upto);
        }
        Ok(())
    }

    /// Restores key groups `range` from the chain, as the host does, into a fresh backend.
    fn restore(&self, cx: &Context, range: KeyGroupRange) -> Result<KeyedStateBackend, CaseError> {
        restore_links(cx, &self.links, range)
    }
}

fn restore_links(cx: &Context, links: &[ChainLink], range: KeyGroupRange) -> Result<KeyedStateBackend, CaseError> {
    let pieces = restore_pieces(links, &range).map_err(CaseError::msg)?;
    let mut backend = KeyedStateBackend::new(MAX_P, range).map_err(|e| CaseError::msg(e.to_string()))?;
    for piece in &pieces {
        let what: Vec<String> = piece
            .handle
            .key_group_range()
            .iter()
            .filter_map(|kg| piece.part(kg).map(|p| format!("{kg}:{p}")))
            .take(4)
            .collect();
        backend = cx.plugin.restore_keyed_piece(piece, backend, &CancelToken::new()).map_err(|e| {
            CaseError::plugin(&format!("restore of key groups {range} (parts {}, …) failed", what.join(" ")), e)
        })?;
    }
    Ok(backend)
}

fn skip_unless_incremental(cx: &Context) -> Option<Passed> {
    (!cx.plugin.info().incremental)
        .then(|| Passed::skip("the plugin declares no deltas (plugin-info.incremental false, or WIT 0.1.0)"))
}

fn all(range: KeyGroupRange, part: GroupPart) -> Vec<GroupPart> {
    vec![part; range.len() as usize]
}

/// Changes a third of the rows of `b`'s states of every kind, adds new rows, in round `round`
/// (only those of `b`'s key groups: the same calls change each subtask's share).
fn change(b: &mut KeyedStateBackend, n: usize, round: usize) {
    let (v, l, m) = (b.state_index("value").unwrap(), b.state_index("list").unwrap(), b.state_index("map").unwrap());
    for i in (round % 3..n).step_by(3) {
        let key = format!("key-{i}");
        if b.key_group_of(key.as_bytes()).is_err() {
            continue;
        }
        let ns: &[u8] = if i % 3 == 0 { b"window-1" } else { b"" };
        b.put(v, key.as_bytes(), ns, format!("v{i}-round{round}").as_bytes()).unwrap();
        b.add(l, key.as_bytes(), ns, &(round as u64).to_le_bytes()).unwrap();
        b.put_map(m, key.as_bytes(), ns, &(round as u32).to_be_bytes(), b"added").unwrap();
        b.put_map(m, key.as_bytes(), ns, &(i as u32).to_be_bytes(), b"changed").unwrap();
    }
    for i in 0..n / 10 {
        let key = format!("new-{round}-{i}");
        if b.key_group_of(key.as_bytes()).is_ok() {
            b.put(v, key.as_bytes(), b"", b"new").unwrap();
        }
    }
}

/// Full snapshot, changes, one delta of every group: the restored chain is the state. Among
/// the changes, values of 64 KiB and more (past a 16-bit length a delta layout may use).
pub fn delta_round_trip(cx: &Context) -> CaseOutput {
    if let Some(skip) = skip_unless_incremental(cx) {
        return Ok(skip);
    }
    let mut chained = Chained::start(cx, data::every_kind(2_000))?;
    change(&mut chained.backend, 2_000, 0);
    let b = &mut chained.backend;
    let v = b.state_index("value").unwrap();
    for (i, len) in [(1usize, (1 << 16) - 1), (2, 1 << 16), (4, 100_000)] {
        let value: Vec<u8> = (0..len).map(|j| (j % 251) as u8).collect();
        b.put(v, format!("key-{i}").as_bytes(), b"", &value).unwrap();
    }
    let range = chained.backend.key_group_range();
    chained.checkpoint(cx, all(range, GroupPart::Delta))?;
    let restored = chained.restore(cx, range)?;
    compare_keyed(&chained.backend, &restored, "full snapshot + one delta").map_err(CaseError::msg)?;
    Ok(chained.bytes.into())
}

/// Rows removed (of every kind, and every row of some groups), lists cleared and written anew,
/// maps shrunk: the deltas express them as removals and whole-row replacements.
pub fn deletions(cx: &Context) -> CaseOutput {
    if let Some(skip) = skip_unless_incremental(cx) {
        return Ok(skip);
    }
    let n = 2_000;
    let mut chained = Chained::start(cx, data::every_kind(n))?;
    let b = &mut chained.backend;
    let (v, l, m) = (b.state_index("value").unwrap(), b.state_index("list").unwrap(), b.state_index("map").unwrap());
    for i in 0..n {
        let key = format!("key-{i}");
        let ns: &[u8] = if i % 3 == 0 { b"window-1" } else { b"" };
        match i % 4 {
            0 => {
                b.remove(v, key.as_bytes(), ns).unwrap();
                b.remove(l, key.as_bytes(), ns).unwrap();
                b.remove(m, key.as_bytes(), ns).unwrap();
            }
            1 => {
                // A list replaced by a shorter one: restore must drop the old elements.
                b.remove(l, key.as_bytes(), ns).unwrap();
                b.add(l, key.as_bytes(), ns, b"only").unwrap();
            }
            2 => {
                // A map row replaced by one with other user keys.
                b.remove(m, key.as_bytes(), ns).unwrap();
                b.put_map(m, key.as_bytes(), ns, b"other", b"x").unwrap();
            }
            _ => {}
        }
    }
    let range = b.key_group_range();
    chained.checkpoint(cx, all(range, GroupPart::Delta))?;
    compare_keyed(&chained.backend, &chained.restore(cx, range)?, "removals in a delta").map_err(CaseError::msg)?;
    // Then everything removed: a delta that empties every group.
    let b = &mut chained.backend;
    for (name, _) in b.states() {
        let state = b.state_index(&name).unwrap();
        let rows: Vec<_> = b.contents().remove(&name).map(|(_, rows)| rows.into_keys().collect()).unwrap_or_default();
        for (key, ns) in rows {
            b.remove(state, &key, &ns).unwrap();
        }
    }
    chained.checkpoint(cx, all(range, GroupPart::Delta))?;
    compare_keyed(&chained.backend, &chained.restore(cx, range)?, "every row removed in a delta")
        .map_err(CaseError::msg)?;
    Ok(chained.bytes.into())
}

/// Eight checkpoints where each group is a delta or, in turn, compacted to a full part: every
/// group's chain has another length and starts in another link, and restoring walks them all.
pub fn chains(cx: &Context) -> CaseOutput {
    if let Some(skip) = skip_unless_incremental(cx) {
        return Ok(skip);
    }
    let n = 1_500;
    let mut chained = Chained::start(cx, data::every_kind(n))?;
    let range = chained.backend.key_group_range();
    for round in 1..8 {
        change(&mut chained.backend, n, round);
        let parts = range
            .iter()
            .map(|kg| if (kg as usize + round).is_multiple_of(5) { GroupPart::Full } else { GroupPart::Delta })
            .collect();
        chained.checkpoint(cx, parts)?;
        compare_keyed(&chained.backend, &chained.restore(cx, range)?, &format!("chain after checkpoint {}", round + 1))
            .map_err(CaseError::msg)?;
    }
    // A state registered after the base: it appears in deltas only.
    let late = chained.backend.register_state("registered-late", StateKind::Value).unwrap();
    for i in 0..200 {
        chained.backend.put(late, format!("late-{i}").as_bytes(), b"", b"late").unwrap();
    }
    chained.checkpoint(cx, all(range, GroupPart::Delta))?;
    compare_keyed(&chained.backend, &chained.restore(cx, range)?, "a state first written in a delta")
        .map_err(CaseError::msg)?;
    Ok(chained.bytes.into())
}

/// Chains written at parallelism 2 restored at 3 (and at 1): each new subtask reads the
/// intersecting part of every old subtask's chain, groups starting mid-handle.
pub fn rescaling(cx: &Context) -> CaseOutput {
    if let Some(skip) = skip_unless_incremental(cx) {
        return Ok(skip);
    }
    let n = 2_000;
    let whole = data::every_kind(n);
    let mut old = Vec::new();
    let mut expected = data::empty();
    let mut bytes = 0;
    for i in 0..2 {
        let range = range_for_operator(MAX_P, 2, i).map_err(|e| CaseError::msg(e.to_string()))?;
        let mut chained = Chained::start(cx, data::restrict(&whole, range))?;
        for round in 0..3 {
            change(&mut chained.backend, n, round);
            chained.checkpoint(cx, all(range, GroupPart::Delta))?;
        }
        data::merge_into(&mut expected, &chained.backend);
        bytes += chained.bytes;
        old.push(chained);
    }
    for to in [3, 1] {
        let mut combined = data::empty();
        for j in 0..to {
            let range = range_for_operator(MAX_P, to, j).map_err(|e| CaseError::msg(e.to_string()))?;
            let mut restored = KeyedStateBackend::new(MAX_P, range).map_err(|e| CaseError::msg(e.to_string()))?;
            for chained in &old {
                if chained.backend.key_group_range().intersection(&range).is_empty() {
                    continue;
                }
                let part = chained.restore(cx, range.intersection(&chained.backend.key_group_range()))?;
                data::merge_into(&mut restored, &part);
            }
            compare_keyed(
                &data::restrict(&expected, range),
                &restored,
                &format!("subtask {j} of {to} from chains at 2"),
            )
            .map_err(CaseError::msg)?;
            data::merge_into(&mut combined, &restored);
        }
        compare_keyed(&expected, &combined, &format!("chains at parallelism 2, restored at {to}"))
            .map_err(CaseError::msg)?;
    }
    Ok(bytes.into())
}
