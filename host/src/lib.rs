//! Consistent snapshots of stream-processing state, written by a sandboxed WebAssembly
//! strategy plugin, with task-local recovery.
//!
//! An engine hands the host its state; the host asks the plugin to serialize it into
//! checkpoint streams that go to durable storage (the *primary*: a directory, S3-compatible
//! object storage, or memory) and, with local recovery, to a copy on the local disk at the
//! same time. A restore prefers the local copy, falls back to the primary, and verifies every
//! byte against the checksums recorded while writing. The primary is the ground truth: losing
//! the local copy never loses data.
//!
//! # The protocol, carried by types
//!
//! Start from [`SnapshotHost::builder`]. A checkpoint is four steps, each of which can only be
//! taken with what the previous one returned:
//!
//! 1. [`Coordinator::trigger`] → a [`CheckpointBarrier`] for every subtask;
//! 2. [`Subtask::snapshot`] (synchronous: a point-in-time view) → a [`SnapshotTask`];
//! 3. [`SnapshotTask::run`] (asynchronous: the plugin writes primary and local copy; the local
//!    copy is stored before it returns) → an [`Acknowledgement`];
//! 4. [`Coordinator::acknowledge`]: the last one writes the metadata atomically, confirms the
//!    local copies and retires subsumed checkpoints → a [`CompletedCheckpoint`].
//!
//! [`SnapshotHost::recover`] starts a job: every subtask restored from the newest checkpoint
//! that can be restored (local first, then primary, then older retained checkpoints), with a
//! fresh [`Coordinator`] for the next ones.
//!
//! # Example
//!
//! A subtask's keyed state snapshotted through a plugin to the primary plus a local copy, then
//! restored from each:
//!
//! ```
//! # fn main() -> snapshot_host::Result<()> {
//! # let plugin = snapshot_host::doc_plugin_path();
//! # let dir = tempfile::tempdir()?;
//! use snapshot_host::{RestoreSource, SnapshotHost, StateKind};
//!
//! let host = SnapshotHost::builder("orders")
//!     .plugin_file(&plugin) // a strategy component, e.g. plugins/full-keyed
//!     .checkpoint_storage(dir.path().join("checkpoints")) // or "s3://bucket/prefix"
//!     .local_recovery([dir.path().join("local")])
//!     .parallelism(1)
//!     .build()?;
//!
//! // Start: nothing to restore yet. Write some state.
//! let mut job = host.recover()?;
//! let mut task = job.subtasks.remove(0);
//! let count = task.keyed.register_state("count", StateKind::Value)?;
//! task.keyed.put(count, b"apples", b"", &3u64.to_le_bytes())?;
//!
//! // One checkpoint at source offset 1000.
//! let barrier = job.coordinator.trigger(1_000).expect("nothing else in flight");
//! let write = task.subtask.snapshot(&barrier, &task.keyed, &task.operators);
//! // The backend may change now; the snapshot runs elsewhere.
//! task.keyed.put(count, b"apples", b"", &4u64.to_le_bytes())?;
//! let ack = std::thread::spawn(move || write.run()).join().unwrap()?;
//! let completed = job.coordinator.acknowledge(ack)?.expect("the only subtask acknowledged");
//! assert_eq!(completed.metadata.source_offset, 1_000);
//!
//! // A restart restores the checkpointed value from the local copy...
//! let restored = host.recover()?;
//! let subtask = &restored.subtasks[0];
//! assert_eq!(subtask.report.source, RestoreSource::Local);
//! let count = subtask.keyed.state_index("count")?;
//! assert_eq!(subtask.keyed.get(count, b"apples", b"")?, Some(&3u64.to_le_bytes()[..]));
//!
//! // ...and from the primary once the local copy is gone.
//! host.delete_local_state()?;
//! let restored = host.recover()?;
//! assert_eq!(restored.subtasks[0].report.source, RestoreSource::Primary);
//! assert_eq!(restored.checkpoint.unwrap().checkpoint_id, completed.metadata.checkpoint_id);
//! # Ok(()) }
//! ```
//!
//! More in `host/examples/`: embedding in your own loop, restoring after a crash, rescaling,
//! and an engine's own map as state.
//!
//! # The public surface
//!
//! The crate root re-exports what an embedder needs: the facade ([`SnapshotHost`] and the
//! objects it hands out), the state backends the plugin reads ([`KeyedStateBackend`],
//! [`OperatorStateBackend`]), the checkpoint records ([`CheckpointMetadata`],
//! [`CompletedCheckpoint`]), configuration ([`Config`], module [`config`] for the keys) and the
//! one error type ([`Error`], [`ErrorKind`]). The [`harness`] module is the reference host
//! harness plugin authors test against; [`plugin`] has the tools to inspect and precompile
//! plugins; [`inspect`] lists, verifies and decodes checkpoints from outside a job (the CLI's
//! `checkpoint` commands); [`metrics`] names the checkpoint metrics the host records through the
//! `metrics` facade (Flink's names). Every other module is an implementation detail, hidden
//! from the documentation and free to change.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod config;
mod error;
mod facade;
pub mod harness;
mod incremental;
pub mod inspect;

/// Tools for strategy plugins themselves, for programs that inspect, precompile or test them
/// (the CLI's `plugin info` and `plugin compile` are written with this): loading with explicit
/// runtime options, the sandbox's WASI grants, the compiled-code cache and the WIT version the
/// host implements. Embedding needs none of it: [`SnapshotHostBuilder::plugin_file`] loads
/// the plugin.
pub mod plugin {
    pub use crate::runtime::{
        grant_of, CacheOutcome, CompiledCache, Grant, Plugin, PluginError, PluginInfo, PluginLimits, PluginRuntime,
        RuntimeOptions, WASI_POLICY, WIT_LEGACY_VERSION, WIT_PACKAGE, WIT_VERSION, WIT_VERSIONS,
    };
}

#[doc(hidden)]
pub mod backend;
#[doc(hidden)]
pub mod changes;
#[doc(hidden)]
pub mod checksum;
#[doc(hidden)]
pub mod coordinator;
#[doc(hidden)]
pub mod directories;
#[doc(hidden)]
pub mod duplicating;
#[doc(hidden)]
pub mod fsutil;
#[doc(hidden)]
pub mod handles;
#[doc(hidden)]
pub mod key_groups;
#[doc(hidden)]
pub mod local_store;
#[doc(hidden)]
pub mod operator_backend;
#[doc(hidden)]
pub mod repartition;
#[doc(hidden)]
pub mod restore;
#[doc(hidden)]
pub mod result;
#[doc(hidden)]
pub mod result_provider;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod snapshot_directory;
#[doc(hidden)]
pub mod storage;
#[doc(hidden)]
pub mod streams;

pub use backend::{KeyedStateBackend, StateKind, StateValue};
pub use config::Config;
pub use coordinator::{AbortReason, CheckpointStats, CompletedCheckpoint};
pub use error::{Error, ErrorKind, Result};
pub use facade::metrics;
#[doc(hidden)]
pub use facade::{doc_plugin_path, example_plugin_path};
pub use facade::{
    Acknowledgement, CheckpointBarrier, Coordinator, MapState, RecoveredSubtask, Recovery, RestoreReport,
    RestoredState, SnapshotHost, SnapshotHostBuilder, SnapshotTask, Subtask,
};
pub use handles::DistributionMode;
pub use key_groups::{default_max_parallelism, key_group_for_key, KeyGroupRange};
pub use operator_backend::OperatorStateBackend;
pub use restore::RestoreSource;
pub use runtime::{CancelToken, Plugin, PluginInfo, PluginLimits};
pub use storage::s3::Secret;
pub use storage::{CheckpointMetadata, CheckpointStorage, S3Settings, StorageLocation, SubtaskState};
