//! Checkpoint streams on an object store (S3-compatible or in-memory): bytes upload while the
//! strategy writes, in memory bounded by the part size and the parts in flight.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};

use super::{CheckpointOutputStream, CheckpointStreamFactory, StateScope};
use crate::handles::StreamStateHandle;
use crate::storage::backend::{block_on, runtime, ObjectBackend};

/// How long dropping a stream waits for its multipart upload to be aborted.
const ABORT_DEADLINE: Duration = Duration::from_secs(30);

/// Creates object streams below `<job root>/chk-<id>/` (exclusive) and `<job root>/shared/`.
#[derive(Debug, Clone)]
pub struct ObjectStreamFactory {
    backend: Arc<ObjectBackend>,
    exclusive: String,
    shared: String,
    inline_threshold: usize,
}

impl ObjectStreamFactory {
    /// A factory for checkpoint directory `exclusive` (relative to the job root). Retries the
    /// aborts of earlier uploads the store could not take at the time.
    pub fn new(backend: Arc<ObjectBackend>, exclusive: String, inline_threshold: usize) -> Self {
        backend.retry_aborts();
        ObjectStreamFactory { backend, exclusive, shared: "shared".into(), inline_threshold }
    }
}

impl CheckpointStreamFactory for ObjectStreamFactory {
    fn create_output_stream(&self, scope: StateScope) -> io::Result<Box<dyn CheckpointOutputStream>> {
        let dir = match scope {
            StateScope::Exclusive => &self.exclusive,
            StateScope::Shared => &self.shared,
        };
        let relative = format!("{dir}/{}", uuid::Uuid::new_v4());
        Ok(Box::new(ObjectCheckpointOutputStream::new(self.backend.clone(), relative, self.inline_threshold)))
    }
}

/// One snapshot stream into one object.
///
/// Up to `inline_threshold` bytes become an inline handle; up to one part they are sent with a
/// single PUT at close; beyond that a multipart upload starts and every full part is sent in
/// the background, at most `max_concurrent_uploads` at once (a write waits for a free slot:
/// back-pressure instead of unbounded buffering). The object exists only once the stream
/// completes: an upload that failed or was dropped is aborted, and an abort the store could
/// not take (it was unreachable) is retried later by the backend, so no parts stay behind.
#[derive(Debug)]
pub struct ObjectCheckpointOutputStream {
    backend: Arc<ObjectBackend>,
    relative: String,
    key: ObjectPath,
    buffer: Vec<u8>,
    upload: Option<Upload>,
    inline_threshold: usize,
    position: u64,
    checksum: u32,
    failed: bool,
}

/// A multipart upload in progress: its parts in flight.
#[derive(Debug)]
struct Upload {
    upload: Box<dyn MultipartUpload>,
    parts: tokio::task::JoinSet<object_store::Result<()>>,
}

impl Upload {
    fn send(&mut self, part: Vec<u8>) {
        let request = self.upload.put_part(PutPayload::from(Bytes::from(part)));
        let _guard = runtime().enter();
        self.parts.spawn(request);
    }

    /// Waits until fewer than `max` parts are in flight; the first failed part fails it.
    fn wait_below(&mut self, max: usize) -> object_store::Result<()> {
        while !self.parts.is_empty() && self.parts.len() >= max {
            match block_on(self.parts.join_next()) {
                Some(Ok(result)) => result?,
                Some(Err(e)) => {
                    return Err(object_store::Error::Generic { store: "upload", source: Box::new(e) });
                }
                None => break,
            }
        }
        Ok(())
    }
}

impl ObjectCheckpointOutputStream {
    /// A stream that becomes the object `relative` below the backend's job root.
    pub fn new(backend: Arc<ObjectBackend>, relative: String, inline_threshold: usize) -> Self {
        let key = backend.key(&relative);
        ObjectCheckpointOutputStream {
            backend,
            relative,
            key,
            buffer: Vec::new(),
            upload: None,
            inline_threshold,
            position: 0,
            checksum: 0,
            failed: false,
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> io::Error {
        io::Error::other(format!("{what} {}/{}: {e}", self.backend.url, self.relative))
    }

    fn start_upload(&mut self) -> io::Result<()> {
        let upload = block_on(self.backend.store.put_multipart(&self.key))
            .map_err(|e| self.error("starting the multipart upload of", e))?;
        self.upload = Some(Upload { upload, parts: tokio::task::JoinSet::new() });
        Ok(())
    }

    /// Sends the buffer as the next part once a slot is free.
    fn send_part(&mut self) -> io::Result<()> {
        let max = self.backend.max_concurrent_uploads;
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.backend.part_size));
        let upload = self.upload.as_mut().expect("multipart upload started");
        let waited = upload.wait_below(max);
        if let Err(e) = waited {
            return Err(self.error("uploading a part of", e));
        }
        self.upload.as_mut().expect("multipart upload started").send(part);
        Ok(())
    }

    fn abort_upload(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            upload.parts.abort_all();
            let aborted = block_on(async {
                while upload.parts.join_next().await.is_some() {}
                tokio::time::timeout(ABORT_DEADLINE, upload.upload.abort()).await
            });
            match aborted {
                Ok(Ok(())) => tracing::debug!(object = %self.key, "multipart upload aborted"),
                Ok(Err(e)) => {
                    tracing::warn!(object = %self.key, error = %e, "could not abort a multipart upload; will retry");
                    self.backend.abort_later(self.key.clone(), upload.upload);
                }
                Err(_) => {
                    tracing::warn!(object = %self.key, "aborting a multipart upload timed out; will retry");
                    self.backend.abort_later(self.key.clone(), upload.upload);
                }
            }
        }
    }

    fn guarded<R>(&mut self, op: impl FnOnce(&mut Self) -> io::Result<R>) -> io::Result<R> {
        if self.failed {
            return Err(self.error("stream", "failed earlier; it cannot be completed"));
        }
        let result = op(self);
        if result.is_err() {
            self.failed = true;
            self.buffer = Vec::new();
            self.abort_upload();
        }
        result
    }
}

impl CheckpointOutputStream for ObjectCheckpointOutputStream {
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len();
        let checksum = crate::checksum::crc32c_append(self.checksum, bytes);
        self.guarded(|s| {
            let part = s.backend.part_size;
            while !bytes.is_empty() {
                // A full part goes out only once more bytes follow: an object of one part is
                // cheaper as a single PUT at close than as a multipart upload.
                if s.buffer.len() >= part {
                    if s.upload.is_none() {
                        s.start_upload()?;
                    }
                    s.send_part()?;
                }
                let n = bytes.len().min(part - s.buffer.len());
                s.buffer.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
            }
            s.position += len as u64;
            s.checksum = checksum;
            Ok(())
        })
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Object stores have no partial durability: bytes are durable once the stream completes.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn close_and_get_handle(mut self: Box<Self>) -> io::Result<StreamStateHandle> {
        self.guarded(|s| {
            let size = s.position;
            let crc32c = Some(s.checksum);
            if s.upload.is_some() {
                if !s.buffer.is_empty() {
                    s.send_part()?;
                }
                let upload = s.upload.as_mut().expect("multipart upload started");
                let completed = upload.wait_below(1).and_then(|()| block_on(upload.upload.complete()));
                completed.map_err(|e| s.error("completing the upload of", e))?;
                s.upload = None;
            } else if s.buffer.len() <= s.inline_threshold {
                return Ok(StreamStateHandle::Inline { bytes: std::mem::take(&mut s.buffer) });
            } else {
                let payload = PutPayload::from(Bytes::from(std::mem::take(&mut s.buffer)));
                block_on(s.backend.store.put(&s.key, payload)).map_err(|e| s.error("uploading", e))?;
            }
            Ok(StreamStateHandle::Object { store: s.backend.id.clone(), path: s.relative.clone(), size, crc32c })
        })
    }
}

impl Drop for ObjectCheckpointOutputStream {
    fn drop(&mut self) {
        self.abort_upload();
    }
}

/// Reads an object in ranged requests of `CHUNK` bytes, with up to `WINDOW` chunks ahead in
/// flight while the strategy decodes the current one (parallel ranged GETs, as S3 clients do
/// for throughput): a sequential restore pays the first-byte latency about once, not once per
/// chunk. Memory per open stream: at most `(WINDOW + 1) × CHUNK`.
#[derive(Debug)]
pub struct ObjectInputStream {
    backend: Arc<ObjectBackend>,
    key: ObjectPath,
    size: u64,
    position: u64,
    chunk: Bytes,
    chunk_start: u64,
    ahead: std::collections::VecDeque<(u64, tokio::task::JoinHandle<object_store::Result<Bytes>>)>,
}

const CHUNK: u64 = 4 << 20;
const WINDOW: u64 = 4;

impl ObjectInputStream {
    /// Opens object `relative` of `backend`, which must be `size` bytes long.
    pub fn open(backend: Arc<ObjectBackend>, relative: &str, size: u64) -> io::Result<Self> {
        let key = backend.key(relative);
        let meta = block_on(backend.store.head(&key)).map_err(|e| match e {
            object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            e => io::Error::other(e.to_string()),
        })?;
        if meta.size != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("object has {} bytes, the handle recorded {size}", meta.size),
            ));
        }
        Ok(ObjectInputStream {
            backend,
            key,
            size,
            position: 0,
            chunk: Bytes::new(),
            chunk_start: 0,
            ahead: Default::default(),
        })
    }

    fn spawn_fetch(&self, start: u64) -> tokio::task::JoinHandle<object_store::Result<Bytes>> {
        let (store, key) = (self.backend.store.clone(), self.key.clone());
        let end = (start + CHUNK).min(self.size);
        runtime().spawn(async move { store.get_range(&key, start..end).await })
    }

    fn load(&mut self, start: u64) -> io::Result<()> {
        // Chunks before `start` are not needed any more; a seek elsewhere drops the window.
        while let Some((at, task)) = self.ahead.pop_front() {
            if at == start {
                self.ahead.push_front((at, task));
                break;
            }
            task.abort();
        }
        let task = match self.ahead.pop_front() {
            Some((_, task)) => task,
            None => self.spawn_fetch(start),
        };
        let bytes = block_on(task)
            .map_err(|e| io::Error::other(format!("reading {}: {e}", self.key)))?
            .map_err(|e| io::Error::other(format!("reading {}: {e}", self.key)))?;
        let expected = (start + CHUNK).min(self.size) - start;
        if bytes.len() as u64 != expected {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("reading {}: {} bytes at {start}, expected {expected}", self.key, bytes.len()),
            ));
        }
        self.chunk = bytes;
        self.chunk_start = start;
        let mut next = self.ahead.back().map_or(start, |(at, _)| *at) + CHUNK;
        while (self.ahead.len() as u64) < WINDOW && next < self.size {
            self.ahead.push_back((next, self.spawn_fetch(next)));
            next += CHUNK;
        }
        Ok(())
    }
}

impl Read for ObjectInputStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if self.position < self.chunk_start || self.position >= chunk_end {
            self.load(self.position - self.position % CHUNK)?;
        }
        let offset = (self.position - self.chunk_start) as usize;
        let n = buf.len().min(self.chunk.len() - offset);
        buf[..n].copy_from_slice(&self.chunk[offset..offset + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectInputStream {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.position)
    }
}

impl Drop for ObjectInputStream {
    fn drop(&mut self) {
        for (_, task) in self.ahead.drain(..) {
            task.abort();
        }
    }
}

/// Deletes object `relative`; one already gone counts as deleted.
pub fn delete_object(backend: &ObjectBackend, relative: &str) -> io::Result<()> {
    match block_on(backend.store.delete(&backend.key(relative))) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}
