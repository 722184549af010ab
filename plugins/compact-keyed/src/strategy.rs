//! The strategy: [`format`](crate::format) over the guest SDK.

use snapshot_guest::codec::{ReadExt, WriteExt};
use snapshot_guest::{
    restore_length_prefixed, snapshot_length_prefixed, BatchBuilder, DistributionMode, Error, KeyedStateView,
    OperatorSink, OperatorStateView, PluginInfo, RestoreReader, RestoreSink, Result, SnapshotStrategy, SnapshotWriter,
    StateKind,
};
use std::io::{Read, Write};

use crate::format::{put_entry, put_varint, take_varint, END, FORMAT_VERSION, MAGIC, MAP_KIND, SECTION};

/// How many bytes of entries the strategy asks the host for at once.
const BATCH_BYTES: u32 = 256 * 1024;
/// A restore puts entries into the host in batches of about this many bytes.
const PUT_BYTES: usize = 256 * 1024;

/// The strategy.
#[derive(Debug)]
pub struct CompactKeyed;

impl SnapshotStrategy for CompactKeyed {
    fn describe() -> PluginInfo {
        PluginInfo::new("compact-keyed", env!("CARGO_PKG_VERSION"), "compact-keyed", FORMAT_VERSION as u32)
    }

    fn snapshot_keyed(state: &KeyedStateView<'_>, out: &mut SnapshotWriter<'_>) -> Result<()> {
        out.write_all(MAGIC)?;
        out.write_u16(FORMAT_VERSION)?;
        let states = state.states();
        let mut encoded = Vec::with_capacity(BATCH_BYTES as usize + 4096);
        for key_group in state.key_group_range() {
            out.begin_key_group(key_group)?;
            encoded.clear();
            put_varint(&mut encoded, key_group as u64);
            out.write_all(&encoded)?;
            for (index, info) in states.iter().enumerate() {
                let mut entries = state.entries(index as u32, key_group)?;
                let Some(mut batch) = entries.next_batch(BATCH_BYTES) else { continue };
                let kind = info.kind.to_u8();
                encoded.clear();
                encoded.push(SECTION);
                put_varint(&mut encoded, info.name.len() as u64);
                encoded.extend_from_slice(info.name.as_bytes());
                encoded.push(kind);
                loop {
                    put_varint(&mut encoded, batch.len() as u64);
                    for e in batch.iter() {
                        put_entry(&mut encoded, kind == MAP_KIND, e.key, e.namespace, e.user_key, e.value);
                    }
                    out.write_all(&encoded)?;
                    encoded.clear();
                    match entries.next_batch(BATCH_BYTES) {
                        Some(next) => batch = next,
                        None => break,
                    }
                }
                encoded.push(0);
                out.write_all(&encoded)?;
            }
            out.write_u8(END)?;
        }
        Ok(())
    }

    fn restore_key_group(key_group: u32, input: &mut RestoreReader<'_>, sink: &mut RestoreSink<'_>) -> Result<()> {
        let at = input.position();
        let fail = |what: String| Error::msg(format!("key group {key_group} at offset {at}: {what}"));
        let found = read_varint(input).map_err(|e| fail(e.to_string()))?;
        if found != key_group as u64 {
            return Err(fail(format!("expected key group {key_group}, found {found} (wrong offsets or corruption)")));
        }
        let mut batch = BatchBuilder::new();
        loop {
            match input.read_u8().map_err(|e| fail(e.to_string()))? {
                END => return Ok(()),
                SECTION => {}
                other => return Err(fail(format!("unknown section marker {other}"))),
            }
            let name_len = read_varint(input).map_err(|e| fail(e.to_string()))?;
            if name_len > 1 << 20 {
                return Err(fail(format!("state name of {name_len} bytes (corrupted snapshot?)")));
            }
            let mut name = Vec::new();
            append_exact(input, name_len, &mut name).map_err(|e| fail(e.to_string()))?;
            let name = String::from_utf8(name).map_err(|_| fail("state name is not UTF-8".into()))?;
            let kind_code = input.read_u8().map_err(|e| fail(e.to_string()))?;
            let state = sink.state(&name, StateKind::from_u8(kind_code)?)?;
            let map = kind_code == MAP_KIND;
            loop {
                let count = read_varint(input).map_err(|e| fail(e.to_string()))?;
                if count == 0 {
                    break;
                }
                for _ in 0..count {
                    // The parts go straight into the batch's packed buffer: no copy per part.
                    let mut lengths = [0u32; 4];
                    for (i, length) in lengths.iter_mut().enumerate() {
                        if i == 2 && !map {
                            continue;
                        }
                        let len = read_varint(input).map_err(|e| fail(e.to_string()))?;
                        *length = u32::try_from(len).map_err(|_| fail(format!("entry part of {len} bytes")))?;
                        append_exact(input, len, batch.data_mut()).map_err(|e| fail(e.to_string()))?;
                    }
                    batch.push_packed(lengths[0], lengths[1], lengths[2], lengths[3]);
                    if batch.data_len() >= PUT_BYTES {
                        sink.put(state, &batch)?;
                        batch.clear();
                    }
                }
            }
            if !batch.is_empty() {
                sink.put(state, &batch)?;
                batch.clear();
            }
        }
    }

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
}

/// A varint read byte by byte from the buffered reader (at most ten bytes).
fn read_varint(input: &mut RestoreReader<'_>) -> std::io::Result<u64> {
    let mut bytes = [0u8; 10];
    for i in 0..bytes.len() {
        bytes[i] = input.read_u8()?;
        if bytes[i] & 0x80 == 0 {
            let mut slice = &bytes[..=i];
            return take_varint(&mut slice)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed length"))
}

/// Appends exactly `len` bytes to `out`. Reserves exactly what is needed (no doubling, which
/// would take twice the memory of a huge value), but only once the first 16 MiB were actually
/// read: a corrupted length fails on end of stream instead of allocating gigabytes first.
fn append_exact(input: &mut RestoreReader<'_>, len: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    const PROBE: u64 = 16 << 20;
    let mut done = 0u64;
    while done < len {
        let step = if done == 0 { len.min(PROBE) } else { len - done };
        let step = usize::try_from(step).map_err(|_| std::io::Error::other("entry larger than the address space"))?;
        out.reserve_exact(step);
        let at = out.len();
        out.resize(at + step, 0);
        input.read_exact(&mut out[at..])?;
        done += step as u64;
    }
    Ok(())
}

snapshot_guest::export_strategy!(CompactKeyed);
