//! The reference harness: correct plugins pass every case; each deliberately broken plugin
//! fails exactly the cases meant to catch it, with a message naming the first differing
//! entry; looping and flooding plugins fail at the harness's deadline and output cap; the plugin template builds, passes and
//! runs the demo job as generated.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use snapshot_host::harness::{case_names, test_plugin, CaseResult, Options, Outcome, Report, HOST_GUARANTEED_CASES};

#[test]
fn full_keyed_passes_every_case_and_reports_render() {
    let report = test_plugin(&suite::plugin_path("full-keyed"), &Options::quick()).unwrap();
    assert!(!report.failed(), "{}", report.to_table(true));
    assert_eq!(report.cases.len(), case_names().len());
    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json["cases"][0]["name"], "round-trip/empty");
    let junit = report.to_junit();
    assert_well_formed(&junit);
    assert!(junit.contains("name=\"rescaling/keyed\"") && junit.contains("name=\"operator/rescaling\""));
    assert!(!junit.contains("<failure"));
    assert!(report.to_table(false).contains(&format!("{} passed, 0 failed", case_names().len())));
}

/// A strategy whose every entry passes through the guest (varint framing) meets the same
/// contract as the verbatim one.
#[test]
fn compact_keyed_passes_every_case() {
    let report = test_plugin(&suite::plugin_path("compact-keyed"), &Options::quick()).unwrap();
    assert!(!report.failed(), "{}", report.to_table(true));
    assert_eq!(report.format, "compact-keyed");
    // It writes no deltas: the incremental cases are skipped, and said to be.
    let skipped: Vec<&str> =
        report.cases.iter().filter(|c| c.outcome == Outcome::Skip).map(|c| c.name.as_str()).collect();
    assert_eq!(skipped.len(), 4, "{}", report.to_table(true));
    assert!(skipped.iter().all(|n| n.starts_with("incremental/")), "{skipped:?}");
    assert!(report.to_table(false).contains(", 4 skipped"), "{}", report.to_table(false));
}

/// Whatever a guest prints (control characters, markup), the JUnit report stays valid XML.
#[test]
fn junit_is_valid_xml_whatever_the_message() {
    let nasty = "guest said \u{0}\u{1b}[31m<oops> & \"quotes\" ]]> \u{7}";
    let report = Report {
        plugin: "p<&>.wasm".into(),
        name: "n\u{1}".into(),
        format: "f".into(),
        cases: vec![CaseResult {
            name: "c<1>".into(),
            outcome: Outcome::Fail,
            millis: 1,
            bytes: 0,
            message: nasty.into(),
            detail: format!("backtrace\n{nasty}"),
        }],
    };
    let junit = report.to_junit();
    assert_well_formed(&junit);
    assert!(junit.contains("<failure"), "{junit}");
}

fn assert_well_formed(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Text(t)) => {
                t.decode().unwrap_or_else(|e| panic!("bad text in {xml}: {e}"));
            }
            Ok(_) => {}
            Err(e) => panic!("not well-formed XML at {}: {e}\n{xml}", reader.buffer_position()),
        }
    }
    assert!(
        !xml.chars().any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r')),
        "control character in {xml:?}"
    );
}

/// Runs the quick harness on the broken fixture built with `bug`, on its own thread.
fn run_fixture(bug: &'static str) -> std::thread::JoinHandle<(Report, Duration)> {
    let path = suite::broken_plugin(bug);
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut options = Options::quick();
        options.limits.timeout = Duration::from_secs(60); // a debug host
        (test_plugin(&path, &options).unwrap(), started.elapsed())
    })
}

/// Each bug, and exactly the cases that must fail for it. Most bugs are caught by one case
/// only: that case is what catches it.
const EXACT: &[(&str, &[&str])] = &[
    ("empty-state", &["round-trip/empty"]),
    ("state-name-u8", &["round-trip/every-state-kind"]),
    ("first-group-zero", &["rescaling/keyed"]),
    ("op-len-16k", &["operator/every-mode"]),
    ("op-sequential-read", &["operator/rescaling"]),
    ("delta-value-64k", &["incremental/delta-round-trip"]),
    ("delta-no-removals", &["incremental/deletions-and-lists"]),
    ("delta-part-once", &["incremental/chains-and-compaction"]),
    ("delta-header-first-group", &["incremental/rescaling-from-a-chain"]),
    // What the host guarantees every plugin, no plugin can break: determinism, a stable
    // `describe()`, and the fault cases hold against one that tries.
    ("adversary", &[]),
    ("high-byte-key", &["round-trip/binary-keys"]),
    ("value-4mib", &["round-trip/huge-value"]),
    ("small-run-u8", &["round-trip/many-tiny-entries"]),
    ("list-binary-ns", &["round-trip/mixed-kinds-one-group"]),
    // Also every restore large enough that the host moves on to a fresh instance midway.
    (
        "state-dictionary",
        &[
            "round-trip/length-boundaries",
            "round-trip/huge-value",
            "offsets/each-key-group-alone",
            "rescaling/keyed",
            "resources/memory-and-time",
        ],
    ),
    ("key-len-128", &["round-trip/length-boundaries"]),
    ("ns-over-255", &["round-trip/length-boundaries"]),
    ("value-16k", &["round-trip/length-boundaries"]),
    ("skip-after-empty", &["round-trip/sparse-multi-state"]),
    ("give-up-after-empties", &["round-trip/sparse-key-groups"]),
    ("ns-table-4", &["round-trip/dense-key-groups"]),
    ("needs-previous-group", &["offsets/each-key-group-alone"]),
    ("list-dup", &["round-trip/long-lists-large-maps"]),
    ("drop-later-batches", &["round-trip/multi-batch-key-groups"]),
    ("buffer-all", &["resources/memory-proportional"]),
    ("runaway-memory", &["resources/memory-and-time"]),
    ("panic-on-huge", &["resources/memory-and-time"]),
    ("op-drop-last-large", &["operator/small-and-large-elements"]),
    ("union-header", &["operator/each-partition-alone"]),
    ("skip-empty-elements", &["operator/empty-lists"]),
    ("op-broadcast-as-union", &["operator/every-mode", "operator/each-partition-alone", "operator/rescaling"]),
    (
        "op-one-partition",
        &[
            "operator/every-mode",
            "operator/empty-lists",
            "operator/small-and-large-elements",
            "operator/each-partition-alone",
            "operator/rescaling",
        ],
    ),
];

#[test]
fn each_broken_fixture_fails_exactly_the_cases_meant_to_catch_it() {
    let clean = run_fixture("none");
    let runs: Vec<_> = EXACT.iter().map(|(bug, expected)| (*bug, *expected, run_fixture(bug))).collect();
    let (clean, _) = clean.join().unwrap();
    assert!(!clean.failed(), "the fixture without a bug fails:\n{}", clean.to_table(true));
    for (bug, expected, run) in runs {
        let (report, took) = run.join().unwrap();
        let failed: BTreeSet<&str> = report.failures().into_iter().collect();
        let expected: BTreeSet<&str> = expected.iter().copied().collect();
        assert_eq!(failed, expected, "{bug} ({took:?}):\n{}", report.to_table(true));
        for name in &failed {
            let case = report.case(name).unwrap();
            assert!(!case.message.is_empty() && !case.message.contains('\n'), "{bug}: {name}: {case:?}");
            // A wrong restore names its first differing entry by every coordinate.
            if case.message.contains("operator state \"") && case.message.contains("first difference at element") {
                for part in ["operator state \"", "expected ", "found "] {
                    assert!(case.message.contains(part), "{bug}: {name} does not name the {part}: {}", case.message);
                }
            } else if case.message.contains("first difference") {
                for part in ["key group ", "state \"", "key ", "namespace "] {
                    assert!(case.message.contains(part), "{bug}: {name} does not name the {part}: {}", case.message);
                }
            }
        }
        let junit = report.to_junit();
        assert_well_formed(&junit);
        assert_eq!(junit.contains("<failure"), !failed.is_empty(), "{bug}");
    }
}

/// Every case catches a bug no other case catches, or checks what the host guarantees every
/// plugin (which the `adversary` fixture shows no plugin can break).
#[test]
fn every_case_has_a_fixture_only_it_catches_or_is_a_host_guarantee() {
    for name in case_names() {
        let own = EXACT.iter().any(|(_, cases)| cases == &[name]);
        let guaranteed = HOST_GUARANTEED_CASES.contains(&name);
        assert!(own != guaranteed, "{name}: a fixture of its own: {own}, a host guarantee: {guaranteed}");
    }
}

/// A guest panic shows its message and location in the table, the trap's cause first; the
/// backtrace is in the detail (JSON, `--verbose`), not in the table.
#[test]
fn a_guest_panic_is_one_line_in_the_table_and_a_backtrace_in_the_detail() {
    let (report, _) = run_fixture("panic-on-huge").join().unwrap();
    let case = report.case("resources/memory-and-time").unwrap();
    assert_eq!(case.outcome, Outcome::Fail);
    assert!(case.message.contains("trapped: wasm trap"), "{}", case.message);
    assert!(case.message.contains("guest panicked at tests/fixtures/broken/src/lib.rs:"), "{}", case.message);
    assert!(case.message.contains("fixture panic: a value of 8 MiB"), "{}", case.message);
    assert!(!case.message.contains("backtrace"), "{}", case.message);
    assert!(case.detail.contains("wasm backtrace"), "{}", case.detail);
    let table = report.to_table(false);
    let row = table.lines().find(|l| l.starts_with("resources/memory-and-time")).unwrap();
    assert!(row.contains("fixture panic") && !table.contains("wasm backtrace"), "{table}");
    assert!(report.to_table(true).contains("wasm backtrace"));
}

/// A passing run prints the table and nothing else: the warnings of the injected faults are
/// kept with the cases, not printed.
#[test]
fn a_passing_run_prints_no_warnings() {
    let out = Command::new(suite::host_binary())
        .args(["plugin", "test", "--quick"])
        .arg(suite::plugin_path("full-keyed"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "stderr of a passing run");
}

/// The first-wave fixtures: each fails at least the case named for its bug.
#[test]
fn classic_broken_fixtures_fail_the_case_named_for_their_bug() {
    for (bug, case) in [
        ("drop-entries", "round-trip/every-state-kind"),
        ("shifted-offsets", "offsets/each-key-group-alone"),
        ("order", "offsets/each-key-group-alone"),
        ("ignore-range", "rescaling/keyed"),
    ] {
        let (report, _) = run_fixture(bug).join().unwrap();
        let result = report.case(case).unwrap_or_else(|| panic!("no case {case}"));
        assert_eq!(result.outcome, Outcome::Fail, "{bug}: {case} should fail: {result:?}");
        assert!(!result.message.is_empty(), "{bug}: a failing case explains itself");
    }
    // A decode failure shows the bytes at the offset of the first group that fails alone.
    let (report, _) = run_fixture("shifted-offsets").join().unwrap();
    let message = &report.case("offsets/each-key-group-alone").unwrap().message;
    assert!(message.contains("bytes at offset") && message.contains("fails alone"), "{message}");
    // A dropped entry is named: the first one missing, by key group, state and key.
    let (report, _) = run_fixture("drop-entries").join().unwrap();
    let message = &report.case("round-trip/every-state-kind").unwrap().message;
    assert!(message.contains("first difference at key group 1, state \"list\" (list), key \"key-"), "{message}");
}

/// A plugin that never returns, or writes without end, fails each case it is run in at the
/// harness's own deadline or output cap (here shortened with `--set`), through the CLI: every
/// failure names the limit that stopped it, so no case ran on unbounded. (No wall-clock
/// bound: a deadline that did not work would hang the test, which CI's timeout reports.)
#[test]
fn looping_and_flooding_plugins_fail_at_their_limits() {
    for (bug, needle) in [("loop", "time limit of 300ms"), ("flood", "output limit")] {
        let path = suite::broken_plugin(bug);
        let out = Command::new(suite::host_binary())
            .args([
                "plugin",
                "test",
                "--quick",
                "--format",
                "json",
                "--set",
                "plugin.timeout=300ms",
                "--set",
                "plugin.max-output-bytes=16MiB",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{bug}: {stdout}");
        let report: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{bug}: {e}: {stdout}"));
        let cases = report["cases"].as_array().unwrap();
        let failed: Vec<&serde_json::Value> = cases.iter().filter(|c| c["outcome"] == "fail").collect();
        // Every case that snapshots keyed state runs into the bug, and is stopped by the limit
        // meant for it.
        for name in ["round-trip/empty", "round-trip/every-state-kind", "rescaling/keyed"] {
            let case = failed.iter().find(|c| c["name"] == name);
            let message = case.and_then(|c| c["message"].as_str()).unwrap_or_default();
            assert!(message.contains(needle), "{bug}: {name} did not fail at the limit: {stdout}");
        }
        // Any other failure is one of the two limits too (300 ms is short for the larger
        // operator cases on a debug host), never a hang or another error.
        for case in failed {
            let message = case["message"].as_str().unwrap();
            assert!(
                message.contains("time limit of 300ms") || message.contains("output limit"),
                "{bug}: {} failed otherwise than at a limit: {message}",
                case["name"]
            );
        }
    }
}

/// `plugin info` and `plugin test` take `--config`/`--set`; a bad key is refused by name.
#[test]
fn plugin_commands_take_the_plugin_limits() {
    let plugin = suite::plugin_path("full-keyed");
    let out = Command::new(suite::host_binary())
        .args(["plugin", "info", "--set", "plugin.memory-limit=64MiB"])
        .arg(&plugin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(suite::host_binary())
        .args(["plugin", "test", "--quick", "--set", "plugin.no-such-key=1"])
        .arg(&plugin)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plugin.no-such-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `demo` refuses, before starting, a plugin that cannot keep the job's operator state.
#[test]
fn the_demo_refuses_a_plugin_without_operator_state() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(suite::host_binary())
        .current_dir(dir.path())
        .args(["demo", "--events", "2000", "--primary", "checkpoints", "--plugin"])
        .arg(suite::broken_plugin("no-operator-state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot keep the job's operator state") && stderr.contains("does not support operator state"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("checkpoints").exists()
            || std::fs::read_dir(dir.path().join("checkpoints")).unwrap().count() == 0
    );
}

fn cargo_build_wasm(crate_dir: &std::path::Path, target: &std::path::Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .status()
        .unwrap();
    assert!(status.success(), "the generated crate does not build");
}

/// As a newcomer would: `plugin new` (outside this repository, with `--sdk`), build, `plugin
/// test`, then `demo` with that plugin, which completes checkpoints and restores.
#[test]
fn the_plugin_template_passes_the_harness_and_runs_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("my-strategy");
    let sdk = suite::workspace_root().join("guest-sdk");
    let out = Command::new(suite::host_binary())
        .args(["plugin", "new", "my-strategy", "--dir"])
        .arg(&crate_dir)
        .arg("--sdk")
        .arg(&sdk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("cargo build --release --target wasm32-wasip2"), "{printed}");
    assert!(printed.contains("plugin test target/wasm32-wasip2/release/my_strategy.wasm"), "{printed}");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(manifest.contains(&format!("snapshot-guest-sdk = {{ version = \"{version}\", path = \"")), "{manifest}");
    assert!(manifest.contains("path = \"../"), "not a relative path: {manifest}");
    let target = suite::workspace_root().join("target/template");
    cargo_build_wasm(&crate_dir, &target);
    let wasm = target.join("wasm32-wasip2/release/my_strategy.wasm");
    let out = Command::new(suite::host_binary()).args(["plugin", "test", "--quick"]).arg(&wasm).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    // The template writes deltas, so the incremental cases run instead of skipping.
    assert!(report.contains(" 0 failed") && !report.contains("skipped"), "{report}");
    assert!(report.contains("incremental/delta-round-trip"), "{report}");
    // The demo with the generated plugin, with full and with incremental checkpoints:
    // checkpoints complete, both restores succeed, the final state equals a failure-free run.
    for incremental in [false, true] {
        let mut demo = Command::new(suite::host_binary());
        demo.current_dir(dir.path()).args(["demo", "--events", "20000", "--parallelism", "2"]);
        if incremental {
            // On the demo's own primary (the embedded S3 server), as a newcomer runs it.
            demo.arg("--incremental");
        } else {
            demo.args(["--primary", "checkpoints"]);
        }
        let out = demo.arg("--plugin").arg(&wasm).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("checkpoint   1:") && stdout.contains("equal to a failure-free run"), "{stdout}");
        if incremental {
            assert!(stdout.contains("incremental checkpoints (a key group"), "{stdout}");
            // Each checkpoint says how many key groups it wrote as deltas; the first has no
            // base and writes all in full.
            assert!(stdout.contains("; 0 of 128 key groups as deltas)"), "{stdout}");
            // The second builds on it: it starts only once the first is complete (see
            // `a_checkpoint_being_committed_counts_as_in_flight`), so its base is known.
            let second = stdout.lines().find(|l| l.contains("checkpoint   2:")).unwrap_or_default();
            assert!(second.contains(" key groups as deltas)") && !second.contains("; 0 of "), "{stdout}");
        } else {
            assert!(!stdout.contains("as deltas"), "{stdout}");
        }
    }

    // A name that is not a crate name is refused.
    let bad = Command::new(suite::host_binary()).args(["plugin", "new", "Bad Name"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("invalid plugin name"));
}

/// Where the SDK comes from: a relative path inside this repository, the version alone
/// elsewhere; never an absolute path.
#[test]
fn plugin_new_names_the_sdk_by_version_and_relative_path() {
    let root = suite::workspace_root();
    let inside = root.join("target/template-inside");
    let _ = std::fs::remove_dir_all(&inside);
    std::fs::create_dir_all(&inside).unwrap();
    let out =
        Command::new(suite::host_binary()).current_dir(&inside).args(["plugin", "new", "in-repo"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(inside.join("in-repo/Cargo.toml")).unwrap();
    assert!(manifest.contains("path = \"../../../guest-sdk\""), "{manifest}");
    let _ = std::fs::remove_dir_all(&inside);

    let outside = tempfile::tempdir().unwrap();
    let out = Command::new(suite::host_binary())
        .current_dir(outside.path())
        .args(["plugin", "new", "elsewhere"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(outside.path().join("elsewhere/Cargo.toml")).unwrap();
    assert!(manifest.contains(&format!("snapshot-guest-sdk = \"{}\"", env!("CARGO_PKG_VERSION"))), "{manifest}");
    assert!(!manifest.contains("path ="), "{manifest}");
    let lib = std::fs::read_to_string(outside.path().join("elsewhere/src/lib.rs")).unwrap();
    assert!(!lib.contains(&*root.to_string_lossy()), "an absolute path in the generated code");
}

/// The guest SDK packages as a crate of its own, the WIT inside it: `cargo package` builds the
/// packaged crate in isolation, so it proves the WIT it needs travels with it.
#[test]
fn the_guest_sdk_is_a_publishable_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let package = |extra: &[&str]| {
        Command::new(&cargo)
            .current_dir(suite::workspace_root())
            .args(["package", "--quiet", "--allow-dirty", "-p", "snapshot-guest-sdk"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = package(&["--list"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}{}", String::from_utf8_lossy(&out.stderr));
    assert!(listing.lines().any(|l| l == "wit/strategy.wit"), "{listing}");
    let out = package(&[]);
    assert!(out.status.success(), "cargo package failed: {}", String::from_utf8_lossy(&out.stderr));
}
