use std::io::{self, Read};
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::streams::{FaultInjectingStream, FileCheckpointOutputStream, MemoryCheckpointOutputStream};

fn read(handle: &StreamStateHandle) -> Vec<u8> {
    let mut out = Vec::new();
    handle.open().unwrap().read_to_end(&mut out).unwrap();
    out
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn both_copies_get_identical_bytes_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (p, s) = (dir.path().join("p"), dir.path().join("s"));
    std::fs::create_dir_all(&p).unwrap();
    std::fs::create_dir_all(&s).unwrap();
    let mut d = Box::new(DuplicatingOutputStream::with_buffer_size(
        Box::new(FileCheckpointOutputStream::new(&p, 0)),
        Box::new(FileCheckpointOutputStream::new(&s, 0)),
        8,
    ));
    d.write(b"abc").unwrap();
    assert_eq!(d.position(), 3);
    d.write(&[9u8; 20]).unwrap();
    d.write(b"z").unwrap();
    assert_eq!(d.position(), 24);
    let result = d.close_and_finalize().unwrap();
    let (primary, local) = result.into_parts();
    assert_eq!(read(&primary.unwrap()), read(&local.unwrap()));
}

#[test]
fn misaligned_streams_fail_the_secondary_at_construction() {
    let mut secondary = Box::new(MemoryCheckpointOutputStream::new());
    secondary.write(b"x").unwrap();
    let mut d = DuplicatingOutputStream::new(Box::new(MemoryCheckpointOutputStream::new()), secondary);
    let cause = d.secondary_failure().expect("misaligned").to_string();
    assert!(cause.contains("out of sync"), "{cause}");
    let e = d.close_and_get_secondary_handle().unwrap_err();
    assert!(e.to_string().contains("out of sync"), "{e}");
    assert!(std::error::Error::source(e.get_ref().unwrap()).is_some(), "the recorded cause is the source");
}

#[test]
fn secondary_failure_is_never_raised_to_the_writer() {
    let mut d = Box::new(DuplicatingOutputStream::with_buffer_size(
        Box::new(MemoryCheckpointOutputStream::new()),
        Box::new(FaultInjectingStream::new(Box::new(MemoryCheckpointOutputStream::new()), Some(0))),
        4,
    ));
    d.write(b"0123456789").unwrap();
    d.flush().unwrap();
    d.sync().unwrap();
    assert!(d.secondary_failure().unwrap().to_string().contains("injected"));
    let result = d.close_and_finalize().unwrap();
    assert_eq!(result.primary(), Some(&StreamStateHandle::Inline { bytes: b"0123456789".to_vec() }));
    assert!(result.local().is_none());
}

#[test]
fn primary_failure_is_raised_and_discards_the_secondary() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Box::new(DuplicatingOutputStream::with_buffer_size(
        Box::new(FaultInjectingStream::new(Box::new(MemoryCheckpointOutputStream::new()), Some(1))),
        Box::new(FileCheckpointOutputStream::new(dir.path(), 0)),
        4,
    ));
    d.write(b"01").unwrap(); // buffered
    assert!(d.write(b"2345").is_err()); // flushes "01" (primary op 0 succeeds), then "2345" bypasses the buffer: op 1 fails
    let e = d.write(b"6").err().or_else(|| d.flush().err());
    assert!(e.is_some(), "a primary failure is raised");
    assert!(d.close_and_finalize().is_err());
    assert!(entries(dir.path()).is_empty(), "the local file was left behind: {:?}", entries(dir.path()));
}

#[derive(Debug, Clone)]
enum Op {
    Byte(u8),
    Slice(Vec<u8>),
    Large(usize, u8),
    Flush,
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Byte),
        4 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Slice),
        1 => (1000usize..40_000, any::<u8>()).prop_map(|(n, b)| Op::Large(n, b)),
        1 => Just(Op::Flush),
        1 => Just(Op::Sync),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random writes with a secondary fault at a random operation: the primary always equals
    /// the model; the secondary is identical or failed with its cause; no file is left behind
    /// by a failed stream.
    #[test]
    fn duplicating_stream_matches_the_model(ops in proptest::collection::vec(op(), 0..60), fault in proptest::option::of(0usize..80), capacity in 1usize..5000) {
        let dir = tempfile::tempdir().unwrap();
        let (pdir, sdir) = (dir.path().join("primary"), dir.path().join("secondary"));
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::create_dir_all(&sdir).unwrap();
        let secondary = FaultInjectingStream::new(Box::new(FileCheckpointOutputStream::new(&sdir, 0)), fault);
        let secondary_ops = secondary.operations();
        let mut d = Box::new(DuplicatingOutputStream::with_buffer_size(Box::new(FileCheckpointOutputStream::new(&pdir, 0)), Box::new(secondary), capacity));
        let mut model = Vec::new();
        for op in &ops {
            match op {
                Op::Byte(b) => { d.write(&[*b]).unwrap(); model.push(*b); }
                Op::Slice(s) => { d.write(s).unwrap(); model.extend_from_slice(s); }
                Op::Large(n, b) => { let v = vec![*b; *n]; d.write(&v).unwrap(); model.extend_from_slice(&v); }
                Op::Flush => d.flush().unwrap(),
                Op::Sync => d.sync().unwrap(),
            }
            prop_assert_eq!(d.position(), model.len() as u64);
        }
        let result = d.close_and_finalize().unwrap();
        prop_assert_eq!(read(result.primary().unwrap()), model.clone());
        let attempted = secondary_ops.load(std::sync::atomic::Ordering::SeqCst);
        let faulted = fault.is_some_and(|f| f < attempted);
        match result.local() {
            Some(local) => {
                prop_assert!(!faulted, "a faulted secondary produced a handle");
                prop_assert_eq!(read(local), model);
            }
            None => {
                prop_assert!(faulted, "the secondary was lost without a fault");
                prop_assert!(entries(&sdir).is_empty(), "failed secondary left {:?}", entries(&sdir));
            }
        }
        for d in [&pdir, &sdir] {
            prop_assert!(entries(d).iter().all(|n| !n.ends_with(crate::streams::IN_PROGRESS_SUFFIX)), "{:?}", entries(d));
        }
    }
}

/// A primary that fails exactly its `n`-th operation and works again afterwards (a transient
/// fault): the duplicating stream must stay failed anyway.
#[derive(Debug)]
struct FailsOnce {
    inner: Box<dyn CheckpointOutputStream>,
    n: usize,
    seen: usize,
}

impl FailsOnce {
    fn tick(&mut self) -> io::Result<()> {
        self.seen += 1;
        if self.seen - 1 == self.n {
            return Err(io::Error::other("transient fault"));
        }
        Ok(())
    }
}

impl CheckpointOutputStream for FailsOnce {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tick()?;
        self.inner.write(bytes)
    }
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tick()?;
        self.inner.flush()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.tick()?;
        self.inner.sync()
    }
    fn close_and_get_handle(mut self: Box<Self>) -> io::Result<StreamStateHandle> {
        self.tick()?;
        self.inner.close_and_get_handle()
    }
}

/// Defect 13: after a primary failure the buffered bytes were dropped and a later close
/// returned a handle to an incomplete (here: empty) primary.
#[test]
fn a_primary_failure_fails_the_stream_for_good() {
    for n in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (p, s) = (dir.path().join("p"), dir.path().join("s"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::create_dir_all(&s).unwrap();
        let primary = FailsOnce { inner: Box::new(FileCheckpointOutputStream::new(&p, 0)), n, seen: 0 };
        let mut d = Box::new(DuplicatingOutputStream::with_buffer_size(
            Box::new(primary),
            Box::new(FileCheckpointOutputStream::new(&s, 0)),
            8,
        ));
        let mut failed = false;
        for chunk in [&b"abcde"[..], b"fghij", b"klmnopqrstuvwxyz", b"12"] {
            failed |= d.write(chunk).is_err();
        }
        failed |= d.flush().is_err();
        assert!(failed, "fault {n} was never raised");
        let e = d.close_and_finalize().unwrap_err().to_string();
        assert!(e.contains("transient fault"), "fault {n}: {e}");
        assert!(entries(&p).is_empty() && entries(&s).is_empty(), "fault {n}: files left");
    }
}
