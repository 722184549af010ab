//! What a completed checkpoint records: per subtask the handles of its primary state, and
//! the job-level facts a restore checks against. Encoded with a checksum trailer: metadata that
//! does not verify is not a checkpoint.

use serde::{Deserialize, Serialize};

use crate::handles::{
    HandleError, KeyGroupsStateHandle, KeyedChain, OperatorStateHandle, StateHandleEnvelope, StreamStateHandle,
};
use crate::runtime::PluginInfo;

/// The state one subtask acknowledged for a checkpoint (primary parts only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    /// Keyed state.
    pub keyed: Option<KeyGroupsStateHandle>,
    /// Operator (non-keyed) state.
    pub operator: Option<OperatorStateHandle>,
    /// With incremental checkpoints: what `keyed` holds per key group (full or delta) and the
    /// earlier checkpoints' keyed streams its deltas build on. `None` for a full snapshot.
    pub keyed_chain: Option<KeyedChain>,
}

impl SubtaskState {
    /// Every stream the state refers to, the earlier streams of its chain included.
    pub fn streams(&self) -> impl Iterator<Item = &StreamStateHandle> {
        self.keyed
            .as_ref()
            .map(|h| h.stream())
            .into_iter()
            .chain(self.operator.as_ref().map(|h| h.stream()))
            .chain(self.keyed_chain.iter().flat_map(KeyedChain::streams))
    }

    /// The keyed streams a restore of this state reads, oldest first, each with what it holds
    /// per key group: the chain's links, or the one full snapshot.
    pub fn keyed_links(&self, format_version: u32) -> Vec<crate::handles::ChainLink> {
        match (&self.keyed, &self.keyed_chain) {
            (Some(own), Some(chain)) => chain.links(own),
            (Some(own), None) => vec![crate::handles::ChainLink {
                checkpoint_id: 0,
                handle: own.clone(),
                parts: vec![crate::handles::GroupPart::Full; own.key_group_range().len() as usize],
                format_version,
            }],
            (None, _) => Vec::new(),
        }
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
        SubtaskState {
            keyed: self.keyed.map(|h| h.map_stream(&f)),
            operator: self.operator.map(|h| h.map_stream(&f)),
            keyed_chain: self.keyed_chain.map(|c| c.map_streams(&f)),
        }
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

    /// With incremental checkpoints: how many key groups this checkpoint wrote as deltas, and
    /// how many it wrote in all (the rest in full, by compaction or for want of a base).
    /// `None` for a full checkpoint. Says why an incremental checkpoint is as big as it is.
    pub fn delta_groups(&self) -> Option<(usize, usize)> {
        let chains: Vec<&KeyedChain> = self.subtasks.iter().filter_map(|s| s.keyed_chain.as_ref()).collect();
        let parts = || chains.iter().flat_map(|c| &c.parts);
        (!chains.is_empty())
            .then(|| (parts().filter(|p| **p == crate::handles::GroupPart::Delta).count(), parts().count()))
    }

    /// Total bytes of primary state.
    pub fn state_size(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.keyed.as_ref().map_or(0, |h| h.state_size()) + s.operator.as_ref().map_or(0, |h| h.state_size()))
            .sum()
    }
}

/// Checkpoint metadata as builds before incremental checkpoints wrote it (envelope version 2),
/// read so that their checkpoints stay restorable.
#[derive(Deserialize)]
pub(crate) struct LegacyCheckpointMetadata {
    checkpoint_id: u64,
    job_id: String,
    plugin: PluginInfo,
    parallelism: u32,
    max_parallelism: u32,
    source_offset: u64,
    subtasks: Vec<LegacySubtaskState>,
}

#[derive(Deserialize)]
struct LegacySubtaskState {
    keyed: Option<KeyGroupsStateHandle>,
    operator: Option<OperatorStateHandle>,
}

impl From<LegacyCheckpointMetadata> for CheckpointMetadata {
    fn from(m: LegacyCheckpointMetadata) -> Self {
        CheckpointMetadata {
            checkpoint_id: m.checkpoint_id,
            job_id: m.job_id,
            plugin: m.plugin,
            parallelism: m.parallelism,
            max_parallelism: m.max_parallelism,
            source_offset: m.source_offset,
            subtasks: m
                .subtasks
                .into_iter()
                .map(|s| SubtaskState { keyed: s.keyed, operator: s.operator, keyed_chain: None })
                .collect(),
        }
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
    let body = verified_body(bytes)?;
    StateHandleEnvelope::decode(body).map_err(|e| e.to_string())
}

/// Decodes checkpoint metadata, also as written by the previous build (see
/// [`LegacyCheckpointMetadata`]).
pub(crate) fn decode_metadata(bytes: &[u8]) -> Result<CheckpointMetadata, String> {
    let body = verified_body(bytes)?;
    StateHandleEnvelope::decode_or_legacy::<CheckpointMetadata, LegacyCheckpointMetadata>(body)
        .map_err(|e| e.to_string())
}

fn verified_body(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 4 {
        return Err(format!("only {} bytes", bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let actual = crate::checksum::crc32c(body);
    if actual != expected {
        return Err(format!("checksum mismatch (content {actual:08x}, recorded {expected:08x})"));
    }
    Ok(body)
}
