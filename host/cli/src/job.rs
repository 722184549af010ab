//! A keyed counting job over parallel subtasks, with checkpoints through a strategy plugin,
//! task-local recovery and injected failures. It is the demo's job and the harness for the
//! end-to-end recovery tests, and it is written against the `snapshot_host` facade alone (the
//! crate root's re-exports): whatever it needs, an embedder has too.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use snapshot_host::{
    AbortReason, CancelToken, CheckpointBarrier, CheckpointMetadata, CheckpointStats, CheckpointStorage, Config,
    Coordinator, DistributionMode, ErrorKind, KeyedStateBackend, OperatorStateBackend, Plugin, Recovery, RestoreSource,
    SnapshotHost, StateKind, StateValue, Subtask,
};

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
        /// With incremental checkpoints: key groups written as deltas, of all written.
        delta_groups: Option<(usize, usize)>,
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
        checkpoints: CheckpointStats,
    },
    /// A task failure was injected at this offset.
    Failed {
        /// The offset.
        at: u64,
    },
    /// Stopped from outside (a signal) at this offset: checkpoints in flight were aborted and
    /// their files removed; what completed before stays.
    Stopped {
        /// The offset.
        at: u64,
        /// What set the stop flag (a signal number).
        by: usize,
        /// The newest checkpoint that completed, if any did in this attempt or before it.
        last_completed: Option<CheckpointMetadata>,
    },
}

/// Errors of running the job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's settings are invalid.
    #[error("job set-up: {0}")]
    Setup(String),
    /// The snapshot host failed (set-up, restore, storage); the cause is its source.
    #[error(transparent)]
    Host(#[from] snapshot_host::Error),
    /// A subtask failed.
    #[error("subtask {subtask} failed")]
    Subtask {
        /// The subtask.
        subtask: u32,
        /// The cause.
        #[source]
        source: snapshot_host::Error,
    },
    /// The plugin cannot keep a kind of state the job keeps: refused before the job starts.
    #[error("plugin {plugin} cannot keep the job's {what}, so no checkpoint of this job could complete: {reason}")]
    PluginUnfit {
        /// The plugin's described name.
        plugin: String,
        /// The kind of state, with the job's states of that kind.
        what: &'static str,
        /// What the pre-flight snapshot found.
        reason: String,
    },
    /// A subtask thread panicked.
    #[error("subtask {0} panicked")]
    Panicked(u32),
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

impl JobError {
    /// Whether the job refused to start because checkpoints exist but none can be restored.
    pub fn is_unrestorable(&self) -> bool {
        matches!(self, JobError::Host(e) if e.kind() == ErrorKind::Corrupt && e.to_string().contains("none can be restored"))
    }
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
    /// Newer checkpoints that could not be restored, and why.
    pub skipped: Vec<(u64, String)>,
}

enum Input {
    Record(Vec<u8>),
    Barrier(CheckpointBarrier),
    Fail,
    End,
}

/// A subtask's restored state: keyed and operator.
pub type SubtaskBackends = (KeyedStateBackend, OperatorStateBackend);

/// Runs the job's attempts against its storage and local state.
#[derive(Debug)]
pub struct JobRunner {
    spec: JobSpec,
    host: SnapshotHost,
}

impl JobRunner {
    /// Prepares the job: opens storage, removes checkpoints that never completed and the local
    /// state of allocations this process does not own.
    pub fn new(spec: JobSpec, plugin: Arc<Plugin>) -> Result<Self, JobError> {
        if spec.checkpoint_interval == 0 {
            return Err(JobError::Setup("the checkpoint interval must be at least 1 event".into()));
        }
        let capabilities = plugin.probe_capabilities();
        for (what, result) in [
            ("keyed state (value state `count`)", capabilities.keyed),
            ("operator state (list states `processed` and `job`)", capabilities.operator),
        ] {
            if let Err(reason) = result {
                return Err(JobError::PluginUnfit { plugin: plugin.info().name.clone(), what, reason });
            }
        }
        let host = SnapshotHost::builder(spec.job_id.clone())
            .config(spec.config.clone())
            .plugin(plugin)
            .parallelism(spec.parallelism)
            .max_parallelism(spec.max_parallelism)
            .allocation_id(spec.allocation_id.clone())
            .operator_id("counter")
            .build()?;
        let removed = host.remove_foreign_local_state();
        if !removed.is_empty() {
            tracing::info!(?removed, "deleted local state of unknown allocations");
        }
        Ok(JobRunner { spec, host })
    }

    /// The job's checkpoint storage.
    pub fn storage(&self) -> &CheckpointStorage {
        self.host.checkpoints()
    }

    /// The snapshot host the job runs on.
    pub fn host(&self) -> &SnapshotHost {
        &self.host
    }

    /// The spec.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The job description kept in the broadcast state.
    pub fn job_description(&self) -> String {
        format!("job={} keys={} events={}", self.spec.job_id, self.spec.keys, self.spec.events)
    }

    /// What a starting job would restore, changing nothing on disk; with `local_copies` the
    /// subtasks' local copies are offered first, as on a start.
    pub fn find_restorable(&self, local_copies: bool, cancel: &CancelToken) -> Result<RestoredJob, JobError> {
        let recovery = self.host.inspect_newest(local_copies, cancel)?;
        self.restored_job(recovery).map(|(job, _, _)| job)
    }

    fn restored_job(&self, recovery: Recovery) -> Result<(RestoredJob, Vec<Subtask>, Coordinator), JobError> {
        let Recovery { checkpoint, skipped, subtasks, coordinator } = recovery;
        let mut states = Vec::new();
        let mut handles = Vec::new();
        let mut events = Vec::new();
        for mut s in subtasks {
            if checkpoint.is_some() {
                let r = &s.report;
                events.push(JobEvent::Restored {
                    subtask: s.subtask.index(),
                    source: r.source,
                    alternative: r.alternative,
                    alternatives: r.alternatives,
                    operator_source: r.operator_source,
                    duration: r.duration,
                });
            }
            s.keyed.register_state(COUNT_STATE, StateKind::Value).map_err(snapshot_host::Error::from)?;
            self.init_operator_state(&mut s.operators)?;
            states.push((s.keyed, s.operators));
            handles.push(s.subtask);
        }
        let skipped = skipped.iter().map(|(id, e)| (*id, e.display_chain())).collect();
        Ok((RestoredJob { checkpoint, subtasks: states, events, skipped }, handles, coordinator))
    }

    fn init_operator_state(&self, operators: &mut OperatorStateBackend) -> snapshot_host::Result<()> {
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
        self.run_attempt_until(options, events, &AtomicUsize::new(0))
    }

    /// [`run_attempt`](Self::run_attempt), stopping early once `stop` is non-zero (a signal
    /// handler sets it to the signal's number): checkpoints in flight are aborted, so that
    /// their snapshots stop at their next host call and delete what they wrote.
    pub fn run_attempt_until(
        &mut self,
        options: AttemptOptions,
        events: &Sender<JobEvent>,
        stop: &AtomicUsize,
    ) -> Result<AttemptOutcome, JobError> {
        let recovery = self.host.recover()?;
        let (restored, subtasks, coordinator) = self.restored_job(recovery)?;
        for event in restored.events {
            let _ = events.send(event);
        }
        let start = restored.checkpoint.as_ref().map_or(0, |m| m.source_offset);
        let tolerable = self.spec.config.checkpointing.tolerable_failed;

        let pauses: Pauses = Arc::default();
        let mut inputs: Vec<SyncSender<Input>> = Vec::new();
        let mut threads: Vec<JoinHandle<Result<SubtaskBackends, snapshot_host::Error>>> = Vec::new();
        for (subtask, (keyed, operators)) in subtasks.into_iter().zip(restored.subtasks) {
            let (tx, rx) = sync_channel::<Input>(4096);
            inputs.push(tx);
            let ctx = SubtaskContext {
                subtask,
                coordinator: coordinator.clone(),
                events: events.clone(),
                pauses: pauses.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("subtask-{}", ctx.subtask.index()))
                .spawn(move || ctx.run(keyed, operators, rx))
                .map_err(|e| JobError::Setup(format!("starting a subtask thread: {e}")))?;
            threads.push(handle);
        }

        let interval = self.spec.checkpoint_interval;
        let too_many_failures = || {
            let stats = coordinator.stats();
            (stats.consecutive_failed > tolerable).then(|| JobError::TooManyFailedCheckpoints {
                failed: stats.consecutive_failed,
                tolerable,
                last: stats.last_failure.unwrap_or_default(),
            })
        };
        let mut failed_at = None;
        let mut stopped = None;
        let mut job_failure = None;
        // The next checkpoint is due at the next multiple of the interval; when concurrency or
        // the minimum pause holds it back, it is taken as soon as they allow.
        let mut next_due = (start / interval + 1) * interval;
        for offset in start..self.spec.events {
            if offset >= next_due {
                if let Some(barrier) = coordinator.trigger(offset) {
                    for tx in &inputs {
                        let _ = tx.send(Input::Barrier(barrier.clone()));
                    }
                    next_due = (offset / interval + 1) * interval;
                }
            }
            if offset % 1024 == 0 {
                let by = stop.load(Ordering::Relaxed);
                if by != 0 {
                    // Cancel what is in flight first: the subtasks' writers stop sooner.
                    for id in coordinator.abort_pending(AbortReason::Cancelled) {
                        let _ = events
                            .send(JobEvent::Aborted { checkpoint_id: id, reason: AbortReason::Cancelled.to_string() });
                    }
                    stopped = Some((offset, by));
                    failed_at = Some(offset);
                    break;
                }
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
            let target = self.host.subtask_of_key(&key);
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
            let subtask = i as u32;
            match t.join() {
                Ok(Ok(b)) => finals.push(b),
                Ok(Err(e)) if failed_at.is_some() => tracing::debug!(subtask, "{}", e.display_chain()),
                Ok(Err(source)) => thread_error = Some(JobError::Subtask { subtask, source }),
                Err(_) => thread_error = Some(JobError::Panicked(subtask)),
            }
        }
        // Checkpoints still pending now can never complete.
        let reason = match (stopped, failed_at) {
            (Some(_), _) => AbortReason::Cancelled,
            (None, Some(_)) => AbortReason::TaskFailure,
            (None, None) => AbortReason::JobFinished,
        };
        for id in coordinator.abort_pending(reason.clone()) {
            let _ = events.send(JobEvent::Aborted { checkpoint_id: id, reason: reason.to_string() });
        }
        if let Some(e) = thread_error.or(job_failure).or_else(too_many_failures) {
            return Err(e);
        }
        if let Some((at, by)) = stopped {
            let last_completed =
                coordinator.completed().last().and_then(|id| self.host.checkpoints().read_metadata(*id).ok());
            return Ok(AttemptOutcome::Stopped { at, by, last_completed: last_completed.or(restored.checkpoint) });
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
    pub fn delete_local_state(&self) -> snapshot_host::Result<()> {
        self.host.delete_local_state()
    }
}

/// The longest synchronous pause per checkpoint over all subtasks. Every subtask records its
/// pause before its asynchronous phase starts, so all are in by the time the checkpoint
/// completes.
type Pauses = Arc<Mutex<BTreeMap<u64, Duration>>>;

/// Adds `pending` processed events to this subtask's first `processed` counter.
fn fold_processed(operators: &mut OperatorStateBackend, pending: &mut u64) -> snapshot_host::Result<()> {
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
    subtask: Subtask,
    coordinator: Coordinator,
    events: Sender<JobEvent>,
    pauses: Pauses,
}

impl SubtaskContext {
    fn run(
        self,
        mut keyed: KeyedStateBackend,
        mut operators: OperatorStateBackend,
        input: Receiver<Input>,
    ) -> snapshot_host::Result<SubtaskBackends> {
        let count = keyed.state_index(COUNT_STATE)?;
        let mut snapshots: Vec<JoinHandle<()>> = Vec::new();
        // Events processed since the last fold into the `processed` operator state.
        let mut processed = 0u64;
        let mut told = 0u64;
        let ctx = Arc::new(self);
        let result = loop {
            match input.recv() {
                Ok(Input::Record(key)) => {
                    let n = keyed.get(count, &key, b"")?.map_or(0, decode_u64);
                    keyed.put(count, &key, b"", &(n + 1).to_le_bytes())?;
                    processed += 1;
                }
                Ok(Input::Barrier(barrier)) => {
                    // The newest checkpoint that completed, told to this subtask at its next
                    // barrier (Flink's `notifyCheckpointComplete`) so that incremental
                    // snapshots build on it. The barrier carries it: a flag set once the
                    // acknowledging thread got back lagged behind, and the checkpoint after
                    // it was written in full.
                    let newest = barrier.completed_before().unwrap_or(0);
                    if newest > told {
                        ctx.subtask.checkpoint_completed(newest, &mut keyed);
                        told = newest;
                    }
                    // Synchronous phase: point-in-time views, O(key groups), no copying.
                    let started = Instant::now();
                    fold_processed(&mut operators, &mut processed)?;
                    let task = ctx.subtask.snapshot(&barrier, &keyed, &operators);
                    let pause = started.elapsed();
                    let id = barrier.checkpoint_id();
                    {
                        let mut pauses = ctx.pauses.lock().unwrap_or_else(|e| e.into_inner());
                        let max = pauses.entry(id).or_default();
                        *max = (*max).max(pause);
                    }
                    let ctx = ctx.clone();
                    snapshots.push(std::thread::spawn(move || ctx.finish(id, task.run())));
                }
                Ok(Input::Fail) => {
                    let index = ctx.subtask.index();
                    break Err(snapshot_host::Error::msg(
                        ErrorKind::Cancelled,
                        format!("subtask {index}: injected task failure"),
                    ));
                }
                Ok(Input::End) | Err(_) => break Ok(()),
            }
        };
        for s in snapshots {
            let _ = s.join();
        }
        fold_processed(&mut operators, &mut processed)?;
        result.map(|()| (keyed, operators))
    }

    /// The end of the asynchronous phase of checkpoint `id`: acknowledge, or decline.
    fn finish(&self, id: u64, written: snapshot_host::Result<snapshot_host::Acknowledgement>) {
        let outcome = written.and_then(|ack| self.coordinator.acknowledge(ack));
        match outcome {
            Ok(Some(done)) => {
                let max_sync_pause =
                    self.pauses.lock().unwrap_or_else(|e| e.into_inner()).remove(&id).unwrap_or_default();
                let _ = self.events.send(JobEvent::Completed {
                    checkpoint_id: id,
                    size: done.metadata.state_size(),
                    duration: done.duration,
                    max_sync_pause,
                    delta_groups: done.metadata.delta_groups(),
                });
            }
            Ok(None) => {}
            Err(e) => {
                // Only the subtask that aborted the checkpoint reports it: the others' snapshots
                // were merely interrupted by that abort.
                if self.coordinator.decline(id, &e) {
                    let _ = self.events.send(JobEvent::Aborted { checkpoint_id: id, reason: e.display_chain() });
                }
            }
        }
    }
}
