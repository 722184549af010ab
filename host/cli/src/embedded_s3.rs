//! An S3-compatible server inside this process (`s3s` over `s3s-fs`, on 127.0.0.1 and a free
//! port): what the demo, the benchmark and the tests store their primary in, so that nothing
//! needs installing by hand.
//!
//! It can shape its responses like a remote store (a first-byte latency per request and a
//! bandwidth per connection, both simulated by delaying the request) and inject faults (503
//! responses, extra delays, a stop and restart on the same port), so that local recovery and
//! fault handling are measured and tested against a store that behaves like one over a network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};

use snapshot_host::S3Settings;

/// How a simulated remote store answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaping {
    /// Added to every request before it is served.
    pub first_byte_latency: Duration,
    /// Bytes per second of one request's body (upload) or response (download); `None` is
    /// unlimited.
    pub bandwidth: Option<u64>,
}

impl Shaping {
    /// No shaping: loopback speed.
    pub const NONE: Shaping = Shaping { first_byte_latency: Duration::ZERO, bandwidth: None };

    /// Like S3 in the same region: ~10 ms to the first byte, ~200 MiB/s per connection.
    pub const SAME_REGION: Shaping =
        Shaping { first_byte_latency: Duration::from_millis(10), bandwidth: Some(200 << 20) };

    fn transfer(&self, bytes: u64) -> Duration {
        match self.bandwidth {
            Some(bw) if bw > 0 => Duration::from_secs_f64(bytes as f64 / bw as f64),
            _ => Duration::ZERO,
        }
    }
}

impl std::fmt::Display for Shaping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bandwidth {
            None if self.first_byte_latency.is_zero() => f.write_str("unshaped loopback"),
            None => write!(f, "{:?} first byte", self.first_byte_latency),
            Some(bw) => write!(f, "{:?} first byte, {} MiB/s", self.first_byte_latency, bw >> 20),
        }
    }
}

/// Faults the server injects, changeable while it runs.
#[derive(Debug, Default)]
pub struct Faults {
    fail_next: AtomicU32,
    fail_after: AtomicU64,
    delay_ms: AtomicU64,
    requests: AtomicU64,
    uploads_started: AtomicU64,
}

impl Faults {
    /// Answers the next `n` requests with `503 Slow Down` (what S3 sends when overloaded).
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answers every request after the next `n` with 503, until [`clear`](Self::clear).
    pub fn fail_after(&self, n: u64) {
        self.fail_after.store(self.requests.load(Ordering::SeqCst) + n + 1, Ordering::SeqCst);
    }

    /// Delays every request by `delay` (beyond a client's deadline: a hung server).
    pub fn delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops injecting faults.
    pub fn clear(&self) {
        self.fail_next.store(0, Ordering::SeqCst);
        self.fail_after.store(0, Ordering::SeqCst);
        self.delay_ms.store(0, Ordering::SeqCst);
    }

    /// Multipart uploads started so far (`POST ?uploads` requests).
    pub fn multipart_uploads_started(&self) -> u64 {
        self.uploads_started.load(Ordering::SeqCst)
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn should_fail(&self) -> bool {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let after = self.fail_after.load(Ordering::SeqCst);
        if after != 0 && n >= after {
            return true;
        }
        self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
    }
}

/// A running server. Stopped when dropped.
#[derive(Debug)]
pub struct EmbeddedS3 {
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
    addr: SocketAddr,
    access_key: String,
    secret_key: String,
    shaping: Arc<Mutex<Shaping>>,
    faults: Arc<Faults>,
    runtime: tokio::runtime::Runtime,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
<Message>Please reduce your request rate (injected by the embedded server).</Message></Error>";

impl EmbeddedS3 {
    /// Starts a server storing its objects in a new temporary directory.
    pub fn start(shaping: Shaping) -> std::io::Result<Self> {
        let temp = tempfile::Builder::new().prefix("snapshot-host-s3-").tempdir()?;
        let mut server = Self::start_in(temp.path(), shaping)?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// Starts a server storing its objects below `root` (one directory per bucket).
    pub fn start_in(root: &Path, shaping: Shaping) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("embedded-s3")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let mut server = EmbeddedS3 {
            root: root.to_path_buf(),
            _temp: None,
            addr,
            access_key: "snapshot-host".into(),
            secret_key: uuid::Uuid::new_v4().simple().to_string(),
            shaping: Arc::new(Mutex::new(shaping)),
            faults: Arc::new(Faults::default()),
            runtime,
            tasks: Arc::default(),
        };
        server.serve(listener)?;
        Ok(server)
    }

    fn service(&self) -> std::io::Result<S3Service> {
        let fs = s3s_fs::FileSystem::new(&self.root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(self.access_key.clone(), self.secret_key.clone()));
        Ok(builder.build())
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let service = self.service()?;
        let (shaping, faults, tasks) = (self.shaping.clone(), self.faults.clone(), self.tasks.clone());
        let accept_tasks = tasks.clone();
        let accept = self.runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let _ = socket.set_nodelay(true);
                let (service, shaping, faults) = (service.clone(), shaping.clone(), faults.clone());
                let handler = service_fn(move |request: http::Request<Incoming>| {
                    let (service, shaping, faults) = (service.clone(), shaping.clone(), faults.clone());
                    async move {
                        let query = request.uri().query().unwrap_or("");
                        if request.method() == http::Method::POST
                            && query.split('&').any(|q| q == "uploads" || q == "uploads=")
                        {
                            faults.uploads_started.fetch_add(1, Ordering::SeqCst);
                        }
                        if faults.should_fail() {
                            let response = http::Response::builder()
                                .status(503)
                                .header("content-type", "application/xml")
                                .body(s3s::Body::from(SLOW_DOWN.to_string()))
                                .expect("a valid response");
                            return Ok(response);
                        }
                        let shaping = *shaping.lock().unwrap_or_else(|e| e.into_inner());
                        let extra = Duration::from_millis(faults.delay_ms.load(Ordering::SeqCst));
                        let upload = content_length(request.headers());
                        tokio::time::sleep(extra + shaping.first_byte_latency + shaping.transfer(upload)).await;
                        let response = service.call(request.map(s3s::Body::from)).await?;
                        let download = content_length(response.headers());
                        tokio::time::sleep(shaping.transfer(download)).await;
                        Ok::<_, s3s::HttpError>(response)
                    }
                });
                let connection = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), handler)
                        .await;
                });
                let mut tasks = accept_tasks.lock().unwrap_or_else(|e| e.into_inner());
                tasks.retain(|t| !t.is_finished());
                tasks.push(connection.abort_handle());
            }
        });
        tasks.lock().unwrap_or_else(|e| e.into_inner()).push(accept.abort_handle());
        Ok(())
    }

    /// Creates a bucket (a directory of the server's root).
    pub fn create_bucket(&self, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join(name))
    }

    /// The endpoint URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Settings that reach this server (path-style, its credentials, no retries beyond two).
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint()),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(snapshot_host::Secret(self.secret_key.clone())),
            region: Some("us-east-1".into()),
            path_style_access: Some(true),
            ..S3Settings::default()
        }
    }

    /// The `s3.*` configuration overrides (`key=value`) that reach this server.
    pub fn config_overrides(&self) -> Vec<String> {
        vec![
            format!("s3.endpoint={}", self.endpoint()),
            format!("s3.access-key={}", self.access_key),
            format!("s3.secret-key={}", self.secret_key),
            "s3.region=us-east-1".into(),
            "s3.path.style.access=true".into(),
        ]
    }

    /// Where the objects are stored.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Changes the shaping of later requests.
    pub fn set_shaping(&self, shaping: Shaping) {
        *self.shaping.lock().unwrap_or_else(|e| e.into_inner()) = shaping;
    }

    /// The current shaping.
    pub fn shaping(&self) -> Shaping {
        *self.shaping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fault injector.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Multipart uploads started and neither completed nor aborted: the orphans a client that
    /// fails mid-upload must not leave behind (the server keeps one `.upload-<id>.json` per
    /// open upload in its root).
    pub fn open_multipart_uploads(&self) -> std::io::Result<Vec<String>> {
        let mut open = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix(".upload-").and_then(|n| n.strip_suffix(".json")) {
                open.push(id.to_string());
            }
        }
        Ok(open)
    }

    /// Stops serving: the port refuses connections and open connections are cut.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }

    /// Serves again on the same port, with the same objects.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let listener = self.runtime.block_on(tokio::net::TcpListener::bind(self.addr))?;
        self.serve(listener)
    }
}

impl Drop for EmbeddedS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

fn content_length(headers: &http::HeaderMap) -> u64 {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}
