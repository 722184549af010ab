//! The two versions of the strategy world a plugin can be built against, behind one type.
//!
//! A component is linked against the version of `snapshot:strategy` it imports; everything
//! above this file calls the strategy through [`StrategyInstance`], which speaks 0.2.0 and
//! adapts 0.1.0 strategies: their descriptions say `incremental: false` (so the host never
//! asks them for a delta) and their restore is not told the part or format version.

use wasmtime::component::{InstancePre, Resource};
use wasmtime::{Engine, Store};

use super::bindings::{v1, v2, WitGroupPart, WIT_LEGACY_VERSION, WIT_PACKAGE, WIT_VERSION};
use super::input::InputStreamResource;
use super::keyed_state::{KeyedStateViewResource, RestoreSinkResource};
use super::operator_state::{OperatorSinkResource, OperatorStateViewResource};
use super::output::OutputStreamResource;
use super::store::InvocationState;
use v2::snapshot::strategy::types::{DistributionMode, PluginInfo as WitPluginInfo};

/// Which version of the world a component imports: the newest one it names, 0.2.0 when it
/// names none (a component that imports no strategy interface at all links against either).
pub(crate) fn imported_version<'a>(imports: impl Iterator<Item = &'a String>) -> &'static str {
    let legacy = format!("{WIT_PACKAGE}/");
    let mut version = WIT_VERSION;
    for import in imports {
        if let Some(v) = import.strip_prefix(&legacy).and_then(|rest| rest.split_once('@')).map(|(_, v)| v) {
            if v.starts_with("0.1.") {
                version = WIT_LEGACY_VERSION;
            } else {
                return WIT_VERSION;
            }
        }
    }
    version
}

/// A pre-linked component of either version.
pub(crate) enum StrategyPre {
    /// Built against 0.2.0.
    Current(v2::StrategyPre<InvocationState>),
    /// Built against 0.1.0.
    Legacy(v1::StrategyPre<InvocationState>),
}

impl StrategyPre {
    /// Checks that `pre` exports the functions of the world `version` names.
    pub(crate) fn new(version: &str, pre: InstancePre<InvocationState>) -> wasmtime::Result<Self> {
        if version == WIT_LEGACY_VERSION {
            Ok(StrategyPre::Legacy(v1::StrategyPre::new(pre)?))
        } else {
            Ok(StrategyPre::Current(v2::StrategyPre::new(pre)?))
        }
    }

    /// The engine the component was compiled for.
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            StrategyPre::Current(p) => p.engine(),
            StrategyPre::Legacy(p) => p.engine(),
        }
    }

    /// A fresh instance in `store`.
    pub(crate) fn instantiate(&self, store: &mut Store<InvocationState>) -> wasmtime::Result<StrategyInstance> {
        Ok(match self {
            StrategyPre::Current(p) => StrategyInstance::Current(p.instantiate(&mut *store)?),
            StrategyPre::Legacy(p) => StrategyInstance::Legacy(p.instantiate(&mut *store)?),
        })
    }
}

/// An instantiated strategy of either version.
pub(crate) enum StrategyInstance {
    /// Built against 0.2.0.
    Current(v2::Strategy),
    /// Built against 0.1.0.
    Legacy(v1::Strategy),
}

impl StrategyInstance {
    pub(crate) fn call_describe(&self, store: &mut Store<InvocationState>) -> wasmtime::Result<WitPluginInfo> {
        match self {
            StrategyInstance::Current(s) => s.call_describe(store),
            StrategyInstance::Legacy(s) => {
                let d = s.call_describe(store)?;
                Ok(WitPluginInfo {
                    name: d.name,
                    version: d.version,
                    format: d.format,
                    format_version: d.format_version,
                    deterministic: d.deterministic,
                    incremental: false,
                })
            }
        }
    }

    pub(crate) fn call_snapshot_keyed(
        &self,
        store: &mut Store<InvocationState>,
        state: Resource<KeyedStateViewResource>,
        out: Resource<OutputStreamResource>,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            StrategyInstance::Current(s) => s.call_snapshot_keyed(store, state, out),
            StrategyInstance::Legacy(s) => s.call_snapshot_keyed(store, state, out),
        }
    }

    pub(crate) fn call_restore_key_group(
        &self,
        store: &mut Store<InvocationState>,
        key_group: u32,
        part: WitGroupPart,
        format_version: u32,
        input: Resource<InputStreamResource>,
        sink: Resource<RestoreSinkResource>,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            StrategyInstance::Current(s) => s.call_restore_key_group(store, key_group, part, format_version, input, sink),
            StrategyInstance::Legacy(_) if part == WitGroupPart::Delta => Ok(Err(format!(
                "key group {key_group} is stored as a delta, which a {WIT_PACKAGE}@{WIT_LEGACY_VERSION} strategy cannot restore (it was written by an incremental strategy of the same format)"
            ))),
            StrategyInstance::Legacy(s) => s.call_restore_key_group(store, key_group, input, sink),
        }
    }

    pub(crate) fn call_snapshot_operator(
        &self,
        store: &mut Store<InvocationState>,
        state: Resource<OperatorStateViewResource>,
        out: Resource<OutputStreamResource>,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            StrategyInstance::Current(s) => s.call_snapshot_operator(store, state, out),
            StrategyInstance::Legacy(s) => s.call_snapshot_operator(store, state, out),
        }
    }

    pub(crate) fn call_restore_operator_partition(
        &self,
        store: &mut Store<InvocationState>,
        name: &str,
        mode: DistributionMode,
        input: Resource<InputStreamResource>,
        sink: Resource<OperatorSinkResource>,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            StrategyInstance::Current(s) => s.call_restore_operator_partition(store, name, mode, input, sink),
            StrategyInstance::Legacy(s) => {
                use super::legacy::Convert;
                s.call_restore_operator_partition(store, name, mode.convert(), input, sink)
            }
        }
    }
}
