//! The checkpoint coordinator: collects every subtask's acknowledgement of a checkpoint, then
//! makes the checkpoint durable (metadata written atomically), notifies completion and retires
//! subsumed checkpoints. A checkpoint that a subtask declines, or that is cancelled, is
//! aborted: everything already written for it is discarded, primary and local.
//!
//! Checkpoints may complete out of order (their asynchronous phases run concurrently), so
//! every decision is made by id, never by arrival order:
//! - completions are committed one at a time; a checkpoint whose last acknowledgement arrives
//!   after a newer checkpoint completed is subsumed and discarded, never retained over it;
//! - retention keeps the `retained` highest completed ids; the newest is never discarded;
//! - an abort, a cancellation or a late (or duplicate) acknowledgement of a completed
//!   checkpoint changes nothing of it;
//! - objects of the primary's shared area are deleted only through the shared-state registry
//!   ([`SharedStateRegistry`]): when the last checkpoint holding one is gone (a pending
//!   checkpoint holds what it acknowledged and everything retained when it was triggered).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::local_store::TaskLocalStateStore;
use crate::runtime::CancelToken;
use crate::runtime::PluginInfo;
use crate::storage::{CheckpointMetadata, CheckpointStorage, SharedStateRegistry, StorageError, SubtaskState};

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
    /// Checkpoints that may be in flight at once (`execution.checkpointing.max-concurrent-checkpoints`).
    pub max_concurrent: usize,
    /// Least time between the end of one checkpoint and the start of the next
    /// (`execution.checkpointing.min-pause`).
    pub min_pause: Duration,
}

/// A completed checkpoint, as reported to the job.
#[derive(Debug, Clone)]
pub struct CompletedCheckpoint {
    /// Its metadata.
    pub metadata: CheckpointMetadata,
    /// From trigger to durable metadata.
    pub duration: Duration,
    /// Completed checkpoints retired because this one completed (beyond
    /// `execution.checkpointing.num-retained`), oldest first: their files are deleted.
    pub retired: Vec<u64>,
    /// Older checkpoints still in flight that this one subsumed: aborted and discarded.
    pub subsumed: Vec<u64>,
}

/// Why a checkpoint was aborted. Only [`AbortReason::Failed`] counts as a failed checkpoint
/// (towards `execution.checkpointing.tolerable-failed-checkpoints`); the others are the job's
/// own doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    /// The snapshot failed (plugin error, storage error, a limit).
    Failed(String),
    /// A task failed; the job recovers.
    TaskFailure,
    /// The job ended before the checkpoint completed.
    JobFinished,
    /// Cancelled by the caller.
    Cancelled,
    /// A newer checkpoint completed first.
    Subsumed,
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::Failed(reason) => write!(f, "failed: {reason}"),
            AbortReason::TaskFailure => f.write_str("task failure"),
            AbortReason::JobFinished => f.write_str("job finished before the checkpoint completed"),
            AbortReason::Cancelled => f.write_str("cancelled"),
            AbortReason::Subsumed => f.write_str("subsumed by a newer completed checkpoint"),
        }
    }
}

/// Counts of what happened to the checkpoints of this coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints triggered.
    pub triggered: u64,
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints that failed.
    pub failed: u64,
    /// Failed checkpoints since the last completed one.
    pub consecutive_failed: u64,
    /// The reason of the last failure.
    pub last_failure: Option<String>,
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
    /// Fully acknowledged checkpoints being committed (metadata written, older ones retired):
    /// still in flight. A checkpoint triggered meanwhile could not build on them (their
    /// deltas' base is not complete yet), so with incremental checkpoints it was written in
    /// full, and one more checkpoint than `max_concurrent` was running.
    committing: BTreeSet<u64>,
    /// Retained completed checkpoints.
    completed: BTreeSet<u64>,
    /// Metadata of checkpoints completed by this coordinator (to recognise duplicate acks).
    completed_metadata: BTreeMap<u64, CheckpointMetadata>,
    aborted: Vec<u64>,
    cancel_tokens: BTreeMap<u64, CancelToken>,
    last_finished: Option<Instant>,
    stats: CheckpointStats,
    /// Who refers to which object of the primary's shared area.
    shared: SharedStateRegistry,
}

impl State {
    fn newest_completed(&self) -> Option<u64> {
        self.completed.last().copied()
    }

    /// Checkpoint `id` ended without completing; `failure` says why if it counts as failed.
    fn ended_without_completing(&mut self, id: u64, failure: Option<String>) {
        self.aborted.push(id);
        self.last_finished = Some(Instant::now());
        if let Some(why) = failure {
            self.stats.failed += 1;
            self.stats.consecutive_failed += 1;
            self.stats.last_failure = Some(format!("checkpoint {id}: {why}"));
        }
    }
}

/// Coordinates the checkpoints of one job. Thread-safe; acknowledgements arrive from the
/// subtasks' asynchronous snapshot threads.
#[derive(Debug)]
pub struct CheckpointCoordinator {
    config: CoordinatorConfig,
    storage: CheckpointStorage,
    local_stores: Vec<Arc<TaskLocalStateStore>>,
    state: Mutex<State>,
    // Whether the shared-state registry knows every checkpoint in storage. When some metadata
    // could not be read at start, what those checkpoints refer to is unknown, so this run
    // deletes no shared object (the next start-up sweep removes what it leaves).
    shared_complete: bool,
    // Held while a checkpoint is committed (metadata written, older ones retired) or aborted,
    // so that two completions, or a completion and an abort, never interleave. Taken before
    // `state` when both are needed.
    commit: Mutex<()>,
}

impl CheckpointCoordinator {
    /// A coordinator writing to `storage` and notifying `local_stores` (one per subtask; may
    /// be empty). `completed` are the checkpoints already complete in storage that count
    /// towards retention (usually the restored one and those older than it).
    pub fn new(
        config: CoordinatorConfig,
        storage: CheckpointStorage,
        local_stores: Vec<Arc<TaskLocalStateStore>>,
        completed: impl IntoIterator<Item = u64>,
    ) -> Self {
        let (shared, shared_complete) = match storage.shared_state_registry() {
            Ok((registry, unreadable)) => {
                for (id, e) in &unreadable {
                    tracing::warn!(
                        checkpoint = id,
                        error = %e,
                        "metadata unreadable: no shared state will be deleted while this job runs"
                    );
                }
                (registry, unreadable.is_empty())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list checkpoints: no shared state will be deleted while this job runs");
                (SharedStateRegistry::new(), false)
            }
        };
        let state = State { completed: completed.into_iter().collect(), shared, ..State::default() };
        CheckpointCoordinator {
            config,
            storage,
            local_stores,
            state: Mutex::new(state),
            shared_complete,
            commit: Mutex::new(()),
        }
    }

    /// Deletes shared objects nobody holds any longer (the registry said so, and the metadata
    /// of the checkpoints that held them is gone). A failure leaves them for the start-up sweep.
    fn delete_orphans(&self, orphans: &[String]) {
        if orphans.is_empty() {
            return;
        }
        if !self.shared_complete {
            tracing::debug!(objects = orphans.len(), "keeping unreferenced shared objects (registry incomplete)");
            return;
        }
        if let Err(e) = self.storage.delete_shared(orphans) {
            tracing::warn!(error = %e, "could not delete unreferenced shared state; it is swept at the next start");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_commit(&self) -> std::sync::MutexGuard<'_, ()> {
        self.commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The storage.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// Whether a new checkpoint may start now: fewer than the maximum are in flight and the
    /// minimum pause since the last one ended has passed.
    pub fn can_trigger(&self) -> bool {
        let s = self.lock();
        let paused = s.last_finished.is_none_or(|t| t.elapsed() >= self.config.min_pause);
        s.pending.len() + s.committing.len() < self.config.max_concurrent.max(1) && paused
    }

    /// Registers checkpoint `id`, taken at `source_offset`.
    pub fn trigger(&self, id: u64, source_offset: u64) {
        let acks = vec![None; self.config.parallelism as usize];
        let mut s = self.lock();
        // Whatever a subtask bases this checkpoint on is held until it completes or aborts.
        let completed: Vec<u64> = s.completed.iter().copied().collect();
        s.shared.pin(id, completed);
        s.pending.insert(id, Pending { source_offset, started: Instant::now(), acks });
        s.cancel_tokens.insert(id, CancelToken::new());
        s.stats.triggered += 1;
    }

    /// The token that interrupts the asynchronous work of checkpoint `id` when it is aborted
    /// (an already cancelled token if the checkpoint is no longer pending).
    pub fn cancel_token(&self, id: u64) -> CancelToken {
        let s = self.lock();
        s.cancel_tokens.get(&id).cloned().unwrap_or_else(|| {
            let token = CancelToken::new();
            token.cancel();
            token
        })
    }

    /// Subtask `subtask` finished its part of checkpoint `id`. Returns the completed
    /// checkpoint when this was the last acknowledgement and the checkpoint became durable.
    /// State acknowledged for a checkpoint that was aborted meanwhile is discarded; a late or
    /// duplicate acknowledgement of a completed checkpoint discards only files that
    /// checkpoint does not reference.
    pub fn acknowledge(
        &self,
        id: u64,
        subtask: u32,
        state: SubtaskState,
    ) -> Result<Option<CompletedCheckpoint>, StorageError> {
        // Held from the moment the last acknowledgement is taken until the checkpoint is
        // committed, so that no abort can discard it in between.
        let _commit = self.lock_commit();
        let ready = {
            let mut s = self.lock();
            if s.pending.contains_key(&id) {
                // Held from the acknowledgement on: no retirement can delete what it refers to.
                let objects: Vec<String> = state.shared_objects().collect();
                s.shared.register(id, objects);
            }
            if let Some(pending) = s.pending.get_mut(&id) {
                if let Some(slot) = pending.acks.get_mut(subtask as usize) {
                    if let Some(previous) = slot.replace(state) {
                        // A duplicate from the same subtask: keep the newest, drop the other's files.
                        let current = slot.as_ref().expect("just set");
                        previous.discard_except(current);
                    }
                }
                if pending.acks.iter().all(Option::is_some) {
                    s.cancel_tokens.remove(&id);
                    s.committing.insert(id);
                    s.pending.remove(&id)
                } else {
                    None
                }
            } else {
                drop(s);
                self.late_acknowledgement(id, subtask, state);
                return Ok(None);
            }
        };
        let Some(pending) = ready else {
            return Ok(None);
        };
        let committed = self.commit(id, pending);
        self.lock().committing.remove(&id);
        committed
    }

    /// Called with the commit lock held.
    fn late_acknowledgement(&self, id: u64, subtask: u32, state: SubtaskState) {
        let completed = {
            let s = self.lock();
            s.completed.contains(&id).then(|| s.completed_metadata.get(&id).cloned())
        };
        match completed {
            Some(metadata) => {
                // Never touches the completed checkpoint's files or local copies.
                let metadata = metadata.or_else(|| self.storage.read_metadata(id).ok());
                match metadata.as_ref().and_then(|m| m.subtasks.get(subtask as usize)) {
                    Some(referenced) => {
                        state.discard_except(referenced);
                        let brought: Vec<String> = state.shared_objects().collect();
                        let orphans = self.lock().shared.unheld(brought.iter().map(String::as_str));
                        self.delete_orphans(&orphans);
                    }
                    None => tracing::warn!(
                        checkpoint = id,
                        subtask,
                        "late acknowledgement of a completed checkpoint whose metadata cannot be read; keeping its files"
                    ),
                }
                tracing::debug!(checkpoint = id, subtask, "late acknowledgement of a completed checkpoint; ignored");
            }
            None => {
                tracing::debug!(
                    checkpoint = id,
                    subtask,
                    "late acknowledgement for an aborted checkpoint; discarding its state"
                );
                // The abort already deleted the checkpoint's directory; this subtask's write may
                // have created it again.
                self.discard_everything(id, std::slice::from_ref(&state));
            }
        }
    }

    /// Called with the commit lock held.
    fn commit(&self, id: u64, pending: Pending) -> Result<Option<CompletedCheckpoint>, StorageError> {
        let metadata = CheckpointMetadata {
            checkpoint_id: id,
            job_id: self.config.job_id.clone(),
            plugin: self.config.plugin.clone(),
            parallelism: self.config.parallelism,
            max_parallelism: self.config.max_parallelism,
            source_offset: pending.source_offset,
            subtasks: pending.acks.into_iter().map(|a| a.expect("all acknowledged")).collect(),
        };
        let newest = self.lock().newest_completed();
        if newest.is_some_and(|newest| newest > id) {
            // Completed after a newer one: subsumed on arrival, never made durable.
            tracing::info!(checkpoint = id, newest = ?newest, "checkpoint completed after a newer one; discarding it");
            self.discard_everything(id, &metadata.subtasks);
            self.lock().ended_without_completing(id, None);
            return Ok(None);
        }
        if let Err(e) = self.storage.write_metadata(&metadata) {
            // Not durable, so not complete: discard it like any aborted checkpoint.
            self.discard_everything(id, &metadata.subtasks);
            self.lock().ended_without_completing(id, Some(format!("writing the metadata: {e}")));
            return Err(e);
        }
        let duration = pending.started.elapsed();
        for store in &self.local_stores {
            store.confirm(id);
        }
        let (retired, subsumed, settled) = {
            let mut s = self.lock();
            // From now on the checkpoint holds exactly what its metadata names; its pins go.
            let settled = s.shared.settle(id, metadata.shared_objects());
            s.completed.insert(id);
            s.completed_metadata.insert(id, metadata.clone());
            s.last_finished = Some(Instant::now());
            s.stats.completed += 1;
            s.stats.consecutive_failed = 0;
            // Keep the `retained` highest ids; `id` is the highest, so it always stays.
            let excess = s.completed.len().saturating_sub(self.config.retained.max(1));
            let retired: Vec<u64> = s.completed.iter().take(excess).copied().collect();
            for old in &retired {
                s.completed.remove(old);
                s.completed_metadata.remove(old);
            }
            // Pending checkpoints older than a completed one can never complete usefully.
            let stale: Vec<u64> = s.pending.range(..id).map(|(k, _)| *k).collect();
            let mut subsumed = Vec::new();
            for k in stale {
                if let Some(p) = s.pending.remove(&k) {
                    if let Some(token) = s.cancel_tokens.remove(&k) {
                        token.cancel();
                    }
                    s.aborted.push(k);
                    subsumed.push((k, p));
                }
            }
            (retired, subsumed, settled)
        };
        self.delete_orphans(&settled);
        for &old in &retired {
            // The metadata goes first; only then may the objects it named.
            match self.storage.discard_checkpoint(old) {
                Ok(()) => {
                    let orphans = self.lock().shared.release(old);
                    self.delete_orphans(&orphans);
                }
                Err(e) => {
                    // Its metadata may still name them: release the holds of this run, delete nothing.
                    let _ = self.lock().shared.release(old);
                    tracing::warn!(checkpoint = old, error = %e, "could not discard a subsumed checkpoint");
                }
            }
        }
        let mut subsumed_ids = Vec::new();
        for (k, p) in subsumed {
            let acked: Vec<SubtaskState> = p.acks.into_iter().flatten().collect();
            self.discard_everything(k, &acked);
            tracing::info!(checkpoint = k, by = id, "checkpoint {k} subsumed by {id} while in flight; aborted");
            subsumed_ids.push(k);
        }
        Ok(Some(CompletedCheckpoint { metadata, duration, retired, subsumed: subsumed_ids }))
    }

    /// Discards the primary files of `id` (acknowledged `states` and the directory) and its
    /// local copies.
    fn discard_everything(&self, id: u64, states: &[SubtaskState]) {
        states.iter().for_each(SubtaskState::discard);
        let discarded = self.storage.discard_checkpoint(id);
        let orphans = {
            let mut s = self.lock();
            let mut orphans = s.shared.release(id);
            let brought: Vec<String> = states.iter().flat_map(SubtaskState::shared_objects).collect();
            orphans.extend(s.shared.unheld(brought.iter().map(String::as_str)));
            orphans.sort();
            orphans.dedup();
            orphans
        };
        match discarded {
            Ok(()) => self.delete_orphans(&orphans),
            Err(e) => tracing::warn!(checkpoint = id, error = %e, "could not delete the checkpoint's directory"),
        }
        self.abort_local(id);
    }

    fn abort_local(&self, id: u64) {
        for store in &self.local_stores {
            store.abort(id);
        }
    }

    /// Aborts checkpoint `id`: discards every part written so far, primary and local. An
    /// abort of a completed checkpoint is ignored: a completed checkpoint is durable and
    /// stays until it is subsumed. Returns whether this call aborted a pending checkpoint (a
    /// subtask whose snapshot was interrupted by an earlier abort gets `false`).
    pub fn abort(&self, id: u64, reason: AbortReason) -> bool {
        let _commit = self.lock_commit();
        let pending = {
            let mut s = self.lock();
            if s.completed.contains(&id) {
                drop(s);
                tracing::debug!(checkpoint = id, %reason, "ignoring an abort of a completed checkpoint");
                return false;
            }
            if let Some(token) = s.cancel_tokens.remove(&id) {
                // Interrupts plugin invocations still writing this checkpoint.
                token.cancel();
            }
            let pending = s.pending.remove(&id);
            if pending.is_some() {
                let failure = match &reason {
                    AbortReason::Failed(why) => Some(why.clone()),
                    _ => None,
                };
                s.ended_without_completing(id, failure);
            }
            pending
        };
        let was_pending = pending.is_some();
        let acked: Vec<SubtaskState> = match pending {
            Some(p) => {
                let level_warn = matches!(reason, AbortReason::Failed(_));
                if level_warn {
                    tracing::warn!(checkpoint = id, %reason, "checkpoint aborted");
                } else {
                    tracing::info!(checkpoint = id, %reason, "checkpoint aborted");
                }
                p.acks.into_iter().flatten().collect()
            }
            None => Vec::new(),
        };
        self.discard_everything(id, &acked);
        was_pending
    }

    /// Cancels checkpoint `id`; an abort with [`AbortReason::Cancelled`].
    pub fn cancel(&self, id: u64) {
        let _ = self.abort(id, AbortReason::Cancelled);
    }

    /// Aborts every pending checkpoint (the job is failing or stopping).
    pub fn abort_all(&self, reason: AbortReason) {
        let ids: Vec<u64> = self.lock().pending.keys().copied().collect();
        for id in ids {
            let _ = self.abort(id, reason.clone());
        }
    }

    /// Ids of checkpoints triggered but neither complete nor aborted.
    pub fn pending_ids(&self) -> Vec<u64> {
        self.lock().pending.keys().copied().collect()
    }

    /// Ids of aborted checkpoints.
    pub fn aborted_ids(&self) -> Vec<u64> {
        self.lock().aborted.clone()
    }

    /// Ids of the retained completed checkpoints, ascending.
    pub fn completed_ids(&self) -> Vec<u64> {
        self.lock().completed.iter().copied().collect()
    }

    /// What happened so far.
    pub fn stats(&self) -> CheckpointStats {
        self.lock().stats.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::directories::LocalRecoveryDirectoryProvider;
    use crate::handles::{KeyGroupRangeOffsets, KeyGroupsStateHandle, StreamStateHandle};
    use crate::key_groups::KeyGroupRange;
    use crate::local_store::LocalSnapshot;
    use std::path::{Path, PathBuf};

    pub(crate) fn plugin_info() -> PluginInfo {
        PluginInfo {
            name: "p".into(),
            version: "1".into(),
            format: "f".into(),
            format_version: 1,
            deterministic: true,
            content_hash: "0".into(),
            ..PluginInfo::default()
        }
    }

    fn state_file(storage: &CheckpointStorage, id: u64, subtask: u32) -> SubtaskState {
        let dir = storage.checkpoint_dir(id).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("state-{subtask}-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, b"xyz").unwrap();
        let offsets = Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 0), vec![0]).unwrap());
        let stream = StreamStateHandle::File { path, size: 3, crc32c: None };
        SubtaskState { keyed: Some(KeyGroupsStateHandle::new(offsets, stream)), operator: None, keyed_chain: None }
    }

    fn path_of(state: &SubtaskState) -> PathBuf {
        match state.keyed.as_ref().unwrap().stream() {
            StreamStateHandle::File { path, .. } => path.clone(),
            _ => unreachable!(),
        }
    }

    fn setup(root: &Path, retained: usize) -> (CheckpointCoordinator, Arc<TaskLocalStateStore>) {
        let storage = CheckpointStorage::new(&root.join("ckpt"), "job", 0).unwrap();
        let provider = LocalRecoveryDirectoryProvider::new(&[root.join("local")], "a", "job", "v", 0).unwrap();
        let store = Arc::new(TaskLocalStateStore::open(provider, true));
        let config = CoordinatorConfig {
            job_id: "job".into(),
            parallelism: 2,
            max_parallelism: 128,
            plugin: plugin_info(),
            retained,
            max_concurrent: 1,
            min_pause: Duration::ZERO,
        };
        (CheckpointCoordinator::new(config, storage, vec![store.clone()], []), store)
    }

    fn complete(c: &CheckpointCoordinator, id: u64) -> Option<CompletedCheckpoint> {
        c.acknowledge(id, 0, state_file(c.storage(), id, 0)).unwrap();
        c.acknowledge(id, 1, state_file(c.storage(), id, 1)).unwrap()
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
        assert!(!c.storage().checkpoint_dir(1).unwrap().exists());
        assert_eq!(store.stored_ids(), vec![2]);
        assert_eq!(c.stats().completed, 2);
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
        assert!(!c.storage().checkpoint_dir(5).unwrap().exists(), "primary files of the cancelled checkpoint remain");
        assert!(store.retrieve(5).is_none());
        // A subtask that finishes after the cancellation: its state is discarded, nothing completes.
        let late = state_file(c.storage(), 5, 1);
        let late_path = path_of(&late);
        assert!(c.acknowledge(5, 1, late).unwrap().is_none());
        assert!(!late_path.exists());
        assert!(c.storage().completed_checkpoint_ids().unwrap().is_empty());
        assert_eq!(c.stats().failed, 0, "a cancellation is not a failed checkpoint");
    }

    #[test]
    fn completing_a_newer_checkpoint_aborts_older_pending_ones() {
        let root = tempfile::tempdir().unwrap();
        let (c, _) = setup(root.path(), 2);
        c.trigger(1, 0);
        c.acknowledge(1, 0, state_file(c.storage(), 1, 0)).unwrap();
        c.trigger(2, 10);
        complete(&c, 2).expect("complete");
        assert!(c.pending_ids().is_empty());
        assert!(!c.storage().checkpoint_dir(1).unwrap().exists());
    }

    /// Defect 3: retention went by order of completion, so an older checkpoint completing
    /// last evicted the newest one.
    #[test]
    fn out_of_order_completion_never_discards_the_newest_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let (c, _) = setup(root.path(), 1);
        c.trigger(98, 980);
        c.trigger(99, 990);
        // 98 is fully acknowledged except one subtask; 99 completes first.
        c.acknowledge(98, 0, state_file(c.storage(), 98, 0)).unwrap();
        complete(&c, 99).expect("99 completes");
        // 98 was pending and older: subsumed when 99 completed.
        let late = state_file(c.storage(), 98, 1);
        let late_path = path_of(&late);
        assert!(c.acknowledge(98, 1, late).unwrap().is_none(), "98 completed after 99");
        assert!(!late_path.exists());
        assert_eq!(c.storage().completed_checkpoint_ids().unwrap(), vec![99]);
        assert_eq!(c.completed_ids(), vec![99]);
        assert_eq!(c.storage().read_metadata(99).unwrap().source_offset, 990);
    }

    /// The same race through `commit` directly: both checkpoints fully acknowledged, the
    /// older one committed last.
    #[test]
    fn an_older_checkpoint_committed_after_a_newer_one_is_discarded_not_retained() {
        let root = tempfile::tempdir().unwrap();
        let (c, _) = setup(root.path(), 3);
        c.trigger(7, 70);
        c.trigger(8, 80);
        complete(&c, 8).expect("8 completes");
        // 7 was subsumed on 8's completion; pretend its acknowledgements raced past that.
        let pending = Pending {
            source_offset: 70,
            started: Instant::now(),
            acks: vec![Some(state_file(c.storage(), 7, 0)), Some(state_file(c.storage(), 7, 1))],
        };
        let _commit = c.lock_commit();
        assert!(c.commit(7, pending).unwrap().is_none());
        assert_eq!(c.storage().completed_checkpoint_ids().unwrap(), vec![8]);
        assert!(!c.storage().checkpoint_dir(7).unwrap().exists());
    }

    /// Defect 11: an abort or cancel of an already completed checkpoint deleted its metadata
    /// and local copies.
    #[test]
    fn abort_or_cancel_of_a_completed_checkpoint_is_ignored() {
        let root = tempfile::tempdir().unwrap();
        let (c, store) = setup(root.path(), 2);
        c.trigger(3, 30);
        let provider_dir = store.checkpoint_dir(3);
        std::fs::create_dir_all(&provider_dir).unwrap();
        store.store(3, LocalSnapshot::default()).unwrap();
        complete(&c, 3).expect("complete");
        c.abort(3, AbortReason::Failed("late failure".into()));
        c.cancel(3);
        assert_eq!(c.storage().read_metadata(3).unwrap().checkpoint_id, 3);
        assert_eq!(store.stored_ids(), vec![3]);
        assert!(provider_dir.exists());
        assert_eq!(c.stats().failed, 0);
    }

    /// Defect 12: a late or duplicate acknowledgement of a completed checkpoint deleted every
    /// subtask's local copy (and could delete the checkpoint's own files).
    #[test]
    fn late_or_duplicate_acknowledgement_of_a_completed_checkpoint_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let (c, store) = setup(root.path(), 2);
        c.trigger(4, 40);
        store.store(4, LocalSnapshot::default()).unwrap();
        let done = complete(&c, 4).expect("complete");
        // The very same state again (a duplicate message): its files are the checkpoint's own.
        let same = done.metadata.subtasks[0].clone();
        assert!(c.acknowledge(4, 0, same.clone()).unwrap().is_none());
        assert!(path_of(&same).exists(), "a duplicate acknowledgement deleted the checkpoint's file");
        // Different state for the same checkpoint: only those extra files go.
        let extra = state_file(c.storage(), 4, 1);
        let extra_path = path_of(&extra);
        assert!(c.acknowledge(4, 1, extra).unwrap().is_none());
        assert!(!extra_path.exists());
        assert_eq!(store.stored_ids(), vec![4], "local copies of a completed checkpoint were deleted");
        assert_eq!(c.storage().read_metadata(4).unwrap(), done.metadata);
    }

    #[test]
    fn a_checkpoint_being_committed_counts_as_in_flight() {
        use crate::storage::backend::install_memory_store;
        use crate::storage::fault::CrashingStore;
        use crate::storage::{S3Settings, StorageLocation};
        let store = Arc::new(CrashingStore::new(Arc::new(object_store::memory::InMemory::new()), usize::MAX));
        install_memory_store("committing-in-flight", store.clone());
        let location = StorageLocation::parse("memory://committing-in-flight").unwrap();
        let storage = CheckpointStorage::open(&location, &S3Settings::default(), "job", 0).unwrap();
        let config = CoordinatorConfig {
            job_id: "job".into(),
            parallelism: 1,
            max_parallelism: 128,
            plugin: plugin_info(),
            retained: 1,
            max_concurrent: 1,
            min_pause: Duration::ZERO,
        };
        let c = Arc::new(CheckpointCoordinator::new(config, storage.clone(), Vec::new(), []));
        // While checkpoint 1's metadata is written, no checkpoint may start: it could not
        // build on checkpoint 1 (not complete yet), and two would be in flight.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (weak, record) = (Arc::downgrade(&c), seen.clone());
        store.observe(move |_, location| {
            if let Some(c) = weak.upgrade().filter(|_| location.ends_with("_metadata")) {
                record.lock().unwrap().push(c.can_trigger());
            }
        });
        c.trigger(1, 10);
        let mut out =
            storage.stream_factory(1).unwrap().create_output_stream(crate::streams::StateScope::Exclusive).unwrap();
        out.write(b"state").unwrap();
        let offsets = Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 127), vec![0; 128]).unwrap());
        let keyed = KeyGroupsStateHandle::new(offsets, out.close_and_get_handle().unwrap());
        let state = SubtaskState { keyed: Some(keyed), operator: None, keyed_chain: None };
        assert!(c.acknowledge(1, 0, state).unwrap().is_some());
        assert_eq!(*seen.lock().unwrap(), vec![false], "the metadata is written once, with no trigger allowed");
        assert!(c.can_trigger(), "once complete, the next one may start");
    }

    #[test]
    fn concurrency_and_min_pause_gate_triggers_and_failures_are_counted() {
        let root = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::new(&root.path().join("ckpt"), "job", 0).unwrap();
        let config = CoordinatorConfig {
            job_id: "job".into(),
            parallelism: 2,
            max_parallelism: 128,
            plugin: plugin_info(),
            retained: 1,
            max_concurrent: 2,
            min_pause: Duration::from_millis(200),
        };
        let c = CheckpointCoordinator::new(config, storage, Vec::new(), []);
        assert!(c.can_trigger());
        c.trigger(1, 0);
        assert!(c.can_trigger());
        c.trigger(2, 0);
        assert!(!c.can_trigger(), "two in flight");
        c.abort(1, AbortReason::Failed("disk full".into()));
        assert!(!c.can_trigger(), "within the minimum pause after checkpoint 1 ended");
        std::thread::sleep(Duration::from_millis(250));
        assert!(c.can_trigger());
        c.abort(2, AbortReason::Failed("disk full".into()));
        let stats = c.stats();
        assert_eq!((stats.triggered, stats.failed, stats.consecutive_failed), (2, 2, 2));
        assert!(stats.last_failure.unwrap().contains("disk full"));
        c.trigger(3, 0);
        complete(&c, 3).expect("complete");
        assert_eq!(c.stats().consecutive_failed, 0);
    }
}
