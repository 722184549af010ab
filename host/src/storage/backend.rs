//! The object stores behind checkpoint storage, and the I/O runtime that drives them.
//!
//! `object_store` is async; the snapshot path is synchronous (a strategy writes into a stream
//! from a subtask's thread). One small multi-threaded Tokio runtime per process carries every
//! request, so a stream's parts upload in the background while the strategy keeps writing.
//! Handles name their store by the URL of a job's storage root; the registry maps that URL to
//! the configured client, the way Flink resolves a path's file system from its scheme.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore};
use std::time::Duration;

/// A configured store and the key prefix of one job's checkpoints in it.
#[derive(Debug)]
pub struct ObjectBackend {
    /// The client.
    pub store: Arc<dyn ObjectStore>,
    /// Keys of the job's checkpoints start with this.
    pub base: ObjectPath,
    /// The job root as a URL (`s3://bucket/prefix/job`), for messages.
    pub url: String,
    /// How handles name this backend in the registry: the URL, qualified with the endpoint
    /// when one is configured (`s3://bucket/prefix/job?endpoint=http://host:port`), so that
    /// two stores with the same bucket names behind different endpoints never mix.
    pub id: String,
    /// Part size of multipart uploads.
    pub part_size: usize,
    /// Parts of one stream in flight.
    pub max_concurrent_uploads: usize,
    /// Multipart uploads whose abort failed (the store was unreachable): retried until the
    /// store takes them, so that no upload's parts stay behind on the server.
    pub pending_aborts: Mutex<Vec<(ObjectPath, Box<dyn MultipartUpload>)>>,
}

impl ObjectBackend {
    /// Remembers an upload to abort once the store answers again.
    pub fn abort_later(&self, key: ObjectPath, upload: Box<dyn MultipartUpload>) {
        self.pending_aborts.lock().unwrap_or_else(|e| e.into_inner()).push((key, upload));
    }

    /// Retries the aborts that failed earlier; returns how many uploads are still open.
    pub fn retry_aborts(&self) -> usize {
        let pending = std::mem::take(&mut *self.pending_aborts.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return 0;
        }
        let mut still = Vec::new();
        for (key, mut upload) in pending {
            match block_on(async { tokio::time::timeout(Duration::from_secs(10), upload.abort()).await }) {
                Ok(Ok(())) => tracing::info!(object = %key, "aborted a multipart upload left by a failed stream"),
                _ => still.push((key, upload)),
            }
        }
        let left = still.len();
        self.pending_aborts.lock().unwrap_or_else(|e| e.into_inner()).extend(still);
        left
    }

    /// The key of `relative` (slash-separated, below the job root).
    pub fn key(&self, relative: &str) -> ObjectPath {
        relative.split('/').filter(|s| !s.is_empty()).fold(self.base.clone(), |p, s| p.join(s))
    }
}

/// Runs `future` to completion on the I/O runtime, from a synchronous caller.
///
/// Must not be called from inside an async task (Tokio refuses to block a runtime thread).
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// The I/O runtime (two workers: uploads and downloads are network-bound).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("snapshot-io")
            .enable_all()
            .build()
            .expect("cannot start the storage I/O runtime")
    })
}

fn registry() -> &'static Mutex<HashMap<String, Arc<ObjectBackend>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<ObjectBackend>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Makes `backend` the one handles naming its id use (the newest configuration of the same
/// store wins).
pub fn register(backend: Arc<ObjectBackend>) {
    registry().lock().unwrap_or_else(|e| e.into_inner()).insert(backend.id.clone(), backend);
}

/// The backend registered under `id`.
pub fn lookup(id: &str) -> Option<Arc<ObjectBackend>> {
    registry().lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// The in-memory store called `name`: one per name and process, so that a job and its
/// restore (or a test and its assertions) see the same objects.
pub fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    let mut stores = memory_stores().lock().unwrap_or_else(|e| e.into_inner());
    stores.entry(name.to_string()).or_insert_with(|| Arc::new(object_store::memory::InMemory::new())).clone()
}

/// Makes `store` the one a `memory://<name>` location opens from now on: how an embedder
/// brings its own `ObjectStore` (or a test a store that fails on purpose, see
/// [`super::fault::CrashingStore`]). Storage opened before keeps the store it had.
pub fn install_memory_store(name: &str, store: Arc<dyn ObjectStore>) {
    memory_stores().lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), store);
}
