//! One conformance suite for checkpoint storage, run against every backend (a directory,
//! memory, and an S3-compatible server started in this process), in the way object_store
//! tests its own backends: the guarantees are the storage's, not a backend's.

use std::io::{Read, Seek, SeekFrom};

use proptest::prelude::*;
use snapshot_host::handles::StreamStateHandle;
use snapshot_host::runtime::PluginInfo;
use snapshot_host::storage::backend::block_on;
use snapshot_host::storage::object_store::{ObjectStoreExt, PutPayload};
use snapshot_host::storage::{
    CheckpointMetadata, CheckpointStorage, S3Settings, StorageLocation, SubtaskState, METADATA_FILE,
};
use snapshot_host::streams::StateScope;

/// Small parts so that multipart uploads are exercised by megabytes, not gigabytes (on S3 by
/// the embedded server's default 8 MiB parts, as configured).
const PART: usize = 256 * 1024;

struct Backend {
    name: &'static str,
    storage: CheckpointStorage,
    _dir: Option<tempfile::TempDir>,
}

fn backends(job: &str) -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let directory = CheckpointStorage::new(&dir.path().join("ckpt"), job, 1024).unwrap();
    let memory_settings = S3Settings { part_size: PART, ..S3Settings::default() };
    let memory_location = StorageLocation::Memory { name: suite::unique_bucket() };
    let memory = CheckpointStorage::open(&memory_location, &memory_settings, job, 1024).unwrap();
    let server = suite::s3_server();
    let bucket = suite::unique_bucket();
    server.create_bucket(&bucket).unwrap();
    let s3_location = StorageLocation::S3 { bucket, prefix: "p/q".into() };
    let s3 = CheckpointStorage::open(&s3_location, &server.settings(), job, 1024).unwrap();
    vec![
        Backend { name: "directory", storage: directory, _dir: Some(dir) },
        Backend { name: "memory", storage: memory, _dir: None },
        Backend { name: "s3", storage: s3, _dir: None },
    ]
}

fn for_each_backend(test: impl Fn(&str, &CheckpointStorage)) {
    for b in backends("job") {
        test(b.name, &b.storage);
    }
}

fn metadata(id: u64, subtasks: Vec<SubtaskState>) -> CheckpointMetadata {
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
            ..PluginInfo::default()
        },
        parallelism: subtasks.len() as u32,
        max_parallelism: 128,
        source_offset: id * 10,
        subtasks,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Writes `bytes` as one exclusive stream of checkpoint `id`, in writes of `chunk` bytes.
fn write_stream(storage: &CheckpointStorage, id: u64, bytes: &[u8], chunk: usize) -> StreamStateHandle {
    let factory = storage.stream_factory(id).unwrap();
    let mut stream = factory.create_output_stream(StateScope::Exclusive).unwrap();
    for part in bytes.chunks(chunk.max(1)) {
        stream.write(part).unwrap();
    }
    assert_eq!(stream.position(), bytes.len() as u64);
    stream.close_and_get_handle().unwrap()
}

fn read_all(handle: &StreamStateHandle) -> Vec<u8> {
    let mut out = Vec::new();
    handle.open().unwrap().read_to_end(&mut out).unwrap();
    out
}

fn subtask_with(handle: StreamStateHandle) -> SubtaskState {
    use snapshot_host::handles::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
    use snapshot_host::key_groups::KeyGroupRange;
    let offsets = std::sync::Arc::new(KeyGroupRangeOffsets::new(KeyGroupRange::new(0, 0), vec![0]).unwrap());
    SubtaskState { keyed: Some(KeyGroupsStateHandle::new(offsets, handle)), operator: None, keyed_chain: None }
}

#[test]
fn metadata_completes_a_checkpoint_is_written_once_and_reads_back() {
    for_each_backend(|name, s| {
        assert!(s.latest_completed().unwrap().is_none(), "{name}");
        let h = write_stream(s, 1, &pattern(5000, 1), 700);
        s.write_metadata(&metadata(1, vec![subtask_with(h)])).unwrap();
        s.write_metadata(&metadata(2, vec![SubtaskState::default()])).unwrap();
        assert_eq!(s.completed_checkpoint_ids().unwrap(), vec![1, 2], "{name}");
        assert_eq!(s.latest_completed().unwrap().unwrap().checkpoint_id, 2, "{name}");
        // Put-if-absent: a second writer cannot replace complete metadata.
        let e = s.write_metadata(&metadata(2, vec![])).unwrap_err().to_string();
        assert!(e.contains("chk-2/_metadata"), "{name}: {e}");
        assert_eq!(s.read_metadata(2).unwrap().subtasks.len(), 1, "{name}: metadata was replaced");
        let back = s.read_metadata(1).unwrap();
        let stream = back.subtasks[0].keyed.as_ref().unwrap().stream();
        assert_eq!(read_all(stream), pattern(5000, 1), "{name}");
    });
}

#[test]
fn damaged_newest_metadata_falls_back_to_the_previous_checkpoint() {
    for_each_backend(|name, s| {
        s.write_metadata(&metadata(1, vec![SubtaskState::default()])).unwrap();
        s.write_metadata(&metadata(2, vec![SubtaskState::default()])).unwrap();
        let (store, key) = s.raw(&format!("chk-2/{METADATA_FILE}"));
        let mut bytes = block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() }).to_vec();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x40;
        block_on(store.put(&key, PutPayload::from(bytes))).unwrap();
        let e = s.read_metadata(2).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch") && e.contains("chk-2"), "{name}: {e}");
        assert_eq!(s.latest_completed().unwrap().unwrap().checkpoint_id, 1, "{name}");
    });
}

#[test]
fn incomplete_checkpoints_are_listed_as_such_and_removed_at_start_up() {
    for_each_backend(|name, s| {
        s.write_metadata(&metadata(1, vec![SubtaskState::default()])).unwrap();
        let kept = write_stream(s, 1, &pattern(3000, 2), 3000);
        let orphan = write_stream(s, 2, &pattern(3000, 3), 3000);
        assert_eq!(s.completed_checkpoint_ids().unwrap(), vec![1], "{name}: in-progress checkpoint listed");
        assert_eq!(s.remove_incomplete().unwrap(), vec![2], "{name}");
        assert!(orphan.open().is_err(), "{name}: state of an incomplete checkpoint survived");
        assert_eq!(read_all(&kept), pattern(3000, 2), "{name}");
        assert_eq!(s.completed_checkpoint_ids().unwrap(), vec![1], "{name}");
    });
}

#[test]
fn streams_of_every_size_round_trip_and_seek() {
    for_each_backend(|name, s| {
        // Inline, one object, and (above a part; S3's part is 5 MiB) a multipart upload.
        for (len, chunk) in [(100, 7), (50_000, 4096), (3 * PART + 123, 100_000), (11 << 20, 1 << 20)] {
            let bytes = pattern(len, len as u8);
            let h = write_stream(s, 1, &bytes, chunk);
            assert_eq!(h.size(), len as u64, "{name}");
            if len > 1024 {
                assert!(!matches!(h, StreamStateHandle::Inline { .. }), "{name}: {len} bytes kept inline");
            }
            h.verify().unwrap();
            assert_eq!(read_all(&h), bytes, "{name}: {len} bytes");
            let mut input = h.open().unwrap();
            let at = len as u64 * 2 / 3;
            input.seek(SeekFrom::Start(at)).unwrap();
            let mut tail = Vec::new();
            input.read_to_end(&mut tail).unwrap();
            assert_eq!(tail, bytes[at as usize..], "{name}: seek to {at} of {len}");
            h.discard().unwrap();
            h.discard().unwrap();
            if !matches!(h, StreamStateHandle::Inline { .. }) {
                assert!(h.open().is_err(), "{name}: discarded state still opens");
            }
        }
    });
}

#[test]
fn a_truncated_or_replaced_object_is_refused() {
    for_each_backend(|name, s| {
        let h = write_stream(s, 1, &pattern(40_000, 9), 40_000);
        let relative = match &h {
            StreamStateHandle::File { path, .. } => {
                std::fs::write(path, pattern(39_999, 9)).unwrap();
                None
            }
            StreamStateHandle::Object { path, .. } => Some(path.clone()),
            StreamStateHandle::Inline { .. } => panic!("{name}: 40 kB kept inline"),
        };
        if let Some(relative) = relative {
            let (store, key) = s.raw(&relative);
            block_on(store.put(&key, PutPayload::from(pattern(39_999, 9)))).unwrap();
        }
        let e = h.open().err().expect("a truncated object opened").to_string();
        assert!(e.contains("39999") && e.contains("40000"), "{name}: {e}");
    });
}

#[test]
fn a_dropped_stream_leaves_nothing_behind() {
    for_each_backend(|name, s| {
        let factory = s.stream_factory(3).unwrap();
        for len in [2000, 6 << 20] {
            let mut stream = factory.create_output_stream(StateScope::Exclusive).unwrap();
            stream.write(&pattern(len, 5)).unwrap();
            drop(stream);
        }
        assert!(s.remove_incomplete().unwrap().len() <= 1, "{name}");
        let (store, key) = s.raw("chk-3");
        let left: Vec<_> = block_on(async {
            use futures_util::TryStreamExt;
            store.list(Some(&key)).try_collect::<Vec<_>>().await.unwrap()
        });
        assert!(left.is_empty(), "{name}: {left:?}");
    });
    assert_eq!(suite::s3_server().open_multipart_uploads().unwrap(), Vec::<String>::new());
}

#[test]
fn discard_and_quarantine_remove_a_checkpoint_from_the_listing() {
    for_each_backend(|name, s| {
        for id in 1..=3 {
            let h = write_stream(s, id, &pattern(10_000, id as u8), 1000);
            s.write_metadata(&metadata(id, vec![subtask_with(h)])).unwrap();
        }
        let doomed = s.read_metadata(1).unwrap();
        s.discard_checkpoint(1).unwrap();
        assert!(doomed.subtasks[0].keyed.as_ref().unwrap().stream().open().is_err(), "{name}");
        let to = s.quarantine(3).unwrap();
        assert!(to.contains("chk-3.unrestorable"), "{name}: {to}");
        assert_eq!(s.completed_checkpoint_ids().unwrap(), vec![2], "{name}");
        let again = write_stream(s, 3, &pattern(10, 1), 10);
        s.write_metadata(&metadata(3, vec![subtask_with(again)])).unwrap();
        let second = s.quarantine(3).unwrap();
        assert!(second.contains("chk-3.unrestorable-2"), "{name}: {second}");
        s.discard_checkpoint(2).unwrap();
        s.discard_checkpoint(2).unwrap();
        assert!(s.completed_checkpoint_ids().unwrap().is_empty(), "{name}");
    });
}

/// A checkpoint copied to another place (another bucket, prefix or directory) restores from
/// its own objects: the original is deleted before reading.
#[test]
fn copied_checkpoints_read_their_own_objects() {
    let server = suite::s3_server();
    let (b1, b2) = (suite::unique_bucket(), suite::unique_bucket());
    server.create_bucket(&b1).unwrap();
    server.create_bucket(&b2).unwrap();
    let open = |bucket: &str| {
        let location = StorageLocation::S3 { bucket: bucket.into(), prefix: "x".into() };
        CheckpointStorage::open(&location, &server.settings(), "job", 1024).unwrap()
    };
    let original = open(&b1);
    let h = write_stream(&original, 7, &pattern(9 << 20, 4), 1 << 20);
    original.write_metadata(&metadata(7, vec![subtask_with(h)])).unwrap();
    suite::copy_tree(&server.root().join(&b1), &server.root().join(&b2));
    std::fs::remove_dir_all(server.root().join(&b1)).unwrap();
    let copy = open(&b2);
    let meta = copy.latest_completed().unwrap().unwrap();
    let stream = meta.subtasks[0].keyed.as_ref().unwrap().stream();
    assert!(stream.describe().starts_with(&format!("s3://{b2}/x/job/")), "{}", stream.describe());
    assert_eq!(read_all(stream), pattern(9 << 20, 4));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any sequence of write sizes reads back as written, on the memory backend with a tiny
    /// part size (so that part boundaries fall everywhere).
    #[test]
    fn object_streams_read_back_what_was_written(writes in proptest::collection::vec(0usize..5000, 0..40), seed: u8) {
        let settings = S3Settings { part_size: 1000, max_concurrent_uploads: 2, ..S3Settings::default() };
        let location = StorageLocation::Memory { name: suite::unique_bucket() };
        let s = CheckpointStorage::open(&location, &settings, "job", 64).unwrap();
        let factory = s.stream_factory(1).unwrap();
        let mut stream = factory.create_output_stream(StateScope::Exclusive).unwrap();
        let mut expected = Vec::new();
        for (i, len) in writes.iter().enumerate() {
            let bytes = pattern(*len, seed.wrapping_add(i as u8));
            stream.write(&bytes).unwrap();
            expected.extend_from_slice(&bytes);
        }
        let h = stream.close_and_get_handle().unwrap();
        prop_assert_eq!(h.size(), expected.len() as u64);
        h.verify().unwrap();
        prop_assert_eq!(read_all(&h), expected);
    }
}

/// Two S3 services with the same bucket, prefix and job in one process: each handle reads the
/// service that wrote it (the registry keys stores by endpoint too).
#[test]
fn same_bucket_names_behind_two_endpoints_never_mix() {
    use snapshot_host_cli::embedded_s3::{EmbeddedS3, Shaping};
    let servers = [EmbeddedS3::start(Shaping::NONE).unwrap(), EmbeddedS3::start(Shaping::NONE).unwrap()];
    let location = StorageLocation::S3 { bucket: "same".into(), prefix: "p".into() };
    let mut handles = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        server.create_bucket("same").unwrap();
        let storage = CheckpointStorage::open(&location, &server.settings(), "job", 0).unwrap();
        handles.push(write_stream(&storage, 1, &pattern(30_000, i as u8), 30_000));
    }
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(read_all(h), pattern(30_000, i as u8), "handle {i} read the other server");
        assert!(h.describe().contains(&servers[i].endpoint()), "{}", h.describe());
    }
}
