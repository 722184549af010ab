//! Strategies in any language: the Rust, Python (componentize-py) and JavaScript
//! (componentize-js, default features) plugins load under the WASI policy, pass the full
//! reference harness, and run the demo job the same way.

use std::process::Command;

use snapshot_host::harness::{case_names, test_plugin, Options, Outcome};

fn passes_the_full_harness(name: &str) {
    // Interpreted guests in a debug host: the harness's own 15 s deadline is meant for release
    // builds (`plugin test` takes `--set plugin.timeout=...` for slow machines).
    let mut options = Options::full();
    options.limits.timeout = std::time::Duration::from_secs(120);
    let report = test_plugin(&suite::plugin_path(name), &options).unwrap();
    let failures: Vec<_> = report.cases.iter().filter(|c| c.outcome == Outcome::Fail).collect();
    assert!(failures.is_empty(), "{name}:\n{}", report.to_table(true));
    assert_eq!(report.name, name);
    assert_eq!(report.cases.len(), case_names().len(), "{}", report.to_table(true));
}

#[test]
fn the_rust_plugin_passes_the_full_harness() {
    passes_the_full_harness("full-keyed");
}

#[test]
fn the_python_plugin_passes_the_full_harness() {
    passes_the_full_harness("python-keyed");
}

#[test]
fn the_javascript_plugin_passes_the_full_harness() {
    passes_the_full_harness("js-keyed");
}

/// The demo job (failures injected, local and primary restores, result compared with a
/// failure-free run) with each language's plugin; the JavaScript plugin's `console.log` lands
/// in the host's log.
#[test]
fn the_demo_job_runs_with_each_language() {
    for name in suite::GUEST_PLUGINS {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(suite::host_binary())
            .current_dir(dir.path())
            .env("RUST_LOG", "warn,snapshot_host::plugin=info")
            .args(["demo", "--events", "20000", "--keys", "1000", "--parallelism", "2", "--primary", "checkpoints"])
            .arg("--plugin")
            .arg(suite::plugin_path(name))
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{name}: {stdout}{stderr}");
        assert!(stdout.contains(&format!("strategy:   {name}")), "{name}: {stdout}");
        assert!(stdout.contains("equal to a failure-free run"), "{name}: {stdout}");
        assert!(stdout.contains("alternative 1/2 (local)"), "{name}: restored from the local copy: {stdout}");
        if *name == "js-keyed" {
            assert!(stderr.contains("js-keyed: snapshot of key groups"), "console.log reaches the log: {stderr}");
        }
    }
}

#[test]
fn plugin_info_says_what_each_import_is_granted() {
    let out = Command::new(suite::host_binary())
        .args(["plugin", "info"])
        .arg(suite::plugin_path("python-keyed"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for (import, granted) in [
        ("wasi:filesystem/preopens@", "none: no directory is preopened"),
        ("wasi:sockets/tcp@", "denied: every socket operation fails"),
        ("wasi:clocks/wall-clock@", "deterministic: always the Unix epoch"),
        ("snapshot:strategy/output@0.1.0", "the strategy world"),
    ] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(import)).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(granted), "{line}");
    }
    let out = Command::new(suite::host_binary())
        .args(["plugin", "info", "--json"])
        .arg(suite::plugin_path("js-keyed"))
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let grants = json["grants"].as_array().unwrap();
    let http = grants.iter().find(|g| g["import"].as_str().unwrap().starts_with("wasi:http/outgoing-handler")).unwrap();
    assert!(http["granted"].as_str().unwrap().starts_with("denied"), "{http}");
}

/// The limits sized for interpreters still bind: too few instances refuses the Python plugin at
/// load naming the key, and the memory limit fails a restore that needs more, naming its key,
/// while the default limits restore the same snapshot.
#[test]
fn the_limits_still_hold_for_an_interpreter_plugin() {
    use snapshot_host::backend::{KeyedStateBackend, StateKind};
    use snapshot_host::handles::KeyGroupsStateHandle;
    use snapshot_host::key_groups::KeyGroupRange;
    use snapshot_host::runtime::{PluginError, PluginLimits, PluginRuntime};
    use snapshot_host::streams::MemoryCheckpointOutputStream;

    let runtime = PluginRuntime::new().unwrap();
    let path = suite::plugin_path("python-keyed");
    let e = runtime.load(&path, PluginLimits { instances: 8, ..PluginLimits::default() }).unwrap_err();
    assert!(matches!(e, PluginError::Limit { .. }), "{e:?}");
    assert!(
        e.to_string().contains("more than 8 core instances") && e.to_string().contains("plugin.max-instances"),
        "{e}"
    );

    let mut backend = KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let s = backend.register_state("big", StateKind::Value).unwrap();
    backend.put(s, b"key", b"", &vec![7u8; 48 << 20]).unwrap();
    let plugin = runtime.load(&path, PluginLimits::default()).unwrap();
    let (stream, offsets) =
        plugin.snapshot_keyed(backend.snapshot(), Box::new(MemoryCheckpointOutputStream::new())).unwrap();
    let handle = KeyGroupsStateHandle::new(std::sync::Arc::new(offsets), stream.close_and_get_handle().unwrap());
    let fresh = || KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let small = runtime.load(&path, PluginLimits { memory_bytes: 64 << 20, ..PluginLimits::default() }).unwrap();
    let e = small.restore_keyed(&handle, fresh()).unwrap_err();
    assert!(matches!(e, PluginError::Limit { .. }), "{e:?}");
    assert!(e.to_string().contains("plugin.memory-limit"), "{e}");
    let restored = plugin.restore_keyed(&handle, fresh()).unwrap();
    assert_eq!(restored.contents(), backend.contents());
}
