use std::io::Read;

use super::*;

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn small_state_stays_inline_and_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Box::new(FileCheckpointOutputStream::new(dir.path(), 16));
    s.write(b"0123456789").unwrap();
    assert_eq!(s.position(), 10);
    assert!(files_in(dir.path()).is_empty());
    let handle = s.close_and_get_handle().unwrap();
    assert_eq!(handle, StreamStateHandle::Inline { bytes: b"0123456789".to_vec() });
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn large_state_becomes_a_complete_file_only_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Box::new(FileCheckpointOutputStream::new(dir.path(), 4));
    s.write(b"abc").unwrap();
    s.write(b"defgh").unwrap();
    s.sync().unwrap();
    let during = files_in(dir.path());
    assert_eq!(during.len(), 1);
    assert!(during[0].ends_with(file::IN_PROGRESS_SUFFIX), "{during:?}");
    let handle = s.close_and_get_handle().unwrap();
    let StreamStateHandle::File { path, size, .. } = &handle else { panic!("expected a file handle, got {handle:?}") };
    assert_eq!(*size, 8);
    assert_eq!(files_in(dir.path()), vec![path.file_name().unwrap().to_string_lossy().into_owned()]);
    let mut content = Vec::new();
    handle.open().unwrap().read_to_end(&mut content).unwrap();
    assert_eq!(content, b"abcdefgh");
}

#[test]
fn dropped_stream_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Box::new(FileCheckpointOutputStream::new(dir.path(), 0));
    s.write(&[7u8; 100_000]).unwrap();
    assert_eq!(files_in(dir.path()).len(), 1);
    drop(s);
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn missing_directory_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone");
    let mut s = Box::new(FileCheckpointOutputStream::new(&missing, 0));
    let err = s.write(b"x").unwrap_err().to_string();
    assert!(err.contains("gone"), "{err}");
}

#[test]
fn factory_separates_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let f = FileStreamFactory::new(dir.path().join("chk-1"), dir.path().join("shared"), 0).unwrap();
    for scope in [StateScope::Exclusive, StateScope::Shared] {
        let mut s = f.create_output_stream(scope).unwrap();
        s.write(b"x").unwrap();
        s.close_and_get_handle().unwrap();
    }
    assert_eq!(files_in(&dir.path().join("chk-1")).len(), 1);
    assert_eq!(files_in(&dir.path().join("shared")).len(), 1);
}

#[test]
fn memory_stream_enforces_its_limit() {
    let mut s = Box::new(MemoryCheckpointOutputStream::with_max_size(4));
    s.write(b"abcd").unwrap();
    assert!(s.write(b"e").is_err());
    assert_eq!(s.close_and_get_handle().unwrap(), StreamStateHandle::Inline { bytes: b"abcd".to_vec() });
}
