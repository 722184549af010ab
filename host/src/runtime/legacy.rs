//! The `snapshot:strategy@0.1.0` host interfaces, for plugins built before 0.2.0.
//!
//! Every 0.1.0 function exists in 0.2.0 with records of the same shape, so each one forwards
//! to the 0.2.0 implementation, converting the records field by field (moves, never copies of
//! the bytes): the two versions cannot drift apart, and a 0.1.0 strategy gets every check a
//! 0.2.0 one gets.

use wasmtime::component::Resource;

use super::bindings::v1::snapshot::strategy as old;
use super::bindings::v2::snapshot::strategy as new;
use super::input::InputStreamResource;
use super::keyed_state::{EntryReaderResource, KeyedStateViewResource, RestoreSinkResource};
use super::operator_state::{ElementReaderResource, OperatorSinkResource, OperatorStateViewResource};
use super::store::InvocationState;
use new::types as t2;
use old::types as t1;

type Answer<T> = wasmtime::Result<Result<T, t1::HostError>>;

/// The 0.1.0 form of a 0.2.0 record (or the other way round).
pub(crate) trait Convert<T> {
    fn convert(self) -> T;
}

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

impl<T, E: Convert<F>, F> Convert<Result<T, F>> for Result<T, E> {
    fn convert(self) -> Result<T, F> {
        self.map_err(Convert::convert)
    }
}

impl Convert<t1::HostError> for t2::HostError {
    fn convert(self) -> t1::HostError {
        let kind = match self.kind {
            t2::ErrorKind::Io => t1::ErrorKind::Io,
            t2::ErrorKind::Invalid => t1::ErrorKind::Invalid,
            t2::ErrorKind::Limit => t1::ErrorKind::Limit,
            t2::ErrorKind::Closed => t1::ErrorKind::Closed,
        };
        t1::HostError { kind, message: self.message }
    }
}

impl Convert<t1::KeyGroupRange> for t2::KeyGroupRange {
    fn convert(self) -> t1::KeyGroupRange {
        t1::KeyGroupRange { start: self.start, end: self.end }
    }
}

impl Convert<t1::StateKind> for t2::StateKind {
    fn convert(self) -> t1::StateKind {
        match self {
            t2::StateKind::Value => t1::StateKind::Value,
            t2::StateKind::List => t1::StateKind::List,
            t2::StateKind::Map => t1::StateKind::Map,
        }
    }
}

impl Convert<t2::StateKind> for t1::StateKind {
    fn convert(self) -> t2::StateKind {
        match self {
            t1::StateKind::Value => t2::StateKind::Value,
            t1::StateKind::List => t2::StateKind::List,
            t1::StateKind::Map => t2::StateKind::Map,
        }
    }
}

impl Convert<t1::StateInfo> for t2::StateInfo {
    fn convert(self) -> t1::StateInfo {
        t1::StateInfo { name: self.name, kind: self.kind.convert() }
    }
}

impl Convert<t1::EntryLengths> for t2::EntryLengths {
    fn convert(self) -> t1::EntryLengths {
        t1::EntryLengths { key: self.key, namespace: self.namespace, user_key: self.user_key, value: self.value }
    }
}

impl Convert<t2::EntryLengths> for t1::EntryLengths {
    fn convert(self) -> t2::EntryLengths {
        t2::EntryLengths { key: self.key, namespace: self.namespace, user_key: self.user_key, value: self.value }
    }
}

impl Convert<t1::EntryBatch> for t2::EntryBatch {
    fn convert(self) -> t1::EntryBatch {
        t1::EntryBatch { data: self.data, entries: self.entries.convert() }
    }
}

impl Convert<t2::EntryBatch> for t1::EntryBatch {
    fn convert(self) -> t2::EntryBatch {
        t2::EntryBatch { data: self.data, entries: self.entries.convert() }
    }
}

impl Convert<t1::DistributionMode> for t2::DistributionMode {
    fn convert(self) -> t1::DistributionMode {
        match self {
            t2::DistributionMode::SplitDistribute => t1::DistributionMode::SplitDistribute,
            t2::DistributionMode::Union => t1::DistributionMode::Union,
            t2::DistributionMode::Broadcast => t1::DistributionMode::Broadcast,
        }
    }
}

impl Convert<t2::DistributionMode> for t1::DistributionMode {
    fn convert(self) -> t2::DistributionMode {
        match self {
            t1::DistributionMode::SplitDistribute => t2::DistributionMode::SplitDistribute,
            t1::DistributionMode::Union => t2::DistributionMode::Union,
            t1::DistributionMode::Broadcast => t2::DistributionMode::Broadcast,
        }
    }
}

impl Convert<t1::OperatorStateInfo> for t2::OperatorStateInfo {
    fn convert(self) -> t1::OperatorStateInfo {
        t1::OperatorStateInfo { name: self.name, mode: self.mode.convert() }
    }
}

impl Convert<t1::ElementBatch> for t2::ElementBatch {
    fn convert(self) -> t1::ElementBatch {
        t1::ElementBatch { data: self.data, lengths: self.lengths }
    }
}

/// Forwards a call's answer: `wasmtime::Result<R>` with `R` converted.
fn fwd<A: Convert<B>, B>(answer: wasmtime::Result<A>) -> wasmtime::Result<B> {
    answer.map(Convert::convert)
}

impl old::types::Host for InvocationState {}
impl old::input::Host for InvocationState {}
impl old::keyed_state::Host for InvocationState {}
impl old::operator_state::Host for InvocationState {}

impl old::input::HostInputStream for InvocationState {
    fn read(&mut self, this: Resource<InputStreamResource>, max: u32) -> Answer<Vec<u8>> {
        fwd(new::input::HostInputStream::read(self, this, max))
    }
    fn seek(&mut self, this: Resource<InputStreamResource>, offset: u64) -> Answer<()> {
        fwd(new::input::HostInputStream::seek(self, this, offset))
    }
    fn position(&mut self, this: Resource<InputStreamResource>) -> wasmtime::Result<u64> {
        new::input::HostInputStream::position(self, this)
    }
    fn drop(&mut self, rep: Resource<InputStreamResource>) -> wasmtime::Result<()> {
        new::input::HostInputStream::drop(self, rep)
    }
}

impl old::keyed_state::HostKeyedStateView for InvocationState {
    fn key_group_range(&mut self, this: Resource<KeyedStateViewResource>) -> wasmtime::Result<t1::KeyGroupRange> {
        fwd(new::keyed_state::HostKeyedStateView::key_group_range(self, this))
    }
    fn max_parallelism(&mut self, this: Resource<KeyedStateViewResource>) -> wasmtime::Result<u32> {
        new::keyed_state::HostKeyedStateView::max_parallelism(self, this)
    }
    fn states(&mut self, this: Resource<KeyedStateViewResource>) -> wasmtime::Result<Vec<t1::StateInfo>> {
        fwd(new::keyed_state::HostKeyedStateView::states(self, this))
    }
    fn entries(
        &mut self,
        this: Resource<KeyedStateViewResource>,
        state: u32,
        key_group: u32,
    ) -> Answer<Resource<EntryReaderResource>> {
        fwd(new::keyed_state::HostKeyedStateView::entries(self, this, state, key_group))
    }
    fn drop(&mut self, rep: Resource<KeyedStateViewResource>) -> wasmtime::Result<()> {
        new::keyed_state::HostKeyedStateView::drop(self, rep)
    }
}

impl old::keyed_state::HostEntryReader for InvocationState {
    fn next_batch(
        &mut self,
        this: Resource<EntryReaderResource>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<t1::EntryBatch>> {
        fwd(new::keyed_state::HostEntryReader::next_batch(self, this, max_bytes))
    }
    fn next_batch_lengths(
        &mut self,
        this: Resource<EntryReaderResource>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<Vec<t1::EntryLengths>>> {
        fwd(new::keyed_state::HostEntryReader::next_batch_lengths(self, this, max_bytes))
    }
    fn drop(&mut self, rep: Resource<EntryReaderResource>) -> wasmtime::Result<()> {
        new::keyed_state::HostEntryReader::drop(self, rep)
    }
}

impl old::keyed_state::HostRestoreSink for InvocationState {
    fn state(&mut self, this: Resource<RestoreSinkResource>, name: String, kind: t1::StateKind) -> Answer<u32> {
        fwd(new::keyed_state::HostRestoreSink::state(self, this, name, kind.convert()))
    }
    fn put(&mut self, this: Resource<RestoreSinkResource>, state: u32, entries: t1::EntryBatch) -> Answer<()> {
        fwd(new::keyed_state::HostRestoreSink::put(self, this, state, entries.convert()))
    }
    fn drop(&mut self, rep: Resource<RestoreSinkResource>) -> wasmtime::Result<()> {
        new::keyed_state::HostRestoreSink::drop(self, rep)
    }
}

impl old::operator_state::HostOperatorStateView for InvocationState {
    fn states(&mut self, this: Resource<OperatorStateViewResource>) -> wasmtime::Result<Vec<t1::OperatorStateInfo>> {
        fwd(new::operator_state::HostOperatorStateView::states(self, this))
    }
    fn elements(
        &mut self,
        this: Resource<OperatorStateViewResource>,
        state: u32,
    ) -> Answer<Resource<ElementReaderResource>> {
        fwd(new::operator_state::HostOperatorStateView::elements(self, this, state))
    }
    fn drop(&mut self, rep: Resource<OperatorStateViewResource>) -> wasmtime::Result<()> {
        new::operator_state::HostOperatorStateView::drop(self, rep)
    }
}

impl old::operator_state::HostElementReader for InvocationState {
    fn next_batch(
        &mut self,
        this: Resource<ElementReaderResource>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<t1::ElementBatch>> {
        fwd(new::operator_state::HostElementReader::next_batch(self, this, max_bytes))
    }
    fn drop(&mut self, rep: Resource<ElementReaderResource>) -> wasmtime::Result<()> {
        new::operator_state::HostElementReader::drop(self, rep)
    }
}

impl old::operator_state::HostOperatorSink for InvocationState {
    fn add(
        &mut self,
        this: Resource<OperatorSinkResource>,
        name: String,
        mode: t1::DistributionMode,
        elements: t1::ElementBatch,
    ) -> Answer<()> {
        let elements = t2::ElementBatch { data: elements.data, lengths: elements.lengths };
        fwd(new::operator_state::HostOperatorSink::add(self, this, name, mode.convert(), elements))
    }
    fn drop(&mut self, rep: Resource<OperatorSinkResource>) -> wasmtime::Result<()> {
        new::operator_state::HostOperatorSink::drop(self, rep)
    }
}
