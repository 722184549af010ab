//! Sandbox limits that need no file-descriptor accounting (kept apart from `sandbox.rs`,
//! whose descriptor check must not see other tests' files): cancellation, fuel and
//! capabilities.

use std::path::Path;
use std::time::{Duration, Instant};

use snapshot_host::backend::{KeyedStateBackend, StateKind};
use snapshot_host::key_groups::KeyGroupRange;
use snapshot_host::result_provider::primary_and_local;
use snapshot_host::runtime::{CancelToken, PluginError, PluginLimits, PluginRuntime, RuntimeOptions};
use snapshot_host::streams::{FileStreamFactory, StateScope};

fn backend_with_mode(mode: &str) -> KeyedStateBackend {
    let mut b = KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let s = b.register_state(&format!("fixture:{mode}"), StateKind::Value).unwrap();
    b.put(s, b"k", b"", b"value").unwrap();
    b
}

fn entries_below(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_spinning_snapshot_is_cancelled_promptly_and_leaves_nothing() {
    let runtime = PluginRuntime::new().unwrap();
    let bad = runtime.load(&suite::plugin_path("fixture-misbehave"), PluginLimits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let factory = FileStreamFactory::new(dir.path().join("chk"), dir.path().join("shared"), 0).unwrap();
    let out = primary_and_local(&factory, StateScope::Exclusive, &dir.path().join("local")).unwrap();
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            token.cancel();
            Instant::now()
        })
    };
    let e = bad.snapshot_keyed_cancellable(backend_with_mode("loop").snapshot(), out, &token).unwrap_err();
    let latency = canceller.join().unwrap().elapsed();
    assert!(matches!(e, PluginError::Cancelled { .. }), "{e:?}");
    assert!(latency < Duration::from_millis(500), "interrupted {latency:?} after the cancellation");
    assert_eq!(entries_below(&dir.path().join("chk")), 0);
    assert_eq!(entries_below(&dir.path().join("local")), 0);
}

#[test]
fn fuel_limits_cpu_deterministically() {
    let runtime = PluginRuntime::with_options(RuntimeOptions { fuel: true, ..RuntimeOptions::default() }).unwrap();
    let limits = PluginLimits { fuel: Some(5_000_000), ..PluginLimits::default() };
    let bad = runtime.load(&suite::plugin_path("fixture-misbehave"), limits).unwrap();
    let e = bad
        .snapshot_keyed(
            backend_with_mode("loop").snapshot(),
            Box::new(snapshot_host::streams::MemoryCheckpointOutputStream::new()),
        )
        .unwrap_err();
    assert!(e.to_string().contains("fuel limit of 5000000"), "{e}");
    // A fuel limit without fuel metering is a configuration error, not a silent no-op.
    let plain = PluginRuntime::new().unwrap();
    let e = plain
        .load(&suite::plugin_path("full-keyed"), PluginLimits { fuel: Some(1), ..PluginLimits::default() })
        .unwrap_err();
    assert!(e.to_string().contains("fuel metering"), "{e}");
}

/// The report a capability fixture's snapshot fails with: `attempt=outcome` pairs.
fn attempts(e: &PluginError) -> std::collections::BTreeMap<String, String> {
    let PluginError::Failed { message, .. } = e else { panic!("expected the strategy's own error, got {e:?}") };
    message
        .split("; ")
        .filter_map(|pair| pair.split_once('='))
        .map(|(what, got)| (what.to_string(), got.to_string()))
        .collect()
}

#[test]
fn files_are_linked_but_nothing_is_granted() {
    let escape = Path::new("/tmp/snapshot-host-fixture-escape");
    let _ = std::fs::remove_file(escape);
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&suite::plugin_path("fixture-uses-files"), PluginLimits::default()).unwrap();
    assert!(plugin.imports().iter().any(|i| i.starts_with("wasi:filesystem/")), "{:?}", plugin.imports());
    let e = plugin
        .snapshot_keyed(
            backend_with_mode("files").snapshot(),
            Box::new(snapshot_host::streams::MemoryCheckpointOutputStream::new()),
        )
        .unwrap_err();
    let got = attempts(&e);
    for attempt in ["read", "list", "list-cwd", "create"] {
        assert!(got.get(attempt).is_some_and(|g| g.starts_with("err:")), "{attempt} must be denied: {got:?}");
    }
    assert_eq!(got.get("env").map(String::as_str), Some("0"), "no environment variables: {got:?}");
    assert!(!escape.exists(), "the guest created a file on the host");
}

#[test]
fn sockets_and_http_are_linked_but_every_attempt_is_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let runtime = PluginRuntime::new().unwrap();
    let plugin = runtime.load(&suite::plugin_path("fixture-uses-network"), PluginLimits::default()).unwrap();
    for interface in ["wasi:sockets/", "wasi:http/outgoing-handler"] {
        assert!(plugin.imports().iter().any(|i| i.starts_with(interface)), "{interface}: {:?}", plugin.imports());
    }
    let mut backend = KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let s = backend.register_state("port", StateKind::Value).unwrap();
    backend.put(s, b"k", b"", port.to_string().as_bytes()).unwrap();
    let e = plugin
        .snapshot_keyed(backend.snapshot(), Box::new(snapshot_host::streams::MemoryCheckpointOutputStream::new()))
        .unwrap_err();
    let got = attempts(&e);
    for attempt in ["tcp", "udp", "dns", "http"] {
        assert!(got.get(attempt).is_some_and(|g| g.starts_with("err:")), "{attempt} must be denied: {got:?}");
    }
    assert!(got["http"].contains("HttpRequestDenied"), "{got:?}");
    assert!(listener.accept().is_err(), "the guest reached a host socket");
}

/// A plugin that prints about 20 MiB on stdout and on stderr still snapshots: the host keeps
/// `max_log_bytes` of each and drops the rest, instead of failing the guest's writes.
#[test]
fn a_plugin_that_floods_its_log_still_snapshots() {
    let runtime = PluginRuntime::new().unwrap();
    let limits = PluginLimits { max_log_bytes: 64 << 10, ..PluginLimits::default() };
    let plugin = runtime.load(&suite::plugin_path("fixture-misbehave"), limits).unwrap();
    let (stream, offsets) = plugin
        .snapshot_keyed(
            backend_with_mode("chatty").snapshot(),
            Box::new(snapshot_host::streams::MemoryCheckpointOutputStream::new()),
        )
        .unwrap();
    assert!(stream.position() > 0);
    assert_eq!(offsets.range(), KeyGroupRange::new(0, 127));
}

#[test]
fn interfaces_the_host_does_not_provide_are_all_named() {
    // A component importing two interfaces outside the strategy world and WASI 0.2, encoded
    // here so that the test needs no extra toolchain.
    use wasm_encoder::{Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType};
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    let mut imports = ComponentImportSection::new();
    imports.import("wasi:keyvalue/store@0.2.0", ComponentTypeRef::Instance(0));
    imports.import("example:other/thing@1.0.0", ComponentTypeRef::Instance(0));
    let mut component = Component::new();
    component.section(&types).section(&imports);
    let bytes = component.finish();
    let runtime = PluginRuntime::new().unwrap();
    let e = runtime.load_bytes(Path::new("two-unknown.wasm"), &bytes, PluginLimits::default()).unwrap_err();
    assert!(matches!(e, PluginError::Capability { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("wasi:keyvalue/store@0.2.0") && text.contains("example:other/thing@1.0.0"), "{text}");
}
