//! `Storage::map_snapshot`: the current snapshot with its image mapped from its file, the
//! same bytes as the copy read at open, for the Raft core to keep (after a restart, and
//! after a snapshot received from the leader is durable) without a heap copy of the store.

use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, HardState, Snapshot, SnapshotMeta};
use storage::{LazyFs, RealFs, Storage, StorageOptions};

fn received(index: u64, image: &[u8]) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term: 2,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![],
            },
        },
        data: Bytes::copy_from_slice(image),
    }
}

fn hard_state(commit: u64) -> HardState {
    HardState {
        term: 2,
        vote: Some(2),
        commit,
    }
}

#[test]
fn a_received_snapshot_maps_to_the_bytes_received_and_read_at_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StorageOptions::new(1, 9);
    let (mut store, _) = Storage::open(Arc::new(RealFs), tmp.path(), &opts).unwrap();
    assert!(
        store.map_snapshot().unwrap().is_none(),
        "no snapshot, nothing mapped"
    );
    let image: Vec<u8> = (0..(2 << 20) + 17).map(|i| (i % 241) as u8).collect();
    let first = received(40, b"an older image");
    store
        .save(Some(&hard_state(40)), &[], Some(&first))
        .unwrap();
    let snap = received(90, &image);
    store.save(Some(&hard_state(90)), &[], Some(&snap)).unwrap();

    let mapped = store.map_snapshot().unwrap().expect("RealFs maps files");
    assert_eq!(
        mapped.meta, snap.meta,
        "the current snapshot, not the older one"
    );
    assert_eq!(&mapped.data[..], &image[..]);
    drop(store);

    let (store, recovered) = Storage::open(Arc::new(RealFs), tmp.path(), &opts).unwrap();
    let read_at_open = recovered.snapshot.expect("recovered snapshot");
    let mapped = store.map_snapshot().unwrap().expect("RealFs maps files");
    assert_eq!(mapped.meta, read_at_open.meta);
    assert_eq!(mapped.data, read_at_open.data);
}

#[test]
fn a_filesystem_that_maps_nothing_leaves_the_caller_its_copy() {
    let fs = Arc::new(LazyFs::new());
    let dir = std::path::Path::new("/data");
    let opts = StorageOptions::new(1, 9);
    let (mut store, _) = Storage::open(fs, dir, &opts).unwrap();
    store
        .save(Some(&hard_state(7)), &[], Some(&received(7, b"image")))
        .unwrap();
    assert!(store.map_snapshot().unwrap().is_none());
}

#[test]
fn a_file_that_holds_another_snapshot_is_named_not_mapped() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StorageOptions::new(1, 9);
    let (mut store, _) = Storage::open(Arc::new(RealFs), tmp.path(), &opts).unwrap();
    store
        .save(
            Some(&hard_state(30)),
            &[],
            Some(&received(30, b"the image at 30")),
        )
        .unwrap();
    // Replace the current snapshot's file by one holding another snapshot (a stray copy,
    // or an operator's mistake): its header names index 31.
    let other = store
        .snapshot_writer()
        .write_bytes(&received(31, b"x").meta, b"the image at 31")
        .unwrap();
    let current = other
        .path
        .with_file_name(format!("{:016x}-{:016x}.snap", 2, 30));
    assert!(
        current.is_file(),
        "{} is the current snapshot",
        current.display()
    );
    std::fs::rename(&other.path, &current).unwrap();
    let err = store.map_snapshot().unwrap_err().to_string();
    assert!(
        err.contains(&current.display().to_string()) && err.contains("index 31"),
        "{err}"
    );
}
