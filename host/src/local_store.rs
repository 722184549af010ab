//! The task-local state store: one subtask's local copies of its snapshots, by checkpoint id.
//!
//! Lifecycle (Flink's, with its leaks fixed):
//! - a local snapshot is stored *before* the checkpoint is acknowledged;
//! - completion of checkpoint N drops local copies below N (N and newer pending ones stay);
//! - abort of N drops N and deletes its `chk_N` directory even if nothing was ever stored
//!   (a snapshot that failed half-way still left files);
//! - restore from R drops everything but R;
//! - dispose deletes the subtask's directories; a store arriving after dispose is discarded.
//!
//! Each stored snapshot's handles are persisted beside the local state in `chk_N/_local_metadata`
//! with a checksum, so local state survives a process restart; damaged or unreadable entries are
//! deleted on start-up. With local recovery disabled the store keeps nothing and creates no
//! directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::directories::{
    allocation_base_dir, parse_checkpoint_dir_name, LocalRecoveryDirectoryProvider, LOCAL_STATE_DIR,
};
use crate::handles::KeyedChain;
use crate::handles::{
    IncrementalLocalKeyedStateHandle, KeyGroupsStateHandle, LocalLinkCopy, OperatorStateHandle, StreamIdentity,
    StreamStateHandle,
};
use crate::key_groups::KeyGroupRange;
use crate::storage::{decode_with_checksum, encode_with_checksum, SubtaskState};

/// Name of the metadata file in a local checkpoint directory.
pub const LOCAL_METADATA_FILE: &str = "_local_metadata";

/// The local parts of one subtask's snapshot, with the identity of the primary streams they
/// copy.
///
/// A checkpoint id alone does not identify a checkpoint: local state outlives the process,
/// and a later incarnation may write a different checkpoint with the same id (the earlier one
/// never completed). So a local copy records which primary stream it copies (file name, size
/// and checksum) and is offered for restore only against exactly that primary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSnapshot {
    /// Local copy of the keyed state.
    pub keyed: Option<KeyGroupsStateHandle>,
    /// Local copy of the operator state.
    pub operator: Option<OperatorStateHandle>,
    /// The primary keyed stream the local keyed copy copies.
    pub keyed_primary: Option<StreamIdentity>,
    /// The primary operator stream the local operator copy copies.
    pub operator_primary: Option<StreamIdentity>,
    /// With incremental checkpoints: local copies of the earlier streams the keyed chain runs
    /// through, so that the whole chain restores from local disk.
    pub keyed_chain: Option<IncrementalLocalKeyedStateHandle>,
}

impl LocalSnapshot {
    /// Local copies of the parts of `primary`.
    pub fn copy_of(
        primary: &SubtaskState,
        keyed: Option<KeyGroupsStateHandle>,
        operator: Option<OperatorStateHandle>,
    ) -> Self {
        LocalSnapshot {
            keyed,
            operator,
            keyed_primary: primary.keyed.as_ref().map(|h| h.stream().identity()),
            operator_primary: primary.operator.as_ref().map(|h| h.stream().identity()),
            keyed_chain: None,
        }
    }

    /// The local copy of keyed stream `primary`: the checkpoint's own stream (see
    /// [`keyed_copy_of`](Self::keyed_copy_of)) or an earlier link of its chain.
    pub fn keyed_stream_copy_of(&self, primary: &KeyGroupsStateHandle) -> Option<KeyGroupsStateHandle> {
        self.keyed_copy_of(primary).or_else(|| self.keyed_chain.as_ref()?.copy_of(primary).cloned())
    }

    /// The local keyed copy, if it is a copy of exactly `primary`: the recorded primary
    /// identity matches, the offsets and segment checksums are the same, and the local bytes
    /// have the primary's size and checksum.
    pub fn keyed_copy_of(&self, primary: &KeyGroupsStateHandle) -> Option<KeyGroupsStateHandle> {
        let local = self.keyed.as_ref()?;
        let same = is_copy(self.keyed_primary.as_ref(), local.stream(), primary.stream())
            && local.offsets() == primary.offsets();
        same.then(|| local.clone())
    }

    /// The local operator copy, if it is a copy of exactly `primary` (as for keyed state, with
    /// the partition offsets and checksums).
    pub fn operator_copy_of(&self, primary: &OperatorStateHandle) -> Option<OperatorStateHandle> {
        let local = self.operator.as_ref()?;
        let same = is_copy(self.operator_primary.as_ref(), local.stream(), primary.stream())
            && local.partitions() == primary.partitions()
            && local.checksums() == primary.checksums();
        same.then(|| local.clone())
    }

    /// The same snapshot with every stream mapped by `f` (to relocate files).
    fn map_streams(self, f: impl Fn(StreamStateHandle) -> StreamStateHandle) -> Self {
        LocalSnapshot {
            keyed: self.keyed.map(|h| h.map_stream(&f)),
            operator: self.operator.map(|h| h.map_stream(&f)),
            keyed_chain: self.keyed_chain.map(|c| IncrementalLocalKeyedStateHandle {
                links: c.links.into_iter().map(|l| LocalLinkCopy { copy: l.copy.map_stream(&f), ..l }).collect(),
                ..c
            }),
            ..self
        }
    }

    /// Every local keyed stream: the own copy and the chain's links.
    fn keyed_streams(&self) -> impl Iterator<Item = &KeyGroupsStateHandle> {
        self.keyed.iter().chain(self.keyed_chain.iter().flat_map(|c| c.links.iter().map(|l| &l.copy)))
    }

    /// Names of the files this snapshot references.
    fn file_names(&self) -> Vec<std::ffi::OsString> {
        let streams = self.keyed_streams().map(|h| h.stream()).chain(self.operator.iter().map(|h| h.stream()));
        streams
            .filter_map(|s| match s {
                StreamStateHandle::File { path, .. } => path.file_name().map(|n| n.to_os_string()),
                StreamStateHandle::Object { .. } | StreamStateHandle::Inline { .. } => None,
            })
            .collect()
    }
}

fn is_copy(recorded: Option<&StreamIdentity>, local: &StreamStateHandle, primary: &StreamStateHandle) -> bool {
    let primary = primary.identity();
    let local = local.identity();
    recorded == Some(&primary) && local.size == primary.size && local.crc32c == primary.crc32c
}

#[derive(Debug, Default)]
struct Inner {
    stored: BTreeMap<u64, LocalSnapshot>,
    disposed: bool,
}

/// One subtask's local snapshots. Thread-safe: snapshots are stored from asynchronous
/// snapshot threads while the coordinator confirms and aborts.
#[derive(Debug)]
pub struct TaskLocalStateStore {
    provider: LocalRecoveryDirectoryProvider,
    enabled: bool,
    inner: Mutex<Inner>,
}

impl TaskLocalStateStore {
    /// Opens the store, loading local snapshots persisted by an earlier process. With
    /// `enabled == false` nothing is loaded, kept or created.
    pub fn open(provider: LocalRecoveryDirectoryProvider, enabled: bool) -> Self {
        let store = TaskLocalStateStore { provider, enabled, inner: Mutex::new(Inner::default()) };
        if enabled {
            store.load_persisted();
        }
        store
    }

    /// Whether local recovery is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Where the local copy of checkpoint `id` goes.
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.provider.checkpoint_dir(id)
    }

    fn load_persisted(&self) {
        let mut inner = self.inner.lock().expect("local store lock");
        for base in self.provider.all_subtask_base_dirs() {
            let Ok(entries) = std::fs::read_dir(&base) else {
                continue;
            };
            for entry in entries.flatten() {
                let Some(id) = entry.file_name().to_str().and_then(parse_checkpoint_dir_name) else {
                    continue;
                };
                let dir = entry.path();
                match read_local_metadata(&dir) {
                    Ok(snapshot) => {
                        inner.stored.insert(id, snapshot);
                    }
                    // Normal after a crash: the copy was being written, or was never stored.
                    Err(LocalMetadataError::Missing) => {
                        tracing::info!(dir = %dir.display(), "deleting incomplete local state (it has no metadata)");
                        remove_dir(&dir);
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "deleting unusable local state");
                        remove_dir(&dir);
                    }
                }
            }
        }
    }

    /// Stores the local snapshot of checkpoint `id` (persisting its handles). Must happen
    /// before the checkpoint is acknowledged. Replaces an earlier snapshot of the same id and
    /// deletes every file in the checkpoint's local directory that the new snapshot does not
    /// reference (the replaced snapshot's, or a partial copy's). If persisting fails, nothing
    /// of `id` is kept.
    pub fn store(&self, id: u64, snapshot: LocalSnapshot) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let mut inner = self.inner.lock().expect("local store lock");
        if inner.disposed {
            drop(inner);
            tracing::debug!(checkpoint = id, "local snapshot arrived after dispose; discarding");
            remove_dir(&self.checkpoint_dir(id));
            return Ok(());
        }
        let dir = self.checkpoint_dir(id);
        let persisted = (|| {
            std::fs::create_dir_all(&dir)?;
            // Relative to the checkpoint's local directory: a local root moved elsewhere (a
            // re-mounted disk) still reads its own files.
            let relative = snapshot.clone().map_streams(|h| h.relative_to(&dir));
            let bytes = encode_with_checksum(&relative).map_err(io::Error::other)?;
            crate::fsutil::write_atomic(&dir.join(LOCAL_METADATA_FILE), &bytes)
        })();
        if let Err(e) = persisted {
            inner.stored.remove(&id);
            drop(inner);
            remove_dir(&dir);
            return Err(e);
        }
        let keep = snapshot.file_names();
        inner.stored.insert(id, snapshot);
        drop(inner);
        remove_unreferenced(&dir, &keep);
        Ok(())
    }

    /// Keeps the local copy of checkpoint `id` if it is complete (every part `primary` has),
    /// and otherwise deletes whatever of it was written, and any earlier entry of `id`, down
    /// to its directory: a partial copy is never used, and a failed copy leaves nothing.
    /// Called before the checkpoint is acknowledged. Returns whether a copy was stored.
    pub fn store_copy_of(
        &self,
        id: u64,
        primary: &SubtaskState,
        keyed: Option<KeyGroupsStateHandle>,
        operator: Option<OperatorStateHandle>,
    ) -> bool {
        if !self.enabled {
            return false;
        }
        let complete = primary.keyed.is_some() == keyed.is_some()
            && primary.operator.is_some() == operator.is_some()
            && (keyed.is_some() || operator.is_some());
        if complete {
            let mut snapshot = LocalSnapshot::copy_of(primary, keyed, operator);
            if let (Some(chain), Some(own)) = (&primary.keyed_chain, &primary.keyed) {
                snapshot.keyed_chain = Some(self.link_earlier(id, chain, own.key_group_range()));
            }
            match self.store(id, snapshot) {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e, "could not store the local snapshot; continuing without it")
                }
            }
        } else {
            for part in keyed.iter().map(|h| h.stream()).chain(operator.iter().map(|h| h.stream())) {
                let _ = part.discard();
            }
            self.abort(id);
        }
        false
    }

    /// Local copies of the earlier links of checkpoint `id`'s keyed chain, made from the local
    /// copies of earlier checkpoints that hold them: hard links into `id`'s directory (copies
    /// when the roots are on other disks). A link with no local copy is left out, and restored
    /// from the primary; the primary is never read to make one.
    fn link_earlier(&self, id: u64, chain: &KeyedChain, range: KeyGroupRange) -> IncrementalLocalKeyedStateHandle {
        let dir = self.checkpoint_dir(id);
        let stored: Vec<LocalSnapshot> = {
            let inner = self.inner.lock().expect("local store lock");
            inner.stored.iter().filter(|(k, _)| **k != id).rev().map(|(_, s)| s.clone()).collect()
        };
        let mut links = Vec::new();
        for link in &chain.earlier {
            let Some(found) = stored.iter().find_map(|s| s.keyed_stream_copy_of(&link.handle)) else {
                tracing::debug!(
                    checkpoint = id,
                    link = link.checkpoint_id,
                    "no local copy of an earlier link; it restores from the primary"
                );
                continue;
            };
            match link_into(found.stream(), &dir) {
                Ok(stream) => links.push(LocalLinkCopy {
                    primary: link.handle.stream().identity(),
                    copy: found.map_stream(|_| stream),
                }),
                Err(e) => {
                    tracing::debug!(checkpoint = id, link = link.checkpoint_id, error = %e, "could not link an earlier local copy; it restores from the primary")
                }
            }
        }
        IncrementalLocalKeyedStateHandle { checkpoint_id: id, key_group_range: range, links }
    }

    /// The local snapshot of checkpoint `id`, if kept.
    pub fn retrieve(&self, id: u64) -> Option<LocalSnapshot> {
        self.inner.lock().expect("local store lock").stored.get(&id).cloned()
    }

    /// Ids of the kept local snapshots.
    pub fn stored_ids(&self) -> Vec<u64> {
        self.inner.lock().expect("local store lock").stored.keys().copied().collect()
    }

    fn drop_matching(&self, mut matches: impl FnMut(u64) -> bool) {
        let removed: Vec<u64> = {
            let mut inner = self.inner.lock().expect("local store lock");
            let ids: Vec<u64> = inner.stored.keys().copied().filter(|&id| matches(id)).collect();
            for id in &ids {
                inner.stored.remove(id);
            }
            ids
        };
        for id in removed {
            remove_dir(&self.checkpoint_dir(id));
        }
    }

    /// Checkpoint `id` completed: local copies of older checkpoints are no longer needed.
    pub fn confirm(&self, id: u64) {
        self.drop_matching(|stored| stored < id);
    }

    /// Checkpoint `id` was aborted: drop its local copy and delete its directory, whether or
    /// not a snapshot was stored.
    pub fn abort(&self, id: u64) {
        self.drop_matching(|stored| stored == id);
        if self.enabled {
            remove_dir(&self.checkpoint_dir(id));
        }
    }

    /// Restoring from `id`: every other local copy is obsolete.
    pub fn retain_only(&self, id: u64) {
        self.drop_matching(|stored| stored != id);
    }

    /// Deletes all local state of the subtask; later stores are discarded. The job and
    /// allocation directories above it go too once nothing else is in them.
    pub fn dispose(&self) {
        {
            let mut inner = self.inner.lock().expect("local store lock");
            inner.disposed = true;
            inner.stored.clear();
        }
        if self.enabled {
            for dir in self.provider.all_subtask_base_dirs() {
                remove_dir(&dir);
                // `remove_dir` only removes empty directories: other subtasks' state stays.
                for parent in dir.ancestors().skip(1).take(2) {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
    }
}

/// Why a local checkpoint directory's metadata could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalMetadataError {
    #[error("it has no {LOCAL_METADATA_FILE}")]
    Missing,
    #[error("{LOCAL_METADATA_FILE} is unreadable: {0}")]
    Unreadable(io::Error),
    #[error("{LOCAL_METADATA_FILE} is damaged: {0}")]
    Corrupt(String),
}

pub(crate) fn read_local_metadata(dir: &Path) -> Result<LocalSnapshot, LocalMetadataError> {
    let bytes = std::fs::read(dir.join(LOCAL_METADATA_FILE)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => LocalMetadataError::Missing,
        _ => LocalMetadataError::Unreadable(e),
    })?;
    let snapshot: LocalSnapshot = decode_with_checksum(&bytes).map_err(LocalMetadataError::Corrupt)?;
    Ok(snapshot.map_streams(|h| h.resolved_against(dir)))
}

/// Deletes the entries of `dir` other than the metadata and the files named in `keep`.
fn remove_unreferenced(dir: &Path, keep: &[std::ffi::OsString]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == LOCAL_METADATA_FILE || keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        if let Err(e) = removed.or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }) {
            tracing::warn!(path = %path.display(), error = %e, "could not delete an unreferenced local file");
        }
    }
}

/// Puts the local file of `stream` into `dir` under the same name: a hard link, or a copy
/// (written aside and renamed, so no partial file is left) where hard links cannot go.
fn link_into(stream: &StreamStateHandle, dir: &Path) -> io::Result<StreamStateHandle> {
    let StreamStateHandle::File { path, size, crc32c } = stream else {
        return Err(io::Error::other("not a local file"));
    };
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?;
    let target = dir.join(name);
    std::fs::create_dir_all(dir)?;
    if std::fs::hard_link(path, &target).is_err() {
        let staged = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let copied = std::fs::copy(path, &staged).and_then(|_| std::fs::rename(&staged, &target));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    }
    Ok(StreamStateHandle::File { path: target, size: *size, crc32c: *crc32c })
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not delete local state")
        }
        _ => {}
    }
}

/// Deletes the local state of every allocation under `roots` that is not in `known`: after a
/// restart, state of allocations nobody owns any more would otherwise fill the disk.
pub fn retain_allocations(roots: &[PathBuf], known: &[&str]) -> Vec<PathBuf> {
    let keep: Vec<PathBuf> = roots.iter().flat_map(|r| known.iter().map(move |a| allocation_base_dir(r, a))).collect();
    let mut removed = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join(LOCAL_STATE_DIR)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_allocation = entry.file_name().to_str().is_some_and(|n| n.starts_with("aid_"));
            if is_allocation && !keep.contains(&path) {
                tracing::info!(dir = %path.display(), "deleting local state of an unknown allocation");
                remove_dir(&path);
                removed.push(path);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests;
