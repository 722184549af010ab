//! Misbehaving strategies inside a live checkpoint layout (primary and local copies): each
//! fails its own snapshot with a clear error; the host stays alive; no file, directory or file
//! descriptor leaks; the next checkpoint with a good plugin succeeds and the previous one
//! stays restorable.

use std::path::Path;
use std::time::{Duration, Instant};

use snapshot_host::backend::{KeyedStateBackend, StateKind};
use snapshot_host::handles::KeyGroupsStateHandle;
use snapshot_host::key_groups::KeyGroupRange;
use snapshot_host::result_provider::primary_and_local;
use snapshot_host::runtime::{PluginError, PluginLimits, PluginRuntime};
use snapshot_host::streams::{FileStreamFactory, StateScope};

fn backend_with_mode(mode: &str) -> KeyedStateBackend {
    let mut b = KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap();
    let s = b.register_state(&format!("fixture:{mode}"), StateKind::Value).unwrap();
    for i in 0..200 {
        b.put(s, format!("k{i}").as_bytes(), b"", b"value").unwrap();
    }
    b
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn entries_below(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| if e.path().is_dir() { 1 + entries_below(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

/// A fixture mode, how its error is recognised, and what the message must mention.
type Case = (&'static str, fn(&PluginError) -> bool, &'static str);

#[test]
fn misbehaving_plugins_fail_cleanly_in_a_live_layout() {
    let runtime = PluginRuntime::new().unwrap();
    let limits = PluginLimits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_millis(400),
        max_output_bytes: Some(8 << 20),
        ..PluginLimits::default()
    };
    let bad = runtime.load(&suite::plugin_path("fixture-misbehave"), limits.clone()).unwrap();
    let good = runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = suite::populated_backend(128, 5_000, 11);

    // Checkpoint 1, good, to the primary and a local copy.
    let snapshot_good = |id: u64| -> KeyGroupsStateHandle {
        let factory =
            FileStreamFactory::new(dir.path().join(format!("chk-{id}")), dir.path().join("shared"), 0).unwrap();
        let out =
            primary_and_local(&factory, StateScope::Exclusive, &dir.path().join(format!("local/chk_{id}"))).unwrap();
        let (stream, offsets) = good.snapshot_keyed(state.snapshot(), out).unwrap();
        let result = stream.close_and_finalize().unwrap().into_keyed(offsets);
        assert!(result.local().is_some());
        result.primary().unwrap().clone()
    };
    let first = snapshot_good(1);

    let cases: &[Case] = &[
        ("trap", |e| matches!(e, PluginError::Trap { .. }), "wasm backtrace"),
        ("panic", |e| matches!(e, PluginError::Trap { .. }), "fixture panic: the strategy gave up"),
        ("loop", |e| matches!(e, PluginError::Limit { .. }), "time limit of 400ms"),
        ("memory", |e| matches!(e, PluginError::Limit { .. }), "memory"),
        ("giant", |e| matches!(e, PluginError::Limit { .. }), "memory"),
        ("flood", |e| matches!(e, PluginError::Limit { .. }), "output limit of 8388608 bytes"),
        ("order", |e| matches!(e, PluginError::Contract { .. }), "key group 0 must be marked first"),
        ("range", |e| matches!(e, PluginError::Contract { .. }), "outside the snapshot's range"),
        ("skip", |e| matches!(e, PluginError::Contract { .. }), "were never marked"),
        ("swallow", |e| matches!(e, PluginError::Contract { .. }), "begin-key-group(134)"),
        ("stale-handle", |e| matches!(e, PluginError::Trap { .. }), "handle"),
        ("pending-twice", |e| matches!(e, PluginError::Contract { .. }), "no pending batch"),
        ("ambient", |e| matches!(e, PluginError::Failed { .. }), "env=0 args=0 time=0"),
    ];
    // Two rounds: the first initialises process-wide singletons (wasmtime-wasi starts a tokio
    // runtime the first time a guest writes to stderr); the second must not add a single
    // descriptor, whatever each misbehaving plugin does.
    let mut baseline_fds = usize::MAX;
    for (round, (index, (mode, is_expected, needle))) in
        (0..2).flat_map(|round| cases.iter().enumerate().map(move |c| (round, c)))
    {
        if round == 1 && index == 0 {
            baseline_fds = open_fds();
        }
        let id = (round * 100 + index) as u64 + 2;
        let factory =
            FileStreamFactory::new(dir.path().join(format!("chk-{id}")), dir.path().join("shared"), 0).unwrap();
        let local = dir.path().join(format!("local/chk_{id}"));
        let out = primary_and_local(&factory, StateScope::Exclusive, &local).unwrap();
        let started = Instant::now();
        let err = bad
            .snapshot_keyed(backend_with_mode(mode).snapshot(), out)
            .err()
            .unwrap_or_else(|| panic!("{mode}: the snapshot must fail"));
        let rendered = err.to_string();
        assert!(is_expected(&err), "{mode}: unexpected error kind: {err:?}");
        assert!(rendered.contains(needle), "{mode}: error does not mention {needle:?}: {rendered}");
        assert!(rendered.contains("misbehave"), "{mode}: error does not name the plugin: {rendered}");
        assert!(started.elapsed() < Duration::from_secs(5), "{mode}: took {:?}", started.elapsed());
        assert_eq!(entries_below(&dir.path().join(format!("chk-{id}"))), 0, "{mode}: primary files left behind");
        assert_eq!(entries_below(&local), 0, "{mode}: local files left behind");
        assert!(open_fds() <= baseline_fds, "{mode}: file descriptors leaked ({} > {baseline_fds})", open_fds());
    }

    // The "ambient" run proved env, args and clock are empty or fixed; randomness is
    // deterministic: the same value in two invocations.
    let ambient = |_: ()| {
        bad.snapshot_keyed(
            backend_with_mode("ambient").snapshot(),
            Box::new(snapshot_host::streams::MemoryCheckpointOutputStream::new()),
        )
        .err()
        .unwrap()
        .to_string()
    };
    assert_eq!(ambient(()), ambient(()));

    // Restoring entries into the wrong key group is refused.
    let foreign = {
        let out = Box::new(snapshot_host::streams::MemoryCheckpointOutputStream::new());
        let (stream, offsets) = bad.snapshot_keyed(backend_with_mode("foreign").snapshot(), out).unwrap();
        KeyGroupsStateHandle::new(std::sync::Arc::new(offsets), stream.close_and_get_handle().unwrap())
    };
    let e = bad.restore_keyed(&foreign, KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap()).unwrap_err();
    assert!(matches!(e, PluginError::Contract { .. }) && e.to_string().contains("is being restored"), "{e}");

    // The host is fine: the next checkpoint succeeds and the first one still restores.
    let next = snapshot_good(1000);
    for handle in [&first, &next] {
        let restored =
            good.restore_keyed(handle, KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap()).unwrap();
        assert_eq!(restored.contents(), state.contents());
    }
}
