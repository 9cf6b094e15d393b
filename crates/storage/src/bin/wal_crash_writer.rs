//! `wal-crash-writer <data-dir> [max-batches]`: the victim of the SIGKILL crash test.
//!
//! Opens (or creates) a data dir, then appends batches of entries, each batch with a hard
//! state whose commit index is the batch's last entry, and prints `acked <index>` after
//! each batch is durable — that line is the acknowledgement the test holds us to. Every
//! 25 batches it snapshots and compacts, so kills also land in snapshot writes and segment
//! purges. Entry payloads are a pure function of the index ([`payload`]), so the test can
//! tell a recovered entry from an invented one.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};
use storage::{RealFs, Storage, StorageOptions};

/// Must match the test's copy: what entry `index` holds.
fn payload(index: u64) -> Vec<u8> {
    let len = 16 + (index * 131 % 700) as usize;
    format!("entry {index};")
        .bytes()
        .cycle()
        .take(len)
        .collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("wal-crash-writer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: wal-crash-writer <data-dir> [max-batches]")?;
    let max_batches: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let mut opts = StorageOptions::new(1, 0xc4a5);
    opts.segment_size = 16 * 1024;
    let (mut store, recovered) = Storage::open(Arc::new(RealFs), &dir, &opts)?;
    let mut next = store.last_index() + 1;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "recovered {}", store.last_index())?;
    drop(recovered);
    // A cheap deterministic batch-size sequence (no RNG needed: kills supply the chaos).
    for batch_no in 0..max_batches {
        let n = 1 + (next * 7 + batch_no) % 16;
        let entries: Vec<Entry> = (next..next + n)
            .map(|index| Entry {
                term: 1,
                index,
                kind: EntryKind::Normal,
                data: Bytes::from(payload(index)),
            })
            .collect();
        let last = next + n - 1;
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: last,
        };
        store.save(Some(&hs), &entries, None)?;
        writeln!(out, "acked {last}")?;
        out.flush()?;
        next = last + 1;
        if batch_no % 25 == 24 {
            let meta = SnapshotMeta {
                index: last,
                term: 1,
                conf_state: ConfState {
                    voters: vec![1],
                    learners: vec![],
                },
            };
            let written = store
                .snapshot_writer()
                .write_bytes(&meta, format!("image at {last}").as_bytes())?;
            store.compact_to(&written)?;
        }
    }
    Ok(())
}
