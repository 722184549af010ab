//! An engine that keeps its keyed state in its own `BTreeMap` (a custom state backend): the
//! map is presented to the plugin as a value state of each subtask (the host computes key
//! groups and places every key), snapshotted like any state, and handed back as a map after a
//! restore.
//!
//! `cargo run -p snapshot-host --example map_backend [plugin.wasm]`

use std::collections::BTreeMap;

use snapshot_host::{MapState, SnapshotHost};

/// The engine's own state: one map per subtask.
#[derive(Debug, Default, PartialEq)]
struct EngineState {
    balances: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn main() -> snapshot_host::Result<()> {
    let plugin = snapshot_host::example_plugin_path();
    let dir = tempfile::tempdir()?;
    let host = SnapshotHost::builder("ledger")
        .plugin_file(&plugin)
        .checkpoint_storage(dir.path().join("checkpoints"))
        .parallelism(2)
        .build()?;
    let view = MapState::new("balances");

    // The engine routes accounts to subtasks by the host's key groups.
    let mut engine: Vec<EngineState> = (0..2).map(|_| EngineState::default()).collect();
    for i in 0..1_000u32 {
        let account = format!("account-{i}").into_bytes();
        let owner = host.subtask_of_key(&account) as usize;
        engine[owner].balances.insert(account, (i * 10).to_string().into_bytes());
    }

    let job = host.recover()?;
    let barrier = job.coordinator.trigger(1_000).unwrap();
    let mut completed = None;
    for (task, state) in job.subtasks.iter().zip(&engine) {
        let keyed = view.load(&task.subtask, &state.balances)?;
        let ack = task.subtask.snapshot(&barrier, &keyed, &task.operators).run()?;
        completed = job.coordinator.acknowledge(ack)?.or(completed);
    }
    let completed = completed.expect("both subtasks acknowledged");
    println!("checkpoint {}: {} bytes", completed.metadata.checkpoint_id, completed.metadata.state_size());

    let restored = host.recover()?;
    let back: Vec<EngineState> =
        restored.subtasks.iter().map(|t| EngineState { balances: view.collect(&t.keyed) }).collect();
    assert_eq!(back, engine);
    println!("restored {} accounts into the engine's maps", back.iter().map(|s| s.balances.len()).sum::<usize>());
    Ok(())
}

#[test]
fn runs() {
    main().unwrap();
}
