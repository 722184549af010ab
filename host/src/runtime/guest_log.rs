//! A strategy's stdout or stderr: captured per invocation, forwarded to the host's log, capped.
//!
//! Language runtimes print (Python's `print`, JavaScript's `console.log`, a Rust panic message)
//! and a plugin author needs to see it; but a guest must not be able to grow the host without
//! bound by printing. Output beyond the cap is counted and dropped, not refused: a write error
//! would make `println!` panic and fail the snapshot for a log line, which is worse than a
//! truncated log. The forwarded log says how much was dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

/// A capped, shared in-memory sink for one stream of one invocation. Clones share the buffer.
#[derive(Debug, Clone)]
pub(crate) struct GuestLog {
    cap: usize,
    captured: Arc<Mutex<Captured>>,
}

impl GuestLog {
    /// A sink that keeps at most `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        GuestLog { cap, captured: Arc::default() }
    }

    fn append(&self, bytes: &[u8]) {
        let mut captured = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped += (bytes.len() - kept) as u64;
    }

    /// What was kept so far, and how many bytes were dropped beyond the cap.
    pub(crate) fn contents(&self) -> (Vec<u8>, u64) {
        let captured = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        (captured.bytes.clone(), captured.dropped)
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: what does not fit is dropped, never refused.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let mut log = GuestLog::new(10);
        log.write(Bytes::from_static(b"hello ")).unwrap();
        log.write(Bytes::from_static(b"world, again")).unwrap();
        assert_eq!(log.check_write().unwrap(), 64 * 1024, "a full log still accepts writes");
        assert_eq!(log.contents(), (b"hello worl".to_vec(), 8));
    }
}
