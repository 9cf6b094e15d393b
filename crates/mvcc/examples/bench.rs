//! Micro-benchmark of the store alone (no Raft, no network): applied puts per second and
//! ranges per second.
//!
//! ```text
//! cargo run --release -p raftkv-mvcc --example bench -- [puts] [keys] [value_bytes]
//! ```

use std::time::Instant;

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
            id: i,
            request: Some(Request::Put(PutRequest {
                key: key(i),
                value: value.clone(),
                ..Default::default()
            })),
        })
        .collect();
    let mut store = Store::new();
    let start = Instant::now();
    for req in &requests {
        store.apply(req).expect("put");
    }
    let put_secs = start.elapsed().as_secs_f64();
    println!(
        "apply put:     {puts} puts over {key_space} keys, {value_bytes} B values: {:.0} puts/s",
        puts as f64 / put_secs
    );

    let reads = 500_000u64;
    let start = Instant::now();
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
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(found as u64, reads.min(reads));
    println!("range 1 key:   {:.0} ranges/s", reads as f64 / secs);

    let scans = 20_000u64;
    let start = Instant::now();
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
    let secs = start.elapsed().as_secs_f64();
    println!(
        "range limit 100 (count over the rest of the keyspace): {:.0} ranges/s",
        scans as f64 / secs
    );

    let start = Instant::now();
    let rev = store.current_revision();
    store
        .apply(&InternalRequest {
            id: 0,
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
