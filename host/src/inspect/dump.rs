//! `dump`: a checkpoint's state decoded through a plugin of its format, one row per entry.
//!
//! The bytes are the plugin's format, which only a plugin can read; so a dump is a restore
//! from the primary (verified as always) into backends that are then walked, one subtask at a
//! time so that memory stays that of the largest subtask. A key-group filter restores only
//! those key groups (the offsets say where they are), as a rescaled restore would.

use serde::Serialize;

use super::{CheckpointInspector, InspectError};
use crate::backend::StateValue;
use crate::handles::DistributionMode;
use crate::key_groups::{key_group_for_key, KeyGroupRange};
use crate::restore::{restore_keyed, restore_operator};
use crate::runtime::{CancelToken, Plugin};

/// Bytes as a dump shows them: text when they are printable UTF-8, else hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Bytes {
    /// Printable UTF-8 (no control characters).
    Text(String),
    /// Anything else.
    Hex {
        /// Lower-case hex, two digits per byte.
        hex: String,
    },
}

impl Bytes {
    /// How `bytes` are shown.
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) if !s.chars().any(char::is_control) => Bytes::Text(s.to_string()),
            _ => Bytes::Hex { hex: bytes.iter().map(|b| format!("{b:02x}")).collect() },
        }
    }
}

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Text(s) => write!(f, "{s:?}"),
            Bytes::Hex { hex } => write!(f, "0x{hex}"),
        }
    }
}

/// One entry of a dump: a keyed value, list element or map entry, or an operator list
/// element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpRow {
    /// The state's name.
    pub state: String,
    /// `value`, `list` or `map` (keyed), `operator` (operator list state).
    pub kind: &'static str,
    /// The key group (keyed state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_group: Option<u32>,
    /// The key (keyed state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Bytes>,
    /// The namespace (keyed state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Bytes>,
    /// The map entry's key (map state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_key: Option<Bytes>,
    /// Position in the list (list state; operator state: in the subtask's list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The subtask that held it (operator state; union state is shown once, without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtask: Option<u32>,
    /// How it is redistributed (operator state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<DistributionMode>,
    /// The value.
    pub value: Bytes,
}

/// Which rows a dump shows.
#[derive(Debug, Clone, Default)]
pub struct DumpFilter {
    /// Only these states (all when empty).
    pub states: Vec<String>,
    /// Only keyed state of these key groups (operator state, which has none, is left out).
    pub key_groups: Option<KeyGroupRange>,
}

impl DumpFilter {
    fn wants(&self, state: &str) -> bool {
        self.states.is_empty() || self.states.iter().any(|s| s == state)
    }
}

impl CheckpointInspector {
    /// Decodes checkpoint `id` through `plugin` (of the format that wrote it) and hands every
    /// row `filter` selects to `emit`, subtask by subtask, keyed state by key group then
    /// operator state. Returns the number of rows.
    pub fn dump(
        &self,
        id: u64,
        plugin: &Plugin,
        filter: &DumpFilter,
        emit: &mut dyn FnMut(&DumpRow) -> std::io::Result<()>,
    ) -> Result<u64, InspectError> {
        let metadata = self.metadata(id)?;
        let cancel = CancelToken::new();
        let decode = |source| InspectError::Decode { id, source };
        crate::restore::check_plugin(&metadata, plugin.info()).map_err(decode)?;
        let mut rows = 0u64;
        let mut out = |row: DumpRow| {
            rows += 1;
            emit(&row).map_err(InspectError::Output)
        };
        for (index, state) in metadata.subtasks.iter().enumerate() {
            let Some(handle) = &state.keyed else { continue };
            let mut range = handle.key_group_range();
            if let Some(wanted) = &filter.key_groups {
                range = range.intersection(wanted);
            }
            if range.is_empty() {
                continue;
            }
            let restored = restore_keyed(plugin, &metadata, range, None, &cancel).map_err(decode)?.backend;
            let mut entries = Vec::new();
            for (name, (kind, table)) in restored.contents() {
                if !filter.wants(&name) {
                    continue;
                }
                for ((key, namespace), value) in table {
                    let key_group = key_group_for_key(&key, metadata.max_parallelism);
                    entries.push((key_group, name.clone(), kind, key, namespace, value));
                }
            }
            entries.sort_by(|a, b| (a.0, &a.1, &a.3, &a.4).cmp(&(b.0, &b.1, &b.3, &b.4)));
            tracing::debug!(subtask = index, entries = entries.len(), "decoded keyed state");
            for (key_group, name, kind, key, namespace, value) in entries {
                let row = |user_key: Option<&[u8]>, index: Option<usize>, value: &[u8]| DumpRow {
                    state: name.clone(),
                    kind: match kind {
                        crate::StateKind::Value => "value",
                        crate::StateKind::List => "list",
                        crate::StateKind::Map => "map",
                    },
                    key_group: Some(key_group),
                    key: Some(Bytes::of(&key)),
                    namespace: Some(Bytes::of(&namespace)),
                    user_key: user_key.map(Bytes::of),
                    index,
                    subtask: None,
                    mode: None,
                    value: Bytes::of(value),
                };
                match &value {
                    StateValue::Value(v) => out(row(None, None, v))?,
                    StateValue::List(items) => {
                        for (i, v) in items.iter().enumerate() {
                            out(row(None, Some(i), v))?;
                        }
                    }
                    StateValue::Map(map) => {
                        for (k, v) in map {
                            out(row(Some(k), None, v))?;
                        }
                    }
                }
            }
        }
        if filter.key_groups.is_some() {
            return Ok(rows);
        }
        // At the parallelism it was taken with, every subtask gets back exactly its own
        // operator state, except union state, which every subtask gets whole: shown once.
        let parallelism = metadata.subtasks.len() as u32;
        for index in 0..parallelism {
            if metadata.subtasks[index as usize].operator.is_none() {
                continue;
            }
            let restored = restore_operator(plugin, &metadata, index, parallelism, None, &cancel).map_err(decode)?;
            for (name, mode) in restored.backend.states() {
                if !filter.wants(&name) || (mode == DistributionMode::Union && index > 0) {
                    continue;
                }
                let elements = restored.backend.get(&name).map(<[Vec<u8>]>::to_vec).unwrap_or_default();
                for (i, v) in elements.iter().enumerate() {
                    out(DumpRow {
                        state: name.clone(),
                        kind: "operator",
                        key_group: None,
                        key: None,
                        namespace: None,
                        user_key: None,
                        index: Some(i),
                        subtask: (mode != DistributionMode::Union).then_some(index),
                        mode: Some(mode),
                        value: Bytes::of(v),
                    })?;
                }
            }
        }
        Ok(rows)
    }
}
