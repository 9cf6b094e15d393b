//! SIGKILL crash test with real processes and real files.
//!
//! `wal-crash-writer` appends batches to one data dir and prints `acked <index>` after each
//! durable batch. We kill it with SIGKILL at random moments (after a random number of acks
//! plus a random sub-millisecond jitter, or even before it finished recovering), 200+ times
//! on the same data dir, and after every kill open the dir ourselves and check:
//! every acknowledged entry is there, in order, with the content the writer gave it; the
//! commit index covers every ack; nothing beyond what the writer could have appended exists.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storage::{RealFs, Storage, StorageOptions};

/// Same function as in the writer.
fn payload(index: u64) -> Vec<u8> {
    let len = 16 + (index * 131 % 700) as usize;
    format!("entry {index};")
        .bytes()
        .cycle()
        .take(len)
        .collect()
}

/// The most entries one batch can hold (see the writer).
const MAX_BATCH: u64 = 16;

/// A fresh seed per run (printed, so a failure can be replayed).
fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn kills() -> usize {
    std::env::var("RAFTKV_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[test]
fn acknowledged_entries_survive_repeated_sigkill() {
    let seed: u64 = std::env::var("RAFTKV_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(time_seed);
    println!("seed {seed} (replay with RAFTKV_CRASH_SEED={seed})");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut opts = StorageOptions::new(1, 0xc4a5);
    opts.segment_size = 16 * 1024;

    let started = Instant::now();
    let mut max_acked = 0u64;
    // What the previous recovery found: the next writer starts from there. A round can add
    // at most one unacknowledged batch past max(this, max_acked): the one durable when
    // the kill landed between its fsync and its `acked` line. (Those can pile up over
    // rounds in which no ack got out, which is why the bound moves with `prev_last`.)
    let mut prev_last = 0u64;
    let mut killed_mid_run = 0;
    for round in 0..kills() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-crash-writer"))
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wal-crash-writer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wait_for_acks = rng.gen_range(0..16u32);
        let mut acked_now = 0;
        let mut writer_exited = false;
        while acked_now < wait_for_acks {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(i) = line.strip_prefix("acked ") {
                        max_acked = max_acked.max(i.parse().unwrap());
                        acked_now += 1;
                    }
                }
                _ => {
                    writer_exited = true;
                    break;
                }
            }
        }
        assert!(
            !writer_exited,
            "round {round}: the writer exited by itself: {:?}",
            child.wait()
        );
        // Random jitter so the kill lands anywhere inside the next batch, not just after a
        // print. (Not synchronisation: nothing waits for this to elapse.)
        let jitter = rng.gen_range(0..3000u64);
        std::thread::sleep(Duration::from_micros(jitter));
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_mid_run += 1;
        }
        // Acks printed before the kill are still in the pipe: they count too.
        for line in lines.map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("acked ") {
                max_acked = max_acked.max(i.parse().unwrap());
            }
        }
        prev_last = verify(&dir, &opts, max_acked, prev_last, round);
    }
    println!(
        "{} kills ({killed_mid_run} by signal) in {:.1?}; {max_acked} entries acknowledged",
        kills(),
        started.elapsed()
    );
    assert!(
        max_acked > 1000,
        "the writer made too little progress to mean anything"
    );
    assert!(
        killed_mid_run >= kills() * 9 / 10,
        "most kills must land while the writer runs"
    );
}

/// Checks the recovered dir; returns its last index.
fn verify(
    dir: &std::path::Path,
    opts: &StorageOptions,
    max_acked: u64,
    prev_last: u64,
    round: usize,
) -> u64 {
    if max_acked == 0 && !dir.join("raftkv.meta").exists() {
        return 0; // Killed before it ever initialised the dir.
    }
    let (store, rec) = match Storage::open(Arc::new(RealFs), dir, opts) {
        Ok(x) => x,
        Err(e) => panic!("round {round}: recovery failed: {e}"),
    };
    let snap_index = rec.snapshot.as_ref().map(|s| s.meta.index).unwrap_or(0);
    if let Some(s) = &rec.snapshot {
        assert_eq!(
            &s.data[..],
            format!("image at {}", s.meta.index).as_bytes(),
            "round {round}: snapshot image"
        );
    }
    let last = store.last_index();
    assert!(
        last >= max_acked,
        "round {round}: acked up to {max_acked} but recovered only up to {last}"
    );
    assert!(
        last <= max_acked.max(prev_last) + MAX_BATCH,
        "round {round}: recovered up to {last}, more than one unacknowledged batch past {}",
        max_acked.max(prev_last)
    );
    assert!(
        rec.hard_state.commit >= max_acked,
        "round {round}: commit {} < acked {max_acked}",
        rec.hard_state.commit
    );
    for (offset, e) in rec.entries.iter().enumerate() {
        assert_eq!(
            e.index,
            snap_index + 1 + offset as u64,
            "round {round}: entries out of order"
        );
        assert_eq!(e.term, 1);
        assert_eq!(
            &e.data[..],
            &payload(e.index)[..],
            "round {round}: entry {} has the wrong content",
            e.index
        );
    }
    last
}
