//! Stream handles: references to the complete bytes of one snapshot stream.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HandleError, StreamIdentity};
use crate::storage::SHARED_DIR;
use crate::streams::CheckpointInputStream;

/// A reference to the complete bytes of one snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamStateHandle {
    /// A file written by a file stream.
    File {
        /// Path of the file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// CRC-32C of the content, computed while writing; lets a copy be verified before it
        /// is trusted.
        crc32c: Option<u32>,
    },
    /// An object in an object store (S3-compatible or in-memory).
    Object {
        /// The store: the URL of the job's storage root (`s3://bucket/prefix/job`, qualified
        /// with `?endpoint=…` for a configured endpoint), under which the storage registered
        /// its client (see [`crate::storage::backend`]). Rewritten to the current location
        /// whenever metadata is read, so a copied checkpoint reads its own objects.
        store: String,
        /// The key below the job root, e.g. `chk-3/<uuid>`.
        path: String,
        /// Its size in bytes.
        size: u64,
        /// CRC-32C of the content, computed while uploading.
        crc32c: Option<u32>,
    },
    /// Bytes small enough to travel inside the metadata itself.
    Inline {
        /// The bytes.
        bytes: Vec<u8>,
    },
}

impl StreamStateHandle {
    /// Size of the referenced bytes.
    pub fn size(&self) -> u64 {
        match self {
            StreamStateHandle::File { size, .. } | StreamStateHandle::Object { size, .. } => *size,
            StreamStateHandle::Inline { bytes } => bytes.len() as u64,
        }
    }

    /// Opens the bytes for reading. A file whose size differs from the recorded one is
    /// refused: it was truncated or replaced.
    pub fn open(&self) -> Result<Box<dyn CheckpointInputStream>, HandleError> {
        match self {
            StreamStateHandle::File { path, size, .. } => {
                let io_err = |source| HandleError::Io { handle: self.describe(), source };
                let file = File::open(path).map_err(io_err)?;
                let actual = file.metadata().map_err(io_err)?.len();
                if actual != *size {
                    return Err(io_err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("file has {actual} bytes, the handle recorded {size}"),
                    )));
                }
                Ok(Box::new(io::BufReader::with_capacity(256 * 1024, file)))
            }
            StreamStateHandle::Object { path, size, .. } => {
                let stream = crate::streams::ObjectInputStream::open(self.backend()?, path, *size)
                    .map_err(|source| HandleError::Io { handle: self.describe(), source })?;
                Ok(Box::new(stream))
            }
            StreamStateHandle::Inline { bytes } => Ok(Box::new(Cursor::new(bytes.clone()))),
        }
    }

    /// The registered store of an object handle.
    fn backend(&self) -> Result<std::sync::Arc<crate::storage::backend::ObjectBackend>, HandleError> {
        let StreamStateHandle::Object { store, .. } = self else { unreachable!("only object handles have a store") };
        crate::storage::backend::lookup(store).ok_or_else(|| HandleError::Io {
            handle: self.describe(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                format!("no checkpoint storage is open for {store}; open it before reading its state"),
            ),
        })
    }

    /// Reads the whole content and checks it against the recorded size and whole-stream
    /// checksum: a check of a file at rest (tooling). Restores do not need it: they verify
    /// every byte they read against the per-segment checksums (see
    /// [`SegmentVerifier`](super::SegmentVerifier)), without a separate pass.
    pub fn verify(&self) -> Result<(), HandleError> {
        let (StreamStateHandle::File { crc32c: Some(expected), .. }
        | StreamStateHandle::Object { crc32c: Some(expected), .. }) = self
        else {
            return self.open().map(|_| ());
        };
        let mut input = self.open()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut crc = 0u32;
        loop {
            let n = input.read(&mut buf).map_err(|source| HandleError::Io { handle: self.describe(), source })?;
            if n == 0 {
                break;
            }
            crc = crate::checksum::crc32c_append(crc, &buf[..n]);
        }
        if crc != *expected {
            return Err(HandleError::Io {
                handle: self.describe(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("checksum mismatch: content has CRC-32C {crc:08x}, the handle recorded {expected:08x}"),
                ),
            });
        }
        Ok(())
    }

    /// Deletes the referenced bytes. A file that is already gone counts as deleted.
    pub fn discard(&self) -> Result<(), HandleError> {
        match self {
            StreamStateHandle::File { path, .. } => match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(HandleError::Io { handle: self.describe(), source }),
            },
            StreamStateHandle::Object { path, .. } => crate::streams::delete_object(self.backend()?.as_ref(), path)
                .map_err(|source| HandleError::Io { handle: self.describe(), source }),
            StreamStateHandle::Inline { .. } => Ok(()),
        }
    }

    /// The key of the object below the job root (`shared/<name>`) when the stream lives in
    /// the primary's shared area: such a stream may be referenced by several checkpoints and
    /// is deleted only by the shared-state registry, never by discarding one state.
    pub fn shared_object(&self) -> Option<String> {
        match self {
            StreamStateHandle::File { path, .. } => {
                let in_shared = path.parent().and_then(Path::file_name).is_some_and(|d| d == SHARED_DIR);
                let name = path.file_name()?.to_str()?;
                in_shared.then(|| format!("{SHARED_DIR}/{name}"))
            }
            StreamStateHandle::Object { path, .. } => {
                path.strip_prefix(SHARED_DIR).is_some_and(|rest| rest.starts_with('/')).then(|| path.clone())
            }
            StreamStateHandle::Inline { .. } => None,
        }
    }

    /// Deletes the bytes unless the stream is shared (see [`shared_object`](Self::shared_object)).
    pub fn discard_exclusive(&self) -> Result<(), HandleError> {
        match self.shared_object() {
            Some(_) => Ok(()),
            None => self.discard(),
        }
    }

    /// Who the stream is: file name, size and checksum. Equal identities mean the same bytes
    /// written by the same stream (file names are unique per stream).
    pub fn identity(&self) -> StreamIdentity {
        match self {
            StreamStateHandle::File { path, size, crc32c } => StreamIdentity {
                name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
                size: *size,
                crc32c: *crc32c,
            },
            StreamStateHandle::Object { path, size, crc32c, .. } => {
                StreamIdentity { name: path.rsplit('/').next().map(str::to_string), size: *size, crc32c: *crc32c }
            }
            StreamStateHandle::Inline { bytes } => {
                StreamIdentity { name: None, size: bytes.len() as u64, crc32c: Some(crate::checksum::crc32c(bytes)) }
            }
        }
    }

    /// The same handle with a file path below `root` made relative to it: how handles are
    /// persisted, so that a checkpoint directory copied or moved elsewhere reads its own
    /// files, not the original's. A path outside `root` stays as it is.
    pub fn relative_to(&self, root: &Path) -> StreamStateHandle {
        match self {
            StreamStateHandle::File { path, size, crc32c } => match path.strip_prefix(root) {
                Ok(relative) => StreamStateHandle::File { path: relative.to_path_buf(), size: *size, crc32c: *crc32c },
                Err(_) => self.clone(),
            },
            StreamStateHandle::Object { .. } | StreamStateHandle::Inline { .. } => self.clone(),
        }
    }

    /// The same handle read from storage now at `url`: an object handle names that store.
    pub fn rebased(self, url: &str) -> StreamStateHandle {
        match self {
            StreamStateHandle::Object { path, size, crc32c, .. } => {
                StreamStateHandle::Object { store: url.to_string(), path, size, crc32c }
            }
            other => other,
        }
    }

    /// The inverse of [`relative_to`](Self::relative_to): a relative file path resolved
    /// against `root` (where the checkpoint is now).
    pub fn resolved_against(&self, root: &Path) -> StreamStateHandle {
        match self {
            StreamStateHandle::File { path, size, crc32c } if path.is_relative() => {
                StreamStateHandle::File { path: root.join(path), size: *size, crc32c: *crc32c }
            }
            _ => self.clone(),
        }
    }

    /// A short description for messages: the file path, or the inline size.
    pub fn describe(&self) -> String {
        match self {
            StreamStateHandle::File { path, .. } => path.display().to_string(),
            StreamStateHandle::Object { store, path, .. } => match store.split_once("?endpoint=") {
                Some((url, endpoint)) => format!("{url}/{path} (endpoint {endpoint})"),
                None => format!("{store}/{path}"),
            },
            StreamStateHandle::Inline { bytes } => format!("<inline, {} bytes>", bytes.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_handle_detects_truncation_and_discard_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let h =
            StreamStateHandle::File { path: path.clone(), size: 6, crc32c: Some(crate::checksum::crc32c(b"abcdef")) };
        assert!(h.open().is_ok());
        h.verify().unwrap();
        std::fs::write(&path, b"abcdeF").unwrap();
        assert!(h.verify().unwrap_err().to_string().contains("checksum mismatch"));
        std::fs::write(&path, b"abc").unwrap();
        let err = h.open().err().unwrap().to_string();
        assert!(err.contains("3 bytes") && err.contains(&path.display().to_string()), "{err}");
        h.discard().unwrap();
        h.discard().unwrap();
        assert!(!path.exists());
    }
}
