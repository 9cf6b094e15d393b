//! WAL benchmark: `cargo run --release -p raftkv-storage --example wal_bench -- [options]`
//!
//! 1. raw: the disk's own limit — a 1 KiB `write` + `fdatasync` loop on an appended file
//!    (what fio's `--rw=write --bs=1k --fdatasync=1` measures).
//! 2. single: one appender, one 1 KiB entry (plus its hard state) per `save`, each save
//!    one fdatasync. Target ≥ 90% of raw. Raw and single run in alternating half-second
//!    slices so that both see the same disk conditions.
//! 3. group: 64 appender threads hand 1 KiB entries to one committer thread, which takes
//!    everything queued, `save`s it with one fdatasync and acknowledges every appender in
//!    the batch (what the Ready loop does with concurrent client proposals). Target ≥ 30×
//!    single, in entries/s.
//! 4. restart: time to `Storage::open` a data dir holding a large snapshot (default 1 GiB:
//!    1,000,000 × ~1 KiB values) plus a WAL tail, with a warm and a cold page cache.
//!
//! Options: `--dir PATH` (default: a temp dir, i.e. the disk under /tmp), `--seconds N`
//! per throughput phase (default 5), `--appenders N` (64), `--snapshot-mib N` (1024),
//! `--tail N` WAL entries after the snapshot (20000), `--no-restart`, `--no-drop-caches`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};
use storage::{RealFs, Storage, StorageOptions};

struct Args {
    dir: Option<PathBuf>,
    seconds: f64,
    appenders: usize,
    snapshot_mib: u64,
    tail: u64,
    restart: bool,
    drop_caches: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        dir: None,
        seconds: 5.0,
        appenders: 64,
        snapshot_mib: 1024,
        tail: 20_000,
        restart: true,
        drop_caches: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = Some(PathBuf::from(val())),
            "--seconds" => a.seconds = val().parse().expect("--seconds"),
            "--appenders" => a.appenders = val().parse().expect("--appenders"),
            "--snapshot-mib" => a.snapshot_mib = val().parse().expect("--snapshot-mib"),
            "--tail" => a.tail = val().parse().expect("--tail"),
            "--no-restart" => a.restart = false,
            "--no-drop-caches" => a.drop_caches = false,
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn entry(index: u64) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![(index % 251) as u8; 1024]),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Raw probe and single appender, measured in alternating 1-second slices so that both
/// see the same disk weather (this machine's fsync latency drifts a lot minute to minute).
struct Interleaved {
    raw_ops: u64,
    raw_time: f64,
    raw_lat: Vec<Duration>,
    wal_ops: u64,
    wal_time: f64,
    wal_lat: Vec<Duration>,
}

fn raw_and_single(dir: &Path, seconds: f64) -> Interleaved {
    let path = dir.join("raw-probe");
    // The raw probe: 1 KiB write + fdatasync, appending to one file.
    let mut raw = std::fs::File::create(&path).unwrap();
    let buf = vec![0x5au8; 1024];
    // The WAL: one 1 KiB entry plus its hard state per save, one fdatasync each.
    let mut store = open(&dir.join("single"));
    let mut index = 0;
    let mut r = Interleaved {
        raw_ops: 0,
        raw_time: 0.0,
        raw_lat: vec![],
        wal_ops: 0,
        wal_time: 0.0,
        wal_lat: vec![],
    };
    let slices = seconds.ceil().max(2.0) as usize;
    for slice in 0..slices * 2 {
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 0.5 {
            let t = Instant::now();
            if slice % 2 == 0 {
                raw.write_all(&buf).unwrap();
                raw.sync_data().unwrap();
                r.raw_lat.push(t.elapsed());
                r.raw_ops += 1;
            } else {
                index += 1;
                let hs = HardState {
                    term: 1,
                    vote: Some(1),
                    commit: index,
                };
                store.save(Some(&hs), &[entry(index)], None).unwrap();
                r.wal_lat.push(t.elapsed());
                r.wal_ops += 1;
            }
        }
        if slice % 2 == 0 {
            r.raw_time += start.elapsed().as_secs_f64();
        } else {
            r.wal_time += start.elapsed().as_secs_f64();
        }
    }
    std::fs::remove_file(&path).unwrap();
    r.raw_lat.sort();
    r.wal_lat.sort();
    r
}

fn open(dir: &Path) -> Storage {
    Storage::open(Arc::new(RealFs), dir, &StorageOptions::new(1, 0xbe7c))
        .unwrap()
        .0
}

/// A request from an appender: its payload and where to send the acknowledgement.
type Request = (Bytes, mpsc::Sender<u64>);

fn group_commit(dir: &Path, seconds: f64, appenders: usize) -> (f64, f64, Duration, Duration) {
    let mut store = open(dir);
    let (tx, rx) = mpsc::channel::<Request>();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut threads = Vec::new();
    for _ in 0..appenders {
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let (ack_tx, ack_rx) = mpsc::channel();
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                tx.send((Bytes::from(vec![7u8; 1024]), ack_tx.clone()))
                    .unwrap();
                ack_rx.recv().unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    drop(tx);
    let start = Instant::now();
    let (mut index, mut batches) = (0u64, 0u64);
    // The committer: block for one request, take everything else already queued, one save.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let entries: Vec<Entry> = batch
            .iter()
            .enumerate()
            .map(|(k, (data, _))| Entry {
                term: 1,
                index: index + 1 + k as u64,
                kind: EntryKind::Normal,
                data: data.clone(),
            })
            .collect();
        index += entries.len() as u64;
        store
            .save(
                Some(&HardState {
                    term: 1,
                    vote: Some(1),
                    commit: index,
                }),
                &entries,
                None,
            )
            .unwrap();
        batches += 1;
        for (_, ack) in batch {
            let _ = ack.send(index);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    lat.sort();
    (
        index as f64 / elapsed,
        index as f64 / batches as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

/// A deterministic pseudo-random snapshot image of `n` bytes (incompressible, like real
/// values would mostly be).
fn image(n: u64) -> Bytes {
    let mut v = vec![0u8; n as usize];
    let mut x = 0x1234_5678_9abc_def0u64;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    Bytes::from(v)
}

/// Drop the page cache so the next open reads from the disk (needs root).
fn drop_page_cache() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    synced && std::fs::write("/proc/sys/vm/drop_caches", "1\n").is_ok()
}

fn timed_open(dir: &Path) -> (Duration, usize, usize) {
    let t = Instant::now();
    let (_store, rec) =
        Storage::open(Arc::new(RealFs), dir, &StorageOptions::new(1, 0xbe7c)).unwrap();
    let took = t.elapsed();
    (
        took,
        rec.snapshot.map(|s| s.data.len()).unwrap_or(0),
        rec.entries.len(),
    )
}

/// A member that installed a large snapshot (as from a leader) and then appended `tail`
/// 1 KiB entries: how long does `Storage::open` take?
fn restart(dir: &Path, snapshot_mib: u64, tail: u64, drop_caches: bool) {
    let snap_index = 1_000_000u64;
    let mut store = open(dir);
    let meta = SnapshotMeta {
        index: snap_index,
        term: 1,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            learners: vec![],
        },
    };
    let snap = raft::Snapshot {
        meta,
        data: image(snapshot_mib << 20),
    };
    let t = Instant::now();
    let hs = HardState {
        term: 1,
        vote: Some(1),
        commit: snap_index,
    };
    store.save(Some(&hs), &[], Some(&snap)).unwrap();
    println!(
        "  setup: {} MiB snapshot written and installed in {:.2} s",
        snapshot_mib,
        t.elapsed().as_secs_f64()
    );
    drop(snap);
    let mut index = snap_index;
    while index < snap_index + tail {
        let batch: Vec<Entry> = (index + 1..=(index + 100).min(snap_index + tail))
            .map(entry)
            .collect();
        index += batch.len() as u64;
        store
            .save(
                Some(&HardState {
                    term: 1,
                    vote: Some(1),
                    commit: index,
                }),
                &batch,
                None,
            )
            .unwrap();
    }
    drop(store);
    let wal_bytes: u64 = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "  data dir: snapshot at {snap_index} + {tail} WAL entries ({:.1} MiB of WAL)",
        wal_bytes as f64 / (1 << 20) as f64
    );
    for label in ["warm cache", "warm cache"] {
        let (took, snap_len, entries) = timed_open(dir);
        println!("restart ({label}): Storage::open {:.3} s (snapshot {} MiB verified, {entries} entries replayed)", took.as_secs_f64(), snap_len >> 20);
    }
    if !drop_caches {
        return;
    }
    // Cold cache, twice, each next to the floor: a plain `read` of the same snapshot file
    // from a cold cache (the disk's sequential read speed, which dominates).
    let snap_file = std::fs::read_dir(dir.join("snap"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for _ in 0..2 {
        if !drop_page_cache() {
            println!("restart (cold cache): skipped, cannot write /proc/sys/vm/drop_caches");
            return;
        }
        let t = Instant::now();
        let n = std::fs::read(&snap_file).unwrap().len();
        let floor = t.elapsed().as_secs_f64();
        drop_page_cache();
        let (took, _, _) = timed_open(dir);
        println!(
            "restart (cold cache): Storage::open {:.3} s; floor (plain cold read of the {} MiB snapshot file) {:.3} s",
            took.as_secs_f64(),
            n >> 20,
            floor
        );
    }
}

fn main() {
    let args = parse_args();
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().unwrap();
            tmp.path().to_path_buf()
        }
    };
    println!(
        "wal_bench in {} ({} s per phase)",
        dir.display(),
        args.seconds
    );

    let r = raw_and_single(&dir, args.seconds);
    let raw = r.raw_ops as f64 / r.raw_time;
    let single = r.wal_ops as f64 / r.wal_time;
    println!(
        "raw 1 KiB write+fdatasync: {raw:.0} ops/s (p50 {:.2} ms, p99 {:.2} ms)",
        ms(percentile(&r.raw_lat, 0.5)),
        ms(percentile(&r.raw_lat, 0.99))
    );
    println!(
        "WAL single appender: {single:.0} entries/s (p50 {:.2} ms, p99 {:.2} ms) = {:.1}% of raw (target >= 90%)",
        ms(percentile(&r.wal_lat, 0.5)),
        ms(percentile(&r.wal_lat, 0.99)),
        100.0 * single / raw
    );

    let (group, per_batch, g50, g99) =
        group_commit(&dir.join("group"), args.seconds, args.appenders);
    println!(
        "WAL group commit, {} appenders: {group:.0} entries/s ({per_batch:.1} entries/fsync, p50 {:.2} ms, p99 {:.2} ms) = {:.1}x single (target >= 30x)",
        args.appenders,
        ms(g50),
        ms(g99),
        group / single
    );

    if args.restart {
        restart(
            &dir.join("restart"),
            args.snapshot_mib,
            args.tail,
            args.drop_caches,
        );
    }
}
