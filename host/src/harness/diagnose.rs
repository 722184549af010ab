//! Diagnoses that point at the bug: the first entry where restored state differs from what
//! was snapshotted, named by key group, state, key, namespace and user key; and the bytes of
//! a snapshot around the offset where decoding failed.

use std::collections::BTreeMap;

use crate::backend::{KeyedStateBackend, RowKey, StateValue};
use crate::key_groups::key_group_for_key;
use crate::operator_backend::OperatorStateBackend;

/// Bytes shown of a key, a value or a snapshot excerpt before truncating.
const SHOWN: usize = 24;

/// `bytes` as a reader recognises them: quoted text when printable, hex otherwise; truncated.
pub fn show(bytes: &[u8]) -> String {
    let printable = bytes.iter().all(|b| (0x20..0x7f).contains(b));
    let shown = &bytes[..bytes.len().min(SHOWN)];
    let more = if bytes.len() > SHOWN { format!("… ({} bytes)", bytes.len()) } else { String::new() };
    if printable {
        format!("{:?}{more}", String::from_utf8_lossy(shown))
    } else if bytes.is_empty() {
        "\"\"".into()
    } else {
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{more}")
    }
}

/// Where an entry is: (key group, key, namespace), the order differences are reported in.
type Location = (u32, Vec<u8>, Vec<u8>);
/// One state's rows, by location.
type Rows = BTreeMap<Location, StateValue>;

fn rows(max_parallelism: u32, table: BTreeMap<RowKey, StateValue>) -> Rows {
    table.into_iter().map(|((k, ns), v)| ((key_group_for_key(&k, max_parallelism), k, ns), v)).collect()
}

/// `Ok` if `actual` holds exactly the state of `expected`; otherwise the first differing entry
/// with counts of every difference, prefixed by `what`.
pub fn compare_keyed(expected: &KeyedStateBackend, actual: &KeyedStateBackend, what: &str) -> Result<(), String> {
    let (e, a) = (expected.contents(), actual.contents());
    if e == a {
        return Ok(());
    }
    let max_p = expected.max_parallelism();
    let mut names: Vec<&String> = e.keys().chain(a.keys()).collect();
    names.sort();
    names.dedup();
    let mut first: Option<(Location, String)> = None;
    let (mut missing, mut extra, mut changed) = (0usize, 0usize, 0usize);
    for name in names {
        let (kind, want) = match e.get(name) {
            Some((kind, rows_)) => (*kind, rows(max_p, rows_.clone())),
            None => (a[name].0, Rows::new()),
        };
        let got = a.get(name).map(|(_, r)| rows(max_p, r.clone())).unwrap_or_default();
        if let (Some((expected_kind, _)), Some((actual_kind, _))) = (e.get(name), a.get(name)) {
            if expected_kind != actual_kind {
                return Err(format!(
                    "{what}: state {name:?} was snapshotted as {expected_kind} and restored as {actual_kind}"
                ));
            }
        }
        let mut keys: Vec<&Location> = want.keys().chain(got.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let description = match (want.get(key), got.get(key)) {
                (Some(w), Some(g)) if w == g => continue,
                (Some(w), Some(g)) => {
                    changed += 1;
                    differs(w, g)
                }
                (Some(w), None) => {
                    missing += 1;
                    format!("expected {}, found nothing", value_summary(w))
                }
                (None, Some(g)) => {
                    extra += 1;
                    format!("expected nothing, found {}", value_summary(g))
                }
                (None, None) => continue,
            };
            let located = format!(
                "key group {}, state {name:?} ({kind}), key {}, namespace {}: {description}",
                key.0,
                show(&key.1),
                show(&key.2)
            );
            if first.as_ref().is_none_or(|(k, _)| key < k) {
                first = Some((key.clone(), located));
            }
        }
    }
    let first = first.map(|(_, text)| text).unwrap_or_else(|| "the restored states differ".into());
    Err(format!(
        "{what}: first difference at {first} ({missing} entries missing, {extra} unexpected, {changed} with other values)"
    ))
}

fn value_summary(value: &StateValue) -> String {
    match value {
        StateValue::Value(v) => format!("value {}", show(v)),
        StateValue::List(l) => format!("a list of {} elements", l.len()),
        StateValue::Map(m) => format!("a map of {} entries", m.len()),
    }
}

/// Where two values of the same (key, namespace) differ: the value, the first differing list
/// element, or the first differing user key of a map.
fn differs(want: &StateValue, got: &StateValue) -> String {
    match (want, got) {
        (StateValue::Value(w), StateValue::Value(g)) => format!("expected value {}, found {}", show(w), show(g)),
        (StateValue::List(w), StateValue::List(g)) => {
            let at = w.iter().zip(g).position(|(a, b)| a != b).unwrap_or(w.len().min(g.len()));
            let element = |l: &Vec<Vec<u8>>| l.get(at).map(|e| show(e)).unwrap_or_else(|| "no element".into());
            format!(
                "list of {} elements restored with {}: first difference at element {at}: expected {}, found {}",
                w.len(),
                g.len(),
                element(w),
                element(g)
            )
        }
        (StateValue::Map(w), StateValue::Map(g)) => {
            let mut user_keys: Vec<&Vec<u8>> = w.keys().chain(g.keys()).collect();
            user_keys.sort();
            user_keys.dedup();
            let first = user_keys.into_iter().find(|k| w.get(*k) != g.get(*k));
            match first {
                Some(k) => {
                    let side =
                        |m: &BTreeMap<Vec<u8>, Vec<u8>>| m.get(k).map(|v| show(v)).unwrap_or_else(|| "nothing".into());
                    format!("user key {}: expected {}, found {}", show(k), side(w), side(g))
                }
                None => "the maps differ".into(),
            }
        }
        (w, g) => format!("expected {}, found {}", value_summary(w), value_summary(g)),
    }
}

/// `Ok` if `actual` holds exactly the operator state of `expected` (names, modes, elements in
/// order); otherwise the first differing element.
pub fn compare_operator(
    expected: &OperatorStateBackend,
    actual: &OperatorStateBackend,
    what: &str,
) -> Result<(), String> {
    if expected == actual {
        return Ok(());
    }
    let (want, got) = (expected.states(), actual.states());
    for (name, mode) in &want {
        let Some((_, got_mode)) = got.iter().find(|(n, _)| n == name) else {
            return Err(format!("{what}: operator state {name:?} ({mode:?}) is missing after restore"));
        };
        if got_mode != mode {
            return Err(format!(
                "{what}: operator state {name:?} was snapshotted as {mode:?}, restored as {got_mode:?}"
            ));
        }
        let (w, g) = (expected.get(name).unwrap_or(&[]), actual.get(name).unwrap_or(&[]));
        if w != g {
            let at = w.iter().zip(g).position(|(a, b)| a != b).unwrap_or(w.len().min(g.len()));
            let element = |l: &[Vec<u8>]| l.get(at).map(|e| show(e)).unwrap_or_else(|| "no element".into());
            return Err(format!(
                "{what}: operator state {name:?} ({mode:?}) has {} elements after restore, expected {}; first difference at element {at}: expected {}, found {}",
                g.len(),
                w.len(),
                element(w),
                element(g)
            ));
        }
    }
    let unexpected: Vec<_> = got.iter().filter(|(n, _)| !want.iter().any(|(w, _)| w == n)).map(|(n, _)| n).collect();
    Err(format!("{what}: restore produced operator states that were never snapshotted: {unexpected:?}"))
}

/// The bytes of `snapshot` around `offset`, as hex with the offset marked: what a decode
/// failure at that offset was looking at.
pub fn bytes_around(snapshot: &[u8], offset: u64) -> String {
    let at = (offset as usize).min(snapshot.len());
    let start = at.saturating_sub(8);
    let end = (at + 32).min(snapshot.len());
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    format!(
        "bytes at offset {start}..{end} of {}: {} [{offset}:] {}",
        snapshot.len(),
        hex(&snapshot[start..at]),
        hex(&snapshot[at..end])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::StateKind;
    use crate::key_groups::KeyGroupRange;

    #[test]
    fn the_first_difference_names_every_coordinate() {
        let mut want = KeyedStateBackend::new(8, KeyGroupRange::new(0, 7)).unwrap();
        let s = want.register_state("m", StateKind::Map).unwrap();
        want.put_map(s, b"k", &[0xff, 0], b"u1", b"v1").unwrap();
        want.put_map(s, b"k", &[0xff, 0], b"u2", b"v2").unwrap();
        let mut got = want.clone();
        let s2 = got.state_index("m").unwrap();
        got.put_map(s2, b"k", &[0xff, 0], b"u2", b"changed").unwrap();
        let e = compare_keyed(&want, &got, "round trip").unwrap_err();
        let kg = key_group_for_key(b"k", 8);
        assert!(e.contains(&format!("key group {kg}")), "{e}");
        assert!(e.contains("state \"m\" (map), key \"k\", namespace 0xff00"), "{e}");
        assert!(e.contains("user key \"u2\": expected \"v2\", found \"changed\""), "{e}");
        assert!(e.contains("0 entries missing, 0 unexpected, 1 with other values"), "{e}");
    }

    #[test]
    fn long_and_binary_bytes_are_truncated_hex() {
        assert_eq!(show(b"abc"), "\"abc\"");
        assert_eq!(show(&[]), "\"\"");
        assert_eq!(show(&[0, 1, 0xfe]), "0x0001fe");
        let long = show(&[7u8; 100]);
        assert!(long.starts_with("0x0707") && long.ends_with("… (100 bytes)"), "{long}");
        let around = bytes_around(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 9);
        assert_eq!(around, "bytes at offset 1..10 of 10: 02 03 04 05 06 07 08 09 [9:] 0a");
    }
}
