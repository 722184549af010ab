//! On-disk cache of compiled components.
//!
//! Compiling a component takes tens of milliseconds (seconds for large guests); loading a
//! compiled artefact takes well under one. Entries are keyed by the SHA-256 of the component
//! and the engine's compatibility hash (which changes with the wasmtime version and the
//! settings that affect code generation), so an entry is only ever loaded into an engine that
//! produced compatible code. Each entry starts with the SHA-256 of the rest: deserializing is
//! `unsafe` because the bytes are trusted to be wasmtime's own output, so a truncated or
//! corrupted entry must be detected before it reaches the deserializer. Such an entry is
//! ignored and rebuilt.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// What happened when a component was loaded through the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid entry.
    Hit,
    /// No entry: compiled and stored.
    Miss,
    /// The entry was corrupt or incompatible: compiled again and replaced.
    Rebuilt,
}

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
}

impl CompiledCache {
    /// A cache in `dir` (created when the first entry is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompiledCache { dir: dir.into() }
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

    /// The entry for `component_bytes` in `engine`.
    pub fn entry_path(&self, engine: &Engine, component_bytes: &[u8]) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let content = hex(&Sha256::digest(component_bytes));
        self.dir.join(format!("{content}-{:016x}.cwasm", hasher.finish()))
    }

    /// Loads the compiled component for `bytes`, compiling (and caching) it if needed.
    /// Cache write failures are only logged: the cache is an optimisation.
    pub fn load_or_compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, bytes);
        let mut outcome = CacheOutcome::Miss;
        if let Ok(entry) = std::fs::read(&path) {
            match verified_payload(&entry).map(|payload| deserialize(engine, payload)) {
                Some(Ok(component)) => return Ok((component, CacheOutcome::Hit)),
                Some(Err(e)) => {
                    tracing::warn!(entry = %path.display(), error = %e, "ignoring incompatible compiled-plugin cache entry")
                }
                None => tracing::warn!(entry = %path.display(), "ignoring corrupted compiled-plugin cache entry"),
            }
            outcome = CacheOutcome::Rebuilt;
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(entry = %path.display(), error = %e, "could not write the compiled-plugin cache entry");
        }
        Ok((component, outcome))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let payload = component.serialize()?;
        let mut entry = Sha256::digest(&payload).to_vec();
        entry.extend_from_slice(&payload);
        std::fs::create_dir_all(&self.dir)?;
        crate::fsutil::write_atomic(path, &entry)?;
        Ok(())
    }
}

fn verified_payload(entry: &[u8]) -> Option<&[u8]> {
    if entry.len() < 32 {
        return None;
    }
    let (digest, payload) = entry.split_at(32);
    (Sha256::digest(payload).as_slice() == digest).then_some(payload)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `payload` was produced by `Component::serialize` of an engine with the same
    // compatibility hash (it is part of the entry's name) and its SHA-256 matched, so it is
    // the unmodified output of wasmtime itself; wasmtime additionally checks its own header.
    unsafe { Component::deserialize(engine, payload) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miss_hit_and_rebuild_of_a_corrupted_entry() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(dir.path());
        // The smallest valid component: just the header.
        let bytes = b"\0asm\x0d\0\x01\0";
        assert_eq!(cache.load_or_compile(&engine, bytes).unwrap().1, CacheOutcome::Miss);
        assert_eq!(cache.load_or_compile(&engine, bytes).unwrap().1, CacheOutcome::Hit);
        let path = cache.entry_path(&engine, bytes);
        let mut entry = std::fs::read(&path).unwrap();
        let last = entry.len() - 1;
        entry[last] ^= 0xff;
        std::fs::write(&path, &entry).unwrap();
        assert_eq!(cache.load_or_compile(&engine, bytes).unwrap().1, CacheOutcome::Rebuilt);
        assert_eq!(cache.load_or_compile(&engine, bytes).unwrap().1, CacheOutcome::Hit);
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(cache.load_or_compile(&engine, bytes).unwrap().1, CacheOutcome::Rebuilt);
    }
}
