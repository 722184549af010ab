//! The reference host harness: runs a strategy plugin through named conformance cases that
//! together are the executable contract of the `strategy` world. Used by
//! `snapshot-host plugin test` and, as a library, from a plugin crate's own tests.
//!
//! The data is shaped to find bugs, in quick mode too: every length boundary of every part of
//! an entry, states missing from some key groups, long lists, key groups that need several
//! entry batches, operator state of every distribution mode, rescaling both ways. Every case
//! explains a failure by the first differing entry (key group, state, key, namespace, user
//! key, expected and found), a decode failure by the bytes at the offset, and a trap by its
//! cause and the guest's panic; backtraces and what the host logged go to
//! [`CaseResult::detail`].
//!
//! Each case that tests what a plugin does is shown to catch a bug that no other case catches:
//! the project's own tests build a deliberately broken strategy per bug and check which cases
//! fail for it. The cases of [`HOST_GUARANTEED_CASES`] check what the host guarantees every
//! plugin instead; an adversarial strategy is shown to pass them.
//!
//! The harness protects itself from the plugins it tests: [`Options::limits`] starts from a
//! short deadline per invocation and an output cap ([`harness_limits`]), so a looping or
//! flooding plugin fails its cases in seconds.
//!
//! From a plugin crate's own tests:
//!
//! ```no_run
//! use snapshot_host::harness::{test_plugin, Options};
//!
//! let report = test_plugin("target/wasm32-wasip2/release/my_strategy.wasm".as_ref(), &Options::quick())?;
//! assert!(!report.failed(), "{}", report.to_table(true));
//! # Ok::<(), snapshot_host::plugin::PluginError>(())
//! ```

mod data;
pub(crate) mod diagnose;
mod faults;
mod incremental;
mod keyed;
mod operator;
mod report;
mod resources;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use report::{CaseResult, Outcome, Report};

use crate::runtime::{Plugin, PluginError, PluginLimits, PluginRuntime};

/// How big the generated states are. `full` is what `plugin test` runs; `quick` keeps a
/// debug-build test suite fast while still running every case on data of every shape.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Size of the one huge value.
    pub huge_value: usize,
    /// Number of tiny entries.
    pub tiny_entries: usize,
    /// Total bytes of the many-entry state of the memory-proportional case.
    pub many_entries_bytes: usize,
    /// The largest length swept by the length-boundary case (beyond 65536).
    pub large_length: usize,
    /// Elements per long list (and entries per large map).
    pub list_elements: usize,
    /// Bytes in each heavy key group of the multi-batch case.
    pub batch_group_bytes: usize,
    /// Small elements of the operator sizes case.
    pub small_elements: usize,
}

impl Sizes {
    /// The sizes the contract names: a 64 MiB value, two million tiny entries, 128 MiB of
    /// many entries.
    pub const FULL: Sizes = Sizes {
        huge_value: 64 << 20,
        tiny_entries: 2_000_000,
        many_entries_bytes: 128 << 20,
        large_length: 4 << 20,
        list_elements: 20_000,
        batch_group_bytes: 8 << 20,
        small_elements: 20_000,
    };
    /// Small sizes for quick runs: still every shape and boundary (a 3 MiB part, several
    /// batches per key group), only fewer entries.
    pub const QUICK: Sizes = Sizes {
        huge_value: 4 << 20,
        tiny_entries: 50_000,
        many_entries_bytes: 48 << 20,
        large_length: 3 << 20,
        list_elements: 3_000,
        batch_group_bytes: 2 << 20,
        small_elements: 3_000,
    };
}

/// The per-invocation deadline of the harness: long enough for the largest case of a correct
/// plugin in a release build, short enough that a looping plugin fails its cases in seconds.
pub const HARNESS_TIMEOUT: Duration = Duration::from_secs(15);
/// The most one snapshot may write under the harness: well above the largest case, far below
/// what would let a flooding plugin grow the host to gigabytes.
pub const HARNESS_MAX_OUTPUT: u64 = 512 << 20;

/// The limits the harness starts from: the host's defaults with [`HARNESS_TIMEOUT`] and
/// [`HARNESS_MAX_OUTPUT`]. `plugin test --config/--set` override them like any job's.
pub fn harness_limits() -> PluginLimits {
    PluginLimits { timeout: HARNESS_TIMEOUT, max_output_bytes: Some(HARNESS_MAX_OUTPUT), ..PluginLimits::default() }
}

/// How to run the cases.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sizes of the generated states.
    pub sizes: Sizes,
    /// Limits of every invocation ([`harness_limits`] unless configured).
    pub limits: PluginLimits,
}

impl Options {
    /// Quick sizes, harness limits.
    pub fn quick() -> Self {
        Options { sizes: Sizes::QUICK, limits: harness_limits() }
    }

    /// Full sizes, harness limits.
    pub fn full() -> Self {
        Options { sizes: Sizes::FULL, limits: harness_limits() }
    }
}

/// What a passing case reports: bytes written, and a note or a warning.
#[derive(Debug)]
struct Passed {
    bytes: u64,
    note: Note,
}

#[derive(Debug)]
enum Note {
    None,
    Info(String),
    Warn(String),
    Skip(String),
}

impl Passed {
    fn info(bytes: u64, text: impl Into<String>) -> Self {
        Passed { bytes, note: Note::Info(text.into()) }
    }
    fn warn(bytes: u64, text: impl Into<String>) -> Self {
        Passed { bytes, note: Note::Warn(text.into()) }
    }
    fn skip(why: impl Into<String>) -> Self {
        Passed { bytes: 0, note: Note::Skip(why.into()) }
    }
}

impl From<u64> for Passed {
    fn from(bytes: u64) -> Self {
        Passed { bytes, note: Note::None }
    }
}

/// Why a case failed: a one-line message, and the detail behind it (a trap's backtrace).
#[derive(Debug)]
struct CaseError {
    message: String,
    detail: String,
}

impl CaseError {
    fn msg(message: impl Into<String>) -> Self {
        CaseError { message: message.into(), detail: String::new() }
    }

    /// `what` and the plugin's error: its summary in the message, all of it in the detail.
    fn plugin(what: &str, e: PluginError) -> Self {
        let full = e.to_string();
        let summary = e.summary();
        let detail = if full == summary { String::new() } else { full };
        CaseError { message: format!("{what}: {summary}"), detail }
    }

    fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

type CaseOutput = Result<Passed, CaseError>;

/// What a case runs against.
struct Context<'a> {
    plugin: &'a Plugin,
    sizes: Sizes,
}

type CaseFn = fn(&Context) -> CaseOutput;

/// Every case, in the order they run.
const CASES: &[(&str, CaseFn)] = &[
    ("round-trip/empty", |cx| keyed::round_trip(cx, data::empty())),
    ("round-trip/every-state-kind", |cx| keyed::round_trip(cx, data::every_kind_and_name(500))),
    ("round-trip/binary-keys", |cx| keyed::round_trip(cx, data::binary_keys())),
    ("round-trip/length-boundaries", |cx| keyed::round_trip(cx, data::length_boundaries(cx.sizes.large_length))),
    ("round-trip/sparse-key-groups", |cx| keyed::round_trip(cx, data::sparse())),
    ("round-trip/sparse-multi-state", |cx| keyed::round_trip(cx, data::sparse_multi_state())),
    ("round-trip/mixed-kinds-one-group", |cx| keyed::round_trip(cx, data::mixed_kinds_one_group())),
    ("round-trip/long-lists-large-maps", |cx| {
        keyed::round_trip(cx, data::long_lists_large_maps(cx.sizes.list_elements))
    }),
    ("round-trip/multi-batch-key-groups", |cx| {
        keyed::round_trip(cx, data::multi_batch_groups(cx.sizes.batch_group_bytes))
    }),
    ("round-trip/dense-key-groups", |cx| keyed::round_trip(cx, data::dense(5_000))),
    ("round-trip/huge-value", |cx| keyed::round_trip(cx, data::huge_value(cx.sizes.huge_value))),
    ("round-trip/many-tiny-entries", |cx| keyed::round_trip(cx, data::tiny_entries(cx.sizes.tiny_entries))),
    ("offsets/each-key-group-alone", keyed::each_group_alone),
    ("rescaling/keyed", keyed::rescaling),
    ("incremental/delta-round-trip", incremental::delta_round_trip),
    ("incremental/deletions-and-lists", incremental::deletions),
    ("incremental/chains-and-compaction", incremental::chains),
    ("incremental/rescaling-from-a-chain", incremental::rescaling),
    ("operator/every-mode", |cx| operator::round_trip(cx, data::operator_every_mode())),
    ("operator/empty-lists", |cx| operator::round_trip(cx, data::operator_empty())),
    ("operator/small-and-large-elements", |cx| {
        operator::round_trip(cx, data::operator_sizes(cx.sizes.small_elements, cx.sizes.large_length))
    }),
    ("operator/each-partition-alone", operator::each_partition_alone),
    ("operator/rescaling", operator::rescaling),
    ("determinism/identical-bytes", keyed::determinism),
    ("format/stable-description", keyed::format_stable),
    ("faults/secondary-failure", faults::secondary_failure),
    ("faults/primary-failure", faults::primary_failure),
    ("faults/cancellation", faults::cancellation),
    ("resources/memory-and-time", resources::memory_and_time),
    ("resources/memory-proportional", resources::proportional),
];

/// Runs `rescale` for every (from, to) of `rescalings`; the first failure is the case's.
fn every_rescaling(
    cx: &Context,
    rescalings: &[(u32, u32)],
    rescale: fn(&Context, u32, u32) -> CaseOutput,
) -> CaseOutput {
    let mut bytes = 0;
    for &(from, to) in rescalings {
        bytes += rescale(cx, from, to)?.bytes;
    }
    Ok(bytes.into())
}

/// The cases that check what the host guarantees every plugin rather than what a plugin does:
/// snapshots of the same state are identical (clocks and randomness are deterministic), the
/// description is the same on every instance, a failing local copy never fails a snapshot, a
/// failing primary always does, cancellation stops one. No plugin can fail them here; they stay
/// in the report because a strategy's author relies on them, and they fail if the host ever
/// stops keeping them.
pub const HOST_GUARANTEED_CASES: &[&str] = &[
    "determinism/identical-bytes",
    "format/stable-description",
    "faults/secondary-failure",
    "faults/primary-failure",
    "faults/cancellation",
];

/// The names of every case, in the order they run.
pub fn case_names() -> Vec<&'static str> {
    CASES.iter().map(|(name, _)| *name).collect()
}

/// Loads `path` with `options.limits` and runs every case.
pub fn test_plugin(path: &Path, options: &Options) -> Result<Report, PluginError> {
    let runtime = PluginRuntime::new()?;
    let plugin = runtime.load(path, options.limits.clone())?;
    Ok(run_cases(&plugin, path, options, |_, _, _| {}))
}

/// Runs every case against a loaded plugin; `on_case(index, count, name)` is called before
/// each (for a progress line).
pub fn run_cases(
    plugin: &Plugin,
    path: &Path,
    options: &Options,
    mut on_case: impl FnMut(usize, usize, &str),
) -> Report {
    let cx = Context { plugin, sizes: options.sizes };
    let mut results = Vec::new();
    for (index, (name, case)) in CASES.iter().enumerate() {
        on_case(index, CASES.len(), name);
        let started = Instant::now();
        let (outcome, log) = captured_log(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&cx))).unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(CaseError::msg(format!(
                    "the harness itself panicked (a bug of the harness, please report): {text}"
                )))
            })
        });
        let millis = started.elapsed().as_millis();
        let result = match outcome {
            Ok(Passed { bytes, note }) => {
                let (outcome, message) = match note {
                    Note::None => (Outcome::Pass, String::new()),
                    Note::Info(info) => (Outcome::Pass, info),
                    Note::Warn(warning) => (Outcome::Warn, warning),
                    Note::Skip(why) => (Outcome::Skip, why),
                };
                CaseResult { name: name.to_string(), outcome, millis, bytes, message, detail: String::new() }
            }
            Err(CaseError { message, mut detail }) => {
                if !log.is_empty() {
                    detail.push_str(&format!(
                        "{}host log during the case:\n{log}",
                        if detail.is_empty() { "" } else { "\n" }
                    ));
                }
                CaseResult { name: name.to_string(), outcome: Outcome::Fail, millis, bytes: 0, message, detail }
            }
        };
        results.push(result);
    }
    Report {
        plugin: path.display().to_string(),
        name: plugin.info().name.clone(),
        format: plugin.info().format.clone(),
        cases: results,
    }
}

/// Runs `f` with what the host logs (warnings of injected faults, the guest's output) kept
/// aside: shown with a failure, never printed during a passing run.
fn captured_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: a plugin that logs without end cannot grow the host through this.
            let room = (1usize << 20).saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8_lossy(&buffer.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    (value, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_host_guarantees_are_cases() {
        let names = case_names();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        for name in HOST_GUARANTEED_CASES {
            assert!(names.contains(name), "{name} is not a case");
        }
    }
}
