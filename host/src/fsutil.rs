//! Small filesystem helpers shared by the durable parts of the host.

use std::fs::File;
use std::io;
use std::path::Path;

/// Fsyncs a directory so that renames and creations inside it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced,
/// renamed over `path`, and the directory fsynced. Readers see the old content or the new
/// one, never a mix; a crash leaves at most a stray temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}
