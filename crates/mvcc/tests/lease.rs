//! Leases in the store: grant, attach, revoke, keep-alive, checkpoint, expiry and their
//! guards against stale decisions, and leases in snapshots.

mod common;

use common::*;
use mvcc::{Code, LeaseChange, MvccError, Response, Store};
use proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
};
use proto::mvccpb::event::EventType;
use proto::raftkvpb::{
    internal_request::Request, InternalRequest, LeaseAt, LeaseCheckpointAt, LeaseCheckpoints,
    LeaseExpiry, LeaseKeepAlives,
};

fn apply(store: &mut Store, request: Request, term: u64) -> Result<Response, MvccError> {
    store.apply_entry(
        &InternalRequest {
            auth: None,
            request: Some(request),
        },
        term,
    )
}

fn grant(store: &mut Store, id: i64, ttl: i64) -> Result<Response, MvccError> {
    apply(store, Request::LeaseGrant(LeaseGrantRequest { ttl, id }), 1)
}

fn revoke(store: &mut Store, id: i64) -> Result<Response, MvccError> {
    apply(store, Request::LeaseRevoke(LeaseRevokeRequest { id }), 1)
}

fn keep_alive(store: &mut Store, id: i64) -> Result<Response, MvccError> {
    apply(
        store,
        Request::LeaseKeepAlive(LeaseKeepAliveRequest { id }),
        1,
    )
}

fn keep_alives(store: &mut Store, ids: &[i64]) -> Result<Response, MvccError> {
    apply(
        store,
        Request::LeaseKeepAlives(LeaseKeepAlives { ids: ids.to_vec() }),
        1,
    )
}

fn put_leased(store: &mut Store, k: &str, lease: i64) -> Result<PutResponse, MvccError> {
    do_put(
        store,
        PutRequest {
            lease,
            ..put(k, "v")
        },
    )
}

use proto::etcdserverpb::PutResponse;

fn lease_keys(store: &Store, id: i64) -> Vec<String> {
    store
        .leases()
        .get(id)
        .expect("lease")
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn at(id: i64, renewals: u64) -> LeaseAt {
    LeaseAt { id, renewals }
}

#[test]
fn grant_answers_the_id_and_ttl_and_refuses_duplicates_and_huge_ttls() {
    let mut store = Store::new();
    match grant(&mut store, 7, 60) {
        Ok(Response::LeaseGrant(r)) => assert_eq!((r.id, r.ttl), (7, 60)),
        other => panic!("{other:?}"),
    }
    let dup = grant(&mut store, 7, 10).unwrap_err();
    assert_eq!(
        dup.to_status(),
        (
            Code::FailedPrecondition,
            "etcdserver: lease already exists".into()
        )
    );
    let huge = grant(&mut store, 8, 9_000_000_001).unwrap_err();
    assert_eq!(
        huge.to_status(),
        (Code::OutOfRange, "etcdserver: too large lease TTL".into())
    );
    assert_eq!(store.leases().len(), 1);
    // A grant changes no key, so no revision.
    assert_eq!(store.current_revision(), 1);
}

#[test]
fn puts_attach_reattach_and_detach_keys() {
    let mut store = Store::new();
    grant(&mut store, 1, 60).unwrap();
    grant(&mut store, 2, 60).unwrap();
    put_leased(&mut store, "a", 1).unwrap();
    put_leased(&mut store, "b", 1).unwrap();
    assert_eq!(lease_keys(&store, 1), ["a", "b"]);

    // Overwrite with another lease moves the key; ignore_lease keeps it; no lease detaches.
    put_leased(&mut store, "a", 2).unwrap();
    assert_eq!(
        (lease_keys(&store, 1), lease_keys(&store, 2)),
        (vec!["b".to_string()], vec!["a".to_string()])
    );
    do_put(
        &mut store,
        PutRequest {
            ignore_lease: true,
            ..put("a", "w")
        },
    )
    .unwrap();
    assert_eq!(lease_keys(&store, 2), ["a"]);
    let kv = &store.range(&get("a", "")).unwrap().kvs[0];
    assert_eq!((kv.lease, kv.value.as_ref()), (2, &b"w"[..]));
    must_put(&mut store, "b", "plain");
    assert!(lease_keys(&store, 1).is_empty());

    // A delete detaches.
    do_del(&mut store, del("a", "")).unwrap();
    assert!(lease_keys(&store, 2).is_empty());
}

#[test]
fn an_unknown_lease_is_refused_in_puts_and_txns_and_changes_nothing() {
    let mut store = Store::new();
    grant(&mut store, 1, 60).unwrap();
    assert_eq!(
        put_leased(&mut store, "a", 9),
        Err(MvccError::LeaseNotFound)
    );
    let t = txn(
        vec![],
        vec![
            op_put(PutRequest {
                lease: 1,
                ..put("x", "1")
            }),
            op_put(PutRequest {
                lease: 9,
                ..put("y", "1")
            }),
        ],
        vec![],
    );
    assert_eq!(do_txn(&mut store, t), Err(MvccError::LeaseNotFound));
    assert!(lease_keys(&store, 1).is_empty());
    assert_eq!(store.current_revision(), 1);
}

#[test]
fn txn_puts_attach_and_a_rolled_back_txn_attaches_nothing() {
    let mut store = Store::new();
    grant(&mut store, 1, 60).unwrap();
    let t = txn(
        vec![cmp("k", Equal, T::Lease(0))],
        vec![op_put(PutRequest {
            lease: 1,
            ..put("k", "1")
        })],
        vec![],
    );
    assert!(do_txn(&mut store, t).unwrap().succeeded);
    assert_eq!(lease_keys(&store, 1), ["k"]);
    // Compare on LEASE sees the attachment.
    let t = txn(
        vec![cmp("k", Equal, T::Lease(1))],
        vec![op_get(get("k", ""))],
        vec![],
    );
    assert!(do_txn(&mut store, t).unwrap().succeeded);
    // A txn that fails on a later read (future revision) rolls back its put's attachment.
    grant(&mut store, 2, 60).unwrap();
    let t = txn(
        vec![],
        vec![
            op_put(PutRequest {
                lease: 2,
                ..put("k", "2")
            }),
            op_get(RangeRequest {
                revision: 1000,
                ..get("k", "")
            }),
        ],
        vec![],
    );
    assert!(do_txn(&mut store, t).is_err());
    assert_eq!(lease_keys(&store, 1), ["k"]);
    assert!(lease_keys(&store, 2).is_empty());
}

use proto::etcdserverpb::RangeRequest;

#[test]
fn revoke_deletes_every_attached_key_in_one_revision_with_one_event_each() {
    let mut store = Store::new();
    grant(&mut store, 1, 60).unwrap();
    for k in ["a", "b", "c"] {
        put_leased(&mut store, k, 1).unwrap();
    }
    must_put(&mut store, "other", "v");
    let before = store.current_revision();
    match revoke(&mut store, 1) {
        Ok(Response::LeaseRevoke(r)) => assert_eq!(r.header.unwrap().revision, before + 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.current_revision(), before + 1);
    let events = store.last_events();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.r#type == EventType::Delete as i32
        && e.kv.as_ref().unwrap().mod_revision == before + 1));
    assert_eq!(keys(&store.range(&get("a", "z")).unwrap()), ["other"]);
    assert!(store.leases().get(1).is_none());
    assert_eq!(
        store.last_lease_changes(),
        &[LeaseChange::Removed { id: 1 }]
    );
    // Revoking twice: not found.
    assert_eq!(revoke(&mut store, 1), Err(MvccError::LeaseNotFound));
    // A lease without keys is revoked without a revision.
    grant(&mut store, 2, 60).unwrap();
    revoke(&mut store, 2).unwrap();
    assert_eq!(store.current_revision(), before + 1);
}

/// Lease 1 checkpointed in term 1 at 4 s left (its first record, renewals 0), so that a
/// renewal shows as the remaining time going back up to the full TTL.
fn checkpoint_lease_1(store: &mut Store) {
    apply(
        store,
        Request::LeaseCheckpoints(LeaseCheckpoints {
            term: 1,
            checkpoints: vec![LeaseCheckpointAt {
                lease: Some(at(1, 0)),
                remaining_ms: 4_000,
            }],
        }),
        1,
    )
    .unwrap();
}

#[test]
fn keep_alive_renews_to_the_full_ttl_and_counts_renewals() {
    let mut store = Store::new();
    grant(&mut store, 1, 30).unwrap();
    checkpoint_lease_1(&mut store);
    assert_eq!(store.leases().get(1).unwrap().remaining_ms, 4_000);
    match keep_alive(&mut store, 1) {
        Ok(Response::LeaseKeepAlive(r)) => assert_eq!((r.id, r.ttl), (1, 30)),
        other => panic!("{other:?}"),
    }
    let lease = store.leases().get(1).unwrap();
    assert_eq!((lease.remaining_ms, lease.renewals), (30_000, 1));
    assert_eq!(
        store.last_lease_changes(),
        &[LeaseChange::Renewed {
            id: 1,
            renewals: 1,
            ttl_ms: 30_000
        }]
    );
    assert_eq!(keep_alive(&mut store, 2), Err(MvccError::LeaseNotFound));
}

/// One entry of several keep-alives renews each lease in order as its own entry would;
/// an unknown lease answers 0 without failing the others; a lease named twice is renewed
/// twice.
#[test]
fn batched_keep_alives_renew_each_lease_and_answer_zero_for_an_unknown_one() {
    let mut store = Store::new();
    grant(&mut store, 1, 30).unwrap();
    grant(&mut store, 2, 10).unwrap();
    put_leased(&mut store, "k", 2).unwrap();
    checkpoint_lease_1(&mut store);
    let rev = store.current_revision();
    assert_eq!(
        keep_alives(&mut store, &[1, 9, 2, 1]),
        Ok(Response::LeaseKeepAlives(vec![30, 0, 10, 30]))
    );
    let one = store.leases().get(1).unwrap();
    assert_eq!((one.remaining_ms, one.renewals), (30_000, 2));
    let two = store.leases().get(2).unwrap();
    assert_eq!((two.remaining_ms, two.renewals), (10_000, 1));
    let renewed = |id, renewals, ttl_ms| LeaseChange::Renewed {
        id,
        renewals,
        ttl_ms,
    };
    assert_eq!(
        store.last_lease_changes(),
        &[
            renewed(1, 1, 30_000),
            renewed(2, 1, 10_000),
            renewed(1, 2, 30_000)
        ]
    );
    // Renewing writes no revision and no event; the attached key stays.
    assert_eq!(store.current_revision(), rev);
    assert!(store.last_events().is_empty());
    assert_eq!(lease_keys(&store, 2), ["k"]);
    // Nothing known, or nothing at all: answered, nothing changes.
    assert_eq!(
        keep_alives(&mut store, &[7, 8]),
        Ok(Response::LeaseKeepAlives(vec![0, 0]))
    );
    assert_eq!(
        keep_alives(&mut store, &[]),
        Ok(Response::LeaseKeepAlives(vec![]))
    );
    assert!(store.last_lease_changes().is_empty());
}

/// A batch leaves the store exactly as the same keep-alives one entry each would (so a log
/// that mixes both kinds replays to the same state on every member), survives a snapshot,
/// and makes an expiry decided before it stale.
#[test]
fn a_batch_equals_its_keep_alives_one_by_one_and_outdates_earlier_decisions() {
    let setup = || {
        let mut store = Store::new();
        for id in [1, 2, 3] {
            grant(&mut store, id, 5).unwrap();
            put_leased(&mut store, &format!("k{id}"), id).unwrap();
        }
        store
    };
    let ids = [3, 1, 3, 42];
    let mut batched = setup();
    keep_alives(&mut batched, &ids).unwrap();
    let mut single = setup();
    for id in ids {
        let _ = keep_alive(&mut single, id);
    }
    assert!(batched == single);
    let mut restored = Store::restore(&batched.snapshot()).unwrap();
    assert!(restored == batched);
    // Decided before the batch (renewals as they were at the grant): only lease 2, which
    // the batch did not renew, goes.
    let expiry = Request::LeaseExpiry(LeaseExpiry {
        term: 1,
        leases: vec![at(1, 0), at(2, 0), at(3, 0)],
    });
    assert_eq!(
        apply(&mut restored, expiry, 1),
        Ok(Response::LeaseExpiry(vec![2]))
    );
    assert_eq!(keys(&restored.range(&get("k", "l")).unwrap()), ["k1", "k3"]);
}

#[test]
fn a_checkpoint_from_another_term_or_before_a_renewal_is_ignored() {
    let mut store = Store::new();
    grant(&mut store, 1, 30).unwrap();
    keep_alive(&mut store, 1).unwrap();
    let cp = |term, renewals| {
        Request::LeaseCheckpoints(LeaseCheckpoints {
            term,
            checkpoints: vec![LeaseCheckpointAt {
                lease: Some(at(1, renewals)),
                remaining_ms: 1_000,
            }],
        })
    };
    // Decided in term 1, carried by an entry of term 2: a deposed leader's.
    assert_eq!(
        apply(&mut store, cp(1, 1), 2),
        Ok(Response::LeaseCheckpoints(0))
    );
    // Decided before the renewal.
    assert_eq!(
        apply(&mut store, cp(2, 0), 2),
        Ok(Response::LeaseCheckpoints(0))
    );
    assert_eq!(store.leases().get(1).unwrap().remaining_ms, 30_000);
    assert_eq!(
        apply(&mut store, cp(2, 1), 2),
        Ok(Response::LeaseCheckpoints(1))
    );
    assert_eq!(store.leases().get(1).unwrap().remaining_ms, 1_000);
}

#[test]
fn expiry_revokes_only_when_decided_in_the_entrys_term_and_not_renewed_since() {
    let mut store = Store::new();
    for id in [1, 2, 3] {
        grant(&mut store, id, 5).unwrap();
        put_leased(&mut store, &format!("k{id}"), id).unwrap();
    }
    keep_alive(&mut store, 2).unwrap();
    let expiry = |term, leases| Request::LeaseExpiry(LeaseExpiry { term, leases });

    // A stale leader's decision (term 3) carried in a term-4 entry: nothing happens.
    let rev = store.current_revision();
    assert_eq!(
        apply(&mut store, expiry(3, vec![at(1, 0), at(2, 0), at(3, 0)]), 4),
        Ok(Response::LeaseExpiry(vec![]))
    );
    assert_eq!((store.current_revision(), store.leases().len()), (rev, 3));

    // In its own term: lease 2 was renewed after the decision, so only 1 and 3 go, together
    // in one revision.
    assert_eq!(
        apply(&mut store, expiry(4, vec![at(1, 0), at(2, 0), at(3, 0)]), 4),
        Ok(Response::LeaseExpiry(vec![1, 3]))
    );
    assert_eq!(store.current_revision(), rev + 1);
    assert_eq!(keys(&store.range(&get("k", "l")).unwrap()), ["k2"]);
    // `apply` without a term never expires anything.
    assert_eq!(
        store.apply(&InternalRequest {
            auth: None,
            request: Some(expiry(0, vec![at(2, 1)]))
        }),
        Ok(Response::LeaseExpiry(vec![]))
    );
}

#[test]
fn leases_and_attachments_survive_a_snapshot() {
    let mut store = Store::new();
    grant(&mut store, 1, 30).unwrap();
    grant(&mut store, -5, 12).unwrap();
    put_leased(&mut store, "a", 1).unwrap();
    put_leased(&mut store, "b", -5).unwrap();
    keep_alive(&mut store, 1).unwrap();
    let restored = Store::restore(&store.snapshot()).unwrap();
    assert!(restored == store);
    assert_eq!(lease_keys(&restored, 1), ["a"]);
    assert_eq!(restored.leases().get(1).unwrap().renewals, 1);
    // The restored store goes on identically: revoking deletes the attached key.
    let mut restored = restored;
    revoke(&mut restored, -5).unwrap();
    revoke(&mut store, -5).unwrap();
    assert!(restored == store);
}

/// A store without leases writes no lease section: its image is the format from before
/// leases existed, which still restores.
#[test]
fn a_snapshot_without_leases_is_the_format_from_before_leases() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    let image = store.snapshot();
    assert_eq!(&image[8..12], &1u32.to_be_bytes());
    // The body ends with the key's value: no section follows it.
    assert_eq!(&image[image.len() - 4 - 1..image.len() - 4], b"1");
    let restored = Store::restore(&image).unwrap();
    assert!(restored == store);
    assert!(restored.leases().is_empty());
}

#[test]
fn a_lease_whose_keys_all_moved_away_equals_one_that_never_had_keys() {
    let mut moved = Store::new();
    grant(&mut moved, 1, 60).unwrap();
    grant(&mut moved, 2, 60).unwrap();
    put_leased(&mut moved, "k", 1).unwrap();
    assert_eq!(lease_keys(&moved, 1), ["k"]);
    put_leased(&mut moved, "k", 2).unwrap();
    assert!(moved.leases().get(1).unwrap().keys.is_empty());
    assert_eq!(lease_keys(&moved, 2), ["k"]);
    put_leased(&mut moved, "k", 0).unwrap();
    assert_eq!(moved.leases().get(2).unwrap().keys.len(), 0);
    let mut never = Store::new();
    grant(&mut never, 1, 60).unwrap();
    grant(&mut never, 2, 60).unwrap();
    assert_eq!(moved.leases(), never.leases());
}
