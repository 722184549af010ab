//! Defect 9: plugin memory was bounded per invocation, not in total, so concurrent snapshots
//! of a plugin that grows to its limit multiplied it (3.65 GB of host memory with the default
//! 256 MiB limit). A live job of a memory-hogging fixture (every snapshot fills 192 MiB) runs
//! as a separate process twice, side by side: once with a budget so large it never binds,
//! once with a 512 MiB host-wide budget. The peak resident memory of the second stays under
//! the budget plus a fixed overhead; the first shows the budget is what bounds it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The host process's own memory besides plugin memory (runtime, compiled code, job state,
/// threads), generously.
const OVERHEAD_KIB: u64 = 256 * 1024;

/// Runs `job run` with the hog plugin and `budget`; returns the peak resident set (KiB, from
/// /proc while it runs), the exit status and stderr.
fn run_hog(dir: &Path, budget: &str) -> (u64, bool, String) {
    let binary = suite::host_binary();
    let plugin = suite::plugin_path("fixture-hog");
    let mut child = Command::new(binary)
        .args(["job", "run", "--plugin"])
        .arg(&plugin)
        .args(["--job-id", "hog", "--parallelism", "4", "--events", "200000", "--checkpoint-interval", "2000"])
        .arg("--set")
        .arg(format!("execution.checkpointing.dir={}", dir.join("checkpoints").display()))
        .arg("--set")
        .arg(format!("execution.checkpointing.local-backup.dirs={}", dir.join("local").display()))
        .args(["--set", "execution.checkpointing.max-concurrent-checkpoints=4"])
        .args(["--set", "execution.checkpointing.tolerable-failed-checkpoints=1000000"])
        .args(["--set", "plugin.memory-limit=256MiB"])
        .arg("--set")
        .arg(format!("plugin.memory-budget={budget}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            // VmHWM is the peak so far; the last reading before exit is the run's peak.
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (peak, status.success(), stderr)
}

#[test]
fn a_host_wide_budget_bounds_plugin_memory_across_concurrent_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let (unbounded_peak, unbounded_ok, unbounded_err) = run_hog(&dir.path().join("unbounded"), "16GiB");
    let (bounded_peak, _, bounded_err) = run_hog(&dir.path().join("bounded"), "512MiB");
    eprintln!(
        "peak RSS: {} MiB without a binding budget, {} MiB with 512 MiB",
        unbounded_peak / 1024,
        bounded_peak / 1024
    );
    assert!(unbounded_ok, "the unbounded run failed: {unbounded_err}");
    assert!(
        unbounded_peak > 1024 * 1024,
        "without a binding budget the hog should exceed 1 GiB ({} MiB): the test would prove nothing",
        unbounded_peak / 1024
    );
    assert!(
        bounded_peak < 512 * 1024 + OVERHEAD_KIB,
        "peak {} MiB exceeds the 512 MiB budget plus {} MiB overhead",
        bounded_peak / 1024,
        OVERHEAD_KIB / 1024
    );
    assert!(
        bounded_err.contains("plugin memory budget of 536870912 bytes is exhausted"),
        "the refused invocations name the budget: {bounded_err}"
    );
}
