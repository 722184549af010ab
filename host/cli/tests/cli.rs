//! The command line reports bad arguments and files with a clear error and a failure status.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_snapshot-host")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugin_info_on_a_missing_file_names_it() {
    let (ok, _, err) = run(&["plugin", "info", "/nonexistent/strategy.wasm"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/strategy.wasm") && err.contains("cannot read"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn plugin_info_on_a_non_wasm_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "hello").unwrap();
    let (ok, _, err) = run(&["plugin", "info", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("notes.wasm") && err.contains("not a WebAssembly file"), "{err}");
}

#[test]
fn unknown_arguments_are_rejected() {
    let (ok, _, err) = run(&["demo", "--events", "many"]);
    assert!(!ok);
    assert!(err.contains("--events"), "{err}");
    let (ok, _, _) = run(&["frobnicate"]);
    assert!(!ok);
}
