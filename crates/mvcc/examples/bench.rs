//! Micro-benchmark of the store alone (no Raft, no network): applied puts per second and
//! ranges per second.
//!
//! ```text
//! cargo run --release -p raftkv-mvcc --example bench -- [puts] [keys] [value_bytes]
//! ```

use std::time::Instant;

/// CPU time this thread has run, from Linux's schedstat (0 elsewhere). The machine this runs
/// on is shared, so rates per CPU-second are steadier than wall-clock rates.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Wall-clock and CPU rates of `n` operations since (`wall`, `cpu`).
fn rates(n: u64, wall: Instant, cpu: f64) -> String {
    let wall_secs = wall.elapsed().as_secs_f64();
    let cpu_used = cpu_secs() - cpu;
    format!(
        "{:.0}/s wall, {:.0}/s per CPU-second",
        n as f64 / wall_secs,
        n as f64 / cpu_used.max(1e-9)
    )
}

use bytes::Bytes;
use mvcc::Store;
use proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use proto::raftkvpb::{internal_request::Request, InternalRequest};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let puts = *args.first().unwrap_or(&500_000);
    let key_space = *args.get(1).unwrap_or(&100_000);
    let value_bytes = *args.get(2).unwrap_or(&256) as usize;
    let value = Bytes::from(vec![b'x'; value_bytes]);
    let key = |i: u64| Bytes::from(format!("/bench/key-{:08}", i % key_space));

    let requests: Vec<InternalRequest> = (0..puts)
        .map(|i| InternalRequest {
            auth: None,
            request: Some(Request::Put(PutRequest {
                key: key(i),
                value: value.clone(),
                ..Default::default()
            })),
        })
        .collect();
    let mut store = Store::new();
    let (start, cpu) = (Instant::now(), cpu_secs());
    for req in &requests {
        store.apply(req).expect("put");
    }
    println!(
        "apply put ({puts} puts over {key_space} keys, {value_bytes} B values): {}",
        rates(puts, start, cpu)
    );

    let reads = 500_000u64;
    let (start, cpu) = (Instant::now(), cpu_secs());
    let mut found = 0usize;
    for i in 0..reads {
        let k = key(i.wrapping_mul(2_654_435_761) % key_space);
        found += store
            .range(&RangeRequest {
                key: k,
                ..Default::default()
            })
            .expect("range")
            .kvs
            .len();
    }
    assert_eq!(found as u64, reads);
    println!("range 1 key: {}", rates(reads, start, cpu));

    // A 100-key window (a typical prefix listing), then the same limit over the whole rest
    // of the keyspace, where `count` forces a walk over every key as in etcd.
    let scans = 20_000u64;
    let (start, cpu) = (Instant::now(), cpu_secs());
    for i in 0..scans {
        let first = (i * 7919) % key_space.saturating_sub(100).max(1);
        let resp = store
            .range(&RangeRequest {
                key: key(first),
                range_end: key(first + 100),
                ..Default::default()
            })
            .expect("range");
        assert_eq!(resp.kvs.len(), 100);
    }
    println!("range 100 keys: {}", rates(scans, start, cpu));

    let scans = 500u64;
    let (start, cpu) = (Instant::now(), cpu_secs());
    for i in 0..scans {
        let first = (i * 7919) % key_space.saturating_sub(100).max(1);
        store
            .range(&RangeRequest {
                key: key(first),
                range_end: Bytes::from_static(b"/bench/key-~"),
                limit: 100,
                ..Default::default()
            })
            .expect("range");
    }
    println!(
        "range limit 100 to the end of the keyspace (count walks the rest): {}",
        rates(scans, start, cpu)
    );

    let start = Instant::now();
    let rev = store.current_revision();
    store
        .apply(&InternalRequest {
            auth: None,
            request: Some(Request::Compaction(CompactionRequest {
                revision: rev,
                physical: false,
            })),
        })
        .expect("compact");
    println!(
        "compact {} revisions: {:.3} s",
        rev,
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let snapshot = store.snapshot();
    let snap_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let restored = Store::restore(&snapshot).expect("restore");
    println!(
        "snapshot {} MiB: write {:.3} s, restore {:.3} s",
        snapshot.len() / (1 << 20),
        snap_secs,
        start.elapsed().as_secs_f64()
    );
    assert_eq!(restored.current_revision(), store.current_revision());
}
