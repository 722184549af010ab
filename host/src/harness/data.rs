//! The states the cases snapshot. Each is shaped to expose one family of bugs: length
//! encodings at their boundaries, states missing from some key groups, long lists and large
//! maps, key groups that need several entry batches, non-UTF-8 bytes everywhere.

use crate::backend::{KeyedStateBackend, StateKind, StateValue};
use crate::handles::DistributionMode;
use crate::key_groups::{key_group_for_key, KeyGroupRange};
use crate::operator_backend::OperatorStateBackend;

/// The max parallelism of every generated keyed state.
pub const MAX_P: u32 = 128;

/// Every length a length encoding can get wrong: both sides of the one-, two- and three-byte
/// varint boundaries and of the `u8`/`u16` limits.
pub const LENGTH_BOUNDARIES: [usize; 10] = [0, 1, 127, 128, 255, 256, 16383, 16384, 65535, 65536];

/// An empty state over all key groups.
pub fn empty() -> KeyedStateBackend {
    KeyedStateBackend::new(MAX_P, KeyGroupRange::new(0, MAX_P - 1)).expect("valid range")
}

/// `n` bytes of a pattern that is not UTF-8 (every 0xff is invalid there), different per seed.
pub fn binary(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| if i % 7 == 3 { 0xff } else { (i as u8).wrapping_mul(31).wrapping_add(seed) }).collect()
}

/// A key (not UTF-8) whose key group is `key_group`, made unique by `n`.
pub fn key_in_group(key_group: u32, n: u64) -> Vec<u8> {
    (0u64..)
        .map(|i| {
            let mut key = vec![0xff];
            key.extend_from_slice(format!("g{key_group}-{n}-{i}").as_bytes());
            key
        })
        .find(|k| key_group_for_key(k, MAX_P) == key_group)
        .expect("some key hashes into every group")
}

/// Value, list and map state with `n` keys: the everyday mix.
pub fn every_kind(n: usize) -> KeyedStateBackend {
    let mut b = empty();
    let (v, l, m) = (
        b.register_state("value", StateKind::Value).unwrap(),
        b.register_state("list", StateKind::List).unwrap(),
        b.register_state("map", StateKind::Map).unwrap(),
    );
    for i in 0..n {
        let key = format!("key-{i}");
        let ns: &[u8] = if i % 3 == 0 { b"window-1" } else { b"" };
        b.put(v, key.as_bytes(), ns, format!("v{i}").as_bytes()).unwrap();
        b.add(l, key.as_bytes(), ns, &(i as u64).to_le_bytes()).unwrap();
        b.add(l, key.as_bytes(), ns, b"").unwrap();
        b.put_map(m, key.as_bytes(), ns, &(i as u32).to_be_bytes(), b"mapped").unwrap();
    }
    b
}

/// [`every_kind`] and a state of each kind under every name a name encoding can get wrong:
/// one byte, over 255 bytes, and over 255 bytes of multi-byte UTF-8.
pub fn every_kind_and_name(n: usize) -> KeyedStateBackend {
    let mut b = every_kind(n);
    let long = "n".repeat(300);
    let utf8 = "état-€-日本-🦀-".repeat(16);
    for (letter, kind) in [("v", StateKind::Value), ("l", StateKind::List), ("m", StateKind::Map)] {
        for name in [letter.to_string(), format!("{letter}{long}"), format!("{letter}-{utf8}")] {
            let s = b.register_state(&name, kind).unwrap();
            for i in 0..n / 10 {
                let key = format!("named-{i}");
                let ns: &[u8] = if i % 2 == 0 { b"w" } else { b"" };
                match kind {
                    StateKind::Value => b.put(s, key.as_bytes(), ns, name.as_bytes()).unwrap(),
                    StateKind::List => b.add(s, key.as_bytes(), ns, &[i as u8, 0xff]).unwrap(),
                    StateKind::Map => b.put_map(s, key.as_bytes(), ns, &[0xfe, i as u8], b"m").unwrap(),
                }
            }
        }
    }
    b
}

/// Every byte value as keys, namespaces, user keys and values, and the empty key.
pub fn binary_keys() -> KeyedStateBackend {
    let mut b = empty();
    let s = b.register_state("bytes", StateKind::Map).unwrap();
    for byte in 0..=255u8 {
        b.put_map(s, &[byte], &[255 - byte], &[byte, 0, byte], &[0, byte]).unwrap();
        b.put_map(s, &[0, byte, 0], &[], &[], &[byte; 3]).unwrap();
    }
    b.put_map(s, &[], &[], &[], &[]).unwrap();
    b
}

/// Six entries in key groups 0, 1, 100 and 120: most groups are empty, and a run of 98 empty
/// groups comes before the last entries.
pub fn sparse() -> KeyedStateBackend {
    let mut b = empty();
    let s = b.register_state("sparse", StateKind::Value).unwrap();
    for (n, group) in [0u32, 1, 100, 120, 100, 0].into_iter().enumerate() {
        b.put(s, &key_in_group(group, n as u64), b"", b"x").unwrap();
    }
    b
}

/// Value, list and map state with `n` keys, each with eight namespaces: many rows per key
/// group and many namespaces per key.
pub fn dense(n: usize) -> KeyedStateBackend {
    let mut b = every_kind(n);
    let (l, m) = (b.state_index("list").unwrap(), b.state_index("map").unwrap());
    for i in 0..n / 10 {
        let key = format!("key-{i}");
        for w in 2..10u8 {
            let ns = [b'w', b'0' + w];
            b.add(l, key.as_bytes(), &ns, &[w]).unwrap();
            b.put_map(m, key.as_bytes(), &ns, &[w, 0xfe], &binary(w as usize, w)).unwrap();
        }
    }
    b
}

/// Keys, namespaces, user keys and values at every length boundary and at `large` bytes, each
/// swept alone (the other parts short), in value and map states; all bytes non-UTF-8. Every
/// swept entry but the swept keys sits in a key group of its own, so a bug at one length shows
/// as exactly that entry.
pub fn length_boundaries(large: usize) -> KeyedStateBackend {
    let mut b = empty();
    let v = b.register_state("lengths-value", StateKind::Value).unwrap();
    let m = b.register_state("lengths-map", StateKind::Map).unwrap();
    let lengths: Vec<usize> = LENGTH_BOUNDARIES.iter().copied().chain([large]).collect();
    let swept_key = |len: usize| {
        let mut key = binary(len, 1);
        if len > 0 {
            key[0] = 0x01; // apart from the keys of the other sweeps, which start with 0xff
        }
        key
    };
    // The key groups the swept keys hash to are left to them.
    let taken: Vec<u32> = lengths.iter().map(|&len| key_group_for_key(&swept_key(len), MAX_P)).collect();
    let mut free = (0..MAX_P).filter(|g| !taken.contains(g));
    for (i, &len) in lengths.iter().enumerate() {
        let tag = i as u8;
        let mut own_group = || key_in_group(free.next().expect("more key groups than sweeps"), 1000 + i as u64);
        // The key's length swept: value and map state.
        let key = swept_key(len);
        b.put(v, &key, &[tag], &[0xff, tag]).unwrap();
        b.put_map(m, &key, &[], &[tag], &[0xff]).unwrap();
        // The namespace's length swept.
        b.put(v, &own_group(), &binary(len, 2), &[tag]).unwrap();
        // The user key's length swept (the value state has an entry there too: a group of this
        // case never lacks a state that a later state has).
        let key = own_group();
        b.put(v, &key, b"", &[tag]).unwrap();
        b.put_map(m, &key, &[1], &binary(len, 3), &[tag]).unwrap();
        // The value's length swept: a value state's value and a map's value.
        b.put(v, &own_group(), &[0xff, 0xfe], &binary(len, 4)).unwrap();
        let key = own_group();
        b.put(v, &key, b"", &[tag]).unwrap();
        b.put_map(m, &key, &[2], &[tag, 0xff], &binary(len, 5)).unwrap();
    }
    b
}

/// Five states, registered so that empty ones come before non-empty ones: `empty-first` has no
/// entry at all, `thirds` lives only in key groups divisible by 3, `odd` only in odd groups,
/// `lists` only in groups 0–15, `everywhere` in every group. Most groups lack some state
/// that a later group has.
pub fn sparse_multi_state() -> KeyedStateBackend {
    let mut b = empty();
    let _empty = b.register_state("empty-first", StateKind::Value).unwrap();
    let thirds = b.register_state("thirds", StateKind::Map).unwrap();
    let odd = b.register_state("odd", StateKind::Value).unwrap();
    let lists = b.register_state("lists", StateKind::List).unwrap();
    let everywhere = b.register_state("everywhere", StateKind::Value).unwrap();
    for group in 0..MAX_P {
        for n in 0..3u64 {
            let key = key_in_group(group, n);
            if group % 3 == 0 {
                b.put_map(thirds, &key, b"", &[n as u8, 0xff], &binary(5, group as u8)).unwrap();
            }
            if group % 2 == 1 {
                b.put(odd, &key, &[0xff], &[group as u8]).unwrap();
            }
            if group < 16 {
                b.add(lists, &key, b"", &binary(n as usize, 9)).unwrap();
            }
            b.put(everywhere, &key, b"", &group.to_le_bytes()).unwrap();
        }
    }
    b
}

/// A few keys with long lists (thousands of elements, some equal, some empty) and large maps,
/// so a strategy that flushes internally mid-value is caught duplicating or dropping elements.
pub fn long_lists_large_maps(elements: usize) -> KeyedStateBackend {
    let mut b = empty();
    let l = b.register_state("long-list", StateKind::List).unwrap();
    let m = b.register_state("large-map", StateKind::Map).unwrap();
    for k in 0..4u8 {
        let key = [0xff, k, 0xfe];
        for i in 0..elements {
            let element = match i % 5 {
                0 => Vec::new(),
                1 => vec![0xff; 3], // repeated elements: a list may hold equal elements
                _ => binary(1 + (i * 7) % 300, k),
            };
            b.add(l, &key, &[k], &element).unwrap();
            b.put_map(m, &key, b"", &(i as u32).to_be_bytes(), &binary(i % 200, k)).unwrap();
        }
    }
    b
}

/// A few key groups holding several MiB each, so each needs many entry batches; the groups
/// around them hold one small entry.
pub fn multi_batch_groups(bytes_per_group: usize) -> KeyedStateBackend {
    let mut b = empty();
    let s = b.register_state("heavy", StateKind::Value).unwrap();
    let m = b.register_state("heavy-map", StateKind::Map).unwrap();
    for group in [5u32, 6, 64] {
        let entries = bytes_per_group / 2048;
        for n in 0..entries as u64 {
            let key = key_in_group(group, n);
            b.put(s, &key, b"", &binary(1024 + (n as usize % 17), group as u8)).unwrap();
            b.put_map(m, &key, &[0xff], &n.to_le_bytes(), &binary(1000, n as u8)).unwrap();
        }
    }
    for group in [4u32, 7, 63, 65] {
        b.put(s, &key_in_group(group, 0), b"", b"small").unwrap();
    }
    b
}

/// Value, list and map state with the same keys and namespaces in one key group.
pub fn mixed_kinds_one_group() -> KeyedStateBackend {
    let mut b = empty();
    let m = b.register_state("a-map", StateKind::Map).unwrap();
    let v = b.register_state("b-value", StateKind::Value).unwrap();
    let l = b.register_state("c-list", StateKind::List).unwrap();
    for n in 0..50u64 {
        let key = key_in_group(17, n);
        for ns in [&b""[..], &[0xff][..], b"window"] {
            b.put(v, &key, ns, &binary(n as usize, 1)).unwrap();
            b.add(l, &key, ns, &binary(3, n as u8)).unwrap();
            b.add(l, &key, ns, &binary(0, 0)).unwrap();
            b.put_map(m, &key, ns, &[n as u8], &binary(n as usize % 9, 2)).unwrap();
        }
    }
    b
}

/// One value of `size` bytes.
pub fn huge_value(size: usize) -> KeyedStateBackend {
    let mut b = empty();
    let s = b.register_state("huge", StateKind::Value).unwrap();
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    b.put(s, b"the-key", b"", &value).unwrap();
    b
}

/// `n` one-byte values.
pub fn tiny_entries(n: usize) -> KeyedStateBackend {
    let mut b = empty();
    let s = b.register_state("tiny", StateKind::Value).unwrap();
    for i in 0..n as u64 {
        b.put(s, &i.to_le_bytes(), b"", &[i as u8]).unwrap();
    }
    b
}

/// Many entries of at most 64 KiB adding up to `total` bytes: what a streaming strategy
/// snapshots in memory proportional to one entry, and a buffering one cannot.
pub fn many_entries(total: usize) -> KeyedStateBackend {
    let mut b = empty();
    let s = b.register_state("many", StateKind::Value).unwrap();
    let mut written = 0;
    let mut n = 0u64;
    while written < total {
        let len = if n.is_multiple_of(16) { 64 << 10 } else { 4096 + (n as usize % 13) * 100 };
        b.put(s, &n.to_le_bytes(), b"", &binary(len, n as u8)).unwrap();
        written += len + 8;
        n += 1;
    }
    b
}

/// The part of `whole` in `range`.
pub fn restrict(whole: &KeyedStateBackend, range: KeyGroupRange) -> KeyedStateBackend {
    let mut part = KeyedStateBackend::new(whole.max_parallelism(), range).unwrap();
    for (name, (kind, rows)) in whole.contents() {
        let s = part.register_state(&name, kind).unwrap();
        for ((key, ns), value) in rows.into_iter().filter(|((k, _), _)| range.contains(key_group_for_key(k, MAX_P))) {
            put_value(&mut part, s, &key, &ns, value);
        }
    }
    part
}

/// Adds every state of `from` to `into` (which must cover its key groups).
pub fn merge_into(into: &mut KeyedStateBackend, from: &KeyedStateBackend) {
    for (name, (kind, rows)) in from.contents() {
        let s = into.register_state(&name, kind).unwrap();
        for ((key, ns), value) in rows {
            put_value(into, s, &key, &ns, value);
        }
    }
}

fn put_value(b: &mut KeyedStateBackend, s: u32, key: &[u8], ns: &[u8], value: StateValue) {
    match value {
        StateValue::Value(v) => b.put(s, key, ns, &v).unwrap(),
        StateValue::List(l) => l.iter().for_each(|v| b.add(s, key, ns, v).unwrap()),
        StateValue::Map(m) => m.iter().for_each(|(uk, v)| b.put_map(s, key, ns, uk, v).unwrap()),
    }
}

/// Operator state of one subtask: a SPLIT_DISTRIBUTE list whose size differs per subtask, a
/// UNION list, a BROADCAST list equal on every subtask, and an empty list of each mode (empty
/// elements are `operator_empty`'s).
pub fn operator_modes(subtask: u32) -> OperatorStateBackend {
    let mut b = OperatorStateBackend::new();
    for (name, mode) in [
        ("splits", DistributionMode::SplitDistribute),
        ("tags", DistributionMode::Union),
        ("config", DistributionMode::Broadcast),
        ("empty-split", DistributionMode::SplitDistribute),
        ("empty-union", DistributionMode::Union),
        ("empty-broadcast", DistributionMode::Broadcast),
    ] {
        b.register(name, mode).unwrap();
    }
    for j in 0..(5 + 3 * subtask) {
        let mut element = binary(j as usize % 40, subtask as u8);
        element.extend_from_slice(&[subtask as u8, j as u8]);
        b.add("splits", element).unwrap();
    }
    b.add("tags", vec![0xff, subtask as u8]).unwrap();
    b.add("tags", vec![subtask as u8; 3]).unwrap();
    b.add("config", b"mode=fast".to_vec()).unwrap();
    b.add("config", binary(300, 7)).unwrap();
    b
}

/// [`operator_modes`] and a list of each mode with an element of every boundary length but 0
/// (empty elements are `operator_empty`'s).
pub fn operator_every_mode() -> OperatorStateBackend {
    let mut b = operator_modes(2);
    for (name, mode) in [
        ("lengths-split", DistributionMode::SplitDistribute),
        ("lengths-union", DistributionMode::Union),
        ("lengths-broadcast", DistributionMode::Broadcast),
    ] {
        b.register(name, mode).unwrap();
        for (i, &len) in LENGTH_BOUNDARIES.iter().filter(|&&len| len > 0).enumerate() {
            b.add(name, binary(len, i as u8)).unwrap();
        }
    }
    b
}

/// Lists of every mode holding nothing, or only empty elements.
pub fn operator_empty() -> OperatorStateBackend {
    let mut b = OperatorStateBackend::new();
    for (name, mode) in [
        ("none-split", DistributionMode::SplitDistribute),
        ("none-union", DistributionMode::Union),
        ("none-broadcast", DistributionMode::Broadcast),
        ("blank-split", DistributionMode::SplitDistribute),
        ("blank-union", DistributionMode::Union),
    ] {
        b.register(name, mode).unwrap();
    }
    for _ in 0..3 {
        b.add("blank-split", Vec::new()).unwrap();
    }
    b.add("blank-union", Vec::new()).unwrap();
    b
}

/// Thousands of small elements and a few large ones (up to `large` bytes).
pub fn operator_sizes(small: usize, large: usize) -> OperatorStateBackend {
    let mut b = OperatorStateBackend::new();
    b.register("small", DistributionMode::SplitDistribute).unwrap();
    b.register("large", DistributionMode::Union).unwrap();
    for i in 0..small {
        b.add("small", binary(1 + i % 16, i as u8)).unwrap();
    }
    for (i, len) in [65536usize, 65537, large].into_iter().enumerate() {
        b.add("large", binary(len, i as u8)).unwrap();
    }
    b
}
