//! Key groups: the unit in which keyed state is partitioned, snapshotted and redistributed.
//!
//! The formulas are Flink's (`KeyGroupRangeAssignment`), so that a job's partitioning is the
//! same whichever engine computes it: key → hash → murmur finalizer → key group; key group →
//! operator index; operator index → contiguous key-group range.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The default lower bound of the maximum parallelism (number of key groups).
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 1 << 7;
/// The largest maximum parallelism: key groups are stored in 16 bits in Flink's formats, and
/// `key_group * parallelism` must not overflow 32-bit arithmetic.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// Errors from invalid partitioning parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyGroupError {
    /// Parallelism or max parallelism outside `1..=32768`, or parallelism above max parallelism.
    #[error("invalid partitioning: parallelism {parallelism}, max parallelism {max_parallelism} (need 0 < parallelism <= max parallelism <= {UPPER_BOUND_MAX_PARALLELISM})")]
    InvalidParallelism {
        /// The parallelism given.
        parallelism: u32,
        /// The max parallelism given.
        max_parallelism: u32,
    },
    /// An operator index at or above the parallelism.
    #[error("operator index {index} is out of range for parallelism {parallelism}")]
    InvalidOperatorIndex {
        /// The index given.
        index: u32,
        /// The parallelism.
        parallelism: u32,
    },
}

/// An inclusive range of key groups. The empty range has no key groups and is distinct from
/// every non-empty one; it is what an intersection without overlap yields.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    // Inclusive bounds, so that every range of u32 key groups is representable (an exclusive
    // end overflows at u32::MAX); the empty range is the one canonical `start > end`.
    start: u32,
    end: u32,
}

impl KeyGroupRange {
    /// The range with no key groups.
    pub const EMPTY: KeyGroupRange = KeyGroupRange { start: 1, end: 0 };

    /// The range `start..=end`; empty when `start > end`.
    pub fn new(start: u32, end: u32) -> Self {
        if start > end {
            Self::EMPTY
        } else {
            KeyGroupRange { start, end }
        }
    }

    /// Whether the range holds no key groups.
    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }

    /// First key group, or `None` when empty.
    pub fn start(&self) -> Option<u32> {
        (!self.is_empty()).then_some(self.start)
    }

    /// Last key group, or `None` when empty.
    pub fn end(&self) -> Option<u32> {
        (!self.is_empty()).then_some(self.end)
    }

    /// Number of key groups. Saturates at `u32::MAX` for the one range with 2^32 groups
    /// (`0..=u32::MAX`), which no job has: key groups are bounded by the maximum parallelism.
    pub fn len(&self) -> u32 {
        if self.is_empty() {
            0
        } else {
            u32::try_from(u64::from(self.end) - u64::from(self.start) + 1).unwrap_or(u32::MAX)
        }
    }

    /// Whether `key_group` is in the range.
    pub fn contains(&self, key_group: u32) -> bool {
        self.start <= key_group && key_group <= self.end
    }

    /// The key groups both ranges hold; empty when they do not overlap.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        if self.is_empty() || other.is_empty() {
            return Self::EMPTY;
        }
        Self::new(self.start.max(other.start), self.end.min(other.end))
    }

    /// Position of `key_group` within the range, if it is in it.
    pub fn index_of(&self, key_group: u32) -> Option<usize> {
        self.contains(key_group).then(|| (key_group - self.start) as usize)
    }

    /// The key groups in ascending order.
    pub fn iter(&self) -> std::ops::RangeInclusive<u32> {
        // The empty range is always `start > end`, which iterates over nothing.
        self.start..=self.end
    }
}

impl IntoIterator for KeyGroupRange {
    type Item = u32;
    type IntoIter = std::ops::RangeInclusive<u32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.start(), self.end()) {
            (Some(s), Some(e)) => write!(f, "[{s}, {e}]"),
            _ => f.write_str("[]"),
        }
    }
}

/// Checks `0 < parallelism <= max_parallelism <= 32768`.
pub fn check_parallelism(max_parallelism: u32, parallelism: u32) -> Result<(), KeyGroupError> {
    if parallelism == 0
        || max_parallelism == 0
        || parallelism > max_parallelism
        || max_parallelism > UPPER_BOUND_MAX_PARALLELISM
    {
        return Err(KeyGroupError::InvalidParallelism { parallelism, max_parallelism });
    }
    Ok(())
}

/// The key groups operator `index` of `parallelism` owns: contiguous, as equal as integer
/// division allows, together covering `0..max_parallelism` exactly once.
pub fn range_for_operator(max_parallelism: u32, parallelism: u32, index: u32) -> Result<KeyGroupRange, KeyGroupError> {
    check_parallelism(max_parallelism, parallelism)?;
    if index >= parallelism {
        return Err(KeyGroupError::InvalidOperatorIndex { index, parallelism });
    }
    // 64-bit intermediates: the products reach 2^30 and must not wrap.
    let (m, p, i) = (max_parallelism as u64, parallelism as u64, index as u64);
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m - 1) / p;
    Ok(KeyGroupRange::new(start as u32, end as u32))
}

/// The operator index that owns `key_group`.
pub fn operator_for_key_group(max_parallelism: u32, parallelism: u32, key_group: u32) -> u32 {
    (key_group as u64 * parallelism as u64 / max_parallelism as u64) as u32
}

/// Flink's default max parallelism for a given parallelism: 1.5x rounded up to a power of
/// two, at least 128 and at most 32768, so that a job can scale out later without changing
/// the number of key groups (which would make old checkpoints unusable).
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let wanted = parallelism.saturating_add(parallelism / 2);
    let rounded = wanted.checked_next_power_of_two().unwrap_or(UPPER_BOUND_MAX_PARALLELISM);
    rounded.clamp(DEFAULT_LOWER_BOUND_MAX_PARALLELISM, UPPER_BOUND_MAX_PARALLELISM)
}

/// Flink's `MathUtils.murmurHash(int)`: one murmur3 round plus finalizer, folded to a
/// non-negative value. Spreads weak hashes (like [`key_hash`]) over all key groups.
pub fn murmur_hash(code: i32) -> i32 {
    let mut h = code as u32;
    h = h.wrapping_mul(0xcc9e_2d51);
    h = h.rotate_left(15);
    h = h.wrapping_mul(0x1b87_3593);
    h = h.rotate_left(13);
    h = h.wrapping_mul(5).wrapping_add(0xe654_6b64);
    h ^= 4;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    let signed = h as i32;
    if signed >= 0 {
        signed
    } else if signed != i32::MIN {
        -signed
    } else {
        0
    }
}

/// The stable 32-bit hash of a key's bytes that feeds [`murmur_hash`].
///
/// It is Java's `String.hashCode` applied to the bytes as unsigned code units
/// (`h = 31 * h + b`, wrapping, from 0). It never changes between releases or platforms (a
/// change would silently move every key to another key group and break every checkpoint),
/// and for ASCII and Latin-1 string keys it equals Java's `String.hashCode`, so such keys land
/// in the same key group as in Flink. Its weak mixing does not matter: murmur follows.
pub fn key_hash(key: &[u8]) -> i32 {
    key.iter().fold(0i32, |h, &b| h.wrapping_mul(31).wrapping_add(b as i32))
}

/// The key group of a key hash (for example a Java `hashCode`).
pub fn key_group_for_hash(hash: i32, max_parallelism: u32) -> u32 {
    (murmur_hash(hash) as u32) % max_parallelism
}

/// The key group of a key, given as its serialized bytes.
pub fn key_group_for_key(key: &[u8], max_parallelism: u32) -> u32 {
    key_group_for_hash(key_hash(key), max_parallelism)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn murmur_vectors() {
        // Vectors from two independent re-implementations of Flink's formula.
        let cases = [
            (0, 593689054, 94, 2),
            (1, 68075478, 86, 2),
            (2, 1085422463, 127, 2),
            (17, 1197063121, 81, 1),
            (42, 1134849565, 29, 0),
            (-1, 1982413648, 80, 1),
        ];
        for (code, murmur, kg, op) in cases {
            assert_eq!(murmur_hash(code), murmur, "murmur({code})");
            assert_eq!(key_group_for_hash(code, 128), kg, "key group of {code}");
            assert_eq!(operator_for_key_group(128, 3, kg), op, "operator of {code}");
        }
    }

    #[test]
    fn string_keys_match_java() {
        assert_eq!(key_hash(b"hello"), 99162322);
        assert_eq!(key_hash(b"flink"), 97520992);
        assert_eq!(murmur_hash(key_hash(b"hello")), 1715862179);
        assert_eq!(key_group_for_key(b"hello", 128), 35);
        assert_eq!(key_group_for_key(b"flink", 128), 98);
        assert_eq!(key_hash(b""), 0);
    }

    #[test]
    fn murmur_of_min_folds_to_non_negative() {
        for code in [i32::MIN, i32::MAX, -2, 123456789] {
            assert!(murmur_hash(code) >= 0);
        }
    }

    #[test]
    fn ranges_match_examples() {
        let r = |m, p, i| range_for_operator(m, p, i).unwrap();
        assert_eq!(
            [r(128, 3, 0), r(128, 3, 1), r(128, 3, 2)],
            [KeyGroupRange::new(0, 42), KeyGroupRange::new(43, 85), KeyGroupRange::new(86, 127)]
        );
        assert_eq!([r(10, 2, 0), r(10, 2, 1)], [KeyGroupRange::new(0, 4), KeyGroupRange::new(5, 9)]);
        assert_eq!(
            [r(7, 3, 0), r(7, 3, 1), r(7, 3, 2)],
            [KeyGroupRange::new(0, 2), KeyGroupRange::new(3, 4), KeyGroupRange::new(5, 6)]
        );
        assert_eq!(r(128, 1, 0), KeyGroupRange::new(0, 127));
    }

    #[test]
    fn invalid_parameters_are_errors() {
        assert!(range_for_operator(128, 0, 0).is_err());
        assert!(range_for_operator(0, 1, 0).is_err());
        assert!(range_for_operator(4, 5, 0).is_err());
        assert!(range_for_operator(40000, 5, 0).is_err());
        assert!(range_for_operator(128, 3, 3).is_err());
    }

    #[test]
    fn default_max_parallelism_examples() {
        for (p, m) in [(1, 128), (10, 128), (100, 256), (200, 512), (1000, 2048), (30000, 32768), (u32::MAX, 32768)] {
            assert_eq!(default_max_parallelism(p), m, "p = {p}");
        }
    }

    #[test]
    fn range_basics() {
        let r = KeyGroupRange::new(3, 7);
        assert_eq!(r.len(), 5);
        assert!(r.contains(3) && r.contains(7) && !r.contains(8) && !r.contains(2));
        assert_eq!(r.intersection(&KeyGroupRange::new(6, 20)), KeyGroupRange::new(6, 7));
        assert!(r.intersection(&KeyGroupRange::new(8, 20)).is_empty());
        assert!(KeyGroupRange::new(5, 4).is_empty());
        assert_eq!(KeyGroupRange::EMPTY.iter().count(), 0);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
        assert_eq!(r.to_string(), "[3, 7]");
    }

    fn check_partition(m: u32, p: u32) {
        let ranges: Vec<_> = (0..p).map(|i| range_for_operator(m, p, i).unwrap()).collect();
        let mut next = 0;
        for r in &ranges {
            assert_eq!(r.start(), Some(next), "ranges of ({m}, {p}) are contiguous");
            next = r.end().unwrap() + 1;
        }
        assert_eq!(next, m, "ranges of ({m}, {p}) cover every key group");
        // Checking every key group of a 32767-wide job for each pair would be slow; a stride
        // still hits every range boundary region.
        let step = (m / 4096).max(1);
        for kg in (0..m).step_by(step as usize).chain([m - 1]) {
            let op = operator_for_key_group(m, p, kg);
            assert!(
                ranges[op as usize].contains(kg),
                "kg {kg} of ({m}, {p}) maps to op {op} whose range is {}",
                ranges[op as usize]
            );
        }
    }

    #[test]
    fn every_key_group_falls_in_its_operators_range() {
        for (m, p) in [(1, 1), (13, 1), (13, 2), (32767, 1), (32767, 13), (32767, 32767), (128, 3), (32768, 32768)] {
            check_partition(m, p);
        }
    }

    proptest! {
        #[test]
        fn random_partitions_are_consistent(m in 1u32..=32768, p_frac in 0.0f64..1.0) {
            let p = ((m as f64 * p_frac) as u32).clamp(1, m);
            check_partition(m, p);
        }

        #[test]
        fn key_group_of_any_key_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), m in 1u32..=32768) {
            prop_assert!(key_group_for_key(&key, m) < m);
        }
    }

    #[test]
    fn ranges_at_the_top_of_u32_do_not_overflow() {
        let top = KeyGroupRange::new(u32::MAX, u32::MAX);
        assert_eq!(top.len(), 1);
        assert!(top.contains(u32::MAX));
        assert_eq!(top.iter().collect::<Vec<_>>(), vec![u32::MAX]);
        assert_eq!(top.end(), Some(u32::MAX));
        let wide = KeyGroupRange::new(u32::MAX - 2, u32::MAX);
        assert_eq!(wide.intersection(&KeyGroupRange::new(0, u32::MAX)), wide);
        assert_eq!(KeyGroupRange::new(0, u32::MAX).len(), u32::MAX);
        assert!(KeyGroupRange::new(5, 4).is_empty());
    }
}
