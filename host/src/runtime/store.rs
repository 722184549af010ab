//! The per-invocation store data: resource table, WASI context, limits and the first error.

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{ErrorKind, HostError};
use super::budget::{Amplification, MemoryBudget};
use super::cancel::CancelToken;
use super::guest_log::GuestLog;
use super::limits::PluginLimits;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What went wrong on the host side during an invocation. Recorded once (the first failure
/// wins, later ones are usually its consequences) and reported by the host even when the
/// strategy ignores the error it was handed.
#[derive(Debug)]
pub enum HostFailure {
    /// The primary stream failed: the snapshot cannot be durable.
    Storage(std::io::Error),
    /// The strategy broke the contract of a host resource.
    Contract(String),
    /// The strategy exceeded a configured limit.
    Limit(String),
    /// The invocation was cancelled.
    Cancelled,
    /// Bytes read back do not match their recorded checksum.
    Corrupt(crate::handles::ChecksumMismatch),
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostFailure::Storage(e) => write!(f, "checkpoint storage failed: {e}"),
            HostFailure::Contract(m) => write!(f, "contract violation: {m}"),
            HostFailure::Limit(m) => write!(f, "limit exceeded: {m}"),
            HostFailure::Cancelled => f.write_str("cancelled"),
            HostFailure::Corrupt(m) => write!(f, "{m}"),
        }
    }
}

/// Store data of one invocation (one snapshot, or the restore of one state handle).
pub struct InvocationState {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: super::wasi::DenyHttp,
    pub(crate) limits: PeakLimiter,
    pub(crate) first_failure: Option<HostFailure>,
    pub(crate) stdout: GuestLog,
    pub(crate) stderr: GuestLog,
    pub(crate) cancel: CancelToken,
    pub(crate) deadline: Instant,
    pub(crate) amplification: Amplification,
}

impl InvocationState {
    pub(crate) fn new(
        limits: &PluginLimits,
        cancel: CancelToken,
        peak_report: Arc<AtomicUsize>,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let stdout = GuestLog::new(limits.max_log_bytes);
        let stderr = GuestLog::new(limits.max_log_bytes);
        let wasi = super::wasi::context(stdout.clone(), stderr.clone());
        let inner = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(limits.instances)
            .tables(limits.tables)
            .memories(limits.memories)
            .trap_on_grow_failure(true)
            .build();
        let store_limits = PeakLimiter { inner, peak: 0, report: peak_report, budget, reserved: 0, denied: None };
        InvocationState {
            table: ResourceTable::new(),
            wasi,
            http: super::wasi::http_context(),
            http_hooks: super::wasi::DenyHttp,
            limits: store_limits,
            first_failure: None,
            stdout,
            stderr,
            cancel,
            deadline: Instant::now() + limits.timeout,
            amplification: Amplification::new(limits.max_amplification),
        }
    }

    /// Records `failure` (if it is the first) and returns the WIT error handed to the guest.
    pub(crate) fn fail(&mut self, failure: HostFailure) -> HostError {
        let (kind, message) = match &failure {
            HostFailure::Storage(e) => (ErrorKind::Io, e.to_string()),
            HostFailure::Contract(m) => (ErrorKind::Invalid, m.clone()),
            HostFailure::Limit(m) => (ErrorKind::Limit, m.clone()),
            HostFailure::Cancelled => (ErrorKind::Closed, "the invocation was cancelled".to_string()),
            HostFailure::Corrupt(m) => (ErrorKind::Io, m.to_string()),
        };
        if self.first_failure.is_none() {
            self.first_failure = Some(failure);
        }
        HostError { kind, message }
    }

    /// Accounts for `bytes` the guest produces (see [`Amplification`]); past the limit, the
    /// limit failure is recorded and returned.
    pub(crate) fn produce(&mut self, bytes: u64, what: &str) -> Result<(), HostError> {
        match self.amplification.produce(bytes, what) {
            Ok(()) => Ok(()),
            Err(message) => Err(self.fail(HostFailure::Limit(message))),
        }
    }

    /// A contract violation; see [`fail`](Self::fail).
    pub(crate) fn contract(&mut self, message: impl Into<String>) -> HostError {
        self.fail(HostFailure::Contract(message.into()))
    }
}

impl std::fmt::Debug for InvocationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationState").field("first_failure", &self.first_failure).finish_non_exhaustive()
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}

/// The store's resource limiter: enforces the configured limits, reserves every memory growth
/// from the runtime's host-wide [`MemoryBudget`], and records the largest linear memory the
/// guest reached, reported to its plugin when the store is dropped (the harness reports it
/// against the limit).
pub(crate) struct PeakLimiter {
    inner: StoreLimits,
    peak: usize,
    report: Arc<AtomicUsize>,
    budget: Arc<MemoryBudget>,
    reserved: usize,
    /// Why a growth was refused by the budget, for the error message.
    pub(crate) denied: Option<String>,
}

impl PeakLimiter {
    /// Bytes of linear memory the guest holds now (every memory of the store).
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }
}

impl wasmtime::ResourceLimiter for PeakLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            let more = desired.saturating_sub(current);
            if !self.budget.try_reserve(more) {
                let message = format!(
                    "the host-wide plugin memory budget of {} bytes is exhausted (plugin.memory-budget; {} bytes \
                     in use by all invocations, this one asked for {more} more)",
                    self.budget.total(),
                    self.budget.used()
                );
                self.denied = Some(message.clone());
                return Err(wasmtime::Error::msg(message));
            }
            self.reserved += more;
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl Drop for PeakLimiter {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
        self.report.fetch_max(self.peak, Ordering::Relaxed);
    }
}
