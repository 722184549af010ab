//! A loaded strategy plugin and its invocations.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, Resource, ResourceTableError};
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{WIT_PACKAGE, WIT_VERSIONS};
use super::budget::MemoryBudget;
use super::cancel::CancelToken;
use super::error::PluginError;
use super::input::InputStreamResource;
use super::keyed_state::{to_wit_part, KeyedStateViewResource, RestoreSinkResource};
use super::limits::PluginLimits;
use super::operator_state::{to_wit_mode, OperatorSinkResource, OperatorStateViewResource};
use super::output::OutputStreamResource;
use super::store::{HostFailure, InvocationState};
use super::versions::{imported_version, StrategyInstance, StrategyPre};
use super::wasi::grant_of;
use super::PluginRuntime;
use crate::backend::{KeyedSnapshot, KeyedStateBackend};
use crate::handles::{
    GroupPart, KeyGroupRangeOffsets, KeyGroupsStateHandle, KeyedRestorePiece, OperatorPartitions, SegmentChecksums,
    SegmentVerifier, StreamStateHandle, VerifyError,
};
use crate::operator_backend::{OperatorSnapshot, OperatorStateBackend};
use crate::repartition::OperatorStreamAssignment;
use crate::streams::CheckpointOutputStream;

/// What a plugin says about itself, plus what the host knows of it. Stored with every
/// checkpoint so a restore can refuse a checkpoint written in another format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The strategy's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The format identifier.
    pub format: String,
    /// The format version.
    pub format_version: u32,
    /// Whether equal state gives identical bytes.
    pub deterministic: bool,
    /// SHA-256 of the component file, hex.
    pub content_hash: String,
    /// Whether the strategy writes and restores deltas (0.2.0 strategies that say so). A
    /// property of the loaded plugin, not of a checkpoint: not stored.
    #[serde(skip)]
    pub incremental: bool,
    /// The version of `snapshot:strategy` the plugin was built against. Not stored.
    #[serde(skip)]
    pub wit_version: &'static str,
}

/// A loaded, validated plugin, ready to be invoked any number of times (also concurrently:
/// every invocation has its own store).
pub struct Plugin {
    source: PathBuf,
    pre: StrategyPre,
    info: PluginInfo,
    imports: Vec<String>,
    limits: PluginLimits,
    fuel_metering: bool,
    peak_memory: Arc<AtomicUsize>,
    memory_budget: Arc<MemoryBudget>,
    verify_checksums: bool,
    /// Keeps the epoch ticker (deadlines, cancellation) running while the plugin lives.
    _ticker: Arc<super::Ticker>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("source", &self.source).field("info", &self.info).finish_non_exhaustive()
    }
}

/// A keyed snapshot's stream (still open) and the key-group offsets the host recorded.
pub type KeyedOutput = (Box<dyn CheckpointOutputStream>, KeyGroupRangeOffsets);
/// An operator snapshot's stream (still open), the partition offsets the host recorded, and
/// the checksum of every partition's bytes.
pub type OperatorOutput = (Box<dyn CheckpointOutputStream>, OperatorPartitions, Arc<SegmentChecksums>);

/// How much an instance's linear memory may grow during a keyed restore before the next key
/// group is restored by a fresh instance (see `restore_keyed_cancellable`).
const RECYCLE_AFTER_GROWTH: usize = 8 << 20;

const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

fn runtime_err(e: ResourceTableError) -> PluginError {
    PluginError::Runtime(e.to_string())
}

impl PluginRuntime {
    /// Loads the plugin at `path` with `limits`.
    pub fn load(&self, path: &Path, limits: PluginLimits) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_path_buf(), source })?;
        self.load_bytes(path, &bytes, limits)
    }

    /// Loads a plugin from `bytes`; `source` names it in errors.
    pub fn load_bytes(&self, source: &Path, bytes: &[u8], limits: PluginLimits) -> Result<Plugin, PluginError> {
        let path = source.to_path_buf();
        if bytes.len() < 8 || bytes[..4] != COMPONENT_HEADER[..4] {
            return Err(PluginError::NotWasm { path });
        }
        if bytes[4..8] == MODULE_VERSION {
            return Err(PluginError::CoreModule { path });
        }
        if bytes[4..8] != COMPONENT_HEADER[4..8] {
            let reason = format!("unknown WebAssembly version/layer bytes {:02x?}", &bytes[4..8]);
            return Err(PluginError::Invalid { path, reason });
        }
        if limits.fuel.is_some() && !self.options.fuel {
            return Err(PluginError::Runtime(format!(
                "plugin {}: a fuel limit needs a runtime created with fuel metering (RuntimeOptions::fuel)",
                path.display()
            )));
        }
        let compiled = self.compile(bytes).map(|(component, outcome)| {
            tracing::debug!(plugin = %path.display(), ?outcome, "compiled-plugin cache");
            component
        });
        let component = compiled.map_err(|e| PluginError::Invalid { path: path.clone(), reason: format!("{e:#}") })?;
        let content_hash = sha256_hex(bytes);
        self.prepare(path, component, content_hash, limits)
    }

    fn prepare(
        &self,
        path: PathBuf,
        component: Component,
        content_hash: String,
        limits: PluginLimits,
    ) -> Result<Plugin, PluginError> {
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        // Plain names are the world's own type imports (`use` in the world); interfaces carry
        // a package name. Linking checks the former, the WASI policy the latter.
        check_imports(&path, imports.iter().filter(|i| i.contains(':')))?;
        let incompatible =
            |reason: String| PluginError::Incompatible { path: path.clone(), host_version: HOST_VERSIONS, reason };
        let wit_version = imported_version(imports.iter());
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| incompatible(format!("{e:#}")))?;
        let pre = StrategyPre::new(wit_version, instance_pre).map_err(|e| {
            incompatible(format!("it does not export the functions of the strategy world @{wit_version}: {e:#}"))
        })?;
        let mut plugin = Plugin {
            source: path.clone(),
            pre,
            info: PluginInfo {
                name: display_name(&path),
                version: String::new(),
                format: String::new(),
                format_version: 0,
                deterministic: false,
                content_hash,
                incremental: false,
                wit_version,
            },
            imports,
            limits,
            fuel_metering: self.options.fuel,
            peak_memory: Arc::default(),
            memory_budget: self.memory.clone(),
            verify_checksums: true,
            _ticker: self.ticker.clone(),
        };
        let described = plugin.invoke("describe", |store, strategy| strategy.call_describe(store))?.0;
        let reason = if described.name.trim().is_empty() {
            Some("the name is empty")
        } else if described.format.trim().is_empty() {
            Some("the format identifier is empty")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PluginError::BadDescription { path, reason: reason.into() });
        }
        plugin.info.name = described.name;
        plugin.info.version = described.version;
        plugin.info.format = described.format;
        plugin.info.format_version = described.format_version;
        plugin.info.deterministic = described.deterministic;
        plugin.info.incremental = described.incremental;
        tracing::debug!(plugin = %plugin.info.name, source = %plugin.source.display(), "plugin loaded");
        Ok(plugin)
    }
}

/// Refuses strategy interfaces of an incompatible version, and interfaces the host does not
/// link (neither the strategy world nor WASI 0.2), with an error that names every one.
fn check_imports<'a>(path: &Path, imports: impl Iterator<Item = &'a String>) -> Result<(), PluginError> {
    let mut unlinked = Vec::new();
    for import in imports {
        if let Some(rest) = import.strip_prefix(WIT_PACKAGE).and_then(|r| r.strip_prefix('/')) {
            let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
            // Within 0.x a minor version is a major one: 0.2.1 links as 0.2.0, 0.3.0 does not.
            let linked = WIT_VERSIONS.iter().any(|host| {
                let host_minor = host.rsplit_once('.').map(|(mm, _)| mm).unwrap_or(host);
                version.starts_with(&format!("{host_minor}."))
            });
            if !linked {
                let built = if version.is_empty() { "<unversioned>" } else { version };
                return Err(PluginError::Incompatible {
                    path: path.to_path_buf(),
                    host_version: HOST_VERSIONS,
                    reason: format!("it was built against {WIT_PACKAGE}@{built} (import {import})"),
                });
            }
        } else if grant_of(import).is_none() {
            unlinked.push(import.clone());
        }
    }
    if unlinked.is_empty() {
        Ok(())
    } else {
        Err(PluginError::Capability { path: path.to_path_buf(), imports: unlinked })
    }
}

/// The versions named in incompatibility errors.
const HOST_VERSIONS: &str = "0.2.0 and 0.1.0";

fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Plugin {
    /// What the plugin said about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Every interface the component imports.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The limits its invocations run under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// The largest linear memory any invocation of this plugin reached so far, in bytes.
    pub fn peak_memory(&self) -> usize {
        self.peak_memory.load(Ordering::Relaxed)
    }

    /// Turns restore verification off or on. Only for measuring what verification costs
    /// (`snapshot-host bench`): a restore without it may return corrupt state.
    #[doc(hidden)]
    pub fn set_verify_checksums_for_benchmarks(&mut self, verify: bool) {
        self.verify_checksums = verify;
    }

    /// Forgets the recorded peak memory (to measure one operation).
    pub fn reset_peak_memory(&self) {
        self.peak_memory.store(0, Ordering::Relaxed);
    }

    /// A fresh store for one invocation, with the limits, the deadline and `cancel` armed.
    fn new_store(&self, cancel: &CancelToken) -> Store<InvocationState> {
        let state =
            InvocationState::new(&self.limits, cancel.clone(), self.peak_memory.clone(), self.memory_budget.clone());
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        // Checked at every epoch tick (at loop back-edges and function entries), so a guest is
        // interrupted within about one tick of a cancellation or of its deadline, even in a
        // tight loop.
        store.set_epoch_deadline(1);
        let timeout = self.limits.timeout;
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            if state.cancel.is_cancelled() {
                state.fail(HostFailure::Cancelled);
                return Ok(UpdateDeadline::Interrupt);
            }
            if std::time::Instant::now() >= state.deadline {
                state.fail(HostFailure::Limit(format!("exceeded the time limit of {timeout:?}")));
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        if self.fuel_metering {
            // Fails only when fuel metering is off, which was checked above.
            let _ = store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        }
        store
    }

    /// Calls `describe()` on a fresh instance: what the plugin says of itself now, to compare
    /// with what it said when it was loaded (a strategy must describe itself the same way
    /// every time; the host records the description with each checkpoint).
    pub fn describe_fresh(&self) -> Result<PluginInfo, PluginError> {
        let described = self.invoke("describe", |store, strategy| strategy.call_describe(store))?.0;
        Ok(PluginInfo {
            name: described.name,
            version: described.version,
            format: described.format,
            format_version: described.format_version,
            deterministic: described.deterministic,
            content_hash: self.info.content_hash.clone(),
            incremental: described.incremental,
            wit_version: self.info.wit_version,
        })
    }

    /// Instantiates the plugin in a fresh store and drops it: the per-invocation cost, for
    /// measurements.
    pub fn instantiate_once(&self) -> Result<(), PluginError> {
        let mut store = self.new_store(&CancelToken::new());
        self.pre.instantiate(&mut store).map(|_| ()).map_err(|e| self.trap_error("instantiation", e, &mut store))
    }

    /// Runs `call` on a fresh instance. Maps traps, and host failures the guest may have
    /// swallowed, to errors; forwards guest output to `tracing`.
    fn invoke<R>(
        &self,
        operation: &str,
        call: impl FnOnce(&mut Store<InvocationState>, &StrategyInstance) -> wasmtime::Result<R>,
    ) -> Result<(R, Store<InvocationState>), PluginError> {
        let mut store = self.new_store(&CancelToken::new());
        let result = self.pre.instantiate(&mut store).and_then(|strategy| call(&mut store, &strategy));
        forward_guest_output(&self.info.name, &store);
        match result {
            Ok(r) => Ok((r, store)),
            Err(e) => Err(self.trap_error(operation, e, &mut store)),
        }
    }

    fn trap_error(&self, operation: &str, error: wasmtime::Error, store: &mut Store<InvocationState>) -> PluginError {
        // A trap the host caused on purpose (a limit, a cancellation) is reported as such.
        if let Some(failure) = store.data_mut().first_failure.take() {
            return self.failure_error(operation, failure);
        }
        let (plugin, operation) = (self.info.name.clone(), operation.to_string());
        if let Some(message) = store.data_mut().limits.denied.take() {
            return PluginError::Limit { plugin, operation, message };
        }
        let rendered = format!("{error:#}");
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => {
                let message = format!("exceeded the time limit of {:?}", self.limits.timeout);
                return PluginError::Limit { plugin, operation, message };
            }
            Some(wasmtime::Trap::OutOfFuel) => {
                let message = format!("exceeded its fuel limit of {}", self.limits.fuel.unwrap_or(u64::MAX));
                return PluginError::Limit { plugin, operation, message };
            }
            _ if rendered.contains("growing memory") || rendered.contains("memory limit") => {
                let message = format!(
                    "exceeded the memory limit of {} bytes ({})",
                    self.limits.memory_bytes,
                    crate::config::PLUGIN_MEMORY
                );
                return PluginError::Limit { plugin, operation, message };
            }
            _ => {}
        }
        // wasmtime's "resource limit exceeded: instance count too high at 39": name the key.
        for (what, plural, limit, key) in [
            ("instance", "core instances", self.limits.instances, crate::config::PLUGIN_MAX_INSTANCES),
            ("table", "tables", self.limits.tables, crate::config::PLUGIN_MAX_TABLES),
            ("memory", "linear memories", self.limits.memories, crate::config::PLUGIN_MAX_MEMORIES),
        ] {
            if rendered.contains(&format!("{what} count too high")) {
                let message = format!("needs more than {limit} {plural} per invocation ({key})");
                return PluginError::Limit { plugin, operation, message };
            }
        }
        let guest_output = String::from_utf8_lossy(&store.data().stderr.contents().0).into_owned();
        // A guest whose allocation failed aborts with this message on stderr.
        if guest_output.contains("memory allocation of") {
            let message = format!(
                "ran out of memory (limit {} bytes): {}",
                self.limits.memory_bytes,
                guest_output.lines().find(|l| l.contains("memory allocation of")).unwrap_or("").trim()
            );
            return PluginError::Limit { plugin, operation, message };
        }
        let (message, backtrace, guest_output) = describe_trap(&error, &guest_output);
        PluginError::Trap { plugin, operation, message, backtrace, guest_output }
    }

    fn failure_error(&self, operation: &str, failure: HostFailure) -> PluginError {
        let (plugin, operation) = (self.info.name.clone(), operation.to_string());
        match failure {
            HostFailure::Storage(source) => PluginError::Storage { plugin, operation, source },
            HostFailure::Contract(message) => PluginError::Contract { plugin, operation, message },
            HostFailure::Limit(message) => PluginError::Limit { plugin, operation, message },
            HostFailure::Cancelled => PluginError::Cancelled { plugin, operation },
            HostFailure::Corrupt(mismatch) => PluginError::Corrupt { operation, source: mismatch.into() },
        }
    }

    /// Settles a guest call's outcome against what the host recorded: a host failure wins
    /// (even if the strategy ignored it), then the strategy's own error.
    fn settle(
        &self,
        operation: &str,
        outcome: Result<(), String>,
        store: &mut Store<InvocationState>,
    ) -> Result<(), PluginError> {
        if let Some(failure) = store.data_mut().first_failure.take() {
            return Err(self.failure_error(operation, failure));
        }
        outcome.map_err(|message| PluginError::Failed {
            plugin: self.info.name.clone(),
            operation: operation.to_string(),
            message,
        })
    }

    /// Runs the strategy's snapshot of `snapshot` into `out`. Returns the stream, still open
    /// (closing is the caller's act: it decides how a duplicated stream is finalized), and the
    /// key-group offsets the host recorded. On error the stream is dropped, which discards it.
    pub fn snapshot_keyed(
        &self,
        snapshot: KeyedSnapshot,
        out: Box<dyn CheckpointOutputStream>,
    ) -> Result<KeyedOutput, PluginError> {
        self.snapshot_keyed_cancellable(snapshot, out, &CancelToken::new())
    }

    /// [`snapshot_keyed`](Self::snapshot_keyed) that `cancel` can interrupt at any moment.
    pub fn snapshot_keyed_cancellable(
        &self,
        snapshot: KeyedSnapshot,
        out: Box<dyn CheckpointOutputStream>,
        cancel: &CancelToken,
    ) -> Result<KeyedOutput, PluginError> {
        self.snapshot_keyed_parts(snapshot, None, out, cancel)
    }

    /// [`snapshot_keyed_cancellable`](Self::snapshot_keyed_cancellable) asking for `parts[i]`
    /// of the `i`-th key group of the snapshot's range (`None`: every group in full). A delta is
    /// asked for only from an incremental strategy, and only when the snapshot has a change
    /// base; otherwise the group is asked for in full.
    pub fn snapshot_keyed_parts(
        &self,
        snapshot: KeyedSnapshot,
        parts: Option<Vec<GroupPart>>,
        out: Box<dyn CheckpointOutputStream>,
        cancel: &CancelToken,
    ) -> Result<KeyedOutput, PluginError> {
        let operation = "snapshot";
        let range = snapshot.key_group_range();
        let mut store = self.new_store(cancel);
        let table = &mut store.data_mut().table;
        let view = match parts {
            Some(parts) if self.info.incremental => KeyedStateViewResource::with_parts(snapshot, parts),
            _ => KeyedStateViewResource::new(snapshot),
        };
        let view = table.push(view).map_err(runtime_err)?;
        let output =
            table.push(OutputStreamResource::new(out, range, self.limits.max_output_bytes)).map_err(runtime_err)?;
        let (view_rep, output_rep) = (view.rep(), output.rep());
        let result = self.pre.instantiate(&mut store).and_then(|strategy| {
            strategy.call_snapshot_keyed(&mut store, Resource::new_borrow(view_rep), Resource::new_borrow(output_rep))
        });
        forward_guest_output(&self.info.name, &store);
        let outcome = result.map_err(|e| self.trap_error(operation, e, &mut store))?;
        self.settle(operation, outcome, &mut store)?;
        let output = store.data_mut().table.delete(output).map_err(runtime_err)?;
        output.finish().map_err(|message| PluginError::Contract {
            plugin: self.info.name.clone(),
            operation: operation.into(),
            message,
        })
    }

    /// Restores the key groups of `handle` that `backend` owns into `backend`, one strategy
    /// call per key group on one instance. The backend is consumed on failure: a failed
    /// restore attempt leaves nothing half-restored behind.
    ///
    /// Every byte the strategy reads is verified against the segment checksums recorded when
    /// the snapshot was written, and so is each restored key group's segment even if the
    /// strategy did not read all of it. A mismatch fails the restore with
    /// [`PluginError::Corrupt`], whatever the strategy made of the damaged bytes.
    pub fn restore_keyed(
        &self,
        handle: &KeyGroupsStateHandle,
        backend: KeyedStateBackend,
    ) -> Result<KeyedStateBackend, PluginError> {
        self.restore_keyed_cancellable(handle, backend, &CancelToken::new())
    }

    /// [`restore_keyed`](Self::restore_keyed) that `cancel` can interrupt.
    pub fn restore_keyed_cancellable(
        &self,
        handle: &KeyGroupsStateHandle,
        backend: KeyedStateBackend,
        cancel: &CancelToken,
    ) -> Result<KeyedStateBackend, PluginError> {
        self.restore_keyed_piece(&KeyedRestorePiece::full(handle.clone(), self.info.format_version), backend, cancel)
    }

    /// Restores from one keyed stream the part `piece` names of each of its key groups that
    /// `backend` owns (a full group, or one delta of a chain), telling the strategy the part
    /// and the format version that wrote it. Otherwise as [`restore_keyed`](Self::restore_keyed).
    pub fn restore_keyed_piece(
        &self,
        piece: &KeyedRestorePiece,
        backend: KeyedStateBackend,
        cancel: &CancelToken,
    ) -> Result<KeyedStateBackend, PluginError> {
        let handle = &piece.handle;
        let Some(part) = handle.intersection(&backend.key_group_range()) else {
            return Ok(backend);
        };
        let groups: Vec<(u32, u64, GroupPart)> =
            part.offsets().iter().filter_map(|(kg, offset)| piece.part(kg).map(|p| (kg, offset, p))).collect();
        if groups.is_empty() {
            return Ok(backend);
        }
        let described = handle.stream().describe();
        let operation = |kg: u32| format!("restore of key group {kg} from {described}");
        let input =
            self.open_verified(handle.stream(), handle.offsets().checksums(), &format!("restore from {described}"))?;
        let mut store = self.new_store(cancel);
        let mut input = store.data_mut().table.push(input).map_err(runtime_err)?;
        let mut sink = store.data_mut().table.push(RestoreSinkResource::new(backend)).map_err(runtime_err)?;
        let mut strategy = match self.pre.instantiate(&mut store) {
            Ok(s) => s,
            Err(e) => return Err(self.trap_error("instantiation for restore", e, &mut store)),
        };
        let mut instantiated_at = store.data().limits.reserved();
        for (index, &(key_group, offset, group_part)) in groups.iter().enumerate() {
            // Some guest toolchains never give back what the host hands them during a call
            // (componentize-py keeps every `read` result): a restore that ran one instance
            // over every group would hold the whole handle in guest memory. Once an instance
            // grew this much, the next group gets a fresh one; input and sink carry over.
            if index > 0 && store.data().limits.reserved() > instantiated_at + RECYCLE_AFTER_GROWTH {
                forward_guest_output(&self.info.name, &store);
                let kept_input = store.data_mut().table.delete(input).map_err(runtime_err)?;
                let kept_sink = store.data_mut().table.delete(sink).map_err(runtime_err)?;
                store = self.new_store(cancel);
                input = store.data_mut().table.push(kept_input).map_err(runtime_err)?;
                sink = store.data_mut().table.push(kept_sink).map_err(runtime_err)?;
                strategy = match self.pre.instantiate(&mut store) {
                    Ok(s) => s,
                    Err(e) => return Err(self.trap_error("instantiation for restore", e, &mut store)),
                };
                instantiated_at = store.data().limits.reserved();
            }
            if cancel.is_cancelled() {
                return Err(PluginError::Cancelled { plugin: self.info.name.clone(), operation: operation(key_group) });
            }
            let data = store.data_mut();
            if let Err(e) = data.table.get_mut(&input).map_err(runtime_err)?.seek(offset) {
                return Err(PluginError::Storage {
                    plugin: self.info.name.clone(),
                    operation: operation(key_group),
                    source: e,
                });
            }
            data.table.get_mut(&sink).map_err(runtime_err)?.set_key_group(key_group);
            let (input_rep, sink_rep) = (Resource::new_borrow(input.rep()), Resource::new_borrow(sink.rep()));
            let wit_part = to_wit_part(group_part);
            let result = strategy.call_restore_key_group(
                &mut store,
                key_group,
                wit_part,
                piece.format_version,
                input_rep,
                sink_rep,
            );
            self.settle_restore(&operation(key_group), result, &mut store, &input, offset)?;
        }
        self.verify_rest(&format!("restore from {described}"), &mut store, &input)?;
        forward_guest_output(&self.info.name, &store);
        let sink = store.data_mut().table.delete(sink).map_err(runtime_err)?;
        Ok(sink.into_backend())
    }

    /// Opens `stream` for a restore, refusing one whose checksums do not cover it (it could
    /// not be verified).
    fn open_verified(
        &self,
        stream: &StreamStateHandle,
        checksums: &Arc<SegmentChecksums>,
        operation: &str,
    ) -> Result<InputStreamResource, PluginError> {
        let described = stream.describe();
        if self.verify_checksums && checksums.covered() != stream.size() {
            let source = VerifyError::Unverifiable {
                stream: described,
                reason: format!(
                    "its handle records checksums for {} of its {} bytes",
                    checksums.covered(),
                    stream.size()
                ),
            };
            return Err(PluginError::Corrupt { operation: operation.to_string(), source });
        }
        let input = stream.open().map_err(|e| match e {
            // A file whose size differs from the recorded one was truncated or replaced.
            crate::handles::HandleError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
                PluginError::Corrupt {
                    operation: operation.to_string(),
                    source: VerifyError::Io { stream: described.clone(), source },
                }
            }
            other => PluginError::Storage {
                plugin: self.info.name.clone(),
                operation: operation.to_string(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        let verifier = if self.verify_checksums {
            SegmentVerifier::new(described, checksums.clone())
        } else {
            SegmentVerifier::new(described, Arc::default())
        };
        Ok(InputStreamResource::new(input, verifier))
    }

    /// Before a restore succeeds: verifies every byte read that is not verified yet (a
    /// read-ahead past the last restored segment).
    fn verify_rest(
        &self,
        operation: &str,
        store: &mut Store<InvocationState>,
        input: &Resource<InputStreamResource>,
    ) -> Result<(), PluginError> {
        let verified = store.data_mut().table.get_mut(input).map_err(runtime_err)?.settle(None, true);
        verified.map_err(|source| PluginError::Corrupt { operation: operation.to_string(), source })
    }

    /// Settles one restore call: damaged bytes first (a strategy that trips over corrupt input
    /// is reporting corruption, not a bug of its own), then host failures, traps and the
    /// strategy's own error.
    fn settle_restore(
        &self,
        operation: &str,
        result: wasmtime::Result<Result<(), String>>,
        store: &mut Store<InvocationState>,
        input: &Resource<InputStreamResource>,
        segment_start: u64,
    ) -> Result<(), PluginError> {
        // A failed call first checks everything it read: corrupt input explains the failure.
        let failed = !matches!(result, Ok(Ok(())));
        let verified = store.data_mut().table.get_mut(input).map_err(runtime_err)?.settle(Some(segment_start), failed);
        if let Err(source) = verified {
            forward_guest_output(&self.info.name, store);
            store.data_mut().first_failure = None;
            return Err(PluginError::Corrupt { operation: operation.to_string(), source });
        }
        match result {
            Ok(outcome) => self.settle(operation, outcome, store),
            Err(e) => {
                forward_guest_output(&self.info.name, store);
                Err(self.trap_error(operation, e, store))
            }
        }
    }

    /// Runs the strategy's operator snapshot of `snapshot` into `out`. Returns the stream,
    /// still open, and the partition offsets the host recorded for every state.
    pub fn snapshot_operator(
        &self,
        snapshot: OperatorSnapshot,
        out: Box<dyn CheckpointOutputStream>,
    ) -> Result<OperatorOutput, PluginError> {
        self.snapshot_operator_cancellable(snapshot, out, &CancelToken::new())
    }

    /// [`snapshot_operator`](Self::snapshot_operator) that `cancel` can interrupt.
    pub fn snapshot_operator_cancellable(
        &self,
        snapshot: OperatorSnapshot,
        out: Box<dyn CheckpointOutputStream>,
        cancel: &CancelToken,
    ) -> Result<OperatorOutput, PluginError> {
        let operation = "operator snapshot";
        let states: Vec<_> = snapshot
            .states()
            .into_iter()
            .zip(snapshot.element_counts())
            .map(|((name, mode), n)| (name, mode, n))
            .collect();
        let mut store = self.new_store(cancel);
        let table = &mut store.data_mut().table;
        let view = table.push(OperatorStateViewResource::new(snapshot)).map_err(runtime_err)?;
        let output = table
            .push(OutputStreamResource::for_operator(out, states, self.limits.max_output_bytes))
            .map_err(runtime_err)?;
        let (view_rep, output_rep) = (view.rep(), output.rep());
        let result = self.pre.instantiate(&mut store).and_then(|strategy| {
            strategy.call_snapshot_operator(
                &mut store,
                Resource::new_borrow(view_rep),
                Resource::new_borrow(output_rep),
            )
        });
        forward_guest_output(&self.info.name, &store);
        let outcome = result.map_err(|e| self.trap_error(operation, e, &mut store))?;
        self.settle(operation, outcome, &mut store)?;
        let output = store.data_mut().table.delete(output).map_err(runtime_err)?;
        output.finish_operator().map_err(|message| PluginError::Contract {
            plugin: self.info.name.clone(),
            operation: operation.into(),
            message,
        })
    }

    /// Restores the operator state partitions of `assignment` (one stream) into `backend`.
    /// States with no partition are still registered, so an empty list restores as empty.
    /// Every partition read is verified against its recorded checksum.
    pub fn restore_operator(
        &self,
        assignment: &OperatorStreamAssignment,
        backend: OperatorStateBackend,
    ) -> Result<OperatorStateBackend, PluginError> {
        self.restore_operator_cancellable(assignment, backend, &CancelToken::new())
    }

    /// [`restore_operator`](Self::restore_operator) that `cancel` can interrupt.
    pub fn restore_operator_cancellable(
        &self,
        assignment: &OperatorStreamAssignment,
        backend: OperatorStateBackend,
        cancel: &CancelToken,
    ) -> Result<OperatorStateBackend, PluginError> {
        let described = assignment.stream.describe();
        let operation =
            |name: &str, offset: u64| format!("restore of operator state {name:?} at offset {offset} from {described}");
        let mut sink = OperatorSinkResource::new(backend);
        for (name, mode, _) in &assignment.states {
            sink.backend_mut().register(name, *mode).map_err(|e| PluginError::Contract {
                plugin: self.info.name.clone(),
                operation: "operator restore".into(),
                message: e.to_string(),
            })?;
        }
        if assignment.states.iter().all(|(_, _, offsets)| offsets.is_empty()) {
            return Ok(sink.into_backend());
        }
        let input = self.open_verified(
            &assignment.stream,
            &assignment.checksums,
            &format!("operator restore from {described}"),
        )?;
        let mut store = self.new_store(cancel);
        let input = store.data_mut().table.push(input).map_err(runtime_err)?;
        let sink = store.data_mut().table.push(sink).map_err(runtime_err)?;
        let strategy = match self.pre.instantiate(&mut store) {
            Ok(s) => s,
            Err(e) => return Err(self.trap_error("instantiation for operator restore", e, &mut store)),
        };
        for (name, mode, offsets) in &assignment.states {
            for &offset in offsets {
                if cancel.is_cancelled() {
                    let operation = operation(name, offset);
                    return Err(PluginError::Cancelled { plugin: self.info.name.clone(), operation });
                }
                if let Err(e) = store.data_mut().table.get_mut(&input).map_err(runtime_err)?.seek(offset) {
                    return Err(PluginError::Storage {
                        plugin: self.info.name.clone(),
                        operation: operation(name, offset),
                        source: e,
                    });
                }
                let (input_rep, sink_rep) = (Resource::new_borrow(input.rep()), Resource::new_borrow(sink.rep()));
                let result =
                    strategy.call_restore_operator_partition(&mut store, name, to_wit_mode(*mode), input_rep, sink_rep);
                self.settle_restore(&operation(name, offset), result, &mut store, &input, offset)?;
            }
        }
        self.verify_rest(&format!("operator restore from {described}"), &mut store, &input)?;
        forward_guest_output(&self.info.name, &store);
        let sink = store.data_mut().table.delete(sink).map_err(runtime_err)?;
        Ok(sink.into_backend())
    }
}

/// Splits a trap into its cause (innermost error first, then the contexts around it, without
/// the backtrace), the guest's panic message and location if its stderr has one, the wasm
/// backtrace, and the rest of the guest's stderr.
fn describe_trap(error: &wasmtime::Error, guest_output: &str) -> (String, String, String) {
    let backtrace = error.downcast_ref::<wasmtime::WasmBacktrace>().map(|b| b.to_string()).unwrap_or_default();
    let mut causes: Vec<String> = error
        .chain()
        .map(|e| e.to_string())
        .filter(|text| !text.starts_with("error while executing at wasm backtrace"))
        .collect();
    causes.reverse();
    causes.dedup();
    let mut message = causes.join(": ");
    if message.is_empty() {
        message = "wasm trap".into();
    }
    // A Rust guest prints `thread '...' panicked at src/lib.rs:12:9:\n<message>` and a note.
    let mut rest = Vec::new();
    let mut lines = guest_output.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(at) = line.find("panicked at ") {
            let location = line[at + "panicked at ".len()..].trim_end_matches(':');
            let mut text = Vec::new();
            while let Some(next) = lines.peek() {
                if next.starts_with("note: ") || next.contains("panicked at ") {
                    break;
                }
                text.push(lines.next().unwrap_or_default().trim());
            }
            message = format!("{message}; guest panicked at {location}: {}", text.join(" "));
        } else if !line.starts_with("note: run with `RUST_BACKTRACE") {
            rest.push(line);
        }
    }
    (message, backtrace, rest.join("\n"))
}

fn forward_guest_output(plugin: &str, store: &Store<InvocationState>) {
    for (stream, pipe) in [("stdout", &store.data().stdout), ("stderr", &store.data().stderr)] {
        let (bytes, dropped) = pipe.contents();
        for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "snapshot_host::plugin", plugin, stream, "{line}");
        }
        if dropped > 0 {
            tracing::warn!(
                target: "snapshot_host::plugin",
                plugin,
                stream,
                "{dropped} more bytes of guest output were dropped (plugin.max-log-bytes)"
            );
        }
    }
}
