//! Starting a job: restore every subtask from the newest checkpoint that can be restored, or
//! start empty when there is none.

use std::time::Duration;

use super::coordinator::Coordinator;
use super::subtask::Subtask;
use super::SnapshotHost;
use crate::backend::KeyedStateBackend;
use crate::error::{Error, ErrorKind, Result};
use crate::operator_backend::OperatorStateBackend;
use crate::restore::RestoreSource;
use crate::runtime::CancelToken;
use crate::storage::CheckpointMetadata;

/// Where one subtask's state came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The checkpoint restored (`None`: started empty).
    pub checkpoint_id: Option<u64>,
    /// Which copy the keyed state came from.
    pub source: RestoreSource,
    /// 1-based position of the keyed alternative used (the local copy comes first).
    pub alternative: usize,
    /// Number of keyed alternatives there were.
    pub alternatives: usize,
    /// Which copy the operator state came from.
    pub operator_source: RestoreSource,
    /// Time taken, keyed and operator state.
    pub duration: Duration,
}

impl RestoreReport {
    fn empty() -> Self {
        RestoreReport {
            checkpoint_id: None,
            source: RestoreSource::Empty,
            alternative: 1,
            alternatives: 1,
            operator_source: RestoreSource::Empty,
            duration: Duration::ZERO,
        }
    }
}

/// One subtask of a started job, with its restored state.
#[derive(Debug)]
pub struct RecoveredSubtask {
    /// The subtask: takes its snapshots.
    pub subtask: Subtask,
    /// Its keyed state (register the states the job uses; restored ones are already there).
    pub keyed: KeyedStateBackend,
    /// Its operator state.
    pub operators: OperatorStateBackend,
    /// Where the state came from.
    pub report: RestoreReport,
}

/// A started job: every subtask's state and the coordinator of its next checkpoints.
///
/// When the newest checkpoint cannot be restored, an older retained one is, and the newer one
/// is listed in [`skipped`](Self::skipped) with the reason:
///
/// ```
/// # fn main() -> snapshot_host::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// use snapshot_host::SnapshotHost;
///
/// let host = SnapshotHost::builder("events")
///     .plugin_file(snapshot_host::doc_plugin_path())
///     .checkpoint_storage(dir.path())
///     .set("execution.checkpointing.num-retained", "2")
///     .build()?;
/// let job = host.recover()?;
/// let task = &job.subtasks[0];
/// for offset in [100, 200] {
///     let barrier = job.coordinator.trigger(offset).unwrap();
///     let ack = task.subtask.snapshot(&barrier, &task.keyed, &task.operators).run()?;
///     job.coordinator.acknowledge(ack)?;
/// }
/// // Damage the newest checkpoint's metadata.
/// let metadata = host.checkpoints().checkpoint_dir(2).unwrap().join("_metadata");
/// std::fs::write(&metadata, b"not metadata")?;
///
/// let restored = host.recover()?;
/// assert_eq!(restored.checkpoint.as_ref().unwrap().checkpoint_id, 1);
/// assert_eq!(restored.source_offset(), 100);
/// assert_eq!(restored.skipped[0].0, 2);
/// assert_eq!(restored.skipped[0].1.kind(), snapshot_host::ErrorKind::Corrupt);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Recovery {
    /// The checkpoint restored, or `None` when the job starts empty.
    pub checkpoint: Option<CheckpointMetadata>,
    /// Newer checkpoints that could not be restored, and why.
    pub skipped: Vec<(u64, Error)>,
    /// Every subtask, by index.
    pub subtasks: Vec<RecoveredSubtask>,
    /// Coordinates the job's next checkpoints.
    pub coordinator: Coordinator,
}

impl Recovery {
    /// Where replay starts: the restored checkpoint's source offset, or 0.
    pub fn source_offset(&self) -> u64 {
        self.checkpoint.as_ref().map_or(0, |m| m.source_offset)
    }
}

/// What a restore may use and change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Local copies first; afterwards prune them to the restored checkpoint and move
    /// unrestorable newer checkpoints aside.
    Start,
    /// Changing nothing anywhere (to verify what a start would restore), with or without the
    /// local copies.
    Inspect { local: bool },
}

impl SnapshotHost {
    /// Starts the job: restores every subtask from the newest checkpoint that can be restored,
    /// preferring each subtask's local copy and falling back to the primary, then to older
    /// retained checkpoints.
    ///
    /// A newer checkpoint that cannot be restored (damaged metadata, or state whose every copy
    /// is missing or corrupt) is skipped with a warning and moved aside (`chk-<id>.unrestorable`),
    /// so retention never counts it. When checkpoints exist but none restores, this fails
    /// (unless `state.checkpoints.start-empty-if-unrestorable` is set): starting empty over
    /// existing checkpoints would silently lose all state. Afterwards every subtask's local
    /// store keeps only the restored checkpoint.
    pub fn recover(&self) -> Result<Recovery> {
        self.recover_with(&CancelToken::new())
    }

    /// [`recover`](Self::recover), stopped early by `cancel`.
    pub fn recover_with(&self, cancel: &CancelToken) -> Result<Recovery> {
        self.restore_newest(Mode::Start, cancel)
    }

    /// What [`recover`](Self::recover) would restore, changing nothing durable: no checkpoint
    /// is moved aside and no local copy pruned, to verify checkpoints. Without `local_copies`
    /// only the primary is read, which is what must always be restorable; with them, opening
    /// the local stores deletes local directories that are incomplete or unreadable, as every
    /// start does.
    pub fn inspect_newest(&self, local_copies: bool, cancel: &CancelToken) -> Result<Recovery> {
        self.restore_newest(Mode::Inspect { local: local_copies }, cancel)
    }

    fn restore_newest(&self, mode: Mode, cancel: &CancelToken) -> Result<Recovery> {
        let mut subtasks = Vec::new();
        for index in 0..self.parallelism() {
            subtasks.push(match mode {
                Mode::Inspect { local: false } => self.primary_only_subtask(index)?,
                _ => self.subtask(index)?,
            });
        }
        let storage = self.checkpoints();
        let ids = storage.completed_checkpoint_ids()?;
        let mut skipped: Vec<(u64, Error)> = Vec::new();
        let mut restored = None;
        for &id in ids.iter().rev() {
            let metadata = match self.checkpoint(id) {
                Ok(metadata) => metadata,
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e.display_chain(), "cannot restore checkpoint {id}; trying an older one");
                    skipped.push((id, e));
                    continue;
                }
            };
            match self.restore_all(&subtasks, &metadata, cancel) {
                Ok(states) => {
                    restored = Some((metadata, states));
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Cancelled => return Err(e),
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e.display_chain(), "cannot restore checkpoint {id}; trying an older one");
                    skipped.push((id, e));
                }
            }
        }
        let (checkpoint, states) = match restored {
            Some((metadata, states)) => (Some(metadata), states),
            None => {
                if !skipped.is_empty() && !self.config().start_empty_if_unrestorable {
                    return Err(no_restorable_checkpoint(storage.url(), &skipped));
                }
                if !skipped.is_empty() {
                    tracing::warn!("no checkpoint can be restored; starting with empty state as configured");
                }
                let mut states = Vec::new();
                for subtask in &subtasks {
                    let (keyed, operators) = subtask.empty_state()?;
                    states.push((keyed, operators, RestoreReport::empty()));
                }
                (None, states)
            }
        };
        let restored_id = checkpoint.as_ref().map_or(0, |m| m.checkpoint_id);
        if let Some(m) = &checkpoint {
            self.advance_checkpoint_ids_past(m.checkpoint_id);
        }
        if mode == Mode::Start {
            if checkpoint.is_some() {
                for subtask in &subtasks {
                    subtask.store().retain_only(restored_id);
                }
                for (_, _, report) in &states {
                    super::metrics::restored_subtask(self.job_id(), report.source);
                }
                super::metrics::restored(self.job_id());
            }
            for (id, _) in &skipped {
                match storage.quarantine(*id) {
                    Ok(to) => tracing::warn!(checkpoint = id, to = %to, "moved an unrestorable checkpoint aside"),
                    Err(e) => {
                        tracing::warn!(checkpoint = id, error = %e, "could not move an unrestorable checkpoint aside")
                    }
                }
            }
        }
        // Only checkpoints up to the restored one count towards retention.
        let retained: Vec<u64> =
            storage.completed_checkpoint_ids()?.into_iter().filter(|&id| id <= restored_id).collect();
        let stores = subtasks.iter().map(|s| s.store().clone()).collect();
        let coordinator = Coordinator::new(self.clone(), stores, retained);
        let subtasks = subtasks
            .into_iter()
            .zip(states)
            .map(|(subtask, (keyed, operators, report))| RecoveredSubtask { subtask, keyed, operators, report })
            .collect();
        Ok(Recovery { checkpoint, skipped, subtasks, coordinator })
    }

    fn restore_all(
        &self,
        subtasks: &[Subtask],
        metadata: &CheckpointMetadata,
        cancel: &CancelToken,
    ) -> Result<Vec<(KeyedStateBackend, OperatorStateBackend, crate::facade::RestoreReport)>> {
        subtasks.iter().map(|s| s.restore(metadata, cancel).map(|r| (r.keyed, r.operators, r.report))).collect()
    }
}

fn no_restorable_checkpoint(dir: &str, skipped: &[(u64, Error)]) -> Error {
    let lines: Vec<String> =
        skipped.iter().map(|(id, why)| format!("  checkpoint {id}: {}", why.display_chain())).collect();
    Error::msg(
        ErrorKind::Corrupt,
        format!(
            "checkpoints exist in {dir}, but none can be restored, so the job does not start (starting with empty state would lose it; set {}=true to do that anyway):\n{}",
            crate::config::START_EMPTY_IF_UNRESTORABLE,
            lines.join("\n")
        ),
    )
}
