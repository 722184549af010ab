//! Typed wrappers over the host's operator-state resources.

use crate::__private::bindings::snapshot::strategy::operator_state as wit;
use crate::__private::bindings::snapshot::strategy::types as wit_types;
use crate::Result;

/// How an operator list state is redistributed when the parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DistributionMode {
    /// Elements of all subtasks are pooled and split evenly.
    SplitDistribute,
    /// Every subtask gets every element.
    Union,
    /// Every subtask gets one copy of the (identical) list.
    Broadcast,
}

impl DistributionMode {
    /// A stable one-byte code, for formats that store the mode.
    pub fn to_u8(self) -> u8 {
        match self {
            DistributionMode::SplitDistribute => 0,
            DistributionMode::Union => 1,
            DistributionMode::Broadcast => 2,
        }
    }
}

impl From<wit_types::DistributionMode> for DistributionMode {
    fn from(m: wit_types::DistributionMode) -> Self {
        match m {
            wit_types::DistributionMode::SplitDistribute => DistributionMode::SplitDistribute,
            wit_types::DistributionMode::Union => DistributionMode::Union,
            wit_types::DistributionMode::Broadcast => DistributionMode::Broadcast,
        }
    }
}

impl From<DistributionMode> for wit_types::DistributionMode {
    fn from(m: DistributionMode) -> Self {
        match m {
            DistributionMode::SplitDistribute => wit_types::DistributionMode::SplitDistribute,
            DistributionMode::Union => wit_types::DistributionMode::Union,
            DistributionMode::Broadcast => wit_types::DistributionMode::Broadcast,
        }
    }
}

/// An operator list state: name and redistribution mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStateInfo {
    /// The name.
    pub name: String,
    /// How it is redistributed.
    pub mode: DistributionMode,
}

/// A read-only view of a subtask's operator list states.
pub struct OperatorStateView<'a> {
    view: &'a wit::OperatorStateView,
}

impl<'a> OperatorStateView<'a> {
    pub(crate) fn new(view: &'a wit::OperatorStateView) -> Self {
        OperatorStateView { view }
    }

    /// Every operator state; the position is the state index.
    pub fn states(&self) -> Vec<OperatorStateInfo> {
        self.view.states().into_iter().map(|s| OperatorStateInfo { name: s.name, mode: s.mode.into() }).collect()
    }

    /// The elements of state `state`.
    pub fn elements(&self, state: u32) -> Result<Elements> {
        Ok(Elements { reader: self.view.elements(state)? })
    }
}

impl std::fmt::Debug for OperatorStateView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorStateView").finish_non_exhaustive()
    }
}

/// The elements of one operator state, fetched in batches.
#[derive(Debug)]
pub struct Elements {
    reader: wit::ElementReader,
}

impl Elements {
    /// The next batch of about `max_bytes` bytes, or `None` at the end.
    pub fn next_batch(&mut self, max_bytes: u32) -> Option<ElementBatch> {
        self.reader.next_batch(max_bytes).map(|b| ElementBatch { data: b.data, lengths: b.lengths })
    }
}

/// A batch of elements as the host packed them.
#[derive(Debug, Clone, Default)]
pub struct ElementBatch {
    data: Vec<u8>,
    lengths: Vec<u32>,
}

impl ElementBatch {
    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut at = 0usize;
        self.lengths.iter().map(move |&n| {
            let s = &self.data[at..at + n as usize];
            at += n as usize;
            s
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}

/// Packs elements for [`OperatorSink::add`].
#[derive(Debug, Clone, Default)]
pub struct ElementBatchBuilder {
    data: Vec<u8>,
    lengths: Vec<u32>,
}

impl ElementBatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one element.
    pub fn push(&mut self, element: &[u8]) {
        self.data.extend_from_slice(element);
        self.lengths.push(element.len() as u32);
    }

    /// Removes all elements, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.lengths.clear();
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }
}

/// Where restored operator state elements go.
pub struct OperatorSink<'a> {
    sink: &'a wit::OperatorSink,
}

impl<'a> OperatorSink<'a> {
    pub(crate) fn new(sink: &'a wit::OperatorSink) -> Self {
        OperatorSink { sink }
    }

    /// Appends `elements` to state `name`.
    pub fn add(&mut self, name: &str, mode: DistributionMode, elements: &ElementBatchBuilder) -> Result<()> {
        let batch = wit_types::ElementBatch { data: elements.data.clone(), lengths: elements.lengths.clone() };
        self.sink.add(name, mode.into(), &batch)?;
        Ok(())
    }
}

impl std::fmt::Debug for OperatorSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSink").finish_non_exhaustive()
    }
}

/// Writes every element of every operator state of `state` length-prefixed (`u32`
/// little-endian length, then the bytes), each marked as its own partition: the simplest
/// operator-state format, and one that lets the host redistribute elements one by one. Write
/// a header first if the format has one; restore with [`restore_length_prefixed`].
pub fn snapshot_length_prefixed(state: &OperatorStateView<'_>, out: &mut crate::SnapshotWriter<'_>) -> Result<()> {
    use crate::codec::WriteExt;
    for index in 0..state.states().len() as u32 {
        let mut elements = state.elements(index)?;
        while let Some(batch) = elements.next_batch(256 * 1024) {
            for element in batch.iter() {
                out.begin_partition(index)?;
                out.write_bytes(element)?;
            }
        }
    }
    Ok(())
}

/// Restores one element written by [`snapshot_length_prefixed`] (`input` positioned at its
/// partition's offset) into `sink`; a truncated or oversized element is an error naming the
/// state and the offset.
pub fn restore_length_prefixed(
    name: &str,
    mode: DistributionMode,
    input: &mut crate::RestoreReader<'_>,
    sink: &mut OperatorSink<'_>,
) -> Result<()> {
    use crate::codec::ReadExt;
    let at = input.position();
    let mut element = Vec::new();
    input
        .read_bytes_into(&mut element)
        .map_err(|e| crate::Error::msg(format!("operator state {name:?}: element at offset {at}: {e}")))?;
    let mut batch = ElementBatchBuilder::new();
    batch.push(&element);
    sink.add(name, mode, &batch)
}
