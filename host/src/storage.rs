//! Durable checkpoint storage (the primary): a directory per job with one sub-directory per
//! checkpoint and a metadata file that, once present, makes the checkpoint complete.
//!
//! Layout: `<dir>/<job>/chk-<id>/{<state files>, _metadata}` and `<dir>/<job>/shared/`.
//! The metadata is written last, atomically (temp file, fsync, rename, fsync of the directory),
//! and carries a checksum: a checkpoint either has valid metadata and is restorable, or it
//! does not exist. Directories without metadata are leftovers of checkpoints that never
//! completed (a crash, an abort) and are removed at start-up.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::directories::validate_id;
use crate::handles::{HandleError, KeyGroupsStateHandle, OperatorStateHandle, StateHandleEnvelope, StreamStateHandle};
use crate::runtime::PluginInfo;
use crate::streams::FileStreamFactory;

/// Name of the metadata file inside a checkpoint directory.
pub const METADATA_FILE: &str = "_metadata";

/// The state one subtask acknowledged for a checkpoint (primary parts only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    /// Keyed state.
    pub keyed: Option<KeyGroupsStateHandle>,
    /// Operator (non-keyed) state.
    pub operator: Option<OperatorStateHandle>,
}

impl SubtaskState {
    /// Deletes the referenced files, logging (not failing on) errors: used when a checkpoint is
    /// aborted or subsumed.
    pub fn discard(&self) {
        if let Some(h) = &self.keyed {
            if let Err(e) = h.discard() {
                tracing::warn!(error = %e, "could not discard keyed state");
            }
        }
        if let Some(h) = &self.operator {
            if let Err(e) = h.discard() {
                tracing::warn!(error = %e, "could not discard operator state");
            }
        }
    }
}

impl SubtaskState {
    /// The same state with every stream mapped by `f` (to relocate files).
    pub fn map_streams(self, f: impl Fn(StreamStateHandle) -> StreamStateHandle) -> Self {
        SubtaskState { keyed: self.keyed.map(|h| h.map_stream(&f)), operator: self.operator.map(|h| h.map_stream(&f)) }
    }

    /// Deletes the referenced files except those `keep` also references: for a duplicate
    /// acknowledgement, whose state may be the very files a checkpoint already holds.
    pub fn discard_except(&self, keep: &SubtaskState) {
        let kept = |s: &crate::handles::StreamStateHandle| {
            [keep.keyed.as_ref().map(|h| h.stream()), keep.operator.as_ref().map(|h| h.stream())].contains(&Some(s))
        };
        if let Some(h) = self.keyed.as_ref().filter(|h| !kept(h.stream())) {
            if let Err(e) = h.discard() {
                tracing::warn!(error = %e, "could not discard keyed state");
            }
        }
        if let Some(h) = self.operator.as_ref().filter(|h| !kept(h.stream())) {
            if let Err(e) = h.discard() {
                tracing::warn!(error = %e, "could not discard operator state");
            }
        }
    }
}

/// Everything needed to restore a job from one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// The job.
    pub job_id: String,
    /// The plugin that wrote the state (restores with another format are refused).
    pub plugin: PluginInfo,
    /// Parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Position of the job's source at the checkpoint (records consumed before the barrier).
    pub source_offset: u64,
    /// Per subtask, by index.
    pub subtasks: Vec<SubtaskState>,
}

impl CheckpointMetadata {
    /// Total bytes of primary state.
    pub fn state_size(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.keyed.as_ref().map_or(0, |h| h.state_size()) + s.operator.as_ref().map_or(0, |h| h.state_size()))
            .sum()
    }
}

/// Errors of checkpoint storage; each names the file or checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// I/O on a path failed.
    #[error("checkpoint storage {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The metadata file is damaged.
    #[error("checkpoint metadata {path} is corrupted: {reason}")]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The job id cannot be a directory name.
    #[error("{0}")]
    InvalidId(#[from] crate::directories::InvalidId),
}

/// Encodes `value` with the handle envelope and a CRC-32C trailer.
pub fn encode_with_checksum<T: Serialize>(value: &T) -> Result<Vec<u8>, HandleError> {
    let mut bytes = StateHandleEnvelope::encode(value)?;
    let crc = crate::checksum::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Decodes what [`encode_with_checksum`] wrote, refusing damaged bytes.
pub fn decode_with_checksum<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() < 4 {
        return Err(format!("only {} bytes", bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let actual = crate::checksum::crc32c(body);
    if actual != expected {
        return Err(format!("checksum mismatch (content {actual:08x}, recorded {expected:08x})"));
    }
    StateHandleEnvelope::decode(body).map_err(|e| e.to_string())
}

/// A job's durable checkpoint storage in a directory.
#[derive(Debug, Clone)]
pub struct FileCheckpointStorage {
    root: PathBuf,
    inline_threshold: usize,
}

impl FileCheckpointStorage {
    /// Storage for `job_id` under `checkpoint_dir` (created if missing; made absolute so
    /// handles stay valid whatever the working directory).
    pub fn new(checkpoint_dir: &Path, job_id: &str, inline_threshold: usize) -> Result<Self, StorageError> {
        validate_id("job id", job_id)?;
        let io_err = |source| StorageError::Io { path: checkpoint_dir.to_path_buf(), source };
        std::fs::create_dir_all(checkpoint_dir).map_err(io_err)?;
        let root = checkpoint_dir.canonicalize().map_err(io_err)?.join(job_id);
        std::fs::create_dir_all(root.join("shared"))
            .map_err(|source| StorageError::Io { path: root.clone(), source })?;
        Ok(FileCheckpointStorage { root, inline_threshold })
    }

    /// The job's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of checkpoint `id`.
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("chk-{id}"))
    }

    /// Streams for checkpoint `id`.
    pub fn stream_factory(&self, id: u64) -> io::Result<FileStreamFactory> {
        FileStreamFactory::new(self.checkpoint_dir(id), self.root.join("shared"), self.inline_threshold)
    }

    /// Completes a checkpoint by writing its metadata atomically. State files are referred
    /// to relative to the job's directory, so a copied or moved checkpoint directory restores
    /// from its own files.
    pub fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<(), StorageError> {
        let dir = self.checkpoint_dir(metadata.checkpoint_id);
        let path = dir.join(METADATA_FILE);
        let relative = CheckpointMetadata {
            subtasks: metadata.subtasks.iter().map(|s| s.clone().map_streams(|h| h.relative_to(&self.root))).collect(),
            ..metadata.clone()
        };
        let bytes = encode_with_checksum(&relative)
            .map_err(|e| StorageError::Corrupted { path: path.clone(), reason: e.to_string() })?;
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io { path: dir.clone(), source })?;
        crate::fsutil::write_atomic(&path, &bytes).map_err(|source| StorageError::Io { path, source })
    }

    /// Reads the metadata of checkpoint `id`.
    pub fn read_metadata(&self, id: u64) -> Result<CheckpointMetadata, StorageError> {
        let path = self.checkpoint_dir(id).join(METADATA_FILE);
        let bytes = std::fs::read(&path).map_err(|source| StorageError::Io { path: path.clone(), source })?;
        let metadata: CheckpointMetadata =
            decode_with_checksum(&bytes).map_err(|reason| StorageError::Corrupted { path, reason })?;
        Ok(CheckpointMetadata {
            subtasks: metadata
                .subtasks
                .into_iter()
                .map(|s| s.map_streams(|h| h.resolved_against(&self.root)))
                .collect(),
            ..metadata
        })
    }

    /// Ids of the checkpoint directories, ascending, with whether each has a metadata file.
    fn checkpoint_dirs(&self) -> Result<Vec<(u64, bool)>, StorageError> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|source| StorageError::Io { path: self.root.clone(), source })?;
        let mut ids: Vec<(u64, bool)> = entries
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok()?;
                Some((id, e.path().join(METADATA_FILE).exists()))
            })
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Ids of the checkpoints that have metadata, ascending.
    pub fn completed_checkpoint_ids(&self) -> Result<Vec<u64>, StorageError> {
        Ok(self.checkpoint_dirs()?.into_iter().filter(|(_, done)| *done).map(|(id, _)| id).collect())
    }

    /// The newest checkpoint whose metadata reads back intact. A damaged newer one is skipped
    /// with a warning (and left in place for inspection): an older intact checkpoint is still
    /// a correct state to recover.
    pub fn latest_completed(&self) -> Result<Option<CheckpointMetadata>, StorageError> {
        for id in self.completed_checkpoint_ids()?.into_iter().rev() {
            match self.read_metadata(id) {
                Ok(m) => return Ok(Some(m)),
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e, "skipping checkpoint with unreadable metadata")
                }
            }
        }
        Ok(None)
    }

    /// Deletes checkpoint `id` and its files.
    pub fn discard_checkpoint(&self, id: u64) -> Result<(), StorageError> {
        let dir = self.checkpoint_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::Io { path: dir, source: e }),
            _ => Ok(()),
        }
    }

    /// Moves checkpoint `id` aside as `chk-<id>.unrestorable` (with a number if that exists):
    /// a checkpoint newer than the one a job restored, which could not be restored itself. It
    /// no longer counts as a checkpoint (nothing retains, restores or deletes it) and stays
    /// for inspection. Returns where it went.
    pub fn quarantine(&self, id: u64) -> Result<PathBuf, StorageError> {
        let from = self.checkpoint_dir(id);
        let mut to = self.root.join(format!("chk-{id}.unrestorable"));
        let mut n = 1;
        while to.exists() {
            n += 1;
            to = self.root.join(format!("chk-{id}.unrestorable-{n}"));
        }
        std::fs::rename(&from, &to).map_err(|source| StorageError::Io { path: from, source })?;
        Ok(to)
    }

    /// Removes directories of checkpoints that never completed. Call only when no checkpoint
    /// is in flight (at start-up).
    pub fn remove_incomplete(&self) -> Result<Vec<u64>, StorageError> {
        let mut removed = Vec::new();
        for (id, done) in self.checkpoint_dirs()? {
            if !done {
                self.discard_checkpoint(id)?;
                removed.push(id);
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(id: u64) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: id,
            job_id: "job".into(),
            plugin: PluginInfo {
                name: "p".into(),
                version: "1".into(),
                format: "f".into(),
                format_version: 1,
                deterministic: true,
                content_hash: "00".into(),
            },
            parallelism: 1,
            max_parallelism: 128,
            source_offset: id * 10,
            subtasks: vec![SubtaskState::default()],
        }
    }

    #[test]
    fn metadata_completes_a_checkpoint_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileCheckpointStorage::new(dir.path(), "job", 0).unwrap();
        std::fs::create_dir_all(s.checkpoint_dir(1)).unwrap();
        assert!(s.latest_completed().unwrap().is_none());
        s.write_metadata(&metadata(1)).unwrap();
        s.write_metadata(&metadata(2)).unwrap();
        assert_eq!(s.completed_checkpoint_ids().unwrap(), vec![1, 2]);
        assert_eq!(s.latest_completed().unwrap().unwrap(), metadata(2));
    }

    #[test]
    fn corrupted_newest_metadata_falls_back_to_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileCheckpointStorage::new(dir.path(), "job", 0).unwrap();
        s.write_metadata(&metadata(1)).unwrap();
        s.write_metadata(&metadata(2)).unwrap();
        let path = s.checkpoint_dir(2).join(METADATA_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let e = s.read_metadata(2).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch") && e.contains("chk-2"), "{e}");
        assert_eq!(s.latest_completed().unwrap().unwrap().checkpoint_id, 1);
    }

    #[test]
    fn incomplete_checkpoints_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileCheckpointStorage::new(dir.path(), "job", 0).unwrap();
        s.write_metadata(&metadata(1)).unwrap();
        std::fs::create_dir_all(s.checkpoint_dir(2)).unwrap();
        std::fs::write(s.checkpoint_dir(2).join("partial"), b"x").unwrap();
        assert_eq!(s.remove_incomplete().unwrap(), vec![2]);
        assert!(!s.checkpoint_dir(2).exists());
        assert!(s.checkpoint_dir(1).exists());
    }

    #[test]
    fn invalid_job_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileCheckpointStorage::new(dir.path(), "../escape", 0).is_err());
    }
}
