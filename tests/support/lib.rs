//! Support for the workspace-level integration tests: building the plugins they load, and
//! generating keyed state.
//!
//! Plugins are built from source by the tests themselves (never committed as binaries): the
//! first test that needs one runs `cargo build --profile plugin --target wasm32-wasip2` for the
//! plugin crates, once per test process, into the workspace's shared target directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use snapshot_host::backend::{KeyedStateBackend, StateKind};
use snapshot_host::key_groups::KeyGroupRange;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The plugin crates that tests load: the shipped strategies and the test fixtures under
/// `tests/fixtures/` (misbehaving on purpose; never shipped).
pub const PLUGINS: &[&str] =
    &["full-keyed", "compact-keyed", "fixture-misbehave", "fixture-uses-files", "fixture-uses-network", "fixture-hog"];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// The strategy plugins written in other languages, built by `scripts/guest-plugins.sh` with
/// their pinned toolchains (componentize-py, componentize-js).
pub const GUEST_PLUGINS: &[&str] = &["python-keyed", "js-keyed"];

/// Builds every plugin crate (once per process; the Python and JavaScript plugins too when
/// `name` is one of them) and returns the path of `name`'s component.
pub fn plugin_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    static GUESTS: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(build_plugins).as_ref().expect("building the test plugins failed");
    if GUEST_PLUGINS.contains(&name) {
        GUESTS.get_or_init(build_guest_plugins).as_ref().expect("building the Python and JavaScript plugins failed");
    }
    let path = target_dir().join("wasm32-wasip2").join("plugin").join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "plugin {name} was built but {} does not exist", path.display());
    path
}

fn build_plugins() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args(["build", "--quiet", "--profile", "plugin", "--target", "wasm32-wasip2"]);
    for p in PLUGINS {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !status.success() {
        return Err(format!("building the plugins failed ({status}); is the wasm32-wasip2 target installed? (`rustup target add wasm32-wasip2`)"));
    }
    Ok(())
}

fn build_guest_plugins() -> Result<(), String> {
    let status = Command::new("bash")
        .current_dir(workspace_root())
        .arg("scripts/guest-plugins.sh")
        .status()
        .map_err(|e| format!("cannot run scripts/guest-plugins.sh: {e}"))?;
    if !status.success() {
        return Err(format!("scripts/guest-plugins.sh failed ({status}); it needs python3 (with venv) and npm"));
    }
    Ok(())
}

/// A deterministic pseudo-random generator (splitmix64), so generated state is the same in
/// every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Fills a full-range backend (`0..max_parallelism`) with `entries` entries spread over a
/// value, a list and a map state, with keys, namespaces and values of mixed sizes.
pub fn populated_backend(max_parallelism: u32, entries: usize, seed: u64) -> KeyedStateBackend {
    let mut backend = KeyedStateBackend::new(max_parallelism, KeyGroupRange::new(0, max_parallelism - 1)).unwrap();
    let value = backend.register_state("last-seen", StateKind::Value).unwrap();
    let list = backend.register_state("events", StateKind::List).unwrap();
    let map = backend.register_state("attributes", StateKind::Map).unwrap();
    let mut rng = Rng::new(seed);
    let keys = (entries / 4).max(1) as u64;
    for i in 0..entries {
        // Value-state keys are unique so that every generated entry survives (a value state
        // keeps one value per key and namespace); list and map keys repeat.
        let key = if i % 3 == 0 { format!("user-{i}") } else { format!("user-{}", rng.below(keys)) }.into_bytes();
        let namespace = if rng.below(4) == 0 { format!("window-{}", rng.below(8)).into_bytes() } else { Vec::new() };
        let len = [0usize, 1, 8, 64, 300][rng.below(5) as usize];
        let payload = rng.bytes(len);
        match i % 3 {
            0 => backend.put(value, &key, &namespace, &payload).unwrap(),
            1 => backend.add(list, &key, &namespace, &payload).unwrap(),
            _ => backend.put_map(map, &key, &namespace, &(i as u64).to_le_bytes(), &payload).unwrap(),
        }
    }
    backend
}

/// Builds the `snapshot-host` binary (debug, once per process) and returns its path.
pub fn host_binary() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            // Built the way the test run builds it (`host/cli/tests/cli.rs` needs it too): with the
            // workspace's test feature set this is a no-op after `cargo test --workspace`,
            // where a plain `cargo build -p snapshot-host` resolves other features and
            // recompiles the host and its dependencies (minutes on a fresh clone).
            let status = Command::new(cargo)
                .current_dir(workspace_root())
                .args(["test", "--quiet", "--workspace", "--no-run"])
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            status.success().then_some(()).ok_or_else(|| format!("building snapshot-host failed ({status})"))
        })
        .as_ref()
        .expect("building the host binary failed");
    target_dir().join("debug").join("snapshot-host")
}

/// Builds the `fixture-broken` plugin with one deliberate bug (`FIXTURE_BUG`) and returns a
/// copy of it named after the bug (each variant overwrites the same build output).
pub fn broken_plugin(bug: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .env("FIXTURE_BUG", bug)
        .args(["build", "--quiet", "--profile", "plugin", "--target", "wasm32-wasip2", "-p", "fixture-broken"])
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "building fixture-broken with FIXTURE_BUG={bug} failed");
    let built = target_dir().join("wasm32-wasip2/plugin/fixture_broken.wasm");
    let copy = target_dir().join("fixtures").join(format!("broken-{bug}.wasm"));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&built, &copy).unwrap();
    copy
}

/// Runs attempts of `runner`'s job that each fail one event after a checkpoint was triggered,
/// `n` times: each attempt completes exactly one checkpoint (a subtask finishes its snapshots
/// before it handles the failure), whatever the machine's speed. Checkpoint counts in tests
/// stay deterministic this way, where a free-running job takes as many as its timing allows.
pub fn complete_checkpoints(runner: &mut snapshot_host_cli::job::JobRunner, n: usize) {
    use snapshot_host_cli::job::{AttemptOptions, AttemptOutcome};
    for _ in 0..n {
        let before = runner.storage().completed_checkpoint_ids().unwrap();
        let start = runner.storage().latest_completed().unwrap().map_or(0, |m| m.source_offset);
        let interval = runner.spec().checkpoint_interval;
        let fail_at = Some((start / interval + 1) * interval + 1);
        let (tx, _rx) = std::sync::mpsc::channel();
        let outcome = runner.run_attempt(AttemptOptions { fail_at }, &tx).unwrap();
        assert!(matches!(outcome, AttemptOutcome::Failed { .. }), "the attempt did not fail at {fail_at:?}");
        let after = runner.storage().completed_checkpoint_ids().unwrap();
        assert!(after.last() > before.last(), "no checkpoint completed before the failure at {fail_at:?}");
    }
}

/// Copies the directory tree `from` to `to` (created if missing).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The S3-compatible server the tests of one test binary share: in-process (`s3s` over
/// `s3s-fs`), on 127.0.0.1 and a free port, unshaped; each test uses buckets of its own.
pub fn s3_server() -> &'static snapshot_host_cli::embedded_s3::EmbeddedS3 {
    static SERVER: OnceLock<snapshot_host_cli::embedded_s3::EmbeddedS3> = OnceLock::new();
    SERVER.get_or_init(|| {
        snapshot_host_cli::embedded_s3::EmbeddedS3::start(snapshot_host_cli::embedded_s3::Shaping::NONE)
            .expect("cannot start the embedded S3 server")
    })
}

/// A bucket name no other test of this process uses.
pub fn unique_bucket() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst))
}

/// Where a recovery test keeps its primary: every recovery scenario runs against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// A local directory.
    Directory,
    /// A bucket of the shared embedded S3 server.
    S3,
}

impl Primary {
    /// Points `config` at a location of this kind for `dir` (below it for a directory; a
    /// bucket named after it on S3) and returns the directory on disk where the location's
    /// objects are, so that tests can damage or delete primary state directly (the embedded
    /// server keeps one file per object).
    pub fn configure(self, config: &mut snapshot_host::config::Config, dir: &Path) -> PathBuf {
        let (overrides, root) = self.overrides(dir);
        for o in overrides {
            config.apply_override(&o).expect("valid storage settings");
        }
        root
    }

    /// The `--set key=value` overrides that select this primary for `dir`, and where its
    /// objects are on disk (see [`configure`](Self::configure)).
    pub fn overrides(self, dir: &Path) -> (Vec<String>, PathBuf) {
        match self {
            Primary::Directory => {
                let root = dir.join("checkpoints");
                (vec![format!("execution.checkpointing.dir={}", root.display())], root)
            }
            Primary::S3 => {
                let server = s3_server();
                // The same directory maps to the same bucket: a test that opens a job twice
                // over one directory sees one primary.
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                dir.hash(&mut hasher);
                let bucket = format!("t-{:016x}", hasher.finish());
                server.create_bucket(&bucket).expect("creating a bucket");
                let mut overrides = server.config_overrides();
                overrides.push(format!("execution.checkpointing.dir=s3://{bucket}/ckpt"));
                (overrides, server.root().join(bucket).join("ckpt"))
            }
        }
    }
}

/// Runs a recovery scenario against every primary: `both_primaries!(scenario)` defines a module
/// `scenario` with one test per primary, each calling `scenario(Primary::…)`.
#[macro_export]
macro_rules! both_primaries {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn directory() {
                super::$name(suite::Primary::Directory)
            }
            #[test]
            fn s3() {
                super::$name(suite::Primary::S3)
            }
        }
    )*};
}

/// How a recovery test checkpoints: its primary, and full or incremental keyed snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Where checkpoints go.
    pub primary: Primary,
    /// Whether keyed snapshots are incremental (`execution.checkpointing.incremental`).
    pub incremental: bool,
}

impl Mode {
    /// As [`Primary::configure`], and incremental checkpoints when asked for.
    pub fn configure(self, config: &mut snapshot_host::config::Config, dir: &Path) -> PathBuf {
        let (overrides, root) = self.overrides(dir);
        for o in overrides {
            config.apply_override(&o).expect("valid settings");
        }
        root
    }

    /// As [`Primary::overrides`], with the incremental setting.
    pub fn overrides(self, dir: &Path) -> (Vec<String>, PathBuf) {
        let (mut overrides, root) = self.primary.overrides(dir);
        overrides.push(format!("execution.checkpointing.incremental={}", self.incremental));
        // The tests' jobs update most keys between checkpoints; the default ratio would write
        // almost every group in full. Up to twice the base lets chains of a few deltas form,
        // compacted as they reach it.
        overrides.push("execution.checkpointing.incremental-compaction.max-delta-ratio=2".into());
        (overrides, root)
    }
}

/// Runs a recovery scenario in every mode: `every_mode!(scenario)` defines a module `scenario`
/// with one test per primary and snapshot kind, each calling `scenario(Mode { … })`.
#[macro_export]
macro_rules! every_mode {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use suite::{Mode, Primary};
            #[test]
            fn directory() {
                super::$name(Mode { primary: Primary::Directory, incremental: false })
            }
            #[test]
            fn s3() {
                super::$name(Mode { primary: Primary::S3, incremental: false })
            }
            #[test]
            fn directory_incremental() {
                super::$name(Mode { primary: Primary::Directory, incremental: true })
            }
            #[test]
            fn s3_incremental() {
                super::$name(Mode { primary: Primary::S3, incremental: true })
            }
        }
    )*};
}

/// Every partial file below `dir`: a stream not yet completed (`*.inprogress`), an atomic
/// write not yet renamed (`.tmp-*`), or an `object_store` local upload being staged (`*#N`).
/// A clean stop (a signal, a closed pipe) must leave none.
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let staged = name.rsplit_once('#').is_some_and(|(_, n)| n.parse::<u64>().is_ok());
            if name.ends_with(snapshot_host::streams::IN_PROGRESS_SUFFIX) || name.starts_with(".tmp-") || staged {
                found.push(entry.path());
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found
}
