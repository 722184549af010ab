//! The checkpoint coordinator: collects every subtask's acknowledgement of a checkpoint, then
//! makes the checkpoint durable (metadata written atomically), notifies completion and retires
//! subsumed checkpoints. A checkpoint that a subtask declines, or that is cancelled, is
//! aborted: everything already written for it is discarded, primary and local.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::local_store::TaskLocalStateStore;
use crate::runtime::CancelToken;
use crate::runtime::PluginInfo;
use crate::storage::{CheckpointMetadata, FileCheckpointStorage, StorageError, SubtaskState};

/// What the coordinator needs to know about the job.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The job.
    pub job_id: String,
    /// Number of subtasks.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// The plugin that writes the state.
    pub plugin: PluginInfo,
    /// Completed checkpoints to keep.
    pub retained: usize,
}

/// A completed checkpoint, as reported to the job.
#[derive(Debug, Clone)]
pub struct CompletedCheckpoint {
    /// Its metadata.
    pub metadata: CheckpointMetadata,
    /// From trigger to durable metadata.
    pub duration: Duration,
}

#[derive(Debug)]
struct Pending {
    source_offset: u64,
    started: Instant,
    acks: Vec<Option<SubtaskState>>,
}

#[derive(Debug, Default)]
struct State {
    pending: BTreeMap<u64, Pending>,
    completed: VecDeque<u64>,
    aborted: Vec<u64>,
    cancel_tokens: BTreeMap<u64, CancelToken>,
}

/// Coordinates the checkpoints of one job. Thread-safe; acknowledgements arrive from the
/// subtasks' asynchronous snapshot threads.
#[derive(Debug)]
pub struct CheckpointCoordinator {
    config: CoordinatorConfig,
    storage: FileCheckpointStorage,
    local_stores: Vec<Arc<TaskLocalStateStore>>,
    state: Mutex<State>,
}

impl CheckpointCoordinator {
    /// A coordinator writing to `storage` and notifying `local_stores` (one per subtask; may
    /// be empty). Checkpoints already complete in storage count towards retention.
    pub fn new(
        config: CoordinatorConfig,
        storage: FileCheckpointStorage,
        local_stores: Vec<Arc<TaskLocalStateStore>>,
    ) -> Result<Self, StorageError> {
        let completed = storage.completed_checkpoint_ids()?.into_iter().collect();
        Ok(CheckpointCoordinator {
            config,
            storage,
            local_stores,
            state: Mutex::new(State { completed, ..State::default() }),
        })
    }

    /// The storage.
    pub fn storage(&self) -> &FileCheckpointStorage {
        &self.storage
    }

    /// Registers checkpoint `id`, taken at `source_offset`.
    pub fn trigger(&self, id: u64, source_offset: u64) {
        let acks = vec![None; self.config.parallelism as usize];
        let mut s = self.state.lock().expect("coordinator lock");
        s.pending.insert(id, Pending { source_offset, started: Instant::now(), acks });
        s.cancel_tokens.insert(id, CancelToken::new());
    }

    /// The token that interrupts the asynchronous work of checkpoint `id` when it is aborted
    /// (an already cancelled token if the checkpoint is no longer pending).
    pub fn cancel_token(&self, id: u64) -> CancelToken {
        let s = self.state.lock().expect("coordinator lock");
        s.cancel_tokens.get(&id).cloned().unwrap_or_else(|| {
            let token = CancelToken::new();
            token.cancel();
            token
        })
    }

    /// Subtask `subtask` finished its part of checkpoint `id`. Returns the completed
    /// checkpoint when this was the last acknowledgement. State acknowledged for a checkpoint
    /// that was aborted meanwhile is discarded.
    pub fn acknowledge(
        &self,
        id: u64,
        subtask: u32,
        state: SubtaskState,
    ) -> Result<Option<CompletedCheckpoint>, StorageError> {
        let ready = {
            let mut s = self.state.lock().expect("coordinator lock");
            let Some(pending) = s.pending.get_mut(&id) else {
                drop(s);
                tracing::debug!(
                    checkpoint = id,
                    subtask,
                    "late acknowledgement for an aborted checkpoint; discarding its state"
                );
                state.discard();
                self.abort_local(id);
                return Ok(None);
            };
            pending.acks[subtask as usize] = Some(state);
            if pending.acks.iter().all(Option::is_some) {
                s.cancel_tokens.remove(&id);
                s.pending.remove(&id)
            } else {
                None
            }
        };
        let Some(pending) = ready else {
            return Ok(None);
        };
        let metadata = CheckpointMetadata {
            checkpoint_id: id,
            job_id: self.config.job_id.clone(),
            plugin: self.config.plugin.clone(),
            parallelism: self.config.parallelism,
            max_parallelism: self.config.max_parallelism,
            source_offset: pending.source_offset,
            subtasks: pending.acks.into_iter().map(|a| a.expect("all acknowledged")).collect(),
        };
        if let Err(e) = self.storage.write_metadata(&metadata) {
            // Not durable, so not complete: discard it like any aborted checkpoint.
            metadata.subtasks.iter().for_each(SubtaskState::discard);
            let _ = self.storage.discard_checkpoint(id);
            self.abort_local(id);
            return Err(e);
        }
        let duration = pending.started.elapsed();
        for store in &self.local_stores {
            store.confirm(id);
        }
        self.retire_subsumed(id);
        Ok(Some(CompletedCheckpoint { metadata, duration }))
    }

    fn retire_subsumed(&self, id: u64) {
        let subsumed: Vec<u64> = {
            let mut s = self.state.lock().expect("coordinator lock");
            s.completed.push_back(id);
            let mut out = Vec::new();
            while s.completed.len() > self.config.retained {
                out.extend(s.completed.pop_front());
            }
            // Pending checkpoints older than a completed one can never complete usefully.
            let stale: Vec<u64> = s.pending.range(..id).map(|(k, _)| *k).collect();
            for k in stale {
                if let Some(p) = s.pending.remove(&k) {
                    if let Some(token) = s.cancel_tokens.remove(&k) {
                        token.cancel();
                    }
                    p.acks.iter().flatten().for_each(SubtaskState::discard);
                    s.aborted.push(k);
                    out.push(k);
                }
            }
            out
        };
        for old in subsumed {
            if let Err(e) = self.storage.discard_checkpoint(old) {
                tracing::warn!(checkpoint = old, error = %e, "could not discard a subsumed checkpoint");
            }
        }
    }

    fn abort_local(&self, id: u64) {
        for store in &self.local_stores {
            store.abort(id);
        }
    }

    /// Aborts checkpoint `id` (a subtask declined it, the job failed, or it was cancelled):
    /// discards every part written so far, primary and local.
    pub fn abort(&self, id: u64, reason: &str) {
        let pending = {
            let mut s = self.state.lock().expect("coordinator lock");
            s.aborted.push(id);
            if let Some(token) = s.cancel_tokens.remove(&id) {
                // Interrupts plugin invocations still writing this checkpoint.
                token.cancel();
            }
            s.pending.remove(&id)
        };
        if let Some(p) = pending {
            tracing::warn!(checkpoint = id, reason, "checkpoint aborted");
            p.acks.iter().flatten().for_each(SubtaskState::discard);
        }
        if let Err(e) = self.storage.discard_checkpoint(id) {
            tracing::warn!(checkpoint = id, error = %e, "could not delete the aborted checkpoint's directory");
        }
        self.abort_local(id);
    }

    /// Cancels checkpoint `id`; the same as an abort.
    pub fn cancel(&self, id: u64) {
        self.abort(id, "cancelled");
    }

    /// Aborts every pending checkpoint (the job is failing or stopping).
    pub fn abort_all(&self, reason: &str) {
        let ids: Vec<u64> = self.state.lock().expect("coordinator lock").pending.keys().copied().collect();
        for id in ids {
            self.abort(id, reason);
        }
    }

    /// Ids of checkpoints triggered but neither complete nor aborted.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.state.lock().expect("coordinator lock").pending.keys().copied().collect()
    }

    /// Ids of aborted checkpoints.
    pub fn aborted_ids(&self) -> Vec<u64> {
        self.state.lock().expect("coordinator lock").aborted.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directories::LocalRecoveryDirectoryProvider;
    use crate::handles::{KeyGroupRangeOffsets, KeyGroupsStateHandle, StreamStateHandle};
    use crate::key_groups::KeyGroupRange;
    use crate::local_store::LocalSnapshot;
    use std::path::Path;

    fn plugin_info() -> PluginInfo {
        PluginInfo {
            name: "p".into(),
            version: "1".into(),
            format: "f".into(),
            format_version: 1,
            deterministic: true,
            content_hash: "0".into(),
        }
    }

    fn state_file(storage: &FileCheckpointStorage, id: u64, subtask: u32) -> SubtaskState {
        let dir = storage.checkpoint_dir(id);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("state-{subtask}"));
        std::fs::write(&path, b"xyz").unwrap();
        let offsets = Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 0), vec![0]).unwrap());
        let stream = StreamStateHandle::File { path, size: 3, crc32c: None };
        SubtaskState { keyed: Some(KeyGroupsStateHandle::new(offsets, stream)), operator: None }
    }

    fn setup(root: &Path, retained: usize) -> (CheckpointCoordinator, Arc<TaskLocalStateStore>) {
        let storage = FileCheckpointStorage::new(&root.join("ckpt"), "job", 0).unwrap();
        let provider = LocalRecoveryDirectoryProvider::new(&[root.join("local")], "a", "job", "v", 0).unwrap();
        let store = Arc::new(TaskLocalStateStore::open(provider, true));
        let config = CoordinatorConfig {
            job_id: "job".into(),
            parallelism: 2,
            max_parallelism: 128,
            plugin: plugin_info(),
            retained,
        };
        (CheckpointCoordinator::new(config, storage, vec![store.clone()]).unwrap(), store)
    }

    #[test]
    fn completes_after_every_acknowledgement_and_retires_subsumed_checkpoints() {
        let root = tempfile::tempdir().unwrap();
        let (c, store) = setup(root.path(), 1);
        for id in 1..=2 {
            c.trigger(id, id * 100);
            store.store(id, LocalSnapshot::default()).unwrap();
            assert!(c.acknowledge(id, 0, state_file(c.storage(), id, 0)).unwrap().is_none(), "one of two acks");
            let done = c.acknowledge(id, 1, state_file(c.storage(), id, 1)).unwrap().expect("complete");
            assert_eq!(done.metadata.source_offset, id * 100);
            assert_eq!(c.storage().read_metadata(id).unwrap(), done.metadata);
        }
        // Retaining one: checkpoint 1 and its files are gone; the local store kept only 2.
        assert_eq!(c.storage().completed_checkpoint_ids().unwrap(), vec![2]);
        assert!(!c.storage().checkpoint_dir(1).exists());
        assert_eq!(store.stored_ids(), vec![2]);
    }

    #[test]
    fn cancelled_checkpoint_discards_acknowledged_and_late_state() {
        let root = tempfile::tempdir().unwrap();
        let (c, store) = setup(root.path(), 1);
        c.trigger(5, 0);
        let early = state_file(c.storage(), 5, 0);
        c.acknowledge(5, 0, early).unwrap();
        store.store(5, LocalSnapshot::default()).unwrap();
        c.cancel(5);
        assert!(c.pending_ids().is_empty());
        assert_eq!(c.aborted_ids(), vec![5]);
        assert!(!c.storage().checkpoint_dir(5).exists(), "primary files of the cancelled checkpoint remain");
        assert!(store.retrieve(5).is_none());
        // A subtask that finishes after the cancellation: its state is discarded, nothing completes.
        let late = state_file(c.storage(), 5, 1);
        let late_path = match &late.keyed.as_ref().unwrap().stream() {
            StreamStateHandle::File { path, .. } => path.clone(),
            _ => unreachable!(),
        };
        assert!(c.acknowledge(5, 1, late).unwrap().is_none());
        assert!(!late_path.exists());
        assert!(c.storage().completed_checkpoint_ids().unwrap().is_empty());
    }

    #[test]
    fn completing_a_newer_checkpoint_aborts_older_pending_ones() {
        let root = tempfile::tempdir().unwrap();
        let (c, _) = setup(root.path(), 2);
        c.trigger(1, 0);
        c.acknowledge(1, 0, state_file(c.storage(), 1, 0)).unwrap();
        c.trigger(2, 10);
        c.acknowledge(2, 0, state_file(c.storage(), 2, 0)).unwrap();
        c.acknowledge(2, 1, state_file(c.storage(), 2, 1)).unwrap().expect("complete");
        assert!(c.pending_ids().is_empty());
        assert!(!c.storage().checkpoint_dir(1).exists());
    }
}
