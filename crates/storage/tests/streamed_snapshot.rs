//! `SnapshotWriter::write_with`: an image written as it is produced, in many small writes,
//! is the same snapshot as one written from memory; a producer that fails leaves nothing
//! behind and is named as the cause, not the disk.

use std::sync::Arc;

use raft::{ConfState, SnapshotMeta};
use storage::{RealFs, SnapshotWriter, Storage, StorageError, StorageOptions};

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 1,
        conf_state: ConfState {
            voters: vec![1],
            learners: vec![],
        },
    }
}

/// The snapshot writer of a new store in `dir`.
fn snapshot_writer(dir: &std::path::Path) -> SnapshotWriter {
    let (store, _) = Storage::open(Arc::new(RealFs), dir, &StorageOptions::new(1, 9)).unwrap();
    store.snapshot_writer()
}

#[test]
fn a_streamed_image_reads_back_as_written_and_maps_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = snapshot_writer(tmp.path());
    // 3 MiB in writes of 1 to 70,000 bytes, through the 1 MiB buffer.
    let image: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let written = writer
        .write_with(&meta(10), &mut |sink| {
            let mut rest = &image[..];
            let mut size = 1;
            while !rest.is_empty() {
                let n = size.min(rest.len());
                sink.write_all(&rest[..n])?;
                rest = &rest[n..];
                size = if size > 70_000 { 1 } else { size * 7 };
            }
            // One piece larger than the buffer, which goes straight through.
            sink.write_all(&image[..(1 << 20) + 5])
        })
        .unwrap();
    let mut expected = image.clone();
    expected.extend_from_slice(&image[..(1 << 20) + 5]);
    assert_eq!(&writer.read_image(&written).unwrap()[..], &expected[..]);
    let mapped = writer.map_image(&written).unwrap().expect("RealFs maps");
    assert_eq!(&mapped[..], &expected[..]);
    let from_memory = writer.write_bytes(&meta(11), &expected).unwrap();
    assert_eq!(from_memory.file_size, written.file_size);
}

#[test]
fn a_failing_producer_is_named_and_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = snapshot_writer(tmp.path());
    let good = writer.write_bytes(&meta(9), b"an earlier image").unwrap();
    let dir = good.path.parent().unwrap().to_path_buf();
    let err = writer
        .write_with(&meta(10), &mut |sink| {
            sink.write_all(&[7u8; 3 << 20])?;
            Err(std::io::Error::other("the store changed its mind"))
        })
        .unwrap_err();
    match &err {
        StorageError::Io { op, .. } => assert_eq!(*op, "produce snapshot image", "{err}"),
        other => panic!("unexpected error {other}"),
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![good.path], "only the earlier snapshot stays");
}
