//! Host bindings for both versions of the `strategy` world, generated from `wit/` (0.2.0) and
//! `wit/v0.1.0/` (0.1.0).
//!
//! Two versions are linked side by side so that a plugin built against 0.1.0 keeps loading
//! unchanged next to 0.2.0 plugins. Resources map to the same host types in both, so each host
//! interface is implemented once, for 0.2.0, and 0.1.0's traits forward to it, converting the
//! records (see `legacy.rs`). The
//! `output` interface is linked by hand (see `output.rs`) so that `write` can read the guest's
//! bytes in place; the generated traits for it are unused.
#![allow(unsafe_code, missing_docs, clippy::all)]

/// `snapshot:strategy@0.2.0`, the version plugins are built against today.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "strategy",
        imports: { default: trappable },
        with: {
            "snapshot:strategy/output.output-stream": crate::runtime::output::OutputStreamResource,
            "snapshot:strategy/input.input-stream": crate::runtime::input::InputStreamResource,
            "snapshot:strategy/keyed-state.keyed-state-view": crate::runtime::keyed_state::KeyedStateViewResource,
            "snapshot:strategy/keyed-state.entry-reader": crate::runtime::keyed_state::EntryReaderResource,
            "snapshot:strategy/keyed-state.restore-sink": crate::runtime::keyed_state::RestoreSinkResource,
            "snapshot:strategy/operator-state.operator-state-view": crate::runtime::operator_state::OperatorStateViewResource,
            "snapshot:strategy/operator-state.element-reader": crate::runtime::operator_state::ElementReaderResource,
            "snapshot:strategy/operator-state.operator-sink": crate::runtime::operator_state::OperatorSinkResource,
        },
    });
}

/// `snapshot:strategy@0.1.0`: full snapshots only, restore not told the part or format version.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "strategy",
        imports: { default: trappable },
        with: {
            "snapshot:strategy/output.output-stream": crate::runtime::output::OutputStreamResource,
            "snapshot:strategy/input.input-stream": crate::runtime::input::InputStreamResource,
            "snapshot:strategy/keyed-state.keyed-state-view": crate::runtime::keyed_state::KeyedStateViewResource,
            "snapshot:strategy/keyed-state.entry-reader": crate::runtime::keyed_state::EntryReaderResource,
            "snapshot:strategy/keyed-state.restore-sink": crate::runtime::keyed_state::RestoreSinkResource,
            "snapshot:strategy/operator-state.operator-state-view": crate::runtime::operator_state::OperatorStateViewResource,
            "snapshot:strategy/operator-state.element-reader": crate::runtime::operator_state::ElementReaderResource,
            "snapshot:strategy/operator-state.operator-sink": crate::runtime::operator_state::OperatorSinkResource,
        },
    });
}

pub use v2::snapshot::strategy::types::{
    EntryBatch, EntryLengths, ErrorKind, GroupPart as WitGroupPart, HostError, StateKind as WitStateKind,
};

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "snapshot:strategy";
/// The newest version of [`WIT_PACKAGE`] this host implements: plugins built against any
/// `0.2.x` link, and so do [`WIT_LEGACY_VERSION`] ones.
pub const WIT_VERSION: &str = "0.2.0";
/// The older version the host still links, for plugins built before incremental checkpoints.
pub const WIT_LEGACY_VERSION: &str = "0.1.0";
/// Every version the host links, newest first.
pub const WIT_VERSIONS: [&str; 2] = [WIT_VERSION, WIT_LEGACY_VERSION];
