//! Fault cases: a failing local copy must not fail the snapshot, a failing primary must, and
//! cancellation stops a snapshot at its next host call.

use std::time::Instant;

use super::data;
use super::diagnose::compare_keyed;
use super::keyed::restore;
use super::{CaseError, CaseOutput, Context};
use crate::duplicating::DuplicatingOutputStream;
use crate::handles::StreamStateHandle;
use crate::runtime::{CancelToken, PluginError};
use crate::streams::{
    CheckpointOutputStream, FaultInjectingStream, FileCheckpointOutputStream, MemoryCheckpointOutputStream,
};

pub fn secondary_failure(cx: &Context) -> CaseOutput {
    let plugin = cx.plugin;
    let backend = data::every_kind(3_000);
    let dir = tempfile::tempdir().map_err(|e| CaseError::msg(e.to_string()))?;
    let mut bytes = 0;
    for fail_at in [0usize, 1, 3, 10, 40] {
        let secondary =
            FaultInjectingStream::new(Box::new(FileCheckpointOutputStream::new(dir.path(), 0)), Some(fail_at));
        let out = Box::new(DuplicatingOutputStream::with_buffer_size(
            Box::new(MemoryCheckpointOutputStream::new()),
            Box::new(secondary),
            4096,
        ));
        let (stream, offsets) = plugin.snapshot_keyed(backend.snapshot(), out).map_err(|e| {
            CaseError::plugin(&format!("a secondary failure at operation {fail_at} failed the snapshot"), e)
        })?;
        let result = stream.close_and_finalize().map_err(|e| CaseError::msg(e.to_string()))?;
        if result.local().is_some() {
            return Err(CaseError::msg(format!(
                "secondary failed at operation {fail_at}, yet the result has a local part"
            )));
        }
        let primary = result.into_keyed(offsets).primary().cloned().ok_or(CaseError::msg("no primary part"))?;
        bytes = primary.state_size();
        let restored = restore(plugin, &[primary], backend.key_group_range())?;
        compare_keyed(&backend, &restored, &format!("primary after a secondary failure at operation {fail_at}"))
            .map_err(CaseError::msg)?;
        if std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0) != 0 {
            return Err(CaseError::msg("the failed secondary left a file behind"));
        }
    }
    Ok(bytes.into())
}

pub fn primary_failure(cx: &Context) -> CaseOutput {
    let plugin = cx.plugin;
    let backend = data::every_kind(3_000);
    for fail_at in [0usize, 2, 8] {
        let out = Box::new(FaultInjectingStream::new(Box::new(MemoryCheckpointOutputStream::new()), Some(fail_at)));
        match plugin.snapshot_keyed(backend.snapshot(), out) {
            Err(PluginError::Storage { .. }) => {}
            Err(other) => {
                return Err(CaseError::msg(format!(
                    "a primary failure at operation {fail_at} surfaced as {other} instead of a storage error"
                )))
            }
            Ok((stream, _)) => {
                if stream.close_and_get_handle().is_ok() {
                    return Err(CaseError::msg(format!("a primary failure at operation {fail_at} went unnoticed")));
                }
            }
        }
    }
    Ok(0.into())
}

/// A stream that cancels the invocation on its first write: cancellation mid-snapshot,
/// deterministically.
#[derive(Debug)]
struct CancelOnWrite(MemoryCheckpointOutputStream, CancelToken);

impl CheckpointOutputStream for CancelOnWrite {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.1.cancel();
        self.0.write(bytes)
    }
    fn position(&self) -> u64 {
        self.0.position()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync()
    }
    fn close_and_get_handle(self: Box<Self>) -> std::io::Result<StreamStateHandle> {
        Box::new(self.0).close_and_get_handle()
    }
}

pub fn cancellation(cx: &Context) -> CaseOutput {
    let plugin = cx.plugin;
    let backend = data::every_kind(20_000);
    let token = CancelToken::new();
    let out = Box::new(CancelOnWrite(MemoryCheckpointOutputStream::new(), token.clone()));
    let started = Instant::now();
    match plugin.snapshot_keyed_cancellable(backend.snapshot(), out, &token) {
        Err(PluginError::Cancelled { .. }) => Ok(0.into()),
        Err(other) => Err(CaseError::plugin("cancellation surfaced as another error", other)),
        Ok(_) => Err(CaseError::msg(format!(
            "the snapshot completed although it was cancelled at its first write ({:?} earlier)",
            started.elapsed()
        ))),
    }
}
