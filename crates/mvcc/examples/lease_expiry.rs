//! Micro-benchmark of a mass lease expiry in the store alone (no Raft, no network): N
//! leases with one key each, revoked as the leader decides them, 10,000 per `LeaseExpiry`
//! entry (`node::LeaseConfig::max_batch`). What each member's apply spends when many leases run out together (issue 14:
//! 1,000,000 within 30 s on a 3-member cluster sharing 2 cores).
//!
//! ```text
//! cargo run --release -p raftkv-mvcc --example lease_expiry -- [leases]
//! ```

use std::time::Instant;

use bytes::Bytes;
use mvcc::Store;
use proto::etcdserverpb::{LeaseGrantRequest, PutRequest};
use proto::raftkvpb::{internal_request::Request, InternalRequest, LeaseAt, LeaseExpiry};

const BATCH: usize = 10_000;

fn apply(store: &mut Store, request: Request) {
    store
        .apply_entry(
            &InternalRequest {
                auth: None,
                request: Some(request),
            },
            1,
        )
        .expect("apply");
}

fn main() {
    let leases: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut store = Store::new();
    for id in 1..=leases {
        apply(
            &mut store,
            Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id }),
        );
        apply(
            &mut store,
            Request::Put(PutRequest {
                key: Bytes::from(format!("mass/{id}")),
                value: Bytes::from_static(b"v"),
                lease: id,
                ..Default::default()
            }),
        );
    }
    let started = Instant::now();
    let ids: Vec<i64> = (1..=leases).collect();
    for batch in ids.chunks(BATCH) {
        apply(
            &mut store,
            Request::LeaseExpiry(LeaseExpiry {
                term: 1,
                leases: batch
                    .iter()
                    .map(|&id| LeaseAt { id, renewals: 0 })
                    .collect(),
            }),
        );
    }
    let took = started.elapsed();
    assert_eq!(store.leases().iter().count(), 0, "every lease revoked");
    println!(
        "{leases} leases with a key each revoked in {took:?} ({:.0} leases/s, {:.1} µs each)",
        leases as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / leases as f64
    );
}
