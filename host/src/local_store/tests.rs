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
        ..LocalSnapshot::default()
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

fn file_in(dir: &Path, name: &str, bytes: &[u8]) -> StreamStateHandle {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    StreamStateHandle::File { path, size: bytes.len() as u64, crc32c: Some(crate::checksum::crc32c(bytes)) }
}

fn keyed(stream: StreamStateHandle) -> KeyGroupsStateHandle {
    KeyGroupsStateHandle::new(Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 0), vec![0]).unwrap()), stream)
}

/// Defect 14: storing an id again kept the replaced snapshot's files, and a partial copy
/// (never registered) survived.
#[test]
fn storing_an_id_again_replaces_the_entry_and_deletes_unreferenced_files() {
    let root = tempfile::tempdir().unwrap();
    let store = TaskLocalStateStore::open(provider(root.path()), true);
    let dir = store.checkpoint_dir(9);
    let first = file_in(&dir, "first", b"one");
    store.store(9, LocalSnapshot { keyed: Some(keyed(first)), ..LocalSnapshot::default() }).unwrap();
    // A partial copy of a later attempt (its operator part failed) left a file behind.
    file_in(&dir, "partial", b"half");
    let second = file_in(&dir, "second", b"two");
    store.store(9, LocalSnapshot { keyed: Some(keyed(second.clone())), ..LocalSnapshot::default() }).unwrap();
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, vec![LOCAL_METADATA_FILE.to_string(), "second".to_string()]);
    assert_eq!(store.retrieve(9).unwrap().keyed.unwrap().stream(), &second);
    // The replacement is what a restart sees too.
    let reopened = TaskLocalStateStore::open(provider(root.path()), true);
    assert_eq!(reopened.retrieve(9).unwrap().keyed.unwrap().stream(), &second);
}

/// Defect 2: a local copy was matched to the primary by checkpoint id and range only.
#[test]
fn a_local_copy_is_offered_only_for_exactly_the_primary_it_copies() {
    let root = tempfile::tempdir().unwrap();
    let primary_a = keyed(file_in(&root.path().join("p"), "a", b"state-a"));
    let primary_b = keyed(file_in(&root.path().join("p"), "b", b"state-b"));
    let local = keyed(file_in(&root.path().join("l"), "a-copy", b"state-a"));
    let primary = SubtaskState { keyed: Some(primary_a.clone()), operator: None, keyed_chain: None };
    let snapshot = LocalSnapshot::copy_of(&primary, Some(local.clone()), None);
    assert_eq!(snapshot.keyed_copy_of(&primary_a), Some(local));
    assert_eq!(snapshot.keyed_copy_of(&primary_b), None, "same id and range, another primary");
    // A copy whose own bytes differ from the primary's (size or checksum) is not a copy.
    let torn = keyed(file_in(&root.path().join("l"), "torn", b"state-"));
    let snapshot = LocalSnapshot::copy_of(&primary, Some(torn), None);
    assert_eq!(snapshot.keyed_copy_of(&primary_a), None);
}

/// Defect 16: dispose left empty `aid_*/jid_*` directories behind.
#[test]
fn dispose_leaves_no_empty_directories() {
    let root = tempfile::tempdir().unwrap();
    let store = TaskLocalStateStore::open(provider(root.path()), true);
    store.store(1, snapshot_in(&store, 1)).unwrap();
    store.dispose();
    let left: Vec<_> = std::fs::read_dir(root.path().join(crate::directories::LOCAL_STATE_DIR))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Defect 6 (and 14's partial copy): a local copy that failed part-way left its checkpoint
/// directory (empty, or with the part that was written) until the next start-up.
#[test]
fn a_partial_or_failed_local_copy_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = TaskLocalStateStore::open(provider(root.path()), true);
    let primary_dir = root.path().join("primary");
    let primary = SubtaskState {
        keyed: Some(keyed(file_in(&primary_dir, "k", b"keyed"))),
        operator: Some(crate::handles::OperatorStateHandle::new(
            Default::default(),
            file_in(&primary_dir, "o", b"operator"),
        )),
        keyed_chain: None,
    };
    // The keyed copy was written, the operator copy failed.
    let dir = store.checkpoint_dir(4);
    let keyed_copy = keyed(file_in(&dir, "k-copy", b"keyed"));
    assert!(!store.store_copy_of(4, &primary, Some(keyed_copy), None));
    assert!(!dir.exists(), "the partial copy's directory survived");
    assert!(store.retrieve(4).is_none());
    // Both failed after the directory was created: still nothing left.
    std::fs::create_dir_all(&dir).unwrap();
    assert!(!store.store_copy_of(4, &primary, None, None));
    assert!(!dir.exists(), "an empty directory survived");
    // A complete copy is stored, and replaces nothing but itself.
    let keyed_copy = keyed(file_in(&dir, "k-copy", b"keyed"));
    let operator_copy =
        crate::handles::OperatorStateHandle::new(Default::default(), file_in(&dir, "o-copy", b"operator"));
    assert!(store.store_copy_of(4, &primary, Some(keyed_copy), Some(operator_copy)));
    assert!(store.retrieve(4).unwrap().keyed_copy_of(primary.keyed.as_ref().unwrap()).is_some());
}

/// Issue 16, item 5: an incremental checkpoint's local copy holds its whole chain. The earlier
/// links come from the earlier local copies (hard links, not the primary) and survive those
/// copies' deletion; a link with no local copy is left to the primary.
#[test]
fn an_incremental_local_copy_links_its_earlier_streams_and_outlives_their_checkpoints() {
    use crate::handles::{ChainLink, GroupPart, KeyedChain};
    let root = tempfile::tempdir().unwrap();
    let store = TaskLocalStateStore::open(provider(root.path()), true);
    let primary_dir = root.path().join("primary");
    let link = |id: u64, handle: &KeyGroupsStateHandle| ChainLink {
        checkpoint_id: id,
        handle: handle.clone(),
        parts: vec![GroupPart::Full],
        format_version: 1,
    };
    // Checkpoint 1 (full) with its local copy.
    let base = keyed(file_in(&primary_dir, "base", b"full part"));
    let state1 = SubtaskState { keyed: Some(base.clone()), operator: None, keyed_chain: None };
    assert!(store.store_copy_of(
        1,
        &state1,
        Some(keyed(file_in(&store.checkpoint_dir(1), "base", b"full part"))),
        None
    ));
    // Checkpoint 2: a delta on 1, plus a link to a stream no local copy holds.
    let orphan = keyed(file_in(&primary_dir, "orphan", b"no local copy"));
    let delta = keyed(file_in(&primary_dir, "delta", b"delta part"));
    let chain = KeyedChain {
        checkpoint_id: 2,
        parts: vec![GroupPart::Delta],
        format_version: 1,
        earlier: vec![link(0, &orphan), link(1, &base)],
    };
    let state2 = SubtaskState { keyed: Some(delta.clone()), operator: None, keyed_chain: Some(chain) };
    assert!(store.store_copy_of(
        2,
        &state2,
        Some(keyed(file_in(&store.checkpoint_dir(2), "delta", b"delta part"))),
        None
    ));
    store.confirm(2);
    assert!(!store.checkpoint_dir(1).exists(), "checkpoint 1's local copy is dropped once 2 completed");

    // After a restart, too: 2's own stream and the base are local, the orphan is not.
    let reopened = TaskLocalStateStore::open(provider(root.path()), true);
    let snapshot = reopened.retrieve(2).unwrap();
    let local_base = snapshot.keyed_stream_copy_of(&base).expect("the base link is copied locally");
    let StreamStateHandle::File { path, .. } = local_base.stream() else { panic!("a local file") };
    assert!(path.starts_with(store.checkpoint_dir(2)), "{path:?}");
    assert_eq!(std::fs::read(path).unwrap(), b"full part");
    local_base.stream().verify().unwrap();
    assert!(snapshot.keyed_stream_copy_of(&delta).is_some());
    assert!(snapshot.keyed_stream_copy_of(&orphan).is_none());
    // A link copy whose bytes differ from the primary's is not offered.
    std::fs::write(path, b"full parT").unwrap();
    let damaged = TaskLocalStateStore::open(provider(root.path()), true).retrieve(2).unwrap();
    let offered = damaged.keyed_stream_copy_of(&base).unwrap();
    assert!(offered.stream().verify().is_err(), "damage is caught when the copy is read");
}
