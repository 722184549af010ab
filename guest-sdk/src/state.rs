//! Typed wrappers over the host's keyed-state resources.

use std::ops::RangeInclusive;

use crate::__private::bindings::snapshot::strategy::keyed_state as wit;
use crate::__private::bindings::snapshot::strategy::types as wit_types;
use crate::{Error, Result};

/// How the host stores a keyed state, and so how restored entries are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// One value per (key, namespace).
    Value,
    /// An ordered list per (key, namespace), one entry per element.
    List,
    /// A map per (key, namespace), one entry per map entry; the user key is the map key.
    Map,
}

impl StateKind {
    /// A stable one-byte code, for formats that store the kind.
    pub fn to_u8(self) -> u8 {
        match self {
            StateKind::Value => 0,
            StateKind::List => 1,
            StateKind::Map => 2,
        }
    }

    /// The kind stored as `code` by [`to_u8`](Self::to_u8); an unknown code is an error
    /// (usually a corrupted or misaligned snapshot).
    pub fn from_u8(code: u8) -> Result<Self> {
        match code {
            0 => Ok(StateKind::Value),
            1 => Ok(StateKind::List),
            2 => Ok(StateKind::Map),
            other => Err(Error::msg(format!("unknown state kind code {other}"))),
        }
    }
}

impl From<wit_types::StateKind> for StateKind {
    fn from(k: wit_types::StateKind) -> Self {
        match k {
            wit_types::StateKind::Value => StateKind::Value,
            wit_types::StateKind::List => StateKind::List,
            wit_types::StateKind::Map => StateKind::Map,
        }
    }
}

impl From<StateKind> for wit_types::StateKind {
    fn from(k: StateKind) -> Self {
        match k {
            StateKind::Value => wit_types::StateKind::Value,
            StateKind::List => wit_types::StateKind::List,
            StateKind::Map => wit_types::StateKind::Map,
        }
    }
}

/// A registered state: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    /// Name the job registered the state under.
    pub name: String,
    /// How it is stored.
    pub kind: StateKind,
}

/// Identifies a strategy and the format it writes; see [`crate::SnapshotStrategy::describe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Short name of the strategy.
    pub name: String,
    /// Version of the plugin build.
    pub version: String,
    /// Identifier of the byte format; the host refuses to restore another format.
    pub format: String,
    /// Version of the format.
    pub format_version: u32,
    /// Whether equal state always gives identical bytes (checked by the plugin harness).
    pub deterministic: bool,
    /// Whether the strategy writes and restores deltas: a job that checkpoints incrementally
    /// then asks it for deltas (see [`KeyedStateView::group_part`]); otherwise it is asked for
    /// full key groups only.
    pub incremental: bool,
}

impl PluginInfo {
    /// A deterministic, non-incremental strategy's description.
    pub fn new(name: &str, version: &str, format: &str, format_version: u32) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            format: format.into(),
            format_version,
            deterministic: true,
            incremental: false,
        }
    }

    /// The same description for a strategy that writes deltas when asked
    /// ([`GroupPart::Delta`]) and restores them through [`RestoreSink::replace`] and
    /// [`RestoreSink::remove`].
    pub fn incremental(mut self) -> Self {
        self.incremental = true;
        self
    }
}

/// What the host asks a snapshot to write for one key group, and what a restore call reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupPart {
    /// Every entry of the key group ([`KeyedStateView::entries`]); restored with
    /// [`RestoreSink::put`] into an empty group.
    Full,
    /// Only the rows changed ([`KeyedStateView::changed_entries`], each row whole) and removed
    /// ([`KeyedStateView::removed_rows`]) since the checkpoint before; restored on top of the
    /// group's full part and earlier deltas with [`RestoreSink::replace`] and
    /// [`RestoreSink::remove`].
    Delta,
}

impl From<wit_types::GroupPart> for GroupPart {
    fn from(p: wit_types::GroupPart) -> Self {
        match p {
            wit_types::GroupPart::Full => GroupPart::Full,
            wit_types::GroupPart::Delta => GroupPart::Delta,
        }
    }
}

impl From<PluginInfo> for wit_types::PluginInfo {
    fn from(p: PluginInfo) -> Self {
        wit_types::PluginInfo {
            name: p.name,
            version: p.version,
            format: p.format,
            format_version: p.format_version,
            deterministic: p.deterministic,
            incremental: p.incremental,
        }
    }
}

/// A read-only, point-in-time view of a subtask's keyed state.
pub struct KeyedStateView<'a> {
    view: &'a wit::KeyedStateView,
}

impl<'a> KeyedStateView<'a> {
    pub(crate) fn new(view: &'a wit::KeyedStateView) -> Self {
        KeyedStateView { view }
    }

    /// The key groups to write, in the order they must be written.
    pub fn key_group_range(&self) -> RangeInclusive<u32> {
        let r = self.view.key_group_range();
        r.start..=r.end
    }

    /// The total number of key groups of the job.
    pub fn max_parallelism(&self) -> u32 {
        self.view.max_parallelism()
    }

    /// Every registered state; the position in this list is the state index.
    pub fn states(&self) -> Vec<StateInfo> {
        self.view.states().into_iter().map(|s| StateInfo { name: s.name, kind: s.kind.into() }).collect()
    }

    /// The entries of state `state` (an index into [`states`](Self::states)) in `key_group`.
    pub fn entries(&self, state: u32, key_group: u32) -> Result<Entries> {
        Ok(Entries { reader: self.view.entries(state, key_group)? })
    }

    /// What to write for `key_group`: always [`GroupPart::Full`] unless the strategy is
    /// [`incremental`](PluginInfo::incremental), the job checkpoints incrementally and the
    /// group has a chain to add a delta to. The host decides per group (it rewrites a group in
    /// full when its chain of deltas grew too long), so one snapshot may hold both.
    pub fn group_part(&self, key_group: u32) -> GroupPart {
        self.view.group_part(key_group).into()
    }

    /// For a [`GroupPart::Delta`] group: the entries of the rows of state `state` that changed
    /// since the checkpoint before, each row whole (a changed list or map comes with all its
    /// entries), in the order of [`entries`](Self::entries).
    pub fn changed_entries(&self, state: u32, key_group: u32) -> Result<Entries> {
        Ok(Entries { reader: self.view.changed_entries(state, key_group)? })
    }

    /// For a [`GroupPart::Delta`] group: the rows of state `state` removed since the
    /// checkpoint before, one entry each with its key and namespace (user key and value are
    /// empty).
    pub fn removed_rows(&self, state: u32, key_group: u32) -> Result<Entries> {
        Ok(Entries { reader: self.view.removed_rows(state, key_group)? })
    }
}

impl std::fmt::Debug for KeyedStateView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStateView").field("key_groups", &self.key_group_range()).finish()
    }
}

/// The entries of one state in one key group, fetched from the host in batches.
#[derive(Debug)]
pub struct Entries {
    reader: wit::EntryReader,
}

impl Entries {
    /// The next batch of about `max_bytes` bytes, or `None` when there are no more entries.
    pub fn next_batch(&mut self, max_bytes: u32) -> Option<Batch> {
        self.reader.next_batch(max_bytes).map(Batch::from_wit)
    }

    /// Like [`next_batch`](Self::next_batch), but only the entries' lengths come into the
    /// guest: their packed bytes stay on the host until [`SnapshotWriter::write_pending`](crate::SnapshotWriter::write_pending)
    /// appends them to the snapshot. For formats that store entries verbatim this avoids
    /// copying every byte into the guest and back.
    pub fn next_pending(&mut self, max_bytes: u32) -> Option<PendingBatch> {
        self.reader.next_batch_lengths(max_bytes).map(|lengths| PendingBatch { lengths })
    }

    pub(crate) fn reader(&self) -> &wit::EntryReader {
        &self.reader
    }
}

/// The lengths of a batch whose bytes wait on the host; see [`Entries::next_pending`].
#[derive(Debug, Clone)]
pub struct PendingBatch {
    lengths: Vec<wit_types::EntryLengths>,
}

impl PendingBatch {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// (key, namespace, user key, value) lengths of each entry, in order.
    pub fn lengths(&self) -> impl Iterator<Item = (u32, u32, u32, u32)> + '_ {
        self.lengths.iter().map(|l| (l.key, l.namespace, l.user_key, l.value))
    }

    /// Total bytes of the entries.
    pub fn data_len(&self) -> u64 {
        self.lengths().map(|(k, n, u, v)| k as u64 + n as u64 + u as u64 + v as u64).sum()
    }
}

/// One entry, borrowed from its [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key (what the job keyed the stream by), serialized.
    pub key: &'a [u8],
    /// The namespace (for example a window), serialized; often empty.
    pub namespace: &'a [u8],
    /// The map key for map states; empty otherwise.
    pub user_key: &'a [u8],
    /// The value, list element or map value.
    pub value: &'a [u8],
}

/// A batch of entries as the host packed them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    data: Vec<u8>,
    lengths: Vec<wit_types::EntryLengths>,
}

impl Batch {
    fn from_wit(b: wit_types::EntryBatch) -> Self {
        Batch { data: b.data, lengths: b.entries }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether the batch has no entries.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The packed bytes of all entries: key, namespace, user key and value of each, in order.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        let mut at = 0usize;
        self.lengths.iter().map(move |l| {
            let mut take = |n: u32| {
                let s = &self.data[at..at + n as usize];
                at += n as usize;
                s
            };
            Entry { key: take(l.key), namespace: take(l.namespace), user_key: take(l.user_key), value: take(l.value) }
        })
    }
}

/// Packs entries for [`RestoreSink::put`]. Reuse one builder (`clear` it) to avoid
/// reallocating per batch. It holds the host's record type directly, so `put` passes it
/// without a copy.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    batch: wit_types::EntryBatch,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder { batch: wit_types::EntryBatch { data: Vec::new(), entries: Vec::new() } }
    }
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one entry.
    pub fn push(&mut self, key: &[u8], namespace: &[u8], user_key: &[u8], value: &[u8]) {
        let data = &mut self.batch.data;
        data.extend_from_slice(key);
        data.extend_from_slice(namespace);
        data.extend_from_slice(user_key);
        data.extend_from_slice(value);
        self.batch.entries.push(wit_types::EntryLengths {
            key: key.len() as u32,
            namespace: namespace.len() as u32,
            user_key: user_key.len() as u32,
            value: value.len() as u32,
        });
    }

    /// Appends one entry whose four parts are already packed, in order, at the end of the
    /// buffer returned by [`data_mut`](Self::data_mut). Lets a decoder read straight into
    /// the batch without an intermediate copy.
    pub fn push_packed(&mut self, key: u32, namespace: u32, user_key: u32, value: u32) {
        self.batch.entries.push(wit_types::EntryLengths { key, namespace, user_key, value });
    }

    /// The packed byte buffer, for decoders that append entry bytes directly.
    pub fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.batch.data
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.batch.entries.len()
    }

    /// Whether no entry was pushed since the last `clear`.
    pub fn is_empty(&self) -> bool {
        self.batch.entries.is_empty()
    }

    /// Bytes of entry data held.
    pub fn data_len(&self) -> usize {
        self.batch.data.len()
    }

    /// Removes all entries, keeping the allocations.
    pub fn clear(&mut self) {
        self.batch.data.clear();
        self.batch.entries.clear();
    }
}

/// Where restored entries go.
pub struct RestoreSink<'a> {
    sink: &'a wit::RestoreSink,
}

impl<'a> RestoreSink<'a> {
    pub(crate) fn new(sink: &'a wit::RestoreSink) -> Self {
        RestoreSink { sink }
    }

    /// Registers (or finds) a state and returns the index to `put` entries into.
    pub fn state(&mut self, name: &str, kind: StateKind) -> Result<u32> {
        Ok(self.sink.state(name, kind.into())?)
    }

    /// Adds the entries of `batch` to state `state`. The host checks that every key belongs
    /// to the key group being restored.
    pub fn put(&mut self, state: u32, batch: &BatchBuilder) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.sink.put(state, &batch.batch)?;
        Ok(())
    }

    /// Removes every entry of each row (key, namespace) of `rows` from state `state`: the
    /// removed rows of a delta. Only each entry's key and namespace count.
    pub fn remove(&mut self, state: u32, rows: &BatchBuilder) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.sink.remove(state, &rows.batch)?;
        Ok(())
    }

    /// Replaces rows of state `state`: each row (key, namespace) of `batch` loses what it had,
    /// then gets the batch's entries, so a changed list or map of a delta is restored whole
    /// rather than appended to. Give each row whole in one call.
    pub fn replace(&mut self, state: u32, batch: &BatchBuilder) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.sink.replace(state, &batch.batch)?;
        Ok(())
    }
}

impl std::fmt::Debug for RestoreSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreSink").finish_non_exhaustive()
    }
}
