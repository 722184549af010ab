//! Host side of the `output` interface: the stream a strategy writes a snapshot into.
//!
//! Linked by hand rather than through the generated trait: the generated code would copy every
//! `write` into a fresh `Vec<u8>`, which the feasibility probe measured at about half of
//! native throughput. Here `write` borrows the guest's bytes straight out of linear memory and
//! hands that slice to the checkpoint stream.

use std::collections::BTreeMap;

use wasmtime::component::{Linker, Resource, ResourceType, WasmList};
use wasmtime::StoreContextMut;

use super::bindings::HostError;
use super::keyed_state::EntryReaderResource;
use super::store::{HostFailure, InvocationState};
use std::sync::Arc;

use crate::handles::{DistributionMode, KeyGroupRangeOffsets, PartitionInfo, SegmentLabel, SegmentRecorder};
use crate::key_groups::KeyGroupRange;
use crate::streams::CheckpointOutputStream;

/// What the host records while a strategy writes: key-group offsets for a keyed snapshot,
/// partition offsets per state for an operator snapshot.
enum Marks {
    Keyed { range: KeyGroupRange, offsets: Vec<u64> },
    Operator { states: Vec<(String, DistributionMode, usize)>, offsets: Vec<Vec<u64>> },
}

/// The host object behind a guest's `output-stream`: the checkpoint stream plus the offsets
/// the host records as the strategy announces key groups or partitions, and the checksum of
/// every segment between them (so that a restore can verify exactly the bytes it reads).
pub struct OutputStreamResource {
    // `None` only while a `write` has taken it out to read guest memory.
    stream: Option<Box<dyn CheckpointOutputStream>>,
    marks: Marks,
    segments: SegmentRecorder,
    max_bytes: Option<u64>,
    failed: bool,
}

impl std::fmt::Debug for OutputStreamResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputStreamResource").field("failed", &self.failed).finish_non_exhaustive()
    }
}

impl OutputStreamResource {
    /// A resource writing into `stream`, for a keyed snapshot of `range`.
    pub fn new(stream: Box<dyn CheckpointOutputStream>, range: KeyGroupRange, max_bytes: Option<u64>) -> Self {
        let marks = Marks::Keyed { range, offsets: Vec::with_capacity(range.len() as usize) };
        OutputStreamResource { stream: Some(stream), marks, segments: SegmentRecorder::new(), max_bytes, failed: false }
    }

    /// A resource writing into `stream`, for an operator snapshot of `states` (name, mode and
    /// number of elements of each, in state-index order).
    pub fn for_operator(
        stream: Box<dyn CheckpointOutputStream>,
        states: Vec<(String, DistributionMode, usize)>,
        max_bytes: Option<u64>,
    ) -> Self {
        let offsets = states.iter().map(|(_, _, n)| Vec::with_capacity(*n)).collect();
        OutputStreamResource {
            stream: Some(stream),
            marks: Marks::Operator { states, offsets },
            segments: SegmentRecorder::new(),
            max_bytes,
            failed: false,
        }
    }

    /// Ends a keyed snapshot: returns the (still open) stream and the offsets, or the contract
    /// violation if not every key group was marked.
    pub fn finish(self) -> Result<(Box<dyn CheckpointOutputStream>, KeyGroupRangeOffsets), String> {
        let stream = self.stream.ok_or_else(|| "output stream was not returned by a write".to_string())?;
        let Marks::Keyed { range, offsets } = self.marks else { return Err("not a keyed snapshot".into()) };
        if offsets.len() != range.len() as usize {
            let first_missing = range.start().unwrap_or(0) + offsets.len() as u32;
            return Err(format!(
                "the snapshot marked {} of the {} key groups of {range}; key groups {first_missing}..={} were never marked with begin-key-group",
                offsets.len(),
                range.len(),
                range.end().unwrap_or(0)
            ));
        }
        let checksums = Arc::new(self.segments.finish());
        let offsets = KeyGroupRangeOffsets::new(range, offsets).map_err(|e| e.to_string())?.with_checksums(checksums);
        Ok((stream, offsets))
    }

    /// Ends an operator snapshot: the (still open) stream and every state's partition offsets,
    /// or the contract violation if an element was not marked.
    pub fn finish_operator(self) -> Result<super::OperatorOutput, String> {
        let stream = self.stream.ok_or_else(|| "output stream was not returned by a write".to_string())?;
        let Marks::Operator { states, offsets } = self.marks else { return Err("not an operator snapshot".into()) };
        let mut partitions = BTreeMap::new();
        for ((name, mode, expected), offsets) in states.into_iter().zip(offsets) {
            if offsets.len() != expected {
                return Err(format!("operator state {name:?} has {expected} elements but {} partitions were marked with begin-partition", offsets.len()));
            }
            partitions.insert(name, PartitionInfo { offsets, mode });
        }
        Ok((stream, partitions, Arc::new(self.segments.finish())))
    }

    fn stream_mut(&mut self) -> Result<&mut Box<dyn CheckpointOutputStream>, &'static str> {
        if self.failed {
            return Err("the output stream failed earlier");
        }
        self.stream.as_mut().ok_or("the output stream is in use")
    }

    /// Checks a `begin-key-group` call; returns the problem, if any.
    fn check_key_group(&self, key_group: u32) -> Option<String> {
        let Marks::Keyed { range, offsets } = &self.marks else {
            return Some(format!("begin-key-group({key_group}) in an operator snapshot (use begin-partition)"));
        };
        let expected = range.start().unwrap_or(0) + offsets.len() as u32;
        if !range.contains(key_group) {
            Some(format!("begin-key-group({key_group}): key group is outside the snapshot's range {range}"))
        } else if key_group < expected {
            Some(format!("begin-key-group({key_group}): key groups must be marked once each in ascending order, but {key_group} was already marked"))
        } else if key_group > expected {
            Some(format!("begin-key-group({key_group}): key group {expected} must be marked first (every key group of {range} is marked, in order)"))
        } else {
            None
        }
    }

    /// Checks a `begin-partition` call; returns the problem, if any.
    fn check_partition(&self, state: u32) -> Option<String> {
        let Marks::Operator { states, offsets } = &self.marks else {
            return Some(format!("begin-partition({state}) in a keyed snapshot (use begin-key-group)"));
        };
        match states.get(state as usize) {
            None => Some(format!("begin-partition({state}): there are only {} operator states", states.len())),
            Some((name, _, count)) if offsets[state as usize].len() >= *count => Some(format!(
                "begin-partition({state}): operator state {name:?} has {count} elements, all already marked"
            )),
            Some(_) => None,
        }
    }

    fn record(&mut self, index: u32, position: u64) {
        let label = match &mut self.marks {
            Marks::Keyed { offsets, .. } => {
                offsets.push(position);
                SegmentLabel::KeyGroup(index)
            }
            Marks::Operator { states, offsets } => {
                let offsets = &mut offsets[index as usize];
                offsets.push(position);
                SegmentLabel::Partition { state: states[index as usize].0.clone(), index: offsets.len() as u32 - 1 }
            }
        };
        self.segments.mark(label);
    }
}

type Ctx<'a> = StoreContextMut<'a, InvocationState>;

fn closed(store: &mut Ctx<'_>, why: &str) -> HostError {
    store.data_mut().contract(format!("output-stream used after it failed or closed: {why}"))
}

fn write(
    mut store: Ctx<'_>,
    this: Resource<OutputStreamResource>,
    bytes: WasmList<u8>,
) -> wasmtime::Result<Result<(), HostError>> {
    // Time spent in host calls is invisible to epoch interruption: check here too.
    if store.data().cancel.is_cancelled() {
        return Ok(Err(store.data_mut().fail(HostFailure::Cancelled)));
    }
    if let Err(e) = store.data_mut().produce(bytes.len() as u64, "the snapshot") {
        store.data_mut().table.get_mut(&this)?.failed = true;
        return Ok(Err(e));
    }
    let res = store.data_mut().table.get_mut(&this)?;
    let position = res.stream.as_ref().map(|s| s.position()).unwrap_or(0);
    if let Some(max) = res.max_bytes {
        if position + bytes.len() as u64 > max {
            res.failed = true;
            let message = format!("the snapshot would exceed the plugin's output limit of {max} bytes");
            return Ok(Err(store.data_mut().fail(HostFailure::Limit(message))));
        }
    }
    let mut stream = match res.stream_mut() {
        Ok(_) => res.stream.take().expect("checked"),
        Err(why) => return Ok(Err(closed(&mut store, why))),
    };
    let mut segments = std::mem::take(&mut res.segments);
    // The slice borrows the store immutably, which is why the stream and the checksum state
    // were taken out of the table first.
    let slice = bytes.as_le_slice(&store);
    let result = stream.write(slice);
    if result.is_ok() {
        segments.update(slice);
    }
    let res = store.data_mut().table.get_mut(&this)?;
    res.stream = Some(stream);
    res.segments = segments;
    match result {
        Ok(()) => Ok(Ok(())),
        Err(e) => {
            res.failed = true;
            Ok(Err(store.data_mut().fail(HostFailure::Storage(e))))
        }
    }
}

fn with_stream<R>(
    mut store: Ctx<'_>,
    this: &Resource<OutputStreamResource>,
    op: impl FnOnce(&mut dyn CheckpointOutputStream) -> std::io::Result<R>,
) -> wasmtime::Result<Result<R, HostError>> {
    let res = store.data_mut().table.get_mut(this)?;
    let result = match res.stream_mut() {
        Ok(stream) => op(stream.as_mut()),
        Err(why) => return Ok(Err(closed(&mut store, why))),
    };
    Ok(match result {
        Ok(r) => Ok(r),
        Err(e) => {
            store.data_mut().table.get_mut(this)?.failed = true;
            Err(store.data_mut().fail(HostFailure::Storage(e)))
        }
    })
}

/// `begin-key-group` and `begin-partition`: validate, then record the current position.
fn mark(
    mut store: Ctx<'_>,
    this: Resource<OutputStreamResource>,
    index: u32,
    keyed: bool,
) -> wasmtime::Result<Result<(), HostError>> {
    let res = store.data_mut().table.get_mut(&this)?;
    let problem = if keyed { res.check_key_group(index) } else { res.check_partition(index) };
    if let Some(message) = problem {
        return Ok(Err(store.data_mut().contract(message)));
    }
    match res.stream_mut() {
        Ok(stream) => {
            let position = stream.position();
            res.record(index, position);
            Ok(Ok(()))
        }
        Err(why) => Ok(Err(closed(&mut store, why))),
    }
}

/// `write-pending`: appends the reader's pending batch, copied host-side only.
fn write_pending(
    mut store: Ctx<'_>,
    this: Resource<OutputStreamResource>,
    reader: Resource<EntryReaderResource>,
) -> wasmtime::Result<Result<(), HostError>> {
    let Some(bytes) = store.data_mut().table.get_mut(&reader)?.take_pending() else {
        let message = "write-pending: the reader has no pending batch (call next-batch-lengths first, once per write)";
        return Ok(Err(store.data_mut().contract(message)));
    };
    if store.data().cancel.is_cancelled() {
        return Ok(Err(store.data_mut().fail(HostFailure::Cancelled)));
    }
    if let Err(e) = store.data_mut().produce(bytes.len() as u64, "the snapshot") {
        store.data_mut().table.get_mut(&this)?.failed = true;
        store.data_mut().table.get_mut(&reader)?.restore_buffer(bytes);
        return Ok(Err(e));
    }
    let res = store.data_mut().table.get_mut(&this)?;
    let position = res.stream.as_ref().map(|s| s.position()).unwrap_or(0);
    let over_limit = res.max_bytes.filter(|max| position + bytes.len() as u64 > *max);
    let result = match (over_limit, res.stream_mut()) {
        (Some(max), _) => {
            res.failed = true;
            Err(HostFailure::Limit(format!("the snapshot would exceed the plugin's output limit of {max} bytes")))
        }
        (None, Ok(stream)) => match stream.write(&bytes) {
            Ok(()) => {
                res.segments.update(&bytes);
                Ok(())
            }
            Err(e) => {
                res.failed = true;
                Err(HostFailure::Storage(e))
            }
        },
        (None, Err(why)) => Err(HostFailure::Contract(format!("output-stream used after it failed or closed: {why}"))),
    };
    store.data_mut().table.get_mut(&reader)?.restore_buffer(bytes);
    Ok(result.map_err(|f| store.data_mut().fail(f)))
}

/// Links `snapshot:strategy/output@{version}` into `linker` (the interface is the same in
/// every version).
pub(crate) fn add_to_linker(linker: &mut Linker<InvocationState>, version: &str) -> wasmtime::Result<()> {
    let name = format!("{}/output@{version}", super::bindings::WIT_PACKAGE);
    let mut inst = linker.instance(&name)?;
    // The guest only ever borrows an output stream; the host deletes it after the call.
    inst.resource("output-stream", ResourceType::host::<OutputStreamResource>(), |_, _| Ok(()))?;
    inst.func_wrap(
        "[method]output-stream.write",
        |store, (this, bytes): (Resource<OutputStreamResource>, WasmList<u8>)| write(store, this, bytes).map(|r| (r,)),
    )?;
    inst.func_wrap(
        "[method]output-stream.position",
        |mut store: Ctx<'_>, (this,): (Resource<OutputStreamResource>,)| {
            let res = store.data_mut().table.get(&this)?;
            Ok((res.stream.as_ref().map(|s| s.position()).unwrap_or(0),))
        },
    )?;
    inst.func_wrap("[method]output-stream.flush", |store, (this,): (Resource<OutputStreamResource>,)| {
        with_stream(store, &this, |s| s.flush()).map(|r| (r,))
    })?;
    inst.func_wrap("[method]output-stream.sync", |store, (this,): (Resource<OutputStreamResource>,)| {
        with_stream(store, &this, |s| s.sync()).map(|r| (r,))
    })?;
    inst.func_wrap(
        "[method]output-stream.begin-key-group",
        |store, (this, key_group): (Resource<OutputStreamResource>, u32)| {
            mark(store, this, key_group, true).map(|r| (r,))
        },
    )?;
    inst.func_wrap(
        "[method]output-stream.write-pending",
        |store, (this, reader): (Resource<OutputStreamResource>, Resource<EntryReaderResource>)| {
            write_pending(store, this, reader).map(|r| (r,))
        },
    )?;
    inst.func_wrap(
        "[method]output-stream.begin-partition",
        |store, (this, state): (Resource<OutputStreamResource>, u32)| mark(store, this, state, false).map(|r| (r,)),
    )?;
    Ok(())
}
