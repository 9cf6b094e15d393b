//! Export, then the existing import: the store that comes back must hold the same history
//! (equal `hash_kv`, equal reads at every retained revision), for random histories with
//! overwrites, deletions, txns, leases and a compaction. etcd's tools read exported files
//! in `crates/raftkv/tests/export_to_etcd.rs`.

use bytes::Bytes;
use mvcc::Store;
use proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use proto::raftkvpb::{internal_request::Request, InternalRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::EtcdBackend;

fn apply(store: &mut Store, request: Request) {
    store
        .apply(&InternalRequest {
            auth: None,
            request: Some(request),
        })
        .expect("the request applies");
}

fn put(key: &str, value: Vec<u8>, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: value.into(),
        lease,
        ..Default::default()
    }
}

/// A store with a random history over a few keys; compacted when `compact`.
fn random_store(seed: u64, ops: usize, compact: bool) -> Store {
    const KEYS: [&str; 6] = ["a", "a/1", "b", "c", "c/x", "zz"];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut store = Store::new();
    apply(
        &mut store,
        Request::LeaseGrant(LeaseGrantRequest { ttl: 600, id: 77 }),
    );
    apply(&mut store, Request::Put(put("leased", b"x".to_vec(), 77)));
    for step in 0..ops {
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        match rng.gen_range(0..10) {
            0..=5 => {
                let len = if rng.gen_range(0..40) == 0 { 9000 } else { 12 };
                apply(&mut store, Request::Put(put(key, vec![b'v'; len], 0)));
            }
            6 => apply(
                &mut store,
                Request::DeleteRange(DeleteRangeRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    ..Default::default()
                }),
            ),
            _ => {
                let ops = [key, "txn/other"]
                    .iter()
                    .map(|k| RequestOp {
                        request: Some(request_op::Request::RequestPut(put(
                            k,
                            format!("t{step}").into_bytes(),
                            0,
                        ))),
                    })
                    .collect();
                apply(
                    &mut store,
                    Request::Txn(TxnRequest {
                        success: ops,
                        ..Default::default()
                    }),
                );
            }
        }
        if compact && step == ops / 2 {
            let revision = store.current_revision() - 5;
            apply(
                &mut store,
                Request::Compaction(CompactionRequest {
                    revision,
                    physical: true,
                }),
            );
        }
    }
    apply(&mut store, Request::Put(put("last", b"1".to_vec(), 0)));
    store
}

fn all_at(store: &Store, revision: i64) -> Vec<proto::mvccpb::KeyValue> {
    store
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision,
            ..Default::default()
        })
        .expect("range")
        .kvs
}

#[test]
fn export_then_import_gives_the_same_history() {
    for (seed, ops, compact) in [(1, 0, false), (2, 50, false), (3, 3000, true)] {
        let store = random_store(seed, ops, compact);
        let file = export(&store, 1234).unwrap();
        assert_eq!(file.len() % bbolt::PAGE_SIZE, 0);
        let backend = EtcdBackend::parse(file.clone()).unwrap();
        assert_eq!(backend.consistent_index, Some(1234));
        assert_eq!(backend.leases.len(), 1);
        let back = backend.into_store().unwrap();
        assert_eq!(
            back.current_revision(),
            store.current_revision(),
            "seed {seed}"
        );
        assert_eq!(
            back.compact_revision(),
            store.compact_revision(),
            "seed {seed}"
        );
        assert_eq!(
            back.hash_kv(0).unwrap(),
            store.hash_kv(0).unwrap(),
            "seed {seed}"
        );
        let from = store.compact_revision().max(1);
        for rev in from..=store.current_revision() {
            assert_eq!(
                all_at(&back, rev),
                all_at(&store, rev),
                "seed {seed} rev {rev}"
            );
        }
        assert_eq!(
            back.leases().get(77).map(|l| l.keys),
            store.leases().get(77).map(|l| l.keys)
        );

        // The store's own image rides along, whole.
        let db = Db::from_bytes(file).unwrap();
        let image = raftkv_image(&db).unwrap().expect("raftkv bucket");
        assert!(Store::restore(&image).unwrap() == store);
    }
}

#[test]
fn etcd_layout_details() {
    let store = random_store(9, 200, true);
    let db = Db::from_bytes(export(&store, 5).unwrap()).unwrap();
    let meta = db.bucket(b"meta").unwrap().unwrap();
    let compacted = revision_key(store.compact_revision(), 0, false);
    assert_eq!(
        meta.get(b"finishedCompactRev").unwrap(),
        Some(&compacted[..])
    );
    assert_eq!(
        meta.get(b"scheduledCompactRev").unwrap(),
        Some(&compacted[..])
    );
    let cluster = db.bucket(b"cluster").unwrap().unwrap();
    assert_eq!(cluster.get(b"clusterVersion").unwrap(), Some(&b"3.4.0"[..]));
    let auth = db.bucket(b"auth").unwrap().unwrap();
    assert_eq!(auth.get(b"authEnabled").unwrap(), Some(&[0u8][..]));
    assert_eq!(
        auth.get(b"authRevision").unwrap(),
        Some(&1u64.to_be_bytes()[..])
    );
    let lease = db.bucket(b"lease").unwrap().unwrap();
    let raw = lease.get(&77u64.to_be_bytes()).unwrap().unwrap();
    let decoded = EtcdLease::decode(raw).unwrap();
    assert_eq!((decoded.id, decoded.ttl), (77, 600));
    // The newest key of `key` is the store's revision, as `etcdctl snapshot status` reads.
    let keys = db.bucket(b"key").unwrap().unwrap().entries().unwrap();
    let (last, _) = keys.last().unwrap();
    assert_eq!(
        u64::from_be_bytes(last[..8].try_into().unwrap()),
        store.current_revision() as u64
    );
    // A plain etcd file has no image.
    let plain = bbolt::write_db(&[BucketContents {
        name: b"key".to_vec(),
        entries: vec![],
    }])
    .unwrap();
    assert_eq!(raftkv_image(&Db::from_bytes(plain).unwrap()).unwrap(), None);
}
