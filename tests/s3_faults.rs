//! Faults of an S3 primary: 503 responses, a server that stops mid-upload, responses slower
//! than the deadline. In every case the affected checkpoint aborts cleanly, no multipart upload
//! is left open on the server once it answers again, the job keeps running, and the last
//! checkpoint that completed restores exactly.

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snapshot_host::config::Config;
use snapshot_host::runtime::{PluginLimits, PluginRuntime};
use snapshot_host::storage::{CheckpointStorage, StorageLocation};
use snapshot_host::streams::StateScope;
use snapshot_host_cli::embedded_s3::{EmbeddedS3, Shaping};
use snapshot_host_cli::job::{
    counts_of, expected_counts, processed_total, AttemptOptions, AttemptOutcome, JobEvent, JobRunner, JobSpec,
};

// One subtask with enough keys that its keyed snapshot exceeds S3's 5 MiB part: snapshots
// upload in parts, so the faults also cut multipart uploads.
const EVENTS: u64 = 1_000_000;
const KEYS: u64 = 1_000_000;
const INTERVAL: u64 = 200_000;

fn server() -> EmbeddedS3 {
    let server = EmbeddedS3::start(Shaping::NONE).unwrap();
    server.create_bucket("ckpt").unwrap();
    server
}

/// Short deadlines and one retry, so that a fault fails a request within seconds.
fn config(server: &EmbeddedS3) -> Config {
    let mut config = Config::default();
    for o in server.config_overrides() {
        config.apply_override(&o).unwrap();
    }
    for o in [
        "execution.checkpointing.dir=s3://ckpt/jobs",
        "s3.request-timeout=1s",
        "s3.retry.max-retries=1",
        "s3.retry.timeout=2s",
        "s3.upload.part-size=5MiB",
        "execution.checkpointing.tolerable-failed-checkpoints=1000",
    ] {
        config.apply_override(o).unwrap();
    }
    config
}

fn runner(server: &EmbeddedS3) -> JobRunner {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = Arc::new(runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap());
    let spec = JobSpec {
        job_id: "faulty".into(),
        allocation_id: "alloc".into(),
        parallelism: 1,
        max_parallelism: 128,
        events: EVENTS,
        keys: KEYS,
        checkpoint_interval: INTERVAL,
        config: config(server),
    };
    JobRunner::new(spec, plugin).unwrap()
}

/// Runs an attempt that injects `fault` once its restore is done and the source runs, and
/// fails the task three checkpoint intervals later. Returns the checkpoints that completed
/// before the fault, and how many aborted after it.
fn attempt_with_fault(runner: &mut JobRunner, fault: impl FnOnce()) -> (Vec<u64>, usize) {
    let start = runner.storage().latest_completed().unwrap().map_or(0, |m| m.source_offset);
    let fail_at = Some(start + 3 * INTERVAL + 1);
    let (tx, rx) = channel();
    let mut fault = Some(fault);
    let (mut before, mut aborted) = (Vec::new(), 0);
    let outcome = std::thread::scope(|scope| {
        // The sender moves into the job's thread: the events end when the attempt does.
        let job = scope.spawn(move || runner.run_attempt(AttemptOptions { fail_at }, &tx));
        for event in rx.iter() {
            match event {
                JobEvent::Progress { .. } => {
                    if let Some(f) = fault.take() {
                        f();
                    }
                }
                JobEvent::Completed { checkpoint_id, .. } => {
                    assert!(fault.is_some(), "checkpoint {checkpoint_id} completed despite the fault");
                    before.push(checkpoint_id);
                }
                JobEvent::Aborted { .. } => aborted += 1,
                JobEvent::Restored { .. } => {}
            }
        }
        job.join().unwrap()
    });
    assert!(
        matches!(outcome.unwrap(), AttemptOutcome::Failed { .. }),
        "the job did not keep running to the injected failure"
    );
    (before, aborted)
}

/// After the fault: the last completed checkpoint restores and the job runs to the exact end.
fn recovers_exactly(server: &EmbeddedS3, expected_latest: u64) {
    let mut runner = runner(server);
    assert_eq!(runner.storage().completed_checkpoint_ids().unwrap().last(), Some(&expected_latest));
    let (tx, _rx) = channel();
    let AttemptOutcome::Finished { backends, operators, .. } =
        runner.run_attempt(AttemptOptions::default(), &tx).unwrap()
    else {
        panic!("did not finish")
    };
    assert_eq!(counts_of(&backends), expected_counts(EVENTS, KEYS), "state differs from a failure-free run");
    assert_eq!(processed_total(&operators), EVENTS);
    assert_eq!(runner.storage().pending_aborts(), 0);
    assert_eq!(server.open_multipart_uploads().unwrap(), Vec::<String>::new(), "orphaned multipart uploads");
}

fn job_survives(fault: impl FnOnce(&mut EmbeddedS3), heal: impl FnOnce(&mut EmbeddedS3)) {
    let mut server = server();
    let mut runner = runner(&server);
    suite::complete_checkpoints(&mut runner, 1);
    assert!(server.faults().multipart_uploads_started() >= 1, "the job's snapshot did not upload in parts");
    let good = *runner.storage().completed_checkpoint_ids().unwrap().last().unwrap();
    let server_ref = &mut server;
    let (before, aborted) = attempt_with_fault(&mut runner, || fault(server_ref));
    assert!(aborted >= 1, "no checkpoint was aborted by the fault");
    heal(&mut server);
    recovers_exactly(&server, before.last().copied().unwrap_or(good).max(good));
}

#[test]
fn service_unavailable_aborts_checkpoints_and_the_job_goes_on() {
    job_survives(|s| s.faults().fail_after(0), |s| s.faults().clear());
}

#[test]
fn a_server_stopped_mid_run_aborts_checkpoints_and_the_job_goes_on() {
    job_survives(|s| s.stop(), |s| s.restart().unwrap());
}

#[test]
fn responses_slower_than_the_deadline_abort_checkpoints_and_the_job_goes_on() {
    job_survives(|s| s.faults().delay(Duration::from_secs(5)), |s| s.faults().clear());
}

/// A transient 503 is retried: the checkpoint completes.
#[test]
fn a_transient_503_is_retried() {
    let server = server();
    let mut runner = runner(&server);
    server.faults().fail_next(1);
    suite::complete_checkpoints(&mut runner, 1);
    assert!(server.faults().requests() > 1);
}

fn storage(server: &EmbeddedS3) -> CheckpointStorage {
    let mut settings = config(server).s3;
    settings.max_concurrent_uploads = 2;
    let location = StorageLocation::S3 { bucket: "ckpt".into(), prefix: "streams".into() };
    CheckpointStorage::open(&location, &settings, "job", 1024).unwrap()
}

/// A multipart upload cut by a fault fails its stream in bounded time; its abort is retried
/// until the server takes it, so no upload stays open.
fn multipart_upload_cut_by(fault: impl FnOnce(&mut EmbeddedS3), heal: impl FnOnce(&mut EmbeddedS3)) {
    let mut server = server();
    let storage = storage(&server);
    let factory = storage.stream_factory(1).unwrap();
    let mut stream = factory.create_output_stream(StateScope::Exclusive).unwrap();
    let part = vec![7u8; 1 << 20];
    for _ in 0..12 {
        stream.write(&part).unwrap();
    }
    assert_eq!(server.open_multipart_uploads().unwrap().len(), 1, "the upload did not start while writing");
    fault(&mut server);
    let started = Instant::now();
    let failed = (0..40).map(|_| stream.write(&part)).find_map(Result::err);
    let error = match failed {
        Some(e) => e.to_string(),
        None => stream.close_and_get_handle().unwrap_err().to_string(),
    };
    assert!(error.contains("s3://ckpt/streams/job/chk-1/"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30), "the failure took {:?}", started.elapsed());
    heal(&mut server);
    assert_eq!(storage.pending_aborts(), 0);
    assert_eq!(server.open_multipart_uploads().unwrap(), Vec::<String>::new(), "orphaned multipart upload");
}

#[test]
fn a_multipart_upload_cut_by_503s_leaves_no_upload_open() {
    multipart_upload_cut_by(|s| s.faults().fail_after(0), |s| s.faults().clear());
}

#[test]
fn a_multipart_upload_cut_by_a_stopped_server_is_aborted_once_it_is_back() {
    multipart_upload_cut_by(|s| s.stop(), |s| s.restart().unwrap());
}

#[test]
fn a_multipart_upload_slower_than_the_deadline_leaves_no_upload_open() {
    multipart_upload_cut_by(|s| s.faults().delay(Duration::from_secs(5)), |s| s.faults().clear());
}
