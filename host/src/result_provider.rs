//! Result providers: how the output stream of one snapshot is made, primary only or primary
//! plus a local copy, and how it is finalized into a [`SnapshotResult`](crate::result::SnapshotResult).
//!
//! Finalizing is [`CheckpointOutputStream::close_and_finalize`]: a primary failure fails the
//! snapshot (and discards everything); a local failure only drops the local part.

use std::io;
use std::path::Path;

use crate::duplicating::DuplicatingOutputStream;
use crate::streams::{CheckpointOutputStream, CheckpointStreamFactory, FileCheckpointOutputStream, StateScope};

/// A stream to the primary storage only.
pub fn primary_only(
    factory: &dyn CheckpointStreamFactory,
    scope: StateScope,
) -> io::Result<Box<dyn CheckpointOutputStream>> {
    factory.create_output_stream(scope)
}

/// A stream to the primary storage that also writes a local copy into `local_dir`. If the
/// local copy cannot even be started (directory missing and not creatable, disk full), the
/// snapshot goes on primary-only, with a warning.
pub fn primary_and_local(
    factory: &dyn CheckpointStreamFactory,
    scope: StateScope,
    local_dir: &Path,
) -> io::Result<Box<dyn CheckpointOutputStream>> {
    let primary = factory.create_output_stream(scope)?;
    match FileCheckpointOutputStream::create(local_dir) {
        Ok(local) => Ok(Box::new(DuplicatingOutputStream::new(primary, Box::new(local)))),
        Err(e) => {
            tracing::warn!(dir = %local_dir.display(), error = %e, "cannot create the local copy; this snapshot is primary-only");
            Ok(primary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::MemoryStreamFactory;

    #[test]
    fn local_copy_is_kept_when_possible() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            primary_and_local(&MemoryStreamFactory::default(), StateScope::Exclusive, &dir.path().join("chk_1"))
                .unwrap();
        s.write(b"state").unwrap();
        let r = s.close_and_finalize().unwrap();
        assert!(r.local().is_some());
        assert_eq!(r.primary().unwrap().size(), 5);
    }

    #[test]
    fn unusable_local_dir_degrades_to_primary_only() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        // A directory below a regular file can never be created.
        let mut s =
            primary_and_local(&MemoryStreamFactory::default(), StateScope::Exclusive, &blocker.join("chk_1")).unwrap();
        s.write(b"state").unwrap();
        let r = s.close_and_finalize().unwrap();
        assert!(r.local().is_none());
        assert!(r.primary().is_some());
    }
}
