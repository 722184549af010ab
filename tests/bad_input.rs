//! Every bad plugin file gets an error naming the file and the problem; a failing snapshot
//! leaves no file behind.

use std::path::Path;

use snapshot_host::runtime::{PluginError, PluginLimits, PluginRuntime};
use snapshot_host::streams::{CheckpointStreamFactory, FileStreamFactory, StateScope};

fn load(runtime: &PluginRuntime, path: &Path) -> PluginError {
    runtime.load(path, PluginLimits::default()).expect_err("loading must fail")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_plugin_files_are_refused_with_the_file_and_the_cause() {
    let runtime = PluginRuntime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(suite::plugin_path("full-keyed")).unwrap();

    let missing = dir.path().join("missing.wasm");
    let e = load(&runtime, &missing);
    assert!(matches!(e, PluginError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.wasm"), "{e}");

    let text = write(dir.path(), "readme.wasm", b"this is not wasm at all");
    let e = load(&runtime, &text);
    assert!(matches!(e, PluginError::NotWasm { .. }) && e.to_string().contains("readme.wasm"), "{e}");

    let empty = write(dir.path(), "empty.wasm", b"");
    assert!(matches!(load(&runtime, &empty), PluginError::NotWasm { .. }));

    let module = write(dir.path(), "module.wasm", b"\0asm\x01\0\0\0");
    let e = load(&runtime, &module);
    assert!(matches!(e, PluginError::CoreModule { .. }) && e.to_string().contains("wasm32-wasip2"), "{e}");

    for cut in [9, good.len() / 3, good.len() - 1] {
        let truncated = write(dir.path(), "truncated.wasm", &good[..cut]);
        let e = load(&runtime, &truncated);
        assert!(matches!(e, PluginError::Invalid { .. }), "cut at {cut}: {e:?}");
        assert!(e.to_string().contains("truncated.wasm"), "{e}");
    }

    // A valid component that exports nothing: another world entirely.
    let other_world = write(dir.path(), "other-world.wasm", b"\0asm\x0d\0\x01\0");
    let e = load(&runtime, &other_world);
    assert!(matches!(e, PluginError::Incompatible { .. }), "{e:?}");
    assert!(e.to_string().contains("world strategy"), "{e}");

    // The same plugin as if built against a future, incompatible WIT version.
    let future = replace_all(&good, b"snapshot:strategy/types@0.2.0", b"snapshot:strategy/types@0.3.0");
    let path = write(dir.path(), "future.wasm", &future);
    let e = load(&runtime, &path);
    assert!(matches!(e, PluginError::Incompatible { .. }), "{e:?}");
    assert!(e.to_string().contains("0.3.0") && e.to_string().contains("0.2.0 and 0.1.0"), "{e}");
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = haystack.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found > 0, "pattern not found");
    out
}

#[test]
fn a_failed_snapshot_leaves_no_file_and_the_previous_one_intact() {
    let runtime = PluginRuntime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let factory = FileStreamFactory::new(dir.path().join("chk"), dir.path().join("shared"), 0).unwrap();
    let state = suite::populated_backend(128, 20_000, 3);

    let plugin = runtime.load(&suite::plugin_path("full-keyed"), PluginLimits::default()).unwrap();
    let (stream, _) =
        plugin.snapshot_keyed(state.snapshot(), factory.create_output_stream(StateScope::Exclusive).unwrap()).unwrap();
    let earlier = stream.close_and_get_handle().unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path().join("chk")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(before.len(), 1);

    let limits = PluginLimits { max_output_bytes: Some(100_000), ..PluginLimits::default() };
    let limited = runtime.load(&suite::plugin_path("full-keyed"), limits).unwrap();
    let e = limited
        .snapshot_keyed(state.snapshot(), factory.create_output_stream(StateScope::Exclusive).unwrap())
        .expect_err("the limit must fail the snapshot");
    assert!(matches!(e, PluginError::Limit { .. }), "{e:?}");
    assert!(e.to_string().contains("100000"), "{e}");

    let after: Vec<_> = std::fs::read_dir(dir.path().join("chk")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(after, before, "the failed snapshot left a file behind");
    assert_eq!(std::fs::metadata(&before[0]).unwrap().len(), earlier.size());
}
