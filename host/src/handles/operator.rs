//! Operator (non-keyed) state handles: one stream holding several named list states, each
//! split into partitions that are redistributed when parallelism changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{HandleError, SegmentChecksums, StreamStateHandle};

/// How a named operator list state is redistributed on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DistributionMode {
    /// The elements of all subtasks are pooled and split evenly over the new subtasks.
    SplitDistribute,
    /// Every new subtask gets all elements of all subtasks.
    Union,
    /// Every subtask held the same state; every new subtask gets one copy.
    Broadcast,
}

/// Where the partitions (list elements) of one named state start in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Offset of each partition, in order.
    pub offsets: Vec<u64>,
    /// How the state is redistributed.
    pub mode: DistributionMode,
}

/// Per state name, where its partitions start and how it is redistributed.
pub type OperatorPartitions = BTreeMap<String, PartitionInfo>;

/// An operator state snapshot: a stream and, per state name, its partition offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateHandle {
    partitions: BTreeMap<String, PartitionInfo>,
    stream: StreamStateHandle,
    checksums: Arc<SegmentChecksums>,
}

impl OperatorStateHandle {
    /// A handle over `stream`.
    pub fn new(partitions: BTreeMap<String, PartitionInfo>, stream: StreamStateHandle) -> Self {
        OperatorStateHandle { partitions, stream, checksums: Arc::default() }
    }

    /// The same handle with the stream's segment checksums (one segment per partition).
    pub fn with_checksums(mut self, checksums: Arc<SegmentChecksums>) -> Self {
        self.checksums = checksums;
        self
    }

    /// The stream's segment checksums.
    pub fn checksums(&self) -> &Arc<SegmentChecksums> {
        &self.checksums
    }

    /// State name to partition offsets and mode. Two handles with equal maps describe the
    /// same partitioning, which is what lets a local copy stand in for the primary.
    pub fn partitions(&self) -> &BTreeMap<String, PartitionInfo> {
        &self.partitions
    }

    /// The stream.
    pub fn stream(&self) -> &StreamStateHandle {
        &self.stream
    }

    /// Size of the stream.
    pub fn state_size(&self) -> u64 {
        self.stream.size()
    }

    /// The same handle over `f(stream)` (to relocate its file).
    pub fn map_stream(self, f: impl FnOnce(StreamStateHandle) -> StreamStateHandle) -> Self {
        OperatorStateHandle { stream: f(self.stream), ..self }
    }

    /// Deletes the stream.
    pub fn discard(&self) -> Result<(), HandleError> {
        self.stream.discard()
    }
}
