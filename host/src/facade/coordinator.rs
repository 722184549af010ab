//! The coordinator side of the facade: start checkpoints, collect acknowledgements, end them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::subtask::Acknowledgement;
use super::SnapshotHost;
use crate::coordinator::{AbortReason, CheckpointCoordinator, CheckpointStats, CompletedCheckpoint, CoordinatorConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::local_store::TaskLocalStateStore;
use crate::runtime::CancelToken;

/// Starts a job's checkpoints and completes them once every subtask acknowledged.
///
/// Made by [`SnapshotHost::recover`] (a coordinator needs to know which checkpoints already
/// count towards retention, which only a restore decides). Cheap to clone and `Send + Sync`:
/// acknowledgements may arrive from any thread.
///
/// Checkpoints may complete out of order: every decision is made by id. A checkpoint that
/// completes after a newer one is discarded; retention keeps the newest ones
/// (`execution.checkpointing.num-retained`); an abort discards everything written for the
/// checkpoint, primary and local, and never touches a completed one.
///
/// ```
/// # fn main() -> snapshot_host::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// use snapshot_host::SnapshotHost;
///
/// let host = SnapshotHost::builder("events")
///     .plugin_file(snapshot_host::doc_plugin_path())
///     .checkpoint_storage(dir.path())
///     .build()?;
/// let job = host.recover()?;
/// let first = job.coordinator.trigger(100).expect("nothing in flight");
/// // One checkpoint at a time by default (execution.checkpointing.max-concurrent-checkpoints).
/// assert!(job.coordinator.trigger(200).is_none());
///
/// let task = &job.subtasks[0];
/// let ack = task.subtask.snapshot(&first, &task.keyed, &task.operators).run()?;
/// let done = job.coordinator.acknowledge(ack)?.expect("the only subtask");
/// assert_eq!(done.metadata.checkpoint_id, first.checkpoint_id());
/// assert!(job.coordinator.trigger(200).is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Coordinator {
    host: SnapshotHost,
    inner: Arc<CheckpointCoordinator>,
    /// Per checkpoint in flight, the longest synchronous pause a subtask acknowledged.
    sync_pauses: Arc<Mutex<BTreeMap<u64, Duration>>>,
}

/// Checkpoint `id` has started: the token every subtask needs to take part in it, handed out
/// only by [`Coordinator::trigger`]. Clone it to each subtask, as a barrier flows down every
/// channel of a stream. It cannot be made any other way, so no subtask snapshots a
/// checkpoint the coordinator does not know:
///
/// ```compile_fail
/// fn forge(subtask: &snapshot_host::Subtask, keyed: &snapshot_host::KeyedStateBackend, operators: &snapshot_host::OperatorStateBackend) {
///     let barrier = snapshot_host::CheckpointBarrier { id: 7, source_offset: 0 };
///     let _ = subtask.snapshot(&barrier, keyed, operators);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct CheckpointBarrier {
    pub(super) id: u64,
    pub(super) source_offset: u64,
    pub(super) completed_before: Option<u64>,
    pub(super) cancel: CancelToken,
    pub(super) host: SnapshotHost,
}

impl CheckpointBarrier {
    /// The checkpoint id.
    pub fn checkpoint_id(&self) -> u64 {
        self.id
    }

    /// The source position the checkpoint records (replay starts here after a restore).
    pub fn source_offset(&self) -> u64 {
        self.source_offset
    }

    /// The newest checkpoint that was complete when this one was triggered. With incremental
    /// checkpoints, pass it to [`Subtask::checkpoint_completed`](crate::Subtask::checkpoint_completed)
    /// before the snapshot: the snapshot then writes deltas on top of it, however late the
    /// acknowledging thread's own news of the completion would reach the subtask.
    pub fn completed_before(&self) -> Option<u64> {
        self.completed_before
    }

    /// Whether the checkpoint has been aborted meanwhile (its snapshots stop early).
    pub fn is_aborted(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl Coordinator {
    pub(super) fn new(host: SnapshotHost, stores: Vec<Arc<TaskLocalStateStore>>, retained: Vec<u64>) -> Self {
        let config = host.config();
        let inner = CheckpointCoordinator::new(
            CoordinatorConfig {
                job_id: host.job_id().to_string(),
                parallelism: host.parallelism(),
                max_parallelism: host.max_parallelism(),
                plugin: host.plugin().info().clone(),
                retained: config.retained_checkpoints,
                max_concurrent: config.checkpointing.max_concurrent,
                min_pause: config.checkpointing.min_pause,
            },
            host.checkpoints().clone(),
            stores,
            retained,
        );
        super::metrics::register(host.job_id());
        Coordinator { host, inner: Arc::new(inner), sync_pauses: Arc::default() }
    }

    /// Whether [`trigger`](Self::trigger) would start a checkpoint now: fewer than
    /// `execution.checkpointing.max-concurrent-checkpoints` are in flight and
    /// `execution.checkpointing.min-pause` has passed since the last one ended.
    pub fn can_trigger(&self) -> bool {
        self.inner.can_trigger()
    }

    /// Starts the next checkpoint, recording `source_offset` as where a restore resumes, or
    /// returns `None` when concurrency or the minimum pause holds it back (try again later).
    pub fn trigger(&self, source_offset: u64) -> Option<CheckpointBarrier> {
        if !self.inner.can_trigger() {
            return None;
        }
        let id = self.host.next_checkpoint_id();
        let completed_before = self.inner.completed_ids().last().copied();
        self.inner.trigger(id, source_offset);
        super::metrics::triggered(self.host.job_id(), self.inner.pending_ids().len());
        tracing::info!(checkpoint = id, source_offset, "checkpoint {id} triggered");
        let cancel = self.inner.cancel_token(id);
        Some(CheckpointBarrier { id, source_offset, completed_before, cancel, host: self.host.clone() })
    }

    /// Takes one subtask's acknowledgement. Returns the completed checkpoint when this was the
    /// last one and the checkpoint became durable (metadata written, local copies confirmed,
    /// subsumed checkpoints retired); `None` while others are outstanding, or when the
    /// checkpoint was aborted meanwhile (its state is then discarded).
    pub fn acknowledge(&self, ack: Acknowledgement) -> Result<Option<CompletedCheckpoint>> {
        if !ack.host.same_as(&self.host) {
            ack.state.discard();
            return Err(Error::msg(
                ErrorKind::Usage,
                format!(
                    "acknowledgement of checkpoint {} belongs to another job's host; its state was discarded",
                    ack.id
                ),
            ));
        }
        let id = ack.id;
        {
            let mut pauses = self.sync_pauses.lock().unwrap_or_else(|e| e.into_inner());
            let longest = pauses.entry(id).or_default();
            *longest = (*longest).max(ack.sync_pause);
        }
        let completed = self
            .inner
            .acknowledge(id, ack.subtask, ack.state)
            .map_err(|e| Error::from(e).context(format!("completing checkpoint {id}")))?;
        if let Some(done) = &completed {
            let sync_pause = {
                let mut pauses = self.sync_pauses.lock().unwrap_or_else(|e| e.into_inner());
                let longest = pauses.get(&id).copied().unwrap_or_default();
                // Older ones can no longer complete: forget them too.
                pauses.retain(|k, _| *k > id);
                longest
            };
            let bytes = done.metadata.state_size();
            super::metrics::completed(
                self.host.job_id(),
                id,
                bytes,
                done.duration,
                sync_pause,
                self.inner.pending_ids().len(),
            );
            tracing::info!(
                checkpoint = id,
                bytes,
                duration_ms = done.duration.as_millis() as u64,
                sync_pause_us = sync_pause.as_micros() as u64,
                "checkpoint {id} completed: {bytes} bytes in {:.1?}, longest synchronous pause {sync_pause:.1?}",
                done.duration,
            );
            for old in &done.retired {
                tracing::info!(
                    checkpoint = old,
                    by = id,
                    "checkpoint {old} subsumed by {id} and discarded (beyond execution.checkpointing.num-retained)"
                );
            }
        }
        Ok(completed)
    }

    /// A subtask could not write its part of checkpoint `id`: aborts the checkpoint as failed
    /// (it counts towards `execution.checkpointing.tolerable-failed-checkpoints`). Returns
    /// whether this call aborted it (`false` when it had already ended, for instance because
    /// another subtask's failure aborted it first and interrupted this one).
    pub fn decline(&self, id: u64, error: &Error) -> bool {
        self.abort(id, AbortReason::Failed(error.display_chain()))
    }

    /// Aborts checkpoint `id` for `reason`, discarding what was written for it; a completed
    /// checkpoint is never affected. Returns whether this call aborted a pending checkpoint.
    pub fn abort(&self, id: u64, reason: AbortReason) -> bool {
        // A checkpoint that ended without completing never logs its pauses.
        self.sync_pauses.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let aborted = self.inner.abort(id, reason);
        if aborted {
            super::metrics::failed(self.host.job_id(), self.inner.pending_ids().len());
        }
        aborted
    }

    /// Aborts every pending checkpoint (the job is failing or stopping); returns their ids.
    pub fn abort_pending(&self, reason: AbortReason) -> Vec<u64> {
        self.inner.pending_ids().into_iter().filter(|id| self.abort(*id, reason.clone())).collect()
    }

    /// Checkpoints started but neither completed nor aborted.
    pub fn pending(&self) -> Vec<u64> {
        self.inner.pending_ids()
    }

    /// The retained completed checkpoints, oldest first.
    pub fn completed(&self) -> Vec<u64> {
        self.inner.completed_ids()
    }

    /// Counts of triggered, completed and failed checkpoints.
    pub fn stats(&self) -> CheckpointStats {
        self.inner.stats()
    }
}
