//! Task-local recovery end to end: the four modes (primary only; local + primary; primary
//! data lost; local lost or corrupted) and rescaling, each checking exact equality of keyed
//! and operator state with a failure-free run.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::Arc;

use snapshot_host::config::Config;
use snapshot_host::handles::GroupPart;
use snapshot_host::restore::RestoreSource;
use snapshot_host::runtime::{Plugin, PluginLimits, PluginRuntime};
use snapshot_host::storage::METADATA_FILE;
use snapshot_host_cli::job::{
    counts_of, expected_counts, processed_total, AttemptOptions, AttemptOutcome, JobEvent, JobRunner, JobSpec,
    JOB_STATE,
};
use suite::{Mode, Primary as Storage};

const EVENTS: u64 = 60_000;
const KEYS: u64 = 3_000;
use RestoreSource::{Local, Primary};

fn plugin() -> Arc<Plugin> {
    let runtime = PluginRuntime::new().unwrap();
    Arc::new(runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap())
}

fn spec(dir: &Path, parallelism: u32, local: bool, mode: Mode) -> JobSpec {
    let mut config = Config::default();
    mode.configure(&mut config, dir);
    config.local_recovery.enabled = local;
    config.local_recovery.root_dirs = vec![dir.join("local-a"), dir.join("local-b")];
    config.retained_checkpoints = 2;
    JobSpec {
        job_id: "test".into(),
        allocation_id: "alloc".into(),
        parallelism,
        max_parallelism: 128,
        events: EVENTS,
        keys: KEYS,
        checkpoint_interval: 5_000,
        config,
    }
}

/// Per restored subtask: keyed source, keyed alternative, keyed alternatives, operator source.
type Sources = Vec<(RestoreSource, usize, usize, RestoreSource)>;

/// Runs one attempt and returns its outcome and the restore sources of every subtask.
fn attempt(runner: &mut JobRunner, fail_at: Option<u64>) -> (AttemptOutcome, Sources) {
    let (tx, rx) = channel();
    let outcome = runner.run_attempt(AttemptOptions { fail_at }, &tx).unwrap();
    drop(tx);
    let sources = rx
        .iter()
        .filter_map(|e| match e {
            JobEvent::Restored { source, alternative, alternatives, operator_source, .. } => {
                Some((source, alternative, alternatives, operator_source))
            }
            _ => None,
        })
        .collect();
    (outcome, sources)
}

/// Runs to the end and checks keyed and operator state against a failure-free run.
fn finish_and_check(runner: &mut JobRunner) -> Sources {
    let (outcome, sources) = attempt(runner, None);
    let AttemptOutcome::Finished { backends, operators, .. } = outcome else { panic!("did not finish") };
    assert_eq!(counts_of(&backends), expected_counts(EVENTS, KEYS), "final state differs from a failure-free run");
    assert_eq!(processed_total(&operators), EVENTS, "SPLIT_DISTRIBUTE counters lost or duplicated events");
    let description = runner.job_description().into_bytes();
    for (i, o) in operators.iter().enumerate() {
        assert_eq!(
            o.get(JOB_STATE).unwrap(),
            std::slice::from_ref(&description),
            "subtask {i}: BROADCAST state must hold one copy"
        );
    }
    sources
}

/// Runs until a failure half-way, after two checkpoints; with incremental checkpoints, the checkpoint to restore
/// must hold deltas on earlier checkpoints' streams (or the test would not test chains).
fn fail_once(runner: &mut JobRunner, mode: Mode) {
    // Two attempts of one checkpoint each first: the source outruns the snapshots, so a single
    // free-running attempt may complete only one checkpoint before the failure.
    suite::complete_checkpoints(runner, 2);
    let (outcome, _) = attempt(runner, Some(EVENTS / 2 + 123));
    assert!(matches!(outcome, AttemptOutcome::Failed { .. }));
    let ids = runner.storage().completed_checkpoint_ids().unwrap();
    let latest = *ids.last().expect("a checkpoint completed before the failure");
    let metadata = runner.storage().read_metadata(latest).unwrap();
    let chains: Vec<_> = metadata.subtasks.iter().filter_map(|s| s.keyed_chain.as_ref()).collect();
    if mode.incremental {
        assert!(
            chains.iter().any(|c| !c.earlier.is_empty() && c.parts.contains(&GroupPart::Delta)),
            "checkpoint {latest} holds no deltas: {chains:?}"
        );
    } else {
        assert!(chains.is_empty(), "full checkpoints have no chains");
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(files_below(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Where the primary's files of `dir`'s job are on disk.
fn primary_files(dir: &Path, mode: Mode) -> PathBuf {
    mode.configure(&mut Config::default(), dir).join("test")
}

/// The local data files, each once: an incremental local copy hard-links the earlier files of
/// its chain, and a file damaged through two of its names would be damaged twice.
fn local_data_files(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut files = files_below(&dir.join("local-a"));
    files.extend(files_below(&dir.join("local-b")));
    files.retain(|f| !f.ends_with(snapshot_host::local_store::LOCAL_METADATA_FILE));
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|f| seen.insert(std::fs::metadata(f).map(|m| (m.dev(), m.ino())).unwrap()));
    files
}

fn primary_only(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), 3, false, mode), plugin()).unwrap();
    fail_once(&mut runner, mode);
    let sources = finish_and_check(&mut runner);
    assert_eq!(sources, vec![(Primary, 1, 1, Primary); 3]);
    assert!(
        !dir.path().join("local-a").exists() && !dir.path().join("local-b").exists(),
        "local recovery is off: no local directory may exist"
    );
}

fn local_and_primary_prefers_local(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), 3, true, mode), plugin()).unwrap();
    fail_once(&mut runner, mode);
    assert!(!local_data_files(dir.path()).is_empty());
    let sources = finish_and_check(&mut runner);
    assert_eq!(sources, vec![(Local, 1, 2, Local); 3]);
}

fn primary_data_lost_restores_from_local(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), 3, true, mode), plugin()).unwrap();
    fail_once(&mut runner, mode);
    let latest = *runner.storage().completed_checkpoint_ids().unwrap().last().unwrap();
    let primary = primary_files(dir.path(), mode);
    // The checkpoint's own files and, with incremental checkpoints, the shared files its
    // chains run through: all of its primary data.
    let mut data: Vec<PathBuf> = files_below(&primary.join(format!("chk-{latest}")))
        .into_iter()
        .filter(|f| !f.ends_with(METADATA_FILE))
        .collect();
    let shared = files_below(&primary.join(snapshot_host::storage::SHARED_DIR));
    assert_eq!(shared.is_empty(), !mode.incremental, "keyed state is shared exactly when incremental: {shared:?}");
    data.extend(shared);
    for f in data {
        std::fs::remove_file(f).unwrap();
    }
    let sources = finish_and_check(&mut runner);
    assert_eq!(sources, vec![(Local, 1, 2, Local); 3]);
}

fn local_lost_or_corrupted_falls_back_to_primary(mode: Mode) {
    // Corrupted: the checksum catches it and the primary (alternative 2 of 2) is used.
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), 3, true, mode), plugin()).unwrap();
    fail_once(&mut runner, mode);
    for f in local_data_files(dir.path()) {
        let mut bytes = std::fs::read(&f).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&f, bytes).unwrap();
    }
    let sources = finish_and_check(&mut runner);
    assert_eq!(sources, vec![(Primary, 2, 2, Primary); 3]);

    // Deleted: only the primary is offered.
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), 3, true, mode), plugin()).unwrap();
    fail_once(&mut runner, mode);
    assert!(!local_data_files(dir.path()).is_empty());
    // Checkpoint ids rotate over the two roots; with one checkpoint only one root exists.
    for root in ["local-a", "local-b"] {
        let _ = std::fs::remove_dir_all(dir.path().join(root));
    }
    let sources = finish_and_check(&mut runner);
    assert_eq!(sources, vec![(Primary, 1, 1, Primary); 3]);
}

fn rescaling_from_four_to_three_and_six_uses_the_primary(mode: Mode) {
    for new_parallelism in [3, 6] {
        let dir = tempfile::tempdir().unwrap();
        let plugin = plugin();
        let mut runner = JobRunner::new(spec(dir.path(), 4, true, mode), plugin.clone()).unwrap();
        fail_once(&mut runner, mode);
        let mut rescaled = JobRunner::new(spec(dir.path(), new_parallelism, true, mode), plugin).unwrap();
        let sources = finish_and_check(&mut rescaled);
        assert_eq!(sources.len(), new_parallelism as usize);
        assert!(
            sources.iter().all(|(s, _, n, o)| *s == Primary && *n == 1 && *o == Primary),
            "rescaled restore must not use local copies: {sources:?}"
        );
    }
}

#[test]
fn local_state_of_unknown_allocations_is_deleted_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let orphan = snapshot_host::directories::allocation_base_dir(&dir.path().join("local-a"), "someone-else");
    std::fs::create_dir_all(orphan.join("jid_x/vtx_y_sti_0/chk_1")).unwrap();
    let own = snapshot_host::directories::allocation_base_dir(&dir.path().join("local-a"), "alloc");
    std::fs::create_dir_all(&own).unwrap();
    JobRunner::new(spec(dir.path(), 2, true, Mode { primary: Storage::Directory, incremental: false }), plugin())
        .unwrap();
    assert!(!orphan.exists(), "an unknown allocation's local state survived start-up");
    assert!(own.exists());
}

fn a_checkpoint_of_another_format_is_refused(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = JobRunner::new(spec(dir.path(), 2, false, mode), plugin()).unwrap();
    suite::complete_checkpoints(&mut runner, 3);
    // Rewrite every retained checkpoint's metadata as if another strategy had written it.
    let storage = runner.storage().clone();
    let ids = storage.completed_checkpoint_ids().unwrap();
    assert!(ids.len() >= 2);
    for id in &ids {
        let mut meta = storage.read_metadata(*id).unwrap();
        meta.plugin.format = "someone-elses-format".into();
        // Metadata is written once (put-if-absent): replace it behind the storage's back.
        std::fs::remove_file(primary_files(dir.path(), mode).join(format!("chk-{id}")).join(METADATA_FILE)).unwrap();
        storage.write_metadata(&meta).unwrap();
        assert!(storage.write_metadata(&meta).is_err(), "metadata must never be replaced");
    }
    let (tx, _rx) = channel();
    let e = runner.run_attempt(AttemptOptions::default(), &tx).unwrap_err().to_string();
    assert!(e.contains("someone-elses-format") && e.contains("full-keyed"), "{e}");
    // Every checkpoint is named with its reason, and nothing was moved or deleted.
    for id in &ids {
        assert!(e.contains(&format!("checkpoint {id}:")), "{e}");
    }
    assert_eq!(storage.completed_checkpoint_ids().unwrap(), ids);
}

/// Metadata refers to state relative to the checkpoint's location: a checkpoint directory
/// copied elsewhere restores from its own files (the original is deleted to prove it), and
/// so does a local root moved to another path.
fn copied_checkpoints_and_moved_local_roots_restore_from_their_own_files(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let mut runner = JobRunner::new(spec(&original, 2, true, mode), plugin()).unwrap();
    suite::complete_checkpoints(&mut runner, 2);
    let moved = dir.path().join("moved");
    suite::copy_tree(&primary_files(&original, mode), &primary_files(&moved, mode));
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::rename(original.join("local-a"), moved.join("local-a")).unwrap();
    if original.join("local-b").exists() {
        std::fs::rename(original.join("local-b"), moved.join("local-b")).unwrap();
    }
    std::fs::remove_dir_all(&original).unwrap();
    let _ = std::fs::remove_dir_all(primary_files(&original, mode));

    let mut runner = JobRunner::new(spec(&moved, 2, true, mode), plugin()).unwrap();
    let sources = finish_and_check(&mut runner);
    assert_eq!(sources, vec![(Local, 1, 2, Local); 2], "the moved local copies were not used");
    // Without local copies, the copied primary alone restores exactly too.
    let again = dir.path().join("again");
    suite::copy_tree(&primary_files(&moved, mode), &primary_files(&again, mode));
    std::fs::remove_dir_all(&moved).unwrap();
    let _ = std::fs::remove_dir_all(primary_files(&moved, mode));
    let mut runner = JobRunner::new(spec(&again, 2, false, mode), plugin()).unwrap();
    let sources = finish_and_check(&mut runner);
    assert_eq!(sources, vec![(Primary, 1, 1, Primary); 2]);
}

suite::every_mode!(
    primary_only,
    local_and_primary_prefers_local,
    primary_data_lost_restores_from_local,
    local_lost_or_corrupted_falls_back_to_primary,
    rescaling_from_four_to_three_and_six_uses_the_primary,
    a_checkpoint_of_another_format_is_refused,
    copied_checkpoints_and_moved_local_roots_restore_from_their_own_files,
);
