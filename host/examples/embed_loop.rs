//! Embedding the host in your own processing loop: two subtasks on their own threads count
//! words; a coordinator loop triggers a checkpoint every 500 records; each subtask takes the
//! synchronous view between records and hands the asynchronous write to a background thread,
//! which acknowledges to the coordinator. At the end the job restarts from its newest
//! checkpoint and checks the counts.
//!
//! `cargo run -p snapshot-host --example embed_loop [plugin.wasm]`

use std::collections::BTreeMap;
use std::sync::mpsc;

use snapshot_host::{CheckpointBarrier, SnapshotHost, StateKind};

enum Message {
    Record(Vec<u8>),
    Barrier(CheckpointBarrier),
}

fn main() -> snapshot_host::Result<()> {
    let plugin = snapshot_host::example_plugin_path();
    let dir = tempfile::tempdir()?;
    let host = SnapshotHost::builder("word-count")
        .plugin_file(&plugin)
        .checkpoint_storage(dir.path().join("checkpoints"))
        .local_recovery([dir.path().join("local")])
        .parallelism(2)
        .build()?;

    let job = host.recover()?;
    let coordinator = job.coordinator.clone();
    let mut inputs = Vec::new();
    let mut workers = Vec::new();
    for mut task in job.subtasks {
        let (tx, rx) = mpsc::sync_channel::<Message>(1024);
        inputs.push(tx);
        let coordinator = coordinator.clone();
        workers.push(std::thread::spawn(move || -> snapshot_host::Result<()> {
            let count = task.keyed.register_state("count", StateKind::Value)?;
            let mut writes = Vec::new();
            for message in rx {
                match message {
                    Message::Record(word) => {
                        let n =
                            task.keyed.get(count, &word, b"")?.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
                        task.keyed.put(count, &word, b"", &(n + 1).to_le_bytes())?;
                    }
                    Message::Barrier(barrier) => {
                        // Synchronous phase: O(key groups), then back to processing.
                        let write = task.subtask.snapshot(&barrier, &task.keyed, &task.operators);
                        let coordinator = coordinator.clone();
                        writes.push(std::thread::spawn(move || {
                            let id = write.checkpoint_id();
                            match write.run().and_then(|ack| coordinator.acknowledge(ack)) {
                                Ok(Some(done)) => {
                                    println!("checkpoint {id} complete: {} bytes", done.metadata.state_size())
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    coordinator.decline(id, &e);
                                }
                            }
                        }));
                    }
                }
            }
            for w in writes {
                w.join().expect("snapshot thread");
            }
            Ok(())
        }));
    }

    let words = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date"];
    let mut expected: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for i in 0..5_000u64 {
        if i > 0 && i % 500 == 0 {
            if let Some(barrier) = coordinator.trigger(i) {
                inputs.iter().for_each(|tx| tx.send(Message::Barrier(barrier.clone())).unwrap());
            }
        }
        let word = words[(i * 7 % 11) as usize % words.len()].as_bytes().to_vec();
        *expected.entry(word.clone()).or_default() += 1;
        inputs[host.subtask_of_key(&word) as usize].send(Message::Record(word)).unwrap();
    }
    drop(inputs);
    for w in workers {
        w.join().expect("subtask thread")?;
    }

    // Restart: the newest checkpoint holds the counts of the records before its barrier.
    let restored = host.recover()?;
    let checkpoint = restored.checkpoint.as_ref().expect("a checkpoint completed");
    let mut counted: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for task in &restored.subtasks {
        let state = task.keyed.state_index("count")?;
        for word in words.iter().filter(|w| host.subtask_of_key(w.as_bytes()) == task.subtask.index()) {
            if let Some(v) = task.keyed.get(state, word.as_bytes(), b"")? {
                counted.insert(word.as_bytes().to_vec(), u64::from_le_bytes(v.try_into().unwrap()));
            }
        }
    }
    let total: u64 = counted.values().sum();
    println!(
        "restored checkpoint {} (offset {}) from {:?}: {total} records counted",
        checkpoint.checkpoint_id, checkpoint.source_offset, restored.subtasks[0].report.source
    );
    assert_eq!(total, checkpoint.source_offset, "the checkpoint holds exactly the records before its barrier");
    assert!(counted.iter().all(|(w, n)| n <= &expected[w]));
    Ok(())
}

#[test]
fn runs() {
    main().unwrap();
}
