//! Durable checkpoint storage (the primary), on one abstraction for every backend: the
//! `object_store` crate's `ObjectStore`, over a local directory, an S3-compatible bucket or
//! memory (see [`StorageLocation`]).
//!
//! Layout below the configured location: `<job>/chk-<id>/{<state objects>, _metadata}` and
//! `<job>/shared/`. A checkpoint is complete once its `_metadata` exists and verifies: it is
//! written last, with put-if-absent (an atomic rename on files, `If-None-Match: *` on S3), and
//! carries a checksum. Listing tolerates checkpoints still being written (no metadata yet);
//! at start-up those are leftovers of a crash or an abort and are removed.
//!
//! State streams of a directory primary are written with the native file streams (fsync,
//! rename on completion); on object stores they upload in parts while the strategy writes
//! ([`crate::streams::ObjectStreamFactory`]). Metadata refers to state relative to the job
//! root, so a checkpoint copied or synced elsewhere restores from its new place.

pub mod backend;
pub mod fault;
/// The `object_store` crate this storage is built on, for embedders that bring their own store.
pub use object_store;
mod location;
mod metadata;
pub mod s3;
mod shared;
#[cfg(test)]
mod shared_faults;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use location::StorageLocation;
pub use metadata::{decode_with_checksum, encode_with_checksum, CheckpointMetadata, SubtaskState};
pub use s3::S3Settings;
pub use shared::{SharedStateRegistry, SHARED_DIR};

use crate::directories::validate_id;
use crate::streams::{CheckpointStreamFactory, FileStreamFactory, ObjectStreamFactory};
use backend::{block_on, ObjectBackend};

/// Name of the metadata object inside a checkpoint directory.
pub const METADATA_FILE: &str = "_metadata";

/// Errors of checkpoint storage; each names the object or checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Local I/O failed.
    #[error("checkpoint storage {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A request to the store failed (after its retries).
    #[error("checkpoint storage {location}: {source}")]
    Store {
        /// The object or prefix, as a URL.
        location: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// The metadata is damaged.
    #[error("checkpoint metadata {location} is corrupted: {reason}")]
    Corrupted {
        /// The object, as a URL.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The job id cannot be a directory name.
    #[error("{0}")]
    InvalidId(#[from] crate::directories::InvalidId),
}

/// A job's durable checkpoint storage.
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    location: StorageLocation,
    backend: Arc<ObjectBackend>,
    // The job's directory, for a directory primary.
    local_root: Option<PathBuf>,
    inline_threshold: usize,
}

impl CheckpointStorage {
    /// Storage for `job_id` in a local directory (created if missing; made absolute so
    /// handles stay valid whatever the working directory).
    pub fn new(checkpoint_dir: &Path, job_id: &str, inline_threshold: usize) -> Result<Self, StorageError> {
        Self::open(&StorageLocation::Directory(checkpoint_dir.into()), &S3Settings::default(), job_id, inline_threshold)
    }

    /// Storage for `job_id` at `location`. An S3 location is checked right away (one listing
    /// request), so a wrong endpoint, bucket or credential fails the start, not the first
    /// checkpoint.
    pub fn open(
        location: &StorageLocation,
        s3: &S3Settings,
        job_id: &str,
        inline_threshold: usize,
    ) -> Result<Self, StorageError> {
        validate_id("job id", job_id)?;
        // S3 refuses parts below 5 MiB (the configuration refuses them too); other stores take
        // any size (tests use small parts).
        let part_size = match location {
            StorageLocation::S3 { .. } => s3.part_size.max(s3::MIN_PART_SIZE),
            _ => s3.part_size.max(1),
        };
        let max_concurrent_uploads = s3.max_concurrent_uploads.max(1);
        let (store, base, url, local_root): (Arc<dyn ObjectStore>, ObjectPath, String, Option<PathBuf>) = match location
        {
            StorageLocation::Directory(dir) => {
                let io_err = |source| StorageError::Io { path: dir.clone(), source };
                std::fs::create_dir_all(dir).map_err(io_err)?;
                let root = dir.canonicalize().map_err(io_err)?.join(job_id);
                std::fs::create_dir_all(root.join(SHARED_DIR))
                    .map_err(|source| StorageError::Io { path: root.clone(), source })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
                    .map_err(|source| StorageError::Store { location: root.display().to_string(), source })?
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                (Arc::new(store), ObjectPath::default(), format!("file://{}", root.display()), Some(root))
            }
            StorageLocation::S3 { bucket, prefix } => {
                let url = format!("{location}/{job_id}");
                let store = s3.build(bucket).map_err(|source| StorageError::Store { location: url.clone(), source })?;
                let base = prefix.split('/').filter(|s| !s.is_empty()).fold(ObjectPath::default(), |p, s| p.join(s));
                (store, base.join(job_id), url, None)
            }
            StorageLocation::Memory { name } => {
                let url = format!("{location}/{job_id}");
                (backend::memory_store(name), ObjectPath::from(job_id), url, None)
            }
        };
        let id = match (location, s3.effective_endpoint()) {
            (StorageLocation::S3 { .. }, Some(endpoint)) => format!("{url}?endpoint={endpoint}"),
            _ => url.clone(),
        };
        let backend = Arc::new(ObjectBackend {
            store,
            base,
            url,
            id,
            part_size,
            max_concurrent_uploads,
            pending_aborts: Default::default(),
        });
        let storage = CheckpointStorage { location: location.clone(), backend, local_root, inline_threshold };
        if location.is_object_store() {
            block_on(storage.backend.store.list_with_delimiter(Some(&storage.backend.base)))
                .map_err(|source| storage.store_error("", source))?;
            backend::register(storage.backend.clone());
        }
        Ok(storage)
    }

    /// Where the storage is (as configured).
    pub fn location(&self) -> &StorageLocation {
        &self.location
    }

    /// The job's root as a URL (`file:///…/job`, `s3://bucket/prefix/job`, `memory://name/job`).
    pub fn url(&self) -> &str {
        &self.backend.url
    }

    /// The job's directory, when the primary is a local directory.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// The directory of checkpoint `id` of a directory primary (for tests and tools that
    /// look at the files); `None` on object stores.
    pub fn checkpoint_dir(&self, id: u64) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(format!("chk-{id}")))
    }

    /// Multipart uploads of failed streams whose abort the store has not taken yet (it was
    /// unreachable); retries them first.
    pub fn pending_aborts(&self) -> usize {
        self.backend.retry_aborts()
    }

    /// The object store and the key of `relative` below the job root: for tools that look at
    /// raw objects (and tests that damage them).
    pub fn raw(&self, relative: &str) -> (&Arc<dyn ObjectStore>, ObjectPath) {
        (&self.backend.store, self.backend.key(relative))
    }

    fn store_error(&self, relative: &str, source: object_store::Error) -> StorageError {
        StorageError::Store { location: self.url_of(relative), source }
    }

    fn url_of(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.backend.url.clone()
        } else {
            format!("{}/{relative}", self.backend.url)
        }
    }

    /// Streams for checkpoint `id`.
    pub fn stream_factory(&self, id: u64) -> io::Result<Box<dyn CheckpointStreamFactory>> {
        Ok(match &self.local_root {
            Some(root) => Box::new(FileStreamFactory::new(
                root.join(format!("chk-{id}")),
                root.join(SHARED_DIR),
                self.inline_threshold,
            )?),
            None => {
                Box::new(ObjectStreamFactory::new(self.backend.clone(), format!("chk-{id}"), self.inline_threshold))
            }
        })
    }

    /// Completes a checkpoint by writing its metadata, put-if-absent: metadata is written once
    /// and never replaced. State files are referred to relative to the job's root, so a copied
    /// or moved checkpoint restores from its own files.
    pub fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<(), StorageError> {
        let relative = format!("chk-{}/{METADATA_FILE}", metadata.checkpoint_id);
        let persisted = CheckpointMetadata {
            subtasks: metadata
                .subtasks
                .iter()
                .map(|s| {
                    s.clone().map_streams(|h| match &self.local_root {
                        Some(root) => h.relative_to(root),
                        None => h,
                    })
                })
                .collect(),
            ..metadata.clone()
        };
        let bytes = encode_with_checksum(&persisted)
            .map_err(|e| StorageError::Corrupted { location: self.url_of(&relative), reason: e.to_string() })?;
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        block_on(self.backend.store.put_opts(&self.backend.key(&relative), PutPayload::from(bytes), options))
            .map(|_| ())
            .map_err(|source| self.store_error(&relative, source))
    }

    /// Reads the metadata of checkpoint `id`.
    pub fn read_metadata(&self, id: u64) -> Result<CheckpointMetadata, StorageError> {
        let relative = format!("chk-{id}/{METADATA_FILE}");
        let key = self.backend.key(&relative);
        let bytes = block_on(async { self.backend.store.get(&key).await?.bytes().await })
            .map_err(|source| self.store_error(&relative, source))?;
        let metadata = metadata::decode_metadata(&bytes)
            .map_err(|reason| StorageError::Corrupted { location: self.url_of(&relative), reason })?;
        let resolve = |h: crate::handles::StreamStateHandle| match &self.local_root {
            Some(root) => h.resolved_against(root),
            None => h.rebased(&self.backend.id),
        };
        Ok(CheckpointMetadata {
            subtasks: metadata.subtasks.into_iter().map(|s| s.map_streams(resolve)).collect(),
            ..metadata
        })
    }

    /// When checkpoint `id` completed: the time its metadata was written (the store's
    /// modification time of `_metadata`).
    pub fn completed_at(&self, id: u64) -> Result<std::time::SystemTime, StorageError> {
        let relative = format!("chk-{id}/{METADATA_FILE}");
        let meta = block_on(self.backend.store.head(&self.backend.key(&relative)))
            .map_err(|source| self.store_error(&relative, source))?;
        let millis = meta.last_modified.timestamp_millis().max(0) as u64;
        Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis))
    }

    /// The jobs that have checkpoint storage at `location` (their directory names), sorted:
    /// for tools that are not told which job to look at. Reading only; nothing is created.
    pub fn list_jobs(location: &StorageLocation, s3: &S3Settings) -> Result<Vec<String>, StorageError> {
        let mut jobs = match location {
            StorageLocation::Directory(dir) => match std::fs::read_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(source) => return Err(StorageError::Io { path: dir.clone(), source }),
                Ok(entries) => entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect(),
            },
            StorageLocation::S3 { bucket, prefix } => {
                let url = location.to_string();
                let store = s3.build(bucket).map_err(|source| StorageError::Store { location: url.clone(), source })?;
                let base = prefix.split('/').filter(|s| !s.is_empty()).fold(ObjectPath::default(), |p, s| p.join(s));
                Self::prefixes(store.as_ref(), &base, &url)?
            }
            StorageLocation::Memory { name } => {
                Self::prefixes(backend::memory_store(name).as_ref(), &ObjectPath::default(), &location.to_string())?
            }
        };
        jobs.retain(|j| validate_id("job id", j).is_ok());
        jobs.sort();
        Ok(jobs)
    }

    fn prefixes(store: &dyn ObjectStore, base: &ObjectPath, url: &str) -> Result<Vec<String>, StorageError> {
        let listing = block_on(store.list_with_delimiter(Some(base)))
            .map_err(|source| StorageError::Store { location: url.to_string(), source })?;
        Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }

    /// Ids of the checkpoint directories, ascending, with whether each has metadata.
    fn checkpoint_dirs(&self) -> Result<Vec<(u64, bool)>, StorageError> {
        let base = &self.backend.base;
        let listing = block_on(self.backend.store.list_with_delimiter(Some(base)))
            .map_err(|source| self.store_error("", source))?;
        let mut ids = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(id) = prefix.filename().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let relative = format!("chk-{id}/{METADATA_FILE}");
            let done = match block_on(self.backend.store.head(&self.backend.key(&relative))) {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(source) => return Err(self.store_error(&relative, source)),
            };
            ids.push((id, done));
        }
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

    /// Keys of every object below `relative` (a directory of the job root).
    fn objects_below(&self, relative: &str) -> Result<Vec<ObjectPath>, StorageError> {
        let prefix = self.backend.key(relative);
        block_on(self.backend.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect::<Vec<_>>())
            .map_err(|source| self.store_error(relative, source))
    }

    /// Deletes checkpoint `id` and its state: the metadata first, so that a deletion cut
    /// short leaves an incomplete checkpoint (cleaned up at start-up), never a complete one
    /// missing state.
    pub fn discard_checkpoint(&self, id: u64) -> Result<(), StorageError> {
        let dir = format!("chk-{id}");
        let metadata = format!("{dir}/{METADATA_FILE}");
        match block_on(self.backend.store.delete(&self.backend.key(&metadata))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(self.store_error(&metadata, source)),
        }
        if let Some(path) = self.checkpoint_dir(id) {
            return match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::Io { path, source: e }),
                _ => Ok(()),
            };
        }
        self.delete_below(&dir)?;
        Ok(())
    }

    /// Moves checkpoint `id` aside as `chk-<id>.unrestorable` (with a number if that exists):
    /// a checkpoint newer than the one a job restored, which could not be restored itself. It
    /// no longer counts as a checkpoint (nothing retains, restores or deletes it) and stays
    /// for inspection. Returns where it went.
    pub fn quarantine(&self, id: u64) -> Result<String, StorageError> {
        let from = format!("chk-{id}");
        let taken = block_on(self.backend.store.list_with_delimiter(Some(&self.backend.base)))
            .map_err(|source| self.store_error("", source))?
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect::<Vec<_>>();
        let mut to = format!("{from}.unrestorable");
        let mut n = 1;
        while taken.contains(&to) {
            n += 1;
            to = format!("{from}.unrestorable-{n}");
        }
        if let (Some(root), Some(dir)) = (&self.local_root, self.checkpoint_dir(id)) {
            // One atomic rename on a filesystem.
            let target = root.join(&to);
            std::fs::rename(&dir, &target).map_err(|source| StorageError::Io { path: dir, source })?;
            return Ok(target.display().to_string());
        }
        // On object stores: copy everything, then delete the metadata first (from then on the
        // original is no checkpoint), then the rest.
        let from_key = self.backend.key(&from);
        let to_key = self.backend.key(&to);
        let mut keys = self.objects_below(&from)?;
        keys.sort_by_key(|k| k.filename() == Some(METADATA_FILE));
        for key in &keys {
            let rest: Vec<_> = key.prefix_match(&from_key).map(|parts| parts.collect()).unwrap_or_default();
            let target = rest.into_iter().fold(to_key.clone(), |p, part| p.join(part));
            block_on(self.backend.store.copy(key, &target)).map_err(|source| self.store_error(&from, source))?;
        }
        self.discard_checkpoint(id)?;
        Ok(self.url_of(&to))
    }

    /// Deletes every checkpoint and shared object of the job (a demo's fresh start).
    pub fn clear(&self) -> Result<(), StorageError> {
        if let Some(root) = &self.local_root {
            for entry in std::fs::read_dir(root).map_err(|source| StorageError::Io { path: root.clone(), source })? {
                let path = entry.map_err(|source| StorageError::Io { path: root.clone(), source })?.path();
                let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                removed.map_err(|source| StorageError::Io { path, source })?;
            }
            return Ok(());
        }
        self.delete_below("")
    }

    /// Deletes every object below `relative` (batched where the store can).
    fn delete_below(&self, relative: &str) -> Result<(), StorageError> {
        let keys = self.objects_below(relative)?;
        let requests = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
        let results: Vec<_> = block_on(self.backend.store.delete_stream(requests).collect::<Vec<_>>());
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(self.store_error(relative, source)),
            }
        }
        Ok(())
    }

    /// The objects in the shared area (`shared/<name>`), sorted.
    pub fn shared_objects(&self) -> Result<Vec<String>, StorageError> {
        let mut objects = match &self.local_root {
            Some(root) => {
                let dir = root.join(SHARED_DIR);
                let io_err = |source| StorageError::Io { path: dir.clone(), source };
                match std::fs::read_dir(&dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                    Err(source) => return Err(io_err(source)),
                    Ok(entries) => {
                        let mut names = Vec::new();
                        for entry in entries {
                            let name = entry.map_err(io_err)?.file_name();
                            names.push(format!("{SHARED_DIR}/{}", name.to_string_lossy()));
                        }
                        names
                    }
                }
            }
            None => {
                let base = self.backend.key("");
                self.objects_below(SHARED_DIR)?
                    .into_iter()
                    .filter_map(|key| {
                        let parts: Vec<String> = key.prefix_match(&base)?.map(|p| p.as_ref().to_string()).collect();
                        Some(parts.join("/"))
                    })
                    .collect()
            }
        };
        objects.sort();
        Ok(objects)
    }

    /// Deletes `objects` of the shared area (keys as [`shared_objects`](Self::shared_objects)
    /// names them); one already gone counts as deleted. Stops at the first failure: what is
    /// left is swept at the next start-up.
    pub fn delete_shared(&self, objects: &[String]) -> Result<(), StorageError> {
        for object in objects {
            if !object.starts_with(&format!("{SHARED_DIR}/")) || object.split('/').any(|p| p == "..") {
                return Err(StorageError::Corrupted {
                    location: self.url_of(object),
                    reason: "not an object of the shared area".into(),
                });
            }
            match &self.local_root {
                Some(root) => match std::fs::remove_file(root.join(object)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(StorageError::Io { path: root.join(object), source: e })
                    }
                    _ => {}
                },
                None => match block_on(self.backend.store.delete(&self.backend.key(object))) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(source) => return Err(self.store_error(object, source)),
                },
            }
            tracing::debug!(object = %object, "deleted a shared object no retained checkpoint refers to");
        }
        Ok(())
    }

    /// The shared-state registry as the completed checkpoints in storage define it: each
    /// holds the shared objects its metadata names. Also returns the checkpoints whose
    /// metadata could not be read (what they refer to is unknown).
    pub fn shared_state_registry(&self) -> Result<(SharedStateRegistry, Vec<(u64, StorageError)>), StorageError> {
        let mut registry = SharedStateRegistry::new();
        let mut unreadable = Vec::new();
        for id in self.completed_checkpoint_ids()? {
            match self.read_metadata(id) {
                Ok(metadata) => registry.register(id, metadata.shared_objects()),
                Err(e) => unreadable.push((id, e)),
            }
        }
        Ok((registry, unreadable))
    }

    /// Deletes the shared objects no completed checkpoint refers to: uploads of checkpoints
    /// that never completed, and objects whose deletion a crash or a failure cut short.
    /// Call only when no checkpoint is in flight (at start-up). Deletes nothing when the
    /// metadata of some checkpoint cannot be read; returns the deleted objects.
    pub fn sweep_shared(&self) -> Result<Vec<String>, StorageError> {
        let (registry, unreadable) = self.shared_state_registry()?;
        if let Some((id, e)) = unreadable.first() {
            tracing::warn!(
                checkpoint = id,
                error = %e,
                "not sweeping the shared area: what this checkpoint refers to cannot be read"
            );
            return Ok(Vec::new());
        }
        let orphans: Vec<String> = self.shared_objects()?.into_iter().filter(|o| !registry.is_held(o)).collect();
        self.delete_shared(&orphans)?;
        if !orphans.is_empty() {
            tracing::info!(objects = orphans.len(), "removed shared objects no checkpoint refers to");
        }
        Ok(orphans)
    }

    /// Removes checkpoints that never completed. Call only when no checkpoint is in flight
    /// (at start-up).
    pub fn remove_incomplete(&self) -> Result<Vec<u64>, StorageError> {
        self.backend.retry_aborts();
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

    // The behaviour of every backend is tested by one suite: tests/storage_conformance.rs.

    #[test]
    fn invalid_job_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(CheckpointStorage::new(dir.path(), "../escape", 0).is_err());
    }

    #[test]
    fn an_unreachable_s3_endpoint_fails_at_open_naming_the_location() {
        let s3 = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key: Some("a".into()),
            secret_key: Some(s3::Secret("b".into())),
            max_retries: 0,
            request_timeout: std::time::Duration::from_secs(2),
            ..S3Settings::default()
        };
        let location = StorageLocation::parse("s3://bucket/p").unwrap();
        let e = CheckpointStorage::open(&location, &s3, "job", 0).unwrap_err().to_string();
        assert!(e.contains("s3://bucket/p/job"), "{e}");
    }
}
