//! Host side of the `operator-state` interface: the operator snapshot view, element readers
//! and the operator sink.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::bindings::v2::snapshot::strategy::operator_state::{
    Host, HostElementReader, HostOperatorSink, HostOperatorStateView,
};
use super::bindings::v2::snapshot::strategy::types::{DistributionMode as WitMode, ElementBatch, OperatorStateInfo};
use super::bindings::HostError;
use super::store::InvocationState;
use crate::handles::DistributionMode;
use crate::operator_backend::{OperatorSnapshot, OperatorStateBackend};

/// Largest batch the host builds (a single larger element still comes whole).
const MAX_BATCH_BYTES: u32 = 16 << 20;

/// The host object behind `operator-state-view`.
#[derive(Debug)]
pub struct OperatorStateViewResource {
    snapshot: OperatorSnapshot,
}

impl OperatorStateViewResource {
    /// A view of `snapshot`.
    pub fn new(snapshot: OperatorSnapshot) -> Self {
        OperatorStateViewResource { snapshot }
    }
}

/// The host object behind `element-reader`.
#[derive(Debug)]
pub struct ElementReaderResource {
    elements: Arc<Vec<Vec<u8>>>,
    next: usize,
}

/// The host object behind `operator-sink`.
#[derive(Debug)]
pub struct OperatorSinkResource {
    backend: OperatorStateBackend,
}

impl OperatorSinkResource {
    /// A sink adding to `backend`.
    pub fn new(backend: OperatorStateBackend) -> Self {
        OperatorSinkResource { backend }
    }

    /// The backend, to register states that have no elements.
    pub fn backend_mut(&mut self) -> &mut OperatorStateBackend {
        &mut self.backend
    }

    /// The restored backend.
    pub fn into_backend(self) -> OperatorStateBackend {
        self.backend
    }
}

pub(crate) fn to_wit_mode(mode: DistributionMode) -> WitMode {
    match mode {
        DistributionMode::SplitDistribute => WitMode::SplitDistribute,
        DistributionMode::Union => WitMode::Union,
        DistributionMode::Broadcast => WitMode::Broadcast,
    }
}

fn from_wit_mode(mode: WitMode) -> DistributionMode {
    match mode {
        WitMode::SplitDistribute => DistributionMode::SplitDistribute,
        WitMode::Union => DistributionMode::Union,
        WitMode::Broadcast => DistributionMode::Broadcast,
    }
}

impl HostOperatorStateView for InvocationState {
    fn states(&mut self, this: Resource<OperatorStateViewResource>) -> wasmtime::Result<Vec<OperatorStateInfo>> {
        let states = self.table.get(&this)?.snapshot.states();
        Ok(states.into_iter().map(|(name, mode)| OperatorStateInfo { name, mode: to_wit_mode(mode) }).collect())
    }

    fn elements(
        &mut self,
        this: Resource<OperatorStateViewResource>,
        state: u32,
    ) -> wasmtime::Result<Result<Resource<ElementReaderResource>, HostError>> {
        match self.table.get(&this)?.snapshot.elements(state) {
            Ok(elements) => Ok(Ok(self.table.push(ElementReaderResource { elements, next: 0 })?)),
            Err(e) => Ok(Err(self.contract(format!("elements({state}): {e}")))),
        }
    }

    fn drop(&mut self, _rep: Resource<OperatorStateViewResource>) -> wasmtime::Result<()> {
        // Only ever borrowed by the guest: the host deletes it after the call.
        Ok(())
    }
}

impl HostElementReader for InvocationState {
    fn next_batch(
        &mut self,
        this: Resource<ElementReaderResource>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<ElementBatch>> {
        let reader = self.table.get_mut(&this)?;
        let max = max_bytes.min(MAX_BATCH_BYTES) as usize;
        let (mut data, mut lengths) = (Vec::new(), Vec::new());
        while let Some(element) = reader.elements.get(reader.next) {
            if !lengths.is_empty() && data.len() + element.len() > max {
                break;
            }
            data.extend_from_slice(element);
            lengths.push(element.len() as u32);
            reader.next += 1;
        }
        self.amplification.consume(data.len() as u64);
        Ok((!lengths.is_empty()).then_some(ElementBatch { data, lengths }))
    }

    fn drop(&mut self, rep: Resource<ElementReaderResource>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl HostOperatorSink for InvocationState {
    fn add(
        &mut self,
        this: Resource<OperatorSinkResource>,
        name: String,
        mode: WitMode,
        batch: ElementBatch,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let total: u64 = batch.lengths.iter().map(|&n| n as u64).sum();
        if total != batch.data.len() as u64 {
            let message = format!(
                "operator-sink.add: element lengths add up to {total} bytes but the batch holds {}",
                batch.data.len()
            );
            return Ok(Err(self.contract(message)));
        }
        if let Err(e) = self.produce(total + 16 * batch.lengths.len() as u64, "the operator restore") {
            return Ok(Err(e));
        }
        let sink = self.table.get_mut(&this)?;
        if let Err(e) = sink.backend.register(&name, from_wit_mode(mode)) {
            return Ok(Err(self.contract(format!("operator-sink.add: {e}"))));
        }
        let mut at = 0usize;
        for &n in &batch.lengths {
            let element = batch.data[at..at + n as usize].to_vec();
            at += n as usize;
            sink.backend.add(&name, element).expect("registered above");
        }
        Ok(Ok(()))
    }

    fn drop(&mut self, _rep: Resource<OperatorSinkResource>) -> wasmtime::Result<()> {
        // Only ever borrowed by the guest: the host deletes it after the call.
        Ok(())
    }
}

impl Host for InvocationState {}
