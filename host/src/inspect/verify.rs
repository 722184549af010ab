//! `verify`: every checksum of a checkpoint, primary and local, read from the bytes at rest.
//!
//! A restore verifies what it reads as it reads it; this reads everything, so that damage is
//! found before a restore needs the file (and on local copies a restore would silently skip
//! in favour of the primary). Each file is read once, front to back, checked segment by
//! segment (naming the key group or partition that is damaged) and as a whole.

use std::io::Read;
use std::sync::Arc;

use serde::Serialize;

use super::{CheckpointInspector, InspectError, LocalCopyStatus};
use crate::handles::{SegmentChecksums, SegmentVerifier, StreamStateHandle};
use crate::storage::{StorageError, METADATA_FILE};

/// What `verify` found for one checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// Every file checked, the metadata first.
    pub files: Vec<CheckedFile>,
}

/// One file checked.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedFile {
    /// The subtask whose state it holds (`None` for the checkpoint's metadata).
    pub subtask: Option<u32>,
    /// `metadata`, `keyed`, `operator` or `local metadata`.
    pub part: &'static str,
    /// `primary` or `local`.
    pub copy: &'static str,
    /// For an earlier keyed stream of an incremental chain (in the primary's shared area, or
    /// its local copy): the checkpoint that wrote it. `None` for the checkpoint's own files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_by: Option<u64>,
    /// The file or object.
    pub file: String,
    /// Bytes read.
    pub bytes: u64,
    /// Checksummed segments (key groups, partitions, a header) verified.
    pub segments: usize,
    /// What is wrong, if anything.
    pub damage: Option<Damage>,
    /// A remark that is not damage (a local copy restores would not use, and why).
    pub note: Option<String>,
}

/// Damage found in a file.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// What is wrong, naming the file and, where the checksums tell, the key group or
    /// partition.
    pub reason: String,
}

impl VerifyReport {
    /// Whether every file, primary and local, is intact.
    pub fn intact(&self) -> bool {
        self.files.iter().all(|f| f.damage.is_none())
    }

    /// Whether the primary (metadata and state) is intact: the checkpoint can be restored.
    pub fn primary_intact(&self) -> bool {
        self.files.iter().filter(|f| f.copy == "primary").all(|f| f.damage.is_none())
    }

    /// The damaged files.
    pub fn damaged(&self) -> impl Iterator<Item = &CheckedFile> {
        self.files.iter().filter(|f| f.damage.is_some())
    }
}

impl CheckpointInspector {
    /// Verifies checkpoint `id`: its metadata's checksum, every primary stream and every
    /// local copy on this machine. Damage is reported, not returned as an error; errors are
    /// for checkpoints that do not exist or storage that cannot be listed.
    pub fn verify(&self, id: u64) -> Result<VerifyReport, InspectError> {
        let completed = self.completed()?;
        if !completed.contains(&id) {
            return Err(InspectError::UnknownCheckpoint {
                job: self.job_id.clone(),
                id,
                location: self.storage.url().to_string(),
                completed,
            });
        }
        let metadata_file = format!("{}/chk-{id}/{METADATA_FILE}", self.storage.url());
        let mut files = Vec::new();
        let metadata = match self.storage.read_metadata(id) {
            Ok(m) => {
                files.push(checked(None, "metadata", "primary", metadata_file, 0, 1, None));
                m
            }
            Err(e) => {
                let reason = match e {
                    StorageError::Corrupted { reason, .. } => format!("{metadata_file}: {reason}"),
                    other => other.to_string(),
                };
                files.push(checked(None, "metadata", "primary", metadata_file, 0, 0, Some(reason)));
                return Ok(VerifyReport { checkpoint_id: id, files });
            }
        };
        for (index, state) in metadata.subtasks.iter().enumerate() {
            let subtask = Some(index as u32);
            if let Some(h) = &state.keyed {
                files.push(check_stream(subtask, "keyed", "primary", h.stream(), h.offsets().checksums()));
            }
            // An incremental checkpoint restores through the earlier streams of its chain as
            // well: they are as much a part of it as its own.
            for link in state.keyed_chain.iter().flat_map(|c| &c.earlier) {
                let h = &link.handle;
                let mut f = check_stream(subtask, "keyed", "primary", h.stream(), h.offsets().checksums());
                f.written_by = Some(link.checkpoint_id);
                files.push(f);
            }
            if let Some(h) = &state.operator {
                files.push(check_stream(subtask, "operator", "primary", h.stream(), h.checksums()));
            }
        }
        for copy in self.local_copies()?.into_iter().filter(|c| c.checkpoint_id == id) {
            let subtask = Some(copy.subtask);
            let snapshot = match copy.snapshot() {
                Ok(s) => s,
                Err(why) => {
                    let file = copy.metadata_file().display().to_string();
                    let reason = format!("{file}: {why}");
                    files.push(checked(subtask, "local metadata", "local", file, 0, 0, Some(reason)));
                    continue;
                }
            };
            let note = match copy.status(&metadata) {
                LocalCopyStatus::Usable => None,
                LocalCopyStatus::Differs(why) | LocalCopyStatus::Unreadable(why) => {
                    Some(format!("restores do not use this copy: {why}"))
                }
            };
            let file = copy.metadata_file().display().to_string();
            files.push(CheckedFile {
                note: note.clone(),
                ..checked(subtask, "local metadata", "local", file, 0, 1, None)
            });
            if let Some(h) = &snapshot.keyed {
                let mut f = check_stream(subtask, "keyed", "local", h.stream(), h.offsets().checksums());
                f.note = note.clone();
                files.push(f);
            }
            if let Some(h) = &snapshot.operator {
                let mut f = check_stream(subtask, "operator", "local", h.stream(), h.checksums());
                f.note = note.clone();
                files.push(f);
            }
            // The local copies of the chain's earlier streams (hard links to, or copies of,
            // earlier local checkpoints' files), named by the checkpoint that wrote each.
            let earlier = metadata.subtasks.get(copy.subtask as usize).and_then(|s| s.keyed_chain.as_ref());
            for link in snapshot.keyed_chain.iter().flat_map(|c| &c.links) {
                let h = &link.copy;
                let mut f = check_stream(subtask, "keyed", "local", h.stream(), h.offsets().checksums());
                f.written_by = earlier
                    .and_then(|c| c.earlier.iter().find(|l| l.handle.stream().identity() == link.primary))
                    .map(|l| l.checkpoint_id);
                f.note = note.clone();
                files.push(f);
            }
        }
        Ok(VerifyReport { checkpoint_id: id, files })
    }
}

fn checked(
    subtask: Option<u32>,
    part: &'static str,
    copy: &'static str,
    file: String,
    bytes: u64,
    segments: usize,
    damage: Option<String>,
) -> CheckedFile {
    CheckedFile {
        subtask,
        part,
        copy,
        written_by: None,
        file,
        bytes,
        segments,
        damage: damage.map(|reason| Damage { reason }),
        note: None,
    }
}

fn check_stream(
    subtask: Option<u32>,
    part: &'static str,
    copy: &'static str,
    stream: &StreamStateHandle,
    checksums: &Arc<SegmentChecksums>,
) -> CheckedFile {
    let (bytes, damage) = match read_and_verify(stream, checksums) {
        Ok(n) => (n, None),
        Err((n, why)) => (n, Some(why)),
    };
    checked(subtask, part, copy, stream.describe(), bytes, checksums.segments().len(), damage)
}

/// Reads `stream` front to back, checking each segment and the whole; returns the bytes
/// read, or (bytes read, what is wrong).
fn read_and_verify(stream: &StreamStateHandle, checksums: &Arc<SegmentChecksums>) -> Result<u64, (u64, String)> {
    let name = stream.describe();
    let mut input = stream.open().map_err(|e| (0, e.to_string()))?;
    let mut verifier = SegmentVerifier::new(name.clone(), checksums.clone());
    let mut buf = vec![0u8; 256 * 1024];
    let (mut offset, mut crc) = (0u64, 0u32);
    loop {
        let n = input.read(&mut buf).map_err(|e| (offset, format!("reading {name}: {e}")))?;
        if n == 0 {
            break;
        }
        verifier.observe(offset, &buf[..n]).map_err(|m| (offset, m.to_string()))?;
        crc = crate::checksum::crc32c_append(crc, &buf[..n]);
        offset += n as u64;
    }
    if checksums.covered() != offset {
        return Err((
            offset,
            format!("{name}: the recorded checksums cover {} bytes, the stream has {offset}", checksums.covered()),
        ));
    }
    if let Some(expected) = stream.identity().crc32c {
        if crc != expected {
            return Err((
                offset,
                format!("{name}: checksum mismatch: content has CRC-32C {crc:08x}, the handle recorded {expected:08x}"),
            ));
        }
    }
    Ok(offset)
}
