//! Host bindings for the `strategy` world, generated from `wit/`.
//!
//! Resources map to the host types that back them. The `output` interface is linked by hand
//! (see `output.rs`) so that `write` can read the guest's bytes in place; the generated trait
//! for it is unused.
#![allow(unsafe_code, missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "strategy",
    imports: { default: trappable },
    with: {
        "snapshot:strategy/output.output-stream": super::output::OutputStreamResource,
        "snapshot:strategy/input.input-stream": super::input::InputStreamResource,
        "snapshot:strategy/keyed-state.keyed-state-view": super::keyed_state::KeyedStateViewResource,
        "snapshot:strategy/keyed-state.entry-reader": super::keyed_state::EntryReaderResource,
        "snapshot:strategy/keyed-state.restore-sink": super::keyed_state::RestoreSinkResource,
        "snapshot:strategy/operator-state.operator-state-view": super::operator_state::OperatorStateViewResource,
        "snapshot:strategy/operator-state.element-reader": super::operator_state::ElementReaderResource,
        "snapshot:strategy/operator-state.operator-sink": super::operator_state::OperatorSinkResource,
    },
});

pub use snapshot::strategy::types::{EntryBatch, EntryLengths, ErrorKind, HostError, StateKind as WitStateKind};

/// The WIT package version this host implements; plugins built against any `0.1.x` link.
pub const WIT_PACKAGE: &str = "snapshot:strategy";
/// See [`WIT_PACKAGE`].
pub const WIT_VERSION: &str = "0.1.0";
