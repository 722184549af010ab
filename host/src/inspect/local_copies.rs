//! Finding a job's local copies on this machine by reading the local recovery layout
//! (`<root>/localState/aid_*/jid_<job>/vtx_<vertex>_sti_<subtask>/chk_<id>`), without opening
//! the subtasks' stores.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::directories::{parse_checkpoint_dir_name, LOCAL_STATE_DIR};
use crate::local_store::{read_local_metadata, LocalSnapshot, LOCAL_METADATA_FILE};
use crate::storage::CheckpointMetadata;

/// One subtask's local copy of one checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct LocalCopy {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The subtask.
    pub subtask: u32,
    /// The allocation (slot) it belongs to.
    pub allocation: String,
    /// The operator (vertex) it belongs to.
    pub vertex: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Whether a restore would use it, in words (filled in against a checkpoint's metadata).
    pub state: String,
    #[serde(skip)]
    pub(crate) snapshot: Result<LocalSnapshot, String>,
}

/// Whether a restore of a checkpoint would use a local copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCopyStatus {
    /// It copies exactly the checkpoint's primary: a restore at the same parallelism uses it.
    Usable,
    /// Its metadata is damaged or unreadable: a starting job deletes it.
    Unreadable(String),
    /// It copies other bytes than this checkpoint's primary (an earlier incarnation's
    /// checkpoint with the same id, or a subtask that moved): restores ignore it.
    Differs(String),
}

impl LocalCopy {
    /// Whether a restore of `metadata` would use this copy.
    pub fn status(&self, metadata: &CheckpointMetadata) -> LocalCopyStatus {
        let snapshot = match &self.snapshot {
            Ok(s) => s,
            Err(e) => return LocalCopyStatus::Unreadable(e.clone()),
        };
        let Some(primary) = metadata.subtasks.get(self.subtask as usize) else {
            return LocalCopyStatus::Differs(format!(
                "the checkpoint has {} subtasks, this copy is of subtask {}",
                metadata.subtasks.len(),
                self.subtask
            ));
        };
        let keyed_ok = match &primary.keyed {
            Some(h) => snapshot.keyed_copy_of(h).is_some(),
            None => snapshot.keyed.is_none(),
        };
        let operator_ok = match &primary.operator {
            Some(h) => snapshot.operator_copy_of(h).is_some(),
            None => snapshot.operator.is_none(),
        };
        match (keyed_ok, operator_ok) {
            (true, true) => LocalCopyStatus::Usable,
            (false, _) => LocalCopyStatus::Differs("its keyed state is not a copy of the primary's".into()),
            (true, false) => LocalCopyStatus::Differs("its operator state is not a copy of the primary's".into()),
        }
    }

    pub(crate) fn describe_status(&mut self, metadata: &CheckpointMetadata) {
        self.state = match self.status(metadata) {
            LocalCopyStatus::Usable => "usable: a copy of the primary".into(),
            LocalCopyStatus::Unreadable(why) => format!("unreadable: {why}"),
            LocalCopyStatus::Differs(why) => format!("not used: {why}"),
        };
    }

    /// The local snapshot's handles, if its metadata reads back intact.
    pub fn snapshot(&self) -> Result<&LocalSnapshot, &str> {
        self.snapshot.as_ref().map_err(String::as_str)
    }

    /// The path of its metadata file.
    pub fn metadata_file(&self) -> PathBuf {
        self.dir.join(LOCAL_METADATA_FILE)
    }
}

/// Every local copy of `job` under `roots`, ordered by checkpoint and subtask.
pub(crate) fn scan(roots: &[PathBuf], job: &str) -> Vec<LocalCopy> {
    let mut out = Vec::new();
    for root in roots {
        for allocation_dir in dirs(&root.join(LOCAL_STATE_DIR)) {
            let Some(allocation) = name_of(&allocation_dir).and_then(|n| n.strip_prefix("aid_").map(str::to_string))
            else {
                continue;
            };
            for subtask_dir in dirs(&allocation_dir.join(format!("jid_{job}"))) {
                let Some((vertex, subtask)) = name_of(&subtask_dir)
                    .and_then(|n| n.strip_prefix("vtx_"))
                    .and_then(|n| n.rsplit_once("_sti_"))
                    .and_then(|(v, s)| Some((v.to_string(), s.parse::<u32>().ok()?)))
                else {
                    continue;
                };
                for dir in dirs(&subtask_dir) {
                    let Some(checkpoint_id) = name_of(&dir).and_then(parse_checkpoint_dir_name) else { continue };
                    // A directory without metadata is a copy being written (or a crash's
                    // leftover): not a local copy.
                    if !dir.join(LOCAL_METADATA_FILE).exists() {
                        continue;
                    }
                    let snapshot = read_local_metadata(&dir).map_err(|e| e.to_string());
                    out.push(LocalCopy {
                        checkpoint_id,
                        subtask,
                        allocation: allocation.clone(),
                        vertex: vertex.clone(),
                        dir,
                        state: String::new(),
                        snapshot,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (a.checkpoint_id, a.subtask, &a.dir).cmp(&(b.checkpoint_id, b.subtask, &b.dir)));
    out
}

fn dirs(path: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(path) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    out.sort();
    out
}

fn name_of(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}
