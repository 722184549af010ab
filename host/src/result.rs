//! `SnapshotResult`: the outcome of one snapshot, a primary part and an optional local part.
//!
//! The primary part lives in durable checkpoint storage and is the ground truth; the local part
//! is a copy beside the task for fast recovery. A local part without a primary part cannot be
//! built: local state that the checkpoint does not also hold durably could never be trusted.

use crate::handles::{HandleError, KeyGroupRangeOffsets, KeyGroupsStateHandle, StreamStateHandle};
use std::sync::Arc;

/// Something that references stored state: it has a size and can be discarded.
pub trait StateObject {
    /// Size of the referenced state in bytes.
    fn state_size(&self) -> u64;
    /// Deletes the referenced state. Already-deleted state counts as deleted.
    fn discard(&self) -> Result<(), HandleError>;
}

impl StateObject for StreamStateHandle {
    fn state_size(&self) -> u64 {
        self.size()
    }
    fn discard(&self) -> Result<(), HandleError> {
        StreamStateHandle::discard(self)
    }
}

impl StateObject for KeyGroupsStateHandle {
    fn state_size(&self) -> u64 {
        KeyGroupsStateHandle::state_size(self)
    }
    fn discard(&self) -> Result<(), HandleError> {
        KeyGroupsStateHandle::discard(self)
    }
}

/// Refused construction of a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot report local state without the corresponding primary state")]
pub struct LocalWithoutPrimary;

/// Discarding a result failed for one or more of its parts; every failure is reported.
#[derive(Debug, thiserror::Error)]
#[error("discarding snapshot state failed: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct DiscardError {
    /// Every error, primary first.
    pub errors: Vec<HandleError>,
}

/// The primary and (optionally) local parts of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotResult<T> {
    primary: Option<T>,
    local: Option<T>,
}

impl<T> SnapshotResult<T> {
    /// A result; refuses a local part without a primary part.
    pub fn new(primary: Option<T>, local: Option<T>) -> Result<Self, LocalWithoutPrimary> {
        if primary.is_none() && local.is_some() {
            return Err(LocalWithoutPrimary);
        }
        Ok(SnapshotResult { primary, local })
    }

    /// A result with no state (a stateless task).
    pub fn empty() -> Self {
        SnapshotResult { primary: None, local: None }
    }

    /// A primary-only result.
    pub fn of(primary: T) -> Self {
        SnapshotResult { primary: Some(primary), local: None }
    }

    /// A result with both parts.
    pub fn with_local(primary: T, local: T) -> Self {
        SnapshotResult { primary: Some(primary), local: Some(local) }
    }

    /// The primary (durable) part.
    pub fn primary(&self) -> Option<&T> {
        self.primary.as_ref()
    }

    /// The local part.
    pub fn local(&self) -> Option<&T> {
        self.local.as_ref()
    }

    /// Whether there is no state at all.
    pub fn is_empty(&self) -> bool {
        self.primary.is_none()
    }

    /// Both parts, consumed.
    pub fn into_parts(self) -> (Option<T>, Option<T>) {
        (self.primary, self.local)
    }

    /// Maps both parts.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> SnapshotResult<U> {
        SnapshotResult { primary: self.primary.map(&mut f), local: self.local.map(f) }
    }
}

impl<T: StateObject> SnapshotResult<T> {
    /// Size of the primary part: what the checkpoint stores durably. The local copy is a cache
    /// and is not counted.
    pub fn state_size(&self) -> u64 {
        self.primary.as_ref().map_or(0, StateObject::state_size)
    }

    /// Discards both parts, attempting each even if the other fails, and reports every failure.
    pub fn discard(&self) -> Result<(), DiscardError> {
        let errors: Vec<_> =
            [&self.primary, &self.local].into_iter().flatten().filter_map(|p| p.discard().err()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DiscardError { errors })
        }
    }
}

impl SnapshotResult<StreamStateHandle> {
    /// Wraps both stream handles as keyed handles sharing one offsets table (the streams are
    /// byte-aligned, so one table is valid for both).
    pub fn into_keyed(self, offsets: KeyGroupRangeOffsets) -> SnapshotResult<KeyGroupsStateHandle> {
        let offsets = Arc::new(offsets);
        self.map(|stream| KeyGroupsStateHandle::new(offsets.clone(), stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_groups::KeyGroupRange;

    fn file(dir: &std::path::Path, name: &str, len: usize) -> StreamStateHandle {
        let path = dir.join(name);
        std::fs::write(&path, vec![1u8; len]).unwrap();
        StreamStateHandle::File { path, size: len as u64, crc32c: None }
    }

    #[test]
    fn local_without_primary_is_refused() {
        let inline = StreamStateHandle::Inline { bytes: vec![1] };
        assert_eq!(SnapshotResult::new(None, Some(inline.clone())), Err(LocalWithoutPrimary));
        assert!(SnapshotResult::new(Some(inline.clone()), None).is_ok());
        assert!(SnapshotResult::<StreamStateHandle>::new(None, None).unwrap().is_empty());
    }

    #[test]
    fn size_counts_the_primary_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = SnapshotResult::with_local(file(dir.path(), "p", 10), file(dir.path(), "l", 1000));
        assert_eq!(r.state_size(), 10);
        assert_eq!(SnapshotResult::<StreamStateHandle>::empty().state_size(), 0);
    }

    #[test]
    fn discard_removes_both_and_reports_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = SnapshotResult::with_local(file(dir.path(), "p", 1), file(dir.path(), "l", 1));
        r.discard().unwrap();
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

        // Two parts that cannot be removed (non-empty directories in place of files).
        let mut parts = Vec::new();
        for name in ["pd", "ld"] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("x"), b"x").unwrap();
            parts.push(StreamStateHandle::File { path: d, size: 1, crc32c: None });
        }
        let r = SnapshotResult::with_local(parts[0].clone(), parts[1].clone());
        let e = r.discard().unwrap_err();
        assert_eq!(e.errors.len(), 2, "{e}");
        assert!(e.to_string().contains("pd") && e.to_string().contains("ld"), "{e}");
    }

    #[test]
    fn keyed_parts_share_one_offsets_table() {
        let range = KeyGroupRange::new(0, 1);
        let offsets = KeyGroupRangeOffsets::new(range, vec![0, 5]).unwrap();
        let r = SnapshotResult::with_local(
            StreamStateHandle::Inline { bytes: vec![0; 9] },
            StreamStateHandle::Inline { bytes: vec![0; 9] },
        )
        .into_keyed(offsets);
        assert!(Arc::ptr_eq(r.primary().unwrap().offsets(), r.local().unwrap().offsets()));
    }
}
