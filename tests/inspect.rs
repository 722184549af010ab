//! The inspection library (`snapshot_host::inspect`) on the in-memory primary, which only a
//! process of its own reaches (the CLI tests cover directories and S3): list, verify, dump,
//! and damage to one object found and named.

use std::collections::BTreeMap;
use std::sync::mpsc::channel;
use std::sync::Arc;

use snapshot_host::handles::{GroupPart, StreamStateHandle};
use snapshot_host::inspect::{CheckpointInspector, DumpFilter};
use snapshot_host::runtime::{Plugin, PluginLimits, PluginRuntime};
use snapshot_host::Config;
use snapshot_host_cli::job::{expected_counts, AttemptOptions, AttemptOutcome, JobRunner, JobSpec};

/// A finished job of 60 000 events over 20 000 keys, checkpointed every 20 000 events into
/// the in-memory primary `name`, with local copies under `dir`.
fn run_job(dir: &std::path::Path, name: &str, overrides: &[&str]) -> (Config, Arc<Plugin>, JobRunner, u64) {
    let mut config = Config::default();
    config.apply_override(&format!("execution.checkpointing.dir=memory://{name}")).unwrap();
    for o in overrides {
        config.apply_override(o).unwrap();
    }
    config.local_recovery.enabled = true;
    config.local_recovery.root_dirs = vec![dir.join("local")];
    let keys = 20_000;
    let spec = JobSpec {
        job_id: "test".into(),
        allocation_id: "alloc".into(),
        parallelism: 2,
        max_parallelism: 128,
        events: 60_000,
        keys,
        checkpoint_interval: 20_000,
        config: config.clone(),
    };
    let runtime = PluginRuntime::new().unwrap();
    let plugin = Arc::new(runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap());
    let mut runner = JobRunner::new(spec, plugin.clone()).unwrap();
    let (tx, _rx) = channel();
    let outcome = runner.run_attempt(AttemptOptions::default(), &tx).unwrap();
    assert!(matches!(outcome, AttemptOutcome::Finished { .. }));
    (config, plugin, runner, keys)
}

/// The `count` state of checkpoint `id`, decoded by `dump`.
fn dumped_counts(inspector: &CheckpointInspector, id: u64, plugin: &Plugin) -> BTreeMap<Vec<u8>, u64> {
    let mut counts = BTreeMap::new();
    let dumped = inspector
        .dump(id, plugin, &DumpFilter { states: vec!["count".into()], key_groups: None }, &mut |row| {
            let snapshot_host::inspect::Bytes::Text(key) = row.key.clone().unwrap() else { panic!("{row:?}") };
            let snapshot_host::inspect::Bytes::Hex { hex } = &row.value else { panic!("{row:?}") };
            let bytes: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            counts.insert(key.into_bytes(), u64::from_le_bytes(bytes.try_into().unwrap()));
            Ok(())
        })
        .unwrap();
    assert_eq!(dumped as usize, counts.len());
    counts
}

/// Flips one bit in the middle of the object behind `handle`.
fn damage(inspector: &CheckpointInspector, handle: &StreamStateHandle) -> String {
    let StreamStateHandle::Object { path, .. } = handle else { panic!("{handle:?}") };
    let (store, key) = inspector.storage().raw(path);
    let rt = snapshot_host::storage::backend::runtime();
    use snapshot_host::storage::object_store::ObjectStoreExt;
    let mut bytes = rt.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() }).to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    rt.block_on(store.put(&key, bytes.into())).unwrap();
    path.to_string()
}

#[test]
fn a_memory_primary_can_be_listed_verified_and_dumped() {
    let dir = tempfile::tempdir().unwrap();
    let (config, plugin, runner, keys) = run_job(dir.path(), "inspect-test", &[]);
    assert_eq!(CheckpointInspector::jobs(&config.checkpoint_storage, &config.s3).unwrap(), ["test"]);
    let inspector = CheckpointInspector::open(&config, "test").unwrap();
    let rows = inspector.list().unwrap();
    let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, runner.storage().completed_checkpoint_ids().unwrap());
    let newest = rows.last().unwrap();
    assert_eq!(newest.local_copies, [0, 1], "{newest:?}");
    assert!(newest.completed_at.is_some() && newest.error.is_none());
    let report = inspector.verify(newest.id).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.files.iter().filter(|f| f.copy == "local").count(), 6, "{report:?}");

    // The decoded counts are the source's first `offset` events.
    assert_eq!(dumped_counts(&inspector, newest.id, &plugin), expected_counts(newest.source_offset, keys));

    // Damage one primary object: verify names it, restores of the primary would fail, the
    // local copies are still intact.
    let metadata = inspector.metadata(newest.id).unwrap();
    let path = damage(&inspector, &metadata.subtasks[1].keyed.as_ref().unwrap().stream().clone());
    let report = inspector.verify(newest.id).unwrap();
    assert!(!report.primary_intact());
    let damaged: Vec<_> = report.damaged().collect();
    assert_eq!(damaged.len(), 1, "{report:?}");
    assert_eq!((damaged[0].subtask, damaged[0].part, damaged[0].copy), (Some(1), "keyed", "primary"));
    let reason = &damaged[0].damage.as_ref().unwrap().reason;
    assert!(reason.contains(path.as_str()) && reason.contains("key group"), "{reason}");
}

/// An incremental checkpoint is its own stream and the earlier streams of its chain: `show`
/// names them, `verify` reads every one (primary and local copies, each named by the
/// checkpoint that wrote it), `dump` decodes the base and its deltas into the exact state.
#[test]
fn an_incremental_chain_is_shown_verified_and_dumped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [
        "execution.checkpointing.incremental=true",
        "execution.checkpointing.incremental-compaction.max-delta-ratio=2",
    ];
    let (config, plugin, _runner, keys) = run_job(dir.path(), "inspect-chain", &overrides);
    let inspector = CheckpointInspector::open(&config, "test").unwrap();
    let newest = inspector.list().unwrap().pop().unwrap();

    let details = inspector.show(newest.id).unwrap();
    for subtask in &details.subtask_state {
        let keyed = subtask.keyed.as_ref().unwrap();
        assert!(!keyed.earlier.is_empty(), "no chain: {keyed:?}");
        assert!(keyed.earlier.iter().all(|e| e.checkpoint_id < newest.id), "{keyed:?}");
        assert!(keyed.key_groups.iter().any(|g| g.part == GroupPart::Delta), "{keyed:?}");
    }

    let report = inspector.verify(newest.id).unwrap();
    assert!(report.intact(), "{report:?}");
    let metadata = inspector.metadata(newest.id).unwrap();
    for (index, state) in metadata.subtasks.iter().enumerate() {
        for link in &state.keyed_chain.as_ref().unwrap().earlier {
            for copy in ["primary", "local"] {
                let found = report.files.iter().any(|f| {
                    f.subtask == Some(index as u32)
                        && f.copy == copy
                        && f.written_by == Some(link.checkpoint_id)
                        && f.bytes == link.handle.stream().size()
                        && f.segments > 0
                });
                assert!(
                    found,
                    "subtask {index}'s {copy} link of checkpoint {} not verified: {report:?}",
                    link.checkpoint_id
                );
            }
        }
    }
    assert_eq!(dumped_counts(&inspector, newest.id, &plugin), expected_counts(newest.source_offset, keys));

    // Damage to an earlier stream of the chain is damage to this checkpoint, named with the
    // checkpoint that wrote the stream.
    let link = metadata.subtasks[0].keyed_chain.as_ref().unwrap().earlier[0].clone();
    let path = damage(&inspector, link.handle.stream());
    let report = inspector.verify(newest.id).unwrap();
    assert!(!report.primary_intact());
    let damaged: Vec<_> = report.damaged().collect();
    assert_eq!(damaged.len(), 1, "{report:?}");
    assert_eq!(
        (damaged[0].subtask, damaged[0].copy, damaged[0].written_by),
        (Some(0), "primary", Some(link.checkpoint_id))
    );
    assert!(damaged[0].damage.as_ref().unwrap().reason.contains(&path), "{damaged:?}");
}
