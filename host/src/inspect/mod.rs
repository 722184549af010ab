//! Looking at checkpoints from outside a running job: what exists, what it holds, whether
//! every byte is intact, and the state it decodes to. The `snapshot-host checkpoint`
//! commands are built on this; embedders can use it for their own tools.
//!
//! Everything here only reads. In particular the local copies are found by scanning the
//! local recovery roots, not by opening the subtasks' local stores (opening a store deletes
//! what it cannot use, which is right for a starting job and wrong for a tool asked to look).
//! Works on every primary the storage supports: a directory, S3, memory.

mod dump;
mod local_copies;
mod verify;

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

/// Whether a shown key group is a full group or a delta over an earlier checkpoint's.
pub use crate::handles::GroupPart;
pub use dump::{Bytes, DumpFilter, DumpRow};
pub use local_copies::{LocalCopy, LocalCopyStatus};
pub use verify::{CheckedFile, Damage, VerifyReport};

use crate::handles::{DistributionMode, StreamStateHandle};
use crate::key_groups::KeyGroupRange;
use crate::runtime::PluginInfo;
use crate::storage::{CheckpointMetadata, CheckpointStorage, S3Settings, StorageError, StorageLocation};
use crate::streams::FileStreamFactory;
use crate::Config;

/// Errors of inspecting checkpoints; each names the job, checkpoint or file.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The storage could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// No job of that name has checkpoints at the location.
    #[error("no job {job:?} at {location}{}", known_jobs(.known))]
    UnknownJob {
        /// The job asked for.
        job: String,
        /// The primary.
        location: String,
        /// The jobs that are there.
        known: Vec<String>,
    },
    /// No completed checkpoint with that id.
    #[error("job {job:?} has no completed checkpoint {id} at {location} (completed: {})", ids(.completed))]
    UnknownCheckpoint {
        /// The job.
        job: String,
        /// The id asked for.
        id: u64,
        /// The primary.
        location: String,
        /// The ids that exist.
        completed: Vec<u64>,
    },
    /// Decoding the state failed (the plugin refused the format, or the bytes are damaged).
    #[error("decoding checkpoint {id}: {source}")]
    Decode {
        /// The checkpoint.
        id: u64,
        /// The cause.
        #[source]
        source: crate::restore::RestoreError,
    },
    /// Writing the output failed (a closed pipe, a full disk).
    #[error("writing the dump: {0}")]
    Output(#[source] std::io::Error),
}

fn known_jobs(known: &[String]) -> String {
    if known.is_empty() {
        " (no job has checkpoints there)".into()
    } else {
        format!(" (jobs there: {})", known.join(", "))
    }
}

fn ids(ids: &[u64]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// One line of `checkpoint list`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    /// The checkpoint id.
    pub id: u64,
    /// When its metadata was written, seconds since the Unix epoch (as the store recorded it).
    pub completed_at: Option<f64>,
    /// The same, as RFC 3339 (UTC).
    pub completed_at_rfc3339: Option<String>,
    /// Bytes of primary state.
    pub size: u64,
    /// Subtasks (the parallelism it was taken with).
    pub subtasks: u32,
    /// Key groups.
    pub max_parallelism: u32,
    /// The source position it resumes from.
    pub source_offset: u64,
    /// The plugin that wrote it.
    pub plugin: PluginInfo,
    /// Subtasks with a local copy on this machine that restores would use.
    pub local_copies: Vec<u32>,
    /// Why the metadata could not be read (the rest of the row is then empty).
    pub error: Option<String>,
}

/// One subtask's part of `checkpoint show`.
#[derive(Debug, Clone, Serialize)]
pub struct SubtaskDetails {
    /// Subtask index.
    pub subtask: u32,
    /// Keyed state.
    pub keyed: Option<KeyedDetails>,
    /// Operator state.
    pub operator: Option<OperatorDetails>,
    /// Local copies of this subtask's state found on this machine.
    pub local_copies: Vec<LocalCopy>,
}

/// A keyed state handle: its key groups and where each starts.
#[derive(Debug, Clone, Serialize)]
pub struct KeyedDetails {
    /// First key group, if any.
    pub first_key_group: Option<u32>,
    /// Last key group, if any.
    pub last_key_group: Option<u32>,
    /// The stream holding them.
    pub stream: StreamDetails,
    /// Per key group: its offset in the stream and its length.
    pub key_groups: Vec<KeyGroupDetails>,
    /// With incremental checkpoints: the earlier checkpoints' streams (in the primary's shared
    /// area) that some key group's chain still runs through, oldest first. A restore reads a
    /// group's newest full part there, then its deltas, then this checkpoint's own part.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<EarlierStreamDetails>,
}

/// An earlier checkpoint's keyed stream in an incremental chain.
#[derive(Debug, Clone, Serialize)]
pub struct EarlierStreamDetails {
    /// The checkpoint that wrote it.
    pub checkpoint_id: u64,
    /// Where it is.
    pub stream: StreamDetails,
    /// Key groups it holds in full.
    pub full_groups: usize,
    /// Key groups it holds as deltas.
    pub delta_groups: usize,
}

/// Where one key group is.
#[derive(Debug, Clone, Serialize)]
pub struct KeyGroupDetails {
    /// The key group.
    pub key_group: u32,
    /// Offset of its first byte.
    pub offset: u64,
    /// Its bytes.
    pub len: u64,
    /// What this checkpoint's stream holds of it: the whole group, or (incremental
    /// checkpoints) a delta on the chain before.
    pub part: GroupPart,
}

/// An operator state handle: its named list states and their partitions.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorDetails {
    /// The stream holding them.
    pub stream: StreamDetails,
    /// Per state.
    pub states: Vec<OperatorStateDetails>,
}

/// One named operator list state.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorStateDetails {
    /// Its name.
    pub name: String,
    /// How it is redistributed.
    pub mode: DistributionMode,
    /// Offsets of its partitions (list elements) in the stream.
    pub offsets: Vec<u64>,
}

/// A stream: where its bytes are.
#[derive(Debug, Clone, Serialize)]
pub struct StreamDetails {
    /// The file or object (or `<inline, N bytes>` for bytes kept in the metadata).
    pub location: String,
    /// Bytes.
    pub size: u64,
    /// The whole stream's CRC-32C as recorded, hex.
    pub crc32c: Option<String>,
}

impl StreamDetails {
    fn of(handle: &StreamStateHandle) -> Self {
        StreamDetails {
            location: handle.describe(),
            size: handle.size(),
            crc32c: handle.identity().crc32c.map(|c| format!("{c:08x}")),
        }
    }
}

/// `checkpoint show`: the summary and every subtask's handles.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointDetails {
    /// The summary.
    #[serde(flatten)]
    pub summary: CheckpointSummary,
    /// The job.
    pub job_id: String,
    /// Per subtask.
    pub subtask_state: Vec<SubtaskDetails>,
}

/// Reads one job's checkpoints and local copies.
#[derive(Debug)]
pub struct CheckpointInspector {
    storage: CheckpointStorage,
    local_roots: Vec<PathBuf>,
    job_id: String,
}

impl CheckpointInspector {
    /// The inspector of `job_id`'s checkpoints at the primary `config` names, with local
    /// copies looked for under its local recovery roots. Fails, listing the jobs that are
    /// there, when the job has no checkpoint storage: a tool must not create it.
    pub fn open(config: &Config, job_id: &str) -> Result<Self, InspectError> {
        let location = &config.checkpoint_storage;
        let known = CheckpointStorage::list_jobs(location, &config.s3)?;
        if !known.iter().any(|j| j == job_id) {
            return Err(InspectError::UnknownJob { job: job_id.into(), location: location.to_string(), known });
        }
        let storage =
            CheckpointStorage::open(location, &config.s3, job_id, FileStreamFactory::DEFAULT_INLINE_THRESHOLD)?;
        Ok(CheckpointInspector { storage, local_roots: config.local_recovery.root_dirs.clone(), job_id: job_id.into() })
    }

    /// The jobs with checkpoint storage at `location`.
    pub fn jobs(location: &StorageLocation, s3: &S3Settings) -> Result<Vec<String>, InspectError> {
        Ok(CheckpointStorage::list_jobs(location, s3)?)
    }

    /// The job's storage.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The job.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Ids of the completed checkpoints, ascending.
    pub fn completed(&self) -> Result<Vec<u64>, InspectError> {
        Ok(self.storage.completed_checkpoint_ids()?)
    }

    /// The metadata of completed checkpoint `id`, with an error naming the ids that exist
    /// when there is no such checkpoint.
    pub fn metadata(&self, id: u64) -> Result<CheckpointMetadata, InspectError> {
        let completed = self.completed()?;
        if !completed.contains(&id) {
            return Err(InspectError::UnknownCheckpoint {
                job: self.job_id.clone(),
                id,
                location: self.storage.url().to_string(),
                completed,
            });
        }
        Ok(self.storage.read_metadata(id)?)
    }

    /// Every completed checkpoint, oldest first; one whose metadata is unreadable is listed
    /// with the reason instead of failing the listing.
    pub fn list(&self) -> Result<Vec<CheckpointSummary>, InspectError> {
        let copies = self.local_copies()?;
        let mut out = Vec::new();
        for id in self.completed()? {
            let completed_at = self.storage.completed_at(id).ok();
            let row = match self.storage.read_metadata(id) {
                Ok(metadata) => {
                    let usable = copies
                        .iter()
                        .filter(|c| c.checkpoint_id == id)
                        .filter(|c| c.status(&metadata) == LocalCopyStatus::Usable)
                        .map(|c| c.subtask)
                        .collect::<std::collections::BTreeSet<_>>();
                    summary(&metadata, completed_at, usable.into_iter().collect(), None)
                }
                Err(e) => CheckpointSummary {
                    id,
                    completed_at: completed_at.map(seconds),
                    completed_at_rfc3339: completed_at.map(rfc3339),
                    size: 0,
                    subtasks: 0,
                    max_parallelism: 0,
                    source_offset: 0,
                    plugin: PluginInfo::default(),
                    local_copies: Vec::new(),
                    error: Some(e.to_string()),
                },
            };
            out.push(row);
        }
        Ok(out)
    }

    /// Checkpoint `id` in detail: per subtask its key groups with offsets and lengths, its
    /// operator states with partition offsets, its streams and its local copies.
    pub fn show(&self, id: u64) -> Result<CheckpointDetails, InspectError> {
        let metadata = self.metadata(id)?;
        let copies: Vec<LocalCopy> = self.local_copies()?.into_iter().filter(|c| c.checkpoint_id == id).collect();
        let completed_at = self.storage.completed_at(id).ok();
        let mut usable = Vec::new();
        let mut subtask_state = Vec::new();
        for (index, state) in metadata.subtasks.iter().enumerate() {
            let index = index as u32;
            let local: Vec<LocalCopy> = copies
                .iter()
                .filter(|c| c.subtask == index)
                .cloned()
                .map(|mut c| {
                    c.describe_status(&metadata);
                    c
                })
                .collect();
            if local.iter().any(|c| c.status(&metadata) == LocalCopyStatus::Usable) {
                usable.push(index);
            }
            subtask_state.push(SubtaskDetails {
                subtask: index,
                keyed: state.keyed.as_ref().map(|h| {
                    let range: KeyGroupRange = h.key_group_range();
                    let size = h.stream().size();
                    let offsets: Vec<(u32, u64)> = h.offsets().iter().collect();
                    let key_groups = offsets
                        .iter()
                        .enumerate()
                        .map(|(i, &(key_group, offset))| {
                            // A key group runs to the next one's start (offsets ascend: the
                            // host checked the marks), the last to the end of the stream.
                            let end = offsets.get(i + 1).map_or(size, |&(_, next)| next);
                            let part = state
                                .keyed_chain
                                .as_ref()
                                .and_then(|c| c.parts.get(i).copied())
                                .unwrap_or(GroupPart::Full);
                            KeyGroupDetails { key_group, offset, len: end.saturating_sub(offset), part }
                        })
                        .collect();
                    let earlier = state
                        .keyed_chain
                        .iter()
                        .flat_map(|c| &c.earlier)
                        .map(|link| EarlierStreamDetails {
                            checkpoint_id: link.checkpoint_id,
                            stream: StreamDetails::of(link.handle.stream()),
                            full_groups: link.parts.iter().filter(|p| **p == GroupPart::Full).count(),
                            delta_groups: link.parts.iter().filter(|p| **p == GroupPart::Delta).count(),
                        })
                        .collect();
                    KeyedDetails {
                        first_key_group: range.start(),
                        last_key_group: range.end(),
                        stream: StreamDetails::of(h.stream()),
                        key_groups,
                        earlier,
                    }
                }),
                operator: state.operator.as_ref().map(|h| OperatorDetails {
                    stream: StreamDetails::of(h.stream()),
                    states: h
                        .partitions()
                        .iter()
                        .map(|(name, p)| OperatorStateDetails {
                            name: name.clone(),
                            mode: p.mode,
                            offsets: p.offsets.clone(),
                        })
                        .collect(),
                }),
                local_copies: local,
            });
        }
        Ok(CheckpointDetails {
            summary: summary(&metadata, completed_at, usable, None),
            job_id: metadata.job_id.clone(),
            subtask_state,
        })
    }

    /// Every local copy of this job's state under the local roots, of any checkpoint.
    pub fn local_copies(&self) -> Result<Vec<LocalCopy>, InspectError> {
        Ok(local_copies::scan(&self.local_roots, &self.job_id))
    }
}

fn summary(
    metadata: &CheckpointMetadata,
    completed_at: Option<SystemTime>,
    local_copies: Vec<u32>,
    error: Option<String>,
) -> CheckpointSummary {
    CheckpointSummary {
        id: metadata.checkpoint_id,
        completed_at: completed_at.map(seconds),
        completed_at_rfc3339: completed_at.map(rfc3339),
        size: metadata.state_size(),
        subtasks: metadata.parallelism,
        max_parallelism: metadata.max_parallelism,
        source_offset: metadata.source_offset,
        plugin: metadata.plugin.clone(),
        local_copies,
        error,
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64 / 1000.0)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
