//! Restoring after a crash: a process completes checkpoint 1, then dies while checkpoint 2 is
//! half written (its state files are on disk, its metadata never was). The next process
//! removes what checkpoint 2 left, restores checkpoint 1 from the local copy, and, on a
//! machine that lost its local disk, from the primary.
//!
//! `cargo run -p snapshot-host --example crash_restore [plugin.wasm]`

use std::path::Path;

use snapshot_host::{RestoreSource, SnapshotHost, StateKind};

fn host(dir: &Path, plugin: &Path) -> snapshot_host::Result<SnapshotHost> {
    SnapshotHost::builder("orders")
        .plugin_file(plugin)
        .checkpoint_storage(dir.join("checkpoints"))
        .local_recovery([dir.join("local")])
        .build()
}

fn main() -> snapshot_host::Result<()> {
    let plugin = snapshot_host::example_plugin_path();
    let dir = tempfile::tempdir()?;

    // The first process.
    {
        let host = host(dir.path(), &plugin)?;
        let mut job = host.recover()?;
        let task = &mut job.subtasks[0];
        let total = task.keyed.register_state("total", StateKind::Value)?;
        task.keyed.put(total, b"eur", b"", b"100")?;
        let barrier = job.coordinator.trigger(10).unwrap();
        let ack = task.subtask.snapshot(&barrier, &task.keyed, &task.operators).run()?;
        job.coordinator.acknowledge(ack)?.expect("checkpoint 1 completes");

        task.keyed.put(total, b"eur", b"", b"250")?;
        let barrier = job.coordinator.trigger(20).unwrap();
        let _written_but_never_acknowledged = task.subtask.snapshot(&barrier, &task.keyed, &task.operators).run()?;
        println!("crash while checkpoint {} is in flight", barrier.checkpoint_id());
        std::mem::forget(job); // no orderly shutdown: nothing is aborted or cleaned up
    }

    // The restarted process: checkpoint 2 never completed, so it is not restorable state.
    let host = host(dir.path(), &plugin)?;
    let restored = host.recover()?;
    let checkpoint = restored.checkpoint.as_ref().expect("checkpoint 1");
    let task = &restored.subtasks[0];
    let total = task.keyed.state_index("total")?;
    println!("restored checkpoint {} from {}", checkpoint.checkpoint_id, task.report.source);
    assert_eq!(checkpoint.checkpoint_id, 1);
    assert_eq!(task.report.source, RestoreSource::Local);
    assert_eq!(task.keyed.get(total, b"eur", b"")?, Some(&b"100"[..]));
    assert_eq!(host.checkpoints().completed_checkpoint_ids()?, vec![1]);

    // A new machine: no local disk, the primary is the ground truth.
    host.delete_local_state()?;
    let restored = host.recover()?;
    println!("without local state: restored from {}", restored.subtasks[0].report.source);
    assert_eq!(restored.subtasks[0].report.source, RestoreSource::Primary);
    assert_eq!(restored.subtasks[0].keyed.get(total, b"eur", b"")?, Some(&b"100"[..]));
    Ok(())
}

#[test]
fn runs() {
    main().unwrap();
}
