//! Operator (non-keyed) list state of one subtask: named lists of elements with a
//! redistribution mode, copy-on-write like the keyed backend so a snapshot view is cheap.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::handles::DistributionMode;

/// Errors of the operator backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorStateError {
    /// No state of that name.
    #[error("unknown operator state {0:?}")]
    UnknownState(String),
    /// Registered with another mode.
    #[error("operator state {name:?} is registered as {actual:?}, not {requested:?}")]
    WrongMode {
        /// The state.
        name: String,
        /// Its mode.
        actual: DistributionMode,
        /// The mode asked for.
        requested: DistributionMode,
    },
    /// A state index that does not exist.
    #[error("unknown operator state index {0}")]
    UnknownIndex(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ListState {
    mode: DistributionMode,
    elements: Arc<Vec<Vec<u8>>>,
}

/// A subtask's operator list states, by name (in name order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStateBackend {
    states: BTreeMap<String, ListState>,
}

impl OperatorStateBackend {
    /// No states.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name` with `mode` (idempotent for the same mode).
    pub fn register(&mut self, name: &str, mode: DistributionMode) -> Result<(), OperatorStateError> {
        match self.states.get(name) {
            Some(s) if s.mode != mode => {
                Err(OperatorStateError::WrongMode { name: name.into(), actual: s.mode, requested: mode })
            }
            Some(_) => Ok(()),
            None => {
                self.states.insert(name.into(), ListState { mode, elements: Arc::default() });
                Ok(())
            }
        }
    }

    /// The elements of `name`.
    pub fn get(&self, name: &str) -> Result<&[Vec<u8>], OperatorStateError> {
        self.states
            .get(name)
            .map(|s| s.elements.as_slice())
            .ok_or_else(|| OperatorStateError::UnknownState(name.into()))
    }

    /// Replaces the elements of `name`.
    pub fn update(&mut self, name: &str, elements: Vec<Vec<u8>>) -> Result<(), OperatorStateError> {
        let state = self.states.get_mut(name).ok_or_else(|| OperatorStateError::UnknownState(name.into()))?;
        state.elements = Arc::new(elements);
        Ok(())
    }

    /// Appends one element to `name`.
    pub fn add(&mut self, name: &str, element: Vec<u8>) -> Result<(), OperatorStateError> {
        let state = self.states.get_mut(name).ok_or_else(|| OperatorStateError::UnknownState(name.into()))?;
        Arc::make_mut(&mut state.elements).push(element);
        Ok(())
    }

    /// Name and mode of every state, in index order.
    pub fn states(&self) -> Vec<(String, DistributionMode)> {
        self.states.iter().map(|(n, s)| (n.clone(), s.mode)).collect()
    }

    /// Whether no state is registered.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// A point-in-time view (shares the element lists until they are written).
    pub fn snapshot(&self) -> OperatorSnapshot {
        OperatorSnapshot { states: self.states.iter().map(|(n, s)| (n.clone(), s.mode, s.elements.clone())).collect() }
    }
}

/// A read-only, point-in-time copy of operator state.
#[derive(Debug, Clone)]
pub struct OperatorSnapshot {
    states: Vec<SharedList>,
}

/// A state's name, mode and elements, shared with the backend until it writes.
type SharedList = (String, DistributionMode, Arc<Vec<Vec<u8>>>);

impl OperatorSnapshot {
    /// Name and mode of every state, in index order.
    pub fn states(&self) -> Vec<(String, DistributionMode)> {
        self.states.iter().map(|(n, m, _)| (n.clone(), *m)).collect()
    }

    /// Number of elements of each state, in index order.
    pub fn element_counts(&self) -> Vec<usize> {
        self.states.iter().map(|(_, _, e)| e.len()).collect()
    }

    /// The elements of state `index`.
    pub fn elements(&self, index: u32) -> Result<Arc<Vec<Vec<u8>>>, OperatorStateError> {
        self.states.get(index as usize).map(|(_, _, e)| e.clone()).ok_or(OperatorStateError::UnknownIndex(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_add_snapshot_isolation() {
        let mut b = OperatorStateBackend::new();
        b.register("offsets", DistributionMode::SplitDistribute).unwrap();
        assert!(matches!(b.register("offsets", DistributionMode::Union), Err(OperatorStateError::WrongMode { .. })));
        b.add("offsets", vec![1]).unwrap();
        let snap = b.snapshot();
        b.add("offsets", vec![2]).unwrap();
        assert_eq!(snap.elements(0).unwrap().as_slice(), &[vec![1u8]]);
        assert_eq!(b.get("offsets").unwrap().len(), 2);
        assert!(b.add("nope", vec![]).is_err());
    }
}
