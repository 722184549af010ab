//! Crash test: the job process is killed with SIGKILL at random points of its checkpoint loop,
//! 50 times (three kills in four timed from the job's first line, so that a loaded machine's
//! slow start-up does not swallow them; every fourth from its start). After each kill the
//! latest completed checkpoint must restore exactly (its counts equal those of the source's
//! prefix up to its offset), and it must be the newest checkpoint with metadata on disk, at
//! least as new as the last one the process reported complete. The same with incremental
//! checkpoints, half as many kills (CI's budget).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const KILLS: usize = 50;

/// Kills per job: every job is killed and restarted this many times, then a new job starts, so
/// that verifying (which replays the source from event 0) stays cheap.
const KILLS_PER_JOB: usize = 10;

fn job_args(dir: &Path, plugin: &Path, job: &str, mode: suite::Mode) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--plugin".into(),
        plugin.display().to_string(),
        "--job-id".into(),
        job.into(),
        "--set".into(),
        format!("execution.checkpointing.local-backup.dirs={}", dir.join("local").display()),
        "--events".into(),
        "100000000".into(),
        "--keys".into(),
        "500".into(),
        "--checkpoint-interval".into(),
        "2000".into(),
        "--parallelism".into(),
        "2".into(),
    ];
    for o in mode.overrides(dir).0 {
        args.extend(["--set".into(), o]);
    }
    args
}

#[test]
fn killed_at_random_points_restores_exactly_the_last_completed_checkpoint_directory() {
    crash_test(suite::Mode { primary: suite::Primary::Directory, incremental: false }, KILLS);
}

/// The same on S3: the server (in this process) outlives the killed job, like a real store;
/// the metadata object appears atomically or not at all.
#[test]
fn killed_at_random_points_restores_exactly_the_last_completed_checkpoint_s3() {
    crash_test(suite::Mode { primary: suite::Primary::S3, incremental: false }, KILLS / 2);
}

/// With incremental checkpoints: a kill may fall between writing a delta and its metadata, or
/// while the shared-state registry deletes what the newest checkpoint no longer needs.
#[test]
fn killed_at_random_points_restores_exactly_the_last_completed_incremental_checkpoint_directory() {
    crash_test(suite::Mode { primary: suite::Primary::Directory, incremental: true }, KILLS / 2);
}

#[test]
fn killed_at_random_points_restores_exactly_the_last_completed_incremental_checkpoint_s3() {
    crash_test(suite::Mode { primary: suite::Primary::S3, incremental: true }, KILLS / 4);
}

fn crash_test(mode: suite::Mode, kills: usize) {
    let primary = mode.primary;
    let binary = suite::host_binary();
    let plugin = suite::plugin_path("full-keyed");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = suite::Rng::new(0xC0FFEE);
    let mut last_verified = 0u64;
    let mut distinct = std::collections::BTreeSet::new();

    for round in 0..kills {
        let job = format!("crash{}", round / KILLS_PER_JOB);
        if round % KILLS_PER_JOB == 0 {
            last_verified = 0;
        }
        let args = job_args(dir.path(), &plugin, &job, mode);
        let metadata_dirs = primary.overrides(dir.path()).1.join(&job);
        let mut child = Command::new(&binary)
            .arg("job")
            .arg("run")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut started_tx = Some(started_tx);
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .inspect(|_| {
                    if let Some(tx) = started_tx.take() {
                        let _ = tx.send(());
                    }
                })
                .filter_map(|l| l.strip_prefix("completed checkpoint ").and_then(|n| n.parse::<u64>().ok()))
                .last()
        });
        let delay = Duration::from_millis(100 + rng.below(500));
        if round % 4 != 3 {
            // From the job's first line (its restore done, or its first checkpoint): the kill
            // lands in its checkpoint loop however long a loaded machine takes to start it.
            // Every fourth kill counts from the start, so it may land in start-up and restore.
            let _ = started.recv_timeout(Duration::from_secs(20));
        }
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let last_reported = reader.join().unwrap();

        let newest_on_disk = std::fs::read_dir(&metadata_dirs)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("_metadata").exists())
                    .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<u64>().ok())
                    .max()
            })
            .unwrap_or(None);
        let Some(newest) = newest_on_disk else {
            assert!(last_reported.is_none(), "round {round}: a checkpoint was reported complete but has no metadata");
            continue;
        };
        if let Some(reported) = last_reported {
            assert!(
                newest >= reported,
                "round {round}: checkpoint {reported} was reported complete, newest on disk is {newest}"
            );
        }

        let out = Command::new(&binary).arg("job").arg("verify").args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "round {round}: verify failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let verified: u64 = stdout
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: unexpected output {stdout:?}"));
        assert_eq!(verified, newest, "round {round}: restored checkpoint {verified}, the latest completed is {newest}");
        assert!(verified >= last_verified, "round {round}: went back from checkpoint {last_verified} to {verified}");
        last_verified = verified;
        distinct.insert((job.clone(), verified));

        // Every retained checkpoint, not only the newest, still has every stream it names
        // (with incremental checkpoints: every shared file of its chain) and each verifies:
        // a kill while the registry deleted shared files deleted none still referenced.
        // Local copies may be behind (exit 5): restores fall back to the primary then.
        let mut verify_all = Command::new(&binary);
        verify_all.args(["checkpoint", "verify", "--job-id", &job]);
        verify_all
            .arg("--set")
            .arg(format!("execution.checkpointing.local-backup.dirs={}", dir.path().join("local").display()));
        for o in mode.overrides(dir.path()).0 {
            verify_all.arg("--set").arg(o);
        }
        let out = verify_all.output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 5)),
            "round {round}: a retained checkpoint's primary is damaged or incomplete: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!distinct.is_empty(), "no checkpoint ever completed in {kills} rounds");
    // Every restart resumed from its predecessor's progress: checkpoints kept completing
    // across kills rather than the job starting over.
    assert!(distinct.len() >= kills / 2, "only {} distinct checkpoints verified over {kills} kills", distinct.len());
    eprintln!("{mode:?}: {kills} kills, {} distinct checkpoints verified", distinct.len());
}

/// Keyed state of one subtask as a comparable value.
type Contents = std::collections::BTreeMap<
    String,
    (snapshot_host::StateKind, std::collections::BTreeMap<snapshot_host::backend::RowKey, snapshot_host::StateValue>),
>;

/// One incremental job of the chained-registry test: two subtasks on `memory://<name>`,
/// `retained` checkpoints kept, chains compacted at three parts, no local copies (every restore reads
/// the primary, the copy a crash can damage).
fn chained_host(
    name: &str,
    plugin: &std::sync::Arc<snapshot_host::Plugin>,
    retained: usize,
) -> snapshot_host::Result<SnapshotHost> {
    SnapshotHost::builder("chained")
        .plugin(plugin.clone())
        .set("execution.checkpointing.dir", &format!("memory://{name}"))
        .set("execution.checkpointing.incremental", "true")
        .set("execution.checkpointing.incremental-compaction.max-chain-length", "3")
        .set("execution.checkpointing.incremental-compaction.max-delta-ratio", "2")
        .set("execution.checkpointing.num-retained", &retained.to_string())
        .set("execution.checkpointing.max-concurrent-checkpoints", "2")
        .parallelism(2)
        .max_parallelism(16)
        .build()
}

use snapshot_host::{KeyedStateBackend, SnapshotHost, StateKind};

/// Round `round`'s updates: round 0 fills 300 keys of a value, a list and a map state; later
/// rounds change some keys (a delta small enough to live inline in the metadata) or many
/// (a delta in a shared object), removing some rows, appending to lists, replacing map entries.
fn update_round(host: &SnapshotHost, keyed: &mut [KeyedStateBackend], round: u64) {
    let mut rng = suite::Rng::new(0x5EED ^ round);
    let keys: Vec<u64> = match round {
        0 => (0..300).collect(),
        r if r % 2 == 1 => (0..40).map(|_| rng.below(300)).collect(),
        _ => (0..120).map(|_| rng.below(300)).collect(),
    };
    for k in keys {
        let key = format!("k{k}").into_bytes();
        let backend = &mut keyed[host.subtask_of_key(&key) as usize];
        let v = backend.register_state("v", StateKind::Value).unwrap();
        let l = backend.register_state("l", StateKind::List).unwrap();
        let m = backend.register_state("m", StateKind::Map).unwrap();
        let len = 40 + rng.below(160) as usize;
        let payload = rng.bytes(len);
        match (round, rng.below(8)) {
            (1.., 0) if k % 7 != 0 => {
                backend.remove(v, &key, b"").unwrap();
                backend.remove(m, &key, b"ns").unwrap();
            }
            _ => {
                backend.put(v, &key, b"", &payload).unwrap();
                backend.add(l, &key, b"", &payload[..20]).unwrap();
                backend.put_map(m, &key, b"ns", &(rng.below(4)).to_le_bytes(), &payload).unwrap();
            }
        }
    }
}

/// Takes the subtasks' keyed backends out of a recovery: the test changes them itself.
fn take_keyed(job: &mut snapshot_host::Recovery) -> Vec<KeyedStateBackend> {
    job.subtasks
        .iter_mut()
        .map(|t| {
            let empty = KeyedStateBackend::new(16, t.subtask.key_group_range()).unwrap();
            std::mem::replace(&mut t.keyed, empty)
        })
        .collect()
}

/// Every subtask's snapshot of `barrier`, run to its acknowledgement; `None` once one fails.
fn snapshot_all(
    job: &snapshot_host::Recovery,
    keyed: &[KeyedStateBackend],
    barrier: &snapshot_host::CheckpointBarrier,
) -> Option<Vec<snapshot_host::Acknowledgement>> {
    job.subtasks
        .iter()
        .zip(keyed)
        .map(|(t, backend)| t.subtask.snapshot(barrier, backend, &t.operators).run().ok())
        .collect()
}

/// Every completed checkpoint's streams (its chains' included) exist and verify, and the
/// shared area holds exactly the objects they name. Returns the completed ids.
fn check_chained_storage(host: &SnapshotHost) -> Result<Vec<u64>, String> {
    let storage = host.checkpoints();
    let ids = storage.completed_checkpoint_ids().map_err(|e| e.to_string())?;
    let mut referenced = std::collections::BTreeSet::new();
    for &id in &ids {
        let metadata = storage.read_metadata(id).map_err(|e| format!("checkpoint {id}: {e}"))?;
        for stream in metadata.subtasks.iter().flat_map(|s| s.streams()) {
            stream.verify().map_err(|e| format!("checkpoint {id} refers to a missing or damaged stream: {e}"))?;
        }
        referenced.extend(metadata.shared_objects());
    }
    let present: std::collections::BTreeSet<String> =
        storage.shared_objects().map_err(|e| e.to_string())?.into_iter().collect();
    if present != referenced {
        let leaked: Vec<_> = present.difference(&referenced).collect();
        let missing: Vec<_> = referenced.difference(&present).collect();
        return Err(format!("shared area: leaked {leaked:?}, missing {missing:?}"));
    }
    Ok(ids)
}

/// What the chained-registry test learned from one run: mutations attempted, whether any
/// checkpoint held a delta in a shared object (so chains were really exercised).
struct ChainedRun {
    mutations: usize,
    shared_deltas: bool,
    /// Whether the registry deleted shared objects before any crash could stop it.
    shared_deleted: bool,
}

/// Runs twelve rounds of an incremental job (one checkpoint declined midway, one subsumed by a
/// newer one completing first, two overlapping that complete in order) over a store that crashes at mutation `fail_at`, restarts on
/// what the store kept, and checks: the shared area is exact after the start-up sweep, every
/// retained checkpoint restores exactly the state it was taken of, none reported complete is
/// lost; then the restarted job goes on writing deltas on its restored chains, and restores
/// exactly again.
fn crash_chained_job(
    plugin: &std::sync::Arc<snapshot_host::Plugin>,
    name: &str,
    retained: usize,
    fail_at: usize,
) -> Result<ChainedRun, String> {
    use snapshot_host::storage::backend::install_memory_store;
    use snapshot_host::storage::fault::CrashingStore;
    use snapshot_host::storage::object_store::{memory::InMemory, ObjectStore};
    use snapshot_host::CancelToken;
    use std::collections::BTreeMap;

    let inner: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(InMemory::new());
    let crashing = std::sync::Arc::new(CrashingStore::new(inner.clone(), fail_at));
    install_memory_store(name, crashing.clone());
    let contents = |keyed: &[KeyedStateBackend]| keyed.iter().map(KeyedStateBackend::contents).collect::<Vec<_>>();
    // The state each checkpoint was taken of, by id.
    let mut expected: BTreeMap<u64, Vec<Contents>> = BTreeMap::new();
    let mut reported = Vec::new();
    let mut shared_deltas = false;
    let mut shared_deleted = false;
    'job: {
        let Ok(host) = chained_host(name, plugin, retained) else { break 'job };
        let Ok(mut job) = host.recover() else { break 'job };
        let mut seen_shared = std::collections::BTreeSet::new();
        let mut keyed = take_keyed(&mut job);
        for round in 0..12u64 {
            update_round(&host, &mut keyed, round);
            let Some(barrier) = job.coordinator.trigger(round) else { break 'job };
            expected.insert(barrier.checkpoint_id(), contents(&keyed));
            let Some(mut acks) = snapshot_all(&job, &keyed, &barrier) else { break 'job };
            match round {
                // Declined after one subtask acknowledged (its changes go into the next
                // one); the other subtask's acknowledgement arrives late.
                3 => {
                    let ack = acks.remove(0);
                    let _ = job.coordinator.acknowledge(ack);
                    let failure = snapshot_host::Error::msg(snapshot_host::ErrorKind::Storage, "declined");
                    job.coordinator.decline(barrier.checkpoint_id(), &failure);
                }
                // A newer checkpoint completes first and subsumes this one, whose
                // acknowledgements arrive after it.
                5 => {
                    update_round(&host, &mut keyed, 100);
                    let Some(newer) = job.coordinator.trigger(round) else { break 'job };
                    expected.insert(newer.checkpoint_id(), contents(&keyed));
                    let Some(mut first) = snapshot_all(&job, &keyed, &newer) else { break 'job };
                    first.append(&mut acks);
                    acks = first;
                }
                // Two in flight completing in order: the older one retires the base the newer
                // one's deltas were written against before the newer one completes.
                7 => {
                    update_round(&host, &mut keyed, 101);
                    let Some(newer) = job.coordinator.trigger(round) else { break 'job };
                    expected.insert(newer.checkpoint_id(), contents(&keyed));
                    let Some(later) = snapshot_all(&job, &keyed, &newer) else { break 'job };
                    acks.extend(later);
                }
                _ => {}
            }
            for ack in acks {
                match job.coordinator.acknowledge(ack) {
                    Ok(Some(done)) => {
                        let id = done.metadata.checkpoint_id;
                        reported.push(id);
                        shared_deltas |= done.metadata.subtasks.iter().any(|s| s.keyed_chain.is_some())
                            && done.metadata.shared_objects().len() > 2;
                        for (t, backend) in job.subtasks.iter().zip(keyed.iter_mut()) {
                            t.subtask.checkpoint_completed(id, backend);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => break 'job,
                }
            }
            if crashing.crashed() {
                break 'job;
            }
            let present = host.checkpoints().shared_objects().unwrap_or_default();
            shared_deleted |= seen_shared.iter().any(|o| !present.contains(o));
            seen_shared.extend(present);
        }
        if !crashing.crashed() {
            check_chained_storage(&host).map_err(|e| format!("without a crash: {e}"))?;
        }
    }

    // Restart on what the store kept, as a process started after the crash would.
    install_memory_store(name, inner);
    let at = |what: &str| format!("crash at mutation {fail_at}: {what}");
    let host = chained_host(name, plugin, retained).map_err(|e| at(&format!("restart: {}", e.display_chain())))?;
    let ids = check_chained_storage(&host).map_err(|e| at(&e))?;
    if let Some(&last) = reported.last() {
        if ids.last().is_none_or(|&newest| newest < last) {
            return Err(at(&format!("checkpoint {last} was reported complete, storage has {ids:?}")));
        }
    }
    for &id in &ids {
        let metadata = host.checkpoint(id).map_err(|e| at(&e.display_chain()))?;
        let want = expected.get(&id).ok_or_else(|| at(&format!("checkpoint {id} was never triggered")))?;
        for (index, want) in want.iter().enumerate() {
            let subtask = host.subtask(index as u32).map_err(|e| at(&e.display_chain()))?;
            let restored = subtask
                .restore(&metadata, &CancelToken::new())
                .map_err(|e| at(&format!("retained checkpoint {id} does not restore: {}", e.display_chain())))?;
            if &restored.keyed.contents() != want {
                return Err(at(&format!("checkpoint {id}, subtask {index}: restored other state than was taken")));
            }
        }
    }
    // The restarted job continues its chains with deltas, then restarts once more.
    let mut job = host.recover().map_err(|e| at(&e.display_chain()))?;
    let newest = job.checkpoint.as_ref().map(|m| m.checkpoint_id);
    if newest != ids.last().copied() {
        return Err(at(&format!("recovered {newest:?}, the newest completed is {:?}", ids.last())));
    }
    let mut keyed = take_keyed(&mut job);
    let mut last = None;
    for round in 200..203u64 {
        update_round(&host, &mut keyed, round);
        let barrier = job.coordinator.trigger(round).ok_or_else(|| at("no trigger after the restart"))?;
        for (t, backend) in job.subtasks.iter().zip(&keyed) {
            let ack = t.subtask.snapshot(&barrier, backend, &t.operators).run().map_err(|e| at(&e.display_chain()))?;
            if let Some(done) = job.coordinator.acknowledge(ack).map_err(|e| at(&e.display_chain()))? {
                last = Some(done.metadata.checkpoint_id);
            }
        }
        let id = last.ok_or_else(|| at("a checkpoint after the restart did not complete"))?;
        for (t, backend) in job.subtasks.iter().zip(keyed.iter_mut()) {
            t.subtask.checkpoint_completed(id, backend);
        }
    }
    let host = chained_host(name, plugin, retained).map_err(|e| at(&e.display_chain()))?;
    check_chained_storage(&host).map_err(|e| at(&format!("after the restart: {e}")))?;
    let again = host.recover().map_err(|e| at(&e.display_chain()))?;
    let restored: Vec<Contents> = again.subtasks.iter().map(|t| t.keyed.contents()).collect();
    if again.checkpoint.as_ref().map(|m| m.checkpoint_id) != last || restored != contents(&keyed) {
        return Err(at("the checkpoint written after the restart did not restore exactly"));
    }
    Ok(ChainedRun { mutations: crashing.mutations(), shared_deltas, shared_deleted })
}

/// The shared-state registry with real chains (the full-keyed plugin writing deltas): a crash
/// at every mutating operation of the primary never deletes a stream a retained checkpoint's
/// chain runs through, never loses a completion, and leaks nothing past the next start.
#[test]
fn a_crash_at_every_store_mutation_of_an_incremental_job_keeps_every_chain_restorable() {
    let config = snapshot_host::Config::default();
    let plugin = SnapshotHost::load_plugin(suite::plugin_path("full-keyed"), &config).unwrap();
    for retained in [1, 2] {
        let clean = crash_chained_job(&plugin, &format!("chained-{retained}"), retained, usize::MAX).unwrap();
        assert!(clean.shared_deltas, "no checkpoint held a delta in a shared object: chains were not exercised");
        assert!(clean.shared_deleted, "the registry deleted no shared object: retirement was not exercised");
        assert!(clean.mutations > 30, "the schedule should exercise many mutations, got {}", clean.mutations);
        for fail_at in 0..clean.mutations {
            crash_chained_job(&plugin, &format!("chained-{retained}-{fail_at}"), retained, fail_at).unwrap();
        }
        eprintln!("retaining {retained}: crashed at each of {} mutations of an incremental job", clean.mutations);
    }
}
