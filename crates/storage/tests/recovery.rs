//! Recovery from damaged files, on real files: torn tails are cut, everything else stops
//! the member with the file and offset in the message.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};
use storage::{RealFs, Storage, StorageError, StorageOptions};

mod common;
use common::{as_format_1, frames, BATCH_END, BATCH_END_LEN};

fn opts() -> StorageOptions {
    let mut o = StorageOptions::new(1, 0xabc);
    o.segment_size = 4096;
    o
}

fn entry(index: u64) -> Entry {
    Entry {
        term: 2,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![index as u8; 40 + (index as usize % 50)]),
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Where the records of a segment end (the WAL keeps zeros written ahead of them).
fn records_end(seg: &Path) -> u64 {
    frames(&fs::read(seg).unwrap())
        .last()
        .map_or(0, |(at, f)| (at + f.len()) as u64)
}

/// A data dir with 3+ segments: entries 1..=n-1 with a hard state, then entry `n` alone as
/// the final record. Returns (dir, n, final record offset, last segment).
fn build(root: &Path) -> (PathBuf, u64, u64, PathBuf) {
    let dir = root.join("orig");
    let (mut s, _) = Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();
    let mut next = 1;
    while s.wal_segment_count() < 3 {
        let batch: Vec<Entry> = (next..next + 5).map(entry).collect();
        next += 5;
        s.save(
            Some(&HardState {
                term: 2,
                vote: Some(1),
                commit: next - 1,
            }),
            &batch,
            None,
        )
        .unwrap();
    }
    let last_seg = segments(&dir).pop().unwrap();
    let final_offset = records_end(&last_seg);
    s.save(None, &[entry(next)], None).unwrap();
    (dir, next, final_offset, last_seg)
}

#[test]
fn truncating_the_final_record_at_every_byte_recovers_exactly_the_complete_prefix() {
    let root = tempfile::tempdir().unwrap();
    let (orig, n, final_offset, last_seg) = build(root.path());
    let full_len = records_end(&last_seg);
    // The final batch: entry n, then its batch end.
    let entry_end = full_len - BATCH_END_LEN;
    assert!(
        entry_end - final_offset > 50,
        "the final record is a real entry"
    );
    for cut in final_offset..=full_len {
        let dir = root.path().join(format!("cut-{cut}"));
        copy_dir(&orig, &dir);
        let seg = dir.join("wal").join(last_seg.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (store, rec) = Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();
        // An intact entry stays even without its batch end (it was not acknowledged, and
        // keeping it is as safe as dropping it).
        let want_last = if cut >= entry_end { n } else { n - 1 };
        assert_eq!(store.last_index(), want_last, "cut at {cut}");
        let want: Vec<Entry> = (1..=want_last).map(entry).collect();
        assert_eq!(rec.entries, want, "cut at {cut}");
        // The torn bytes are physically gone, so new appends are not stranded behind them.
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            if cut == full_len {
                full_len
            } else if cut >= entry_end {
                entry_end
            } else {
                final_offset
            }
        );
        if cut % 16 == 0 {
            let mut store = store;
            store.save(None, &[entry(want_last + 1)], None).unwrap();
            let (store, _) = store.reopen().unwrap();
            assert_eq!(
                store.last_index(),
                want_last + 1,
                "append after cut at {cut}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn zeroed_or_garbled_tail_is_torn_not_corrupt() {
    let root = tempfile::tempdir().unwrap();
    let (orig, n, final_offset, last_seg) = build(root.path());
    for (name, damage) in [("zeros", 0x00u8), ("garbage", 0xA5u8)] {
        let dir = root.path().join(name);
        copy_dir(&orig, &dir);
        let seg = dir.join("wal").join(last_seg.file_name().unwrap());
        let mut bytes = fs::read(&seg).unwrap();
        for b in &mut bytes[final_offset as usize + 4..] {
            *b = damage;
        }
        bytes.extend_from_slice(&[damage; 300]);
        fs::write(&seg, bytes).unwrap();
        let (store, _) = Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();
        assert_eq!(store.last_index(), n - 1, "{name}");
    }
}

/// Everything `f` logs through `tracing`, as text.
fn logged_by<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// The warning for a cut tail says what is known (file, offset, bytes, last index kept,
/// where acknowledged entries would still be) and does not claim the dropped bytes were
/// never acknowledged: damage to fsynced final records looks exactly like a torn write.
#[test]
fn a_cut_tail_is_reported_with_what_is_known_and_no_claim_about_acknowledgement() {
    let root = tempfile::tempdir().unwrap();
    let (orig, n, final_offset, last_seg) = build(root.path());
    let dir = root.path().join("cut");
    copy_dir(&orig, &dir);
    let seg = dir.join("wal").join(last_seg.file_name().unwrap());
    // Cut 7 bytes into the final entry (before its batch end).
    let len = records_end(&seg) - BATCH_END_LEN;
    let dropped = 7;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - dropped)
        .unwrap();

    let (opened, log) = logged_by(|| Storage::open(Arc::new(RealFs), &dir, &opts()));
    let (store, _) = opened.unwrap();
    assert_eq!(store.last_index(), n - 1);
    for expected in [
        format!("WAL segment {}", seg.display()),
        format!(
            "{} byte(s) past the last intact record",
            len - dropped - final_offset
        ),
        format!("byte offset {final_offset}"),
        format!("last recovered log index is {}", n - 1),
        "runs past the end of the file".to_string(),
        "cluster's other members hold them".to_string(),
    ] {
        assert!(log.contains(&expected), "missing {expected:?} in:\n{log}");
    }
    assert!(log.contains("WARN"), "{log}");
    assert!(!log.contains("never acknowledged"), "{log}");
}

fn open_err(dir: &Path) -> StorageError {
    match Storage::open(Arc::new(RealFs), dir, &opts()) {
        Ok(_) => panic!("opening {} should have failed", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn a_flipped_bit_in_an_early_record_stops_startup_with_file_and_offset() {
    let root = tempfile::tempdir().unwrap();
    let (orig, _, _, _) = build(root.path());
    let first_seg = segments(&orig)[0].clone();
    // Walk the frames ([len u32][crc u32][body]) to find the 4th record of the segment.
    let bytes = fs::read(&first_seg).unwrap();
    let mut at = 0usize;
    for _ in 0..4 {
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    let record = at as u64;
    // Flip one bit inside its payload, then one in its length field.
    for (name, target) in [("payload", at + 20), ("length", at + 1)] {
        let dir = root.path().join(name);
        copy_dir(&orig, &dir);
        let seg = dir.join("wal").join(first_seg.file_name().unwrap());
        let mut bytes = fs::read(&seg).unwrap();
        bytes[target] ^= 0x04;
        fs::write(&seg, bytes).unwrap();
        let err = open_err(&dir);
        let msg = err.to_string();
        assert!(
            matches!(err, StorageError::CorruptWal { .. }),
            "{name}: {msg}"
        );
        assert!(
            msg.contains(&seg.display().to_string()),
            "{name}: message names the file: {msg}"
        );
        assert!(
            msg.contains(&format!("byte offset {record}")),
            "{name}: message gives the offset: {msg}"
        );
        assert!(
            msg.to_lowercase().contains("new member id"),
            "{name}: message says what to do: {msg}"
        );
    }
}

#[test]
fn damage_in_the_last_segment_followed_by_valid_records_is_corruption() {
    let root = tempfile::tempdir().unwrap();
    let (orig, _, final_offset, last_seg) = build(root.path());
    let dir = root.path().join("d");
    copy_dir(&orig, &dir);
    let seg = dir.join("wal").join(last_seg.file_name().unwrap());
    let mut bytes = fs::read(&seg).unwrap();
    // Inside the hard state of the batch before the final one (its last record is the
    // batch end): the final batch's end says that batch was synced.
    bytes[(final_offset - BATCH_END_LEN) as usize - 10] ^= 0x80;
    fs::write(&seg, bytes).unwrap();
    let msg = open_err(&dir).to_string();
    assert!(
        msg.contains("damage, not a torn write")
            && msg.contains("was synced")
            && msg.contains(&seg.display().to_string()),
        "{msg}"
    );
}

/// Records are written over zeros, so a power cut can keep a later page of the last batch
/// without an earlier one: intact records after a broken one, which in an append-only log
/// would be damage. Here the final entry's first bytes are lost and its batch end
/// survived; the batch end begins at the broken record, so nothing proves that batch was
/// synced: it is cut, with the warning, and the member starts.
#[test]
fn a_torn_batch_whose_later_page_survived_is_cut_not_corruption() {
    let root = tempfile::tempdir().unwrap();
    let (orig, n, final_offset, last_seg) = build(root.path());
    for (name, lost) in [("zeros", 0x00u8), ("old bytes", 0x5Au8)] {
        let dir = root.path().join(name);
        copy_dir(&orig, &dir);
        let seg = dir.join("wal").join(last_seg.file_name().unwrap());
        let mut bytes = fs::read(&seg).unwrap();
        let end = records_end(&seg) as usize;
        assert_eq!(bytes[end - BATCH_END_LEN as usize + 8], BATCH_END);
        for b in &mut bytes[final_offset as usize..final_offset as usize + 24] {
            *b = lost;
        }
        fs::write(&seg, &bytes).unwrap();
        let (opened, log) = logged_by(|| Storage::open(Arc::new(RealFs), &dir, &opts()));
        let (store, rec) = opened.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(store.last_index(), n - 1, "{name}");
        assert_eq!(rec.entries, (1..n).map(entry).collect::<Vec<_>>(), "{name}");
        assert!(
            log.contains("WARN") && log.contains("cutting them off"),
            "{name}: {log}"
        );
        // The member writes on from there, and a restart finds it all.
        let mut store = store;
        store.save(None, &[entry(n)], None).unwrap();
        let (store, rec) = store.reopen().unwrap();
        assert_eq!(store.last_index(), n, "{name}");
        assert_eq!(
            rec.entries,
            (1..=n).map(entry).collect::<Vec<_>>(),
            "{name}"
        );
    }
}

/// A data dir written by a raftkv before WAL format 2 (no batch ends, no zeros ahead):
/// it opens with everything in it, writes go to a new format-2 segment, and a restart
/// finds both.
#[test]
fn a_data_dir_in_wal_format_1_opens_and_writes_on_in_format_2() {
    let root = tempfile::tempdir().unwrap();
    let (orig, n, _, _) = build(root.path());
    let dir = root.path().join("v1");
    copy_dir(&orig, &dir);
    for seg in segments(&dir) {
        let v1 = as_format_1(&fs::read(&seg).unwrap());
        fs::write(&seg, v1).unwrap();
    }
    let before = segments(&dir).len();
    let (mut store, rec) = Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();
    assert_eq!(rec.entries, (1..=n).map(entry).collect::<Vec<_>>());
    assert_eq!(
        segments(&dir).len(),
        before + 1,
        "a new segment for the writes"
    );
    store.save(None, &[entry(n + 1)], None).unwrap();
    let (store, rec) = store.reopen().unwrap();
    assert_eq!(store.last_index(), n + 1);
    assert_eq!(rec.entries, (1..=n + 1).map(entry).collect::<Vec<_>>());
}

#[test]
fn a_missing_segment_stops_startup() {
    let root = tempfile::tempdir().unwrap();
    let (orig, _, _, _) = build(root.path());
    for which in [0usize, 1] {
        let dir = root.path().join(format!("m{which}"));
        copy_dir(&orig, &dir);
        let seg = dir
            .join("wal")
            .join(segments(&orig)[which].file_name().unwrap());
        fs::remove_file(&seg).unwrap();
        let err = open_err(&dir);
        assert!(matches!(err, StorageError::MissingWal { .. }), "{err}");
        println!("segment {which} missing: {err}");
    }
}

#[test]
fn a_damaged_snapshot_stops_startup_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    let (mut s, _) = Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();
    s.save(
        Some(&HardState {
            term: 2,
            vote: None,
            commit: 30,
        }),
        &(1..=30).map(entry).collect::<Vec<_>>(),
        None,
    )
    .unwrap();
    let meta = SnapshotMeta {
        index: 30,
        term: 2,
        conf_state: ConfState {
            voters: vec![1],
            learners: vec![],
        },
    };
    let w = s
        .snapshot_writer()
        .write_bytes(&meta, &[7u8; 5000])
        .unwrap();
    s.compact_to(&w).unwrap();
    drop(s);
    let mut bytes = fs::read(&w.path).unwrap();
    bytes[2500] ^= 1;
    fs::write(&w.path, bytes).unwrap();
    let err = open_err(&dir);
    let msg = err.to_string();
    assert!(matches!(err, StorageError::CorruptSnapshot { .. }), "{msg}");
    assert!(
        msg.contains(&w.path.display().to_string()) && msg.contains("checksum"),
        "{msg}"
    );
    fs::remove_file(&w.path).unwrap();
    assert!(open_err(&dir).to_string().contains("missing"));
}

#[test]
fn identity_and_missing_state_are_checked() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    let fs_ = Arc::new(RealFs);
    Storage::open(fs_.clone(), &dir, &opts()).unwrap();
    let mut other_cluster = opts();
    other_cluster.cluster_id = 0xdef;
    assert!(matches!(
        Storage::open(fs_.clone(), &dir, &other_cluster),
        Err(StorageError::ClusterMismatch { .. })
    ));
    let mut other_member = opts();
    other_member.member_id = 2;
    assert!(matches!(
        Storage::open(fs_.clone(), &dir, &other_member),
        Err(StorageError::MemberMismatch { .. })
    ));

    // A newer format (edit the file and fix its checksum as a newer writer would).
    let meta_path = dir.join("raftkv.meta");
    let text = fs::read_to_string(&meta_path).unwrap();
    let body = text[..text.rfind("crc=").unwrap()].replace("format=1", "format=9");
    fs::write(
        &meta_path,
        format!("{body}crc={:#010x}\n", crc32c::crc32c(body.as_bytes())),
    )
    .unwrap();
    let msg = Storage::open(fs_.clone(), &dir, &opts())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("format version 9") && msg.contains("newer"),
        "{msg}"
    );

    // A wiped volume for a member that should have state.
    let mut restarting = opts();
    restarting.expect_existing = true;
    let empty = root.path().join("wiped");
    fs::create_dir_all(&empty).unwrap();
    let err = Storage::open(fs_.clone(), &empty, &restarting).unwrap_err();
    assert!(matches!(err, StorageError::MissingState { .. }), "{err}");
    assert!(err.to_string().contains("new member id"), "{err}");
    // The message names the missing file by its full path.
    let missing = format!(
        "metadata file {} is missing",
        empty.join("raftkv.meta").display()
    );
    assert!(err.to_string().contains(&missing), "{err}");
    let gone = root.path().join("gone");
    let err = Storage::open(fs_.clone(), &gone, &restarting).unwrap_err();
    assert!(
        err.to_string()
            .contains(&gone.join("raftkv.meta").display().to_string()),
        "{err}"
    );

    // Metadata present but the WAL gone.
    let d2 = root.path().join("d2");
    Storage::open(fs_.clone(), &d2, &opts()).unwrap();
    fs::remove_dir_all(d2.join("wal")).unwrap();
    let err = Storage::open(fs_.clone(), &d2, &opts()).unwrap_err();
    assert!(matches!(err, StorageError::MissingWal { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&d2.join("raftkv.meta").display().to_string()),
        "{err}"
    );

    // Someone else's files and no metadata.
    let foreign = root.path().join("foreign");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("important.db"), b"not ours").unwrap();
    let err = Storage::open(fs_.clone(), &foreign, &opts()).unwrap_err();
    assert!(matches!(err, StorageError::ForeignDir { .. }), "{err}");
    let missing = format!("{} is missing", foreign.join("raftkv.meta").display());
    assert!(err.to_string().contains(&missing), "{err}");
    assert_eq!(fs::read(foreign.join("important.db")).unwrap(), b"not ours");
}

#[test]
fn a_data_dir_is_used_by_one_store_at_a_time() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    let (first, _) = Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();
    let mut impatient = opts();
    impatient.lock_wait = std::time::Duration::from_millis(50);
    let err = Storage::open(Arc::new(RealFs), &dir, &impatient).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    drop(first);
    Storage::open(Arc::new(RealFs), &dir, &opts()).unwrap();

    // Across processes: while the writer runs, the dir is locked; once it is killed
    // (SIGKILL: no chance to clean up) the kernel releases the lock.
    use std::io::{BufRead, BufReader};
    let wdir = root.path().join("w");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wal-crash-writer"))
        .arg(&wdir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first_ack = lines.find(|l| l.as_ref().map(|l| l.starts_with("acked")).unwrap_or(true));
    assert!(
        matches!(first_ack, Some(Ok(_))),
        "the writer acknowledged a batch"
    );
    let mut wopts = StorageOptions::new(1, 0xc4a5);
    wopts.segment_size = 16 * 1024;
    wopts.lock_wait = std::time::Duration::from_millis(50);
    let err = Storage::open(Arc::new(RealFs), &wdir, &wopts).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
    Storage::open(Arc::new(RealFs), &wdir, &wopts).unwrap();
}
