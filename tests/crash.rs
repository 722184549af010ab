//! Crash test: the job process is killed with SIGKILL at random points of its checkpoint loop,
//! 50 times; after each kill the latest completed checkpoint must restore exactly (its counts
//! equal those of the source's prefix up to its offset), and it must be the newest checkpoint
//! with metadata on disk, at least as new as the last one the process reported complete. The
//! same with incremental checkpoints, half as many kills (CI's budget).

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
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("completed checkpoint ").and_then(|n| n.parse::<u64>().ok()))
                .last()
        });
        std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
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
