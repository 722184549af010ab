//! The reference harness: a correct plugin passes every case; deliberately broken plugins
//! fail the case named for their bug; the plugin template builds and passes as generated.

use std::process::Command;

use snapshot_host::harness::{test_plugin, Outcome, Sizes};

#[test]
fn full_keyed_passes_every_case_and_reports_render() {
    let report = test_plugin(&suite::plugin_path("full-keyed"), Sizes::QUICK).unwrap();
    let failures: Vec<_> = report.cases.iter().filter(|c| c.outcome == Outcome::Fail).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(report.cases.len() >= 16);
    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json["cases"][0]["name"], "round-trip/empty");
    let junit = report.to_junit();
    assert!(
        junit.contains("<testsuite name=\"full-keyed\"")
            && junit.contains("name=\"rescaling/4-to-2\"")
            && !junit.contains("<failure")
    );
    assert!(report.to_table().contains("16 passed, 0 failed"));
}

/// A strategy whose every entry passes through the guest (varint framing) meets the same
/// contract as the verbatim one.
#[test]
fn compact_keyed_passes_every_case() {
    let report = test_plugin(&suite::plugin_path("compact-keyed"), Sizes::QUICK).unwrap();
    assert!(!report.failed(), "{}", report.to_table());
    assert_eq!(report.format, "compact-keyed");
}

#[test]
fn broken_plugins_fail_the_case_named_for_their_bug() {
    for (bug, case) in [
        ("drop-entries", "round-trip/every-state-kind"),
        ("shifted-offsets", "offsets/each-key-group-alone"),
        ("order", "offsets/each-key-group-alone"),
        ("ignore-range", "rescaling/1-to-3"),
        ("runaway-memory", "resources/memory-and-time"),
    ] {
        let report = test_plugin(&suite::broken_plugin(bug), Sizes::QUICK).unwrap();
        let result = report.case(case).unwrap_or_else(|| panic!("no case {case}"));
        assert_eq!(result.outcome, Outcome::Fail, "{bug}: {case} should fail: {result:?}");
        assert!(!result.message.is_empty(), "{bug}: a failing case explains itself");
        assert!(report.failed());
        let junit = report.to_junit();
        assert!(junit.contains("<failure"), "{bug}");
    }
    // The same fixture without a bug passes: the failures above are the bugs, not the fixture.
    let clean = test_plugin(&suite::broken_plugin("none"), Sizes::QUICK).unwrap();
    assert!(!clean.failed(), "{}", clean.to_table());
}

#[test]
fn the_plugin_template_builds_and_passes_as_generated() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("my-strategy");
    let out = Command::new(suite::host_binary())
        .args(["plugin", "new", "my-strategy", "--dir"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = suite::workspace_root().join("target/template");
    let status = Command::new(cargo)
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .status()
        .unwrap();
    assert!(status.success(), "the generated crate does not build");
    let wasm = target.join("wasm32-wasip2/release/my_strategy.wasm");
    let out = Command::new(suite::host_binary()).args(["plugin", "test", "--quick"]).arg(&wasm).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 failed"));
    // A name that is not a crate name is refused.
    let bad = Command::new(suite::host_binary()).args(["plugin", "new", "Bad Name"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("invalid plugin name"));
}
