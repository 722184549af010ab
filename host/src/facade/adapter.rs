//! An adapter for state an engine already keeps in its own map: load it into a subtask's
//! backend (the host places each key in its key group), snapshot it like any state, and get
//! a map back from a restore.

use crate::backend::{KeyedStateBackend, StateKind, StateValue};
use crate::error::Result;

use super::subtask::Subtask;

/// Keyed value state named `name`, exchanged with a caller's map (`HashMap`, `BTreeMap`, or
/// anything that iterates `(key, value)` pairs of bytes).
///
/// ```
/// # fn main() -> snapshot_host::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// use std::collections::HashMap;
/// use snapshot_host::{MapState, SnapshotHost};
///
/// let host = SnapshotHost::builder("sessions")
///     .plugin_file(snapshot_host::doc_plugin_path())
///     .checkpoint_storage(dir.path())
///     .build()?;
/// let mut job = host.recover()?;
/// let sessions = MapState::new("sessions");
/// let mine: HashMap<Vec<u8>, Vec<u8>> = HashMap::from([(b"user-1".to_vec(), b"cart=3".to_vec())]);
///
/// let subtask = &job.subtasks[0].subtask;
/// let keyed = sessions.load(subtask, &mine)?;
/// let barrier = job.coordinator.trigger(0).unwrap();
/// let ack = subtask.snapshot(&barrier, &keyed, &job.subtasks[0].operators).run()?;
/// job.coordinator.acknowledge(ack)?;
///
/// let restored = host.recover()?;
/// let back: HashMap<Vec<u8>, Vec<u8>> = sessions.collect(&restored.subtasks[0].keyed);
/// assert_eq!(back, mine);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MapState {
    name: String,
}

impl MapState {
    /// The value state `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MapState { name: name.into() }
    }

    /// A backend for `subtask`'s key groups holding `entries` as this value state. Every key
    /// must belong to the subtask ([`SnapshotHost::subtask_of_key`](super::SnapshotHost::subtask_of_key)
    /// says which one that is); a key of another subtask is an error naming its key group.
    pub fn load<'a, K, V>(
        &self,
        subtask: &Subtask,
        entries: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<KeyedStateBackend>
    where
        K: AsRef<[u8]> + ?Sized + 'a,
        V: AsRef<[u8]> + ?Sized + 'a,
    {
        let (mut keyed, _) = subtask.empty_state()?;
        self.load_into(&mut keyed, entries)?;
        Ok(keyed)
    }

    /// Adds `entries` to `keyed` as this value state (registering it if needed).
    pub fn load_into<'a, K, V>(
        &self,
        keyed: &mut KeyedStateBackend,
        entries: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<()>
    where
        K: AsRef<[u8]> + ?Sized + 'a,
        V: AsRef<[u8]> + ?Sized + 'a,
    {
        let state = keyed.register_state(&self.name, StateKind::Value)?;
        for (key, value) in entries {
            keyed.put(state, key.as_ref(), b"", value.as_ref())?;
        }
        Ok(())
    }

    /// This value state's entries in `keyed` (empty when the backend does not hold it), in
    /// any collection of `(key, value)` pairs.
    pub fn collect<M: FromIterator<(Vec<u8>, Vec<u8>)>>(&self, keyed: &KeyedStateBackend) -> M {
        let mut contents = keyed.contents();
        let rows = contents.remove(&self.name).map(|(_, rows)| rows).unwrap_or_default();
        rows.into_iter()
            .filter_map(|((key, _namespace), value)| match value {
                StateValue::Value(v) => Some((key, v)),
                _ => None,
            })
            .collect()
    }
}
