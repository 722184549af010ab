//! Keyed-state cases: round trips of shaped data, each key group decoded alone from its
//! offset, rescaling, determinism and format stability across instances.

use std::io::Read;
use std::sync::Arc;

use super::data::{self, MAX_P};
use super::diagnose::{bytes_around, compare_keyed};
use super::{CaseError, CaseOutput, Context};
use crate::backend::KeyedStateBackend;
use crate::handles::{KeyGroupsStateHandle, StreamStateHandle};
use crate::key_groups::{range_for_operator, KeyGroupRange};
use crate::runtime::Plugin;
use crate::streams::{CheckpointOutputStream, MemoryCheckpointOutputStream};

/// Snapshots `backend` into memory.
pub fn snapshot(plugin: &Plugin, backend: &KeyedStateBackend) -> Result<KeyGroupsStateHandle, CaseError> {
    let out: Box<dyn CheckpointOutputStream> = Box::new(MemoryCheckpointOutputStream::new());
    let (stream, offsets) =
        plugin.snapshot_keyed(backend.snapshot(), out).map_err(|e| CaseError::plugin("snapshot failed", e))?;
    let handle = stream.close_and_get_handle().map_err(|e| CaseError::msg(format!("closing the snapshot: {e}")))?;
    Ok(KeyGroupsStateHandle::new(Arc::new(offsets), handle))
}

/// Restores `handles` into an empty backend of `range`. On failure, finds the first key group
/// that does not decode alone and shows the snapshot's bytes at its offset.
pub fn restore(
    plugin: &Plugin,
    handles: &[KeyGroupsStateHandle],
    range: KeyGroupRange,
) -> Result<KeyedStateBackend, CaseError> {
    let mut backend = KeyedStateBackend::new(MAX_P, range).map_err(|e| CaseError::msg(e.to_string()))?;
    for h in handles {
        backend = match plugin.restore_keyed(h, backend) {
            Ok(b) => b,
            Err(e) => {
                let mut failure = CaseError::plugin(&format!("restore of key groups {range} failed"), e);
                if let Some(bytes) = locate_decode_failure(plugin, h) {
                    failure.message.push_str(&format!("; {bytes}"));
                }
                return Err(failure);
            }
        };
    }
    Ok(backend)
}

/// The bytes around the offset of the first key group of `handle` that fails to restore alone.
fn locate_decode_failure(plugin: &Plugin, handle: &KeyGroupsStateHandle) -> Option<String> {
    let bytes = bytes_of(handle.stream()).ok()?;
    for (key_group, offset) in handle.offsets().iter() {
        let range = KeyGroupRange::new(key_group, key_group);
        let alone = handle.intersection(&range)?;
        let empty = KeyedStateBackend::new(MAX_P, range).ok()?;
        if plugin.restore_keyed(&alone, empty).is_err() {
            return Some(format!("key group {key_group} fails alone, {}", bytes_around(&bytes, offset)));
        }
    }
    None
}

/// All bytes of a stream.
pub fn bytes_of(handle: &StreamStateHandle) -> Result<Vec<u8>, CaseError> {
    let mut out = Vec::new();
    handle
        .open()
        .map_err(|e| CaseError::msg(e.to_string()))?
        .read_to_end(&mut out)
        .map_err(|e| CaseError::msg(e.to_string()))?;
    Ok(out)
}

/// Snapshot, restore, compare.
pub fn round_trip(cx: &Context, backend: KeyedStateBackend) -> CaseOutput {
    let handle = snapshot(cx.plugin, &backend)?;
    let restored = restore(cx.plugin, std::slice::from_ref(&handle), backend.key_group_range())?;
    compare_keyed(&backend, &restored, "round trip").map_err(CaseError::msg)?;
    Ok(handle.state_size().into())
}

/// Every key group restored alone, from its own offset, equals that group's part of the state.
pub fn each_group_alone(cx: &Context) -> CaseOutput {
    let extra = data::every_kind(2_000);
    let handle = snapshot(cx.plugin, &extra)?;
    for kg in 0..MAX_P {
        let range = KeyGroupRange::new(kg, kg);
        let alone =
            handle.intersection(&range).ok_or_else(|| CaseError::msg(format!("no offset for key group {kg}")))?;
        let restored = restore(cx.plugin, &[alone], range)
            .map_err(|e| e.context(&format!("key group {kg} cannot be decoded from its own offset alone")))?;
        compare_keyed(&data::restrict(&extra, range), &restored, &format!("key group {kg} restored alone"))
            .map_err(CaseError::msg)?;
    }
    Ok(handle.state_size().into())
}

/// The parallelism changes a rescaled restore goes through: out of one handle (1→3), whole
/// handles merged (4→2), and handles split and merged at once (3→5), where snapshots start at
/// key groups other than 0 and a restore starts in the middle of a handle.
const RESCALINGS: [(u32, u32); 3] = [(1, 3), (4, 2), (3, 5)];

/// Every rescaling of [`RESCALINGS`], the first failure reported.
pub fn rescaling(cx: &Context) -> CaseOutput {
    super::every_rescaling(cx, &RESCALINGS, rescale)
}

/// Snapshot at parallelism `from`, restore at `to` from the intersecting handles, compare.
fn rescale(cx: &Context, from: u32, to: u32) -> CaseOutput {
    let whole = data::every_kind(3_000);
    let mut handles = Vec::new();
    let mut bytes = 0;
    for i in 0..from {
        let range = range_for_operator(MAX_P, from, i).map_err(|e| CaseError::msg(e.to_string()))?;
        let h = snapshot(cx.plugin, &data::restrict(&whole, range))?;
        bytes += h.state_size();
        handles.push(h);
    }
    let mut combined = data::empty();
    for j in 0..to {
        let range = range_for_operator(MAX_P, to, j).map_err(|e| CaseError::msg(e.to_string()))?;
        let parts: Vec<_> = handles.iter().filter_map(|h| h.intersection(&range)).collect();
        let restored =
            restore(cx.plugin, &parts, range).map_err(|e| e.context(&format!("restoring subtask {j} of {to}")))?;
        compare_keyed(
            &data::restrict(&whole, range),
            &restored,
            &format!("subtask {j} of {to} after rescaling from {from}"),
        )
        .map_err(CaseError::msg)?;
        data::merge_into(&mut combined, &restored);
    }
    compare_keyed(&whole, &combined, &format!("snapshot at parallelism {from}, restore at {to}"))
        .map_err(CaseError::msg)?;
    Ok(bytes.into())
}

/// Two snapshots of the same state are identical, unless the plugin says they may not be.
pub fn determinism(cx: &Context) -> CaseOutput {
    let backend = data::every_kind(2_000);
    let a = snapshot(cx.plugin, &backend)?;
    let b = snapshot(cx.plugin, &backend)?;
    let identical = bytes_of(a.stream())? == bytes_of(b.stream())? && a.offsets() == b.offsets();
    match (identical, cx.plugin.info().deterministic) {
        (true, _) => Ok(a.state_size().into()),
        (false, false) => Ok(super::Passed::warn(
            a.state_size(),
            "snapshots of the same state differ (the plugin declares itself non-deterministic)",
        )),
        (false, true) => {
            Err(CaseError::msg("two snapshots of the same state differ, but the plugin declares itself deterministic"))
        }
    }
}

/// `describe()` (name, version, format, format version) is the same on every fresh instance
/// as it was at load: the host records it with each checkpoint and checks it on restore. And
/// a snapshot restores through a fresh instance that never saw it being written.
pub fn format_stable(cx: &Context) -> CaseOutput {
    let backend = data::every_kind(500);
    let handle = snapshot(cx.plugin, &backend)?;
    for _ in 0..3 {
        let now = cx.plugin.describe_fresh().map_err(|e| CaseError::plugin("describe() on a fresh instance", e))?;
        if now != *cx.plugin.info() {
            return Err(CaseError::msg(format!(
                "describe() returns another description on a fresh instance: {now:?}, at load {:?}",
                cx.plugin.info()
            )));
        }
    }
    let restored = restore(cx.plugin, std::slice::from_ref(&handle), backend.key_group_range())
        .map_err(|e| e.context("restoring through a fresh instance"))?;
    compare_keyed(&backend, &restored, "restore through a fresh instance").map_err(CaseError::msg)?;
    Ok(handle.state_size().into())
}
