//! A keyed counting job over parallel subtasks, with checkpoints through a strategy plugin,
//! task-local recovery and injected failures. It is the demo's job and the harness for the
//! end-to-end recovery tests.
//!
//! A deterministic source emits events (keys); each goes to the subtask owning its key group,
//! which counts events per key in a value state `count`. Every subtask also keeps operator
//! list state: `processed` (SPLIT_DISTRIBUTE counters whose sum is the number of events
//! processed) and `job` (BROADCAST). The job has no UNION state on purpose: union state is
//! repartitioned on every restore, so it would keep operator state from ever restoring
//! locally (the union mode is tested with the plugin directly).
//!
//! Every `checkpoint_interval` events the source injects a barrier into every subtask's input;
//! a subtask that receives it takes a point-in-time view of its state (the synchronous phase)
//! and snapshots it through the plugin on another thread (the asynchronous phase) while it
//! keeps counting. An attempt that fails is recovered by restoring every subtask from the
//! latest completed checkpoint and replaying the source from that checkpoint's offset: the
//! final counts equal a failure-free run's.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{KeyedSnapshot, KeyedStateBackend, StateKind, StateValue};
use crate::config::Config;
use crate::coordinator::{AbortReason, CheckpointCoordinator, CompletedCheckpoint, CoordinatorConfig};
use crate::directories::LocalRecoveryDirectoryProvider;
use crate::handles::{DistributionMode, OperatorStateHandle};
use crate::key_groups::{key_group_for_key, operator_for_key_group, range_for_operator};
use crate::local_store::{retain_allocations, TaskLocalStateStore};
use crate::operator_backend::{OperatorSnapshot, OperatorStateBackend, OperatorStateError};
use crate::restore::{restore_keyed, restore_operator, RestoreError, RestoreSource};
use crate::result_provider::{primary_and_local, primary_only};
use crate::runtime::{CancelToken, Plugin};
use crate::storage::{CheckpointMetadata, CheckpointStorage, SubtaskState};
use crate::streams::{FileStreamFactory, StateScope};

/// The name of the counting state.
pub const COUNT_STATE: &str = "count";
/// Operator state (SPLIT_DISTRIBUTE): counters of processed events; their sum over all
/// subtasks is the number of events processed, whatever the redistribution.
pub const PROCESSED_STATE: &str = "processed";
/// Operator state (BROADCAST): the job's description, the same on every subtask.
pub const JOB_STATE: &str = "job";

/// What the job is.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job id (a directory name).
    pub job_id: String,
    /// Allocation id: local state is scoped to it.
    pub allocation_id: String,
    /// Number of subtasks.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Number of events the source emits in all.
    pub events: u64,
    /// Number of distinct keys.
    pub keys: u64,
    /// Events between checkpoint barriers.
    pub checkpoint_interval: u64,
    /// Storage and local recovery settings.
    pub config: Config,
}

/// The index (in `0..keys`) of the key of event `index`: a deterministic function of the
/// index, so any prefix of the stream can be replayed and its counts recomputed.
fn event_key_index(index: u64, keys: u64) -> u64 {
    let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % keys.max(1)
}

fn key_name(key_index: u64) -> Vec<u8> {
    format!("key-{key_index}").into_bytes()
}

/// The key of event `index`.
pub fn event_key(index: u64, keys: u64) -> Vec<u8> {
    key_name(event_key_index(index, keys))
}

/// The counts of a failure-free run over events `0..events`. Counts per key index first (no
/// allocation per event): verification replays millions of events.
pub fn expected_counts(events: u64, keys: u64) -> BTreeMap<Vec<u8>, u64> {
    let mut per_index = vec![0u64; keys.max(1) as usize];
    for i in 0..events {
        per_index[event_key_index(i, keys) as usize] += 1;
    }
    per_index.into_iter().enumerate().filter(|(_, n)| *n > 0).map(|(k, n)| (key_name(k as u64), n)).collect()
}

/// The counts held by a set of backends.
pub fn counts_of(backends: &[KeyedStateBackend]) -> BTreeMap<Vec<u8>, u64> {
    let mut counts = BTreeMap::new();
    for b in backends {
        if let Some((_, rows)) = b.contents().remove(COUNT_STATE) {
            for ((key, _), value) in rows {
                if let StateValue::Value(v) = value {
                    counts.insert(key, u64::from_le_bytes(v.as_slice().try_into().unwrap_or([0; 8])));
                }
            }
        }
    }
    counts
}

fn decode_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// Sum of the `processed` counters of a set of operator backends.
pub fn processed_total(operators: &[OperatorStateBackend]) -> u64 {
    operators.iter().flat_map(|o| o.get(PROCESSED_STATE).unwrap_or(&[]).iter()).map(|e| decode_u64(e)).sum()
}

/// Something that happened during an attempt, for the caller to report.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// A subtask was restored.
    Restored {
        /// The subtask.
        subtask: u32,
        /// Which copy the keyed state came from.
        source: RestoreSource,
        /// 1-based alternative used for keyed state.
        alternative: usize,
        /// Number of keyed alternatives.
        alternatives: usize,
        /// Which copy the operator state came from.
        operator_source: RestoreSource,
        /// Time taken (keyed and operator state).
        duration: Duration,
    },
    /// A checkpoint completed.
    Completed {
        /// Id.
        checkpoint_id: u64,
        /// Bytes of primary state.
        size: u64,
        /// Trigger to durable metadata.
        duration: Duration,
        /// Longest synchronous pause of a subtask for this checkpoint.
        max_sync_pause: Duration,
    },
    /// A checkpoint was aborted.
    Aborted {
        /// Id.
        checkpoint_id: u64,
        /// Why.
        reason: String,
    },
    /// Source progress (every few thousand events).
    Progress {
        /// Events emitted so far in this job (all attempts).
        offset: u64,
    },
}

/// How an attempt should end.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptOptions {
    /// Inject a task failure when the source reaches this offset.
    pub fail_at: Option<u64>,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum AttemptOutcome {
    /// The source was exhausted and every subtask finished.
    Finished {
        /// The subtasks' final keyed state.
        backends: Vec<KeyedStateBackend>,
        /// The subtasks' final operator state.
        operators: Vec<OperatorStateBackend>,
        /// What happened to the attempt's checkpoints (a caller decides whether a run that
        /// completed none is a failure: for a job it is, since nothing it did is durable).
        checkpoints: crate::coordinator::CheckpointStats,
    },
    /// A task failure was injected at this offset.
    Failed {
        /// The offset.
        at: u64,
    },
}

/// Errors of running the job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Set-up of storage, local stores or partitioning failed.
    #[error("job set-up: {0}")]
    Setup(String),
    /// Restoring a subtask failed.
    #[error("restoring subtask {subtask}: {source}")]
    Restore {
        /// The subtask.
        subtask: u32,
        /// The cause.
        #[source]
        source: RestoreError,
    },
    /// A subtask thread died.
    #[error("subtask {0} failed: {1}")]
    Subtask(u32, String),
    /// Checkpoints exist, but none of them can be restored; starting empty would silently
    /// lose all state.
    #[error("checkpoints exist in {dir}, but none can be restored, so the job does not start (starting with empty state would lose it; set {key}=true to do that anyway):\n{}", list_failures(.failures))]
    NoRestorableCheckpoint {
        /// The job's checkpoint directory.
        dir: String,
        /// The setting that allows starting empty.
        key: &'static str,
        /// Each checkpoint, newest first, and why it could not be restored.
        failures: Vec<(u64, String)>,
    },
    /// More consecutive checkpoints failed than the job tolerates.
    #[error("{failed} consecutive checkpoints failed, more than the {tolerable} tolerated (execution.checkpointing.tolerable-failed-checkpoints); the last: {last}")]
    TooManyFailedCheckpoints {
        /// Consecutive failures.
        failed: u64,
        /// Tolerated.
        tolerable: u64,
        /// The last failure.
        last: String,
    },
}

fn list_failures(failures: &[(u64, String)]) -> String {
    let lines: Vec<String> = failures.iter().map(|(id, why)| format!("  checkpoint {id}: {why}")).collect();
    lines.join("\n")
}

/// A job restored from its newest restorable checkpoint (or started empty).
#[derive(Debug)]
pub struct RestoredJob {
    /// The checkpoint restored, or `None` when the job starts empty.
    pub checkpoint: Option<CheckpointMetadata>,
    /// Every subtask's state.
    pub subtasks: Vec<SubtaskBackends>,
    /// One [`JobEvent::Restored`] per subtask.
    pub events: Vec<JobEvent>,
    /// Newer checkpoints that could not be restored, and why (they were moved aside).
    pub skipped: Vec<(u64, String)>,
}

fn setup(e: impl std::fmt::Display) -> JobError {
    JobError::Setup(e.to_string())
}

enum Input {
    Record(Vec<u8>),
    Barrier(u64),
    Fail,
    End,
}

/// A subtask's restored state: keyed and operator.
pub type SubtaskBackends = (KeyedStateBackend, OperatorStateBackend);

/// Runs the job's attempts against its storage and local state.
#[derive(Debug)]
pub struct JobRunner {
    spec: JobSpec,
    plugin: Arc<Plugin>,
    storage: CheckpointStorage,
    next_checkpoint: u64,
}

impl JobRunner {
    /// Prepares the job: opens storage, removes checkpoints that never completed.
    pub fn new(spec: JobSpec, plugin: Arc<Plugin>) -> Result<Self, JobError> {
        range_for_operator(spec.max_parallelism, spec.parallelism, 0).map_err(setup)?;
        if spec.checkpoint_interval == 0 {
            return Err(setup("the checkpoint interval must be at least 1 event"));
        }
        let storage = CheckpointStorage::open(
            &spec.config.checkpoint_storage,
            &spec.config.s3,
            &spec.job_id,
            FileStreamFactory::DEFAULT_INLINE_THRESHOLD,
        )
        .map_err(setup)?;
        let removed = storage.remove_incomplete().map_err(setup)?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed checkpoints that never completed");
        }
        let next_checkpoint = storage.completed_checkpoint_ids().map_err(setup)?.last().map_or(1, |id| id + 1);
        if spec.config.local_recovery.enabled {
            // Local state of allocations this process does not own (left by an earlier
            // process with other slots) would only fill the disk.
            let removed = retain_allocations(&spec.config.local_recovery.root_dirs, &[spec.allocation_id.as_str()]);
            if !removed.is_empty() {
                tracing::info!(?removed, "deleted local state of unknown allocations");
            }
        }
        Ok(JobRunner { spec, plugin, storage, next_checkpoint })
    }

    /// The job's storage.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The spec.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The job description kept in the broadcast state.
    pub fn job_description(&self) -> String {
        format!("job={} keys={} events={}", self.spec.job_id, self.spec.keys, self.spec.events)
    }

    /// Opens every subtask's local state store (loading local copies persisted by an earlier
    /// process), as a starting job does.
    pub fn open_local_stores(&self) -> Result<Vec<Arc<TaskLocalStateStore>>, JobError> {
        let local = &self.spec.config.local_recovery;
        (0..self.spec.parallelism)
            .map(|i| {
                let provider = LocalRecoveryDirectoryProvider::new(
                    &local.root_dirs,
                    &self.spec.allocation_id,
                    &self.spec.job_id,
                    "counter",
                    i,
                )
                .map_err(setup)?;
                Ok(Arc::new(TaskLocalStateStore::open(provider, local.enabled)))
            })
            .collect()
    }

    /// Restores every subtask from `metadata` (or starts empty) and returns their keyed and
    /// operator state, with one [`JobEvent::Restored`] per subtask. Local copies are offered
    /// from `stores` (by subtask index; may be empty). Nothing is pruned: the caller decides
    /// what to keep once the whole job restored.
    pub fn restore(
        &self,
        metadata: Option<&CheckpointMetadata>,
        stores: &[Arc<TaskLocalStateStore>],
        cancel: &CancelToken,
    ) -> Result<(Vec<SubtaskBackends>, Vec<JobEvent>), JobError> {
        let (p, m) = (self.spec.parallelism, self.spec.max_parallelism);
        let mut out = Vec::new();
        let mut events = Vec::new();
        for i in 0..p {
            let range = range_for_operator(m, p, i).map_err(setup)?;
            let started = Instant::now();
            let (mut keyed, mut operators) = match metadata {
                None => (KeyedStateBackend::new(m, range).map_err(setup)?, OperatorStateBackend::new()),
                Some(meta) => {
                    if meta.max_parallelism != m {
                        let source = RestoreError::MaxParallelismMismatch {
                            checkpoint: meta.checkpoint_id,
                            found: meta.max_parallelism,
                            expected: m,
                        };
                        return Err(JobError::Restore { subtask: i, source });
                    }
                    // Local copies belong to subtasks of the old parallelism: after rescaling
                    // the ranges and partitions differ and the restore uses the primary.
                    let store = stores.get(i as usize).map(Arc::as_ref);
                    let restore_err = |source| JobError::Restore { subtask: i, source };
                    let k = restore_keyed(&self.plugin, meta, range, store, cancel).map_err(restore_err)?;
                    let o = restore_operator(&self.plugin, meta, i, p, store, cancel).map_err(restore_err)?;
                    events.push(JobEvent::Restored {
                        subtask: i,
                        source: k.source,
                        alternative: k.alternative,
                        alternatives: k.alternatives,
                        operator_source: o.source,
                        duration: started.elapsed(),
                    });
                    (k.backend, o.backend)
                }
            };
            keyed.register_state(COUNT_STATE, StateKind::Value).map_err(setup)?;
            self.init_operator_state(i, &mut operators).map_err(setup)?;
            out.push((keyed, operators));
        }
        Ok((out, events))
    }

    /// Restores the newest checkpoint that can be restored, changing nothing on disk (see
    /// [`restore_latest`](Self::restore_latest) for what a starting job does besides). A newer
    /// one that cannot be restored (damaged metadata, or state whose every copy is missing or
    /// corrupt) is skipped with a warning naming it and the cause. When checkpoints exist but
    /// none restores, this fails (unless configured to start empty): starting empty over
    /// existing checkpoints would silently lose all state.
    pub fn find_restorable(
        &self,
        stores: &[Arc<TaskLocalStateStore>],
        cancel: &CancelToken,
    ) -> Result<RestoredJob, JobError> {
        let ids = self.storage.completed_checkpoint_ids().map_err(setup)?;
        let mut skipped: Vec<(u64, String)> = Vec::new();
        for &id in ids.iter().rev() {
            let metadata = match self.storage.read_metadata(id) {
                Ok(metadata) => metadata,
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e, "cannot restore checkpoint {id}; trying an older one");
                    skipped.push((id, e.to_string()));
                    continue;
                }
            };
            match self.restore(Some(&metadata), stores, cancel) {
                Ok((subtasks, events)) => {
                    return Ok(RestoredJob { checkpoint: Some(metadata), subtasks, events, skipped });
                }
                Err(JobError::Restore { source: RestoreError::Cancelled { what }, subtask }) => {
                    return Err(JobError::Restore { subtask, source: RestoreError::Cancelled { what } });
                }
                Err(e) => {
                    let why = e.to_string();
                    tracing::warn!(checkpoint = id, error = %why, "cannot restore checkpoint {id}; trying an older one");
                    skipped.push((id, why));
                }
            }
        }
        if !skipped.is_empty() && !self.spec.config.start_empty_if_unrestorable {
            return Err(JobError::NoRestorableCheckpoint {
                dir: self.storage.url().to_string(),
                key: crate::config::START_EMPTY_IF_UNRESTORABLE,
                failures: skipped,
            });
        }
        if !skipped.is_empty() {
            tracing::warn!("no checkpoint can be restored; starting with empty state as configured");
        }
        let (subtasks, events) = self.restore(None, stores, cancel)?;
        Ok(RestoredJob { checkpoint: None, subtasks, events, skipped })
    }

    /// [`find_restorable`](Self::find_restorable), then what a starting job does with the
    /// result: every subtask's local store keeps only the restored checkpoint, and the skipped
    /// newer checkpoints are moved aside (`chk-<id>.unrestorable`), so that retention never
    /// counts them and a later start does not try them again.
    pub fn restore_latest(
        &self,
        stores: &[Arc<TaskLocalStateStore>],
        cancel: &CancelToken,
    ) -> Result<RestoredJob, JobError> {
        let restored = self.find_restorable(stores, cancel)?;
        if let Some(m) = &restored.checkpoint {
            for store in stores {
                store.retain_only(m.checkpoint_id);
            }
        }
        self.quarantine(&restored.skipped);
        Ok(restored)
    }

    fn quarantine(&self, skipped: &[(u64, String)]) {
        for (id, _) in skipped {
            match self.storage.quarantine(*id) {
                Ok(to) => tracing::warn!(checkpoint = id, to = %to, "moved an unrestorable checkpoint aside"),
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e, "could not move an unrestorable checkpoint aside")
                }
            }
        }
    }

    fn init_operator_state(
        &self,
        _subtask: u32,
        operators: &mut OperatorStateBackend,
    ) -> Result<(), OperatorStateError> {
        operators.register(PROCESSED_STATE, DistributionMode::SplitDistribute)?;
        operators.register(JOB_STATE, DistributionMode::Broadcast)?;
        if operators.get(JOB_STATE)?.is_empty() {
            operators.add(JOB_STATE, self.job_description().into_bytes())?;
        }
        Ok(())
    }

    /// Runs one attempt: restore from the newest restorable checkpoint, replay the source from
    /// its offset, checkpoint every interval (as concurrency and the minimum pause allow),
    /// until the source ends or a failure is injected. Fails when more consecutive checkpoints
    /// fail than tolerated (`execution.checkpointing.tolerable-failed-checkpoints`); a
    /// finished attempt reports what happened to its checkpoints.
    pub fn run_attempt(
        &mut self,
        options: AttemptOptions,
        events: &Sender<JobEvent>,
    ) -> Result<AttemptOutcome, JobError> {
        let stores = self.open_local_stores()?;
        let restored = self.restore_latest(&stores, &CancelToken::new())?;
        for event in restored.events {
            let _ = events.send(event);
        }
        let latest = restored.checkpoint;
        let start = latest.as_ref().map_or(0, |m| m.source_offset);
        if let Some(m) = &latest {
            self.next_checkpoint = self.next_checkpoint.max(m.checkpoint_id + 1);
        }
        let checkpointing = self.spec.config.checkpointing.clone();
        // Only checkpoints up to the restored one count towards retention (newer ones that
        // could not be restored were moved aside).
        let retained = self.storage.completed_checkpoint_ids().map_err(setup)?;
        let restored_id = latest.as_ref().map_or(0, |m| m.checkpoint_id);
        let coordinator = Arc::new(CheckpointCoordinator::new(
            CoordinatorConfig {
                job_id: self.spec.job_id.clone(),
                parallelism: self.spec.parallelism,
                max_parallelism: self.spec.max_parallelism,
                plugin: self.plugin.info().clone(),
                retained: self.spec.config.retained_checkpoints,
                max_concurrent: checkpointing.max_concurrent,
                min_pause: checkpointing.min_pause,
            },
            self.storage.clone(),
            stores.clone(),
            retained.into_iter().filter(|&id| id <= restored_id),
        ));

        let pauses: Pauses = Arc::default();
        let mut inputs: Vec<SyncSender<Input>> = Vec::new();
        let mut threads: Vec<JoinHandle<Result<SubtaskBackends, String>>> = Vec::new();
        for (i, (keyed, operators)) in restored.subtasks.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<Input>(4096);
            inputs.push(tx);
            let ctx = SubtaskContext {
                index: i as u32,
                plugin: self.plugin.clone(),
                storage: self.storage.clone(),
                store: stores[i].clone(),
                coordinator: coordinator.clone(),
                events: events.clone(),
                pauses: pauses.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("subtask-{i}"))
                .spawn(move || ctx.run(keyed, operators, rx))
                .map_err(setup)?;
            threads.push(handle);
        }

        let (p, m) = (self.spec.parallelism, self.spec.max_parallelism);
        let interval = self.spec.checkpoint_interval;
        let too_many_failures = || {
            let stats = coordinator.stats();
            (stats.consecutive_failed > checkpointing.tolerable_failed).then(|| JobError::TooManyFailedCheckpoints {
                failed: stats.consecutive_failed,
                tolerable: checkpointing.tolerable_failed,
                last: stats.last_failure.unwrap_or_default(),
            })
        };
        let mut failed_at = None;
        let mut job_failure = None;
        // The next checkpoint is due at the next multiple of the interval; when concurrency or
        // the minimum pause holds it back, it is taken as soon as they allow.
        let mut next_due = (start / interval + 1) * interval;
        for offset in start..self.spec.events {
            if offset >= next_due && coordinator.can_trigger() {
                let id = self.next_checkpoint;
                self.next_checkpoint += 1;
                coordinator.trigger(id, offset);
                for tx in &inputs {
                    let _ = tx.send(Input::Barrier(id));
                }
                next_due = (offset / interval + 1) * interval;
            }
            if offset % 1024 == 0 {
                if let Some(e) = too_many_failures() {
                    job_failure = Some(e);
                    failed_at = Some(offset);
                    break;
                }
            }
            if options.fail_at == Some(offset) {
                failed_at = Some(offset);
                break;
            }
            let key = event_key(offset, self.spec.keys);
            let target = operator_for_key_group(m, p, key_group_for_key(&key, m));
            if inputs[target as usize].send(Input::Record(key)).is_err() {
                break;
            }
            if offset % 10_000 == 0 {
                let _ = events.send(JobEvent::Progress { offset });
            }
        }
        for tx in &inputs {
            let _ = tx.send(if failed_at.is_some() { Input::Fail } else { Input::End });
        }
        let mut finals = Vec::new();
        let mut thread_error = None;
        for (i, t) in threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(b)) => finals.push(b),
                Ok(Err(e)) if failed_at.is_some() => tracing::debug!(subtask = i, "{e}"),
                Ok(Err(e)) => thread_error = Some(JobError::Subtask(i as u32, e)),
                Err(_) => thread_error = Some(JobError::Subtask(i as u32, "the subtask thread panicked".into())),
            }
        }
        // Checkpoints still pending now can never complete.
        let reason = if failed_at.is_some() { AbortReason::TaskFailure } else { AbortReason::JobFinished };
        for id in coordinator.pending_ids() {
            if coordinator.abort(id, reason.clone()) {
                let _ = events.send(JobEvent::Aborted { checkpoint_id: id, reason: reason.to_string() });
            }
        }
        if let Some(e) = thread_error.or(job_failure).or_else(too_many_failures) {
            return Err(e);
        }
        Ok(match failed_at {
            Some(at) => AttemptOutcome::Failed { at },
            None => {
                let (backends, operators) = finals.into_iter().unzip();
                AttemptOutcome::Finished { backends, operators, checkpoints: coordinator.stats() }
            }
        })
    }

    /// Discards the job's local state everywhere (as when the machine holding it is lost).
    pub fn delete_local_state(&self) -> std::io::Result<()> {
        for store in self.open_local_stores().map_err(std::io::Error::other)? {
            store.dispose();
        }
        Ok(())
    }
}

/// The longest synchronous pause per checkpoint over all subtasks. Every subtask records its
/// pause before its asynchronous phase starts, so all are in by the time the checkpoint
/// completes.
type Pauses = Arc<Mutex<BTreeMap<u64, Duration>>>;

/// Adds `pending` processed events to this subtask's first `processed` counter.
fn fold_processed(operators: &mut OperatorStateBackend, pending: &mut u64) -> Result<(), OperatorStateError> {
    if *pending == 0 {
        return Ok(());
    }
    let mut counters = operators.get(PROCESSED_STATE)?.to_vec();
    match counters.first_mut() {
        Some(first) => *first = (decode_u64(first) + *pending).to_le_bytes().to_vec(),
        None => counters.push(pending.to_le_bytes().to_vec()),
    }
    operators.update(PROCESSED_STATE, counters)?;
    *pending = 0;
    Ok(())
}

struct SubtaskContext {
    index: u32,
    plugin: Arc<Plugin>,
    storage: CheckpointStorage,
    store: Arc<TaskLocalStateStore>,
    coordinator: Arc<CheckpointCoordinator>,
    events: Sender<JobEvent>,
    pauses: Pauses,
}

impl SubtaskContext {
    fn run(
        self,
        mut keyed: KeyedStateBackend,
        mut operators: OperatorStateBackend,
        input: Receiver<Input>,
    ) -> Result<SubtaskBackends, String> {
        let count = keyed.state_index(COUNT_STATE).map_err(|e| e.to_string())?;
        let mut snapshots: Vec<JoinHandle<()>> = Vec::new();
        // Events processed since the last fold into the `processed` operator state.
        let mut processed = 0u64;
        let ctx = Arc::new(self);
        let result = loop {
            match input.recv() {
                Ok(Input::Record(key)) => {
                    let n = keyed.get(count, &key, b"").map_err(|e| e.to_string())?.map_or(0, decode_u64);
                    keyed.put(count, &key, b"", &(n + 1).to_le_bytes()).map_err(|e| e.to_string())?;
                    processed += 1;
                }
                Ok(Input::Barrier(id)) => {
                    // Synchronous phase: point-in-time views, O(key groups), no copying.
                    let started = Instant::now();
                    fold_processed(&mut operators, &mut processed).map_err(|e| e.to_string())?;
                    let keyed_view = keyed.snapshot();
                    let operator_view = operators.snapshot();
                    let pause = started.elapsed();
                    {
                        let mut pauses = ctx.pauses.lock().expect("pauses lock");
                        let max = pauses.entry(id).or_default();
                        *max = (*max).max(pause);
                    }
                    let task = ctx.clone();
                    snapshots.push(std::thread::spawn(move || task.snapshot(id, keyed_view, operator_view)));
                }
                Ok(Input::Fail) => break Err(format!("subtask {}: injected task failure", ctx.index)),
                Ok(Input::End) | Err(_) => break Ok(()),
            }
        };
        for s in snapshots {
            let _ = s.join();
        }
        fold_processed(&mut operators, &mut processed).map_err(|e| e.to_string())?;
        result.map(|()| (keyed, operators))
    }

    /// Asynchronous phase of checkpoint `id`: keyed and operator state, each to the primary
    /// and (with local recovery) a local copy.
    fn snapshot(&self, id: u64, keyed_view: KeyedSnapshot, operator_view: OperatorSnapshot) {
        let result = self.write_snapshot(id, keyed_view, operator_view);
        match result {
            Ok(Some(done)) => {
                let max_sync_pause = self.pauses.lock().expect("pauses lock").remove(&id).unwrap_or_default();
                let _ = self.events.send(JobEvent::Completed {
                    checkpoint_id: id,
                    size: done.metadata.state_size(),
                    duration: done.duration,
                    max_sync_pause,
                });
            }
            Ok(None) => {}
            Err(reason) => {
                // Only the subtask that aborted the checkpoint reports it: the others' snapshots
                // were merely interrupted by that abort.
                if self.coordinator.abort(id, AbortReason::Failed(reason.clone())) {
                    let _ = self.events.send(JobEvent::Aborted { checkpoint_id: id, reason });
                }
            }
        }
    }

    fn write_snapshot(
        &self,
        id: u64,
        keyed_view: KeyedSnapshot,
        operator_view: OperatorSnapshot,
    ) -> Result<Option<CompletedCheckpoint>, String> {
        let factory = self.storage.stream_factory(id).map_err(|e| e.to_string())?;
        let new_stream = || {
            if self.store.is_enabled() {
                primary_and_local(factory.as_ref(), StateScope::Exclusive, &self.store.checkpoint_dir(id))
            } else {
                primary_only(factory.as_ref(), StateScope::Exclusive)
            }
            .map_err(|e| e.to_string())
        };
        let cancel = self.coordinator.cancel_token(id);
        let (stream, offsets) =
            self.plugin.snapshot_keyed_cancellable(keyed_view, new_stream()?, &cancel).map_err(|e| e.to_string())?;
        let (keyed, keyed_local) = stream
            .close_and_finalize()
            .map_err(|e| format!("completing the keyed snapshot: {e}"))?
            .into_keyed(offsets)
            .into_parts();
        let (stream, partitions, checksums) = self
            .plugin
            .snapshot_operator_cancellable(operator_view, new_stream()?, &cancel)
            .map_err(|e| e.to_string())?;
        let (operator, operator_local) = stream
            .close_and_finalize()
            .map_err(|e| format!("completing the operator snapshot: {e}"))?
            .map(|stream| OperatorStateHandle::new(partitions.clone(), stream).with_checksums(checksums.clone()))
            .into_parts();
        let primary = SubtaskState { keyed, operator };
        // Stored (or, if partial, deleted) before acknowledging: once the checkpoint completes,
        // its local copy must already be registered.
        self.store.store_copy_of(id, &primary, keyed_local, operator_local);
        self.coordinator.acknowledge(id, self.index, primary).map_err(|e| e.to_string())
    }
}
