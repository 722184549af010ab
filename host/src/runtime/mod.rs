//! The plugin runtime: loads strategy components and runs them in a sandbox.
//!
//! One [`PluginRuntime`] (one wasmtime `Engine` and `Linker`) per process; each loaded
//! [`Plugin`] keeps its compiled component and a pre-linked `InstancePre`, and every
//! invocation (a snapshot, or the restore of one state handle) gets a fresh `Store` and
//! instance, so nothing a strategy does survives into the next call.

mod bindings;
pub mod budget;
mod cache;
mod cancel;
mod error;
mod guest_log;
pub mod input;
pub mod keyed_state;
pub(crate) mod legacy;
mod limits;
pub mod operator_state;
pub mod output;
mod plugin;
mod probe;
mod store;
mod versions;
mod wasi;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

pub use bindings::{WIT_LEGACY_VERSION, WIT_PACKAGE, WIT_VERSION, WIT_VERSIONS};
pub use cache::{CacheOutcome, CompiledCache, DEFAULT_CACHE_BYTES};
pub use cancel::CancelToken;
pub use error::PluginError;
pub use limits::PluginLimits;
pub use plugin::{KeyedOutput, OperatorOutput, Plugin, PluginInfo};
pub use probe::Capabilities;
pub use store::InvocationState;
pub use wasi::{grant_of, Grant, WASI_POLICY};

/// How often the epoch ticker advances; the granularity of deadlines and cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings of a [`PluginRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Meter instructions so that plugins can be given a fuel limit ([`PluginLimits::fuel`]).
    /// Costs some compile time and a little run time.
    pub fuel: bool,
    /// Cache compiled components on disk.
    pub cache: Option<CompiledCache>,
    /// Linear memory all concurrent invocations of every plugin of this runtime may hold
    /// together, in bytes (`plugin.memory-budget`).
    pub memory_budget: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions { fuel: false, cache: None, memory_budget: budget::DEFAULT_MEMORY_BUDGET }
    }
}

/// The engine, the linker with every host interface, and the timer that drives deadlines.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<InvocationState>,
    ticker: Arc<Ticker>,
    options: RuntimeOptions,
    memory: Arc<budget::MemoryBudget>,
    cache: Option<wasmtime::Cache>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").field("options", &self.options).finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Creates the engine and links the host interfaces, with default options.
    pub fn new() -> Result<Self, PluginError> {
        Self::with_options(RuntimeOptions::default())
    }

    /// Creates the engine with `options`.
    pub fn with_options(options: RuntimeOptions) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32));
        config.consume_fuel(options.fuel);
        // Deadlines and cancellation: cheap checks at loop back-edges and function entries,
        // driven by a ticker thread; they interrupt a guest spinning in a loop.
        config.epoch_interruption(true);
        // The cache is an optimisation: a directory that cannot be used costs compile time,
        // never the runtime.
        let cache = options.cache.as_ref().and_then(|cache| match cache.open() {
            Ok(opened) => Some(opened),
            Err(e) => {
                tracing::warn!(dir = %cache.dir().display(), error = %format!("{e:#}"), "compiled-plugin cache unavailable; compiling every load");
                None
            }
        });
        config.cache(cache.clone());
        let engine =
            Engine::new(&config).map_err(|e| PluginError::Runtime(format!("cannot create the engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        Self::link(&mut linker).map_err(|e| PluginError::Runtime(format!("cannot link host interfaces: {e}")))?;
        let ticker = Arc::new(Ticker(Arc::new(AtomicBool::new(false))));
        let (stop, ticking) = (ticker.0.clone(), engine.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Runtime(format!("cannot start the epoch ticker: {e}")))?;
        let memory = budget::MemoryBudget::new(options.memory_budget);
        Ok(PluginRuntime { engine, linker, ticker, options, memory, cache })
    }

    fn link(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        use wasmtime::component::HasSelf;
        wasi::add_to_linker(linker)?;
        {
            use bindings::v2::snapshot::strategy::{input, keyed_state, operator_state, types};
            types::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
            input::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
            keyed_state::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
            operator_state::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
        }
        {
            // 0.1.0 strategies keep loading unchanged (see legacy.rs).
            use bindings::v1::snapshot::strategy::{input, keyed_state, operator_state, types};
            types::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
            input::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
            keyed_state::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
            operator_state::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
        }
        for version in WIT_VERSIONS {
            output::add_to_linker(linker, version)?;
        }
        Ok(())
    }

    /// The engine (for precompilation and compatibility checks).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes` into a component, through the compiled-plugin cache if the runtime has
    /// one, and says whether the cache had it. (With compilations running concurrently on the
    /// same runtime the outcome may be another's; the component is always right.)
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<(wasmtime::component::Component, CacheOutcome)> {
        let hits_before = self.cache.as_ref().map(|c| c.cache_hits());
        let component = wasmtime::component::Component::new(&self.engine, bytes)?;
        let outcome = match (&self.cache, hits_before) {
            (Some(cache), Some(before)) if cache.cache_hits() > before => CacheOutcome::Hit,
            (Some(_), _) => CacheOutcome::Miss,
            (None, _) => CacheOutcome::Uncached,
        };
        Ok((component, outcome))
    }

    /// The options the runtime was created with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }
}

/// The epoch ticker's stop flag, raised when the runtime and every plugin it loaded are gone:
/// a plugin keeps its deadlines working after the runtime is dropped.
#[derive(Debug)]
pub(crate) struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
