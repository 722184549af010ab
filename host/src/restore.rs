//! Restore with priorities: the local copy first when it is a copy of exactly the primary, the
//! primary (the ground truth) last; each attempt on a fresh backend; fail only when all fail.
//!
//! Every byte restored is verified against the checksums the host recorded while writing it,
//! from either copy. A restore never prunes local copies itself: the caller does, once the
//! whole checkpoint restored (a failed restore may fall back to an older checkpoint, whose
//! local copies must still be there).

use std::time::{Duration, Instant};

use crate::backend::KeyedStateBackend;
use crate::handles::{restore_pieces, KeyedRestorePiece, OperatorStateHandle};
use crate::key_groups::KeyGroupRange;
use crate::local_store::TaskLocalStateStore;
use crate::operator_backend::OperatorStateBackend;
use crate::repartition::{is_identity, repartition, OperatorStreamAssignment};
use crate::runtime::{CancelToken, Plugin, PluginError, PluginInfo};
use crate::storage::{CheckpointMetadata, SubtaskState};

/// Where restored state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreSource {
    /// The subtask's local copy.
    Local,
    /// Durable checkpoint storage.
    Primary,
    /// Nothing to restore (no checkpoint, or no state for this range).
    Empty,
}

impl std::fmt::Display for RestoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestoreSource::Local => "local",
            RestoreSource::Primary => "primary",
            RestoreSource::Empty => "empty",
        })
    }
}

/// A successful restore.
#[derive(Debug)]
pub struct RestoredKeyedState {
    /// The restored backend.
    pub backend: KeyedStateBackend,
    /// Which copy was used.
    pub source: RestoreSource,
    /// 1-based position of the alternative used.
    pub alternative: usize,
    /// Number of alternatives there were.
    pub alternatives: usize,
    /// Time of the successful attempt.
    pub duration: Duration,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The checkpoint was written with another plugin or format.
    #[error("checkpoint {checkpoint} was written by plugin {written_name:?} (format {written_format} v{written_version}); the configured plugin {configured_name:?} writes format {configured_format} v{configured_version} and cannot restore it")]
    PluginMismatch {
        /// The checkpoint.
        checkpoint: u64,
        /// Plugin that wrote it.
        written_name: String,
        /// Its format.
        written_format: String,
        /// Its format version.
        written_version: u32,
        /// Configured plugin.
        configured_name: String,
        /// Its format.
        configured_format: String,
        /// Its format version.
        configured_version: u32,
    },
    /// The checkpoint does not fit the job.
    #[error(
        "checkpoint {checkpoint} has max parallelism {found}, the job has {expected}: key groups cannot be remapped"
    )]
    MaxParallelismMismatch {
        /// The checkpoint.
        checkpoint: u64,
        /// In the checkpoint.
        found: u32,
        /// In the job.
        expected: u32,
    },
    /// Every alternative failed.
    #[error("could not restore {what} from any of the {} alternatives: {}", .failures.len(), join_failures(.failures))]
    AllAlternativesFailed {
        /// What was being restored (key groups, or a subtask's operator state).
        what: String,
        /// Each alternative's failure, in the order tried.
        failures: Vec<AlternativeFailure>,
    },
    /// The restore was cancelled (the task is being cancelled); no further alternative is tried.
    #[error("stopped restoring {what}: the restore was cancelled")]
    Cancelled {
        /// What was being restored.
        what: String,
    },
}

/// Why one restore alternative failed.
#[derive(Debug)]
pub struct AlternativeFailure {
    /// 1-based position among the alternatives.
    pub index: usize,
    /// Which copy it was.
    pub source: RestoreSource,
    /// The failure.
    pub error: PluginError,
}

fn join_failures(failures: &[AlternativeFailure]) -> String {
    let parts: Vec<String> =
        failures.iter().map(|f| format!("alternative {} ({}): {}", f.index, f.source, f.error)).collect();
    parts.join("; ")
}

/// Refuses a checkpoint the configured plugin cannot read: another format, or a newer format
/// version. The strategy's name is not compared: the format identifies the bytes, so any
/// plugin of that format reads them (a strategy ported to another language, or a newer build
/// under another name, keeps its format).
pub fn check_plugin(metadata: &CheckpointMetadata, configured: &PluginInfo) -> Result<(), RestoreError> {
    let written = &metadata.plugin;
    if written.format != configured.format || written.format_version > configured.format_version {
        return Err(RestoreError::PluginMismatch {
            checkpoint: metadata.checkpoint_id,
            written_name: written.name.clone(),
            written_format: written.format.clone(),
            written_version: written.format_version,
            configured_name: configured.name.clone(),
            configured_format: configured.format.clone(),
            configured_version: configured.format_version,
        });
    }
    Ok(())
}

/// Restores the keyed state of `range` from checkpoint `metadata`, trying the local copy in
/// `local` first when it may be used, then the primary.
///
/// The local copy is used only when the subtask's primary state is exactly one handle with the
/// same key-group range (no rescaling happened) and the local store recorded that very primary
/// stream (file name, size and checksum) as the one it copies; its bytes are verified as they
/// are read, like the primary's. `cancel` stops the restore between and within attempts.
pub fn restore_keyed(
    plugin: &Plugin,
    metadata: &CheckpointMetadata,
    range: KeyGroupRange,
    local: Option<&TaskLocalStateStore>,
    cancel: &CancelToken,
) -> Result<RestoredKeyedState, RestoreError> {
    check_plugin(metadata, plugin.info())?;
    let max_parallelism = metadata.max_parallelism;
    let what = || format!("key groups {range} of checkpoint {}", metadata.checkpoint_id);
    let states: Vec<&SubtaskState> = metadata
        .subtasks
        .iter()
        .filter(|s| s.keyed.as_ref().is_some_and(|h| !h.key_group_range().intersection(&range).is_empty()))
        .collect();
    // Per old subtask, the streams to read oldest first: its one full snapshot, or the links
    // of its chains that the key groups of `range` run through.
    let mut primary: Vec<KeyedRestorePiece> = Vec::new();
    for state in &states {
        let links = state.keyed_links(metadata.plugin.format_version);
        let pieces = restore_pieces(&links, &range).map_err(|reason| RestoreError::AllAlternativesFailed {
            what: what(),
            failures: vec![AlternativeFailure {
                index: 1,
                source: RestoreSource::Primary,
                error: PluginError::Runtime(reason),
            }],
        })?;
        primary.extend(pieces);
    }
    let mut alternatives: Vec<(RestoreSource, Vec<KeyedRestorePiece>)> = Vec::new();
    if let (Some(store), [only]) = (local, states.as_slice()) {
        let own = only.keyed.as_ref().expect("filtered on keyed state");
        if own.key_group_range() == range {
            let snapshot = store.retrieve(metadata.checkpoint_id);
            if let Some(snapshot) = snapshot.filter(|s| s.keyed_copy_of(own).is_some()) {
                // Every stream of the chain from its local copy where there is one (an earlier
                // link whose local copy was already gone when this one was stored is read from
                // the primary).
                let pieces = primary
                    .iter()
                    .map(|p| match snapshot.keyed_stream_copy_of(&p.handle) {
                        Some(copy) => KeyedRestorePiece { handle: copy, ..p.clone() },
                        None => p.clone(),
                    })
                    .collect();
                alternatives.push((RestoreSource::Local, pieces));
            }
        }
    }
    if primary.is_empty() {
        let backend =
            KeyedStateBackend::new(max_parallelism, range).map_err(|e| RestoreError::AllAlternativesFailed {
                what: what(),
                failures: vec![AlternativeFailure {
                    index: 1,
                    source: RestoreSource::Empty,
                    error: PluginError::Runtime(e.to_string()),
                }],
            })?;
        return Ok(RestoredKeyedState {
            backend,
            source: RestoreSource::Empty,
            alternative: 1,
            alternatives: 1,
            duration: Duration::ZERO,
        });
    }
    alternatives.push((RestoreSource::Primary, primary));

    let total = alternatives.len();
    let mut failures = Vec::new();
    for (index, (source, handles)) in alternatives.into_iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(RestoreError::Cancelled { what: what() });
        }
        tracing::debug!(range = %range, "restoring key groups from alternative {}/{total} ({source})", index + 1);
        let started = Instant::now();
        match attempt(plugin, max_parallelism, range, &handles, cancel) {
            Ok(backend) => {
                let duration = started.elapsed();
                tracing::debug!(range = %range, ?duration, "restored from alternative {}/{total} ({source})", index + 1);
                return Ok(RestoredKeyedState {
                    backend,
                    source,
                    alternative: index + 1,
                    alternatives: total,
                    duration,
                });
            }
            Err(PluginError::Cancelled { .. }) => return Err(RestoreError::Cancelled { what: what() }),
            Err(error) => {
                tracing::warn!(range = %range, error = %error, "restore from alternative {}/{total} ({source}) failed; will retry while more alternatives are available", index + 1);
                failures.push(AlternativeFailure { index: index + 1, source, error });
            }
        }
    }
    Err(RestoreError::AllAlternativesFailed { what: what(), failures })
}

fn attempt(
    plugin: &Plugin,
    max_parallelism: u32,
    range: KeyGroupRange,
    pieces: &[KeyedRestorePiece],
    cancel: &CancelToken,
) -> Result<KeyedStateBackend, PluginError> {
    // A fresh backend per attempt: a failed attempt leaves nothing half-restored behind.
    let mut backend =
        KeyedStateBackend::new(max_parallelism, range).map_err(|e| PluginError::Runtime(e.to_string()))?;
    // Oldest first within each old subtask's chain: a group's full part, then its deltas.
    for piece in pieces {
        backend = plugin.restore_keyed_piece(piece, backend, cancel)?;
    }
    Ok(backend)
}

/// A successful operator state restore.
#[derive(Debug)]
pub struct RestoredOperatorState {
    /// The restored operator state.
    pub backend: OperatorStateBackend,
    /// Which copy was used.
    pub source: RestoreSource,
    /// 1-based alternative used.
    pub alternative: usize,
    /// Number of alternatives.
    pub alternatives: usize,
}

/// Restores the operator state of new subtask `subtask` of `new_parallelism` from `metadata`,
/// redistributing elements by their modes. The local copy is tried first only when every
/// subtask gets its own state back (same parallelism, no union state) and the local store
/// recorded this subtask's primary operator stream as the one it copies.
pub fn restore_operator(
    plugin: &Plugin,
    metadata: &CheckpointMetadata,
    subtask: u32,
    new_parallelism: u32,
    local: Option<&TaskLocalStateStore>,
    cancel: &CancelToken,
) -> Result<RestoredOperatorState, RestoreError> {
    check_plugin(metadata, plugin.info())?;
    let what = || format!("the operator state of subtask {subtask} from checkpoint {}", metadata.checkpoint_id);
    let old: Vec<Option<OperatorStateHandle>> = metadata.subtasks.iter().map(|s| s.operator.clone()).collect();
    if old.iter().all(Option::is_none) {
        return Ok(RestoredOperatorState {
            backend: OperatorStateBackend::new(),
            source: RestoreSource::Empty,
            alternative: 1,
            alternatives: 1,
        });
    }
    let primary = repartition(&old, new_parallelism).into_iter().nth(subtask as usize).unwrap_or_default();
    let mut alternatives: Vec<(RestoreSource, Vec<OperatorStreamAssignment>)> = Vec::new();
    if let (Some(store), true) = (local, is_identity(&old, new_parallelism)) {
        let own = old.get(subtask as usize).cloned().flatten();
        let snapshot = store.retrieve(metadata.checkpoint_id);
        if let Some(copy) = own.and_then(|own| snapshot.and_then(|s| s.operator_copy_of(&own))) {
            alternatives.push((RestoreSource::Local, vec![OperatorStreamAssignment::whole(&copy)]));
        }
    }
    alternatives.push((RestoreSource::Primary, primary));
    let total = alternatives.len();
    let mut failures = Vec::new();
    for (index, (source, assignments)) in alternatives.into_iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(RestoreError::Cancelled { what: what() });
        }
        let attempt = || -> Result<OperatorStateBackend, PluginError> {
            let mut backend = OperatorStateBackend::new();
            for a in &assignments {
                backend = plugin.restore_operator_cancellable(a, backend, cancel)?;
            }
            Ok(backend)
        };
        match attempt() {
            Ok(backend) => {
                tracing::debug!(subtask, "restored operator state from alternative {}/{total} ({source})", index + 1);
                return Ok(RestoredOperatorState { backend, source, alternative: index + 1, alternatives: total });
            }
            Err(PluginError::Cancelled { .. }) => return Err(RestoreError::Cancelled { what: what() }),
            Err(error) => {
                tracing::warn!(subtask, error = %error, "operator restore from alternative {}/{total} ({source}) failed; will retry while more alternatives are available", index + 1);
                failures.push(AlternativeFailure { index: index + 1, source, error });
            }
        }
    }
    Err(RestoreError::AllAlternativesFailed { what: what(), failures })
}
