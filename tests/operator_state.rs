//! Operator list state through the plugin: snapshot at parallelism 4, restore at 3 and 6 with
//! SPLIT_DISTRIBUTE, UNION and BROADCAST redistribution.

use std::collections::BTreeMap;

use snapshot_host::handles::{DistributionMode, OperatorStateHandle};
use snapshot_host::operator_backend::OperatorStateBackend;
use snapshot_host::repartition::repartition;
use snapshot_host::runtime::{PluginLimits, PluginRuntime};
use snapshot_host::streams::{CheckpointStreamFactory, FileStreamFactory, StateScope};

#[test]
fn operator_state_redistributes_by_mode_when_rescaling() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let factory = FileStreamFactory::new(dir.path().join("chk"), dir.path().join("shared"), 0).unwrap();

    // Four subtasks: subtask i has 2 + i split elements, one union tag, and the broadcast list.
    let mut handles = Vec::new();
    for i in 0..4u8 {
        let mut b = OperatorStateBackend::new();
        b.register("splits", DistributionMode::SplitDistribute).unwrap();
        b.register("tags", DistributionMode::Union).unwrap();
        b.register("config", DistributionMode::Broadcast).unwrap();
        b.register("empty", DistributionMode::SplitDistribute).unwrap();
        for j in 0..(2 + i) {
            b.add("splits", vec![i, j, 0xAB]).unwrap();
        }
        b.add("tags", format!("tag-{i}").into_bytes()).unwrap();
        b.add("config", b"mode=fast".to_vec()).unwrap();
        b.add("config", vec![0u8; 70_000]).unwrap(); // a large element crosses buffer boundaries
        let (stream, partitions, checksums) = plugin
            .snapshot_operator(b.snapshot(), factory.create_output_stream(StateScope::Exclusive).unwrap())
            .unwrap();
        let handle = OperatorStateHandle::new(partitions, stream.close_and_get_handle().unwrap());
        handles.push(Some(handle.with_checksums(checksums)));
    }
    let all_splits: usize = (0..4).map(|i| 2 + i).sum();

    for new_p in [3u32, 6] {
        let mut split_elements = Vec::new();
        for (subtask, assignments) in repartition(&handles, new_p).into_iter().enumerate() {
            let mut restored = OperatorStateBackend::new();
            for a in &assignments {
                restored = plugin.restore_operator(a, restored).unwrap();
            }
            let tags: Vec<_> =
                restored.get("tags").unwrap().iter().map(|t| String::from_utf8(t.clone()).unwrap()).collect();
            assert_eq!(tags, vec!["tag-0", "tag-1", "tag-2", "tag-3"], "UNION at p={new_p}, subtask {subtask}");
            let config = restored.get("config").unwrap();
            assert_eq!(config.len(), 2, "BROADCAST: one copy at p={new_p}, subtask {subtask}");
            assert_eq!(config[0], b"mode=fast");
            assert_eq!(config[1], vec![0u8; 70_000]);
            assert!(restored.get("empty").unwrap().is_empty(), "a state with no element restores as empty");
            split_elements.push(restored.get("splits").unwrap().to_vec());
        }
        let sizes: Vec<usize> = split_elements.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), all_splits, "SPLIT_DISTRIBUTE keeps every element once at p={new_p}");
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "even split at p={new_p}: {sizes:?}");
        let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for e in split_elements.into_iter().flatten() {
            *seen.entry(e).or_default() += 1;
        }
        assert!(seen.values().all(|&n| n == 1) && seen.len() == all_splits);
    }
}
