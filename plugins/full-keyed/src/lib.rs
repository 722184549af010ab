//! `full-keyed`: keyed state with every key group written in full, or (in a job that
//! checkpoints incrementally) as a delta of the rows that changed since the checkpoint before;
//! operator list state with every element written in full.
//!
//! # Format (`full-keyed`, version 1; little-endian)
//!
//! ```text
//! stream      := header group*                       one group per key group, ascending
//! header      := "SHFK" u16:format-version
//! group       := u32:key-group section* u8:0          offset of group recorded by the host
//! section     := u8:marker bytes:state-name u8:kind batch* u32:0
//! marker      := 1 (entries of a full group) | 2 (changed rows of a delta, each whole)
//!              | 3 (removed rows of a delta: key and namespace only)
//! batch       := u32:count lengths{count} data
//! lengths     := u32:key u32:namespace u32:user-key u32:value
//! data        := the parts of every entry, concatenated in entry order
//! bytes       := u32:length byte{length}
//! ```
//!
//! A full group holds only sections of marker 1, a delta only 2 and 3; the host records which
//! part each group is and tells restore, which checks the markers against it. Operator state
//! (same header): `element := u32:length byte{length}`, one per element, each marked as a
//! partition by the host; the state name and mode travel in the host's metadata.
//!
//! Every group names its states, so each group decodes alone from its offset: restoring a
//! sub-range after rescaling never reads another group. A batch keeps the host's packing, so
//! writing a snapshot is little more than copying what the host handed over.

use snapshot_guest::codec::{ReadExt, WriteExt};
use snapshot_guest::{
    restore_length_prefixed, snapshot_length_prefixed, BatchBuilder, DistributionMode, Entries, Error, GroupPart,
    KeyedStateView, OperatorSink, OperatorStateView, PluginInfo, RestoreReader, RestoreSink, Result, SnapshotStrategy,
    SnapshotWriter, StateKind,
};
use std::io::{Read, Write};

const MAGIC: &[u8; 4] = b"SHFK";
const FORMAT_VERSION: u16 = 1;
/// How many bytes of entries the strategy asks the host for at once.
const BATCH_BYTES: u32 = 256 * 1024;
/// Bounds on what one batch may claim, so a corrupted count cannot make restore allocate
/// gigabytes before noticing.
const MAX_BATCH_ENTRIES: u32 = 1 << 24;
/// Entries of a full group.
const SECTION: u8 = 1;
/// Changed rows of a delta, each whole: restored with `replace`.
const CHANGED: u8 = 2;
/// Removed rows of a delta: restored with `remove`.
const REMOVED: u8 = 3;
const END: u8 = 0;

/// The strategy.
#[derive(Debug)]
pub struct FullKeyed;

impl SnapshotStrategy for FullKeyed {
    fn describe() -> PluginInfo {
        PluginInfo::new("full-keyed", env!("CARGO_PKG_VERSION"), "full-keyed", FORMAT_VERSION as u32).incremental()
    }

    fn snapshot_keyed(state: &KeyedStateView<'_>, out: &mut SnapshotWriter<'_>) -> Result<()> {
        out.write_all(MAGIC)?;
        out.write_u16(FORMAT_VERSION)?;
        let states = state.states();
        let mut lengths = Vec::new();
        for key_group in state.key_group_range() {
            out.begin_key_group(key_group)?;
            out.write_u32(key_group)?;
            let delta = state.group_part(key_group) == GroupPart::Delta;
            for (index, info) in states.iter().enumerate() {
                let index = index as u32;
                if delta {
                    let changed = state.changed_entries(index, key_group)?;
                    write_section(out, CHANGED, &info.name, info.kind, changed, &mut lengths)?;
                    let removed = state.removed_rows(index, key_group)?;
                    write_section(out, REMOVED, &info.name, info.kind, removed, &mut lengths)?;
                } else {
                    let entries = state.entries(index, key_group)?;
                    write_section(out, SECTION, &info.name, info.kind, entries, &mut lengths)?;
                }
            }
            out.write_u8(END)?;
        }
        Ok(())
    }

    /// Operator state: the same header, then each element length-prefixed and marked as its
    /// own partition.
    fn snapshot_operator(state: &OperatorStateView<'_>, out: &mut SnapshotWriter<'_>) -> Result<()> {
        out.write_all(MAGIC)?;
        out.write_u16(FORMAT_VERSION)?;
        snapshot_length_prefixed(state, out)
    }

    fn restore_operator_partition(
        name: &str,
        mode: DistributionMode,
        input: &mut RestoreReader<'_>,
        sink: &mut OperatorSink<'_>,
    ) -> Result<()> {
        restore_length_prefixed(name, mode, input, sink)
    }

    fn restore_key_group(key_group: u32, input: &mut RestoreReader<'_>, sink: &mut RestoreSink<'_>) -> Result<()> {
        Self::restore_key_group_part(key_group, GroupPart::Full, FORMAT_VERSION as u32, input, sink)
    }

    fn restore_key_group_part(
        key_group: u32,
        part: GroupPart,
        format_version: u32,
        input: &mut RestoreReader<'_>,
        sink: &mut RestoreSink<'_>,
    ) -> Result<()> {
        if format_version > FORMAT_VERSION as u32 {
            return Err(Error::msg(format!(
                "key group {key_group} was written in format version {format_version}; this build reads up to {FORMAT_VERSION}"
            )));
        }
        let at = input.position();
        let found = input.read_u32().map_err(|e| context(e, key_group, at))?;
        if found != key_group {
            return Err(Error::msg(format!(
                "unexpected key group at offset {at}: expected {key_group}, found {found} (wrong offsets or a corrupted snapshot)"
            )));
        }
        let mut batch = BatchBuilder::new();
        loop {
            let marker = input.read_u8().map_err(|e| context(e, key_group, at))?;
            let expected = match marker {
                END => return Ok(()),
                SECTION => GroupPart::Full,
                CHANGED | REMOVED => GroupPart::Delta,
                other => {
                    return Err(Error::msg(format!(
                        "key group {key_group} at offset {at}: unknown section marker {other} (corrupted snapshot)"
                    )))
                }
            };
            if expected != part {
                return Err(Error::msg(format!(
                    "key group {key_group} at offset {at}: a section of a {expected:?} group in a part the host recorded as {part:?} (corrupted snapshot)"
                )));
            }
            read_section(marker, input, sink, &mut batch)
                .map_err(|e| Error::msg(format!("key group {key_group} at offset {at}: {e}")))?;
        }
    }
}

/// Writes one section: the marker, the state's name and kind, then the reader's entries in
/// batches, copied by the host (only their lengths enter the guest). Nothing for an empty
/// reader.
fn write_section(
    out: &mut SnapshotWriter<'_>,
    marker: u8,
    name: &str,
    kind: StateKind,
    mut entries: Entries,
    lengths: &mut Vec<u8>,
) -> Result<()> {
    let Some(mut batch) = entries.next_pending(BATCH_BYTES) else {
        return Ok(());
    };
    out.write_u8(marker)?;
    out.write_bytes(name.as_bytes())?;
    out.write_u8(kind.to_u8())?;
    loop {
        out.write_u32(batch.len() as u32)?;
        lengths.clear();
        for (k, n, u, v) in batch.lengths() {
            for part in [k, n, u, v] {
                lengths.extend_from_slice(&part.to_le_bytes());
            }
        }
        out.write_all(lengths)?;
        out.write_pending(&entries)?;
        match entries.next_pending(BATCH_BYTES) {
            Some(next) => batch = next,
            None => break,
        }
    }
    out.write_u32(0)?;
    Ok(())
}

fn context(e: std::io::Error, key_group: u32, at: u64) -> Error {
    Error::msg(format!("key group {key_group} at offset {at}: {e}"))
}

fn read_section(
    marker: u8,
    input: &mut RestoreReader<'_>,
    sink: &mut RestoreSink<'_>,
    batch: &mut BatchBuilder,
) -> Result<()> {
    let name = String::from_utf8(input.read_bytes()?).map_err(|_| Error::msg("state name is not UTF-8"))?;
    let kind = StateKind::from_u8(input.read_u8()?)?;
    let state = sink.state(&name, kind)?;
    let mut lengths = Vec::new();
    loop {
        let count = input.read_u32()?;
        if count == 0 {
            return Ok(());
        }
        if count > MAX_BATCH_ENTRIES {
            return Err(Error::msg(format!("state {name:?}: batch of {count} entries exceeds {MAX_BATCH_ENTRIES}")));
        }
        lengths.resize(count as usize * 16, 0);
        input.read_exact(&mut lengths)?;
        batch.clear();
        let mut total = 0u64;
        for entry in lengths.chunks_exact(16) {
            let part = |i: usize| u32::from_le_bytes(entry[i * 4..i * 4 + 4].try_into().unwrap());
            let (k, ns, uk, v) = (part(0), part(1), part(2), part(3));
            total += k as u64 + ns as u64 + uk as u64 + v as u64;
            batch.push_packed(k, ns, uk, v);
        }
        read_exact_bounded(input, batch.data_mut(), total)?;
        match marker {
            CHANGED => sink.replace(state, batch)?,
            REMOVED => sink.remove(state, batch)?,
            _ => sink.put(state, batch)?,
        }
    }
}

/// Appends exactly `len` bytes to `out`. Reserves exactly what is needed (no doubling, which
/// would take twice the memory of a huge value), but only once the first 16 MiB were actually
/// read: a corrupted length fails on end of stream instead of allocating gigabytes first.
fn read_exact_bounded(input: &mut impl Read, out: &mut Vec<u8>, len: u64) -> Result<()> {
    const PROBE: u64 = 16 << 20;
    let first = len.min(PROBE) as usize;
    let start = out.len();
    out.reserve_exact(first);
    out.resize(start + first, 0);
    input.read_exact(&mut out[start..])?;
    if len > PROBE {
        let rest = usize::try_from(len - PROBE).map_err(|_| Error::msg("batch larger than the address space"))?;
        out.reserve_exact(rest);
        let at = out.len();
        out.resize(at + rest, 0);
        input.read_exact(&mut out[at..])?;
    }
    Ok(())
}

snapshot_guest::export_strategy!(FullKeyed);
