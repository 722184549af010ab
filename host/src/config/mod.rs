//! Configuration: the keys the host understands, read from a YAML (Flink's `config.yaml`) or
//! TOML file and overridable on the command line (`--set key=value`), with errors that name
//! the key and the value.
//!
//! Keys are Flink 2.x's where Flink has one, with Flink 1.x's names as deprecated fallbacks. They
//! may be written dotted (`execution.state-recovery.from-local = true`, which TOML and YAML nest
//! into tables) or as one flat key; both mean the same key. Unknown keys are errors:
//! a typo must not silently disable a feature (Flink silently disabled local recovery on a
//! bad value; this does not).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod effective;
mod units;
mod yaml;

pub use effective::EffectiveValue;
pub use units::{parse_duration, parse_size};
use yaml::yaml_to_toml;

use crate::runtime::PluginLimits;
use crate::storage::{s3, S3Settings, StorageLocation};

/// Restores from the local copy of a checkpoint first, when there is one (Flink 2.x's key).
/// Also turns on writing local copies unless [`LOCAL_BACKUP`] says otherwise, as in Flink.
pub const FROM_LOCAL: &str = "execution.state-recovery.from-local";
/// Writes a local copy of every snapshot beside the primary (default: [`FROM_LOCAL`]'s value).
pub const LOCAL_BACKUP: &str = "execution.checkpointing.local-backup.enabled";
/// Comma-separated directories (paths or `file://` URIs) for local copies; the subtask's
/// copies rotate over them.
pub const LOCAL_BACKUP_DIRS: &str = "execution.checkpointing.local-backup.dirs";
/// Durable checkpoint storage: a directory, or a URI (`file://`, `s3://`, `memory://`).
pub const CHECKPOINT_DIR_2X: &str = "execution.checkpointing.dir";
/// Number of completed checkpoints to retain.
pub const NUM_RETAINED: &str = "execution.checkpointing.num-retained";

/// Writes keyed state incrementally: each checkpoint stores, per key group, only the rows that
/// changed since the checkpoint before (with a strategy that can write deltas), and a key
/// group is restored from its last full part plus the deltas after it.
pub const INCREMENTAL: &str = "execution.checkpointing.incremental";
/// A key group whose chain (full part plus deltas) would grow longer than this is written in
/// full instead: bounds the parts a restore reads. (Not under `incremental.`: that key is a
/// boolean, and TOML cannot make it a table too.)
pub const INCREMENTAL_MAX_CHAIN: &str = "execution.checkpointing.incremental-compaction.max-chain-length";
/// A key group whose deltas add up to more than this fraction of its full part is written in
/// full instead: bounds restore work and storage to about `1 + fraction` times the state.
pub const INCREMENTAL_MAX_DELTA_RATIO: &str = "execution.checkpointing.incremental-compaction.max-delta-ratio";

/// Flink 1.x's name for [`INCREMENTAL`]: still accepted, with a deprecation warning.
pub const STATE_BACKEND_INCREMENTAL: &str = "state.backend.incremental";
/// Flink 1.x's name for [`FROM_LOCAL`]: still accepted, with a deprecation warning.
pub const LOCAL_RECOVERY: &str = "state.backend.local-recovery";
/// Flink 1.x's name for [`LOCAL_BACKUP_DIRS`]: still accepted, with a deprecation warning.
pub const LOCAL_ROOT_DIRS: &str = "taskmanager.state.local.root-dirs";
/// Flink 1.x's name for [`CHECKPOINT_DIR_2X`]: still accepted, with a deprecation warning.
pub const CHECKPOINT_DIR: &str = "state.checkpoints.dir";
/// Flink 1.x's name for [`NUM_RETAINED`]: still accepted, with a deprecation warning.
pub const RETAINED_CHECKPOINTS: &str = "state.checkpoints.num-retained";

/// Deprecated keys and the key each is now spelled as. Within one file or command line, a value
/// given under the new name wins over one given under the old name, whatever their order
/// (Flink's rule).
pub const DEPRECATED_KEYS: &[(&str, &str)] = &[
    (LOCAL_RECOVERY, FROM_LOCAL),
    (LOCAL_ROOT_DIRS, LOCAL_BACKUP_DIRS),
    (CHECKPOINT_DIR, CHECKPOINT_DIR_2X),
    (RETAINED_CHECKPOINTS, NUM_RETAINED),
    (STATE_BACKEND_INCREMENTAL, INCREMENTAL),
];

/// Linear memory a strategy may use per invocation (bytes, or e.g. `"256MiB"`).
pub const PLUGIN_MEMORY: &str = "plugin.memory-limit";
/// Wall time one invocation may take (milliseconds, or e.g. `"30s"`, `"500ms"`).
pub const PLUGIN_TIMEOUT: &str = "plugin.timeout";
/// Bytes one snapshot may write (bytes, or e.g. `"1GiB"`).
pub const PLUGIN_MAX_OUTPUT: &str = "plugin.max-output-bytes";
/// Instruction budget per invocation (needs fuel metering).
pub const PLUGIN_FUEL: &str = "plugin.fuel";
/// Linear memory all concurrent plugin invocations of the process may hold together.
pub const PLUGIN_MEMORY_BUDGET: &str = "plugin.memory-budget";
/// Bytes an invocation may produce per byte it consumed (beyond a fixed 64 MiB allowance).
pub const PLUGIN_MAX_AMPLIFICATION: &str = "plugin.max-amplification";

/// Core instances one invocation may create (CPython components need up to 38).
pub const PLUGIN_MAX_INSTANCES: &str = "plugin.max-instances";
/// Tables one invocation may create.
pub const PLUGIN_MAX_TABLES: &str = "plugin.max-tables";
/// Linear memories one invocation may create.
pub const PLUGIN_MAX_MEMORIES: &str = "plugin.max-memories";
/// Bytes of guest stdout and of stderr kept per invocation for the log (the rest is dropped).
pub const PLUGIN_MAX_LOG_BYTES: &str = "plugin.max-log-bytes";

/// Checkpoints that may be in flight at once (Flink's key and default: 1).
pub const MAX_CONCURRENT_CHECKPOINTS: &str = "execution.checkpointing.max-concurrent-checkpoints";
/// Least time between the end of one checkpoint and the start of the next (default 0).
pub const MIN_PAUSE: &str = "execution.checkpointing.min-pause";
/// Consecutive failed checkpoints a job tolerates before it fails (Flink's key and default: 0).
pub const TOLERABLE_FAILED_CHECKPOINTS: &str = "execution.checkpointing.tolerable-failed-checkpoints";
/// Start with empty state when checkpoints exist but none can be restored (default false:
/// refuse to start, since starting empty over existing checkpoints silently loses all state).
pub const START_EMPTY_IF_UNRESTORABLE: &str = "execution.state-recovery.start-empty-if-unrestorable";

const KNOWN: &[&str] = &[
    FROM_LOCAL,
    LOCAL_BACKUP,
    LOCAL_BACKUP_DIRS,
    CHECKPOINT_DIR_2X,
    NUM_RETAINED,
    PLUGIN_MEMORY,
    PLUGIN_TIMEOUT,
    PLUGIN_MAX_OUTPUT,
    PLUGIN_FUEL,
    PLUGIN_MEMORY_BUDGET,
    PLUGIN_MAX_INSTANCES,
    PLUGIN_MAX_TABLES,
    PLUGIN_MAX_MEMORIES,
    PLUGIN_MAX_LOG_BYTES,
    PLUGIN_MAX_AMPLIFICATION,
    MAX_CONCURRENT_CHECKPOINTS,
    MIN_PAUSE,
    TOLERABLE_FAILED_CHECKPOINTS,
    INCREMENTAL,
    INCREMENTAL_MAX_CHAIN,
    INCREMENTAL_MAX_DELTA_RATIO,
    START_EMPTY_IF_UNRESTORABLE,
];

/// A configuration error; names the input, the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or YAML.
    #[error("configuration file {}:{line}:{column}: not valid {format}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// `TOML` or `YAML`.
        format: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A YAML value the configuration has no use for (null, or a map key that is not text).
    #[error("configuration file {}: {key}: {problem}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The key, as far as it got.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A key nobody reads.
    #[error("{origin}: unknown configuration key {key:?} (known keys: {})", KNOWN.join(", "))]
    UnknownKey {
        /// File or command line.
        origin: String,
        /// The key.
        key: String,
    },
    /// A value of the wrong type or form.
    #[error("{origin}: invalid value {value:?} for {key}: {expected}")]
    InvalidValue {
        /// File or command line.
        origin: String,
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A command-line override not of the form `key=value`.
    #[error("--set {0:?}: expected key=value")]
    BadOverride(String),
}

/// Local recovery settings: Flink 2.x separates writing local copies from restoring from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecoveryConfig {
    /// Whether local copies are written ([`LOCAL_BACKUP`]).
    pub enabled: bool,
    /// Whether a restore tries the local copy before the primary ([`FROM_LOCAL`]); `None`
    /// follows [`enabled`](Self::enabled) (copies that are written are also used). Without
    /// local copies being written there is nothing to restore from, and the primary is read.
    pub from_local: Option<bool>,
    /// Root directories for local copies (each gets a `localState` sub-directory).
    pub root_dirs: Vec<PathBuf>,
}

impl LocalRecoveryConfig {
    /// Whether a restore tries the local copy first: [`from_local`](Self::from_local) when it
    /// was said, else whether copies are written.
    pub fn restores_from_local(&self) -> bool {
        self.from_local.unwrap_or(self.enabled)
    }
}

/// How checkpoints are scheduled and how many failures a job tolerates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointingConfig {
    /// Checkpoints in flight at once.
    pub max_concurrent: usize,
    /// Least time between the end of a checkpoint and the start of the next.
    pub min_pause: std::time::Duration,
    /// Consecutive failed checkpoints tolerated; one more fails the job.
    pub tolerable_failed: u64,
    /// Incremental keyed checkpoints and when a chain is compacted.
    pub incremental: IncrementalConfig,
}

impl Default for CheckpointingConfig {
    fn default() -> Self {
        CheckpointingConfig {
            max_concurrent: 1,
            min_pause: std::time::Duration::ZERO,
            tolerable_failed: 0,
            incremental: IncrementalConfig::default(),
        }
    }
}

/// Incremental checkpoints ([`INCREMENTAL`]) and the compaction thresholds of their chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrementalConfig {
    /// Whether keyed state is checkpointed incrementally.
    pub enabled: bool,
    /// Longest chain of a key group, its full part included ([`INCREMENTAL_MAX_CHAIN`]).
    pub max_chain_length: u32,
    /// Largest size of a key group's deltas relative to its full part, in thousandths
    /// ([`INCREMENTAL_MAX_DELTA_RATIO`]; kept whole so that the configuration stays `Eq`).
    pub max_delta_permille: u32,
}

impl Default for IncrementalConfig {
    fn default() -> Self {
        IncrementalConfig { enabled: false, max_chain_length: 10, max_delta_permille: 500 }
    }
}

/// The host's configuration: the same keys in a TOML file (`--config`), on the command line
/// (`--set key=value`) and in [`SnapshotHostBuilder::set`](crate::SnapshotHostBuilder::set).
///
/// ```
/// use snapshot_host::Config;
///
/// let mut config = Config::default();
/// config.apply_toml("[execution.checkpointing]\nnum-retained = 3\n", "job.toml".as_ref())?;
/// config.apply_override("execution.state-recovery.from-local=true")?;
/// assert_eq!(config.retained_checkpoints, 3);
/// assert!(config.local_recovery.enabled && config.local_recovery.restores_from_local());
/// assert!(config.apply_override("execution.checkpointing.num-retained=0").is_err());
/// # Ok::<(), snapshot_host::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Local recovery.
    pub local_recovery: LocalRecoveryConfig,
    /// Durable checkpoint storage: a directory, `s3://bucket/prefix` or `memory://name`.
    pub checkpoint_storage: StorageLocation,
    /// How to reach an S3-compatible store (the `s3.*` keys).
    pub s3: S3Settings,
    /// Completed checkpoints to keep.
    pub retained_checkpoints: usize,
    /// Limits of every strategy invocation.
    pub plugin_limits: PluginLimits,
    /// Linear memory all concurrent invocations may hold together.
    pub plugin_memory_budget: usize,
    /// Checkpoint scheduling and failure tolerance.
    pub checkpointing: CheckpointingConfig,
    /// Start empty when checkpoints exist but none can be restored.
    pub start_empty_if_unrestorable: bool,
    /// Where each key that was set got its value, by its current name: the last file or
    /// command line that set it, and the name it was written under there.
    pub sources: BTreeMap<String, ValueSource>,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSource {
    /// `configuration file PATH`, `command line`, or what the embedder said.
    pub origin: String,
    /// The key as written there (a deprecated name, or the current one).
    pub written_as: String,
}

/// The current name of `key` (itself unless it is deprecated).
pub fn current_key(key: &str) -> &str {
    DEPRECATED_KEYS.iter().find(|(old, _)| *old == key).map(|(_, new)| *new).unwrap_or(key)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            local_recovery: LocalRecoveryConfig {
                enabled: false,
                from_local: None,
                root_dirs: vec![std::env::temp_dir()],
            },
            checkpoint_storage: StorageLocation::default(),
            s3: S3Settings::default(),
            retained_checkpoints: 1,
            plugin_limits: PluginLimits::default(),
            plugin_memory_budget: crate::runtime::budget::DEFAULT_MEMORY_BUDGET,
            checkpointing: CheckpointingConfig::default(),
            start_empty_if_unrestorable: false,
            sources: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Reads the configuration file at `path` over the defaults (see [`apply_file`](Self::apply_file)).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        config.apply_file(path)?;
        Ok(config)
    }

    /// Applies the configuration file at `path`: YAML when it is named `*.yaml` or `*.yml`
    /// (as Flink's `config.yaml`), TOML otherwise.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => self.apply_yaml(&text, path),
            _ => self.apply_toml(&text, path),
        }
    }

    /// Applies the keys of a TOML document.
    pub fn apply_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = line_and_column(text, e.span().map(|s| s.start).unwrap_or(0));
            ConfigError::Syntax { path: path.into(), format: "TOML", line, column, message: e.message().to_string() }
        })?;
        self.apply_table(toml::Value::Table(table), path)
    }

    /// Applies the keys of a YAML document as Flink's `config.yaml` writes them: nested maps
    /// (`execution: {checkpointing: {dir: ...}}`), flat dotted keys
    /// (`execution.checkpointing.dir: ...`), or both.
    ///
    /// ```
    /// use snapshot_host::Config;
    ///
    /// let mut config = Config::default();
    /// let yaml = "execution:\n  checkpointing:\n    num-retained: 3\nexecution.state-recovery.from-local: true\n";
    /// config.apply_yaml(yaml, "config.yaml".as_ref())?;
    /// assert_eq!(config.retained_checkpoints, 3);
    /// assert!(config.local_recovery.restores_from_local());
    /// # Ok::<(), snapshot_host::config::ConfigError>(())
    /// ```
    pub fn apply_yaml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            ConfigError::Syntax { path: path.into(), format: "YAML", line, column, message: e.to_string() }
        })?;
        let value = match document {
            // An empty file sets nothing.
            serde_yaml_ng::Value::Null => toml::Value::Table(toml::Table::new()),
            other => yaml_to_toml(other, "", path)?,
        };
        self.apply_table(value, path)
    }

    fn apply_table(&mut self, table: toml::Value, path: &Path) -> Result<(), ConfigError> {
        let mut flat = BTreeMap::new();
        flatten("", &table, &mut flat);
        let origin = format!("configuration file {}", path.display());
        for (key, value) in flat {
            self.set_value(&origin, &key, &value)?;
        }
        Ok(())
    }

    /// Applies a command-line override `key=value`.
    pub fn apply_override(&mut self, assignment: &str) -> Result<(), ConfigError> {
        self.apply_assignment(assignment, "command line")
    }

    /// Applies `key=value` from `origin` (what [`sources`](Self::sources) records and errors
    /// name, e.g. `"the demo's defaults"`).
    pub fn apply_assignment(&mut self, assignment: &str, origin: &str) -> Result<(), ConfigError> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| ConfigError::BadOverride(assignment.into()))?;
        let key = key.trim();
        let value = value.trim();
        // On the command line every value is text; interpret it as the key's type.
        let parsed = match current_key(key) {
            FROM_LOCAL | LOCAL_BACKUP | START_EMPTY_IF_UNRESTORABLE | INCREMENTAL => toml::Value::String(value.into()),
            NUM_RETAINED
            | PLUGIN_MEMORY
            | PLUGIN_TIMEOUT
            | PLUGIN_MAX_OUTPUT
            | PLUGIN_FUEL
            | PLUGIN_MEMORY_BUDGET
            | PLUGIN_MAX_AMPLIFICATION
            | MAX_CONCURRENT_CHECKPOINTS
            | MIN_PAUSE
            | TOLERABLE_FAILED_CHECKPOINTS
            | INCREMENTAL_MAX_CHAIN
            | s3::MAX_CONCURRENT_UPLOADS
            | s3::MAX_RETRIES => {
                value.parse::<i64>().map(toml::Value::Integer).unwrap_or_else(|_| toml::Value::String(value.into()))
            }
            _ => toml::Value::String(value.into()),
        };
        self.set_value(origin, key, &parsed)
    }

    fn set_value(&mut self, origin: &str, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let current = current_key(key);
        if current != key {
            // Within one file or command line; a later layer overrides an earlier one whatever
            // the names (a file's old name over a default's new one).
            if self.sources.get(current).is_some_and(|s| s.written_as == current && s.origin == origin) {
                // Ignored, but a bad value is still an error.
                self.clone().set_current(origin, key, current, value)?;
                tracing::warn!(
                    "{origin}: configuration key {key} is deprecated and ignored here: {current} is also set, and wins"
                );
                return Ok(());
            }
            tracing::warn!("{origin}: configuration key {key} is deprecated; use {current}");
        }
        self.set_current(origin, key, current, value)?;
        self.sources.insert(current.into(), ValueSource { origin: origin.into(), written_as: key.into() });
        Ok(())
    }

    /// Sets `current` (the current name of `key`, which is how errors name it).
    fn set_current(&mut self, origin: &str, key: &str, current: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let invalid = |expected: &str| ConfigError::InvalidValue {
            origin: origin.into(),
            key: key.into(),
            value: match value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            expected: expected.into(),
        };
        let boolean = || match value {
            toml::Value::Boolean(b) => Some(*b),
            toml::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            toml::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        };
        let text = || value.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let whole = |min: i64| match value {
            toml::Value::Integer(n) if *n >= min => Some(*n as u64),
            toml::Value::String(s) => s.trim().parse::<u64>().ok().filter(|n| *n as i64 >= min),
            _ => None,
        };
        match current {
            FROM_LOCAL => {
                let on = boolean().ok_or_else(|| invalid("expected true or false"))?;
                self.local_recovery.from_local = Some(on);
                // Flink: writing local copies follows restoring from them unless set itself.
                if !self.sources.contains_key(LOCAL_BACKUP) {
                    self.local_recovery.enabled = on;
                }
            }
            LOCAL_BACKUP => {
                self.local_recovery.enabled = boolean().ok_or_else(|| invalid("expected true or false"))?;
                // As in Flink, writing local copies alone does not restore from them.
                self.local_recovery.from_local.get_or_insert(false);
            }
            START_EMPTY_IF_UNRESTORABLE => {
                self.start_empty_if_unrestorable = boolean().ok_or_else(|| invalid("expected true or false"))?;
            }
            INCREMENTAL => {
                self.checkpointing.incremental.enabled = boolean().ok_or_else(|| invalid("expected true or false"))?;
            }
            INCREMENTAL_MAX_CHAIN => {
                let n = whole(1).ok_or_else(|| invalid("expected a whole number of at least 1"))?;
                self.checkpointing.incremental.max_chain_length = u32::try_from(n).map_err(|_| invalid("too large"))?;
            }
            INCREMENTAL_MAX_DELTA_RATIO => {
                let ratio = match value {
                    toml::Value::Float(f) => Some(*f),
                    toml::Value::Integer(n) => Some(*n as f64),
                    toml::Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                let ratio = ratio
                    .filter(|r| r.is_finite() && *r >= 0.0 && *r <= 1000.0)
                    .ok_or_else(|| invalid("expected a number from 0 to 1000, e.g. 0.5"))?;
                self.checkpointing.incremental.max_delta_permille = (ratio * 1000.0).round() as u32;
            }
            MAX_CONCURRENT_CHECKPOINTS => {
                let n = whole(1).ok_or_else(|| invalid("expected a whole number of at least 1"))?;
                self.checkpointing.max_concurrent = n as usize;
            }
            TOLERABLE_FAILED_CHECKPOINTS => {
                self.checkpointing.tolerable_failed = whole(0).ok_or_else(|| invalid("expected a whole number"))?;
            }
            MIN_PAUSE => {
                let zero = matches!(value, toml::Value::Integer(0)) || value.as_str().map(str::trim) == Some("0");
                self.checkpointing.min_pause = if zero {
                    std::time::Duration::ZERO
                } else {
                    parse_duration(value).ok_or_else(|| invalid("expected a duration, e.g. 0, 500 (ms), \"2s\""))?
                };
            }
            PLUGIN_MEMORY_BUDGET => {
                let bytes = parse_size(value).ok_or_else(|| invalid("expected a size in bytes, e.g. \"1GiB\""))?;
                self.plugin_memory_budget = usize::try_from(bytes).map_err(|_| invalid("too large"))?;
            }
            PLUGIN_MAX_INSTANCES | PLUGIN_MAX_TABLES | PLUGIN_MAX_MEMORIES => {
                let n = whole(1).ok_or_else(|| invalid("expected a whole number of at least 1"))?;
                let n = usize::try_from(n).map_err(|_| invalid("too large"))?;
                let limits = &mut self.plugin_limits;
                *match current {
                    PLUGIN_MAX_INSTANCES => &mut limits.instances,
                    PLUGIN_MAX_TABLES => &mut limits.tables,
                    _ => &mut limits.memories,
                } = n;
            }
            PLUGIN_MAX_LOG_BYTES => {
                let bytes = parse_size(value).ok_or_else(|| invalid("expected a size in bytes, e.g. \"1MiB\""))?;
                self.plugin_limits.max_log_bytes = usize::try_from(bytes).map_err(|_| invalid("too large"))?;
            }
            PLUGIN_MAX_AMPLIFICATION => {
                self.plugin_limits.max_amplification =
                    whole(1).ok_or_else(|| invalid("expected a whole number of at least 1"))?;
            }
            LOCAL_BACKUP_DIRS => {
                let dirs: Vec<String> = match value {
                    toml::Value::String(s) => s.split(',').map(|d| d.trim().to_string()).collect(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| {
                            i.as_str().map(str::to_string).ok_or_else(|| invalid("expected directory names as strings"))
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(invalid("expected a comma-separated list of directories")),
                };
                if dirs.is_empty() || dirs.iter().any(|d| d.is_empty()) {
                    return Err(invalid("expected a comma-separated list of non-empty directories"));
                }
                self.local_recovery.root_dirs =
                    dirs.iter().map(|d| local_dir(d)).collect::<Result<_, _>>().map_err(|why| invalid(&why))?;
            }
            CHECKPOINT_DIR_2X => match value {
                toml::Value::String(s) => {
                    self.checkpoint_storage = StorageLocation::parse(s).map_err(|why| invalid(&why))?
                }
                _ => return Err(invalid("expected a directory or a URI (file://, s3://, memory://)")),
            },
            s3::ENDPOINT => {
                let text = text().ok_or_else(|| invalid("expected a URL"))?;
                if !(text.starts_with("http://") || text.starts_with("https://")) {
                    return Err(invalid("expected an http:// or https:// URL"));
                }
                self.s3.endpoint = Some(text);
            }
            s3::ACCESS_KEY => self.s3.access_key = Some(text().ok_or_else(|| invalid("expected text"))?),
            s3::SECRET_KEY => {
                // The value is a secret: errors must not echo it.
                let secret = value.as_str().filter(|s| !s.is_empty()).ok_or_else(|| ConfigError::InvalidValue {
                    origin: origin.into(),
                    key: key.into(),
                    value: "***".into(),
                    expected: "expected non-empty text".into(),
                })?;
                self.s3.secret_key = Some(s3::Secret(secret.to_string()));
            }
            s3::REGION => self.s3.region = Some(text().ok_or_else(|| invalid("expected a region name"))?),
            s3::PATH_STYLE_ACCESS => {
                self.s3.path_style_access = Some(boolean().ok_or_else(|| invalid("expected true or false"))?)
            }
            s3::PART_SIZE => {
                let bytes = parse_size(value).ok_or_else(|| invalid("expected a size in bytes, e.g. \"8MiB\""))?;
                if bytes < s3::MIN_PART_SIZE as u64 || bytes > (5u64 << 30) {
                    return Err(invalid("expected a part size between 5MiB and 5GiB (S3's limits)"));
                }
                self.s3.part_size = bytes as usize;
            }
            s3::MAX_CONCURRENT_UPLOADS => {
                self.s3.max_concurrent_uploads =
                    whole(1).ok_or_else(|| invalid("expected a whole number of at least 1"))? as usize;
            }
            s3::REQUEST_TIMEOUT => {
                self.s3.request_timeout =
                    parse_duration(value).ok_or_else(|| invalid("expected a duration, e.g. \"30s\""))?;
            }
            s3::MAX_RETRIES => {
                self.s3.max_retries = whole(0).ok_or_else(|| invalid("expected a whole number"))? as usize;
            }
            s3::RETRY_TIMEOUT => {
                self.s3.retry_timeout =
                    parse_duration(value).ok_or_else(|| invalid("expected a duration, e.g. \"60s\""))?;
            }
            NUM_RETAINED => {
                self.retained_checkpoints =
                    whole(1).ok_or_else(|| invalid("expected a whole number of at least 1"))? as usize;
            }
            PLUGIN_MEMORY => {
                let bytes = parse_size(value)
                    .ok_or_else(|| invalid("expected a size in bytes, e.g. 268435456 or \"256MiB\""))?;
                self.plugin_limits.memory_bytes = usize::try_from(bytes).map_err(|_| invalid("too large"))?;
            }
            PLUGIN_MAX_OUTPUT => {
                let bytes = parse_size(value).ok_or_else(|| invalid("expected a size in bytes, e.g. \"1GiB\""))?;
                self.plugin_limits.max_output_bytes = Some(bytes);
            }
            PLUGIN_TIMEOUT => {
                let timeout = parse_duration(value)
                    .ok_or_else(|| invalid("expected a duration, e.g. 30000 (ms), \"30s\" or \"500ms\""))?;
                self.plugin_limits.timeout = timeout;
            }
            PLUGIN_FUEL => {
                let fuel = match value {
                    toml::Value::Integer(n) if *n > 0 => Some(*n as u64),
                    toml::Value::String(s) => s.parse::<u64>().ok().filter(|n| *n > 0),
                    _ => None,
                };
                self.plugin_limits.fuel = Some(fuel.ok_or_else(|| invalid("expected a positive whole number"))?);
            }
            _ => return Err(ConfigError::UnknownKey { origin: origin.into(), key: key.into() }),
        }
        Ok(())
    }
}

/// A directory of [`LOCAL_BACKUP_DIRS`]: a path or a `file://` URI (other schemes are not
/// local disks).
fn local_dir(text: &str) -> Result<PathBuf, String> {
    match text.split_once("://") {
        None => Ok(PathBuf::from(text)),
        Some(("file", path)) if path.starts_with('/') => Ok(PathBuf::from(path)),
        Some(("file", _)) => Err(format!("{text}: a file:// URI needs an absolute path (file:///dir)")),
        Some((scheme, _)) => Err(format!("{text}: local copies need a local directory, not {scheme}://")),
    }
}

/// 1-based line and column of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.apply_toml(text, Path::new("test.toml"))?;
        Ok(c)
    }

    #[test]
    fn defaults_have_local_recovery_off() {
        assert!(!Config::default().local_recovery.enabled);
        // An embedder that turns on writing copies (the field alone) also restores from them.
        let mut c = Config::default();
        c.local_recovery.enabled = true;
        assert!(c.local_recovery.restores_from_local());
    }

    #[test]
    fn dotted_and_quoted_keys_are_the_same_key() {
        let a = parse("state.backend.local-recovery = true\ntaskmanager.state.local.root-dirs = \"/a, /b\"").unwrap();
        let b =
            parse("\"state.backend.local-recovery\" = true\n\"taskmanager.state.local.root-dirs\" = [\"/a\", \"/b\"]")
                .unwrap();
        assert_eq!(a, b);
        assert!(a.local_recovery.enabled);
        assert_eq!(a.local_recovery.root_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let e = parse("state.backend.local-recovery = \"yes\"").unwrap_err().to_string();
        assert!(e.contains("state.backend.local-recovery") && e.contains("\"yes\"") && e.contains("test.toml"), "{e}");
        let e = parse("state.backend.local-recovery = 1").unwrap_err().to_string();
        assert!(e.contains("\"1\""), "{e}");
        let e = parse("taskmanager.state.local.root-dirs = \"/a,,/b\"").unwrap_err().to_string();
        assert!(e.contains("root-dirs"), "{e}");
        let e = parse("state.checkpoints.num-retained = 0").unwrap_err().to_string();
        assert!(e.contains("num-retained") && e.contains("\"0\""), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_errors() {
        let e = parse("state.backend.local-recovry = true").unwrap_err().to_string();
        assert!(e.contains("local-recovry") && e.contains("unknown"), "{e}");
        assert!(matches!(parse("this is = = not toml"), Err(ConfigError::Syntax { .. })));
    }

    #[test]
    fn command_line_overrides() {
        let mut c = parse("state.backend.local-recovery = false").unwrap();
        c.apply_override("state.backend.local-recovery=true").unwrap();
        c.apply_override("taskmanager.state.local.root-dirs=/x,/y").unwrap();
        c.apply_override("state.checkpoints.num-retained=3").unwrap();
        assert!(c.local_recovery.enabled);
        assert_eq!(c.local_recovery.root_dirs.len(), 2);
        assert_eq!(c.retained_checkpoints, 3);
        assert!(matches!(c.apply_override("no-equals"), Err(ConfigError::BadOverride(_))));
        let e = c.apply_override("state.backend.local-recovery=maybe").unwrap_err().to_string();
        assert!(e.contains("command line") && e.contains("maybe"), "{e}");
    }

    #[test]
    fn plugin_limits_with_units_and_clear_errors() {
        let text = "plugin.memory-limit = \"64MiB\"\nplugin.timeout = \"2s\"\nplugin.max-output-bytes = 1048576\nplugin.fuel = 1000";
        let c = parse(text).unwrap();
        assert_eq!(c.plugin_limits.memory_bytes, 64 << 20);
        assert_eq!(c.plugin_limits.timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.plugin_limits.max_output_bytes, Some(1 << 20));
        assert_eq!(c.plugin_limits.fuel, Some(1000));
        let e = parse("plugin.memory-limit = \"lots\"").unwrap_err().to_string();
        assert!(e.contains("plugin.memory-limit") && e.contains("lots"), "{e}");
        let e = parse("plugin.timeout = 0").unwrap_err().to_string();
        assert!(e.contains("plugin.timeout"), "{e}");
        let mut c = Config::default();
        c.apply_override("plugin.timeout=250ms").unwrap();
        assert_eq!(c.plugin_limits.timeout, std::time::Duration::from_millis(250));
    }

    #[test]
    fn checkpoint_locations_are_paths_or_uris() {
        let mut c = Config::default();
        c.apply_override("state.checkpoints.dir=file:///data/ckpt").unwrap();
        assert_eq!(c.checkpoint_storage, StorageLocation::Directory("/data/ckpt".into()));
        c.apply_override("execution.checkpointing.dir=relative/dir").unwrap();
        assert_eq!(c.checkpoint_storage, StorageLocation::Directory("relative/dir".into()));
        c.apply_override("execution.checkpointing.dir=s3://bucket/prefix").unwrap();
        assert_eq!(c.checkpoint_storage, StorageLocation::S3 { bucket: "bucket".into(), prefix: "prefix".into() });
        let e = c.apply_override("state.checkpoints.dir=hdfs://nn/x").unwrap_err().to_string();
        assert!(e.contains("hdfs://") && e.contains("state.checkpoints.dir"), "{e}");
        assert!(c.apply_override("state.checkpoints.dir=file://relative").is_err());
        // The deprecated name does not override the new one, but a bad value is still an error.
        c.apply_override("state.checkpoints.dir=/elsewhere").unwrap();
        assert_eq!(c.checkpoint_storage, StorageLocation::S3 { bucket: "bucket".into(), prefix: "prefix".into() });
    }

    #[test]
    fn flink_2_keys_with_deprecated_names_as_fallbacks() {
        let c = parse(
            "execution.state-recovery.from-local = true\n\
             execution.checkpointing.local-backup.dirs = \"file:///ssd/a, /ssd/b\"\n\
             execution.checkpointing.num-retained = 4\n\
             execution.checkpointing.dir = \"file:///data/ckpt\"",
        )
        .unwrap();
        // Writing local copies follows restoring from them unless set itself.
        assert!(c.local_recovery.enabled && c.local_recovery.restores_from_local());
        assert_eq!(c.local_recovery.root_dirs, vec![PathBuf::from("/ssd/a"), PathBuf::from("/ssd/b")]);
        assert_eq!(c.retained_checkpoints, 4);
        assert_eq!(c.checkpoint_storage, StorageLocation::Directory("/data/ckpt".into()));
        assert_eq!(c.sources[NUM_RETAINED].written_as, NUM_RETAINED);
        assert_eq!(c.sources[NUM_RETAINED].origin, "configuration file test.toml");

        // The switches apart, in either order.
        for text in [
            "execution.state-recovery.from-local = true\nexecution.checkpointing.local-backup.enabled = false",
            "execution.checkpointing.local-backup.enabled = false\nexecution.state-recovery.from-local = true",
        ] {
            let c = parse(text).unwrap();
            assert!(!c.local_recovery.enabled && c.local_recovery.restores_from_local(), "{text}");
        }
        let c = parse("execution.checkpointing.local-backup.enabled = true").unwrap();
        assert!(c.local_recovery.enabled && !c.local_recovery.restores_from_local());

        // Flink 1.x names: accepted, recorded as written, and never over a new name.
        let old = parse(
            "state.backend.local-recovery = true\ntaskmanager.state.local.root-dirs = \"/x\"\n\
             state.checkpoints.num-retained = 2",
        )
        .unwrap();
        assert!(old.local_recovery.enabled && old.local_recovery.restores_from_local());
        assert_eq!(old.retained_checkpoints, 2);
        assert_eq!(old.sources[FROM_LOCAL].written_as, LOCAL_RECOVERY);
        assert_eq!(old.sources[LOCAL_BACKUP_DIRS].written_as, LOCAL_ROOT_DIRS);
        let mut c = Config::default();
        c.apply_override("execution.checkpointing.num-retained=5").unwrap();
        c.apply_override("state.checkpoints.num-retained=2").unwrap();
        assert_eq!(c.retained_checkpoints, 5);
        // In one file too, whichever comes first; a later layer (the command line) still wins.
        for text in [
            "state.checkpoints.num-retained = 2\nexecution.checkpointing.num-retained = 5",
            "execution.checkpointing.num-retained = 5\nstate.checkpoints.num-retained = 2",
        ] {
            let mut c = parse(text).unwrap();
            assert_eq!(c.retained_checkpoints, 5, "{text}");
            c.apply_override("state.checkpoints.num-retained=7").unwrap();
            assert_eq!(c.retained_checkpoints, 7, "{text}");
        }
        let e = c.apply_override("state.checkpoints.num-retained=none").unwrap_err().to_string();
        assert!(e.contains("state.checkpoints.num-retained") && e.contains("none"), "{e}");
        assert_eq!(current_key(LOCAL_RECOVERY), FROM_LOCAL);
        assert_eq!(current_key(PLUGIN_TIMEOUT), PLUGIN_TIMEOUT);
        for (old, new) in DEPRECATED_KEYS {
            assert!(!KNOWN.contains(old) && KNOWN.contains(new), "{old} -> {new}");
        }
    }

    #[test]
    fn local_copy_directories_are_paths_or_file_uris() {
        let mut c = Config::default();
        c.apply_override("execution.checkpointing.local-backup.dirs=file:///mnt/ssd,rel/dir").unwrap();
        assert_eq!(c.local_recovery.root_dirs, vec![PathBuf::from("/mnt/ssd"), PathBuf::from("rel/dir")]);
        for bad in ["s3://bucket/local", "file://relative"] {
            let e = c.apply_override(&format!("execution.checkpointing.local-backup.dirs={bad}")).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn yaml_as_flink_writes_it_nested_or_flat() {
        let nested = "execution:\n  checkpointing:\n    dir: file:///data/ckpt\n    num-retained: 3\n    local-backup:\n      enabled: true\n      dirs: [/ssd/a, /ssd/b]\n  state-recovery:\n    from-local: true\nplugin:\n  timeout: 10 s\n  memory-limit: 256mb\n";
        let flat = "execution.checkpointing.dir: file:///data/ckpt\nexecution.checkpointing.num-retained: 3\nexecution.checkpointing.local-backup.enabled: true\nexecution.checkpointing.local-backup.dirs: /ssd/a, /ssd/b\nexecution.state-recovery.from-local: true\nplugin.timeout: 10 s\nplugin.memory-limit: 256mb\n";
        let toml = "execution.checkpointing.dir = \"file:///data/ckpt\"\nexecution.checkpointing.num-retained = 3\nexecution.checkpointing.local-backup.enabled = true\nexecution.checkpointing.local-backup.dirs = [\"/ssd/a\", \"/ssd/b\"]\nexecution.state-recovery.from-local = true\nplugin.timeout = \"10 s\"\nplugin.memory-limit = \"256mb\"\n";
        let mut configs = Vec::new();
        for (text, name) in [(nested, "config.yaml"), (flat, "config.yml")] {
            let mut c = Config::default();
            c.apply_yaml(text, Path::new(name)).unwrap();
            configs.push(c);
        }
        let t = parse(toml).unwrap();
        for c in &configs {
            assert_eq!(c.checkpoint_storage, t.checkpoint_storage);
            assert_eq!(c.local_recovery, t.local_recovery);
            assert_eq!(c.retained_checkpoints, 3);
            assert_eq!(c.plugin_limits.timeout, std::time::Duration::from_secs(10));
            assert_eq!(c.plugin_limits.memory_bytes, 256 << 20);
        }
        let mut c = Config::default();
        c.apply_yaml("", Path::new("empty.yaml")).unwrap();
        assert_eq!(c, Config::default());
        let e = c.apply_yaml("execution:\n  checkpointing:\n    dir:\n", Path::new("c.yaml")).unwrap_err();
        assert!(e.to_string().contains("execution.checkpointing.dir: no value"), "{e}");
        let e = c.apply_yaml("execution.checkpointing.dirr: /x\n", Path::new("c.yaml")).unwrap_err();
        assert!(e.to_string().contains("unknown configuration key \"execution.checkpointing.dirr\""), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_file_line_and_column() {
        let e = Config::default().apply_yaml("a: 1\nb: [1, 2\n", Path::new("conf/config.yaml")).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { format: "YAML", line: 3, .. }), "{e:?}");
        assert!(e.to_string().starts_with("configuration file conf/config.yaml:3:"), "{e}");
        let e = parse("plugin.fuel = 1\nplugin.timeout = = 3\n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { format: "TOML", line: 2, column: 18, .. }), "{e:?}");
        assert!(e.to_string().starts_with("configuration file test.toml:2:18: not valid TOML"), "{e}");
    }

    #[test]
    fn sizes_and_durations_as_flink_writes_them() {
        let size = |s: &str| parse_size(&toml::Value::String(s.into()));
        for (text, bytes) in [
            ("256mb", 256u64 << 20),
            ("256 MiB", 256 << 20),
            ("1g", 1 << 30),
            ("1 GB", 1 << 30),
            ("64 kb", 64 << 10),
            ("10 mebibytes", 10 << 20),
            ("1024", 1024),
            ("100 bytes", 100),
            ("2t", 2 << 40),
        ] {
            assert_eq!(size(text), Some(bytes), "{text}");
        }
        for bad in ["lots", "0", "-1", "12 parsecs", ""] {
            assert_eq!(size(bad), None, "{bad}");
        }
        let duration = |s: &str| parse_duration(&toml::Value::String(s.into()));
        let secs = std::time::Duration::from_secs;
        for (text, expected) in [
            ("500", std::time::Duration::from_millis(500)),
            ("500 ms", std::time::Duration::from_millis(500)),
            ("10 s", secs(10)),
            ("10s", secs(10)),
            ("1 min", secs(60)),
            ("2 h", secs(7200)),
            ("1h 30min", secs(5400)),
            ("1 d", secs(86400)),
        ] {
            assert_eq!(duration(text), Some(expected), "{text}");
        }
        for bad in ["soon", "0", "0 s", "-5 s", "10 parsecs"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
        let c = parse("plugin.memory-limit = \"256mb\"\nplugin.timeout = \"1 min\"").unwrap();
        assert_eq!((c.plugin_limits.memory_bytes, c.plugin_limits.timeout), (256 << 20, secs(60)));
    }

    #[test]
    fn s3_keys_with_defaults_clear_errors_and_no_echoed_secret() {
        let mut c = Config::default();
        assert_eq!(c.s3, S3Settings::default());
        c.apply_toml(
            r#"
            s3.endpoint = "http://127.0.0.1:9000"
            s3.access-key = "AK"
            s3.secret-key = "topsecret"
            s3.region = "eu-west-1"
            s3.path.style.access = true
            s3.upload.part-size = "16MiB"
            s3.upload.max-concurrent-uploads = 2
            s3.request-timeout = "5s"
            s3.retry.max-retries = 1
            s3.retry.timeout = "10s"
            "#,
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.s3.part_size, 16 << 20);
        assert_eq!(c.s3.max_concurrent_uploads, 2);
        assert_eq!(c.s3.request_timeout, std::time::Duration::from_secs(5));
        assert_eq!((c.s3.max_retries, c.s3.path_style_access), (1, Some(true)));
        assert!(!format!("{c:?}").contains("topsecret"));
        for (bad, why) in [
            ("s3.endpoint=127.0.0.1:9000", "http://"),
            ("s3.upload.part-size=1MiB", "5MiB"),
            ("s3.upload.max-concurrent-uploads=0", "at least 1"),
            ("s3.request-timeout=soon", "duration"),
            ("s3.path.style.access=maybe", "true or false"),
        ] {
            let e = c.apply_override(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()) && e.contains(why), "{bad}: {e}");
        }
        let e = c.apply_override("s3.secret-key=").unwrap_err().to_string();
        assert!(e.contains("***"), "{e}");
    }

    #[test]
    fn runtime_count_and_log_limits_with_defaults_and_clear_errors() {
        let c = parse("plugin.max-instances = 64\nplugin.max-tables = 40\nplugin.max-memories = 4\nplugin.max-log-bytes = \"64KiB\"").unwrap();
        assert_eq!(
            (
                c.plugin_limits.instances,
                c.plugin_limits.tables,
                c.plugin_limits.memories,
                c.plugin_limits.max_log_bytes
            ),
            (64, 40, 4, 64 << 10)
        );
        let d = Config::default().plugin_limits;
        assert!(d.instances >= 38, "the default admits CPython components (up to 38 core instances)");
        for bad in ["plugin.max-instances = 0", "plugin.max-tables = \"many\"", "plugin.max-log-bytes = \"lots\""] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{e}");
        }
    }

    /// Each `key=value` of `bad` is refused with an error naming the key and the value.
    fn assert_refused(c: &mut Config, bad: &[&str]) {
        for bad in bad {
            let e = c.apply_override(bad).unwrap_err().to_string();
            let (key, value) = bad.split_once('=').unwrap();
            assert!(e.contains(key) && e.contains(value), "{e}");
        }
    }

    #[test]
    fn incremental_keys_with_defaults_the_flink_1_name_and_clear_errors() {
        let c = Config::default();
        assert_eq!(c.checkpointing.incremental, IncrementalConfig::default());
        assert!(!c.checkpointing.incremental.enabled);
        assert_eq!(
            (c.checkpointing.incremental.max_chain_length, c.checkpointing.incremental.max_delta_permille),
            (10, 500)
        );
        let c = parse(
            "execution.checkpointing.incremental = true\n\
             execution.checkpointing.incremental-compaction.max-chain-length = 4\n\
             execution.checkpointing.incremental-compaction.max-delta-ratio = 0.25",
        )
        .unwrap();
        let expected = IncrementalConfig { enabled: true, max_chain_length: 4, max_delta_permille: 250 };
        assert_eq!(c.checkpointing.incremental, expected);
        // Flink 1.x's name is accepted, recorded as written, and never wins over the new one.
        let old = parse("state.backend.incremental = true").unwrap();
        assert!(old.checkpointing.incremental.enabled);
        assert_eq!(old.sources[INCREMENTAL].written_as, STATE_BACKEND_INCREMENTAL);
        let both = parse("execution.checkpointing.incremental = false\nstate.backend.incremental = true").unwrap();
        assert!(!both.checkpointing.incremental.enabled);
        let mut c = Config::default();
        c.apply_override("execution.checkpointing.incremental-compaction.max-delta-ratio=2").unwrap();
        assert_eq!(c.checkpointing.incremental.max_delta_permille, 2000);
        assert_refused(
            &mut c,
            &[
                "execution.checkpointing.incremental=sometimes",
                "state.backend.incremental=2",
                "execution.checkpointing.incremental-compaction.max-chain-length=0",
                "execution.checkpointing.incremental-compaction.max-chain-length=ten",
                "execution.checkpointing.incremental-compaction.max-delta-ratio=-0.5",
                "execution.checkpointing.incremental-compaction.max-delta-ratio=NaN",
                "execution.checkpointing.incremental-compaction.max-delta-ratio=half",
            ],
        );
    }

    #[test]
    fn checkpointing_and_budget_keys_with_defaults_and_clear_errors() {
        let c = Config::default();
        assert_eq!(c.checkpointing, CheckpointingConfig::default());
        assert_eq!(c.checkpointing.max_concurrent, 1);
        assert!(!c.start_empty_if_unrestorable);
        let text = "execution.checkpointing.max-concurrent-checkpoints = 3\n\
                    execution.checkpointing.min-pause = \"2s\"\n\
                    execution.checkpointing.tolerable-failed-checkpoints = 5\n\
                    execution.state-recovery.start-empty-if-unrestorable = true\n\
                    plugin.memory-budget = \"512MiB\"\nplugin.max-amplification = 4";
        let c = parse(text).unwrap();
        assert_eq!(c.checkpointing.max_concurrent, 3);
        assert_eq!(c.checkpointing.min_pause, std::time::Duration::from_secs(2));
        assert_eq!(c.checkpointing.tolerable_failed, 5);
        assert!(c.start_empty_if_unrestorable);
        assert_eq!(c.plugin_memory_budget, 512 << 20);
        assert_eq!(c.plugin_limits.max_amplification, 4);
        let mut c = Config::default();
        c.apply_override("execution.checkpointing.min-pause=0").unwrap();
        c.apply_override("execution.checkpointing.tolerable-failed-checkpoints=0").unwrap();
        assert_refused(
            &mut c,
            &[
                "execution.checkpointing.max-concurrent-checkpoints=0",
                "execution.checkpointing.min-pause=soon",
                "execution.checkpointing.tolerable-failed-checkpoints=-1",
                "plugin.memory-budget=big",
                "plugin.max-amplification=0",
                "execution.state-recovery.start-empty-if-unrestorable=perhaps",
            ],
        );
    }
}
