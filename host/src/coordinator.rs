//! The checkpoint coordinator: collects every subtask's acknowledgement of a checkpoint, then
//! makes the checkpoint durable (metadata written atomically), notifies completion and retires
//! subsumed checkpoints. A checkpoint that a subtask declines, or that is cancelled, is
//! aborted: everything already written for it is discarded, primary and local.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::local_store::TaskLocalStateStore;
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
        self.state
            .lock()
            .expect("coordinator lock")
            .pending
            .insert(id, Pending { source_offset, started: Instant::now(), acks });
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
