//! The local recovery directory layout:
//! `<root>/localState/aid_<allocation>/jid_<job>/vtx_<vertex>_sti_<subtask>/chk_<checkpoint>`.
//!
//! Local state is scoped to an allocation (releasing it wipes everything below `aid_`), then
//! to a job and a subtask. With several roots, checkpoints rotate over them by id, spreading
//! local copies over disks. Every id that becomes a path component is validated: it cannot
//! contain a separator or `..`, so nothing can leave the root.

use std::path::{Path, PathBuf};

/// The sub-directory of every root that holds local state.
pub const LOCAL_STATE_DIR: &str = "localState";

/// An id that cannot be used as a path component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: ids may only contain ASCII letters, digits, '-' and '_' (at most 128)")]
pub struct InvalidId {
    /// Which id.
    pub what: &'static str,
    /// Its value.
    pub value: String,
}

/// Checks that `value` is safe as (part of) one path component.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), InvalidId> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidId { what, value: value.into() })
    }
}

/// Where one subtask's local state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecoveryDirectoryProvider {
    allocation_base_dirs: Vec<PathBuf>,
    job_id: String,
    vertex_id: String,
    subtask_index: u32,
}

impl LocalRecoveryDirectoryProvider {
    /// The provider for subtask `subtask_index` of vertex `vertex_id` of job `job_id` in
    /// allocation `allocation_id`, over `roots`.
    pub fn new(
        roots: &[PathBuf],
        allocation_id: &str,
        job_id: &str,
        vertex_id: &str,
        subtask_index: u32,
    ) -> Result<Self, InvalidId> {
        validate_id("allocation id", allocation_id)?;
        validate_id("job id", job_id)?;
        validate_id("vertex id", vertex_id)?;
        if roots.is_empty() {
            return Err(InvalidId { what: "local root directory list", value: String::new() });
        }
        let allocation_base_dirs = roots.iter().map(|r| allocation_base_dir(r, allocation_id)).collect();
        Ok(LocalRecoveryDirectoryProvider {
            allocation_base_dirs,
            job_id: job_id.into(),
            vertex_id: vertex_id.into(),
            subtask_index,
        })
    }

    /// The allocation directory used for `checkpoint_id`: round robin by id, computed as Flink
    /// does (the id's low 32 bits, sign bit cleared, modulo the number of roots) so that the
    /// same checkpoint maps to the same root in both.
    pub fn allocation_base_dir(&self, checkpoint_id: u64) -> &Path {
        let index = ((checkpoint_id as i32) & i32::MAX) as usize % self.allocation_base_dirs.len();
        &self.allocation_base_dirs[index]
    }

    /// `jid_<job>/vtx_<vertex>_sti_<subtask>`, relative.
    pub fn subtask_dir_relative(&self) -> PathBuf {
        Path::new(&format!("jid_{}", self.job_id)).join(format!("vtx_{}_sti_{}", self.vertex_id, self.subtask_index))
    }

    /// The subtask's directory under the root used for `checkpoint_id`.
    pub fn subtask_base_dir(&self, checkpoint_id: u64) -> PathBuf {
        self.allocation_base_dir(checkpoint_id).join(self.subtask_dir_relative())
    }

    /// The directory of one checkpoint's local state.
    pub fn checkpoint_dir(&self, checkpoint_id: u64) -> PathBuf {
        self.subtask_base_dir(checkpoint_id).join(format!("chk_{checkpoint_id}"))
    }

    /// The subtask's directory under every root (for disposing all of it).
    pub fn all_subtask_base_dirs(&self) -> Vec<PathBuf> {
        self.allocation_base_dirs.iter().map(|d| d.join(self.subtask_dir_relative())).collect()
    }

    /// The allocation directories under every root.
    pub fn allocation_base_dirs(&self) -> &[PathBuf] {
        &self.allocation_base_dirs
    }
}

/// `<root>/localState/aid_<allocation>` (the allocation id must be valid).
pub fn allocation_base_dir(root: &Path, allocation_id: &str) -> PathBuf {
    root.join(LOCAL_STATE_DIR).join(format!("aid_{allocation_id}"))
}

/// Parses a `chk_<id>` directory name.
pub fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    name.strip_prefix("chk_")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_flink() {
        let p = LocalRecoveryDirectoryProvider::new(&[PathBuf::from("/r0")], "a1", "j1", "v1", 3).unwrap();
        assert_eq!(p.checkpoint_dir(42), PathBuf::from("/r0/localState/aid_a1/jid_j1/vtx_v1_sti_3/chk_42"));
        assert_eq!(parse_checkpoint_dir_name("chk_42"), Some(42));
        assert_eq!(parse_checkpoint_dir_name("chk_x"), None);
    }

    #[test]
    fn roots_rotate_by_checkpoint_id_like_flink() {
        let roots: Vec<PathBuf> = (0..3).map(|i| PathBuf::from(format!("/r{i}"))).collect();
        let p = LocalRecoveryDirectoryProvider::new(&roots, "a", "j", "v", 0).unwrap();
        for id in [0u64, 1, 2, 3, 7, u32::MAX as u64, (1 << 32) + 5, u64::MAX] {
            let expected = ((id as i32) & i32::MAX) as usize % 3;
            assert!(p.checkpoint_dir(id).starts_with(format!("/r{expected}")), "id {id}");
        }
        assert_eq!(p.all_subtask_base_dirs().len(), 3);
    }

    #[test]
    fn ids_that_could_escape_the_root_are_refused() {
        for bad in ["", "..", "a/b", "a\\b", "x/../../etc", ".", "a b", "é", "a\0b"] {
            let e = LocalRecoveryDirectoryProvider::new(&[PathBuf::from("/r")], bad, "j", "v", 0).unwrap_err();
            assert_eq!(e.what, "allocation id");
            assert!(LocalRecoveryDirectoryProvider::new(&[PathBuf::from("/r")], "a", bad, "v", 0).is_err());
            assert!(LocalRecoveryDirectoryProvider::new(&[PathBuf::from("/r")], "a", "j", bad, 0).is_err());
        }
        assert!(LocalRecoveryDirectoryProvider::new(&[], "a", "j", "v", 0).is_err());
    }
}
