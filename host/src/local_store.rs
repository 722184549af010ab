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
use crate::handles::{KeyGroupsStateHandle, OperatorStateHandle};
use crate::storage::{decode_with_checksum, encode_with_checksum};

/// Name of the metadata file in a local checkpoint directory.
pub const LOCAL_METADATA_FILE: &str = "_local_metadata";

/// The local parts of one subtask's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSnapshot {
    /// Local copy of the keyed state.
    pub keyed: Option<KeyGroupsStateHandle>,
    /// Local copy of the operator state.
    pub operator: Option<OperatorStateHandle>,
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
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "deleting unusable local state");
                        remove_dir(&dir);
                    }
                }
            }
        }
    }

    /// Stores the local snapshot of checkpoint `id` (persisting its handles). Must happen
    /// before the checkpoint is acknowledged.
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
        std::fs::create_dir_all(&dir)?;
        let bytes = encode_with_checksum(&snapshot).map_err(io::Error::other)?;
        crate::fsutil::write_atomic(&dir.join(LOCAL_METADATA_FILE), &bytes)?;
        // Replacing an earlier store of the same id: its files live in the same directory and
        // the new metadata now describes what is there.
        inner.stored.insert(id, snapshot);
        Ok(())
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

    /// Deletes all local state of the subtask; later stores are discarded.
    pub fn dispose(&self) {
        {
            let mut inner = self.inner.lock().expect("local store lock");
            inner.disposed = true;
            inner.stored.clear();
        }
        if self.enabled {
            for dir in self.provider.all_subtask_base_dirs() {
                remove_dir(&dir);
            }
        }
    }
}

fn read_local_metadata(dir: &Path) -> Result<LocalSnapshot, String> {
    let bytes =
        std::fs::read(dir.join(LOCAL_METADATA_FILE)).map_err(|e| format!("no readable {LOCAL_METADATA_FILE}: {e}"))?;
    decode_with_checksum(&bytes)
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
