//! The reference host harness: runs a strategy plugin through named conformance cases that
//! together are the executable contract of the `strategy` world. Used by
//! `snapshot-host plugin test` and, as a library, from a plugin crate's own tests.
//!
//! Every case explains itself on failure: what was checked, what was expected and what was
//! found.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::backend::{KeyedStateBackend, StateKind};
use crate::duplicating::DuplicatingOutputStream;
use crate::handles::{KeyGroupsStateHandle, StreamStateHandle};
use crate::key_groups::{key_group_for_key, range_for_operator, KeyGroupRange};
use crate::runtime::{CancelToken, Plugin, PluginError, PluginLimits, PluginRuntime};
use crate::streams::{
    CheckpointOutputStream, FaultInjectingStream, FileCheckpointOutputStream, MemoryCheckpointOutputStream,
};

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The plugin behaved as the contract requires.
    Pass,
    /// It did not.
    Fail,
    /// Acceptable, but worth knowing (e.g. a declared non-deterministic plugin).
    Warn,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Stable case name, e.g. `round-trip/binary-keys`.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time of the case.
    pub millis: u128,
    /// Bytes of snapshot written by the case.
    pub bytes: u64,
    /// What was found (always set for failures and warnings).
    pub message: String,
}

/// All results for one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin file.
    pub plugin: String,
    /// Its described name.
    pub name: String,
    /// Its described format.
    pub format: String,
    /// The cases, in order.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Whether any case failed.
    pub fn failed(&self) -> bool {
        self.cases.iter().any(|c| c.outcome == Outcome::Fail)
    }

    /// The result of case `name`.
    pub fn case(&self, name: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.name == name)
    }

    /// A readable table.
    pub fn to_table(&self) -> String {
        let mut out = format!("plugin {} ({}, format {})\n", self.plugin, self.name, self.format);
        out.push_str(&format!("{:<34} {:<6} {:>9} {:>12}  {}\n", "case", "result", "time", "bytes", "details"));
        for c in &self.cases {
            let outcome = match c.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Warn => "warn",
            };
            out.push_str(&format!("{:<34} {:<6} {:>7}ms {:>12}  {}\n", c.name, outcome, c.millis, c.bytes, c.message));
        }
        let failed = self.cases.iter().filter(|c| c.outcome == Outcome::Fail).count();
        out.push_str(&format!("{} cases, {} passed, {failed} failed\n", self.cases.len(), self.cases.len() - failed));
        out
    }

    /// JUnit XML, for CI systems.
    pub fn to_junit(&self) -> String {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        let failures = self.cases.iter().filter(|c| c.outcome == Outcome::Fail).count();
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
            esc(&self.name),
            self.cases.len()
        );
        for c in &self.cases {
            out.push_str(&format!(
                "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
                esc(&self.name),
                esc(&c.name),
                c.millis as f64 / 1000.0
            ));
            match c.outcome {
                Outcome::Fail => out.push_str(&format!("<failure message=\"{}\"/>", esc(&c.message))),
                Outcome::Warn => out.push_str(&format!("<system-out>warning: {}</system-out>", esc(&c.message))),
                Outcome::Pass => {}
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("</testsuite>\n");
        out
    }
}

/// How big the generated states are. `full` is what `plugin test` runs; `quick` keeps a
/// debug-build test suite fast while still covering every case.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Size of the one huge value.
    pub huge_value: usize,
    /// Number of tiny entries.
    pub tiny_entries: usize,
}

impl Sizes {
    /// The sizes the contract names: a 64 MiB value and two million tiny entries.
    pub const FULL: Sizes = Sizes { huge_value: 64 << 20, tiny_entries: 2_000_000 };
    /// Small sizes for quick runs.
    pub const QUICK: Sizes = Sizes { huge_value: 4 << 20, tiny_entries: 50_000 };
}

const MAX_P: u32 = 128;

/// What a passing case adds to its result: nothing, information, or a warning.
enum Note {
    None,
    Info(String),
    Warn(String),
}

type CaseFn = fn(&Plugin, Sizes) -> Result<(u64, Note), String>;

/// Loads `path` and runs every case.
pub fn test_plugin(path: &Path, sizes: Sizes) -> Result<Report, PluginError> {
    let runtime = PluginRuntime::new()?;
    let plugin = runtime.load(path, PluginLimits::default())?;
    Ok(run_cases(&plugin, path, sizes))
}

/// Runs every case against a loaded plugin.
pub fn run_cases(plugin: &Plugin, path: &Path, sizes: Sizes) -> Report {
    let cases: &[(&str, CaseFn)] = &[
        ("round-trip/empty", |p, _| round_trip(p, full_backend())),
        ("round-trip/every-state-kind", |p, _| round_trip(p, every_kind(500))),
        ("round-trip/binary-keys", |p, _| round_trip(p, binary_keys())),
        ("round-trip/sparse-key-groups", |p, _| round_trip(p, sparse())),
        ("round-trip/dense-key-groups", |p, _| round_trip(p, every_kind(5_000))),
        ("round-trip/huge-value", |p, s| round_trip(p, huge_value(s.huge_value))),
        ("round-trip/many-tiny-entries", |p, s| round_trip(p, tiny_entries(s.tiny_entries))),
        ("offsets/each-key-group-alone", |p, _| each_group_alone(p)),
        ("rescaling/1-to-3", |p, _| rescale(p, 1, 3)),
        ("rescaling/4-to-2", |p, _| rescale(p, 4, 2)),
        ("rescaling/3-to-5", |p, _| rescale(p, 3, 5)),
        ("determinism/identical-bytes", determinism),
        ("faults/secondary-failure", |p, _| secondary_failure(p)),
        ("faults/primary-failure", |p, _| primary_failure(p)),
        ("faults/cancellation", |p, _| cancellation(p)),
        ("resources/memory-and-time", resources),
    ];
    let mut results = Vec::new();
    for (name, case) in cases {
        let started = Instant::now();
        let (outcome, bytes, message) = match case(plugin, sizes) {
            Ok((bytes, Note::None)) => (Outcome::Pass, bytes, String::new()),
            Ok((bytes, Note::Info(info))) => (Outcome::Pass, bytes, info),
            Ok((bytes, Note::Warn(warning))) => (Outcome::Warn, bytes, warning),
            Err(message) => (Outcome::Fail, 0, message),
        };
        results.push(CaseResult {
            name: name.to_string(),
            outcome,
            millis: started.elapsed().as_millis(),
            bytes,
            message,
        });
    }
    Report {
        plugin: path.display().to_string(),
        name: plugin.info().name.clone(),
        format: plugin.info().format.clone(),
        cases: results,
    }
}

fn full_backend() -> KeyedStateBackend {
    KeyedStateBackend::new(MAX_P, KeyGroupRange::new(0, MAX_P - 1)).expect("valid range")
}

fn every_kind(n: usize) -> KeyedStateBackend {
    let mut b = full_backend();
    let (v, l, m) = (
        b.register_state("value", StateKind::Value).unwrap(),
        b.register_state("list", StateKind::List).unwrap(),
        b.register_state("map", StateKind::Map).unwrap(),
    );
    for i in 0..n {
        let key = format!("key-{i}");
        let ns: &[u8] = if i % 3 == 0 { b"window-1" } else { b"" };
        b.put(v, key.as_bytes(), ns, format!("v{i}").as_bytes()).unwrap();
        b.add(l, key.as_bytes(), ns, &(i as u64).to_le_bytes()).unwrap();
        b.add(l, key.as_bytes(), ns, b"").unwrap();
        b.put_map(m, key.as_bytes(), ns, &(i as u32).to_be_bytes(), b"mapped").unwrap();
    }
    b
}

fn binary_keys() -> KeyedStateBackend {
    let mut b = full_backend();
    let s = b.register_state("bytes", StateKind::Map).unwrap();
    for byte in 0..=255u8 {
        b.put_map(s, &[byte], &[255 - byte], &[byte, 0, byte], &[0, byte]).unwrap();
        b.put_map(s, &[0, byte, 0], &[], &[], &[byte; 3]).unwrap();
    }
    b.put_map(s, &[], &[], &[], &[]).unwrap();
    b
}

fn sparse() -> KeyedStateBackend {
    let mut b = full_backend();
    let s = b.register_state("sparse", StateKind::Value).unwrap();
    let mut placed = 0;
    for i in 0.. {
        let key = format!("s{i}");
        if key_group_for_key(key.as_bytes(), MAX_P).is_multiple_of(40) {
            b.put(s, key.as_bytes(), b"", b"x").unwrap();
            placed += 1;
            if placed == 6 {
                break;
            }
        }
    }
    b
}

fn huge_value(size: usize) -> KeyedStateBackend {
    let mut b = full_backend();
    let s = b.register_state("huge", StateKind::Value).unwrap();
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    b.put(s, b"the-key", b"", &value).unwrap();
    b
}

fn tiny_entries(n: usize) -> KeyedStateBackend {
    let mut b = full_backend();
    let s = b.register_state("tiny", StateKind::Value).unwrap();
    for i in 0..n as u64 {
        b.put(s, &i.to_le_bytes(), b"", &[i as u8]).unwrap();
    }
    b
}

fn snapshot(plugin: &Plugin, backend: &KeyedStateBackend) -> Result<KeyGroupsStateHandle, String> {
    let (stream, offsets) = plugin
        .snapshot_keyed(backend.snapshot(), Box::new(MemoryCheckpointOutputStream::new()))
        .map_err(|e| format!("snapshot failed: {e}"))?;
    let handle = stream.close_and_get_handle().map_err(|e| e.to_string())?;
    Ok(KeyGroupsStateHandle::new(Arc::new(offsets), handle))
}

fn restore(
    plugin: &Plugin,
    handles: &[KeyGroupsStateHandle],
    range: KeyGroupRange,
) -> Result<KeyedStateBackend, String> {
    let mut backend = KeyedStateBackend::new(MAX_P, range).map_err(|e| e.to_string())?;
    for h in handles {
        backend = plugin.restore_keyed(h, backend).map_err(|e| format!("restore of {range} failed: {e}"))?;
    }
    Ok(backend)
}

fn compare(expected: &KeyedStateBackend, actual: &KeyedStateBackend, what: &str) -> Result<(), String> {
    let (e, a) = (expected.contents(), actual.contents());
    if e == a {
        return Ok(());
    }
    for (name, (kind, rows)) in &e {
        match a.get(name) {
            None => return Err(format!("{what}: state {name:?} ({kind}) is missing after restore")),
            Some((_, got)) if got != rows => {
                let missing = rows.keys().filter(|k| !got.contains_key(*k)).count();
                let extra = got.keys().filter(|k| !rows.contains_key(*k)).count();
                let changed = rows.iter().filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v)).count();
                return Err(format!("{what}: state {name:?} differs after restore: {missing} (key, namespace) missing, {extra} unexpected, {changed} with other values"));
            }
            _ => {}
        }
    }
    let extra: Vec<_> = a.keys().filter(|k| !e.contains_key(*k)).collect();
    Err(format!("{what}: restore produced states that were never snapshotted: {extra:?}"))
}

fn round_trip(plugin: &Plugin, backend: KeyedStateBackend) -> Result<(u64, Note), String> {
    let handle = snapshot(plugin, &backend)?;
    let restored = restore(plugin, std::slice::from_ref(&handle), backend.key_group_range())?;
    compare(&backend, &restored, "round trip")?;
    Ok((handle.state_size(), Note::None))
}

fn each_group_alone(plugin: &Plugin) -> Result<(u64, Note), String> {
    let backend = every_kind(2_000);
    let handle = snapshot(plugin, &backend)?;
    for kg in 0..MAX_P {
        let range = KeyGroupRange::new(kg, kg);
        let alone = handle.intersection(&range).ok_or("a key group without offset")?;
        let restored = restore(plugin, &[alone], range)
            .map_err(|e| format!("key group {kg} cannot be decoded from its own offset alone: {e}"))?;
        let mut expected = KeyedStateBackend::new(MAX_P, range).unwrap();
        for (name, (kind, rows)) in backend.contents() {
            let s = expected.register_state(&name, kind).unwrap();
            for ((key, ns), value) in rows.into_iter().filter(|((k, _), _)| key_group_for_key(k, MAX_P) == kg) {
                put_value(&mut expected, s, &key, &ns, value);
            }
        }
        compare(&expected, &restored, &format!("key group {kg} restored alone"))?;
    }
    Ok((handle.state_size(), Note::None))
}

fn put_value(b: &mut KeyedStateBackend, s: u32, key: &[u8], ns: &[u8], value: crate::backend::StateValue) {
    use crate::backend::StateValue;
    match value {
        StateValue::Value(v) => b.put(s, key, ns, &v).unwrap(),
        StateValue::List(l) => l.iter().for_each(|v| b.add(s, key, ns, v).unwrap()),
        StateValue::Map(m) => m.iter().for_each(|(uk, v)| b.put_map(s, key, ns, uk, v).unwrap()),
    }
}

fn rescale(plugin: &Plugin, from: u32, to: u32) -> Result<(u64, Note), String> {
    let whole = every_kind(3_000);
    let mut handles = Vec::new();
    let mut bytes = 0;
    for i in 0..from {
        let range = range_for_operator(MAX_P, from, i).unwrap();
        let mut part = KeyedStateBackend::new(MAX_P, range).unwrap();
        for (name, (kind, rows)) in whole.contents() {
            let s = part.register_state(&name, kind).unwrap();
            for ((key, ns), value) in rows.into_iter().filter(|((k, _), _)| range.contains(key_group_for_key(k, MAX_P)))
            {
                put_value(&mut part, s, &key, &ns, value);
            }
        }
        let h = snapshot(plugin, &part)?;
        bytes += h.state_size();
        handles.push(h);
    }
    let mut merged = Vec::new();
    for j in 0..to {
        let range = range_for_operator(MAX_P, to, j).unwrap();
        let parts: Vec<_> = handles.iter().filter_map(|h| h.intersection(&range)).collect();
        merged.push(restore(plugin, &parts, range).map_err(|e| format!("restoring subtask {j} of {to}: {e}"))?);
    }
    let mut combined = full_backend();
    for b in &merged {
        for (name, (kind, rows)) in b.contents() {
            let s = combined.register_state(&name, kind).unwrap();
            for ((key, ns), value) in rows {
                put_value(&mut combined, s, &key, &ns, value);
            }
        }
    }
    compare(&whole, &combined, &format!("snapshot at parallelism {from}, restore at {to}"))?;
    Ok((bytes, Note::None))
}

fn bytes_of(handle: &StreamStateHandle) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    handle.open().map_err(|e| e.to_string())?.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn determinism(plugin: &Plugin, _: Sizes) -> Result<(u64, Note), String> {
    let backend = every_kind(2_000);
    let a = snapshot(plugin, &backend)?;
    let b = snapshot(plugin, &backend)?;
    let identical = bytes_of(a.stream())? == bytes_of(b.stream())? && a.offsets() == b.offsets();
    match (identical, plugin.info().deterministic) {
        (true, _) => Ok((a.state_size(), Note::None)),
        (false, false) => Ok((
            a.state_size(),
            Note::Warn("snapshots of the same state differ (the plugin declares itself non-deterministic)".into()),
        )),
        (false, true) => {
            Err("two snapshots of the same state differ, but the plugin declares itself deterministic".into())
        }
    }
}

fn secondary_failure(plugin: &Plugin) -> Result<(u64, Note), String> {
    let backend = every_kind(3_000);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut bytes = 0;
    for fail_at in [0usize, 1, 3, 10, 40] {
        let secondary =
            FaultInjectingStream::new(Box::new(FileCheckpointOutputStream::new(dir.path(), 0)), Some(fail_at));
        let out = Box::new(DuplicatingOutputStream::with_buffer_size(
            Box::new(MemoryCheckpointOutputStream::new()),
            Box::new(secondary),
            4096,
        ));
        let (stream, offsets) = plugin
            .snapshot_keyed(backend.snapshot(), out)
            .map_err(|e| format!("a secondary failure at operation {fail_at} failed the snapshot: {e}"))?;
        let result = stream.close_and_finalize().map_err(|e| e.to_string())?;
        if result.local().is_some() {
            return Err(format!("secondary failed at operation {fail_at}, yet the result has a local part"));
        }
        let primary = result.into_keyed(offsets).primary().cloned().ok_or("no primary part")?;
        bytes = primary.state_size();
        let restored = restore(plugin, &[primary], backend.key_group_range())?;
        compare(&backend, &restored, &format!("primary after a secondary failure at operation {fail_at}"))?;
        if std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0) != 0 {
            return Err("the failed secondary left a file behind".into());
        }
    }
    Ok((bytes, Note::None))
}

fn primary_failure(plugin: &Plugin) -> Result<(u64, Note), String> {
    let backend = every_kind(3_000);
    for fail_at in [0usize, 2, 8] {
        let out = Box::new(FaultInjectingStream::new(Box::new(MemoryCheckpointOutputStream::new()), Some(fail_at)));
        match plugin.snapshot_keyed(backend.snapshot(), out) {
            Err(PluginError::Storage { .. }) => {}
            Err(other) => {
                return Err(format!(
                    "a primary failure at operation {fail_at} surfaced as {other} instead of a storage error"
                ))
            }
            Ok((stream, _)) => {
                if stream.close_and_get_handle().is_ok() {
                    return Err(format!("a primary failure at operation {fail_at} went unnoticed"));
                }
            }
        }
    }
    Ok((0, Note::None))
}

/// A stream that cancels the invocation on its first write: cancellation mid-snapshot,
/// deterministically.
#[derive(Debug)]
struct CancelOnWrite(MemoryCheckpointOutputStream, CancelToken);

impl CheckpointOutputStream for CancelOnWrite {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.1.cancel();
        self.0.write(bytes)
    }
    fn position(&self) -> u64 {
        self.0.position()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync()
    }
    fn close_and_get_handle(self: Box<Self>) -> std::io::Result<StreamStateHandle> {
        Box::new(self.0).close_and_get_handle()
    }
}

fn cancellation(plugin: &Plugin) -> Result<(u64, Note), String> {
    let backend = every_kind(20_000);
    let token = CancelToken::new();
    let out = Box::new(CancelOnWrite(MemoryCheckpointOutputStream::new(), token.clone()));
    let started = Instant::now();
    match plugin.snapshot_keyed_cancellable(backend.snapshot(), out, &token) {
        Err(PluginError::Cancelled { .. }) => Ok((0, Note::None)),
        Err(other) => Err(format!("cancellation surfaced as {other}")),
        Ok(_) => Err(format!(
            "the snapshot completed although it was cancelled at its first write ({:?} earlier)",
            started.elapsed()
        )),
    }
}

fn resources(plugin: &Plugin, sizes: Sizes) -> Result<(u64, Note), String> {
    let backend = huge_value(sizes.huge_value.max(8 << 20));
    let limit = plugin.limits().memory_bytes;
    plugin.reset_peak_memory();
    let started = Instant::now();
    let handle = snapshot(plugin, &backend)?;
    let elapsed = started.elapsed();
    let snapshot_peak = plugin.peak_memory();
    plugin.reset_peak_memory();
    let started = Instant::now();
    restore(plugin, std::slice::from_ref(&handle), backend.key_group_range())?;
    let restore_elapsed = started.elapsed();
    let restore_peak = plugin.peak_memory();
    let mib = (handle.state_size() as f64 / 1048576.0).max(1e-9);
    let summary = format!(
        "peak guest memory {} MiB snapshot / {} MiB restore of {} MiB limit; {:.2} / {:.2} ms per MiB",
        snapshot_peak >> 20,
        restore_peak >> 20,
        limit >> 20,
        elapsed.as_secs_f64() * 1e3 / mib,
        restore_elapsed.as_secs_f64() * 1e3 / mib
    );
    if snapshot_peak.max(restore_peak) > limit / 2 {
        return Ok((handle.state_size(), Note::Warn(format!("{summary}: over half the memory limit"))));
    }
    if elapsed.max(restore_elapsed) > plugin.limits().timeout / 2 {
        return Ok((handle.state_size(), Note::Warn(format!("{summary}: over half the time limit"))));
    }
    Ok((handle.state_size(), Note::Info(summary)))
}
