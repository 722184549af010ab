//! File-backed checkpoint streams in a checkpoint directory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{CheckpointOutputStream, CheckpointStreamFactory, StateScope};
use crate::handles::StreamStateHandle;

/// Suffix of files still being written. Such a file never has a handle; one left by a crash
/// is garbage and may be deleted.
pub const IN_PROGRESS_SUFFIX: &str = ".inprogress";

/// Writes one snapshot stream to a uniquely named file.
///
/// Up to `inline_threshold` bytes stay in memory and become an inline handle at close: small
/// state would otherwise cost a file (and later a remote object) per subtask and checkpoint.
/// Past the threshold the bytes go to `<name>.inprogress`, which is fsynced and renamed to its
/// final name only at close, so a handle never points at a partial file.
#[derive(Debug)]
pub struct FileCheckpointOutputStream {
    final_path: PathBuf,
    temp_path: PathBuf,
    file: Option<BufWriter<File>>,
    pending: Vec<u8>,
    inline_threshold: usize,
    position: u64,
    checksum: u32,
    // Whether completion fsyncs the file and its directory. Local copies do not: they are a
    // cache, verified by checksum before use, and the primary is the ground truth.
    durable: bool,
    // Set once the temporary file exists and until it has been renamed: Drop removes it then.
    temp_exists: bool,
    // Set by the first failed write, flush or sync: bytes may be lost (a buffered writer may
    // have written part of them), so the stream never completes into a handle.
    failed: bool,
}

impl FileCheckpointOutputStream {
    /// A stream that will become `dir/<unique name>`.
    pub fn new(dir: &Path, inline_threshold: usize) -> Self {
        let name = uuid::Uuid::new_v4().to_string();
        FileCheckpointOutputStream {
            final_path: dir.join(&name),
            temp_path: dir.join(format!("{name}{IN_PROGRESS_SUFFIX}")),
            file: None,
            pending: Vec::new(),
            inline_threshold,
            position: 0,
            checksum: 0,
            durable: true,
            temp_exists: false,
            failed: false,
        }
    }

    /// A stream for a local copy: creates its file (and `dir`) right away, so that a missing or
    /// full disk shows at once; never keeps state inline; and does not fsync. A local copy is
    /// a cache beside the durable primary: it is verified by its CRC-32C before every use, so
    /// a copy torn by a crash is detected and the primary is used instead. Skipping the fsync
    /// keeps the local copy from doubling a checkpoint's durable I/O.
    pub fn create(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create directory {}: {e}", dir.display())))?;
        let mut stream = Self::new(dir, 0);
        stream.durable = false;
        stream.open_file()?;
        Ok(stream)
    }

    fn open_file(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.file.is_none() {
            let file = File::options().write(true).create_new(true).open(&self.temp_path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create checkpoint file {}: {e}", self.temp_path.display()))
            })?;
            self.temp_exists = true;
            let mut writer = BufWriter::with_capacity(256 * 1024, file);
            writer.write_all(&self.pending)?;
            self.pending = Vec::new();
            self.file = Some(writer);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }
}

impl FileCheckpointOutputStream {
    fn check_failed(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(format!(
                "checkpoint file {} failed earlier; it cannot be completed",
                self.temp_path.display()
            )));
        }
        Ok(())
    }

    /// Runs `op`, marking the stream failed if it fails.
    fn guarded<R>(&mut self, op: impl FnOnce(&mut Self) -> io::Result<R>) -> io::Result<R> {
        self.check_failed()?;
        let result = op(self);
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

impl CheckpointOutputStream for FileCheckpointOutputStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.guarded(|s| {
            if s.file.is_none() && s.pending.len() + bytes.len() <= s.inline_threshold {
                s.pending.extend_from_slice(bytes);
            } else {
                s.open_file()?.write_all(bytes)?;
            }
            s.position += bytes.len() as u64;
            s.checksum = crate::checksum::crc32c_append(s.checksum, bytes);
            Ok(())
        })
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn flush(&mut self) -> io::Result<()> {
        self.guarded(|s| match &mut s.file {
            Some(f) => f.flush(),
            None => Ok(()),
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.guarded(|s| match &mut s.file {
            Some(f) => {
                f.flush()?;
                if s.durable {
                    f.get_ref().sync_data()?;
                }
                Ok(())
            }
            None => Ok(()),
        })
    }

    fn close_and_get_handle(mut self: Box<Self>) -> io::Result<StreamStateHandle> {
        self.check_failed()?;
        let Some(mut writer) = self.file.take() else {
            return Ok(StreamStateHandle::Inline { bytes: std::mem::take(&mut self.pending) });
        };
        // On any error below, `self` is dropped and Drop removes the temporary file.
        writer.flush()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        if self.durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&self.temp_path, &self.final_path)?;
        self.temp_exists = false;
        if let Some(dir) = self.final_path.parent().filter(|_| self.durable) {
            if let Err(e) = crate::fsutil::sync_dir(dir) {
                // Not durable yet, so no handle: remove the file rather than leave an orphan.
                let _ = fs::remove_file(&self.final_path);
                return Err(e);
            }
        }
        Ok(StreamStateHandle::File {
            path: std::mem::take(&mut self.final_path),
            size: self.position,
            crc32c: Some(self.checksum),
        })
    }
}

impl Drop for FileCheckpointOutputStream {
    fn drop(&mut self) {
        drop(self.file.take());
        if self.temp_exists {
            // Already gone is fine: an aborted checkpoint's directory may have been deleted
            // while this stream was still open.
            if let Err(e) = fs::remove_file(&self.temp_path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }) {
                tracing::warn!(path = %self.temp_path.display(), error = %e, "could not remove discarded checkpoint file");
            }
        }
    }
}

/// Creates file streams in a checkpoint directory: exclusive state in `dir`, shared state in
/// `shared_dir`.
#[derive(Debug, Clone)]
pub struct FileStreamFactory {
    exclusive_dir: PathBuf,
    shared_dir: PathBuf,
    inline_threshold: usize,
}

impl FileStreamFactory {
    /// Default size below which state is kept inline in the handle (like Flink's
    /// `state.storage.fs.memory-threshold`, 20 KiB).
    pub const DEFAULT_INLINE_THRESHOLD: usize = 20 * 1024;

    /// A factory writing exclusive state to `exclusive_dir` and shared state to `shared_dir`;
    /// both are created if missing.
    pub fn new(
        exclusive_dir: impl Into<PathBuf>,
        shared_dir: impl Into<PathBuf>,
        inline_threshold: usize,
    ) -> io::Result<Self> {
        let (exclusive_dir, shared_dir) = (exclusive_dir.into(), shared_dir.into());
        for dir in [&exclusive_dir, &shared_dir] {
            fs::create_dir_all(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create checkpoint directory {}: {e}", dir.display()))
            })?;
        }
        Ok(FileStreamFactory { exclusive_dir, shared_dir, inline_threshold })
    }

    /// The directory of exclusive state.
    pub fn exclusive_dir(&self) -> &Path {
        &self.exclusive_dir
    }
}

impl CheckpointStreamFactory for FileStreamFactory {
    fn create_output_stream(&self, scope: StateScope) -> io::Result<Box<dyn CheckpointOutputStream>> {
        let dir = match scope {
            StateScope::Exclusive => &self.exclusive_dir,
            StateScope::Shared => &self.shared_dir,
        };
        Ok(Box::new(FileCheckpointOutputStream::new(dir, self.inline_threshold)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails may have put part of its bytes in the file: the stream must never
    /// complete into a handle afterwards, even if later calls would succeed.
    #[test]
    fn a_stream_that_failed_never_completes_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Box::new(FileCheckpointOutputStream::new(dir.path(), 0));
        s.write(b"abc").unwrap();
        // Swap the writer for one over a read-only descriptor of the same file: the next
        // flush to it fails like a full or broken disk would.
        let read_only = File::open(&s.temp_path).unwrap();
        s.file = Some(BufWriter::with_capacity(4, read_only));
        assert!(s.write(&[7u8; 64]).is_err());
        // Give it a working writer again: it still refuses to complete.
        let writable = File::options().append(true).open(&s.temp_path).unwrap();
        s.file = Some(BufWriter::new(writable));
        assert!(s.write(b"more").is_err());
        assert!(s.flush().is_err());
        let e = s.close_and_get_handle().unwrap_err().to_string();
        assert!(e.contains("failed earlier"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a partial file was left");
    }
}
