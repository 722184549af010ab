//! A keyed counting job over parallel subtasks, with checkpoints through a strategy plugin,
//! task-local recovery and injected failures. It is the demo's job and the harness for the
//! end-to-end recovery tests.
//!
//! A deterministic source emits events (keys); each goes to the subtask owning its key group,
//! which counts events per key in a value state `count`. Every `checkpoint_interval` events
//! the source injects a barrier into every subtask's input; a subtask that receives it takes
//! a point-in-time view of its state (the synchronous phase) and snapshots it through the
//! plugin on another thread (the asynchronous phase) while it keeps counting. An attempt that
//! fails is recovered by restoring every subtask from the latest completed checkpoint and
//! replaying the source from that checkpoint's offset: the final counts equal a failure-free
//! run's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{KeyedStateBackend, StateKind, StateValue};
use crate::config::Config;
use crate::coordinator::{CheckpointCoordinator, CompletedCheckpoint, CoordinatorConfig};
use crate::directories::LocalRecoveryDirectoryProvider;
use crate::key_groups::{key_group_for_key, operator_for_key_group, range_for_operator};
use crate::local_store::{LocalSnapshot, TaskLocalStateStore};
use crate::restore::{restore_keyed, RestoreSource};
use crate::result_provider::{primary_and_local, primary_only};
use crate::runtime::Plugin;
use crate::storage::{CheckpointMetadata, FileCheckpointStorage, SubtaskState};
use crate::streams::{FileStreamFactory, StateScope};

/// The name of the counting state.
pub const COUNT_STATE: &str = "count";

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

/// The key of event `index`: a deterministic function of the index, so any prefix of the
/// stream can be replayed and its counts recomputed.
pub fn event_key(index: u64, keys: u64) -> Vec<u8> {
    let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("key-{}", z % keys.max(1)).into_bytes()
}

/// The counts of a failure-free run over events `0..events`.
pub fn expected_counts(events: u64, keys: u64) -> BTreeMap<Vec<u8>, u64> {
    let mut counts = BTreeMap::new();
    for i in 0..events {
        *counts.entry(event_key(i, keys)).or_insert(0) += 1;
    }
    counts
}

/// The counts held by a set of backends.
pub fn counts_of(backends: &[KeyedStateBackend]) -> BTreeMap<Vec<u8>, u64> {
    let mut counts = BTreeMap::new();
    for b in backends {
        if let Some((_, rows)) = b.contents().remove(COUNT_STATE) {
            for ((key, _), value) in rows {
                if let StateValue::Value(v) = value {
                    counts.insert(
                        key,
                        u64::from_le_bytes(v.as_slice().try_into().unwrap_or([0; 8])),
                    );
                }
            }
        }
    }
    counts
}

/// Something that happened during an attempt, for the caller to report.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// A subtask was restored.
    Restored {
        /// The subtask.
        subtask: u32,
        /// Which copy was used.
        source: RestoreSource,
        /// 1-based alternative used.
        alternative: usize,
        /// Number of alternatives.
        alternatives: usize,
        /// Time taken.
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
        /// The subtasks' final state.
        backends: Vec<KeyedStateBackend>,
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
        source: crate::restore::RestoreError,
    },
    /// A subtask thread died.
    #[error("subtask {0} failed: {1}")]
    Subtask(u32, String),
}

enum Input {
    Record(Vec<u8>),
    Barrier(u64),
    Fail,
    End,
}

/// Runs the job's attempts against its storage and local state.
#[derive(Debug)]
pub struct JobRunner {
    spec: JobSpec,
    plugin: Arc<Plugin>,
    storage: FileCheckpointStorage,
    next_checkpoint: u64,
}

impl JobRunner {
    /// Prepares the job: opens storage, removes checkpoints that never completed.
    pub fn new(spec: JobSpec, plugin: Arc<Plugin>) -> Result<Self, JobError> {
        let setup = |e: &dyn std::fmt::Display| JobError::Setup(e.to_string());
        range_for_operator(spec.max_parallelism, spec.parallelism, 0).map_err(|e| setup(&e))?;
        if spec.checkpoint_interval == 0 {
            return Err(JobError::Setup(
                "the checkpoint interval must be at least 1 event".into(),
            ));
        }
        let storage = FileCheckpointStorage::new(
            &spec.config.checkpoint_dir,
            &spec.job_id,
            FileStreamFactory::DEFAULT_INLINE_THRESHOLD,
        )
        .map_err(|e| setup(&e))?;
        let removed = storage.remove_incomplete().map_err(|e| setup(&e))?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed checkpoints that never completed");
        }
        let next_checkpoint = storage
            .completed_checkpoint_ids()
            .map_err(|e| setup(&e))?
            .last()
            .map_or(1, |id| id + 1);
        Ok(JobRunner {
            spec,
            plugin,
            storage,
            next_checkpoint,
        })
    }

    /// The job's storage.
    pub fn storage(&self) -> &FileCheckpointStorage {
        &self.storage
    }

    /// The spec.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// Where local state lives.
    pub fn local_roots(&self) -> Vec<PathBuf> {
        self.spec.config.local_recovery.root_dirs.clone()
    }

    fn open_local_stores(&self) -> Result<Vec<Arc<TaskLocalStateStore>>, JobError> {
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
                .map_err(|e| JobError::Setup(e.to_string()))?;
                Ok(Arc::new(TaskLocalStateStore::open(provider, local.enabled)))
            })
            .collect()
    }

    /// Restores every subtask from `metadata` (or starts empty) and returns their backends.
    pub fn restore(
        &self,
        metadata: Option<&CheckpointMetadata>,
        stores: &[Arc<TaskLocalStateStore>],
        events: &Sender<JobEvent>,
    ) -> Result<Vec<KeyedStateBackend>, JobError> {
        let (p, m) = (self.spec.parallelism, self.spec.max_parallelism);
        let mut backends = Vec::new();
        for i in 0..p {
            let range = range_for_operator(m, p, i).map_err(|e| JobError::Setup(e.to_string()))?;
            let mut backend = match metadata {
                None => {
                    KeyedStateBackend::new(m, range).map_err(|e| JobError::Setup(e.to_string()))?
                }
                Some(meta) => {
                    if meta.max_parallelism != m {
                        return Err(JobError::Restore {
                            subtask: i,
                            source: crate::restore::RestoreError::MaxParallelismMismatch {
                                checkpoint: meta.checkpoint_id,
                                found: meta.max_parallelism,
                                expected: m,
                            },
                        });
                    }
                    // Local copies are per subtask of the old parallelism: with another
                    // parallelism the ranges differ and restore_keyed uses the primary.
                    let store = stores.get(i as usize).map(Arc::as_ref);
                    let r = restore_keyed(&self.plugin, meta, range, store)
                        .map_err(|source| JobError::Restore { subtask: i, source })?;
                    let _ = events.send(JobEvent::Restored {
                        subtask: i,
                        source: r.source,
                        alternative: r.alternative,
                        alternatives: r.alternatives,
                        duration: r.duration,
                    });
                    r.backend
                }
            };
            backend
                .register_state(COUNT_STATE, StateKind::Value)
                .map_err(|e| JobError::Setup(e.to_string()))?;
            backends.push(backend);
        }
        Ok(backends)
    }

    /// Runs one attempt: restore from the latest completed checkpoint, replay the source from
    /// its offset, checkpoint every interval, until the source ends or a failure is injected.
    pub fn run_attempt(
        &mut self,
        options: AttemptOptions,
        events: &Sender<JobEvent>,
    ) -> Result<AttemptOutcome, JobError> {
        let latest = self
            .storage
            .latest_completed()
            .map_err(|e| JobError::Setup(e.to_string()))?;
        let stores = self.open_local_stores()?;
        let backends = self.restore(latest.as_ref(), &stores, events)?;
        let start = latest.as_ref().map_or(0, |m| m.source_offset);
        if let Some(m) = &latest {
            self.next_checkpoint = self.next_checkpoint.max(m.checkpoint_id + 1);
        }
        let coordinator = Arc::new(
            CheckpointCoordinator::new(
                CoordinatorConfig {
                    job_id: self.spec.job_id.clone(),
                    parallelism: self.spec.parallelism,
                    max_parallelism: self.spec.max_parallelism,
                    plugin: self.plugin.info().clone(),
                    retained: self.spec.config.retained_checkpoints,
                },
                self.storage.clone(),
                stores.clone(),
            )
            .map_err(|e| JobError::Setup(e.to_string()))?,
        );

        let pauses: Pauses = Arc::default();
        let mut inputs: Vec<SyncSender<Input>> = Vec::new();
        let mut threads: Vec<JoinHandle<Result<KeyedStateBackend, String>>> = Vec::new();
        for (i, backend) in backends.into_iter().enumerate() {
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
                .spawn(move || ctx.run(backend, rx))
                .map_err(|e| JobError::Setup(e.to_string()))?;
            threads.push(handle);
        }

        let (p, m) = (self.spec.parallelism, self.spec.max_parallelism);
        let mut failed_at = None;
        for offset in start..self.spec.events {
            if offset > start && offset % self.spec.checkpoint_interval == 0 {
                let id = self.next_checkpoint;
                self.next_checkpoint += 1;
                coordinator.trigger(id, offset);
                for tx in &inputs {
                    let _ = tx.send(Input::Barrier(id));
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
        let last = if failed_at.is_some() {
            Input::Fail
        } else {
            Input::End
        };
        for tx in &inputs {
            let _ = tx.send(match last {
                Input::Fail => Input::Fail,
                _ => Input::End,
            });
        }
        let mut finals = Vec::new();
        let mut thread_error = None;
        for (i, t) in threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(b)) => finals.push(b),
                Ok(Err(e)) if failed_at.is_some() => tracing::debug!(subtask = i, "{e}"),
                Ok(Err(e)) => thread_error = Some(JobError::Subtask(i as u32, e)),
                Err(_) => {
                    thread_error = Some(JobError::Subtask(
                        i as u32,
                        "the subtask thread panicked".into(),
                    ))
                }
            }
        }
        // Checkpoints still pending now can never complete.
        for id in coordinator.pending_ids() {
            coordinator.abort(
                id,
                if failed_at.is_some() {
                    "task failure"
                } else {
                    "job finished before the checkpoint completed"
                },
            );
            let _ = events.send(JobEvent::Aborted {
                checkpoint_id: id,
                reason: "pending when the attempt ended".into(),
            });
        }
        if let Some(e) = thread_error {
            return Err(e);
        }
        Ok(match failed_at {
            Some(at) => AttemptOutcome::Failed { at },
            None => AttemptOutcome::Finished { backends: finals },
        })
    }

    /// Discards the job's local state everywhere (as when the machine holding it is lost).
    pub fn delete_local_state(&self) -> std::io::Result<()> {
        for store in self
            .open_local_stores()
            .map_err(|e| std::io::Error::other(e.to_string()))?
        {
            store.dispose();
        }
        Ok(())
    }
}

struct SubtaskContext {
    index: u32,
    plugin: Arc<Plugin>,
    storage: FileCheckpointStorage,
    store: Arc<TaskLocalStateStore>,
    coordinator: Arc<CheckpointCoordinator>,
    events: Sender<JobEvent>,
    pauses: Pauses,
}

/// The longest synchronous pause per checkpoint over all subtasks. Every subtask records its
/// pause before its asynchronous phase starts, so all are in by the time the checkpoint
/// completes.
type Pauses = Arc<std::sync::Mutex<BTreeMap<u64, Duration>>>;

impl SubtaskContext {
    fn run(
        self,
        mut backend: KeyedStateBackend,
        input: Receiver<Input>,
    ) -> Result<KeyedStateBackend, String> {
        let count = backend
            .state_index(COUNT_STATE)
            .map_err(|e| e.to_string())?;
        let mut snapshots: Vec<JoinHandle<()>> = Vec::new();
        let ctx = Arc::new(self);
        let result = loop {
            match input.recv() {
                Ok(Input::Record(key)) => {
                    let n = backend
                        .get(count, &key, b"")
                        .map_err(|e| e.to_string())?
                        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
                    backend
                        .put(count, &key, b"", &(n + 1).to_le_bytes())
                        .map_err(|e| e.to_string())?;
                }
                Ok(Input::Barrier(id)) => {
                    // Synchronous phase: a point-in-time view, O(key groups), no copying.
                    let started = Instant::now();
                    let view = backend.snapshot();
                    let pause = started.elapsed();
                    {
                        let mut pauses = ctx.pauses.lock().expect("pauses lock");
                        let max = pauses.entry(id).or_default();
                        *max = (*max).max(pause);
                    }
                    let task = ctx.clone();
                    snapshots.push(std::thread::spawn(move || task.snapshot(id, view)));
                }
                Ok(Input::Fail) => {
                    break Err(format!("subtask {}: injected task failure", ctx.index))
                }
                Ok(Input::End) | Err(_) => break Ok(()),
            }
        };
        for s in snapshots {
            let _ = s.join();
        }
        result.map(|()| backend)
    }

    /// Asynchronous phase of checkpoint `id`.
    fn snapshot(&self, id: u64, view: crate::backend::KeyedSnapshot) {
        let result = (|| -> Result<Option<CompletedCheckpoint>, String> {
            let factory = self.storage.stream_factory(id).map_err(|e| e.to_string())?;
            let stream = if self.store.is_enabled() {
                primary_and_local(
                    &factory,
                    StateScope::Exclusive,
                    &self.store.checkpoint_dir(id),
                )
            } else {
                primary_only(&factory, StateScope::Exclusive)
            }
            .map_err(|e| e.to_string())?;
            let (stream, offsets) = self
                .plugin
                .snapshot_keyed(view, stream)
                .map_err(|e| e.to_string())?;
            let (primary, local) = stream
                .close_and_finalize()
                .map_err(|e| format!("completing the snapshot: {e}"))?
                .into_keyed(offsets)
                .into_parts();
            if let Some(local) = local {
                // Stored before acknowledging: once the checkpoint completes, its local copy
                // must already be registered.
                if let Err(e) = self.store.store(
                    id,
                    LocalSnapshot {
                        keyed: Some(local),
                        operator: None,
                    },
                ) {
                    tracing::warn!(checkpoint = id, error = %e, "could not store the local snapshot; the checkpoint goes on without it");
                    self.store.abort(id);
                }
            }
            self.coordinator
                .acknowledge(
                    id,
                    self.index,
                    SubtaskState {
                        keyed: primary,
                        operator: None,
                    },
                )
                .map_err(|e| e.to_string())
        })();
        match result {
            Ok(Some(done)) => {
                let max_sync_pause = self
                    .pauses
                    .lock()
                    .expect("pauses lock")
                    .remove(&id)
                    .unwrap_or_default();
                let _ = self.events.send(JobEvent::Completed {
                    checkpoint_id: id,
                    size: done.metadata.state_size(),
                    duration: done.duration,
                    max_sync_pause,
                });
            }
            Ok(None) => {}
            Err(reason) => {
                self.coordinator.abort(id, &reason);
                let _ = self.events.send(JobEvent::Aborted {
                    checkpoint_id: id,
                    reason,
                });
            }
        }
    }
}
