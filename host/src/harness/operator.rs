//! Operator-state cases: round trips of every distribution mode, empty lists, small and large
//! elements, each partition restored alone, and redistribution on rescale compared element by
//! element with what the host's own redistribution assigns.

use super::data;
use super::diagnose::{compare_operator, show};
use super::{CaseError, CaseOutput, Context};
use crate::handles::{DistributionMode, OperatorStateHandle};
use crate::operator_backend::OperatorStateBackend;
use crate::repartition::{repartition, OperatorStreamAssignment};
use crate::runtime::Plugin;
use crate::streams::{CheckpointOutputStream, MemoryCheckpointOutputStream};

/// Snapshots `backend` into memory. The host checks that every element was marked as its own
/// partition; a strategy that marks fewer fails here, with the host's message.
pub fn snapshot(plugin: &Plugin, backend: &OperatorStateBackend) -> Result<OperatorStateHandle, CaseError> {
    let out: Box<dyn CheckpointOutputStream> = Box::new(MemoryCheckpointOutputStream::new());
    let (stream, partitions, checksums) = plugin
        .snapshot_operator(backend.snapshot(), out)
        .map_err(|e| CaseError::plugin("operator snapshot failed", e))?;
    let stream = stream.close_and_get_handle().map_err(|e| CaseError::msg(format!("closing the snapshot: {e}")))?;
    Ok(OperatorStateHandle::new(partitions, stream).with_checksums(checksums))
}

fn restore(
    plugin: &Plugin,
    assignments: &[OperatorStreamAssignment],
    what: &str,
) -> Result<OperatorStateBackend, CaseError> {
    let mut backend = OperatorStateBackend::new();
    for a in assignments {
        backend = plugin.restore_operator(a, backend).map_err(|e| CaseError::plugin(&format!("{what} failed"), e))?;
    }
    Ok(backend)
}

/// Snapshot, restore everything, compare.
pub fn round_trip(cx: &Context, backend: OperatorStateBackend) -> CaseOutput {
    let handle = snapshot(cx.plugin, &backend)?;
    let restored = restore(cx.plugin, &[OperatorStreamAssignment::whole(&handle)], "operator restore")?;
    compare_operator(&backend, &restored, "operator round trip").map_err(CaseError::msg)?;
    Ok(handle.state_size().into())
}

/// Every partition restored on its own, from its offset alone, gives back exactly its element:
/// the host redistributes partitions one by one, so none may depend on another.
pub fn each_partition_alone(cx: &Context) -> CaseOutput {
    let backend = data::operator_modes(1);
    let handle = snapshot(cx.plugin, &backend)?;
    for (name, info) in handle.partitions() {
        let elements = backend.get(name).map_err(|e| CaseError::msg(e.to_string()))?;
        for (index, &offset) in info.offsets.iter().enumerate() {
            let assignment = OperatorStreamAssignment {
                stream: handle.stream().clone(),
                checksums: handle.checksums().clone(),
                states: vec![(name.clone(), info.mode, vec![offset])],
            };
            let what = format!("restoring element {index} of {name:?} alone from offset {offset}");
            let restored = restore(cx.plugin, &[assignment], &what)?;
            let got = restored.get(name).map_err(|e| CaseError::msg(e.to_string()))?;
            if got != [elements[index].clone()] {
                return Err(CaseError::msg(format!(
                    "{what}: expected exactly the element {}, found {} element(s){}",
                    show(&elements[index]),
                    got.len(),
                    got.first().map(|e| format!(", the first {}", show(e))).unwrap_or_default()
                )));
            }
        }
    }
    Ok(handle.state_size().into())
}

/// Scaling in (3→2) and out (2→5): a new subtask gets part of an old subtask's SPLIT_DISTRIBUTE
/// list followed by other states of the same stream, and BROADCAST copies beyond the old
/// parallelism.
const RESCALINGS: [(u32, u32); 2] = [(3, 2), (2, 5)];

/// Every rescaling of [`RESCALINGS`], the first failure reported.
pub fn rescaling(cx: &Context) -> CaseOutput {
    super::every_rescaling(cx, &RESCALINGS, rescale)
}

/// Snapshot `from` subtasks, restore at `to` through the host's redistribution, and compare
/// every new subtask's lists with the elements the host assigned it, by (old subtask, offset).
fn rescale(cx: &Context, from: u32, to: u32) -> CaseOutput {
    let old: Vec<OperatorStateBackend> = (0..from).map(data::operator_modes).collect();
    let mut handles = Vec::new();
    let mut bytes = 0;
    for b in &old {
        let h = snapshot(cx.plugin, b)?;
        bytes += h.state_size();
        handles.push(Some(h));
    }
    for (subtask, assignments) in repartition(&handles, to).into_iter().enumerate() {
        let mut expected = OperatorStateBackend::new();
        for a in &assignments {
            let old_index = handles
                .iter()
                .position(|h| h.as_ref().is_some_and(|h| h.stream() == &a.stream))
                .ok_or_else(|| CaseError::msg("the host assigned a stream that no subtask wrote"))?;
            let handle = handles[old_index].as_ref().expect("found above");
            for (name, mode, offsets) in &a.states {
                expected.register(name, *mode).map_err(|e| CaseError::msg(e.to_string()))?;
                let all = &handle.partitions()[name].offsets;
                for offset in offsets {
                    let index = all.iter().position(|o| o == offset).expect("the host assigns recorded offsets");
                    let element = old[old_index].get(name).map_err(|e| CaseError::msg(e.to_string()))?[index].clone();
                    expected.add(name, element).map_err(|e| CaseError::msg(e.to_string()))?;
                }
            }
        }
        let what = format!("subtask {subtask} of {to} after rescaling from {from}");
        let restored = restore(cx.plugin, &assignments, &format!("restoring {what}"))?;
        compare_operator(&expected, &restored, &what).map_err(CaseError::msg)?;
        check_modes(&restored, from, subtask as u32, &what)?;
    }
    Ok(bytes.into())
}

/// The distribution rules, checked on the result as a second opinion: UNION gives every
/// subtask every old element, BROADCAST one full copy.
fn check_modes(restored: &OperatorStateBackend, from: u32, _subtask: u32, what: &str) -> Result<(), CaseError> {
    for (name, mode) in restored.states() {
        let n = restored.get(&name).map(<[_]>::len).unwrap_or(0);
        let expected = match (mode, name.as_str()) {
            (DistributionMode::Union, "tags") => Some(2 * from as usize),
            (DistributionMode::Broadcast, "config") => Some(2),
            _ => None,
        };
        if let Some(expected) = expected.filter(|e| *e != n) {
            return Err(CaseError::msg(format!(
                "{what}: {mode:?} state {name:?} has {n} elements, expected {expected}"
            )));
        }
    }
    Ok(())
}
