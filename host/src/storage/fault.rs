//! An object store that stops working at a chosen operation, for testing what a crash (or a
//! store that goes away) at every step of a protocol leaves behind. Install it under a memory
//! location's name with [`crate::storage::backend::install_memory_store`].

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
};

/// Counts the mutating operations (put, part upload, completion, delete, copy) on `inner` and,
/// from the `fail_at`-th on (counted from 0), fails every operation, reads included: like a
/// process that died at that point, seen by everything it would still have done.
pub struct CrashingStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<CrashState>,
}

/// Called with every mutating operation and its location, before it is carried out.
type Observer = Box<dyn Fn(&str, &str) + Send + Sync>;

struct CrashState {
    fail_at: AtomicUsize,
    mutations: AtomicUsize,
    crashed: AtomicBool,
    observer: std::sync::Mutex<Option<Observer>>,
}

impl CrashState {
    fn mutate(&self, what: &str, location: &str) -> object_store::Result<()> {
        self.check(what, location)?;
        if let Some(observe) = self.observer.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            observe(what, location);
        }
        let n = self.mutations.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_at.load(Ordering::SeqCst) {
            self.crashed.store(true, Ordering::SeqCst);
            return self.check(what, location);
        }
        Ok(())
    }

    fn check(&self, what: &str, location: &str) -> object_store::Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "crashing store",
                source: format!("injected crash: {what} {location}").into(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for CrashingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashingStore")
            .field("fail_at", &self.state.fail_at.load(Ordering::SeqCst))
            .field("mutations", &self.state.mutations.load(Ordering::SeqCst))
            .field("crashed", &self.state.crashed.load(Ordering::SeqCst))
            .finish()
    }
}

impl fmt::Display for CrashingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrashingStore({})", self.inner)
    }
}

impl CrashingStore {
    /// Wraps `inner`; `fail_at: usize::MAX` never crashes.
    pub fn new(inner: Arc<dyn ObjectStore>, fail_at: usize) -> Self {
        let state = CrashState {
            fail_at: AtomicUsize::new(fail_at),
            mutations: AtomicUsize::new(0),
            crashed: AtomicBool::new(false),
            observer: std::sync::Mutex::new(None),
        };
        CrashingStore { inner, state: Arc::new(state) }
    }

    /// Calls `observe` with every mutating operation (`put`, `delete`, ...) and its location
    /// before it is carried out: to look at what else holds at that moment of a protocol (a
    /// test asks whether a new checkpoint may start while metadata is being written).
    pub fn observe(&self, observe: impl Fn(&str, &str) + Send + Sync + 'static) {
        *self.state.observer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(observe));
    }

    /// Mutating operations attempted so far (the one that crashed included).
    pub fn mutations(&self) -> usize {
        self.state.mutations.load(Ordering::SeqCst)
    }

    /// Whether the crash happened.
    pub fn crashed(&self) -> bool {
        self.state.crashed.load(Ordering::SeqCst)
    }
}

struct CrashingUpload {
    inner: Box<dyn MultipartUpload>,
    state: Arc<CrashState>,
    location: String,
}

impl fmt::Debug for CrashingUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashingUpload").field("location", &self.location).finish()
    }
}

#[async_trait]
impl MultipartUpload for CrashingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.state.mutate("upload part", &self.location) {
            Ok(()) => self.inner.put_part(data),
            Err(e) => Box::pin(futures_util::future::ready(Err(e))),
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.state.mutate("complete upload", &self.location)?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.state.check("abort upload", &self.location)?;
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for CrashingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.state.mutate("put", location.as_ref())?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.state.mutate("start upload", location.as_ref())?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CrashingUpload { inner, state: self.state.clone(), location: location.to_string() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.state.check("get", location.as_ref())?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.state.check("get", location.as_ref())?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let state = self.state.clone();
        let checked = locations
            .map(move |location| {
                let location = location?;
                state.mutate("delete", location.as_ref())?;
                Ok(location)
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.state.check("list", prefix.map_or("", |p| p.as_ref())) {
            return futures_util::stream::once(futures_util::future::ready(Err(e))).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.state.check("list", prefix.map_or("", |p| p.as_ref()))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.state.mutate("copy", to.as_ref())?;
        self.inner.copy_opts(from, to, options).await
    }
}
