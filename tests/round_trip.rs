//! Snapshot and restore through the `full-keyed` .wasm plugin, end to end.

use snapshot_host::backend::KeyedStateBackend;
use snapshot_host::handles::{KeyGroupsStateHandle, StreamStateHandle};
use snapshot_host::key_groups::{key_group_for_key, range_for_operator, KeyGroupRange};
use snapshot_host::runtime::{PluginLimits, PluginRuntime};
use snapshot_host::streams::{CheckpointStreamFactory, FileStreamFactory, StateScope};
use std::sync::Arc;

#[test]
fn hundred_thousand_entries_round_trip_and_sub_ranges_restore_exactly_their_groups() {
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap();
    assert_eq!(plugin.info().name, "full-keyed");

    let original = suite::populated_backend(128, 100_000, 7);
    assert_eq!(original.entry_count(), 100_000);

    let dir = tempfile::tempdir().unwrap();
    let factory = FileStreamFactory::new(dir.path().join("exclusive"), dir.path().join("shared"), 0).unwrap();
    let out = factory.create_output_stream(StateScope::Exclusive).unwrap();
    let (stream, offsets) = plugin.snapshot_keyed(original.snapshot(), out).unwrap();
    let stream_handle = stream.close_and_get_handle().unwrap();
    assert!(matches!(stream_handle, StreamStateHandle::File { .. }));
    let handle = KeyGroupsStateHandle::new(Arc::new(offsets), stream_handle);
    assert_eq!(handle.key_group_range(), KeyGroupRange::new(0, 127));

    // Full restore into a fresh backend.
    let fresh = KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let restored = plugin.restore_keyed(&handle, fresh).unwrap();
    assert_eq!(restored.contents(), original.contents());
    assert_eq!(restored.entry_count(), 100_000);

    // Rescaled restores: every operator of parallelism 3 gets exactly its key groups.
    let mut total = 0;
    for index in 0..3 {
        let range = range_for_operator(128, 3, index).unwrap();
        let part = plugin.restore_keyed(&handle, KeyedStateBackend::new(128, range).unwrap()).unwrap();
        for (name, (_, rows)) in part.contents() {
            for (key, _) in rows.keys() {
                let kg = key_group_for_key(key, 128);
                assert!(
                    range.contains(kg),
                    "state {name}: key of group {kg} restored into operator {index} with range {range}"
                );
            }
        }
        let expected: usize = original
            .contents()
            .values()
            .flat_map(|(_, rows)| rows.iter())
            .filter(|((key, _), _)| range.contains(key_group_for_key(key, 128)))
            .map(|(_, v)| match v {
                snapshot_host::backend::StateValue::Value(_) => 1,
                snapshot_host::backend::StateValue::List(l) => l.len(),
                snapshot_host::backend::StateValue::Map(m) => m.len(),
            })
            .sum();
        assert_eq!(part.entry_count(), expected, "operator {index}");
        total += part.entry_count();
    }
    assert_eq!(total, 100_000);
}
