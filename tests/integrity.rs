//! Checkpoint integrity under injected faults: a restore gives back exactly a completed
//! checkpoint, or refuses clearly; it never returns wrong state.
//!
//! - bit flips and truncations at random positions of every kind of file the host writes
//!   (primary state, primary metadata, local state, local metadata), with and without local
//!   copies;
//! - every retained metadata damaged; a damaged newest checkpoint with an intact older one;
//! - a stale local copy from an earlier incarnation under the id of a different primary;
//! - checkpoints completing out of order in a live job;
//! - a restore that amplifies without bound, a restore that is cancelled.
//!
//! The random loops use a fixed seed and a fixed number of trials, so they fit CI's budget
//! and a failure reproduces.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snapshot_host::backend::{KeyedStateBackend, StateKind};
use snapshot_host::config::Config;
use snapshot_host::handles::KeyGroupsStateHandle;
use snapshot_host::key_groups::KeyGroupRange;
use snapshot_host::local_store::LOCAL_METADATA_FILE;
use snapshot_host::restore::RestoreSource;
use snapshot_host::runtime::{CancelToken, Plugin, PluginError, PluginLimits, PluginRuntime};
use snapshot_host::storage::METADATA_FILE;
use snapshot_host::streams::MemoryCheckpointOutputStream;
use snapshot_host_cli::job::{
    counts_of, expected_counts, processed_total, AttemptOptions, AttemptOutcome, JobError, JobEvent, JobRunner,
    JobSpec, RestoredJob,
};

const EVENTS: u64 = 30_000;
const KEYS: u64 = 2_000;

fn plugin() -> Arc<Plugin> {
    let runtime = PluginRuntime::new().unwrap();
    Arc::new(runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap())
}

fn spec(dir: &Path, local: bool, interval: u64) -> JobSpec {
    spec_on(dir, local, interval, suite::Mode { primary: suite::Primary::Directory, incremental: false })
}

fn spec_on(dir: &Path, local: bool, interval: u64, mode: suite::Mode) -> JobSpec {
    let mut config = Config::default();
    mode.configure(&mut config, dir);
    config.local_recovery.enabled = local;
    config.local_recovery.root_dirs = vec![dir.join("local")];
    config.retained_checkpoints = 2;
    JobSpec {
        job_id: "integrity".into(),
        allocation_id: "alloc".into(),
        parallelism: 2,
        max_parallelism: 128,
        events: EVENTS,
        keys: KEYS,
        checkpoint_interval: interval,
        config,
    }
}

fn run(runner: &mut JobRunner, fail_at: Option<u64>) -> (Result<AttemptOutcome, JobError>, Vec<JobEvent>) {
    let (tx, rx) = channel();
    let outcome = runner.run_attempt(AttemptOptions { fail_at }, &tx);
    drop(tx);
    (outcome, rx.iter().collect())
}

/// What a starting job would restore, changing nothing on disk.
fn restorable(spec: JobSpec) -> Result<RestoredJob, JobError> {
    let runner = JobRunner::new(spec, plugin()).unwrap();
    runner.find_restorable(true, &CancelToken::new())
}

/// The restored state is exactly the checkpoint's: every count equals the source's prefix up
/// to its offset, and the operator state counted exactly that many events.
fn assert_exact(restored: &RestoredJob, context: &str) -> u64 {
    let m = restored.checkpoint.as_ref().unwrap_or_else(|| panic!("{context}: started empty"));
    let (actual, expected) = (counts(restored), expected_counts(m.source_offset, KEYS));
    let differing =
        expected.iter().filter(|(k, v)| actual.get(*k) != Some(v)).count() + actual.len().abs_diff(expected.len());
    assert_eq!(differing, 0, "{context}: checkpoint {} restored wrong counts for {differing} keys", m.checkpoint_id);
    let processed: u64 = restored.subtasks.iter().map(|(_, o)| processed_total(std::slice::from_ref(o))).sum();
    assert_eq!(processed, m.source_offset, "{context}: wrong operator state");
    m.checkpoint_id
}

fn counts(restored: &RestoredJob) -> std::collections::BTreeMap<Vec<u8>, u64> {
    restored.subtasks.iter().flat_map(|(k, _)| counts_of(std::slice::from_ref(k))).collect()
}

fn sources(restored: &RestoredJob) -> Vec<RestoreSource> {
    restored
        .events
        .iter()
        .filter_map(|e| if let JobEvent::Restored { source, .. } = e { Some(*source) } else { None })
        .collect()
}

fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            files_below(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PrimaryState,
    PrimaryMetadata,
    LocalState,
    LocalMetadata,
}

fn kind_of(path: &Path) -> Kind {
    let name = path.file_name().unwrap().to_string_lossy();
    let in_local = path.components().any(|c| c.as_os_str() == "local");
    match (in_local, name == METADATA_FILE || name == LOCAL_METADATA_FILE) {
        (false, true) => Kind::PrimaryMetadata,
        (false, false) => Kind::PrimaryState,
        (true, true) => Kind::LocalMetadata,
        (true, false) => Kind::LocalState,
    }
}

/// Defect 1 (primary bytes restored unverified) and the random-fault deliverable: a bit flip
/// or a truncation anywhere in any file the host wrote ends in exact state: the newest
/// checkpoint from whichever copy is intact, or an older checkpoint when the newest has no
/// intact copy left.
///
/// With incremental checkpoints a shared file may belong to both retained checkpoints: with
/// no local copy left, damage to it refuses both, naming the damage, and restores nothing.
fn bit_flips_and_truncations_anywhere_never_restore_wrong_state(mode: suite::Mode) {
    let primary = mode.primary;
    // Every file of a job: its local directories and its primary's objects (on S3: the files
    // the embedded server keeps them in).
    let files_of = |dir: &Path, out: &mut Vec<PathBuf>| {
        files_below(dir, out);
        if primary == suite::Primary::S3 {
            files_below(&primary.overrides(dir).1, out);
        }
    };
    let base = tempfile::tempdir().unwrap();
    let pristine = base.path().join("pristine");
    let mut runner = JobRunner::new(spec_on(&pristine, true, 4_000, mode), plugin()).unwrap();
    suite::complete_checkpoints(&mut runner, 3);
    let ids = runner.storage().completed_checkpoint_ids().unwrap();
    assert_eq!(ids.len(), 2, "two retained checkpoints");
    let newest = ids[1];
    let mut files = Vec::new();
    files_of(&pristine, &mut files);
    let kinds = [Kind::PrimaryState, Kind::PrimaryMetadata, Kind::LocalState, Kind::LocalMetadata];
    for kind in kinds {
        assert!(files.iter().any(|f| kind_of(f) == kind), "no file of kind {kind:?} in {files:?}");
    }

    let mut rng = suite::Rng::new(0x1D_E6_12);
    let trials = 64;
    // The primary file names each checkpoint's state is in (its own and, incremental, shared).
    let referenced: std::collections::BTreeMap<u64, Vec<String>> = ids
        .iter()
        .map(|id| {
            let m = runner.storage().read_metadata(*id).unwrap();
            (*id, m.subtasks.iter().flat_map(|s| s.streams()).filter_map(|h| h.identity().name).collect())
        })
        .collect();
    let shared = referenced[&ids[0]].iter().filter(|n| referenced[&ids[1]].contains(n)).count();
    assert_eq!(shared > 0, mode.incremental, "files shared by both checkpoints exactly when incremental");
    let (mut from_local, mut fell_back, mut from_primary, mut refused) = (0, 0, 0, 0);
    for trial in 0..trials {
        let kind = kinds[trial % kinds.len()];
        let with_local = matches!(kind, Kind::LocalState | Kind::LocalMetadata) || trial % 8 < 4;
        let work = base.path().join(format!("trial-{trial}"));
        suite::copy_tree(&pristine, &work);
        if primary == suite::Primary::S3 {
            suite::copy_tree(&primary.overrides(&pristine).1, &primary.overrides(&work).1);
        }
        if !with_local {
            std::fs::remove_dir_all(work.join("local")).unwrap();
        }
        let mut candidates = Vec::new();
        files_of(&work, &mut candidates);
        candidates.retain(|f| kind_of(f) == kind);
        let victim = candidates[rng.below(candidates.len() as u64) as usize].clone();
        let mut bytes = std::fs::read(&victim).unwrap();
        let how = if rng.below(4) == 0 && bytes.len() > 1 {
            let keep = rng.below(bytes.len() as u64) as usize;
            bytes.truncate(keep);
            format!("truncated to {keep} bytes")
        } else {
            let bit = rng.below(bytes.len() as u64 * 8);
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
            format!("bit {bit} flipped")
        };
        std::fs::write(&victim, &bytes).unwrap();
        let context = format!("trial {trial}: {} {how} (local copies: {with_local})", victim.display());

        // Which retained checkpoints the damaged primary file belongs to.
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        let holders: Vec<u64> = if matches!(kind, Kind::PrimaryState | Kind::PrimaryMetadata) {
            ids.iter()
                .copied()
                .filter(|id| {
                    referenced[id].contains(&name)
                        || victim.components().any(|c| c.as_os_str() == format!("chk-{id}").as_str())
                })
                .collect()
        } else {
            Vec::new()
        };
        let restored = match restorable(spec_on(&work, true, 4_000, mode)) {
            Ok(restored) => restored,
            Err(e) if holders == ids && !with_local => {
                let e = e.to_string();
                assert!(e.contains("checksum") || e.contains("bytes"), "{context}: the cause is not named: {e}");
                refused += 1;
                std::fs::remove_dir_all(&work).unwrap();
                if primary == suite::Primary::S3 {
                    std::fs::remove_dir_all(primary.overrides(&work).1).unwrap();
                }
                continue;
            }
            Err(e) => panic!("{context}: {e}"),
        };
        let id = assert_exact(&restored, &context);
        let damaged_newest_primary = holders.contains(&newest);
        if !damaged_newest_primary {
            assert_eq!(id, newest, "{context}: an intact newest checkpoint was not the one restored");
        }
        if id < newest {
            fell_back += 1;
            let (skipped, why) = &restored.skipped[0];
            assert_eq!(*skipped, newest, "{context}");
            assert!(why.contains("checksum") || why.contains("bytes"), "{context}: the cause is not named: {why}");
        } else if sources(&restored).contains(&RestoreSource::Local) {
            from_local += 1;
        } else {
            from_primary += 1;
        }
        std::fs::remove_dir_all(&work).unwrap();
        if primary == suite::Primary::S3 {
            std::fs::remove_dir_all(primary.overrides(&work).1).unwrap();
        }
    }
    eprintln!("{mode:?}: {trials} faults: {from_local} restored locally, {from_primary} from the primary, {fell_back} fell back, {refused} refused");
    assert!(from_local > 0 && from_primary > 0 && fell_back > 0, "the trials did not cover every path");
}

suite::every_mode!(bit_flips_and_truncations_anywhere_never_restore_wrong_state);

/// Defect 4: with every retained metadata damaged the job started empty at offset 0. Now it
/// refuses, naming each checkpoint and its cause; starting empty needs an explicit setting.
#[test]
fn every_metadata_damaged_refuses_to_start_unless_told_to_start_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), false, 4_000), plugin()).unwrap();
    suite::complete_checkpoints(&mut runner, 3);
    let storage = runner.storage().clone();
    let ids = storage.completed_checkpoint_ids().unwrap();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let path = storage.checkpoint_dir(*id).unwrap().join(METADATA_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
    }
    let mut runner = JobRunner::new(spec(dir.path(), false, 4_000), plugin()).unwrap();
    let e = run(&mut runner, None).0.unwrap_err();
    assert!(e.is_unrestorable(), "{e:?}");
    let message = e.to_string();
    for id in &ids {
        assert!(message.contains(&format!("checkpoint {id}: ")), "{message}");
    }
    assert!(message.contains("checksum mismatch") && message.contains("start-empty-if-unrestorable"), "{message}");
    assert_eq!(storage.completed_checkpoint_ids().unwrap(), ids, "a refusal must change nothing");

    let mut s = spec(dir.path(), false, 4_000);
    s.config.start_empty_if_unrestorable = true;
    let mut runner = JobRunner::new(s, plugin()).unwrap();
    let (outcome, _) = run(&mut runner, None);
    let AttemptOutcome::Finished { backends, .. } = outcome.unwrap() else { panic!("did not finish") };
    assert_eq!(counts_of(&backends), expected_counts(EVENTS, KEYS));
    for id in &ids {
        assert!(
            storage.local_root().unwrap().join(format!("chk-{id}.unrestorable")).exists(),
            "checkpoint {id} was not kept aside"
        );
    }
}

/// Defect 5: a damaged primary state file blocked the restart although an older intact
/// checkpoint was retained, and the error never said "checksum". Now the job falls back,
/// says which file and why, moves the damaged checkpoint aside, and finishes exactly.
#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), false, 4_000), plugin()).unwrap();
    suite::complete_checkpoints(&mut runner, 3);
    let storage = runner.storage().clone();
    let ids = storage.completed_checkpoint_ids().unwrap();
    let newest = *ids.last().unwrap();
    let mut state_files = Vec::new();
    files_below(&storage.checkpoint_dir(newest).unwrap(), &mut state_files);
    state_files.retain(|f| kind_of(f) == Kind::PrimaryState);
    let victim = &state_files[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(victim, bytes).unwrap();

    let restored = restorable(spec(dir.path(), false, 4_000)).unwrap();
    assert_eq!(assert_exact(&restored, "fallback"), ids[0]);
    let (skipped, why) = &restored.skipped[0];
    assert_eq!(*skipped, newest);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(why.contains("checksum mismatch") && why.contains(&name) && why.contains("key group"), "{why}");
    assert_eq!(why.matches("could not restore").count(), 1, "a cause is printed twice: {why}");

    let mut runner = JobRunner::new(spec(dir.path(), false, 4_000), plugin()).unwrap();
    let (outcome, _) = run(&mut runner, None);
    let AttemptOutcome::Finished { backends, .. } = outcome.unwrap() else { panic!("did not finish") };
    assert_eq!(counts_of(&backends), expected_counts(EVENTS, KEYS));
    assert!(storage.local_root().unwrap().join(format!("chk-{newest}.unrestorable")).exists());
}

/// Defect 2: a local copy left by an earlier incarnation (killed before its checkpoint's
/// metadata was written) was restored instead of a different primary checkpoint written
/// later under the same id.
#[test]
fn a_stale_local_copy_never_wins_over_a_different_primary() {
    let dir = tempfile::tempdir().unwrap();
    // Incarnation 1, local recovery on: checkpoints with local copies.
    let mut runner = JobRunner::new(spec(dir.path(), true, 4_000), plugin()).unwrap();
    suite::complete_checkpoints(&mut runner, 2);
    let storage = runner.storage().clone();
    let stale = *storage.completed_checkpoint_ids().unwrap().last().unwrap();
    // The kill: the newest checkpoint's metadata never made it.
    std::fs::remove_file(storage.checkpoint_dir(stale).unwrap().join(METADATA_FILE)).unwrap();
    // Incarnation 2, local recovery off, another interval: it restores `stale - 1` and fails
    // after exactly one new checkpoint, a different checkpoint `stale`.
    let mut runner = JobRunner::new(spec(dir.path(), false, 3_000), plugin()).unwrap();
    suite::complete_checkpoints(&mut runner, 1);
    assert_eq!(*storage.completed_checkpoint_ids().unwrap().last().unwrap(), stale, "the id was not reused");
    // Incarnation 3, local recovery on again: the old local copy of `stale` is still on disk.
    let local_dirs = {
        let mut all = Vec::new();
        files_below(&dir.path().join("local"), &mut all);
        all.iter().filter(|f| f.to_string_lossy().contains(&format!("chk_{stale}"))).count()
    };
    assert!(local_dirs > 0, "the stale local copy is gone; the test would prove nothing");
    let restored = restorable(spec(dir.path(), true, 3_000)).unwrap();
    assert_eq!(assert_exact(&restored, "stale local copy"), stale);
    assert!(sources(&restored).iter().all(|s| *s == RestoreSource::Primary), "{:?}", sources(&restored));
}

/// Defect 3: with many checkpoints in flight completing out of order, the checkpoint reported
/// last as completed was sometimes gone from the primary at the end.
#[test]
fn checkpoints_completing_out_of_order_never_lose_the_newest() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), round % 2 == 0, 1_000);
        s.events = 120_000;
        s.keys = 5_000;
        s.config.retained_checkpoints = 1;
        s.config.checkpointing.max_concurrent = 8;
        let mut runner = JobRunner::new(s, plugin()).unwrap();
        let (outcome, events) = run(&mut runner, None);
        assert!(matches!(outcome.unwrap(), AttemptOutcome::Finished { .. }));
        let completed: Vec<u64> = events
            .iter()
            .filter_map(|e| if let JobEvent::Completed { checkpoint_id, .. } = e { Some(*checkpoint_id) } else { None })
            .collect();
        let newest = *completed.iter().max().expect("checkpoints completed");
        let on_disk = runner.storage().completed_checkpoint_ids().unwrap();
        assert_eq!(on_disk, vec![newest], "round {round}: completed {completed:?}, on disk {on_disk:?}");
        let restored = restorable(runner.spec().clone()).unwrap();
        let m = restored.checkpoint.as_ref().unwrap();
        assert_eq!(m.checkpoint_id, newest);
        assert_eq!(counts(&restored), expected_counts(m.source_offset, 5_000));
    }
}

fn fixture_handle(plugin: &Plugin, mode: &str) -> KeyGroupsStateHandle {
    let mut b = KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let s = b.register_state(&format!("fixture:{mode}"), StateKind::Value).unwrap();
    b.put(s, b"k", b"", b"value").unwrap();
    let (stream, offsets) = plugin.snapshot_keyed(b.snapshot(), Box::new(MemoryCheckpointOutputStream::new())).unwrap();
    KeyGroupsStateHandle::new(Arc::new(offsets), stream.close_and_get_handle().unwrap())
}

/// Defect 10: a strategy could put any amount of state from a tiny snapshot; only the deadline
/// stopped it.
#[test]
fn a_restore_that_amplifies_is_stopped_by_the_amplification_limit() {
    let runtime = PluginRuntime::new().unwrap();
    let bad = runtime.load(&suite::plugin_path("fixture-misbehave"), PluginLimits::default()).unwrap();
    let handle = fixture_handle(&bad, "amplify");
    assert!(handle.state_size() < 10_000);
    let started = Instant::now();
    let e = bad.restore_keyed(&handle, KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap()).unwrap_err();
    assert!(matches!(e, PluginError::Limit { .. }), "{e:?}");
    assert!(e.to_string().contains("plugin.max-amplification"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Allowed a large enough factor, the same restore goes through: the limit is what stopped it.
    let lenient = PluginLimits { max_amplification: u64::MAX, ..PluginLimits::default() };
    let ok = runtime.load(&suite::plugin_path("fixture-misbehave"), lenient).unwrap();
    ok.restore_keyed(&handle, KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap()).unwrap();
}

/// Defect 15: a restore could not be cancelled; only the plugin deadline bounded it.
#[test]
fn a_restore_is_cancellable() {
    let plugin = plugin();
    let backend = suite::populated_backend(128, 300_000, 7);
    let (stream, offsets) =
        plugin.snapshot_keyed(backend.snapshot(), Box::new(MemoryCheckpointOutputStream::new())).unwrap();
    let handle = KeyGroupsStateHandle::new(Arc::new(offsets), stream.close_and_get_handle().unwrap());
    let fresh = || KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let started = Instant::now();
    plugin.restore_keyed(&handle, fresh()).unwrap();
    let full = started.elapsed();

    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        let delay = full / 4;
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            token.cancel();
            Instant::now()
        })
    };
    let e = plugin.restore_keyed_cancellable(&handle, fresh(), &token).unwrap_err();
    let latency = canceller.join().unwrap().elapsed();
    assert!(matches!(e, PluginError::Cancelled { .. }), "{e:?}");
    assert!(
        latency < full / 2 + Duration::from_millis(50),
        "stopped {latency:?} after the cancel; a full restore takes {full:?}"
    );
    // An already cancelled token stops a restore before it starts.
    let e = plugin.restore_keyed_cancellable(&handle, fresh(), &token).unwrap_err();
    assert!(matches!(e, PluginError::Cancelled { .. }), "{e:?}");
}

/// A handle that records no segment checksums (built by hand, or by an older host) cannot be
/// verified, so it is refused rather than restored unchecked.
#[test]
fn a_handle_without_checksums_is_refused_as_unverifiable() {
    let plugin = plugin();
    let backend = suite::populated_backend(128, 1_000, 3);
    let (stream, offsets) =
        plugin.snapshot_keyed(backend.snapshot(), Box::new(MemoryCheckpointOutputStream::new())).unwrap();
    let bare = snapshot_host::handles::KeyGroupRangeOffsets::new(
        offsets.range(),
        offsets.iter().map(|(_, offset)| offset).collect(),
    )
    .unwrap();
    let handle = KeyGroupsStateHandle::new(Arc::new(bare), stream.close_and_get_handle().unwrap());
    let e =
        plugin.restore_keyed(&handle, KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap()).unwrap_err();
    assert!(matches!(e, PluginError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot be verified"), "{e}");
}
