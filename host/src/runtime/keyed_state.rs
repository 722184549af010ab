//! Host side of the `keyed-state` interface: the snapshot view, entry readers and the
//! restore sink.

use wasmtime::component::Resource;

use super::bindings::v2::snapshot::strategy::keyed_state::{
    Host, HostEntryReader, HostKeyedStateView, HostRestoreSink,
};
use super::bindings::v2::snapshot::strategy::types::{KeyGroupRange as WitRange, StateInfo};
use super::bindings::{EntryBatch, EntryLengths, HostError, WitGroupPart, WitStateKind};
use super::store::InvocationState;
use crate::backend::{EntryCursor, KeyedSnapshot, KeyedStateBackend, StateKind};
use crate::handles::GroupPart;

/// Largest batch the host builds, whatever the guest asks for (one (key, namespace) with a
/// bigger list or map still comes whole).
const MAX_BATCH_BYTES: u32 = 16 << 20;

/// Bytes an entry counts for beyond its own bytes, for the restore amplification limit.
const ENTRY_OVERHEAD: u64 = 16;

/// The host object behind `keyed-state-view`: a point-in-time snapshot of the backend.
#[derive(Debug)]
pub struct KeyedStateViewResource {
    snapshot: KeyedSnapshot,
    /// What the host asks for, per key group of the range (`None`: every group in full).
    parts: Option<Vec<GroupPart>>,
}

impl KeyedStateViewResource {
    /// A view of `snapshot`, every key group to be written in full.
    pub fn new(snapshot: KeyedSnapshot) -> Self {
        KeyedStateViewResource { snapshot, parts: None }
    }

    /// A view of `snapshot` asking for `parts[i]` of the `i`-th key group of its range. A
    /// delta needs the snapshot's change base; without one every group is asked for in full.
    pub fn with_parts(snapshot: KeyedSnapshot, parts: Vec<GroupPart>) -> Self {
        let has_base = snapshot.changes().is_some_and(|c| c.base.is_some());
        let parts = has_base.then_some(parts);
        KeyedStateViewResource { snapshot, parts }
    }

    fn part(&self, key_group: u32) -> GroupPart {
        let index = self.snapshot.key_group_range().index_of(key_group);
        match (&self.parts, index) {
            (Some(parts), Some(i)) => parts.get(i).copied().unwrap_or(GroupPart::Full),
            _ => GroupPart::Full,
        }
    }
}

pub(crate) fn to_wit_part(part: GroupPart) -> WitGroupPart {
    match part {
        GroupPart::Full => WitGroupPart::Full,
        GroupPart::Delta => WitGroupPart::Delta,
    }
}

/// The host object behind `entry-reader`.
#[derive(Debug)]
pub struct EntryReaderResource {
    cursor: EntryCursor,
    // Packed bytes of the batch `next-batch-lengths` returned, for `write-pending`; the buffer
    // is reused from batch to batch.
    pending: Vec<u8>,
    has_pending: bool,
}

impl EntryReaderResource {
    /// Takes the pending batch's bytes (the caller gives the buffer back with
    /// [`restore_buffer`](Self::restore_buffer)), or `None` if there is none.
    pub(crate) fn take_pending(&mut self) -> Option<Vec<u8>> {
        if !self.has_pending {
            return None;
        }
        self.has_pending = false;
        Some(std::mem::take(&mut self.pending))
    }

    /// Returns the buffer taken by [`take_pending`](Self::take_pending), for reuse.
    pub(crate) fn restore_buffer(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        self.pending = buffer;
    }
}

/// The host object behind `restore-sink`: the backend being restored and the key group the
/// current call may write to.
#[derive(Debug)]
pub struct RestoreSinkResource {
    backend: KeyedStateBackend,
    key_group: u32,
}

impl RestoreSinkResource {
    /// A sink restoring into `backend`.
    pub fn new(backend: KeyedStateBackend) -> Self {
        RestoreSinkResource { backend, key_group: 0 }
    }

    /// Sets the key group the next call restores.
    pub fn set_key_group(&mut self, key_group: u32) {
        self.key_group = key_group;
    }

    /// The restored backend.
    pub fn into_backend(self) -> KeyedStateBackend {
        self.backend
    }
}

pub(crate) fn to_wit_kind(kind: StateKind) -> WitStateKind {
    match kind {
        StateKind::Value => WitStateKind::Value,
        StateKind::List => WitStateKind::List,
        StateKind::Map => WitStateKind::Map,
    }
}

fn from_wit_kind(kind: WitStateKind) -> StateKind {
    match kind {
        WitStateKind::Value => StateKind::Value,
        WitStateKind::List => StateKind::List,
        WitStateKind::Map => StateKind::Map,
    }
}

impl HostKeyedStateView for InvocationState {
    fn key_group_range(&mut self, this: Resource<KeyedStateViewResource>) -> wasmtime::Result<WitRange> {
        let range = self.table.get(&this)?.snapshot.key_group_range();
        Ok(WitRange { start: range.start().unwrap_or(0), end: range.end().unwrap_or(0) })
    }

    fn max_parallelism(&mut self, this: Resource<KeyedStateViewResource>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&this)?.snapshot.max_parallelism())
    }

    fn states(&mut self, this: Resource<KeyedStateViewResource>) -> wasmtime::Result<Vec<StateInfo>> {
        let states = self.table.get(&this)?.snapshot.states();
        Ok(states.into_iter().map(|(name, kind)| StateInfo { name, kind: to_wit_kind(kind) }).collect())
    }

    fn entries(
        &mut self,
        this: Resource<KeyedStateViewResource>,
        state: u32,
        key_group: u32,
    ) -> wasmtime::Result<Result<Resource<EntryReaderResource>, HostError>> {
        match self.table.get(&this)?.snapshot.entries(state, key_group) {
            Ok(cursor) => {
                Ok(Ok(self.table.push(EntryReaderResource { cursor, pending: Vec::new(), has_pending: false })?))
            }
            Err(e) => Ok(Err(self.contract(format!("entries({state}, {key_group}): {e}")))),
        }
    }

    fn group_part(&mut self, this: Resource<KeyedStateViewResource>, key_group: u32) -> wasmtime::Result<WitGroupPart> {
        Ok(to_wit_part(self.table.get(&this)?.part(key_group)))
    }

    fn changed_entries(
        &mut self,
        this: Resource<KeyedStateViewResource>,
        state: u32,
        key_group: u32,
    ) -> wasmtime::Result<Result<Resource<EntryReaderResource>, HostError>> {
        self.delta_reader(this, state, key_group, "changed-entries", |(changed, _)| changed)
    }

    fn removed_rows(
        &mut self,
        this: Resource<KeyedStateViewResource>,
        state: u32,
        key_group: u32,
    ) -> wasmtime::Result<Result<Resource<EntryReaderResource>, HostError>> {
        self.delta_reader(this, state, key_group, "removed-rows", |(_, removed)| removed)
    }

    fn drop(&mut self, _rep: Resource<KeyedStateViewResource>) -> wasmtime::Result<()> {
        // Only ever borrowed by the guest: the host deletes it after the call.
        Ok(())
    }
}

impl InvocationState {
    /// Opens `changed-entries` or `removed-rows` (`pick` chooses) of a delta key group.
    fn delta_reader(
        &mut self,
        this: Resource<KeyedStateViewResource>,
        state: u32,
        key_group: u32,
        call: &str,
        pick: impl FnOnce((EntryCursor, EntryCursor)) -> EntryCursor,
    ) -> wasmtime::Result<Result<Resource<EntryReaderResource>, HostError>> {
        let view = self.table.get(&this)?;
        if view.part(key_group) != GroupPart::Delta {
            let why = format!("{call}({state}, {key_group}): key group {key_group} is to be written in full (group-part), not as a delta");
            return Ok(Err(self.contract(why)));
        }
        match view.snapshot.delta_cursors(state, key_group) {
            Ok(cursors) => {
                let cursor = pick(cursors);
                Ok(Ok(self.table.push(EntryReaderResource { cursor, pending: Vec::new(), has_pending: false })?))
            }
            Err(e) => Ok(Err(self.contract(format!("{call}({state}, {key_group}): {e}")))),
        }
    }

    /// Checks that a batch's lengths add up to its bytes and charges it to the restore's
    /// amplification limit; then calls `each` with every entry's key, namespace, user key and
    /// value.
    fn restore_batch(
        &mut self,
        this: &Resource<RestoreSinkResource>,
        call: &str,
        batch: &EntryBatch,
        mut each: impl FnMut(&mut RestoreSinkResource, u32, [&[u8]; 4]) -> Result<(), crate::backend::BackendError>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let key_group = self.table.get(this)?.key_group;
        let total: u64 =
            batch.entries.iter().map(|l| l.key as u64 + l.namespace as u64 + l.user_key as u64 + l.value as u64).sum();
        if total != batch.data.len() as u64 {
            let message = format!(
                "restore-sink.{call}: entry lengths add up to {total} bytes but the batch holds {}",
                batch.data.len()
            );
            return Ok(Err(self.contract(message)));
        }
        // Each entry costs the backend some bookkeeping even when empty: count it, so that
        // millions of empty entries from a few bytes are bounded too.
        if let Err(e) = self.produce(total + ENTRY_OVERHEAD * batch.entries.len() as u64, "the restore") {
            return Ok(Err(e));
        }
        let sink = self.table.get_mut(this)?;
        let mut at = 0usize;
        let mut take = |n: u32| {
            let part = &batch.data[at..at + n as usize];
            at += n as usize;
            part
        };
        for l in &batch.entries {
            let entry = [take(l.key), take(l.namespace), take(l.user_key), take(l.value)];
            if let Err(e) = each(sink, key_group, entry) {
                return Ok(Err(self.contract(format!("restore-sink.{call}: {e}"))));
            }
        }
        Ok(Ok(()))
    }
}

/// Packs the cursor's next batch of about `max_bytes` into `data` (appended) and returns the
/// entries' lengths, or `None` when the cursor is exhausted. Shared by `next-batch` and
/// `next-batch-lengths`, which differ only in where the bytes go.
fn pack_next(cursor: &mut EntryCursor, max_bytes: u32, data: &mut Vec<u8>) -> Option<Vec<EntryLengths>> {
    let mut entries = Vec::new();
    let more = cursor.next_batch(max_bytes.min(MAX_BATCH_BYTES) as usize, |e| {
        data.extend_from_slice(e.key);
        data.extend_from_slice(e.namespace);
        data.extend_from_slice(e.user_key);
        data.extend_from_slice(e.value);
        entries.push(EntryLengths {
            key: e.key.len() as u32,
            namespace: e.namespace.len() as u32,
            user_key: e.user_key.len() as u32,
            value: e.value.len() as u32,
        });
    });
    more.then_some(entries)
}

impl HostEntryReader for InvocationState {
    fn next_batch(
        &mut self,
        this: Resource<EntryReaderResource>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<EntryBatch>> {
        let reader = self.table.get_mut(&this)?;
        let mut data = Vec::with_capacity(max_bytes.min(MAX_BATCH_BYTES) as usize);
        let batch = pack_next(&mut reader.cursor, max_bytes, &mut data).map(|entries| EntryBatch { data, entries });
        self.amplification.consume(batch.as_ref().map_or(0, |b| b.data.len() as u64));
        Ok(batch)
    }

    fn next_batch_lengths(
        &mut self,
        this: Resource<EntryReaderResource>,
        max_bytes: u32,
    ) -> wasmtime::Result<Option<Vec<EntryLengths>>> {
        let reader = self.table.get_mut(&this)?;
        // The buffer is reused from batch to batch.
        let mut data = std::mem::take(&mut reader.pending);
        data.clear();
        let entries = pack_next(&mut reader.cursor, max_bytes, &mut data);
        let consumed = data.len() as u64;
        reader.pending = data;
        reader.has_pending = entries.is_some();
        self.amplification.consume(consumed);
        Ok(entries)
    }

    fn drop(&mut self, rep: Resource<EntryReaderResource>) -> wasmtime::Result<()> {
        // Readers are owned by the guest: dropping one frees it.
        self.table.delete(rep)?;
        Ok(())
    }
}

/// A row of a `replace` call being collected from its consecutive entries.
struct PendingRow {
    key: Vec<u8>,
    namespace: Vec<u8>,
    value: crate::backend::StateValue,
}

impl PendingRow {
    /// Puts the row into the backend: in place of the old one the first time this call
    /// meets it, added to it after that.
    fn flush(
        self,
        sink: &mut RestoreSinkResource,
        state: u32,
        group: u32,
        replaced: &mut std::collections::BTreeSet<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), crate::backend::BackendError> {
        let merge = match self.value {
            crate::backend::StateValue::Value(_) => false,
            _ => !replaced.insert((self.key.clone(), self.namespace.clone())),
        };
        sink.backend.restore_row(state, group, &self.key, &self.namespace, self.value, merge)
    }
}

impl HostRestoreSink for InvocationState {
    fn state(
        &mut self,
        this: Resource<RestoreSinkResource>,
        name: String,
        kind: WitStateKind,
    ) -> wasmtime::Result<Result<u32, HostError>> {
        let sink = self.table.get_mut(&this)?;
        match sink.backend.register_state(&name, from_wit_kind(kind)) {
            Ok(index) => Ok(Ok(index)),
            Err(e) => Ok(Err(self.contract(format!("restore-sink.state({name:?}): {e}")))),
        }
    }

    fn put(
        &mut self,
        this: Resource<RestoreSinkResource>,
        state: u32,
        batch: EntryBatch,
    ) -> wasmtime::Result<Result<(), HostError>> {
        self.restore_batch(&this, "put", &batch, |sink, group, [key, namespace, user_key, value]| {
            sink.backend.restore_entry(state, group, key, namespace, user_key, value)
        })
    }

    fn remove(
        &mut self,
        this: Resource<RestoreSinkResource>,
        state: u32,
        rows: EntryBatch,
    ) -> wasmtime::Result<Result<(), HostError>> {
        self.restore_batch(&this, "remove", &rows, |sink, group, [key, namespace, _, _]| {
            sink.backend.restore_remove(state, group, key, namespace)
        })
    }

    fn replace(
        &mut self,
        this: Resource<RestoreSinkResource>,
        state: u32,
        batch: EntryBatch,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let kind = match self.table.get(&this)?.backend.state_kind(state) {
            Ok(kind) => kind,
            Err(e) => return Ok(Err(self.contract(format!("restore-sink.replace: {e}")))),
        };
        // Consecutive entries of one row are its new value: built whole and put in place of
        // the old row with one lookup. A row met again later in the same call is added to
        // (its old entries went when its first entry arrived), which needs the rows replaced
        // so far; a value row is the same either way, so only list and map rows are recorded.
        let mut replaced = std::collections::BTreeSet::new();
        let mut pending: Option<PendingRow> = None;
        let result =
            self.restore_batch(&this, "replace", &batch, |sink, group, [key, namespace, user_key, value]| {
                match &mut pending {
                    Some(row) if row.key == key && row.namespace == namespace => row.value.push(user_key, value),
                    _ => {
                        if let Some(row) = pending.take() {
                            row.flush(sink, state, group, &mut replaced)?;
                        }
                        let mut row = PendingRow {
                            key: key.to_vec(),
                            namespace: namespace.to_vec(),
                            value: crate::backend::StateValue::empty(kind),
                        };
                        row.value.push(user_key, value);
                        pending = Some(row);
                    }
                }
                Ok(())
            })?;
        if result.is_err() {
            return Ok(result);
        }
        let Some(row) = pending else { return Ok(Ok(())) };
        let sink = self.table.get_mut(&this)?;
        let group = sink.key_group;
        match row.flush(sink, state, group, &mut replaced) {
            Ok(()) => Ok(Ok(())),
            Err(e) => Ok(Err(self.contract(format!("restore-sink.replace: {e}")))),
        }
    }

    fn drop(&mut self, _rep: Resource<RestoreSinkResource>) -> wasmtime::Result<()> {
        // Only ever borrowed by the guest: the host deletes it after the call.
        Ok(())
    }
}

impl Host for InvocationState {}
impl super::bindings::v2::snapshot::strategy::types::Host for InvocationState {}
