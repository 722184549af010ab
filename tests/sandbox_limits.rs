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

#[test]
fn files_and_network_are_not_granted() {
    let runtime = PluginRuntime::new().unwrap();
    for (fixture, capability) in [("fixture-uses-files", "wasi:filesystem"), ("fixture-uses-network", "wasi:")] {
        let e = runtime.load(&suite::plugin_path(fixture), PluginLimits::default()).unwrap_err();
        assert!(matches!(e, PluginError::Capability { .. }), "{fixture}: {e:?}");
        assert!(e.to_string().contains(capability) && e.to_string().contains("not granted"), "{fixture}: {e}");
    }
}
