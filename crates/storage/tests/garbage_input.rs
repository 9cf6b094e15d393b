//! Bad input never panics: WAL segments, snapshot files and the metadata file mutated at
//! random (bit flips, truncations, splices, pure garbage) make `Storage::open` return
//! `Ok` (a torn tail was cut) or an error, never panic, and an `Ok` store holds a
//! contiguous log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storage::{FileSystem, LazyFs, Storage, StorageOptions};

fn opts() -> StorageOptions {
    let mut o = StorageOptions::new(1, 2);
    o.segment_size = 1024;
    o
}

/// A data dir with several segments, a snapshot and a hard state.
fn build() -> Arc<LazyFs> {
    let fs = Arc::new(LazyFs::new());
    let (mut s, _) = Storage::open(fs.clone(), "/d", &opts()).unwrap();
    for i in 1..=60u64 {
        let e = Entry {
            term: 1 + i / 20,
            index: i,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![i as u8; (i * 7 % 90) as usize]),
        };
        s.save(
            Some(&HardState {
                term: 1 + i / 20,
                vote: Some(1),
                commit: i,
            }),
            &[e],
            None,
        )
        .unwrap();
    }
    let meta = SnapshotMeta {
        index: 30,
        term: 2,
        conf_state: ConfState {
            voters: vec![1],
            learners: vec![],
        },
    };
    let w = s.snapshot_writer().write_bytes(&meta, b"image").unwrap();
    s.compact_to(&w).unwrap();
    fs
}

fn files(fs: &LazyFs) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["/d", "/d/wal", "/d/snap"] {
        for name in fs.list_dir(Path::new(dir)).unwrap() {
            out.push(Path::new(dir).join(name));
        }
    }
    out
}

fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    match rng.gen_range(0..5) {
        0 if !bytes.is_empty() => {
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => {
            let keep = rng.gen_range(0..=bytes.len());
            bytes.truncate(keep);
        }
        2 if !bytes.is_empty() => {
            let at = rng.gen_range(0..bytes.len());
            let junk: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
            bytes.splice(at..at, junk);
        }
        3 => *bytes = (0..rng.gen_range(0..2000)).map(|_| rng.gen()).collect(),
        _ if bytes.len() > 8 => {
            // A plausible-looking length field pointing anywhere.
            let i = rng.gen_range(0..bytes.len() - 4);
            bytes[i..i + 4].copy_from_slice(&rng.gen::<u32>().to_le_bytes());
        }
        _ => bytes.clear(),
    }
}

#[test]
fn damaged_files_give_errors_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..600 {
        let fs = build();
        let all = files(&fs);
        let victim = &all[rng.gen_range(0..all.len())];
        fs.corrupt_durably(victim, |b| mutate(&mut rng, b)).unwrap();
        match Storage::open(fs.clone(), "/d", &opts()) {
            Ok((store, rec)) => {
                ok += 1;
                for (k, e) in rec.entries.iter().enumerate() {
                    assert_eq!(
                        e.index,
                        store.first_index() + k as u64,
                        "recovered log is contiguous"
                    );
                }
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(
        ok > 0 && refused > 0,
        "both outcomes were exercised ({ok} ok, {refused} refused)"
    );
}
