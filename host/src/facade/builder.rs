//! [`SnapshotHostBuilder`]: every setting a host needs, from a [`Config`] (the same keys as the
//! command line's `--config` and `--set`) or one method each.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{Inner, SnapshotHost};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::key_groups::{default_max_parallelism, range_for_operator};
use crate::runtime::{CompiledCache, Plugin, PluginRuntime, RuntimeOptions};
use crate::storage::{CheckpointStorage, StorageLocation};
use crate::streams::FileStreamFactory;

#[derive(Debug)]
enum PluginSource {
    None,
    File(PathBuf),
    Loaded(Arc<Plugin>),
}

/// Builds a [`SnapshotHost`]. Settings are checked in [`build`](Self::build), which names the
/// first bad one; later calls override earlier ones.
///
/// ```
/// # fn main() -> snapshot_host::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// use snapshot_host::{Config, SnapshotHost};
///
/// let mut config = Config::default();
/// config.apply_override("execution.checkpointing.num-retained=3")?;
/// let host = SnapshotHost::builder("payments")
///     .config(config)
///     .set("execution.checkpointing.max-concurrent-checkpoints", "2")
///     .checkpoint_storage(dir.path())
///     .plugin_file(snapshot_host::doc_plugin_path())
///     .parallelism(4)
///     .build()?;
/// assert_eq!(host.config().retained_checkpoints, 3);
/// assert_eq!(host.max_parallelism(), 128);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SnapshotHostBuilder {
    job_id: String,
    config: Config,
    overrides: Vec<String>,
    storage: Option<String>,
    plugin: PluginSource,
    parallelism: u32,
    max_parallelism: Option<u32>,
    allocation_id: String,
    operator_id: String,
    compiled_cache: Option<Option<PathBuf>>,
}

impl SnapshotHostBuilder {
    pub(super) fn new(job_id: String) -> Self {
        SnapshotHostBuilder {
            job_id,
            config: Config::default(),
            overrides: Vec::new(),
            storage: None,
            plugin: PluginSource::None,
            parallelism: 1,
            max_parallelism: None,
            allocation_id: "local".into(),
            operator_id: "operator".into(),
            compiled_cache: None,
        }
    }

    /// Starts from `config` (replacing the settings given so far by `config` and `set`).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.overrides.clear();
        self
    }

    /// Sets one configuration key, as `--set key=value` does on the command line.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.overrides.push(format!("{key}={value}"));
        self
    }

    /// The strategy plugin: a WebAssembly component file, compiled (or taken from the
    /// compiled-plugin cache) when the host is built.
    pub fn plugin_file(mut self, path: impl AsRef<Path>) -> Self {
        self.plugin = PluginSource::File(path.as_ref().to_path_buf());
        self
    }

    /// A plugin already loaded (to share one compiled plugin between hosts).
    pub fn plugin(mut self, plugin: Arc<Plugin>) -> Self {
        self.plugin = PluginSource::Loaded(plugin);
        self
    }

    /// Durable checkpoint storage: a directory, `file:///path`, `s3://bucket/prefix` (with
    /// the `s3.*` keys) or `memory://name` (`execution.checkpointing.dir`).
    pub fn checkpoint_storage(mut self, location: impl AsRef<Path>) -> Self {
        self.storage = Some(location.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Enables local recovery with these root directories: local copies written and restored
    /// from first (`execution.checkpointing.local-backup.enabled`,
    /// `execution.state-recovery.from-local` and `execution.checkpointing.local-backup.dirs`).
    pub fn local_recovery<P: Into<PathBuf>>(mut self, roots: impl IntoIterator<Item = P>) -> Self {
        self.config.local_recovery.enabled = true;
        self.config.local_recovery.from_local = Some(true);
        self.config.local_recovery.root_dirs = roots.into_iter().map(Into::into).collect();
        self
    }

    /// The limits of every plugin invocation: memory, deadline, output, fuel (the `plugin.*`
    /// keys).
    pub fn plugin_limits(mut self, limits: crate::runtime::PluginLimits) -> Self {
        self.config.plugin_limits = limits;
        self
    }

    /// Number of subtasks (default 1).
    pub fn parallelism(mut self, parallelism: u32) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Number of key groups (default: as Flink derives it from the parallelism, at least 128).
    /// Fixed for the life of the job's state: rescaling keeps it.
    pub fn max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = Some(max_parallelism);
        self
    }

    /// The slot (allocation) this process runs in: local copies are scoped to it (default
    /// `local`).
    pub fn allocation_id(mut self, id: impl Into<String>) -> Self {
        self.allocation_id = id.into();
        self
    }

    /// The operator whose state this host snapshots: a directory name under the local roots
    /// (default `operator`).
    pub fn operator_id(mut self, id: impl Into<String>) -> Self {
        self.operator_id = id.into();
        self
    }

    /// Where compiled plugins are cached (`None`: no cache). Default: the user's cache
    /// directory, when there is one.
    pub fn compiled_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.compiled_cache = Some(dir);
        self
    }

    /// Checks the settings, loads the plugin, opens checkpoint storage and removes checkpoints
    /// that never completed (written by a process that died mid-checkpoint).
    pub fn build(self) -> Result<SnapshotHost> {
        let mut config = self.config;
        for assignment in &self.overrides {
            config.apply_override(assignment)?;
        }
        if let Some(location) = &self.storage {
            config.checkpoint_storage = StorageLocation::parse(location)
                .map_err(|why| Error::msg(ErrorKind::Config, format!("checkpoint storage {location:?}: {why}")))?;
        }
        if self.parallelism == 0 {
            return Err(Error::msg(ErrorKind::Config, "parallelism must be at least 1"));
        }
        let max_parallelism = self.max_parallelism.unwrap_or_else(|| default_max_parallelism(self.parallelism));
        range_for_operator(max_parallelism, self.parallelism, 0)?;
        let plugin = match self.plugin {
            PluginSource::None => {
                return Err(Error::msg(
                    ErrorKind::Config,
                    "no strategy plugin: give one with plugin_file() or plugin()",
                ))
            }
            PluginSource::Loaded(plugin) => plugin,
            PluginSource::File(path) => {
                let cache = match self.compiled_cache {
                    Some(dir) => dir,
                    None => CompiledCache::default_dir(),
                };
                load_plugin(&path, &config, cache)?
            }
        };
        let storage = CheckpointStorage::open(
            &config.checkpoint_storage,
            &config.s3,
            &self.job_id,
            FileStreamFactory::DEFAULT_INLINE_THRESHOLD,
        )
        .map_err(|e| Error::from(e).context(format!("opening checkpoint storage {}", config.checkpoint_storage)))?;
        let removed = storage.remove_incomplete()?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed checkpoints that never completed");
        }
        // After the incomplete checkpoints: their shared uploads are now unreferenced too.
        storage.sweep_shared()?;
        let next_id = storage.completed_checkpoint_ids()?.last().map_or(1, |id| id + 1);
        let inner = Inner {
            job_id: self.job_id,
            allocation_id: self.allocation_id,
            operator_id: self.operator_id,
            parallelism: self.parallelism,
            max_parallelism,
            config,
            plugin,
            storage,
            next_id: AtomicU64::new(next_id),
        };
        Ok(SnapshotHost { inner: Arc::new(inner) })
    }
}

/// Loads the plugin at `path` with the limits, memory budget and fuel metering of `config`,
/// caching its compiled code in `cache` (a directory) when given.
pub(super) fn load_plugin(path: &Path, config: &Config, cache: Option<PathBuf>) -> Result<Arc<Plugin>> {
    let options = RuntimeOptions {
        fuel: config.plugin_limits.fuel.is_some(),
        cache: cache.map(CompiledCache::new),
        memory_budget: config.plugin_memory_budget,
    };
    let runtime = PluginRuntime::with_options(options)?;
    Ok(Arc::new(runtime.load(path, config.plugin_limits.clone())?))
}
