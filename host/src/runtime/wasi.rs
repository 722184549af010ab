//! The WASI imports a strategy gets: only what Rust's standard library needs to start.
//!
//! Rust's `wasm32-wasip2` std imports `wasi:io` (streams behind stdout/stderr), `wasi:cli`
//! (environment, exit, stdio, terminals) and, when the code uses them, `wasi:clocks` and
//! `wasi:random` (a default `HashMap` seeds itself from it). Without these a plugin cannot even
//! be instantiated. They are linked with an empty context:
//! - no environment variables, no arguments, empty stdin;
//! - stdout and stderr captured per invocation and forwarded to `tracing` (stderr also carries
//!   a panicking guest's message into the error);
//! - clocks and randomness granted on purpose, but deterministic: the wall clock reads the Unix
//!   epoch, the monotonic clock never advances, and randomness is a fixed seeded sequence.
//!   Rust's std needs them to start (a default `HashMap` seeds itself), while real time and
//!   entropy would make snapshots irreproducible and leak facts about the host.
//!
//! `wasi:filesystem` and `wasi:sockets` are not linked at all: a strategy that uses files or the
//! network fails to load, with an error naming the import.

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::WasiCli;
use wasmtime_wasi::clocks::WasiClocks;
use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::store::InvocationState;

/// Interface name prefixes a strategy may import besides the strategy world itself.
pub const GRANTED_WASI: &[&str] = &["wasi:io/", "wasi:cli/", "wasi:clocks/", "wasi:random/"];

struct Table;
impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

pub(crate) fn add_to_linker(l: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    sync::io::error::add_to_linker::<InvocationState, Table>(l, |t| &mut t.table)?;
    sync::io::poll::add_to_linker::<InvocationState, Table>(l, |t| &mut t.table)?;
    sync::io::streams::add_to_linker::<InvocationState, Table>(l, |t| &mut t.table)?;
    cli::exit::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::environment::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::stdin::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::stdout::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::stderr::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::terminal_input::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::terminal_output::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, InvocationState::cli)?;
    clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, InvocationState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, InvocationState::clocks)?;
    random::random::add_to_linker::<_, WasiRandom>(l, InvocationState::random)?;
    random::insecure::add_to_linker::<_, WasiRandom>(l, InvocationState::random)?;
    random::insecure_seed::add_to_linker::<_, WasiRandom>(l, InvocationState::random)?;
    Ok(())
}

pub(crate) fn context(stdout: MemoryOutputPipe, stderr: MemoryOutputPipe) -> WasiCtx {
    const SEED: &[u8] = b"snapshot-host deterministic randomness";
    WasiCtxBuilder::new()
        .stdout(stdout)
        .stderr(stderr)
        .wall_clock(FixedClock)
        .monotonic_clock(FixedClock)
        .secure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
        .insecure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
        .insecure_random_seed(0)
        .build()
}

/// A clock that always reads zero (the Unix epoch; a monotonic clock that never advances).
struct FixedClock;

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

// `WasiView` gives these accessors through blanket traits; name them for the linker calls.
impl InvocationState {
    fn cli(&mut self) -> wasmtime_wasi::cli::WasiCliCtxView<'_> {
        wasmtime_wasi::cli::WasiCliView::cli(self)
    }
    fn clocks(&mut self) -> wasmtime_wasi::clocks::WasiClocksCtxView<'_> {
        wasmtime_wasi::clocks::WasiClocksView::clocks(self)
    }
    fn random(&mut self) -> &mut wasmtime_wasi::random::WasiRandomCtx {
        wasmtime_wasi::random::WasiRandomView::random(self)
    }
}
