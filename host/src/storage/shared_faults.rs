//! The shared-state registry under faults: a job whose checkpoints share objects (a subtask
//! whose state did not change refers to the object its previous checkpoint wrote, as
//! incremental checkpoints do) runs a schedule of completions, aborts and out-of-order
//! completions over a store that crashes at a chosen mutating operation. After a restart
//! (start-up cleanup and sweep over the surviving objects) every object a completed
//! checkpoint refers to exists and verifies, no shared object is left that none refers to,
//! and no completion reported before the crash is lost. Without a crash the shared area is
//! exact at the end of the run itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use proptest::prelude::*;

use super::backend::install_memory_store;
use super::fault::CrashingStore;
use super::{CheckpointStorage, S3Settings, StorageLocation, SubtaskState};
use crate::coordinator::{AbortReason, CheckpointCoordinator, CoordinatorConfig};
use crate::handles::{
    DistributionMode, KeyGroupRangeOffsets, KeyGroupsStateHandle, OperatorStateHandle, PartitionInfo, StreamStateHandle,
};
use crate::key_groups::KeyGroupRange;
use crate::streams::StateScope;

const PARALLELISM: u32 = 2;

#[derive(Debug, Clone)]
enum Step {
    /// Both subtasks acknowledge; each reuses its last completed shared object or writes a new one.
    Complete { reuse: [bool; 2] },
    /// Subtask 0 acknowledges, the checkpoint aborts, subtask 1 acknowledges late.
    AbortMidway { reuse: [bool; 2] },
    /// Two checkpoints in flight; the newer completes first, the older's last ack comes after.
    OutOfOrder { reuse: [bool; 2] },
}

fn step() -> impl Strategy<Value = Step> {
    let reuse = any::<[bool; 2]>();
    prop_oneof![
        3 => reuse.prop_map(|reuse| Step::Complete { reuse }),
        1 => reuse.prop_map(|reuse| Step::AbortMidway { reuse }),
        1 => reuse.prop_map(|reuse| Step::OutOfOrder { reuse }),
    ]
}

/// The coordinator of a two-subtask job keeping `retained` checkpoints, two in flight at most.
fn config(retained: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        job_id: "job".into(),
        parallelism: PARALLELISM,
        max_parallelism: 8,
        plugin: crate::coordinator::tests::plugin_info(),
        retained,
        max_concurrent: 2,
        min_pause: Duration::ZERO,
    }
}

struct Job {
    storage: CheckpointStorage,
    coordinator: CheckpointCoordinator,
    next_id: u64,
    /// Each subtask's keyed stream in the newest checkpoint it saw complete: its "base".
    base: [Option<StreamStateHandle>; 2],
    /// Completions the coordinator reported.
    reported: Vec<u64>,
}

fn write(storage: &CheckpointStorage, id: u64, scope: StateScope, bytes: &[u8]) -> Option<StreamStateHandle> {
    let mut out = storage.stream_factory(id).ok()?.create_output_stream(scope).ok()?;
    out.write(bytes).ok()?;
    out.close_and_get_handle().ok()
}

impl Job {
    fn open(name: &str, retained: usize) -> Option<Job> {
        let location = StorageLocation::parse(&format!("memory://{name}")).unwrap();
        let storage = CheckpointStorage::open(&location, &S3Settings::default(), "job", 0).ok()?;
        let completed = storage.completed_checkpoint_ids().ok()?;
        let coordinator = CheckpointCoordinator::new(config(retained), storage.clone(), Vec::new(), completed);
        Some(Job { storage, coordinator, next_id: 1, base: [None, None], reported: Vec::new() })
    }

    /// Subtask `subtask`'s state for checkpoint `id`: its base's shared object again, or a new
    /// one; plus an exclusive operator stream. `None` when the store failed.
    fn state(&self, id: u64, subtask: usize, reuse: bool) -> Option<SubtaskState> {
        let keyed = match (&self.base[subtask], reuse) {
            (Some(base), true) => base.clone(),
            _ => write(&self.storage, id, StateScope::Shared, format!("keyed {id}/{subtask}").as_bytes())?,
        };
        let operator = write(&self.storage, id, StateScope::Exclusive, format!("operator {id}/{subtask}").as_bytes())?;
        let range = KeyGroupRange::new(subtask as u32 * 4, subtask as u32 * 4 + 3);
        let offsets = Arc::new(KeyGroupRangeOffsets::new(range, vec![0; 4]).unwrap());
        let partitions = [("s".to_string(), PartitionInfo { offsets: vec![0], mode: DistributionMode::Union })];
        Some(SubtaskState {
            keyed: Some(KeyGroupsStateHandle::new(offsets, keyed)),
            operator: Some(OperatorStateHandle::new(partitions.into_iter().collect(), operator)),
            keyed_chain: None,
        })
    }

    fn ack(&mut self, id: u64, subtask: u32, state: Option<SubtaskState>) {
        let Some(state) = state else {
            self.coordinator.abort(id, AbortReason::Failed("writing state failed".into()));
            return;
        };
        if let Ok(Some(done)) = self.coordinator.acknowledge(id, subtask, state) {
            self.reported.push(id);
            for (s, base) in self.base.iter_mut().enumerate() {
                *base = done.metadata.subtasks[s].keyed.as_ref().map(|h| h.stream().clone());
            }
        }
    }

    fn trigger(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.coordinator.trigger(id, id * 10);
        id
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Complete { reuse } => {
                let id = self.trigger();
                for s in 0..PARALLELISM {
                    let state = self.state(id, s as usize, reuse[s as usize]);
                    self.ack(id, s, state);
                }
            }
            Step::AbortMidway { reuse } => {
                let id = self.trigger();
                let first = self.state(id, 0, reuse[0]);
                self.ack(id, 0, first);
                self.coordinator.abort(id, AbortReason::Failed("declined".into()));
                let late = self.state(id, 1, reuse[1]);
                self.ack(id, 1, late);
            }
            Step::OutOfOrder { reuse } => {
                let older = self.trigger();
                let newer = self.trigger();
                let first = self.state(older, 0, reuse[0]);
                self.ack(older, 0, first);
                for s in 0..PARALLELISM {
                    let state = self.state(newer, s as usize, reuse[s as usize]);
                    self.ack(newer, s, state);
                }
                let late = self.state(older, 1, reuse[1]);
                self.ack(older, 1, late);
            }
        }
    }
}

/// Every completed checkpoint's objects exist and verify; the shared area holds exactly the
/// objects completed checkpoints refer to. Returns the completed ids.
fn check_storage(storage: &CheckpointStorage) -> Result<Vec<u64>, String> {
    let ids = storage.completed_checkpoint_ids().map_err(|e| e.to_string())?;
    let mut referenced = BTreeSet::new();
    for &id in &ids {
        let metadata = storage.read_metadata(id).map_err(|e| format!("checkpoint {id}: {e}"))?;
        for stream in metadata.subtasks.iter().flat_map(SubtaskState::streams) {
            stream.verify().map_err(|e| format!("checkpoint {id} refers to a missing or damaged object: {e}"))?;
        }
        referenced.extend(metadata.shared_objects());
    }
    let present: BTreeSet<String> = storage.shared_objects().map_err(|e| e.to_string())?.into_iter().collect();
    if present != referenced {
        let leaked: Vec<_> = present.difference(&referenced).collect();
        let missing: Vec<_> = referenced.difference(&present).collect();
        return Err(format!("shared area: leaked {leaked:?}, missing {missing:?}"));
    }
    Ok(ids)
}

/// Runs `steps` over a store crashing at mutation `fail_at`, restarts and checks. Returns the
/// number of mutations the run attempted.
fn crash_and_restart(name: &str, retained: usize, steps: &[Step], fail_at: usize) -> Result<usize, String> {
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let crashing = Arc::new(CrashingStore::new(inner.clone(), fail_at));
    install_memory_store(name, crashing.clone());
    let reported = match Job::open(name, retained) {
        Some(mut job) => {
            for step in steps {
                job.run(step);
            }
            if !crashing.crashed() {
                // No crash: exact without any sweep.
                check_storage(&job.storage).map_err(|e| format!("without a crash: {e}"))?;
            }
            job.reported
        }
        None => Vec::new(),
    };
    // Restart on what the store holds, as the host starts: incomplete checkpoints, then the sweep.
    install_memory_store(name, inner);
    let location = StorageLocation::parse(&format!("memory://{name}")).unwrap();
    let storage = CheckpointStorage::open(&location, &S3Settings::default(), "job", 0).map_err(|e| e.to_string())?;
    storage.remove_incomplete().map_err(|e| e.to_string())?;
    storage.sweep_shared().map_err(|e| e.to_string())?;
    let ids = check_storage(&storage).map_err(|e| format!("crash at mutation {fail_at}: {e}"))?;
    if let Some(&last) = reported.last() {
        if ids.last().is_none_or(|&newest| newest < last) {
            return Err(format!(
                "crash at mutation {fail_at}: checkpoint {last} was reported complete, storage has {ids:?}"
            ));
        }
    }
    // The restarted job goes on sharing and retiring exactly.
    let mut job = Job::open(name, retained).ok_or("reopening failed")?;
    job.next_id = ids.last().map_or(1, |id| id + 1);
    for reuse in [[true, false], [false, true], [true, true]] {
        job.run(&Step::Complete { reuse });
    }
    check_storage(&job.storage).map_err(|e| format!("after restart from a crash at mutation {fail_at}: {e}"))?;
    Ok(crashing.mutations())
}

fn schedule() -> Vec<Step> {
    use Step::*;
    vec![
        Complete { reuse: [false, false] },
        Complete { reuse: [true, false] },
        AbortMidway { reuse: [true, true] },
        Complete { reuse: [true, true] },
        OutOfOrder { reuse: [true, false] },
        Complete { reuse: [false, true] },
        AbortMidway { reuse: [false, false] },
        Complete { reuse: [true, true] },
    ]
}

#[test]
fn a_crash_at_every_mutation_never_deletes_a_referenced_object_or_leaks_one_past_restart() {
    for retained in [1, 2] {
        let name = format!("shared-every-step-{retained}");
        let total = crash_and_restart(&name, retained, &schedule(), usize::MAX).unwrap();
        assert!(total > 40, "the schedule should exercise many mutations, got {total}");
        for fail_at in 0..total {
            crash_and_restart(&name, retained, &schedule(), fail_at).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random schedules crashing at a random point (or never).
    #[test]
    fn random_schedules_and_crash_points_keep_shared_state_exact(
        steps in proptest::collection::vec(step(), 1..12),
        retained in 1usize..4,
        crash in proptest::option::of(0usize..120),
    ) {
        let name = format!("shared-random-{}", uuid::Uuid::new_v4().simple());
        crash_and_restart(&name, retained, &steps, crash.unwrap_or(usize::MAX)).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn a_directory_primary_shares_and_retires_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let location = StorageLocation::Directory(dir.path().join("ckpt"));
    let storage = CheckpointStorage::open(&location, &S3Settings::default(), "job", 0).unwrap();
    let coordinator = CheckpointCoordinator::new(config(2), storage.clone(), Vec::new(), []);
    let mut job = Job { storage: storage.clone(), coordinator, next_id: 1, base: [None, None], reported: Vec::new() };
    for step in schedule() {
        job.run(&step);
        check_storage(&storage).unwrap();
    }
    assert!(!storage.shared_objects().unwrap().is_empty());
    // A leftover of a crashed upload is swept at start-up; referenced objects stay.
    std::fs::write(dir.path().join("ckpt/job/shared/leftover"), b"x").unwrap();
    assert_eq!(storage.sweep_shared().unwrap(), vec!["shared/leftover".to_string()]);
    check_storage(&storage).unwrap();
}

#[test]
fn unreadable_metadata_stops_the_sweep_and_every_deletion_of_shared_state() {
    let dir = tempfile::tempdir().unwrap();
    let location = StorageLocation::Directory(dir.path().join("ckpt"));
    let storage = CheckpointStorage::open(&location, &S3Settings::default(), "job", 0).unwrap();
    let coordinator = CheckpointCoordinator::new(config(5), storage.clone(), Vec::new(), []);
    let mut job = Job { storage: storage.clone(), coordinator, next_id: 1, base: [None, None], reported: Vec::new() };
    for _ in 0..3 {
        job.run(&Step::Complete { reuse: [false, false] });
    }
    let before = storage.shared_objects().unwrap();
    assert_eq!(before.len(), 6);
    // Checkpoint 1's metadata is damaged: what it refers to is unknown from now on.
    let metadata = dir.path().join("ckpt/job/chk-1/_metadata");
    let mut bytes = std::fs::read(&metadata).unwrap();
    bytes[8] ^= 0x40;
    std::fs::write(&metadata, bytes).unwrap();
    std::fs::write(dir.path().join("ckpt/job/shared/leftover"), b"x").unwrap();
    assert!(storage.sweep_shared().unwrap().is_empty());
    // A job started now retires checkpoints 2 and 3 but deletes none of their shared objects.
    let coordinator = CheckpointCoordinator::new(config(1), storage.clone(), Vec::new(), [1, 2, 3]);
    let mut job = Job { storage: storage.clone(), coordinator, next_id: 4, base: [None, None], reported: Vec::new() };
    job.run(&Step::Complete { reuse: [false, false] });
    let after: BTreeSet<String> = storage.shared_objects().unwrap().into_iter().collect();
    assert!(before.iter().all(|o| after.contains(o)), "{before:?} {after:?}");
}
