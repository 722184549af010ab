//! S3 settings as Flink names them, and the `object_store` client they build.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

/// `s3.endpoint`: the S3-compatible service (MinIO, Ceph, a test server); unset means AWS.
pub const ENDPOINT: &str = "s3.endpoint";
/// `s3.access-key`.
pub const ACCESS_KEY: &str = "s3.access-key";
/// `s3.secret-key` (never logged).
pub const SECRET_KEY: &str = "s3.secret-key";
/// `s3.region`.
pub const REGION: &str = "s3.region";
/// `s3.path.style.access`: bucket in the path (`endpoint/bucket/key`) instead of the host name.
pub const PATH_STYLE_ACCESS: &str = "s3.path.style.access";
/// `s3.upload.part-size`: bytes per multipart part, and the size above which a stream uploads
/// in parts instead of one PUT.
pub const PART_SIZE: &str = "s3.upload.part-size";
/// `s3.upload.max-concurrent-uploads`: parts of one stream in flight at once; with the part
/// size it bounds a stream's upload memory.
pub const MAX_CONCURRENT_UPLOADS: &str = "s3.upload.max-concurrent-uploads";
/// `s3.request-timeout`: one HTTP request, first byte to last.
pub const REQUEST_TIMEOUT: &str = "s3.request-timeout";
/// `s3.retry.max-retries`: retries of one request after a transient failure (5xx, reset).
pub const MAX_RETRIES: &str = "s3.retry.max-retries";
/// `s3.retry.timeout`: no retry starts after this long since the request's first attempt.
pub const RETRY_TIMEOUT: &str = "s3.retry.timeout";

/// A secret that prints as `***` in logs, errors and `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to reach and use an S3-compatible store. Unset credentials, region and endpoint fall
/// back to the standard `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Service URL; `http://` is allowed (test servers, MinIO without TLS).
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key: Option<String>,
    /// Secret access key.
    pub secret_key: Option<Secret>,
    /// Region (signing); `us-east-1` when set nowhere.
    pub region: Option<String>,
    /// Path-style requests; unset means path style, which every S3-compatible server accepts.
    pub path_style_access: Option<bool>,
    /// Bytes per multipart part (at least 5 MiB, S3's minimum).
    pub part_size: usize,
    /// Parts of one stream in flight at once.
    pub max_concurrent_uploads: usize,
    /// Deadline of one request.
    pub request_timeout: Duration,
    /// Retries of a request after a transient failure.
    pub max_retries: usize,
    /// How long retries of one request may go on.
    pub retry_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            access_key: None,
            secret_key: None,
            region: None,
            path_style_access: None,
            part_size: 8 << 20,
            max_concurrent_uploads: 4,
            request_timeout: Duration::from_secs(30),
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
        }
    }
}

/// S3's smallest part (except the last one).
pub const MIN_PART_SIZE: usize = 5 << 20;

impl S3Settings {
    /// The endpoint requests go to: `s3.endpoint`, else `AWS_ENDPOINT_URL`; `None` is AWS.
    pub fn effective_endpoint(&self) -> Option<String> {
        self.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
    }

    /// The client for `bucket`.
    pub fn build(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let mut client = ClientOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.request_timeout.min(Duration::from_secs(10)));
        let endpoint = self.effective_endpoint();
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint);
            if endpoint.starts_with("http://") {
                client = client.with_allow_http(true);
            }
        }
        if let Some(key) = &self.access_key {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_key {
            builder = builder.with_secret_access_key(&secret.0);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        builder = builder
            .with_virtual_hosted_style_request(self.path_style_access == Some(false))
            // `_metadata` is written with If-None-Match: a second writer cannot replace it.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: self.max_retries,
                retry_timeout: self.retry_timeout,
            })
            .with_client_options(client);
        Ok(Arc::new(builder.build()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = S3Settings { secret_key: Some(Secret("hunter2".into())), ..S3Settings::default() };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
