//! Checkpoint and restore metrics under Flink's names, through the `metrics` facade.
//!
//! The host only records; what collects them is the embedder's choice (a Prometheus
//! exporter, statsd, nothing: without an installed recorder every call is a no-op). Names
//! are those of Flink's job-level checkpointing metrics, so dashboards and alerts written
//! for Flink read them unchanged; each carries the label `job`. Restore source counts have
//! no Flink counterpart (Flink does not say where a restore read from); they are
//! `numberOfRestoredSubtasks{source="local"|"primary"|"empty"}`.

use std::time::{Duration, SystemTime};

use crate::restore::RestoreSource;

/// Checkpoints triggered (Flink's `totalNumberOfCheckpoints`).
pub const TOTAL_CHECKPOINTS: &str = "totalNumberOfCheckpoints";
/// Checkpoints that completed.
pub const COMPLETED_CHECKPOINTS: &str = "numberOfCompletedCheckpoints";
/// Checkpoints that failed or were aborted.
pub const FAILED_CHECKPOINTS: &str = "numberOfFailedCheckpoints";
/// Checkpoints in flight.
pub const IN_PROGRESS_CHECKPOINTS: &str = "numberOfInProgressCheckpoints";
/// Trigger to durable metadata of the last completed checkpoint, in milliseconds.
pub const LAST_CHECKPOINT_DURATION: &str = "lastCheckpointDuration";
/// Bytes of primary state of the last completed checkpoint.
pub const LAST_CHECKPOINT_SIZE: &str = "lastCheckpointSize";
/// The id of the last completed checkpoint.
pub const LAST_COMPLETED_CHECKPOINT_ID: &str = "lastCompletedCheckpointId";
/// The longest synchronous pause of a subtask in the last completed checkpoint, in
/// milliseconds (Flink's checkpoint statistics call it the sync duration).
pub const LAST_CHECKPOINT_SYNC_DURATION: &str = "lastCheckpointSyncDuration";
/// When the job last restored a checkpoint, milliseconds since the Unix epoch.
pub const LAST_RESTORE_TIMESTAMP: &str = "lastCheckpointRestoreTimestamp";
/// Subtasks restored, by where their keyed state came from (label `source`).
pub const RESTORED_SUBTASKS: &str = "numberOfRestoredSubtasks";

/// Registers the descriptions, so that exporters can show them (call once, after installing
/// a recorder; the CLI does for `job run --metrics-addr`).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(TOTAL_CHECKPOINTS, "Checkpoints triggered.");
    describe_counter!(COMPLETED_CHECKPOINTS, "Checkpoints that completed.");
    describe_counter!(FAILED_CHECKPOINTS, "Checkpoints that failed or were aborted.");
    describe_gauge!(IN_PROGRESS_CHECKPOINTS, "Checkpoints in flight.");
    describe_gauge!(
        LAST_CHECKPOINT_DURATION,
        Unit::Milliseconds,
        "Trigger to durable metadata of the last completed checkpoint."
    );
    describe_gauge!(LAST_CHECKPOINT_SIZE, Unit::Bytes, "Primary state of the last completed checkpoint.");
    describe_gauge!(LAST_COMPLETED_CHECKPOINT_ID, "Id of the last completed checkpoint.");
    describe_gauge!(
        LAST_CHECKPOINT_SYNC_DURATION,
        Unit::Milliseconds,
        "Longest synchronous pause of a subtask in the last completed checkpoint."
    );
    describe_gauge!(
        LAST_RESTORE_TIMESTAMP,
        Unit::Milliseconds,
        "When the job last restored a checkpoint (milliseconds since the Unix epoch)."
    );
    describe_counter!(RESTORED_SUBTASKS, "Subtasks restored, by the source of their keyed state.");
}

/// Makes the job's counters visible at zero before anything happened, so that a scrape
/// tells "no failure yet" from "not reported".
pub(super) fn register(job: &str) {
    for name in [TOTAL_CHECKPOINTS, COMPLETED_CHECKPOINTS, FAILED_CHECKPOINTS] {
        metrics::counter!(name, "job" => job.to_string()).increment(0);
    }
}

pub(super) fn triggered(job: &str, in_progress: usize) {
    metrics::counter!(TOTAL_CHECKPOINTS, "job" => job.to_string()).increment(1);
    metrics::gauge!(IN_PROGRESS_CHECKPOINTS, "job" => job.to_string()).set(in_progress as f64);
}

pub(super) fn completed(job: &str, id: u64, bytes: u64, duration: Duration, sync_pause: Duration, in_progress: usize) {
    let job = job.to_string();
    metrics::counter!(COMPLETED_CHECKPOINTS, "job" => job.clone()).increment(1);
    metrics::gauge!(LAST_CHECKPOINT_DURATION, "job" => job.clone()).set(duration.as_secs_f64() * 1e3);
    metrics::gauge!(LAST_CHECKPOINT_SIZE, "job" => job.clone()).set(bytes as f64);
    metrics::gauge!(LAST_COMPLETED_CHECKPOINT_ID, "job" => job.clone()).set(id as f64);
    metrics::gauge!(LAST_CHECKPOINT_SYNC_DURATION, "job" => job.clone()).set(sync_pause.as_secs_f64() * 1e3);
    metrics::gauge!(IN_PROGRESS_CHECKPOINTS, "job" => job).set(in_progress as f64);
}

pub(super) fn failed(job: &str, in_progress: usize) {
    metrics::counter!(FAILED_CHECKPOINTS, "job" => job.to_string()).increment(1);
    metrics::gauge!(IN_PROGRESS_CHECKPOINTS, "job" => job.to_string()).set(in_progress as f64);
}

pub(super) fn restored_subtask(job: &str, source: RestoreSource) {
    let source = match source {
        RestoreSource::Local => "local",
        RestoreSource::Primary => "primary",
        RestoreSource::Empty => "empty",
    };
    metrics::counter!(RESTORED_SUBTASKS, "job" => job.to_string(), "source" => source).increment(1);
}

pub(super) fn restored(job: &str) {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!(LAST_RESTORE_TIMESTAMP, "job" => job.to_string()).set(now.as_millis() as f64);
}
