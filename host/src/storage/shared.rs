//! The shared-state registry: which checkpoints refer to each object in the primary's
//! `shared/` area, so that an object several checkpoints share (the base files of incremental
//! checkpoints) is deleted exactly when the last checkpoint referring to it goes.
//!
//! References are held by checkpoint id, as sets rather than counts: registering the same
//! checkpoint's references twice (a duplicate acknowledgement, a rebuild over a registry that
//! already knows them) can never inflate a count and leak a file, and releasing a checkpoint
//! twice can never drop a count below what other checkpoints hold.
//!
//! Three rules make it exact under faults, where Flink's registry (which counts, and learns of
//! a checkpoint's references only when it completes) can delete a file an in-flight
//! checkpoint is about to refer to:
//! - a pending checkpoint *pins* every object the completed checkpoints held when it was
//!   triggered, so whatever base its subtasks build on survives until it completes or aborts;
//! - an object is deleted only after the metadata of the last checkpoint naming it is gone: a
//!   crash in between leaks the object, never leaves metadata pointing at nothing;
//! - nothing is persisted besides the checkpoints' own metadata: at start-up the registry is
//!   rebuilt from every completed checkpoint's metadata and the `shared/` area is swept of
//!   objects none of them names (the leaks of the previous rule, and the uploads of
//!   checkpoints that never completed). The sweep is skipped when any metadata cannot be read,
//!   since what that checkpoint refers to is then unknown.

use std::collections::{BTreeMap, BTreeSet};

/// The directory of shared state below a job's root.
pub const SHARED_DIR: &str = "shared";

/// Who refers to which shared object. Keys are object paths relative to the job's root
/// (`shared/<name>`), the same on every backend.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SharedStateRegistry {
    /// Object → checkpoints that refer to it (completed ones by their metadata, pending ones
    /// by their acknowledgements and pins).
    holders: BTreeMap<String, BTreeSet<u64>>,
    /// Checkpoint → objects it holds: the inverse, so releasing a checkpoint is proportional
    /// to what it holds.
    held: BTreeMap<u64, BTreeSet<String>>,
}

impl SharedStateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checkpoint `checkpoint` refers to `objects` (in addition to what it held before).
    pub fn register<I, S>(&mut self, checkpoint: u64, objects: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for object in objects {
            let object = object.into();
            self.holders.entry(object.clone()).or_default().insert(checkpoint);
            self.held.entry(checkpoint).or_default().insert(object);
        }
    }

    /// Pins, for pending checkpoint `pending`, everything the checkpoints in `completed` hold:
    /// the base its subtasks may build on stays until `pending` completes or aborts.
    pub fn pin(&mut self, pending: u64, completed: impl IntoIterator<Item = u64>) {
        let inherited: BTreeSet<String> =
            completed.into_iter().filter_map(|c| self.held.get(&c)).flatten().cloned().collect();
        self.register(pending, inherited);
    }

    /// Replaces what `checkpoint` holds with exactly `objects` (its metadata, once committed,
    /// drops its pins). Returns the objects nobody holds any longer.
    pub fn settle<I, S>(&mut self, checkpoint: u64, objects: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let keep: BTreeSet<String> = objects.into_iter().map(Into::into).collect();
        let before = self.held.remove(&checkpoint).unwrap_or_default();
        let mut orphans = Vec::new();
        for object in before.difference(&keep) {
            if self.drop_holder(object, checkpoint) {
                orphans.push(object.clone());
            }
        }
        self.register(checkpoint, keep);
        orphans
    }

    /// Checkpoint `checkpoint` is gone (retired, aborted, subsumed): releases everything it
    /// held. Returns the objects nobody holds any longer; delete them only after the
    /// checkpoint's metadata is deleted.
    pub fn release(&mut self, checkpoint: u64) -> Vec<String> {
        let held = self.held.remove(&checkpoint).unwrap_or_default();
        held.into_iter().filter(|object| self.drop_holder(object, checkpoint)).collect()
    }

    /// Of `objects`, those nobody holds: what a state that is discarded without ever being
    /// registered (a late acknowledgement) may delete.
    pub fn unheld<'a>(&self, objects: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        objects.into_iter().filter(|o| !self.holders.contains_key(*o)).map(str::to_string).collect()
    }

    /// The checkpoints holding `object`.
    pub fn holders(&self, object: &str) -> Vec<u64> {
        self.holders.get(object).map(|h| h.iter().copied().collect()).unwrap_or_default()
    }

    /// Whether anybody holds `object`.
    pub fn is_held(&self, object: &str) -> bool {
        self.holders.contains_key(object)
    }

    /// What `checkpoint` holds.
    pub fn held_by(&self, checkpoint: u64) -> Vec<String> {
        self.held.get(&checkpoint).map(|h| h.iter().cloned().collect()).unwrap_or_default()
    }

    /// Number of objects held by anybody.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    /// Whether no object is held.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    // Removes `checkpoint` from the holders of `object`; true when that was the last holder.
    fn drop_holder(&mut self, object: &str, checkpoint: u64) -> bool {
        let Some(holders) = self.holders.get_mut(object) else {
            return false;
        };
        holders.remove(&checkpoint);
        if holders.is_empty() {
            self.holders.remove(object);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_object_goes_with_its_last_holder() {
        let mut r = SharedStateRegistry::new();
        r.register(1, ["shared/a", "shared/b"]);
        r.register(2, ["shared/b", "shared/c"]);
        assert_eq!(r.release(1), vec!["shared/a".to_string()]);
        assert_eq!(r.holders("shared/b"), vec![2]);
        assert_eq!(r.release(2), vec!["shared/b".to_string(), "shared/c".to_string()]);
        assert!(r.is_empty());
        assert!(r.release(2).is_empty(), "releasing twice frees nothing more");
    }

    #[test]
    fn a_pin_keeps_the_base_of_a_pending_checkpoint_until_it_settles() {
        let mut r = SharedStateRegistry::new();
        r.register(1, ["shared/base", "shared/old"]);
        r.pin(2, [1]);
        // Checkpoint 1 is retired while 2 is still in flight: nothing of its base goes.
        assert!(r.release(1).is_empty());
        // 2 completes referring to the base only: the rest of its pin is released.
        assert_eq!(r.settle(2, ["shared/base", "shared/new"]), vec!["shared/old".to_string()]);
        assert_eq!(r.held_by(2), vec!["shared/base".to_string(), "shared/new".to_string()]);
    }

    #[test]
    fn duplicate_registrations_never_inflate_a_count() {
        let mut r = SharedStateRegistry::new();
        r.register(1, ["shared/a"]);
        r.register(1, ["shared/a"]);
        assert_eq!(r.release(1), vec!["shared/a".to_string()]);
        assert_eq!(r.unheld(["shared/a", "shared/b"]), vec!["shared/a".to_string(), "shared/b".to_string()]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register(u64, Vec<u8>),
        Pin(u64, Vec<u64>),
        Settle(u64, Vec<u8>),
        Release(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let objects = proptest::collection::vec(0u8..12, 0..5);
        prop_oneof![
            (0u64..6, objects.clone()).prop_map(|(c, o)| Op::Register(c, o)),
            (0u64..6, proptest::collection::vec(0u64..6, 0..3)).prop_map(|(c, o)| Op::Pin(c, o)),
            (0u64..6, objects).prop_map(|(c, o)| Op::Settle(c, o)),
            (0u64..6).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Against a model that recomputes holders from scratch: an object is reported
        /// orphaned exactly when its last holder goes, and never while anybody holds it.
        #[test]
        fn orphans_are_exactly_the_objects_nobody_holds(ops in proptest::collection::vec(op(), 0..60)) {
            let mut r = SharedStateRegistry::new();
            let mut model: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
            let name = |o: &u8| format!("shared/{o}");
            let held = |m: &BTreeMap<u64, BTreeSet<String>>| -> BTreeSet<String> { m.values().flatten().cloned().collect() };
            for op in ops {
                let before = held(&model);
                let orphans: Vec<String> = match &op {
                    Op::Register(c, o) => { r.register(*c, o.iter().map(name)); model.entry(*c).or_default().extend(o.iter().map(name)); vec![] }
                    Op::Pin(c, from) => {
                        let inherited: BTreeSet<String> = from.iter().filter_map(|f| model.get(f)).flatten().cloned().collect();
                        r.pin(*c, from.iter().copied());
                        model.entry(*c).or_default().extend(inherited);
                        vec![]
                    }
                    Op::Settle(c, o) => { let orphans = r.settle(*c, o.iter().map(name)); model.insert(*c, o.iter().map(name).collect()); orphans }
                    Op::Release(c) => { model.remove(c); r.release(*c) }
                };
                model.retain(|_, v| !v.is_empty());
                let after = held(&model);
                let expected: BTreeSet<String> = before.difference(&after).cloned().collect();
                prop_assert_eq!(orphans.into_iter().collect::<BTreeSet<_>>(), expected, "{:?}", op);
                for object in &after {
                    prop_assert!(r.is_held(object));
                }
                prop_assert_eq!(r.len(), after.len());
            }
        }
    }
}
