//! Where the primary lives: the value of `execution.checkpointing.dir` (or its deprecated
//! name `state.checkpoints.dir`), parsed once so that every later step knows the backend.

use std::fmt;
use std::path::PathBuf;

/// A checkpoint storage location.
///
/// A plain path and `file:///abs` are the local filesystem; `s3://bucket/prefix` is an
/// S3-compatible store configured by the `s3.*` keys; `memory://name` is a process-wide
/// in-memory store, for tests and embedders that want no durability at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// A directory on the local filesystem (relative paths are taken from the working
    /// directory when the storage is opened).
    Directory(PathBuf),
    /// A bucket and a key prefix (without leading or trailing `/`; may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// Keys start with this prefix.
        prefix: String,
    },
    /// A named in-memory store, shared by everything in this process that names it.
    Memory {
        /// The name after `memory://`.
        name: String,
    },
}

impl StorageLocation {
    /// Parses a location; the error says what form was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("expected a directory or a URI (file://, s3://, memory://)".into());
        }
        match text.split_once("://") {
            None => Ok(StorageLocation::Directory(PathBuf::from(text))),
            Some(("file", rest)) if rest.starts_with('/') => Ok(StorageLocation::Directory(PathBuf::from(rest))),
            Some(("file", _)) => Err("expected file:///absolute/path (three slashes)".into()),
            Some(("s3" | "s3a" | "s3p", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if !valid_bucket(bucket) {
                    return Err(format!(
                        "\"{bucket}\" is not a bucket name (3-63 characters: lower-case letters, digits, '.', '-')"
                    ));
                }
                let prefix = prefix.trim_matches('/');
                if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
                    return Err(format!("the key prefix \"{prefix}\" has an empty, '.' or '..' segment"));
                }
                Ok(StorageLocation::S3 { bucket: bucket.into(), prefix: prefix.into() })
            }
            Some(("memory", name)) => {
                let name = name.trim_matches('/');
                if name.is_empty() || name.contains('/') {
                    return Err("expected memory://<name> with a name of one segment".into());
                }
                Ok(StorageLocation::Memory { name: name.into() })
            }
            Some((scheme, _)) => Err(format!(
                "{scheme}:// is not a supported checkpoint storage; use a directory, file://, s3:// or memory://"
            )),
        }
    }

    /// Whether the primary is remote (object storage): local recovery pays off most there.
    pub fn is_object_store(&self) -> bool {
        !matches!(self, StorageLocation::Directory(_))
    }
}

impl fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageLocation::Directory(p) => write!(f, "{}", p.display()),
            StorageLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StorageLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StorageLocation::Memory { name } => write!(f, "memory://{name}"),
        }
    }
}

impl Default for StorageLocation {
    fn default() -> Self {
        StorageLocation::Directory(PathBuf::from("checkpoints"))
    }
}

/// S3's bucket naming rules, enough to catch a path mistaken for a bucket.
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_uris() {
        assert_eq!(StorageLocation::parse("/data/ckpt").unwrap(), StorageLocation::Directory("/data/ckpt".into()));
        assert_eq!(StorageLocation::parse("rel/dir").unwrap(), StorageLocation::Directory("rel/dir".into()));
        assert_eq!(StorageLocation::parse("file:///x/y").unwrap(), StorageLocation::Directory("/x/y".into()));
        assert_eq!(
            StorageLocation::parse("s3://my-bucket/flink/ckpt/").unwrap(),
            StorageLocation::S3 { bucket: "my-bucket".into(), prefix: "flink/ckpt".into() }
        );
        assert_eq!(
            StorageLocation::parse("s3://my-bucket").unwrap(),
            StorageLocation::S3 { bucket: "my-bucket".into(), prefix: String::new() }
        );
        assert_eq!(StorageLocation::parse("memory://t1").unwrap(), StorageLocation::Memory { name: "t1".into() });
        assert_eq!(StorageLocation::parse("s3://b-1/p/q").unwrap().to_string(), "s3://b-1/p/q");
    }

    #[test]
    fn bad_locations_say_why() {
        for (text, why) in [
            ("file://relative", "three slashes"),
            ("s3://Bad_Bucket/x", "not a bucket name"),
            ("s3://", "not a bucket name"),
            ("s3://bucket/a/../b", "'..'"),
            ("hdfs://nn/x", "hdfs:// is not a supported"),
            ("memory://", "memory://<name>"),
            ("  ", "expected a directory"),
        ] {
            let e = StorageLocation::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
