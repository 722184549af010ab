//! `job run` and `demo` as a user sees them: a run whose checkpoints all fail exits non-zero
//! and says why (defect 8), failure tolerance is honoured (defect 6), normal leftovers after a
//! kill are not warned about, and each cause of an error is printed once (defect 7).

use std::path::Path;
use std::process::Command;

fn job_run(dir: &Path, plugin: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(suite::host_binary())
        .current_dir(dir)
        .args(["job", "run", "--events", "30000", "--checkpoint-interval", "5000", "--plugin"])
        .arg(plugin)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_run_whose_checkpoints_all_fail_exits_non_zero_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // A strategy that cannot keep the job's state is refused before the job starts.
    let (ok, out, err) = job_run(dir.path(), &suite::plugin_path("fixture-misbehave"), &[]);
    assert!(!ok && !out.contains("checkpoint"), "{out}");
    assert!(err.contains("cannot keep the job's keyed state"), "{err}");
    // An output limit that the pre-flight snapshot fits in and every checkpoint of the job
    // exceeds: every checkpoint fails.
    let plugin = suite::plugin_path("full-keyed");
    let cap = ["--set", "plugin.max-output-bytes=512"];
    let (ok, out, err) = job_run(dir.path(), &plugin, &cap);
    assert!(!ok, "exit 0 although every checkpoint failed: {out}");
    assert!(!out.contains("finished"), "{out}");
    assert!(err.contains("tolerable-failed-checkpoints") && err.contains("output limit"), "{err}");
    // Each failed checkpoint is reported once, with its real cause (not as a cancellation of
    // the other subtasks' snapshots).
    let aborted: Vec<&str> = out.lines().filter(|l| l.starts_with("aborted checkpoint")).collect();
    assert!(!aborted.is_empty() && aborted.iter().all(|l| l.contains("output limit")), "{out}");

    // Tolerating failures, the job runs to its end, then fails because nothing is durable.
    let (ok, out, err) = job_run(
        dir.path(),
        &plugin,
        &["--job-id", "tolerant", "--set", "execution.checkpointing.tolerable-failed-checkpoints=100", cap[0], cap[1]],
    );
    assert!(!ok, "{out}");
    assert!(err.contains("none of its") && err.contains("checkpoints completed"), "{err}");
}

#[test]
fn a_clean_run_over_normal_leftovers_prints_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = suite::plugin_path("full-keyed");
    // What a kill leaves: a local checkpoint directory whose copy was never stored (an id this
    // run does not reach, so that only the start-up cleanup can have removed it).
    let leftover = dir.path().join("local-state/localState/aid_local/jid_job/vtx_counter_sti_0/chk_999");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("0a1b2c.inprogress"), b"half").unwrap();
    // (The helper the clean-stop tests rely on sees such a file.)
    assert_eq!(suite::partial_files(dir.path()), [leftover.join("0a1b2c.inprogress")]);
    let (ok, out, err) = job_run(dir.path(), &plugin, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("completed checkpoint") && out.contains("finished"), "{out}");
    assert!(!err.contains("WARN"), "a clean run warned: {err}");
    assert!(!leftover.exists());
}

#[test]
fn each_cause_of_an_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = job_run(dir.path(), dir.path(), &[]);
    assert!(!ok);
    assert!(err.contains("Is a directory"), "{err}");
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
}

/// Bad storage settings are named with the key or the location, before any work is done, and
/// an S3 run against a reachable server completes; nothing panics.
#[test]
fn storage_settings_errors_name_the_input_and_an_s3_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = suite::plugin_path("full-keyed");
    for (set, expected) in [
        ("execution.checkpointing.dir=hdfs://namenode/ckpt", "hdfs:// is not a supported checkpoint storage"),
        ("execution.checkpointing.dir=s3://Not_A_Bucket/x", "not a bucket name"),
        ("s3.upload.part-size=1KiB", "s3.upload.part-size"),
    ] {
        let (ok, out, err) = job_run(dir.path(), &plugin, &["--set", set]);
        assert!(!ok, "{set}: {out}");
        assert!(err.contains(expected) && !err.contains("panicked"), "{set}: {err}");
    }
    // Nothing listens on port 9 (discard): the start fails naming the location.
    let (ok, _, err) = job_run(
        dir.path(),
        &plugin,
        &[
            "--set",
            "execution.checkpointing.dir=s3://bucket/ckpt",
            "--set",
            "s3.endpoint=http://127.0.0.1:9",
            "--set",
            "s3.retry.max-retries=0",
            "--set",
            "s3.secret-key=do-not-print-me",
            "--set",
            "s3.access-key=a",
        ],
    );
    assert!(!ok);
    assert!(err.contains("s3://bucket/ckpt/job") && !err.contains("panicked"), "{err}");
    assert!(!err.contains("do-not-print-me"), "the secret was printed: {err}");

    let server = suite::s3_server();
    server.create_bucket("cli-run").unwrap();
    let mut args: Vec<String> = Vec::new();
    for o in server.config_overrides() {
        args.extend(["--set".into(), o]);
    }
    args.extend(["--set".into(), "execution.checkpointing.dir=s3://cli-run/ckpt".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = job_run(dir.path(), &plugin, &args);
    assert!(ok && out.contains("completed checkpoint") && out.contains("finished"), "{out}{err}");
    assert!(server.root().join("cli-run/ckpt/job").exists(), "no objects in the bucket");
}

/// The demo as a newcomer runs it (here with fewer events): on its own embedded S3 server, it
/// restores from local copies, then from S3, and prints the two restore times side by side.
#[test]
fn the_demo_restores_locally_then_from_s3_and_compares_the_times() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(suite::host_binary())
        .current_dir(dir.path())
        .args(["demo", "--events", "40000", "--keys", "2000", "--parallelism", "2", "--plugin"])
        .arg(suite::plugin_path("full-keyed"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("primary:    s3://checkpoints/demo (embedded S3-compatible server"), "{stdout}");
    assert!(stdout.contains("alternative 1/2 (local)") && stdout.contains("alternative 1/1 (primary)"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("restore:")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("from its local copy vs") && line.contains("faster locally"), "{line}");
    assert!(stdout.contains("equal to a failure-free run"), "{stdout}");
}

/// `snapshot-host demo | head -2`: once the reader is gone the demo ends quietly, with the
/// status of a Unix tool whose pipe closed, and leaves no in-progress file behind.
#[test]
fn a_closed_stdout_ends_the_demo_quietly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(suite::host_binary())
        .current_dir(dir.path())
        .args(["demo", "--events", "40000", "--keys", "2000", "--primary", "checkpoints", "--plugin"])
        .arg(suite::plugin_path("full-keyed"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        lines.next().unwrap().unwrap();
    }
    drop(lines);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    let leftovers = suite::partial_files(dir.path());
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Scripts tell the endings apart: 2 for a usage mistake, 3 for a plugin that failed its
/// tests, 1 for a runtime error.
#[test]
fn exit_statuses_tell_usage_runtime_and_failed_tests_apart() {
    let status = |args: &[&str]| Command::new(suite::host_binary()).args(args).output().unwrap().status.code();
    assert_eq!(status(&["demo", "--events", "many"]), Some(2));
    assert_eq!(status(&["plugin", "info", "--set", "no-equals-sign", "x.wasm"]), Some(2));
    assert_eq!(status(&["plugin", "info", "/nonexistent/strategy.wasm"]), Some(1));
    let broken = suite::broken_plugin("empty-state");
    assert_eq!(status(&["plugin", "test", "--quick", broken.to_str().unwrap()]), Some(3));
}

/// A Flink 2.x `config.yaml` runs the demo: the primary from a `file://` URI, local copies
/// written and restored from, in the directories it names; Flink 1.x's names still work, each
/// with a warning naming its new key.
#[test]
fn a_flink_2_config_yaml_runs_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, local) = (dir.path().join("ckpt"), dir.path().join("ssd"));
    let yaml = format!(
        "execution:\n  checkpointing:\n    dir: file://{}\n    num-retained: 2\n    local-backup:\n      enabled: true\n      dirs: [{}]\n  state-recovery:\n    from-local: true\nplugin.timeout: 1 min\nplugin.memory-limit: 256mb\n",
        ckpt.display(),
        local.display()
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let demo = |config: &Path| {
        Command::new(suite::host_binary())
            .current_dir(dir.path())
            .args(["demo", "--events", "40000", "--keys", "2000", "--config"])
            .arg(config)
            .arg("--plugin")
            .arg(suite::plugin_path("full-keyed"))
            .output()
            .unwrap()
    };
    let out = demo(&config);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("deprecated"), "{stderr}");
    assert!(stdout.contains(&format!("primary:    {}", ckpt.display())), "{stdout}");
    assert!(stdout.contains("alternative 1/2 (local)"), "{stdout}");
    assert!(std::fs::read_dir(&ckpt).unwrap().count() > 0 && std::fs::read_dir(&local).unwrap().count() > 0);

    let old = dir.path().join("old.yaml");
    std::fs::write(&old, format!("state.backend.local-recovery: true\nstate.checkpoints.dir: {}\n", ckpt.display()))
        .unwrap();
    let out = demo(&old);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for (old, new) in [
        ("state.backend.local-recovery", "execution.state-recovery.from-local"),
        ("state.checkpoints.dir", "execution.checkpointing.dir"),
    ] {
        assert!(stderr.contains(&format!("configuration key {old} is deprecated; use {new}")), "{stderr}");
    }

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "execution:\n  checkpointing: [\n").unwrap();
    let out = demo(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&format!("{}:3:", bad.display())), "{stderr}");
}

/// `-v` logs the checkpoint lifecycle (triggered, completed with size, duration and pause,
/// subsumed, restored with source and alternative), `--log-format json` as one JSON object a
/// line with its target; `-q` leaves only errors.
#[test]
fn logs_show_the_checkpoint_lifecycle_at_the_level_asked_for() {
    let demo = |flags: &[&str]| {
        // A fresh directory each: checkpoint ids start at 1.
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(suite::host_binary())
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .args(flags)
            .args(["demo", "--events", "20000", "--keys", "500", "--primary", "checkpoints", "--plugin"])
            .arg(suite::plugin_path("full-keyed"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let json = demo(&["-v", "--log-format", "json"]);
    let lines: Vec<serde_json::Value> =
        json.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let message = |needle: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in\n{json}"))
    };
    assert_eq!(message("checkpoint 1 triggered")["level"], "INFO");
    let completed = message("checkpoint 1 completed");
    assert!(completed["fields"]["bytes"].as_u64().unwrap() > 0, "{completed}");
    assert!(completed["fields"]["sync_pause_us"].is_u64() && completed["fields"]["duration_ms"].is_u64());
    assert_eq!(completed["target"], "snapshot_host::facade::coordinator");
    message("subsumed by");
    let restored = message("restored checkpoint");
    assert!(restored["fields"]["source"].is_string() && restored["fields"]["alternative"].is_u64(), "{restored}");

    let text = demo(&["-v"]);
    assert!(text.contains(" INFO snapshot_host::facade::coordinator: checkpoint 1 triggered"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour on a pipe: {text}");
    assert!(!demo(&[]).contains(" INFO "));
    assert_eq!(demo(&["-q"]), "");
}

/// `snapshot-host config` prints what a run would use and where each value came from.
#[test]
fn config_prints_the_effective_configuration_and_its_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "execution:\n  checkpointing:\n    num-retained: 5\nstate.checkpoints.dir: /data/x\n")
        .unwrap();
    let out = Command::new(suite::host_binary())
        .args(["config", "--json", "--set", "plugin.timeout=1 min", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let values: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let get = |key: &str| values.iter().find(|v| v["key"] == key).unwrap_or_else(|| panic!("no {key}")).clone();
    let origin = format!("configuration file {}", file.display());
    assert_eq!(
        (
            get("execution.checkpointing.num-retained")["value"].as_str(),
            get("execution.checkpointing.num-retained")["source"].as_str()
        ),
        (Some("5"), Some(origin.as_str()))
    );
    assert_eq!(get("execution.checkpointing.dir")["deprecated_name"], "state.checkpoints.dir");
    assert_eq!(get("plugin.timeout")["source"], "command line");
    assert_eq!(get("execution.state-recovery.from-local")["source"], "the demo's defaults");
    assert_eq!(get("s3.region")["source"], "default");
    let table = Command::new(suite::host_binary()).args(["config", "-q", "--library-defaults"]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("execution.state-recovery.from-local")
            && l.contains("false")
            && l.ends_with("default")),
        "{text}"
    );
}

/// Ctrl-C (SIGINT) or SIGTERM during `job run`: in-flight checkpoints are cancelled and their
/// files removed, the last completed checkpoint is printed, the status is 130 or 143, and the
/// checkpoint left behind restores exactly.
#[test]
fn a_signal_stops_job_run_cleanly() {
    use std::io::BufRead;
    for (signal, status) in [("-INT", 130), ("-TERM", 143)] {
        let dir = tempfile::tempdir().unwrap();
        let plugin = suite::plugin_path("full-keyed");
        let mut child = Command::new(suite::host_binary())
            .current_dir(dir.path())
            .args(["job", "run", "--events", "1000000000", "--checkpoint-interval", "20000", "--plugin"])
            .arg(&plugin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        while !seen.iter().any(|l: &String| l == "completed checkpoint 3") {
            seen.push(lines.next().expect("job run ended early").unwrap());
        }
        let killed = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(killed.success());
        seen.extend(lines.map(Result::unwrap));
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{signal}: {stderr}");
        let last = seen.iter().find(|l| l.starts_with("stopped at event")).unwrap_or_else(|| panic!("{seen:?}"));
        assert!(last.contains("last completed checkpoint"), "{last}");
        let leftovers = suite::partial_files(dir.path());
        assert!(leftovers.is_empty(), "{signal}: left {leftovers:?}");
        let verify = Command::new(suite::host_binary())
            .current_dir(dir.path())
            .args(["job", "verify", "--events", "1000000000", "--checkpoint-interval", "20000", "--plugin"])
            .arg(&plugin)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    }
}

/// One scrape of `http://addr/metrics`, parsed; `None` while nothing listens yet.
fn scrape(addr: &str) -> Option<prometheus_parse::Scrape> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Some(prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format"))
}

/// The value of `name` for job `job` (with `label=value` if given).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get("job") == Some("job"))
        .find(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is neither a counter nor a gauge"),
        })
}

/// Starts `job run` serving metrics, scrapes until `ready` holds, stops it with SIGTERM.
fn scrape_job_run(dir: &Path, ready: impl Fn(&prometheus_parse::Scrape) -> bool) -> prometheus_parse::Scrape {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(suite::host_binary())
        .current_dir(dir)
        .args(["job", "run", "--events", "1000000000", "--checkpoint-interval", "20000", "--metrics-addr", &addr])
        .arg("--plugin")
        .arg(suite::plugin_path("full-keyed"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let last = loop {
        assert!(std::time::Instant::now() < deadline, "the metrics never became ready");
        if let Some(s) = scrape(&addr).filter(|s| ready(s)) {
            break s;
        }
        assert!(child.try_wait().unwrap().is_none(), "job run ended early");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    last
}

#[test]
fn job_run_serves_checkpoint_metrics_in_prometheus_format() {
    let dir = tempfile::tempdir().unwrap();
    let completed = |s: &prometheus_parse::Scrape| sample(s, "numberOfCompletedCheckpoints", None).unwrap_or(0.0);
    let first = scrape_job_run(dir.path(), |s| completed(s) >= 3.0);
    assert_eq!(sample(&first, "numberOfFailedCheckpoints", None), Some(0.0), "failures are reported from zero");
    assert!(sample(&first, "totalNumberOfCheckpoints", None).unwrap() >= completed(&first));
    assert!(sample(&first, "lastCompletedCheckpointId", None).unwrap() >= 3.0);
    assert!(sample(&first, "lastCheckpointSize", None).unwrap() > 1000.0);
    assert!(sample(&first, "lastCheckpointDuration", None).unwrap() > 0.0);
    assert!(sample(&first, "lastCheckpointSyncDuration", None).is_some());
    assert!(sample(&first, "numberOfInProgressCheckpoints", None).is_some());
    assert_eq!(sample(&first, "lastCheckpointRestoreTimestamp", None), None, "nothing was restored");

    // The next run restores every subtask from its local copy, and says so.
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
    let second = scrape_job_run(dir.path(), |s| sample(s, "lastCheckpointRestoreTimestamp", None).is_some());
    assert!(sample(&second, "lastCheckpointRestoreTimestamp", None).unwrap() >= before);
    assert_eq!(sample(&second, "numberOfRestoredSubtasks", Some(("source", "local"))), Some(2.0));
    assert_eq!(sample(&second, "numberOfRestoredSubtasks", Some(("source", "primary"))), None);
}

#[test]
fn bench_reports_progress_on_stderr_and_json_rows_of_the_state_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-built.wasm");
    let out = Command::new(suite::host_binary())
        .current_dir(dir.path())
        .args(["bench", "--state-mib", "4", "--runs", "1", "--scaling-events", "20000", "--json", "--plugin"])
        .arg(suite::plugin_path("full-keyed"))
        .arg("--compact-plugin")
        .arg(suite::plugin_path("compact-keyed"))
        .arg("--python-plugin")
        .arg(&missing)
        .arg("--js-plugin")
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // stdout is one JSON document; the table and the progress lines are on stderr.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON only");
    assert!(stderr.contains("] building 4 MiB of keyed state") && stderr.contains("] row 8:"), "{stderr}");
    assert!(stderr.contains("| 1. WASM strategy / native Rust"), "{stderr}");
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.len() >= 20, "{report}");
    for row in rows {
        assert_eq!(row["state_mib"], 4, "{row}");
        let (min, median, max) =
            (row["min"].as_f64().unwrap(), row["median"].as_f64().unwrap(), row["max"].as_f64().unwrap());
        assert!(min <= median && median <= max, "{row}");
        assert!(!row["samples"].as_array().unwrap().is_empty(), "{row}");
    }
    // Row 5 measures no state larger than the one asked for (it built 256 MiB regardless).
    let pauses: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).filter(|n| n.starts_with("5.")).collect();
    assert_eq!(pauses, ["5. synchronous pause, 4 MiB state"]);
    let notes = report["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("Python plugin") && n.as_str().unwrap().contains("not built")),
        "{notes:?}"
    );
    assert!(!dir.path().join("bench-data").exists(), "bench leaves its files behind");
}

#[test]
fn job_verify_notices_other_events_or_keys_than_the_run_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = suite::plugin_path("full-keyed");
    let (ok, out, err) = job_run(dir.path(), &plugin, &["--keys", "300"]);
    assert!(ok, "{out}{err}");
    let verify = |extra: &[&str]| {
        Command::new(suite::host_binary())
            .current_dir(dir.path())
            .args(["job", "verify", "--checkpoint-interval", "5000", "--plugin"])
            .arg(&plugin)
            .args(extra)
            .output()
            .unwrap()
    };
    let same = verify(&["--events", "30000", "--keys", "300"]);
    assert!(same.status.success(), "{}", String::from_utf8_lossy(&same.stderr));
    for other in [["--events", "40000", "--keys", "300"], ["--events", "30000", "--keys", "301"]] {
        let out = verify(&other);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{other:?}: {stderr}");
        assert!(stderr.contains("written by a run of job=job keys=300 events=30000"), "{stderr}");
    }
}

#[test]
fn a_signal_stops_the_demo_cleanly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(suite::host_binary())
        .current_dir(dir.path())
        .args(["demo", "--primary", "checkpoints", "--events", "50000000", "--keys", "1000"])
        .args(["--checkpoint-interval", "20000", "--plugin"])
        .arg(suite::plugin_path("full-keyed"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("checkpoint   3:")) {
        seen.push(lines.next().expect("the demo ended early").unwrap());
    }
    assert!(Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap().success());
    seen.extend(lines.map(Result::unwrap));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(seen.iter().any(|l| l.contains("stopped at event") && l.contains("last completed checkpoint")), "{seen:?}");
    let leftovers = suite::partial_files(dir.path());
    assert!(leftovers.is_empty(), "left {leftovers:?}");
}
