//! Host side of the `input` interface: the stream a strategy restores from.

use std::io::{Read, SeekFrom};

use wasmtime::component::Resource;

use super::bindings::v2::snapshot::strategy::input::{Host, HostInputStream};
use super::bindings::HostError;
use super::store::{HostFailure, InvocationState};
use crate::handles::{SegmentVerifier, VerifyError};
use crate::streams::CheckpointInputStream;

/// Largest single read, whatever the guest asks for: bounds the host allocation a guest can
/// cause per call.
const MAX_READ: u32 = 4 << 20;

/// The host object behind a guest's `input-stream`. Every byte it hands out is checked against
/// the segment checksums recorded when the stream was written (see [`SegmentVerifier`]).
pub struct InputStreamResource {
    stream: Box<dyn CheckpointInputStream>,
    position: u64,
    verifier: SegmentVerifier,
}

impl std::fmt::Debug for InputStreamResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputStreamResource").field("position", &self.position).finish()
    }
}

impl InputStreamResource {
    /// A resource reading `stream` from its start, verifying what it reads with `verifier`.
    pub fn new(stream: Box<dyn CheckpointInputStream>, verifier: SegmentVerifier) -> Self {
        InputStreamResource { stream, position: 0, verifier }
    }

    /// Verifies the segment starting at `required` (the key group or partition just
    /// restored) even if it was not read, and with `everything` every segment read so far
    /// that is not verified yet (see [`SegmentVerifier`]).
    pub fn settle(&mut self, required: Option<u64>, everything: bool) -> Result<(), VerifyError> {
        self.verifier.settle(&mut *self.stream, required, everything)
    }

    /// Moves the stream to `offset` (host side, before handing it to the guest).
    pub fn seek(&mut self, offset: u64) -> std::io::Result<()> {
        self.stream.seek(SeekFrom::Start(offset))?;
        self.position = offset;
        Ok(())
    }
}

impl HostInputStream for InvocationState {
    fn read(&mut self, this: Resource<InputStreamResource>, max: u32) -> wasmtime::Result<Result<Vec<u8>, HostError>> {
        // Time spent in host calls is invisible to epoch interruption: check here too.
        if self.cancel.is_cancelled() {
            return Ok(Err(self.fail(HostFailure::Cancelled)));
        }
        let res = self.table.get_mut(&this)?;
        let start = res.position;
        let want = max.min(MAX_READ) as usize;
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        let result = loop {
            if filled == want {
                break Ok(());
            }
            match res.stream.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        res.position += filled as u64;
        buf.truncate(filled);
        // Damaged bytes are never handed to the strategy as if they were good.
        let verified = res.verifier.observe(start, &buf);
        match (result, verified) {
            (_, Err(mismatch)) => Ok(Err(self.fail(HostFailure::Corrupt(mismatch)))),
            (Err(e), _) => Ok(Err(self.fail(HostFailure::Storage(e)))),
            (Ok(()), Ok(())) => {
                self.amplification.consume(filled as u64);
                Ok(Ok(buf))
            }
        }
    }

    fn seek(&mut self, this: Resource<InputStreamResource>, offset: u64) -> wasmtime::Result<Result<(), HostError>> {
        let res = self.table.get_mut(&this)?;
        match res.seek(offset) {
            Ok(()) => Ok(Ok(())),
            Err(e) => Ok(Err(self.fail(HostFailure::Storage(e)))),
        }
    }

    fn position(&mut self, this: Resource<InputStreamResource>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.position)
    }

    fn drop(&mut self, _rep: Resource<InputStreamResource>) -> wasmtime::Result<()> {
        // Only ever borrowed by the guest: the host deletes it after the call.
        Ok(())
    }
}

impl Host for InvocationState {}
