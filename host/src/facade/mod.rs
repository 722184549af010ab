//! The front door: [`SnapshotHost`] and the per-subtask and coordinator objects it hands out,
//! whose methods are the steps of a checkpoint and of a restore, in an order the types
//! enforce.
//!
//! - [`Coordinator::trigger`] starts a checkpoint and returns the [`CheckpointBarrier`] every
//!   subtask needs to take part in it: there is no other way to make one.
//! - [`Subtask::snapshot`] is the synchronous phase (a point-in-time view, `O(key groups)`);
//!   it returns a [`SnapshotTask`] that owns the view and is `Send`, to run on the caller's
//!   executor or a thread.
//! - [`SnapshotTask::run`] is the asynchronous phase: the plugin writes the primary and (with
//!   local recovery) the local copy; the local copy is stored before it returns, and what it
//!   returns, an [`Acknowledgement`], can only be made there.
//! - [`Coordinator::acknowledge`] collects acknowledgements; the last one writes the metadata
//!   atomically, confirms the local copies and retires subsumed checkpoints.
//! - [`SnapshotHost::recover`] restores every subtask from the newest restorable checkpoint,
//!   local copy first, primary as the ground truth, older retained checkpoints as fallback.

mod adapter;
mod builder;
mod coordinator;
pub mod metrics;
mod recovery;
mod subtask;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use adapter::MapState;
pub use builder::SnapshotHostBuilder;
pub use coordinator::{CheckpointBarrier, Coordinator};
pub use recovery::{RecoveredSubtask, Recovery, RestoreReport};
pub use subtask::{Acknowledgement, RestoredState, SnapshotTask, Subtask};

use crate::config::Config;
use crate::directories::LocalRecoveryDirectoryProvider;
use crate::error::{Error, ErrorKind, Result};
use crate::key_groups::KeyGroupRange;
use crate::local_store::{retain_allocations, TaskLocalStateStore};
use crate::runtime::{CompiledCache, Plugin};
use crate::storage::{CheckpointMetadata, CheckpointStorage};

/// Consistent snapshots of one job's state through a strategy plugin, with task-local
/// recovery: the entry point of the library.
///
/// Built once per job (per operator, in a multi-operator engine) with
/// [`SnapshotHost::builder`]; cheap to clone (all clones share the plugin, the storage and
/// the checkpoint-id sequence).
///
/// # Example
///
/// The whole protocol is in the [crate-level example](crate#example); the host alone:
///
/// ```
/// # fn main() -> snapshot_host::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// use snapshot_host::SnapshotHost;
///
/// let host = SnapshotHost::builder("clicks")
///     .plugin_file(snapshot_host::doc_plugin_path())
///     .checkpoint_storage(dir.path())
///     .parallelism(3)
///     .build()?;
/// assert_eq!(host.latest_checkpoint()?, None);
/// // Each key belongs to one subtask, whichever process runs it.
/// let owner = host.subtask_of_key(b"user-42");
/// assert!(host.key_group_range(owner)?.contains(snapshot_host::key_group_for_key(b"user-42", 128)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SnapshotHost {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    job_id: String,
    allocation_id: String,
    operator_id: String,
    parallelism: u32,
    max_parallelism: u32,
    config: Config,
    plugin: Arc<Plugin>,
    storage: CheckpointStorage,
    /// The next checkpoint id: above every id this job's storage held when the host was built,
    /// so that a new checkpoint never reuses the id of one that exists or was moved aside.
    next_id: AtomicU64,
}

impl SnapshotHost {
    /// A builder for the job `job_id` (a directory name in checkpoint storage and in the local
    /// recovery directories).
    pub fn builder(job_id: impl Into<String>) -> SnapshotHostBuilder {
        SnapshotHostBuilder::new(job_id.into())
    }

    /// Loads a strategy plugin with the limits, memory budget and fuel metering of `config`,
    /// caching compiled code in the user's cache directory: to share one plugin between hosts
    /// ([`SnapshotHostBuilder::plugin`]) or to inspect it before building one.
    pub fn load_plugin(path: impl AsRef<std::path::Path>, config: &Config) -> Result<Arc<Plugin>> {
        builder::load_plugin(path.as_ref(), config, CompiledCache::default_dir())
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.inner.job_id
    }

    /// Number of subtasks.
    pub fn parallelism(&self) -> u32 {
        self.inner.parallelism
    }

    /// Number of key groups (the most subtasks the state can ever be split into).
    pub fn max_parallelism(&self) -> u32 {
        self.inner.max_parallelism
    }

    /// The configuration in effect (defaults, file, overrides and builder settings merged).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The strategy plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.inner.plugin
    }

    /// The job's durable checkpoint storage: list completed checkpoints, read their metadata.
    pub fn checkpoints(&self) -> &CheckpointStorage {
        &self.inner.storage
    }

    /// The metadata of the newest completed checkpoint, if any (not verified beyond its own
    /// checksum: a restore verifies the state).
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointMetadata>> {
        Ok(self.inner.storage.latest_completed()?)
    }

    /// The metadata of completed checkpoint `id`.
    pub fn checkpoint(&self, id: u64) -> Result<CheckpointMetadata> {
        self.inner.storage.read_metadata(id).map_err(|e| Error::from(e).context(format!("reading checkpoint {id}")))
    }

    /// The key groups subtask `index` owns.
    pub fn key_group_range(&self, index: u32) -> Result<KeyGroupRange> {
        Ok(crate::key_groups::range_for_operator(self.inner.max_parallelism, self.inner.parallelism, index)?)
    }

    /// The subtask whose key groups hold `key` (to route records, or to split an engine's own
    /// map between subtasks).
    pub fn subtask_of_key(&self, key: &[u8]) -> u32 {
        let (p, m) = (self.inner.parallelism, self.inner.max_parallelism);
        crate::key_groups::operator_for_key_group(m, p, crate::key_groups::key_group_for_key(key, m))
    }

    /// Subtask `index`: takes its snapshots and restores its state. Opening it loads the local
    /// copies an earlier process left for it (with local recovery).
    pub fn subtask(&self, index: u32) -> Result<Subtask> {
        if index >= self.inner.parallelism {
            return Err(Error::msg(
                ErrorKind::Usage,
                format!("subtask {index} does not exist: the job has parallelism {}", self.inner.parallelism),
            ));
        }
        let range = self.key_group_range(index)?;
        let store = Arc::new(self.open_local_store(index, self.inner.config.local_recovery.enabled)?);
        Ok(Subtask::new(self.clone(), index, range, store))
    }

    /// Subtask `index` without local copies: it restores from the primary and writes none.
    fn primary_only_subtask(&self, index: u32) -> Result<Subtask> {
        let range = self.key_group_range(index)?;
        Ok(Subtask::new(self.clone(), index, range, Arc::new(self.open_local_store(index, false)?)))
    }

    fn open_local_store(&self, index: u32, enabled: bool) -> Result<TaskLocalStateStore> {
        let local = &self.inner.config.local_recovery;
        let provider = LocalRecoveryDirectoryProvider::new(
            &local.root_dirs,
            &self.inner.allocation_id,
            &self.inner.job_id,
            &self.inner.operator_id,
            index,
        )
        .map_err(|e| Error::new(ErrorKind::Config, e).context("opening the local recovery directories"))?;
        Ok(TaskLocalStateStore::open(provider, enabled))
    }

    /// Deletes the local state of every allocation other than this host's under the local
    /// roots (left by an earlier process with other slots, it would only fill the disk).
    /// Returns the directories removed. Only call it when this process owns the roots alone.
    pub fn remove_foreign_local_state(&self) -> Vec<PathBuf> {
        let local = &self.inner.config.local_recovery;
        if !local.enabled {
            return Vec::new();
        }
        retain_allocations(&local.root_dirs, &[self.inner.allocation_id.as_str()])
    }

    /// Discards this job's local copies for every subtask (as when the machine holding them is
    /// lost). The primary is untouched: a restore then reads it.
    pub fn delete_local_state(&self) -> Result<()> {
        for index in 0..self.inner.parallelism {
            self.open_local_store(index, true)?.dispose();
        }
        Ok(())
    }

    fn next_checkpoint_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::SeqCst)
    }

    fn advance_checkpoint_ids_past(&self, id: u64) {
        self.inner.next_id.fetch_max(id + 1, Ordering::SeqCst);
    }

    /// Whether `other` is this host (or a clone of it).
    fn same_as(&self, other: &SnapshotHost) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The plugin an example runs with: its first argument when that names a `.wasm` file, else
/// [`doc_plugin_path`]. The examples also run as tests, where the arguments are the test
/// harness's (`--quiet`, a name filter), not a plugin.
#[doc(hidden)]
pub fn example_plugin_path() -> PathBuf {
    std::env::args().nth(1).filter(|a| a.ends_with(".wasm")).map(PathBuf::from).unwrap_or_else(doc_plugin_path)
}

/// The plugin the crate's documentation examples use: `full-keyed`, as `scripts/setup.sh`
/// builds it into the workspace's target directory.
#[doc(hidden)]
pub fn doc_plugin_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip2/plugin/full_keyed.wasm")
}
