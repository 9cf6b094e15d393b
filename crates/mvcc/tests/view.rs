//! `Store::view`: a point-in-time copy that later applies do not reach. The node thread takes
//! one under the state lock and the snapshot writer serialises it while applies go on, so
//! its image must be exactly the store's image at the moment it was taken.

mod common;
use common::*;
use mvcc::Store;
use proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, PutRequest};
use proto::raftkvpb::internal_request::Request;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One step of a seeded workload that touches every map a view shares: keys and their
/// history (puts, overwrites, range deletes, txns, compactions), the revision index, and
/// leases with keys attached (grants, puts under a lease, revocations). Some steps fail
/// (a put naming a lease that does not exist, a txn whose second put does): a failed
/// request is rolled back, and the rollback must not reach a view either.
fn step(store: &mut Store, rng: &mut ChaCha8Rng) {
    let key = format!("k{:03}", rng.gen_range(0..200));
    let value = format!("v{}", rng.gen::<u32>());
    let lease = rng.gen_range(1..=6);
    match rng.gen_range(0..100) {
        0..=54 => {
            must_put(store, &key, &value);
        }
        55..=64 => {
            let _ = do_put(
                store,
                PutRequest {
                    lease,
                    ..put(&key, &value)
                },
            );
        }
        65..=72 => {
            let end = format!("k{:03}", rng.gen_range(0..200));
            let (from, to) = if end > key {
                (&key, &end)
            } else {
                (&end, &key)
            };
            do_del(store, del(from, to)).unwrap();
        }
        73..=80 => {
            // The second put names a lease that may not exist: then the whole txn,
            // first put included, is rolled back.
            let _ = do_txn(
                store,
                txn(
                    vec![],
                    vec![
                        op_put(put(&key, &value)),
                        op_put(PutRequest {
                            lease,
                            ..put("txn-leased", &value)
                        }),
                    ],
                    vec![],
                ),
            );
        }
        81..=88 => {
            let _ = submit(
                store,
                Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: lease }),
            );
        }
        89..=94 => {
            let _ = submit(
                store,
                Request::LeaseRevoke(LeaseRevokeRequest { id: lease }),
            );
        }
        _ => {
            let rev = store.current_revision() - rng.gen_range(0..20);
            let _ = do_compact(store, rev);
        }
    }
}

#[test]
fn a_view_serialises_to_the_store_as_it_was_when_taken() {
    for seed in 0..8 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut store = Store::new();
        // Each view with the image and hashes the store had at that moment.
        let mut taken = Vec::new();
        for i in 0..1500 {
            step(&mut store, &mut rng);
            if i % 100 == 50 {
                let view = store.view();
                taken.push((store.snapshot(), store.hash_kv(0), store.hash_all(), view));
            }
        }
        let end = store.snapshot();
        for (n, (image, hash_kv, hash_all, view)) in taken.into_iter().enumerate() {
            let ctx = format!("seed {seed}, view {n}");
            // Not vacuous: the store moved on after the view.
            assert_ne!(image, end, "{ctx}: nothing was applied after the view");
            assert_eq!(view.snapshot(), image, "{ctx}: the view's image changed");
            assert_eq!(view.hash_kv(0), hash_kv, "{ctx}");
            assert_eq!(view.hash_all(), hash_all, "{ctx}");
            assert_eq!(Store::restore(&image).unwrap(), view, "{ctx}");
        }
        // The live store is untouched by its views: it still restores to itself.
        assert_eq!(Store::restore(&end).unwrap(), store, "seed {seed}");
    }
}

#[test]
fn a_view_leaves_out_the_last_applys_events() {
    let mut store = abcde();
    do_del(&mut store, del("a", "z")).unwrap();
    assert!(!store.last_events().is_empty());
    let view = store.view();
    assert!(view.last_events().is_empty());
    assert_eq!(view, store);
}
