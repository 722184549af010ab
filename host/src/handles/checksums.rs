//! Per-segment checksums of a snapshot stream, and the verifier that checks every byte a
//! restore reads against them.
//!
//! The host sees every byte a strategy writes, and it knows where each key group (or operator
//! partition) starts because the strategy must mark it. So it records a CRC-32C per segment:
//! the bytes before the first mark (a header, if the format has one), then from each mark to
//! the next, the last one to the end of the stream. The segments tile the stream exactly.
//!
//! Per segment rather than per file because a restore often reads only part of a file (after
//! rescaling a subtask reads only the key groups it now owns): a whole-file checksum would
//! force it to read everything, a per-segment one verifies exactly what is used.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What a segment of a stream holds; names it in corruption errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentLabel {
    /// Bytes before the first mark.
    Header,
    /// One key group of a keyed snapshot.
    KeyGroup(u32),
    /// One element (partition) of an operator list state.
    Partition {
        /// The state's name.
        state: String,
        /// The element's position in the state's list.
        index: u32,
    },
}

impl std::fmt::Display for SegmentLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentLabel::Header => f.write_str("header"),
            SegmentLabel::KeyGroup(kg) => write!(f, "key group {kg}"),
            SegmentLabel::Partition { state, index } => write!(f, "operator state {state:?} partition {index}"),
        }
    }
}

/// One segment: `len` bytes from `start`, with their CRC-32C.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Offset of its first byte.
    pub start: u64,
    /// Number of bytes.
    pub len: u64,
    /// CRC-32C of the bytes.
    pub crc32c: u32,
    /// What it holds.
    pub label: SegmentLabel,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The segments of one stream, in order, tiling it from offset 0 to its end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentChecksums {
    segments: Vec<Segment>,
}

impl SegmentChecksums {
    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total bytes covered (the stream's size).
    pub fn covered(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end)
    }

    /// Index of the segment holding byte `offset`.
    fn index_at(&self, offset: u64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.end() <= offset);
        (i < self.segments.len() && self.segments[i].start <= offset).then_some(i)
    }

    /// The segment starting at `offset` with a non-zero length, if any (the one a key group
    /// or partition marked there; zero-length segments hold nothing to verify).
    pub fn starting_at(&self, offset: u64) -> Option<usize> {
        self.index_at(offset).filter(|&i| self.segments[i].start == offset)
    }
}

/// Records segment checksums while a stream is written: feed every byte with
/// [`update`](Self::update) and announce each mark with [`mark`](Self::mark).
#[derive(Debug, Default)]
pub struct SegmentRecorder {
    done: Vec<Segment>,
    label: Option<SegmentLabel>,
    start: u64,
    len: u64,
    crc: u32,
}

impl SegmentRecorder {
    /// A recorder at offset 0, in the header segment.
    pub fn new() -> Self {
        SegmentRecorder { label: Some(SegmentLabel::Header), ..Default::default() }
    }

    /// Accounts for `bytes` appended to the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc = crate::checksum::crc32c_append(self.crc, bytes);
        self.len += bytes.len() as u64;
    }

    /// A new segment starts at the current end of the stream.
    pub fn mark(&mut self, label: SegmentLabel) {
        self.close();
        self.label = Some(label);
    }

    fn close(&mut self) {
        if let Some(label) = self.label.take() {
            // An empty header is left out; an empty key group or partition is kept (it says the
            // mark was made, and a zero-length segment cannot be corrupt).
            if self.len > 0 || label != SegmentLabel::Header {
                self.done.push(Segment { start: self.start, len: self.len, crc32c: self.crc, label });
            }
        }
        self.start += self.len;
        self.len = 0;
        self.crc = 0;
    }

    /// Closes the last segment at the end of the stream.
    pub fn finish(mut self) -> SegmentChecksums {
        self.close();
        SegmentChecksums { segments: self.done }
    }
}

/// Bytes read back that do not match what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "checksum mismatch in {stream}, {label} (bytes {start}..{end}): recorded CRC-32C {recorded:08x}, found {found:08x}"
)]
pub struct ChecksumMismatch {
    /// The stream (its file, or inline bytes).
    pub stream: String,
    /// The segment.
    pub label: SegmentLabel,
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// CRC-32C recorded when the bytes were written.
    pub recorded: u32,
    /// CRC-32C of the bytes found.
    pub found: u32,
}

/// Why a verification failed: the bytes are corrupt, or could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A segment's bytes do not match its checksum.
    #[error(transparent)]
    Mismatch(#[from] ChecksumMismatch),
    /// The bytes cannot be verified at all: no checksums were recorded for them.
    #[error("{stream} cannot be verified: {reason}")]
    Unverifiable {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// Reading the bytes to verify them failed (a truncated file ends early).
    #[error("reading {stream} to verify it: {source}")]
    Io {
        /// The stream.
        stream: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing read yet.
    Untouched,
    /// Read from its start without gaps: this many bytes, with this running CRC.
    Sequential { read: u64, crc: u32 },
    /// Verified.
    Verified,
    /// Read, but not from its start in order: must be re-read to be verified.
    Scattered,
}

/// Checks every byte a restore reads against the segment checksums, in one pass in the usual
/// case: bytes read in order from a segment's start extend a running CRC, compared as soon as
/// the segment is read to its end.
///
/// A restore calls [`settle`](Self::settle) after each strategy call, for the segment that
/// call restored: it is verified even if the strategy skipped part of it. Other segments read
/// only in part (a buffered reader reads ahead into the next key group) are left for later:
/// the next call usually reads them again from their start and verifies them in passing.
/// Before a restore succeeds, [`settle`](Self::settle) with `everything` re-reads whatever is
/// still unverified, so no byte that was read escapes verification, and a failed strategy
/// call does the same first, so that corrupt input is reported as such.
#[derive(Debug)]
pub struct SegmentVerifier {
    stream: String,
    checksums: Arc<SegmentChecksums>,
    progress: Vec<Progress>,
    first_mismatch: Option<ChecksumMismatch>,
}

impl SegmentVerifier {
    /// A verifier for the stream described by `stream` (for messages).
    pub fn new(stream: String, checksums: Arc<SegmentChecksums>) -> Self {
        let progress = vec![Progress::Untouched; checksums.segments.len()];
        SegmentVerifier { stream, checksums, progress, first_mismatch: None }
    }

    fn mismatch(&self, i: usize, found: u32) -> ChecksumMismatch {
        let s = &self.checksums.segments[i];
        ChecksumMismatch {
            stream: self.stream.clone(),
            label: s.label.clone(),
            start: s.start,
            end: s.end(),
            recorded: s.crc32c,
            found,
        }
    }

    /// Accounts for `bytes` read at `offset`. Returns the first mismatch found so far, so the
    /// reader can refuse to hand out more bytes of a corrupt stream.
    pub fn observe(&mut self, offset: u64, bytes: &[u8]) -> Result<(), ChecksumMismatch> {
        let (mut at, mut rest) = (offset, bytes);
        while !rest.is_empty() {
            let Some(i) = self.checksums.index_at(at) else {
                // Past the recorded end: the file is longer than what was written. The size
                // check on open refuses such files; nothing here to verify against.
                break;
            };
            let seg = &self.checksums.segments[i];
            let take = ((seg.end() - at) as usize).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            let next = match self.progress[i] {
                Progress::Verified => Progress::Verified,
                // Reading from its start (again, after a read-ahead stopped inside it):
                // verify from here in one pass.
                _ if at == seg.start => Progress::Sequential { read: take as u64, crc: crate::checksum::crc32c(chunk) },
                Progress::Sequential { read, crc } if seg.start + read == at => {
                    Progress::Sequential { read: read + take as u64, crc: crate::checksum::crc32c_append(crc, chunk) }
                }
                _ => Progress::Scattered,
            };
            self.progress[i] = match next {
                Progress::Sequential { read, crc } if read == seg.len => {
                    if crc != seg.crc32c && self.first_mismatch.is_none() {
                        self.first_mismatch = Some(self.mismatch(i, crc));
                    }
                    Progress::Verified
                }
                other => other,
            };
            at += take as u64;
            rest = tail;
        }
        match &self.first_mismatch {
            Some(m) => Err(m.clone()),
            None => Ok(()),
        }
    }

    /// Verifies, by re-reading it from `input` if needed, the segment starting at `required`
    /// (if given), and with `everything` also every segment read but not yet verified. The
    /// input's position is restored.
    pub fn settle<R: Read + Seek + ?Sized>(
        &mut self,
        input: &mut R,
        required: Option<u64>,
        everything: bool,
    ) -> Result<(), VerifyError> {
        if let Some(m) = &self.first_mismatch {
            return Err(m.clone().into());
        }
        let io_err = |source| VerifyError::Io { stream: self.stream.clone(), source };
        let required = required.and_then(|offset| self.checksums.starting_at(offset));
        let pending: Vec<usize> = (0..self.progress.len())
            .filter(|&i| {
                let touched = !matches!(self.progress[i], Progress::Untouched | Progress::Verified);
                (everything && touched) || (Some(i) == required && self.progress[i] != Progress::Verified)
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let back = input.stream_position().map_err(io_err)?;
        let mut buf = vec![0u8; 256 * 1024];
        for i in pending {
            let seg = self.checksums.segments[i].clone();
            input.seek(SeekFrom::Start(seg.start)).map_err(io_err)?;
            let (mut left, mut crc) = (seg.len, 0u32);
            while left > 0 {
                let want = (left as usize).min(buf.len());
                input.read_exact(&mut buf[..want]).map_err(io_err)?;
                crc = crate::checksum::crc32c_append(crc, &buf[..want]);
                left -= want as u64;
            }
            if crc != seg.crc32c {
                let m = self.mismatch(i, crc);
                self.first_mismatch = Some(m.clone());
                return Err(m.into());
            }
            self.progress[i] = Progress::Verified;
        }
        input.seek(SeekFrom::Start(back)).map_err(io_err)?;
        Ok(())
    }
}

/// Who a stream is: its file name (or none, for inline bytes), size and CRC-32C. A local copy
/// records the identity of the primary it copies, so that a restore uses it only for exactly
/// that primary (a checkpoint id alone is not unique across process incarnations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamIdentity {
    /// The file name of the stream, without directories; `None` for inline bytes.
    pub name: Option<String>,
    /// Its size.
    pub size: u64,
    /// Its CRC-32C, as recorded when written.
    pub crc32c: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn record(parts: &[(Option<SegmentLabel>, &[u8])]) -> (Vec<u8>, Arc<SegmentChecksums>) {
        let mut r = SegmentRecorder::new();
        let mut bytes = Vec::new();
        for (label, data) in parts {
            if let Some(l) = label {
                r.mark(l.clone());
            }
            r.update(data);
            bytes.extend_from_slice(data);
        }
        (bytes, Arc::new(r.finish()))
    }

    #[test]
    fn segments_tile_the_stream() {
        let (bytes, c) = record(&[
            (None, b"hdr"),
            (Some(SegmentLabel::KeyGroup(0)), b"aaaa"),
            (Some(SegmentLabel::KeyGroup(1)), b""),
            (Some(SegmentLabel::KeyGroup(2)), b"cc"),
        ]);
        assert_eq!(c.covered(), bytes.len() as u64);
        let starts: Vec<_> = c.segments().iter().map(|s| (s.start, s.len)).collect();
        assert_eq!(starts, vec![(0, 3), (3, 4), (7, 0), (7, 2)]);
        assert_eq!(c.segments()[1].crc32c, crate::checksum::crc32c(b"aaaa"));
        // No header when the first mark is at 0.
        let (_, c) = record(&[(Some(SegmentLabel::KeyGroup(5)), b"x")]);
        assert_eq!(c.segments().len(), 1);
    }

    #[test]
    fn sequential_reads_verify_in_one_pass_and_flips_are_caught() {
        let (mut bytes, c) =
            record(&[(Some(SegmentLabel::KeyGroup(0)), b"hello"), (Some(SegmentLabel::KeyGroup(1)), b"world")]);
        let mut v = SegmentVerifier::new("f".into(), c.clone());
        v.observe(0, b"hel").unwrap();
        v.observe(3, b"lowo").unwrap();
        v.observe(7, b"rld").unwrap();
        v.settle(&mut Cursor::new(&bytes), Some(5), true).unwrap();
        bytes[6] ^= 1;
        let mut v = SegmentVerifier::new("f".into(), c);
        let err = v.observe(5, &bytes[5..]).unwrap_err();
        assert_eq!(err.label, SegmentLabel::KeyGroup(1));
        assert!(err.to_string().contains("checksum mismatch in f, key group 1"), "{err}");
    }

    #[test]
    fn partial_and_unread_required_segments_are_re_read() {
        let (mut bytes, c) =
            record(&[(Some(SegmentLabel::KeyGroup(0)), b"hello"), (Some(SegmentLabel::KeyGroup(1)), b"world")]);
        bytes[9] ^= 0x80;
        // Read only part of key group 1: the unread tail is corrupt and settle finds it.
        let mut v = SegmentVerifier::new("f".into(), c.clone());
        v.observe(5, &bytes[5..7]).unwrap();
        let mut input = Cursor::new(&bytes);
        input.set_position(7);
        // Left for later by a per-call settle; found by the final one.
        v.settle(&mut input, None, false).unwrap();
        assert!(matches!(v.settle(&mut input, None, true), Err(VerifyError::Mismatch(_))));
        // Nothing read, but key group 1 was the one restored: verified anyway.
        let mut v = SegmentVerifier::new("f".into(), c.clone());
        assert!(matches!(v.settle(&mut Cursor::new(&bytes), Some(5), false), Err(VerifyError::Mismatch(_))));
        // A truncated stream cannot be verified: an error, never a pass.
        let mut v = SegmentVerifier::new("f".into(), c);
        assert!(matches!(v.settle(&mut Cursor::new(&bytes[..8]), Some(5), false), Err(VerifyError::Io { .. })));
    }
}
