//! One subtask's side of the protocol: the synchronous and asynchronous phases of a snapshot,
//! and its restore.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::coordinator::CheckpointBarrier;
use super::recovery::RestoreReport;
use super::SnapshotHost;
use crate::backend::{KeyedSnapshot, KeyedStateBackend};
use crate::error::{Error, ErrorKind, Result};
use crate::handles::{GroupPart, KeyedChain, OperatorStateHandle};
use crate::incremental::{plan, ChainTracker};
use crate::key_groups::KeyGroupRange;
use crate::local_store::TaskLocalStateStore;
use crate::operator_backend::{OperatorSnapshot, OperatorStateBackend};
use crate::restore::{restore_keyed, restore_operator};
use crate::result_provider::{primary_and_local, primary_only};
use crate::runtime::CancelToken;
use crate::storage::{CheckpointMetadata, SubtaskState};
use crate::streams::StateScope;

/// One subtask of the job: owns its key groups and its local state store.
///
/// Made by [`SnapshotHost::subtask`] or handed out by [`SnapshotHost::recover`]. `Send +
/// Sync`; clones share the local store.
///
/// ```
/// # fn main() -> snapshot_host::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// use snapshot_host::{SnapshotHost, StateKind};
///
/// let host = SnapshotHost::builder("events")
///     .plugin_file(snapshot_host::doc_plugin_path())
///     .checkpoint_storage(dir.path())
///     .parallelism(2)
///     .max_parallelism(8)
///     .build()?;
/// let subtask = host.subtask(1)?;
/// assert_eq!(subtask.key_group_range().to_string(), "[4, 7]");
/// let (mut keyed, _operators) = subtask.empty_state()?;
/// let state = keyed.register_state("seen", StateKind::Value)?;
/// // A key of the other subtask's key groups is refused.
/// let foreign = (0..).map(|i| format!("k{i}").into_bytes()).find(|k| host.subtask_of_key(k) == 0).unwrap();
/// assert!(keyed.put(state, &foreign, b"", b"1").is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Subtask {
    host: SnapshotHost,
    index: u32,
    range: KeyGroupRange,
    store: Arc<TaskLocalStateStore>,
    /// With incremental checkpoints: the chain each change base of this subtask stands for.
    chains: Arc<Mutex<ChainTracker>>,
}

/// The asynchronous phase of one subtask's checkpoint, holding the point-in-time views the
/// synchronous phase took: the backends it came from may change freely meanwhile.
///
/// Run it where the caller runs background work (a thread, a blocking-task pool); it is
/// `Send` and owns everything it needs.
#[derive(Debug)]
#[must_use = "a snapshot task does nothing until it is run"]
pub struct SnapshotTask {
    subtask: Subtask,
    id: u64,
    cancel: CancelToken,
    keyed: KeyedSnapshot,
    operators: OperatorSnapshot,
    sync_pause: Duration,
    /// The barrier came from another host's coordinator: refused when run.
    foreign_barrier: bool,
}

/// A subtask's finished part of a checkpoint, for [`Coordinator::acknowledge`]: made only by
/// [`SnapshotTask::run`], after the local copy (if any) is stored.
///
/// It cannot be made up (its fields are private and it has no constructor), so a checkpoint
/// cannot be acknowledged before its state, and the local copy, are written:
///
/// ```compile_fail
/// fn forge(coordinator: &snapshot_host::Coordinator, subtask: &snapshot_host::Subtask) {
///     let ack = snapshot_host::Acknowledgement { id: 1, subtask: subtask.index() };
///     let _ = coordinator.acknowledge(ack);
/// }
/// ```
///
/// [`Coordinator::acknowledge`]: super::Coordinator::acknowledge
#[derive(Debug)]
#[must_use = "the checkpoint completes only when every subtask's acknowledgement reaches the coordinator"]
pub struct Acknowledgement {
    pub(super) host: SnapshotHost,
    pub(super) id: u64,
    pub(super) subtask: u32,
    pub(super) state: SubtaskState,
    /// How long the synchronous phase paused the subtask (the checkpoint's completion log
    /// reports the longest).
    pub(super) sync_pause: Duration,
}

impl Acknowledgement {
    /// The checkpoint acknowledged.
    pub fn checkpoint_id(&self) -> u64 {
        self.id
    }

    /// The acknowledging subtask.
    pub fn subtask(&self) -> u32 {
        self.subtask
    }

    /// Bytes written to the primary for this subtask.
    pub fn state_size(&self) -> u64 {
        self.state.keyed.as_ref().map_or(0, |h| h.state_size())
            + self.state.operator.as_ref().map_or(0, |h| h.state_size())
    }
}

/// A subtask's state as restored from one checkpoint.
#[derive(Debug)]
pub struct RestoredState {
    /// Keyed state.
    pub keyed: KeyedStateBackend,
    /// Operator state.
    pub operators: OperatorStateBackend,
    /// Where each part came from.
    pub report: RestoreReport,
}

impl Subtask {
    pub(super) fn new(host: SnapshotHost, index: u32, range: KeyGroupRange, store: Arc<TaskLocalStateStore>) -> Self {
        Subtask { host, index, range, store, chains: Arc::default() }
    }

    fn chains(&self) -> MutexGuard<'_, ChainTracker> {
        self.chains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this subtask's keyed snapshots are incremental: configured
    /// ([`INCREMENTAL`](crate::config::INCREMENTAL)) and the plugin can write deltas.
    pub fn is_incremental(&self) -> bool {
        self.host.config().checkpointing.incremental.enabled && self.host.plugin().info().incremental
    }

    /// Tells the subtask that checkpoint `id` completed (what Flink calls
    /// `notifyCheckpointComplete`): with incremental checkpoints, `keyed`'s next snapshot
    /// writes deltas on top of that checkpoint, and the changes it holds are forgotten. Call it
    /// from the thread that owns `keyed`, simplest at each barrier with
    /// [`CheckpointBarrier::completed_before`] before [`snapshot`](Self::snapshot); a subtask
    /// never told keeps writing its key groups in full (correct, only bigger). A no-op
    /// otherwise, for a checkpoint this subtask did not snapshot `keyed` for, and for one it
    /// was already told of.
    pub fn checkpoint_completed(&self, id: u64, keyed: &mut KeyedStateBackend) {
        let Some((tracker, upto)) = self.chains().confirm(id) else { return };
        if keyed.change_counters().is_some_and(|c| c.tracker == tracker) {
            keyed.confirm_base(upto);
        }
    }

    /// With incremental checkpoints, makes `keyed` (restored from `links`, or empty) count its
    /// changes from now on, so that the next snapshot can be a delta on top of `links`.
    fn start_tracking(&self, keyed: &mut KeyedStateBackend, links: Vec<crate::handles::ChainLink>) {
        if !self.is_incremental() {
            return;
        }
        keyed.track_changes();
        keyed.mark_base_now();
        if let Some(c) = keyed.change_counters() {
            self.chains().restored((c.tracker, c.sequence), links);
        }
    }

    /// The subtask's index, `0..parallelism`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The key groups it owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// Empty backends for this subtask's key groups (a job that starts without a checkpoint).
    pub fn empty_state(&self) -> Result<(KeyedStateBackend, OperatorStateBackend)> {
        let mut keyed = KeyedStateBackend::new(self.host.max_parallelism(), self.range)?;
        // Nothing to add deltas to: the first snapshot is written in full.
        self.start_tracking(&mut keyed, Vec::new());
        Ok((keyed, OperatorStateBackend::new()))
    }

    /// Checkpoint ids this subtask holds local copies of.
    pub fn local_checkpoints(&self) -> Vec<u64> {
        self.store.stored_ids()
    }

    pub(super) fn store(&self) -> &Arc<TaskLocalStateStore> {
        &self.store
    }

    /// The synchronous phase of checkpoint `barrier`: point-in-time views of `keyed` and
    /// `operators`, in `O(key groups)` without copying entries. The backends may be changed as
    /// soon as this returns.
    pub fn snapshot(
        &self,
        barrier: &CheckpointBarrier,
        keyed: &KeyedStateBackend,
        operators: &OperatorStateBackend,
    ) -> SnapshotTask {
        let started = Instant::now();
        let keyed_view = keyed.snapshot();
        let operator_view = operators.snapshot();
        SnapshotTask {
            subtask: self.clone(),
            id: barrier.id,
            cancel: barrier.cancel.clone(),
            keyed: keyed_view,
            operators: operator_view,
            sync_pause: started.elapsed(),
            foreign_barrier: !barrier.host.same_as(&self.host),
        }
    }

    /// Restores this subtask's part of checkpoint `checkpoint`: its local copy first when it is
    /// a copy of exactly that checkpoint's primary, then the primary, verifying every byte.
    /// After rescaling (another parallelism) the primary is read and the key groups and
    /// operator state redistributed. Local copies are left as they are: [`SnapshotHost::recover`]
    /// prunes them once the whole job restored.
    pub fn restore(&self, checkpoint: &CheckpointMetadata, cancel: &CancelToken) -> Result<RestoredState> {
        let host = &self.host;
        let id = checkpoint.checkpoint_id;
        let context = |e: Error| e.context(format!("restoring subtask {} from checkpoint {id}", self.index));
        if checkpoint.job_id != host.job_id() {
            let why =
                format!("checkpoint {id} belongs to job {:?}, this host to {:?}", checkpoint.job_id, host.job_id());
            return Err(context(Error::msg(ErrorKind::Usage, why)));
        }
        if checkpoint.max_parallelism != host.max_parallelism() {
            let source = crate::restore::RestoreError::MaxParallelismMismatch {
                checkpoint: id,
                found: checkpoint.max_parallelism,
                expected: host.max_parallelism(),
            };
            return Err(context(source.into()));
        }
        let started = Instant::now();
        let plugin = host.plugin();
        // Local copies are tried first only when the configuration says to restore from them.
        let store = host.config().local_recovery.restores_from_local().then_some(self.store.as_ref());
        let mut keyed = restore_keyed(plugin, checkpoint, self.range, store, cancel).map_err(|e| context(e.into()))?;
        // Deltas continue the restored chain when this subtask's key groups are exactly one
        // old subtask's (no rescaling); otherwise the first snapshot is written in full.
        let own =
            checkpoint.subtasks.iter().find(|s| s.keyed.as_ref().is_some_and(|h| h.key_group_range() == self.range));
        let mut links = own.map(|s| s.keyed_links(checkpoint.plugin.format_version)).unwrap_or_default();
        if keyed.source == crate::restore::RestoreSource::Local && self.is_incremental() {
            // Restored from local disk: the primary's streams of the chain were not read, and
            // deltas on top of a stream the primary lost would be checkpoints that cannot be
            // restored. Each is checked to be there with its size (a stat or a HEAD, no read);
            // if one is not, the next snapshot is written in full.
            if let Some((link, e)) = links.iter().find_map(|l| l.handle.stream().open().err().map(|e| (l, e))) {
                tracing::warn!(
                    checkpoint = id,
                    subtask = self.index,
                    link = link.checkpoint_id,
                    error = %e,
                    "the primary lost a stream of the restored chain; the next checkpoint is written in full"
                );
                links.clear();
            }
        }
        self.start_tracking(&mut keyed.backend, links);
        let operators = restore_operator(plugin, checkpoint, self.index, host.parallelism(), store, cancel)
            .map_err(|e| context(e.into()))?;
        let report = RestoreReport {
            checkpoint_id: Some(id),
            source: keyed.source,
            alternative: keyed.alternative,
            alternatives: keyed.alternatives,
            operator_source: operators.source,
            duration: started.elapsed(),
        };
        tracing::info!(
            checkpoint = id,
            subtask = self.index,
            source = %report.source,
            alternative = report.alternative,
            alternatives = report.alternatives,
            duration_ms = report.duration.as_millis() as u64,
            "subtask {} restored checkpoint {id} from {} (alternative {}/{}) in {:.1?}",
            self.index,
            report.source,
            report.alternative,
            report.alternatives,
            report.duration,
        );
        Ok(RestoredState { keyed: keyed.backend, operators: operators.backend, report })
    }
}

impl SnapshotTask {
    /// The checkpoint this task writes.
    pub fn checkpoint_id(&self) -> u64 {
        self.id
    }

    /// The subtask writing it.
    pub fn subtask(&self) -> u32 {
        self.subtask.index
    }

    /// How long the synchronous phase paused the subtask.
    pub fn sync_pause(&self) -> Duration {
        self.sync_pause
    }

    /// The asynchronous phase: the plugin writes keyed and operator state to the primary and,
    /// with local recovery, a local copy beside it; the local copy is stored (or, if it is
    /// incomplete, deleted) before the acknowledgement is returned, so that the checkpoint's
    /// completion always finds it registered. On failure nothing is acknowledged: decline the
    /// checkpoint with [`Coordinator::decline`](super::Coordinator::decline), which discards
    /// what was written.
    pub fn run(self) -> Result<Acknowledgement> {
        let id = self.id;
        let index = self.subtask.index;
        if self.foreign_barrier {
            let why = format!("subtask {index}: the barrier of checkpoint {id} comes from another job's coordinator");
            return Err(Error::msg(ErrorKind::Usage, why));
        }
        if self.cancel.is_cancelled() {
            // Aborted before this subtask got to it: write nothing at all.
            let why = format!("subtask {index}: checkpoint {id} was aborted before its snapshot started");
            return Err(Error::msg(ErrorKind::Cancelled, why));
        }
        let (subtask, cancel) = (self.subtask.clone(), self.cancel.clone());
        self.write().map_err(|e| {
            if cancel.is_cancelled() {
                // The abort that interrupted this write deleted the checkpoint's files, and the
                // streams it cut short delete their partial files; a stream opened after the
                // abort may still have created the directories again.
                if let Err(e) = subtask.host.checkpoints().discard_checkpoint(id) {
                    tracing::warn!(checkpoint = id, error = %e, "could not discard an aborted checkpoint's files");
                }
                subtask.store.abort(id);
                // Whatever failed (a stream whose directory the abort deleted, say), the abort
                // is why: report it as cancelled, with the failure as the cause.
                let what = format!("subtask {index}: checkpoint {id} was aborted while it was being written");
                return Error::new(ErrorKind::Cancelled, e).context(what);
            }
            e.context(format!("subtask {index}: writing its part of checkpoint {id}"))
        })
    }

    fn write(self) -> Result<Acknowledgement> {
        let SnapshotTask { subtask, id, cancel, keyed, operators, sync_pause, .. } = self;
        let host = &subtask.host;
        let plugin = host.plugin();
        let factory = host.checkpoints().stream_factory(id)?;
        let store = &subtask.store;
        let new_stream = |scope| {
            if store.is_enabled() {
                primary_and_local(factory.as_ref(), scope, &store.checkpoint_dir(id))
            } else {
                primary_only(factory.as_ref(), scope)
            }
        };
        // Incremental: the keyed stream goes to the shared area (later checkpoints build on
        // it), each key group as a delta on the base's chain or, compacted, in full.
        let changes = keyed.changes().filter(|_| subtask.is_incremental());
        let chain = changes.map(|changes| {
            let tracker = subtask.chains();
            let base = tracker.base_links(changes).map(<[_]>::to_vec).unwrap_or_default();
            let parts = plan(&base, subtask.range, &host.config().checkpointing.incremental);
            (changes, base, parts)
        });
        let (stream, offsets) = match &chain {
            Some((_, _, parts)) => {
                plugin.snapshot_keyed_parts(keyed, Some(parts.clone()), new_stream(StateScope::Shared)?, &cancel)?
            }
            None => plugin.snapshot_keyed_cancellable(keyed, new_stream(StateScope::Exclusive)?, &cancel)?,
        };
        let (keyed, keyed_local) = stream
            .close_and_finalize()
            .map_err(|e| Error::from(e).context("completing the keyed snapshot"))?
            .into_keyed(offsets)
            .into_parts();
        let keyed_chain = match (chain, &keyed) {
            (Some((changes, base, parts)), Some(own)) => {
                let deltas = parts.iter().filter(|p| **p == GroupPart::Delta).count();
                tracing::debug!(
                    checkpoint = id,
                    subtask = subtask.index,
                    deltas,
                    groups = parts.len(),
                    "incremental keyed snapshot"
                );
                let chain = KeyedChain::on_top_of(&base, id, parts, plugin.info().format_version, subtask.range);
                subtask.chains().written(id, changes, chain.links(own));
                Some(chain)
            }
            _ => None,
        };
        let (stream, partitions, checksums) =
            plugin.snapshot_operator_cancellable(operators, new_stream(StateScope::Exclusive)?, &cancel)?;
        let (operator, operator_local) = stream
            .close_and_finalize()
            .map_err(|e| Error::from(e).context("completing the operator snapshot"))?
            .map(|stream| OperatorStateHandle::new(partitions.clone(), stream).with_checksums(checksums.clone()))
            .into_parts();
        let state = SubtaskState { keyed, operator, keyed_chain };
        store.store_copy_of(id, &state, keyed_local, operator_local);
        Ok(Acknowledgement { host: host.clone(), id, subtask: subtask.index, state, sync_pause })
    }
}
