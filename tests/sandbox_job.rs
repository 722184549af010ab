//! A strategy that hits a limit inside a live job: its checkpoints fail with the limit named,
//! the subtasks keep running (the final counts are exact), the previous checkpoint stays
//! restorable, nothing it wrote is left behind, and a good plugin checkpoints again afterwards.

use std::path::Path;
use std::sync::mpsc::channel;
use std::sync::Arc;

use snapshot_host::config::Config;
use snapshot_host::runtime::{PluginLimits, PluginRuntime};
use snapshot_host::storage::StorageLocation;
use snapshot_host_cli::job::{
    counts_of, expected_counts, AttemptOptions, AttemptOutcome, JobEvent, JobRunner, JobSpec,
};

const EVENTS: u64 = 40_000;
const KEYS: u64 = 2_000;

fn spec(dir: &Path, tolerable_failed: u64) -> JobSpec {
    let mut config =
        Config { checkpoint_storage: StorageLocation::Directory(dir.join("checkpoints")), ..Config::default() };
    config.checkpointing.tolerable_failed = tolerable_failed;
    config.local_recovery.enabled = true;
    config.local_recovery.root_dirs = vec![dir.join("local")];
    config.retained_checkpoints = 1;
    JobSpec {
        job_id: "limited".into(),
        allocation_id: "alloc".into(),
        parallelism: 2,
        max_parallelism: 128,
        events: EVENTS,
        keys: KEYS,
        checkpoint_interval: 4_000,
        config,
    }
}

fn local_checkpoint_dirs(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("local")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("chk_") {
                out.push(name);
            } else if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_limited_plugin_fails_its_checkpoints_and_the_job_carries_on() {
    let runtime = PluginRuntime::new().unwrap();
    let path = suite::plugin_path("full-keyed");
    let good = Arc::new(runtime.load(&path, PluginLimits::default()).unwrap());
    let limited = Arc::new(
        runtime.load(&path, PluginLimits { max_output_bytes: Some(1000), ..PluginLimits::default() }).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();

    // A good first run, failing half-way: leaves a completed checkpoint.
    let mut runner = JobRunner::new(spec(dir.path(), 0), good.clone()).unwrap();
    let (tx, _rx) = channel();
    assert!(matches!(
        runner.run_attempt(AttemptOptions { fail_at: Some(EVENTS / 2) }, &tx).unwrap(),
        AttemptOutcome::Failed { .. }
    ));
    let storage = runner.storage().clone();
    let good_checkpoints = storage.completed_checkpoint_ids().unwrap();
    assert_eq!(good_checkpoints.len(), 1, "one retained checkpoint");

    // The limited plugin: restores fine, but every checkpoint it writes exceeds the limit. With
    // Flink's default tolerance (0), the first failed checkpoint fails the job, naming why.
    let mut runner = JobRunner::new(spec(dir.path(), 0), limited.clone()).unwrap();
    let (tx, _rx) = channel();
    let e = runner.run_attempt(AttemptOptions::default(), &tx).unwrap_err().to_string();
    assert!(e.contains("tolerable-failed-checkpoints") && e.contains("output limit of 1000 bytes"), "{e}");

    // Tolerating failures, the job carries on to the end with every checkpoint failed.
    let mut runner = JobRunner::new(spec(dir.path(), 1000), limited).unwrap();
    let (tx, rx) = channel();
    let outcome = runner.run_attempt(AttemptOptions::default(), &tx).unwrap();
    drop(tx);
    let events: Vec<JobEvent> = rx.iter().collect();
    let aborted: Vec<&String> = events
        .iter()
        .filter_map(|e| if let JobEvent::Aborted { reason, .. } = e { Some(reason) } else { None })
        .collect();
    assert!(!aborted.is_empty(), "the limited plugin's checkpoints must fail");
    assert!(aborted.iter().any(|r| r.contains("output limit of 1000 bytes")), "the limit is named: {aborted:?}");
    assert!(
        !events.iter().any(|e| matches!(e, JobEvent::Completed { .. })),
        "no checkpoint may complete over the limit"
    );
    let AttemptOutcome::Finished { backends, checkpoints, .. } = outcome else {
        panic!("the job must carry on to the end")
    };
    assert_eq!(counts_of(&backends), expected_counts(EVENTS, KEYS), "the subtasks kept running exactly");
    assert_eq!(checkpoints.completed, 0);
    assert!(checkpoints.failed > 0 && checkpoints.failed == checkpoints.triggered, "{checkpoints:?}");

    // Nothing of the failed checkpoints is left; the good checkpoint is intact.
    assert_eq!(storage.completed_checkpoint_ids().unwrap(), good_checkpoints);
    let dirs: Vec<_> = std::fs::read_dir(storage.local_root().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    assert_eq!(dirs, vec![format!("chk-{}", good_checkpoints[0])], "failed checkpoints left directories");
    let locals = local_checkpoint_dirs(dir.path());
    assert!(
        locals.iter().all(|d| *d == format!("chk_{}", good_checkpoints[0])),
        "failed checkpoints left local state: {locals:?}"
    );

    // A good plugin afterwards restores the previous checkpoint and checkpoints again.
    let mut runner = JobRunner::new(spec(dir.path(), 0), good).unwrap();
    let (tx, rx) = channel();
    let outcome = runner.run_attempt(AttemptOptions::default(), &tx).unwrap();
    drop(tx);
    assert!(rx.iter().any(|e| matches!(e, JobEvent::Completed { .. })));
    let AttemptOutcome::Finished { backends, .. } = outcome else { panic!("did not finish") };
    assert_eq!(counts_of(&backends), expected_counts(EVENTS, KEYS));
}
