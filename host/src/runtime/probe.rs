//! A pre-flight check of what a loaded strategy can do: a tiny keyed and a tiny operator
//! snapshot, each restored and compared. A job runs it before its first event, so a plugin
//! that cannot keep the job's state is refused up front, by name, instead of failing every
//! checkpoint while the job keeps running without any.

use std::sync::Arc;

use super::{Plugin, PluginError};
use crate::backend::{KeyedStateBackend, StateKind};
use crate::handles::{DistributionMode, KeyGroupsStateHandle, OperatorStateHandle};
use crate::key_groups::KeyGroupRange;
use crate::operator_backend::OperatorStateBackend;
use crate::repartition::OperatorStreamAssignment;
use crate::streams::{CheckpointOutputStream, MemoryCheckpointOutputStream};

/// What a strategy showed it can do. `Err` holds why it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Snapshot and restore keyed state.
    pub keyed: Result<(), String>,
    /// Snapshot and restore operator list state.
    pub operator: Result<(), String>,
}

impl Plugin {
    /// Round-trips one keyed entry and one operator element through the strategy.
    pub fn probe_capabilities(&self) -> Capabilities {
        Capabilities { keyed: probe_keyed(self), operator: probe_operator(self) }
    }
}

fn failure(what: &str, e: PluginError) -> String {
    format!("{what}: {e}")
}

fn probe_keyed(plugin: &Plugin) -> Result<(), String> {
    let range = KeyGroupRange::new(0, 3);
    let mut state = KeyedStateBackend::new(4, range).map_err(|e| e.to_string())?;
    let s = state.register_state("probe", StateKind::Value).map_err(|e| e.to_string())?;
    state.put(s, b"key", b"", b"value").map_err(|e| e.to_string())?;
    let out: Box<dyn CheckpointOutputStream> = Box::new(MemoryCheckpointOutputStream::new());
    let (stream, offsets) = plugin.snapshot_keyed(state.snapshot(), out).map_err(|e| failure("keyed snapshot", e))?;
    let handle = stream.close_and_get_handle().map_err(|e| format!("keyed snapshot: {e}"))?;
    let handle = KeyGroupsStateHandle::new(Arc::new(offsets), handle);
    let empty = KeyedStateBackend::new(4, range).map_err(|e| e.to_string())?;
    let restored = plugin.restore_keyed(&handle, empty).map_err(|e| failure("keyed restore", e))?;
    crate::harness::diagnose::compare_keyed(&state, &restored, "a keyed snapshot of one entry restored wrong")
}

fn probe_operator(plugin: &Plugin) -> Result<(), String> {
    let mut state = OperatorStateBackend::new();
    state.register("probe", DistributionMode::SplitDistribute).map_err(|e| e.to_string())?;
    state.add("probe", b"element".to_vec()).map_err(|e| e.to_string())?;
    let out: Box<dyn CheckpointOutputStream> = Box::new(MemoryCheckpointOutputStream::new());
    let (stream, partitions, checksums) =
        plugin.snapshot_operator(state.snapshot(), out).map_err(|e| failure("operator snapshot", e))?;
    let stream = stream.close_and_get_handle().map_err(|e| format!("operator snapshot: {e}"))?;
    let handle = OperatorStateHandle::new(partitions, stream).with_checksums(checksums);
    let restored = plugin
        .restore_operator(&OperatorStreamAssignment::whole(&handle), OperatorStateBackend::new())
        .map_err(|e| failure("operator restore", e))?;
    crate::harness::diagnose::compare_operator(&state, &restored, "an operator snapshot of one element restored wrong")
}
