//! The plugin runtime: loads strategy components and runs them in a sandbox.
//!
//! One [`PluginRuntime`] (one wasmtime `Engine` and `Linker`) per process; each loaded
//! [`Plugin`] keeps its compiled component and a pre-linked `InstancePre`, and every
//! invocation (a snapshot, or the restore of one state handle) gets a fresh `Store` and
//! instance, so nothing a strategy does survives into the next call.

mod bindings;
mod error;
pub mod input;
pub mod keyed_state;
mod limits;
pub mod operator_state;
pub mod output;
mod plugin;
mod store;
mod wasi;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

pub use bindings::{WIT_PACKAGE, WIT_VERSION};
pub use error::PluginError;
pub use limits::PluginLimits;
pub use plugin::{Plugin, PluginInfo};
pub use store::InvocationState;

/// How often the epoch ticker advances; the granularity of invocation timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine, the linker with every host interface, and the timer that enforces deadlines.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<InvocationState>,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Creates the engine and links the host interfaces.
    pub fn new() -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32));
        // Deadlines: cheap checks at loop back-edges and function entries, driven by a ticker
        // thread; they interrupt a guest spinning in a loop.
        config.epoch_interruption(true);
        let engine =
            Engine::new(&config).map_err(|e| PluginError::Runtime(format!("cannot create the engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        Self::link(&mut linker).map_err(|e| PluginError::Runtime(format!("cannot link host interfaces: {e}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Runtime(format!("cannot start the epoch ticker: {e}")))?;
        Ok(PluginRuntime { engine, linker, ticker_stop })
    }

    fn link(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        use bindings::snapshot::strategy::{input, keyed_state, operator_state, types};
        use wasmtime::component::HasSelf;
        wasi::add_to_linker(linker)?;
        types::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
        input::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
        keyed_state::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
        operator_state::add_to_linker::<_, HasSelf<InvocationState>>(linker, |s| s)?;
        output::add_to_linker(linker)?;
        Ok(())
    }

    /// The engine (for precompilation and compatibility checks).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
