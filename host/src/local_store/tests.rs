use super::*;
use crate::handles::{KeyGroupRangeOffsets, StreamStateHandle};
use crate::key_groups::KeyGroupRange;
use std::sync::Arc;

fn provider(root: &Path) -> LocalRecoveryDirectoryProvider {
    LocalRecoveryDirectoryProvider::new(&[root.to_path_buf()], "alloc", "job", "vtx", 0).unwrap()
}

fn snapshot_in(store: &TaskLocalStateStore, id: u64) -> LocalSnapshot {
    let dir = store.checkpoint_dir(id);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state");
    std::fs::write(&path, b"abc").unwrap();
    let offsets = Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 0), vec![0]).unwrap());
    LocalSnapshot {
        keyed: Some(KeyGroupsStateHandle::new(offsets, StreamStateHandle::File { path, size: 3, crc32c: None })),
        operator: None,
    }
}

#[test]
fn lifecycle_confirm_abort_retain_dispose() {
    let root = tempfile::tempdir().unwrap();
    let store = TaskLocalStateStore::open(provider(root.path()), true);
    for id in 1..=4 {
        store.store(id, snapshot_in(&store, id)).unwrap();
    }
    store.confirm(3);
    assert_eq!(store.stored_ids(), vec![3, 4]);
    assert!(!store.checkpoint_dir(1).exists() && !store.checkpoint_dir(2).exists());

    store.abort(4);
    assert_eq!(store.stored_ids(), vec![3]);
    assert!(!store.checkpoint_dir(4).exists());

    // Abort of a checkpoint that was never stored still deletes its directory.
    std::fs::create_dir_all(store.checkpoint_dir(5)).unwrap();
    std::fs::write(store.checkpoint_dir(5).join("half-written"), b"x").unwrap();
    store.abort(5);
    assert!(!store.checkpoint_dir(5).exists());

    store.store(6, snapshot_in(&store, 6)).unwrap();
    store.retain_only(6);
    assert_eq!(store.stored_ids(), vec![6]);

    store.dispose();
    assert!(store.stored_ids().is_empty());
    assert!(!provider(root.path()).subtask_base_dir(6).exists());
    // A late store after dispose is discarded, files included.
    let late = snapshot_in(&store, 7);
    store.store(7, late).unwrap();
    assert!(store.retrieve(7).is_none());
    assert!(!store.checkpoint_dir(7).exists());
}

#[test]
fn local_state_survives_a_restart_and_damaged_entries_are_deleted() {
    let root = tempfile::tempdir().unwrap();
    {
        let store = TaskLocalStateStore::open(provider(root.path()), true);
        store.store(1, snapshot_in(&store, 1)).unwrap();
        store.store(2, snapshot_in(&store, 2)).unwrap();
    }
    let meta = provider(root.path()).checkpoint_dir(2).join(LOCAL_METADATA_FILE);
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[8] ^= 0x55;
    std::fs::write(&meta, bytes).unwrap();
    // A chk dir without metadata (crash between writing state and storing) is garbage too.
    std::fs::create_dir_all(provider(root.path()).checkpoint_dir(3)).unwrap();

    let reopened = TaskLocalStateStore::open(provider(root.path()), true);
    assert_eq!(reopened.stored_ids(), vec![1]);
    assert!(reopened.retrieve(1).unwrap().keyed.is_some());
    assert!(!provider(root.path()).checkpoint_dir(2).exists());
    assert!(!provider(root.path()).checkpoint_dir(3).exists());
}

#[test]
fn disabled_store_keeps_nothing_and_creates_no_directory() {
    let root = tempfile::tempdir().unwrap();
    let store = TaskLocalStateStore::open(provider(root.path()), false);
    store.store(1, LocalSnapshot::default()).unwrap();
    assert!(store.retrieve(1).is_none());
    store.abort(1);
    store.dispose();
    assert!(std::fs::read_dir(root.path()).unwrap().next().is_none());
}

#[test]
fn unknown_allocations_are_deleted() {
    let root = tempfile::tempdir().unwrap();
    for a in ["keep", "orphan"] {
        std::fs::create_dir_all(allocation_base_dir(root.path(), a).join("jid_j")).unwrap();
    }
    let removed = retain_allocations(&[root.path().to_path_buf()], &["keep"]);
    assert_eq!(removed.len(), 1);
    assert!(allocation_base_dir(root.path(), "keep").exists());
    assert!(!allocation_base_dir(root.path(), "orphan").exists());
}
