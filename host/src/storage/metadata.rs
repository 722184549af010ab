//! What a completed checkpoint records: per subtask the handles of its primary state, and
//! the job-level facts a restore checks against. Encoded with a checksum trailer: metadata that
//! does not verify is not a checkpoint.

use serde::{Deserialize, Serialize};

use crate::handles::{HandleError, KeyGroupsStateHandle, OperatorStateHandle, StateHandleEnvelope, StreamStateHandle};
use crate::runtime::PluginInfo;

/// The state one subtask acknowledged for a checkpoint (primary parts only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    /// Keyed state.
    pub keyed: Option<KeyGroupsStateHandle>,
    /// Operator (non-keyed) state.
    pub operator: Option<OperatorStateHandle>,
}

impl SubtaskState {
    /// Every stream the state refers to.
    pub fn streams(&self) -> impl Iterator<Item = &StreamStateHandle> {
        self.keyed.as_ref().map(|h| h.stream()).into_iter().chain(self.operator.as_ref().map(|h| h.stream()))
    }

    /// The objects of the primary's shared area it refers to (`shared/<name>`).
    pub fn shared_objects(&self) -> impl Iterator<Item = String> + '_ {
        self.streams().filter_map(StreamStateHandle::shared_object)
    }

    /// Deletes the referenced files that belong to this state alone, logging (not failing on)
    /// errors: used when a checkpoint is aborted or subsumed. Shared ones are left to the
    /// shared-state registry, which knows who else refers to them.
    pub fn discard(&self) {
        self.discard_except(&SubtaskState::default());
    }

    /// The same state with every stream mapped by `f` (to relocate files).
    pub fn map_streams(self, f: impl Fn(StreamStateHandle) -> StreamStateHandle) -> Self {
        SubtaskState { keyed: self.keyed.map(|h| h.map_stream(&f)), operator: self.operator.map(|h| h.map_stream(&f)) }
    }

    /// Like [`discard`](Self::discard), but keeps the files `keep` also references: for a
    /// duplicate acknowledgement, whose state may be the very files a checkpoint already holds.
    pub fn discard_except(&self, keep: &SubtaskState) {
        let kept: Vec<&StreamStateHandle> = keep.streams().collect();
        for stream in self.streams().filter(|s| !kept.contains(s)) {
            if let Err(e) = stream.discard_exclusive() {
                tracing::warn!(error = %e, "could not discard state");
            }
        }
    }
}

/// Everything needed to restore a job from one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// The job.
    pub job_id: String,
    /// The plugin that wrote the state (restores with another format are refused).
    pub plugin: PluginInfo,
    /// Parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Position of the job's source at the checkpoint (records consumed before the barrier).
    pub source_offset: u64,
    /// Per subtask, by index.
    pub subtasks: Vec<SubtaskState>,
}

impl CheckpointMetadata {
    /// The objects of the primary's shared area the checkpoint refers to.
    pub fn shared_objects(&self) -> std::collections::BTreeSet<String> {
        self.subtasks.iter().flat_map(SubtaskState::shared_objects).collect()
    }

    /// Total bytes of primary state.
    pub fn state_size(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.keyed.as_ref().map_or(0, |h| h.state_size()) + s.operator.as_ref().map_or(0, |h| h.state_size()))
            .sum()
    }
}

/// Encodes `value` with the handle envelope and a CRC-32C trailer.
pub fn encode_with_checksum<T: Serialize>(value: &T) -> Result<Vec<u8>, HandleError> {
    let mut bytes = StateHandleEnvelope::encode(value)?;
    let crc = crate::checksum::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Decodes what [`encode_with_checksum`] wrote, refusing damaged bytes.
pub fn decode_with_checksum<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() < 4 {
        return Err(format!("only {} bytes", bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let actual = crate::checksum::crc32c(body);
    if actual != expected {
        return Err(format!("checksum mismatch (content {actual:08x}, recorded {expected:08x})"));
    }
    StateHandleEnvelope::decode(body).map_err(|e| e.to_string())
}
