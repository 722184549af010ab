//! Rows 11: incremental checkpoints against full ones of the same state, side by side in one
//! run, through the host's real checkpoint path (a [`SnapshotHost`] subtask and coordinator, a
//! directory primary): bytes and time of a checkpoint after 1% (and 10%) of the entries
//! changed, restore of the resulting chain against restore of a full checkpoint, and the
//! primary's storage after 100 incremental checkpoints against the live state.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use snapshot_host::backend::KeyedStateBackend;
use snapshot_host::runtime::{CancelToken, Plugin};
use snapshot_host::{Coordinator, SnapshotHost, Subtask};

use super::{fill_state, secs, Report, Row, Stats};

/// One single-subtask job: its host, coordinator and subtask.
struct Job {
    host: SnapshotHost,
    coordinator: Coordinator,
    subtask: Subtask,
    dir: std::path::PathBuf,
}

impl Job {
    fn new(plugin: &Arc<Plugin>, dir: &Path, incremental: bool) -> anyhow::Result<Job> {
        let host = SnapshotHost::builder("bench")
            .plugin(plugin.clone())
            .checkpoint_storage(dir)
            .parallelism(1)
            .max_parallelism(128)
            .set("execution.checkpointing.incremental", if incremental { "true" } else { "false" })
            .build()?;
        let recovery = host.recover()?;
        let subtask = host.subtask(0)?;
        Ok(Job { host, coordinator: recovery.coordinator, subtask, dir: dir.to_path_buf() })
    }

    /// One checkpoint of `keyed`, written and completed; returns its time and primary bytes.
    fn checkpoint(&self, keyed: &mut KeyedStateBackend) -> anyhow::Result<(Duration, u64)> {
        let operators = snapshot_host::operator_backend::OperatorStateBackend::new();
        let barrier = self.coordinator.trigger(0).context("the coordinator refused to trigger")?;
        let id = barrier.checkpoint_id();
        let started = Instant::now();
        let ack = self.subtask.snapshot(&barrier, keyed, &operators).run()?;
        let bytes = ack.state_size();
        self.coordinator.acknowledge(ack)?.context("the checkpoint did not complete")?;
        let took = started.elapsed();
        // What the job does at its next barrier: deltas from now on build on this checkpoint.
        self.subtask.checkpoint_completed(id, keyed);
        Ok((took, bytes))
    }

    /// Restores the newest checkpoint from the primary; returns the time and the number of
    /// entries restored. The restored state is dropped before returning: a restore timed while
    /// another one's state is still alive takes all its memory fresh from the kernel, where
    /// the other reuses freed pages, and the order of the two then decided the ratio.
    fn restore(&self) -> anyhow::Result<(Duration, usize)> {
        let checkpoint = self.host.latest_checkpoint()?.context("no checkpoint completed")?;
        let started = Instant::now();
        let restored = self.subtask.restore(&checkpoint, &CancelToken::new())?;
        let took = started.elapsed();
        Ok((took, restored.keyed.entry_count()))
    }

    /// Bytes of every file below the primary.
    fn storage_bytes(&self) -> u64 {
        fn below(dir: &Path) -> u64 {
            std::fs::read_dir(dir).into_iter().flatten().flatten().fold(0, |sum, e| {
                let Ok(meta) = e.metadata() else { return sum };
                sum + if meta.is_dir() { below(&e.path()) } else { meta.len() }
            })
        }
        below(&self.dir)
    }
}

/// Changes `fraction` of the state's entries (every n-th, starting at `round`), the way the
/// state was built: values and map entries overwritten, lists appended to.
fn update(keyed: &mut KeyedStateBackend, entries: u64, fraction: f64, round: u64) -> anyhow::Result<u64> {
    let stride = (1.0 / fraction).round().max(1.0) as u64;
    let changed = entries / stride;
    let (value, list, map) = (keyed.state_index("values")?, keyed.state_index("lists")?, keyed.state_index("maps")?);
    let mut payload = vec![0u8; 4096];
    for k in 0..changed {
        let i = k * stride + round % stride;
        let size = [16usize, 64, 256, 1024, 4096][(k % 5) as usize];
        payload[..8].copy_from_slice(&(i ^ (round << 40)).to_le_bytes());
        let key = format!("key-{:010}", i / 3);
        match i % 3 {
            0 => keyed.put(value, key.as_bytes(), b"", &payload[..size])?,
            1 => keyed.add(list, key.as_bytes(), b"", &payload[..64.min(size)])?,
            _ => keyed.put_map(map, key.as_bytes(), b"", &i.to_le_bytes(), &payload[..size])?,
        }
    }
    Ok(changed)
}

/// Rows 11a-11d. `plugin` must be incremental (the full-keyed plugin is).
pub(super) fn incremental_rows(
    report: &mut Report,
    plugin: &Arc<Plugin>,
    state_mib: u64,
    runs: usize,
    dir: &Path,
) -> anyhow::Result<()> {
    if !plugin.info().incremental {
        report.note(format!(
            "rows 11 skipped: plugin {:?} writes no deltas (WIT 0.1.0 or not incremental)",
            plugin.info().name
        ));
        return Ok(());
    }
    for (fraction, label) in [(0.01, "1%"), (0.10, "10%")] {
        report
            .progress(&format!("row 11: incremental vs full checkpoints, {label} of the entries changed per interval"));
        let incremental = Job::new(plugin, &dir.join(format!("incremental-{label}")), true)?;
        let full = Job::new(plugin, &dir.join(format!("full-{label}")), false)?;
        let (mut keyed, _) = incremental.subtask.empty_state()?;
        fill_state(&mut keyed, state_mib)?;
        let entries = keyed.entry_count() as u64;
        // The base: the first incremental checkpoint is written in full.
        incremental.checkpoint(&mut keyed)?;
        let (mut bytes, mut time) = (Vec::new(), Vec::new());
        let (mut inc_bytes, mut full_bytes, mut inc_t, mut full_t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut changed = 0;
        for round in 0..runs as u64 {
            changed = update(&mut keyed, entries, fraction, round)?;
            // Alternate the order, so that neither always runs on a warmer page cache.
            let (f, i) = if round % 2 == 0 {
                let f = full.checkpoint(&mut keyed)?;
                (f, incremental.checkpoint(&mut keyed)?)
            } else {
                let i = incremental.checkpoint(&mut keyed)?;
                (full.checkpoint(&mut keyed)?, i)
            };
            bytes.push(i.1 as f64 / f.1 as f64);
            time.push(secs(i.0) / secs(f.0));
            inc_bytes.push(i.1 as f64 / 1048576.0);
            full_bytes.push(f.1 as f64 / 1048576.0);
            inc_t.push(secs(i.0));
            full_t.push(secs(f.0));
        }
        let at_one = fraction == 0.01;
        let s = Stats(bytes);
        let met = s.median() <= 0.03;
        report.row(Row {
            name: format!("11a. incremental / full checkpoint, {label} changed (bytes)"),
            target: if at_one { "<= 0.03".into() } else { "-".into() },
            met: at_one.then_some(met),
            detail: format!(
                "{:.1} MiB incremental, {:.1} MiB full; {changed} of {entries} entries changed",
                Stats(inc_bytes).median(),
                Stats(full_bytes).median()
            ),
            stats: s,
            unit: "",
        });
        let s = Stats(time);
        let met = s.median() <= 0.05;
        report.row(Row {
            name: format!("11b. incremental / full checkpoint, {label} changed (time)"),
            target: if at_one { "<= 0.05".into() } else { "-".into() },
            met: at_one.then_some(met),
            detail: format!("{:.3} s incremental, {:.3} s full", Stats(inc_t).median(), Stats(full_t).median()),
            stats: s,
            unit: "",
        });
        // Restore of the chain (a full part and the deltas since) vs of the full checkpoint of
        // the same state, both from the primary, both verified.
        let (mut ratio, mut chain_t, mut full_rt) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let ((c, a), (f, b)) = if run % 2 == 0 {
                let c = incremental.restore()?;
                (c, full.restore()?)
            } else {
                let f = full.restore()?;
                (incremental.restore()?, f)
            };
            anyhow::ensure!(a == b, "the chain restored other state than the full checkpoint");
            ratio.push(secs(c) / secs(f));
            chain_t.push(secs(c));
            full_rt.push(secs(f));
        }
        let s = Stats(ratio);
        let met = s.median() <= 1.5;
        report.row(Row {
            name: format!("11c. restore of a chain / of a full checkpoint, {label} changed (time)"),
            target: "<= 1.5".into(),
            met: Some(met),
            detail: format!(
                "{:.2} s chain of {} checkpoints, {:.2} s full",
                Stats(chain_t).median(),
                runs + 1,
                Stats(full_rt).median()
            ),
            stats: s,
            unit: "x",
        });
        if at_one {
            // 100 checkpoints in all, compaction included; the primary keeps the retained
            // checkpoint and every shared stream its chains run through.
            report.progress("row 11d: primary storage after 100 incremental checkpoints");
            for round in runs as u64..99 {
                update(&mut keyed, entries, fraction, round)?;
                incremental.checkpoint(&mut keyed)?;
            }
            let (_, live) = full.checkpoint(&mut keyed)?;
            let used = incremental.storage_bytes();
            let ratio = used as f64 / live as f64;
            report.row(Row {
                name: "11d. primary storage after 100 incremental checkpoints / live state".into(),
                target: "<= 2".into(),
                met: Some(ratio <= 2.0),
                detail: format!(
                    "{:.1} MiB stored, {:.1} MiB in a full checkpoint of the same state; {label} changed per interval",
                    used as f64 / 1048576.0,
                    live as f64 / 1048576.0
                ),
                stats: Stats(vec![ratio]),
                unit: "x",
            });
        }
        drop(keyed);
        let _ = std::fs::remove_dir_all(&incremental.dir);
        let _ = std::fs::remove_dir_all(&full.dir);
    }
    Ok(())
}
