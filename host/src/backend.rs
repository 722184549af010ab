//! The in-memory keyed state backend and its point-in-time snapshots.
//!
//! State is stored per state and per key group in a `BTreeMap` behind an `Arc`. Taking a
//! snapshot clones the `Arc`s: O(states × key groups), independent of the amount of state, so
//! the synchronous pause of a checkpoint stays flat as state grows. A write to a key group that
//! a snapshot still shares copies that group first (copy-on-write per key group), so the
//! snapshot keeps seeing exactly the state of the moment it was taken.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::changes::{ChangeCounters, RowChange, SnapshotChanges, Touched};
use crate::key_groups::{key_group_for_key, KeyGroupRange};

/// How a state stores its entries; see the WIT `state-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per (key, namespace).
    Value,
    /// An ordered list of values per (key, namespace).
    List,
    /// A map from user key to value per (key, namespace).
    Map,
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
        })
    }
}

/// What one (key, namespace) holds in a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateValue {
    /// A value state's value.
    Value(Vec<u8>),
    /// A list state's elements.
    List(Vec<Vec<u8>>),
    /// A map state's entries.
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

impl StateValue {
    /// The kind of state that holds such values.
    pub fn kind(&self) -> StateKind {
        match self {
            StateValue::Value(_) => StateKind::Value,
            StateValue::List(_) => StateKind::List,
            StateValue::Map(_) => StateKind::Map,
        }
    }

    /// An empty value of a state of `kind`.
    pub fn empty(kind: StateKind) -> Self {
        match kind {
            StateKind::Value => StateValue::Value(Vec::new()),
            StateKind::List => StateValue::List(Vec::new()),
            StateKind::Map => StateValue::Map(BTreeMap::new()),
        }
    }

    /// Adds one restored entry, as [`KeyedStateBackend::restore_entry`] adds it to a row: a
    /// value replaces, a list element appends, a map entry inserts.
    pub fn push(&mut self, user_key: &[u8], value: &[u8]) {
        match self {
            StateValue::Value(v) => {
                v.clear();
                v.extend_from_slice(value);
            }
            StateValue::List(l) => l.push(value.to_vec()),
            StateValue::Map(m) => {
                m.insert(user_key.to_vec(), value.to_vec());
            }
        }
    }

    /// Adds `other`'s entries (of the same kind) to this one's.
    fn merge(&mut self, other: StateValue) {
        match (self, other) {
            (StateValue::List(l), StateValue::List(more)) => l.extend(more),
            (StateValue::Map(m), StateValue::Map(more)) => m.extend(more),
            (this, other) => *this = other,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            StateValue::Value(v) => v.len(),
            StateValue::List(l) => l.iter().map(Vec::len).sum(),
            StateValue::Map(m) => m.iter().map(|(k, v)| k.len() + v.len()).sum(),
        }
    }

    fn rows(&self) -> usize {
        match self {
            StateValue::Value(_) => 1,
            StateValue::List(l) => l.len(),
            StateValue::Map(m) => m.len(),
        }
    }
}

/// (key, namespace): the address of a value within a state.
pub type RowKey = (Vec<u8>, Vec<u8>);
type GroupTable = BTreeMap<RowKey, StateValue>;

/// Errors of the keyed backend. Each names the state or key group at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No state registered under this name.
    #[error("unknown state {0:?}")]
    UnknownState(String),
    /// A state index that does not exist.
    #[error("unknown state index {0}")]
    UnknownStateIndex(u32),
    /// The state exists with another kind.
    #[error("state {name:?} is a {actual} state, not a {requested} state")]
    WrongKind {
        /// The state's name.
        name: String,
        /// Its registered kind.
        actual: StateKind,
        /// The kind the call needed.
        requested: StateKind,
    },
    /// The key belongs to a key group this backend does not own.
    #[error("key group {key_group} is outside this backend's key-group range {range}")]
    KeyGroupOutOfRange {
        /// The key group.
        key_group: u32,
        /// The backend's range.
        range: KeyGroupRange,
    },
    /// The backend's range does not fit the max parallelism.
    #[error("key-group range {range} does not fit max parallelism {max_parallelism}")]
    InvalidRange {
        /// The range.
        range: KeyGroupRange,
        /// The max parallelism.
        max_parallelism: u32,
    },
    /// A delta was asked for, but there is no base to compute it against.
    #[error("no base state to write a delta against: the backend does not track changes, or no full snapshot was confirmed yet")]
    NoChangeBase,
    /// A restored entry's key hashes to another key group than the one being restored.
    #[error("entry of state {state:?} has a key of key group {actual}, but key group {expected} is being restored")]
    ForeignKey {
        /// The state.
        state: String,
        /// The key group being restored.
        expected: u32,
        /// The key group the key belongs to.
        actual: u32,
    },
}

#[derive(Debug, Clone)]
struct StateTable {
    name: String,
    kind: StateKind,
    groups: Vec<Arc<GroupTable>>,
    /// Per group, the rows changed since the base (only filled while tracking changes).
    touched: Vec<Arc<Touched>>,
}

/// Keyed state of one subtask: the key groups of its range, for every registered state.
///
/// Every entry lives in the key group of its key (Flink's murmur hash), so a snapshot can be
/// split by key group and rescaled; a [`snapshot`](Self::snapshot) is a point-in-time view
/// that shares the groups copy-on-write.
///
/// ```
/// use snapshot_host::{KeyGroupRange, KeyedStateBackend, StateKind};
///
/// let mut keyed = KeyedStateBackend::new(128, KeyGroupRange::new(0, 127))?;
/// let visits = keyed.register_state("visits", StateKind::List)?;
/// keyed.add(visits, b"user-1", b"", b"/home")?;
/// let view = keyed.snapshot();
/// keyed.add(visits, b"user-1", b"", b"/cart")?; // after the view: not in it
/// assert_eq!(keyed.get_list(visits, b"user-1", b"")?.len(), 2);
/// assert_eq!(view.states(), vec![("visits".to_string(), StateKind::List)]);
/// # Ok::<(), snapshot_host::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KeyedStateBackend {
    max_parallelism: u32,
    range: KeyGroupRange,
    states: Vec<StateTable>,
    by_name: HashMap<String, u32>,
    /// Change tracking, when on (see [`crate::changes`]).
    changes: Option<ChangeCounters>,
}

impl KeyedStateBackend {
    /// A backend owning `range` of a job with `max_parallelism` key groups.
    pub fn new(max_parallelism: u32, range: KeyGroupRange) -> Result<Self, BackendError> {
        match range.end() {
            Some(end) if end < max_parallelism => {}
            _ => return Err(BackendError::InvalidRange { range, max_parallelism }),
        }
        Ok(KeyedStateBackend { max_parallelism, range, states: Vec::new(), by_name: HashMap::new(), changes: None })
    }

    /// The key groups this backend owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The job's number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Registers `name` as a state of `kind`, or returns the existing one's index if it has
    /// that kind.
    pub fn register_state(&mut self, name: &str, kind: StateKind) -> Result<u32, BackendError> {
        if let Some(&index) = self.by_name.get(name) {
            let actual = self.states[index as usize].kind;
            if actual != kind {
                return Err(BackendError::WrongKind { name: name.into(), actual, requested: kind });
            }
            return Ok(index);
        }
        let index = self.states.len() as u32;
        let groups = (0..self.range.len()).map(|_| Arc::new(GroupTable::new())).collect();
        let touched = (0..self.range.len()).map(|_| Arc::new(Touched::new())).collect();
        self.states.push(StateTable { name: name.into(), kind, groups, touched });
        self.by_name.insert(name.into(), index);
        Ok(index)
    }

    /// The index of the state `name`.
    pub fn state_index(&self, name: &str) -> Result<u32, BackendError> {
        self.by_name.get(name).copied().ok_or_else(|| BackendError::UnknownState(name.into()))
    }

    /// Name and kind of every state, by index.
    pub fn states(&self) -> Vec<(String, StateKind)> {
        self.states.iter().map(|s| (s.name.clone(), s.kind)).collect()
    }

    /// The key group `key` belongs to, if this backend owns it.
    pub fn key_group_of(&self, key: &[u8]) -> Result<u32, BackendError> {
        let key_group = key_group_for_key(key, self.max_parallelism);
        if self.range.contains(key_group) {
            Ok(key_group)
        } else {
            Err(BackendError::KeyGroupOutOfRange { key_group, range: self.range })
        }
    }

    fn table(&self, state: u32, kind: StateKind) -> Result<&StateTable, BackendError> {
        let table = self.states.get(state as usize).ok_or(BackendError::UnknownStateIndex(state))?;
        if table.kind != kind {
            return Err(BackendError::WrongKind { name: table.name.clone(), actual: table.kind, requested: kind });
        }
        Ok(table)
    }

    fn group_mut(
        &mut self,
        state: u32,
        kind: StateKind,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<&mut GroupTable, BackendError> {
        self.table(state, kind)?;
        let key_group = self.key_group_of(key)?;
        let index = self.range.index_of(key_group).expect("key_group_of checked the range");
        Ok(self.group_at(state, index, key, namespace))
    }

    /// The table of key group `index` (of the range) of `state`, about to change at (key,
    /// namespace): the change is recorded when tracking. Both were checked by the caller.
    fn group_at(&mut self, state: u32, index: usize, key: &[u8], namespace: &[u8]) -> &mut GroupTable {
        let table = &mut self.states[state as usize];
        if let Some(counters) = &mut self.changes {
            counters.sequence += 1;
            Arc::make_mut(&mut table.touched[index]).insert((key.to_vec(), namespace.to_vec()), counters.sequence);
        }
        // Copy-on-write: clones the group only if a snapshot still shares it.
        Arc::make_mut(&mut table.groups[index])
    }

    /// Starts tracking which rows change (for incremental checkpoints). There is no base yet:
    /// the next snapshot must be written in full and confirmed with
    /// [`confirm_base`](Self::confirm_base) before deltas can be written. A no-op when on.
    pub fn track_changes(&mut self) {
        if self.changes.is_none() {
            let tracker = uuid::Uuid::new_v4().as_u64_pair().0;
            self.changes = Some(ChangeCounters { tracker, ..ChangeCounters::default() });
        }
    }

    /// The change counters, while tracking.
    pub fn change_counters(&self) -> Option<ChangeCounters> {
        self.changes
    }

    /// The snapshot taken when the counter was `upto` is now the base deltas are relative to
    /// (its checkpoint completed): changes up to it are forgotten. A base older than the
    /// current one is ignored (checkpoints may complete out of order; the base only moves
    /// forward). `O(changed rows)`, off the synchronous phase.
    pub fn confirm_base(&mut self, upto: u64) {
        let Some(counters) = &mut self.changes else { return };
        if counters.base.is_some_and(|base| upto <= base) || upto > counters.sequence {
            return;
        }
        counters.base = Some(upto);
        for table in &mut self.states {
            for touched in &mut table.touched {
                if touched.values().any(|&seq| seq <= upto) {
                    crate::changes::prune(Arc::make_mut(touched), upto);
                }
            }
        }
    }

    /// The state as it is now is the base (after a restore of the checkpoint it was
    /// restored from): nothing has changed since.
    pub fn mark_base_now(&mut self) {
        if let Some(sequence) = self.changes.map(|c| c.sequence) {
            self.confirm_base(sequence);
            if let Some(c) = &mut self.changes {
                c.base = Some(sequence);
            }
        }
    }

    fn group(&self, state: u32, kind: StateKind, key: &[u8]) -> Result<&GroupTable, BackendError> {
        let table = self.table(state, kind)?;
        let key_group = self.key_group_of(key)?;
        Ok(&table.groups[self.range.index_of(key_group).expect("checked")])
    }

    /// Sets the value of a value state.
    pub fn put(&mut self, state: u32, key: &[u8], namespace: &[u8], value: &[u8]) -> Result<(), BackendError> {
        let group = self.group_mut(state, StateKind::Value, key, namespace)?;
        group.insert((key.to_vec(), namespace.to_vec()), StateValue::Value(value.to_vec()));
        Ok(())
    }

    /// The value of a value state.
    pub fn get(&self, state: u32, key: &[u8], namespace: &[u8]) -> Result<Option<&[u8]>, BackendError> {
        let group = self.group(state, StateKind::Value, key)?;
        Ok(match group.get(&(key.to_vec(), namespace.to_vec())) {
            Some(StateValue::Value(v)) => Some(v.as_slice()),
            _ => None,
        })
    }

    /// Appends to a list state.
    pub fn add(&mut self, state: u32, key: &[u8], namespace: &[u8], element: &[u8]) -> Result<(), BackendError> {
        let group = self.group_mut(state, StateKind::List, key, namespace)?;
        match group.entry((key.to_vec(), namespace.to_vec())).or_insert_with(|| StateValue::List(Vec::new())) {
            StateValue::List(l) => l.push(element.to_vec()),
            _ => unreachable!("a list state's table holds lists"),
        }
        Ok(())
    }

    /// The elements of a list state.
    pub fn get_list(&self, state: u32, key: &[u8], namespace: &[u8]) -> Result<Vec<Vec<u8>>, BackendError> {
        let group = self.group(state, StateKind::List, key)?;
        Ok(match group.get(&(key.to_vec(), namespace.to_vec())) {
            Some(StateValue::List(l)) => l.clone(),
            _ => Vec::new(),
        })
    }

    /// Inserts into a map state.
    pub fn put_map(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(), BackendError> {
        let group = self.group_mut(state, StateKind::Map, key, namespace)?;
        match group.entry((key.to_vec(), namespace.to_vec())).or_insert_with(|| StateValue::Map(BTreeMap::new())) {
            StateValue::Map(m) => {
                m.insert(user_key.to_vec(), value.to_vec());
            }
            _ => unreachable!("a map state's table holds maps"),
        }
        Ok(())
    }

    /// One value of a map state.
    pub fn get_map(
        &self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<Option<&[u8]>, BackendError> {
        let group = self.group(state, StateKind::Map, key)?;
        Ok(match group.get(&(key.to_vec(), namespace.to_vec())) {
            Some(StateValue::Map(m)) => m.get(user_key).map(Vec::as_slice),
            _ => None,
        })
    }

    /// Removes what (key, namespace) holds in a state of any kind.
    pub fn remove(&mut self, state: u32, key: &[u8], namespace: &[u8]) -> Result<(), BackendError> {
        let kind = self.states.get(state as usize).ok_or(BackendError::UnknownStateIndex(state))?.kind;
        self.group_mut(state, kind, key, namespace)?.remove(&(key.to_vec(), namespace.to_vec()));
        Ok(())
    }

    /// Merges a restored entry into `state`: a value replaces, a list element appends, a map
    /// entry inserts. The key must belong to `key_group`, the group being restored: a
    /// strategy cannot smuggle entries into groups it was not asked to restore.
    pub fn restore_entry(
        &mut self,
        state: u32,
        key_group: u32,
        key: &[u8],
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(), BackendError> {
        let (kind, index) = self.restored_group(state, key_group, key)?;
        let group = self.group_at(state, index, key, namespace);
        group
            .entry((key.to_vec(), namespace.to_vec()))
            .or_insert_with(|| StateValue::empty(kind))
            .push(user_key, value);
        Ok(())
    }

    /// Removes a restored row (a delta's removal, or the old entries of a row a delta
    /// replaces) from `state`. The key must belong to `key_group`, as for
    /// [`restore_entry`](Self::restore_entry); a row that does not exist is no error.
    pub fn restore_remove(
        &mut self,
        state: u32,
        key_group: u32,
        key: &[u8],
        namespace: &[u8],
    ) -> Result<(), BackendError> {
        let (_, index) = self.restored_group(state, key_group, key)?;
        self.group_at(state, index, key, namespace).remove(&(key.to_vec(), namespace.to_vec()));
        Ok(())
    }

    /// Restores a delta's changed row whole: `value` takes the place of what (key, namespace)
    /// held, in one lookup, where removing the row and restoring its entries one by one took
    /// one per entry (a chain's restore is mostly such rows). With `merge` it is added to the
    /// row instead: a value replaces, list elements append, map entries insert. The key must
    /// belong to `key_group`, as for [`restore_entry`](Self::restore_entry), and `value` must
    /// be of the state's kind.
    pub fn restore_row(
        &mut self,
        state: u32,
        key_group: u32,
        key: &[u8],
        namespace: &[u8],
        value: StateValue,
        merge: bool,
    ) -> Result<(), BackendError> {
        let (kind, index) = self.restored_group(state, key_group, key)?;
        if value.kind() != kind {
            let name = self.states[state as usize].name.clone();
            return Err(BackendError::WrongKind { name, actual: kind, requested: value.kind() });
        }
        let group = self.group_at(state, index, key, namespace);
        match group.entry((key.to_vec(), namespace.to_vec())) {
            std::collections::btree_map::Entry::Occupied(mut row) if merge => row.get_mut().merge(value),
            std::collections::btree_map::Entry::Occupied(mut row) => {
                row.insert(value);
            }
            std::collections::btree_map::Entry::Vacant(row) => {
                row.insert(value);
            }
        }
        Ok(())
    }

    /// The kind of `state`.
    pub fn state_kind(&self, state: u32) -> Result<StateKind, BackendError> {
        Ok(self.states.get(state as usize).ok_or(BackendError::UnknownStateIndex(state))?.kind)
    }

    /// The kind of `state` and the index of `key_group` in the range, if `key` belongs to
    /// `key_group` (the group being restored) and the backend owns it.
    fn restored_group(&self, state: u32, key_group: u32, key: &[u8]) -> Result<(StateKind, usize), BackendError> {
        let table = self.states.get(state as usize).ok_or(BackendError::UnknownStateIndex(state))?;
        let actual = key_group_for_key(key, self.max_parallelism);
        if actual != key_group {
            return Err(BackendError::ForeignKey { state: table.name.clone(), expected: key_group, actual });
        }
        let index =
            self.range.index_of(key_group).ok_or(BackendError::KeyGroupOutOfRange { key_group, range: self.range })?;
        Ok((table.kind, index))
    }

    /// A point-in-time view for a snapshot: cheap, and unaffected by later writes.
    pub fn snapshot(&self) -> KeyedSnapshot {
        KeyedSnapshot {
            max_parallelism: self.max_parallelism,
            range: self.range,
            states: self
                .states
                .iter()
                .map(|s| SnapshotState {
                    name: s.name.clone(),
                    kind: s.kind,
                    groups: s.groups.clone(),
                    touched: s.touched.clone(),
                })
                .collect(),
            changes: self.changes.map(|c| SnapshotChanges { tracker: c.tracker, upto: c.sequence, base: c.base }),
        }
    }

    /// Number of entries (rows: values, list elements, map entries) over all states.
    pub fn entry_count(&self) -> usize {
        self.states.iter().flat_map(|s| s.groups.iter()).flat_map(|g| g.values()).map(StateValue::rows).sum()
    }

    /// Bytes of keys, namespaces, user keys and values held (not counting overhead).
    pub fn payload_bytes(&self) -> usize {
        self.states
            .iter()
            .flat_map(|s| s.groups.iter())
            .flat_map(|g| g.iter())
            .map(|((k, n), v)| k.len() + n.len() + v.bytes())
            .sum()
    }

    /// All non-empty states by name, with their content merged over key groups. Two backends
    /// hold the same state when their contents are equal, whatever order states were
    /// registered in; used to check restores.
    pub fn contents(&self) -> BTreeMap<String, (StateKind, BTreeMap<RowKey, StateValue>)> {
        let mut out = BTreeMap::new();
        for s in &self.states {
            let merged: BTreeMap<_, _> =
                s.groups.iter().flat_map(|g| g.iter()).map(|(k, v)| (k.clone(), v.clone())).collect();
            if !merged.is_empty() {
                out.insert(s.name.clone(), (s.kind, merged));
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
struct SnapshotState {
    name: String,
    kind: StateKind,
    groups: Vec<Arc<GroupTable>>,
    touched: Vec<Arc<Touched>>,
}

/// A read-only, point-in-time copy of a backend's state, shared with the backend until the
/// backend writes to a group.
#[derive(Debug, Clone)]
pub struct KeyedSnapshot {
    max_parallelism: u32,
    range: KeyGroupRange,
    states: Vec<SnapshotState>,
    changes: Option<SnapshotChanges>,
}

impl KeyedSnapshot {
    /// What this snapshot knows about changes: `None` when the backend did not track them.
    pub fn changes(&self) -> Option<SnapshotChanges> {
        self.changes
    }

    /// The delta of `state` in `key_group` against the base in force when the snapshot was
    /// taken: every row changed since, with its whole value now or its deletion, in row
    /// order. Fails when there is no base (track changes, then confirm a full snapshot).
    pub fn delta(&self, state: u32, key_group: u32) -> Result<Vec<(&RowKey, RowChange<'_>)>, BackendError> {
        let base = self.changes.and_then(|c| c.base).ok_or(BackendError::NoChangeBase)?;
        let s = self.states.get(state as usize).ok_or(BackendError::UnknownStateIndex(state))?;
        let index =
            self.range.index_of(key_group).ok_or(BackendError::KeyGroupOutOfRange { key_group, range: self.range })?;
        Ok(crate::changes::delta(&s.touched[index], &s.groups[index], base).collect())
    }

    /// Rows changed since the base over all states and key groups (`None` without a base):
    /// what decides between a delta and a full key group.
    pub fn changed_rows(&self) -> Option<usize> {
        let base = self.changes?.base?;
        Some(self.states.iter().flat_map(|s| s.touched.iter()).map(|t| t.values().filter(|&&q| q > base).count()).sum())
    }

    /// The key groups of the snapshot.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The job's number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Name and kind of every state, by index.
    pub fn states(&self) -> Vec<(String, StateKind)> {
        self.states.iter().map(|s| (s.name.clone(), s.kind)).collect()
    }

    /// A cursor over the entries of `state` in `key_group`.
    pub fn entries(&self, state: u32, key_group: u32) -> Result<EntryCursor, BackendError> {
        let s = self.states.get(state as usize).ok_or(BackendError::UnknownStateIndex(state))?;
        let index =
            self.range.index_of(key_group).ok_or(BackendError::KeyGroupOutOfRange { key_group, range: self.range })?;
        Ok(EntryCursor { group: s.groups[index].clone(), after: None, done: false })
    }

    /// Cursors over the delta of `state` in `key_group`: the changed rows (each whole, with
    /// its entries now) and the removed rows (each one entry with an empty user key and
    /// value). Costs a copy of the changed rows only.
    pub fn delta_cursors(&self, state: u32, key_group: u32) -> Result<(EntryCursor, EntryCursor), BackendError> {
        let mut changed = GroupTable::new();
        let mut removed = GroupTable::new();
        for (row, change) in self.delta(state, key_group)? {
            match change {
                RowChange::Upsert(value) => changed.insert(row.clone(), value.clone()),
                RowChange::Delete => removed.insert(row.clone(), StateValue::Value(Vec::new())),
            };
        }
        let cursor = |group| EntryCursor { group: Arc::new(group), after: None, done: false };
        Ok((cursor(changed), cursor(removed)))
    }
}

/// One entry as handed to a strategy: key, namespace, user key (map states) and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The namespace.
    pub namespace: &'a [u8],
    /// The map key of a map entry; empty otherwise.
    pub user_key: &'a [u8],
    /// The value, list element or map value.
    pub value: &'a [u8],
}

/// Walks one state's entries in one key group, in (key, namespace) order, batch by batch.
#[derive(Debug)]
pub struct EntryCursor {
    group: Arc<GroupTable>,
    after: Option<RowKey>,
    done: bool,
}

impl EntryCursor {
    /// Emits the entries of the next (key, namespace) rows until about `max_bytes` bytes were
    /// emitted (always at least one row, never half a row). Returns false when nothing was
    /// left.
    pub fn next_batch(&mut self, max_bytes: usize, mut emit: impl FnMut(Entry<'_>)) -> bool {
        if self.done {
            return false;
        }
        let range = match &self.after {
            None => self.group.range::<RowKey, _>(..),
            Some(after) => self.group.range::<RowKey, _>((Bound::Excluded(after), Bound::Unbounded)),
        };
        let mut bytes = 0usize;
        let mut last = None;
        for (row, value) in range {
            if last.is_some() && bytes >= max_bytes {
                break;
            }
            let (key, namespace) = (row.0.as_slice(), row.1.as_slice());
            match value {
                StateValue::Value(v) => emit(Entry { key, namespace, user_key: &[], value: v }),
                StateValue::List(l) => l.iter().for_each(|v| emit(Entry { key, namespace, user_key: &[], value: v })),
                StateValue::Map(m) => {
                    m.iter().for_each(|(uk, v)| emit(Entry { key, namespace, user_key: uk, value: v }))
                }
            }
            bytes += key.len() + namespace.len() + value.bytes();
            last = Some(row);
        }
        match last {
            Some(row) => {
                self.after = Some(row.clone());
                true
            }
            None => {
                self.done = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> KeyedStateBackend {
        KeyedStateBackend::new(128, KeyGroupRange::new(0, 127)).unwrap()
    }

    #[test]
    fn kinds_and_names_are_checked() {
        let mut b = backend();
        let v = b.register_state("counts", StateKind::Value).unwrap();
        assert_eq!(b.register_state("counts", StateKind::Value).unwrap(), v);
        assert!(matches!(b.register_state("counts", StateKind::List), Err(BackendError::WrongKind { .. })));
        assert_eq!(b.state_index("nope").unwrap_err().to_string(), "unknown state \"nope\"");
        assert!(matches!(b.add(v, b"k", b"", b"x"), Err(BackendError::WrongKind { .. })));
        assert!(matches!(b.put(7, b"k", b"", b"x"), Err(BackendError::UnknownStateIndex(7))));
    }

    #[test]
    fn keys_outside_the_range_are_refused() {
        let mut b = KeyedStateBackend::new(128, KeyGroupRange::new(0, 10)).unwrap();
        let s = b.register_state("s", StateKind::Value).unwrap();
        // "hello" is in key group 35.
        let err = b.put(s, b"hello", b"", b"v").unwrap_err();
        assert_eq!(err, BackendError::KeyGroupOutOfRange { key_group: 35, range: KeyGroupRange::new(0, 10) });
        assert!(KeyedStateBackend::new(128, KeyGroupRange::new(0, 128)).is_err());
        assert!(KeyedStateBackend::new(128, KeyGroupRange::EMPTY).is_err());
    }

    #[test]
    fn snapshot_is_isolated_from_later_writes() {
        let mut b = backend();
        let s = b.register_state("s", StateKind::Value).unwrap();
        b.put(s, b"hello", b"", b"1").unwrap();
        let snap = b.snapshot();
        b.put(s, b"hello", b"", b"2").unwrap();
        b.put(s, b"flink", b"", b"3").unwrap();
        let mut seen = Vec::new();
        for kg in 0..128 {
            let mut c = snap.entries(s, kg).unwrap();
            while c.next_batch(1, |e| seen.push((e.key.to_vec(), e.value.to_vec()))) {}
        }
        assert_eq!(seen, vec![(b"hello".to_vec(), b"1".to_vec())]);
        assert_eq!(b.get(s, b"hello", b"").unwrap(), Some(&b"2"[..]));
    }

    #[test]
    fn cursor_batches_cover_every_entry_once() {
        let mut b = backend();
        let l = b.register_state("l", StateKind::List).unwrap();
        let m = b.register_state("m", StateKind::Map).unwrap();
        for i in 0..500u32 {
            let key = format!("k{}", i % 50);
            b.add(l, key.as_bytes(), b"ns", &i.to_le_bytes()).unwrap();
            b.put_map(m, key.as_bytes(), b"", &i.to_le_bytes(), b"v").unwrap();
        }
        let snap = b.snapshot();
        for state in [l, m] {
            let mut rows = 0;
            for kg in 0..128 {
                let mut c = snap.entries(state, kg).unwrap();
                while c.next_batch(7, |_| rows += 1) {}
                assert!(!c.next_batch(7, |_| rows += 1), "an exhausted cursor stays exhausted");
            }
            assert_eq!(rows, 500);
        }
        assert_eq!(b.entry_count(), 1000);
    }

    #[test]
    fn a_restored_row_replaces_the_old_one_or_adds_to_it() {
        let mut b = backend();
        let l = b.register_state("l", StateKind::List).unwrap();
        let m = b.register_state("m", StateKind::Map).unwrap();
        for e in [b"a", b"b"] {
            b.restore_entry(l, 35, b"hello", b"", b"", e).unwrap();
            b.restore_entry(m, 35, b"hello", b"", e, e).unwrap();
        }
        let mut list = StateValue::empty(StateKind::List);
        list.push(b"", b"c");
        b.restore_row(l, 35, b"hello", b"", list.clone(), false).unwrap();
        assert_eq!(b.get_list(l, b"hello", b"").unwrap(), vec![b"c".to_vec()]);
        b.restore_row(l, 35, b"hello", b"", list.clone(), true).unwrap();
        assert_eq!(b.get_list(l, b"hello", b"").unwrap(), vec![b"c".to_vec(), b"c".to_vec()]);
        let mut map = StateValue::empty(StateKind::Map);
        map.push(b"b", b"B");
        b.restore_row(m, 35, b"hello", b"", map.clone(), false).unwrap();
        assert_eq!(b.get_map(m, b"hello", b"", b"a").unwrap(), None, "replaced whole");
        assert_eq!(b.get_map(m, b"hello", b"", b"b").unwrap(), Some(&b"B"[..]));
        // The key's group and the value's kind are checked.
        let err = b.restore_row(l, 3, b"hello", b"", list.clone(), false).unwrap_err();
        assert_eq!(err, BackendError::ForeignKey { state: "l".into(), expected: 3, actual: 35 });
        let err = b.restore_row(l, 35, b"hello", b"", map, false).unwrap_err();
        assert!(matches!(err, BackendError::WrongKind { actual: StateKind::List, requested: StateKind::Map, .. }));
    }

    #[test]
    fn restore_entry_refuses_foreign_keys() {
        let mut b = backend();
        let s = b.register_state("s", StateKind::Value).unwrap();
        let err = b.restore_entry(s, 3, b"hello", b"", b"", b"v").unwrap_err();
        assert_eq!(err, BackendError::ForeignKey { state: "s".into(), expected: 3, actual: 35 });
        b.restore_entry(s, 35, b"hello", b"", b"", b"v").unwrap();
        assert_eq!(b.get(s, b"hello", b"").unwrap(), Some(&b"v"[..]));
    }
}
