//! Disk full, on a real (small) filesystem: a 2 MiB tmpfs that this test mounts and
//! unmounts. The WAL fills it, the write fails with a clear "disk full" error, nothing
//! already acknowledged is damaged (checked by reopening), and once space is freed the
//! same store carries on. Needs root (to mount); without it the test FAILS, it does not
//! skip: an untested disk-full path is not a passing one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};
use storage::{RealFs, Storage, StorageError, StorageOptions};

/// Unmounts on drop, so a failing assertion never leaves a mount behind.
struct Mount {
    point: PathBuf,
}

impl Mount {
    fn tmpfs(point: &Path, size: &str) -> Mount {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(point)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8): {e}; this test needs root and mount"));
        assert!(
            out.status.success(),
            "mounting a tmpfs at {} failed ({}): this test needs root (CAP_SYS_ADMIN); it must not be skipped",
            point.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Mount {
            point: point.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.point)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // Busy (a file still open after a panic): detach it lazily instead.
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![(index % 251) as u8; 1024]),
    }
}

fn opts() -> StorageOptions {
    let mut o = StorageOptions::new(1, 0xf011);
    o.segment_size = 128 * 1024;
    o
}

fn check_log(store: &Storage, last: u64) {
    assert_eq!(store.last_index(), last);
    let first = store.first_index();
    for e in store.entries(first, last + 1).unwrap() {
        assert_eq!(e, entry(e.index), "entry {} damaged", e.index);
    }
}

#[test]
fn disk_full_fails_cleanly_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(tmp.path(), "2m");
    let dir = mount.point.join("data");
    let ballast = mount.point.join("ballast");
    std::fs::write(&ballast, vec![0u8; 512 * 1024]).unwrap();

    let (mut store, _) = Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();
    let mut acked = 0u64;
    let err = loop {
        let batch: Vec<Entry> = (acked + 1..=acked + 8).map(entry).collect();
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: acked + 8,
        };
        match store.save(Some(&hs), &batch, None) {
            Ok(()) => acked += 8,
            Err(e) => break e,
        }
        assert!(acked < 10_000, "a 2 MiB filesystem never filled up");
    };
    let msg = err.to_string();
    assert!(err.is_no_space(), "expected a disk-full error, got: {msg}");
    assert!(
        msg.contains("disk full") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
    assert!(acked > 100, "only {acked} entries fit");
    println!("disk full after {acked} entries: {msg}");

    // Retrying (a bigger batch) while the disk is still full fails the same way and
    // changes nothing.
    let big: Vec<Entry> = (acked + 1..=acked + 64).map(entry).collect();
    assert!(store.save(None, &big, None).unwrap_err().is_no_space());
    check_log(&store, acked);
    // A snapshot cannot be written either, and leaves no temp file behind.
    let meta = SnapshotMeta {
        index: acked,
        term: 1,
        conf_state: ConfState {
            voters: vec![1],
            learners: vec![],
        },
    };
    let snap_err = store
        .snapshot_writer()
        .write_bytes(&meta, &vec![9u8; 1 << 20])
        .unwrap_err();
    assert!(
        matches!(snap_err, StorageError::NoSpace { .. }),
        "{snap_err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.join("snap")).unwrap().count(),
        0,
        "no snapshot debris"
    );

    // Nothing durable was damaged: a restart (on the still-full disk) recovers every ack.
    let (store, rec) = store.reopen().unwrap();
    check_log(&store, acked);
    assert_eq!(rec.hard_state.commit, acked);

    // Space returns: the same store carries on, and so does a restart after it.
    std::fs::remove_file(&ballast).unwrap();
    let mut store = store;
    for _ in 0..20 {
        let batch: Vec<Entry> = (acked + 1..=acked + 8).map(entry).collect();
        store
            .save(
                Some(&HardState {
                    term: 1,
                    vote: Some(1),
                    commit: acked + 8,
                }),
                &batch,
                None,
            )
            .unwrap();
        acked += 8;
    }
    let written = store
        .snapshot_writer()
        .write_bytes(&meta, b"image")
        .unwrap();
    store.compact_to(&written).unwrap();
    let (store, rec) = store.reopen().unwrap();
    check_log(&store, acked);
    assert_eq!(rec.snapshot.unwrap().meta.index, meta.index);
    drop(store);
    drop(mount);
    assert!(!is_mounted(tmp.path()), "the guard unmounted the tmpfs");
}

fn is_mounted(point: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let p = point.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&p))
}
