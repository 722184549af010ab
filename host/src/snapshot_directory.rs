//! Snapshot directories: a directory a snapshot is written into, with a lifecycle that decides
//! whether cleanup may delete it.
//!
//! - ongoing → completed: the snapshot finished; a *permanent* directory becomes a handle and
//!   cleanup no longer deletes it.
//! - ongoing → deleted: cleanup removed it; completing it afterwards is an error.
//! - A *temporary* directory (used when local recovery is off) never yields a handle, so its
//!   cleanup always deletes it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::handles::DirectoryStateHandle;

/// Where a snapshot directory is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryState {
    /// Being written.
    Ongoing,
    /// Complete; owned by a handle.
    Completed,
    /// Removed.
    Deleted,
}

const ONGOING: u8 = 0;
const COMPLETED: u8 = 1;
const DELETED: u8 = 2;

fn decode(v: u8) -> DirectoryState {
    match v {
        ONGOING => DirectoryState::Ongoing,
        COMPLETED => DirectoryState::Completed,
        _ => DirectoryState::Deleted,
    }
}

/// A directory being filled by a snapshot. Thread-safe: completion and cleanup may race (a
/// cancelled checkpoint), and exactly one of them wins.
#[derive(Debug)]
pub struct SnapshotDirectory {
    path: PathBuf,
    permanent: bool,
    state: AtomicU8,
}

/// Completing a directory that was already deleted.
#[derive(Debug, thiserror::Error)]
#[error("snapshot directory {path}: expected state Ongoing but found {found:?}")]
pub struct CompleteAfterDelete {
    /// The directory.
    pub path: PathBuf,
    /// The state found.
    pub found: DirectoryState,
}

impl SnapshotDirectory {
    /// A permanent directory at `path` (created if missing): completing it yields a handle.
    pub fn permanent(path: impl Into<PathBuf>) -> io::Result<Self> {
        Self::create(path.into(), true)
    }

    /// A temporary directory at `path` (created if missing): never yields a handle; cleanup
    /// always deletes it.
    pub fn temporary(path: impl Into<PathBuf>) -> io::Result<Self> {
        Self::create(path.into(), false)
    }

    fn create(path: PathBuf, permanent: bool) -> io::Result<Self> {
        std::fs::create_dir_all(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create snapshot directory {}: {e}", path.display()))
        })?;
        Ok(SnapshotDirectory { path, permanent, state: AtomicU8::new(ONGOING) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current state.
    pub fn state(&self) -> DirectoryState {
        decode(self.state.load(Ordering::SeqCst))
    }

    /// Marks the snapshot complete. A permanent directory returns its handle (again, if it was
    /// completed before); a temporary one returns `None` and stays ongoing.
    pub fn complete_and_get_handle(&self) -> Result<Option<DirectoryStateHandle>, CompleteAfterDelete> {
        if !self.permanent {
            return Ok(None);
        }
        match self.state.compare_exchange(ONGOING, COMPLETED, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) | Err(COMPLETED) => Ok(Some(DirectoryStateHandle::new(self.path.clone(), dir_size(&self.path)))),
            Err(found) => Err(CompleteAfterDelete { path: self.path.clone(), found: decode(found) }),
        }
    }

    /// Deletes the directory unless it was completed (then its handle owns it).
    pub fn cleanup(&self) -> io::Result<()> {
        if self.state.compare_exchange(ONGOING, DELETED, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Ok(());
        }
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_never_yields_a_handle_and_cleanup_deletes() {
        let root = tempfile::tempdir().unwrap();
        let d = SnapshotDirectory::temporary(root.path().join("t")).unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        assert!(d.complete_and_get_handle().unwrap().is_none());
        assert_eq!(d.state(), DirectoryState::Ongoing);
        d.cleanup().unwrap();
        assert!(!root.path().join("t").exists());
    }

    #[test]
    fn permanent_completes_idempotently_and_cleanup_keeps_it() {
        let root = tempfile::tempdir().unwrap();
        let d = SnapshotDirectory::permanent(root.path().join("p")).unwrap();
        std::fs::write(d.path().join("f"), b"12345").unwrap();
        let h1 = d.complete_and_get_handle().unwrap().unwrap();
        let h2 = d.complete_and_get_handle().unwrap().unwrap();
        assert_eq!(h1, h2);
        assert_eq!(h1.state_size(), 5);
        d.cleanup().unwrap();
        assert!(root.path().join("p/f").exists(), "a completed directory survives cleanup");
        assert_eq!(d.state(), DirectoryState::Completed);
    }

    #[test]
    fn completing_after_deletion_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let d = SnapshotDirectory::permanent(root.path().join("p")).unwrap();
        d.cleanup().unwrap();
        assert!(!root.path().join("p").exists());
        let e = d.complete_and_get_handle().unwrap_err();
        assert_eq!(e.found, DirectoryState::Deleted);
        assert!(e.to_string().contains("Deleted"));
        d.cleanup().unwrap();
    }
}
