//! Rescaling: a job checkpointed at parallelism 2 restarts at parallelism 3. The key groups
//! (fixed by the max parallelism) are redistributed, so every key lands in the subtask that
//! owns it now; split-distribute operator state is spread over the new subtasks. A rescaled
//! restore reads the primary (local copies belong to the old subtasks).
//!
//! `cargo run -p snapshot-host --example rescale [plugin.wasm]`

use std::path::Path;

use snapshot_host::{DistributionMode, MapState, RestoreSource, SnapshotHost};

fn host(dir: &Path, plugin: &Path, parallelism: u32) -> snapshot_host::Result<SnapshotHost> {
    SnapshotHost::builder("sensors")
        .plugin_file(plugin)
        .checkpoint_storage(dir.join("checkpoints"))
        .local_recovery([dir.join("local")])
        .parallelism(parallelism)
        .max_parallelism(128)
        .build()
}

fn main() -> snapshot_host::Result<()> {
    let plugin = snapshot_host::example_plugin_path();
    let dir = tempfile::tempdir()?;
    let readings = MapState::new("last-reading");
    let keys: Vec<Vec<u8>> = (0..300).map(|i| format!("sensor-{i}").into_bytes()).collect();

    // Parallelism 2: each subtask holds the sensors of its key groups.
    let two = host(dir.path(), &plugin, 2)?;
    let mut job = two.recover()?;
    let barrier = job.coordinator.trigger(300).unwrap();
    for task in &mut job.subtasks {
        let index = task.subtask.index();
        let mine = keys.iter().filter(|k| two.subtask_of_key(k) == index).map(|k| (k, k));
        task.keyed = readings.load(&task.subtask, mine)?;
        task.operators.register("offsets", DistributionMode::SplitDistribute)?;
        task.operators.add("offsets", format!("partition-{index}").into_bytes())?;
        let ack = task.subtask.snapshot(&barrier, &task.keyed, &task.operators).run()?;
        job.coordinator.acknowledge(ack)?;
    }

    // Parallelism 3, same storage.
    let three = host(dir.path(), &plugin, 3)?;
    let restored = three.recover()?;
    let mut total = 0;
    let mut partitions = 0;
    for task in &restored.subtasks {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = readings.collect(&task.keyed);
        assert!(entries.iter().all(|(k, _)| three.subtask_of_key(k) == task.subtask.index()));
        assert_eq!(task.report.source, RestoreSource::Primary);
        partitions += task.operators.get("offsets")?.len();
        println!(
            "subtask {} (key groups {}): {} sensors",
            task.subtask.index(),
            task.subtask.key_group_range(),
            entries.len()
        );
        total += entries.len();
    }
    assert_eq!(total, keys.len());
    assert_eq!(partitions, 2, "split-distribute elements are redistributed, none lost or duplicated");
    Ok(())
}

#[test]
fn runs() {
    main().unwrap();
}
