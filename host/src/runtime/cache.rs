//! The on-disk cache of compiled plugins: wasmtime's own.
//!
//! Compiling a Rust strategy takes tens of milliseconds, an 18 MB CPython or SpiderMonkey
//! component seconds; loading compiled code takes milliseconds. wasmtime's cache keys an entry
//! by a hash of the component bytes and of every engine setting that affects code generation
//! (so an entry is never loaded into an engine that would have produced other code), stores it
//! compressed, and runs a background worker that keeps the directory under a file-count and a
//! size limit, deleting the least recently used entries first. An entry that fails to load
//! (truncated, corrupted) is compiled again and replaced. A hand-written cache would have to
//! redo all of that; this one grows without bound no more.

use std::path::{Path, PathBuf};

/// Where compiled plugins are cached and how large the cache may grow.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// The default size limit: room for a few dozen large (interpreter-based) plugins.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

impl CompiledCache {
    /// A cache in `dir` (created on first use) with the default size limit.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompiledCache { dir: dir.into(), max_bytes: DEFAULT_CACHE_BYTES }
    }

    /// The same cache with another soft limit on the total size of its entries; the worker
    /// deletes least recently used entries once it is exceeded.
    pub fn with_size_limit(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The default location: `$XDG_CACHE_HOME/snapshot-host` or `~/.cache/snapshot-host`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("snapshot-host"))
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The soft size limit in bytes.
    pub fn size_limit(&self) -> u64 {
        self.max_bytes
    }

    /// wasmtime's cache over this directory (which must be absolute for wasmtime).
    pub(crate) fn open(&self) -> wasmtime::Result<wasmtime::Cache> {
        let dir = std::path::absolute(&self.dir)?;
        let mut config = wasmtime::CacheConfig::new();
        config.with_directory(dir).with_files_total_size_soft_limit(self.max_bytes);
        wasmtime::Cache::new(config)
    }
}

/// Whether a component came from the cache, counted by the runtime's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded compiled code from an entry.
    Hit,
    /// Compiled (no entry, or one that failed to load) and stored.
    Miss,
    /// The runtime has no cache.
    Uncached,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{PluginRuntime, RuntimeOptions};

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if !path.file_name().is_some_and(|n| {
                    // wasmtime's cache worker keeps statistics beside each entry on a thread
                    // of its own, written to a `.wip-*` file renamed into place: such files
                    // come and go while the test looks (a CI run failed on one).
                    let n = n.to_string_lossy();
                    n.ends_with(".stats") || n.contains(".wip-")
                }) {
                    found.push(path);
                }
            }
        }
        found
    }

    #[test]
    fn a_second_runtime_loads_from_the_cache_and_a_corrupted_entry_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = |d: &Path| {
            PluginRuntime::with_options(RuntimeOptions {
                cache: Some(CompiledCache::new(d)),
                ..RuntimeOptions::default()
            })
            .unwrap()
        };
        // The smallest valid component: just the header.
        let bytes = b"\0asm\x0d\0\x01\0";
        assert_eq!(runtime(dir.path()).compile(bytes).unwrap().1, CacheOutcome::Miss);
        assert_eq!(runtime(dir.path()).compile(bytes).unwrap().1, CacheOutcome::Hit, "a new process hits");
        let written: Vec<_> =
            entries(dir.path()).into_iter().filter(|e| e.metadata().is_ok_and(|m| m.len() > 0)).collect();
        assert!(!written.is_empty(), "no cache entry in {}", dir.path().display());
        for entry in &written {
            let mut data = std::fs::read(entry).unwrap();
            let middle = data.len() / 2;
            data[middle] ^= 0xff;
            data.truncate(middle + 1);
            std::fs::write(entry, &data).unwrap();
        }
        // A damaged entry is never loaded: compiled again (a miss), then hit again.
        assert_eq!(runtime(dir.path()).compile(bytes).unwrap().1, CacheOutcome::Miss);
        assert_eq!(runtime(dir.path()).compile(bytes).unwrap().1, CacheOutcome::Hit);
        let plain = PluginRuntime::new().unwrap();
        assert_eq!(plain.compile(bytes).unwrap().1, CacheOutcome::Uncached);
        // A cache directory that cannot be created: the runtime works, uncached.
        let blocked = dir.path().join("a-file");
        std::fs::write(&blocked, b"not a directory").unwrap();
        let uncached = runtime(&blocked.join("cache"));
        assert_eq!(uncached.compile(bytes).unwrap().1, CacheOutcome::Uncached);
    }
}
