//! The revision rules: what bumps the store revision, and per-key create/mod/version.

mod common;
use common::*;
use mvcc::Store;

#[test]
fn an_empty_store_is_at_revision_one_and_the_first_write_is_two() {
    let mut store = Store::new();
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.compact_revision(), -1);
    assert_eq!(header_rev(&store.range(&get("a", "")).unwrap()), 1);
    assert_eq!(must_put(&mut store, "a", "1"), 2);
    assert_eq!(store.current_revision(), 2);
}

#[test]
fn each_put_bumps_by_one_and_tracks_create_mod_version() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    must_put(&mut store, "b", "1"); // 3
    must_put(&mut store, "a", "2"); // 4
    let kv = &store.range(&get("a", "")).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 2));
    assert_eq!(store.current_revision(), 4);
}

#[test]
fn delete_resets_version_and_recreation_gets_a_new_create_revision() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    must_put(&mut store, "a", "2"); // 3
    let resp = do_del(&mut store, del("a", "")).unwrap(); // 4
    assert_eq!(resp.deleted, 1);
    assert_eq!(resp.header.unwrap().revision, 4);
    assert!(store.range(&get("a", "")).unwrap().kvs.is_empty());
    must_put(&mut store, "a", "3"); // 5
    let kv = &store.range(&get("a", "")).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn deleting_missing_keys_does_not_bump_and_reports_the_current_revision() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    let resp = do_del(&mut store, del("x", "z")).unwrap();
    assert_eq!(resp.deleted, 0);
    assert_eq!(resp.header.unwrap().revision, 2);
    assert_eq!(store.current_revision(), 2);
    assert!(store.last_events().is_empty());
}

#[test]
fn a_range_delete_is_one_revision_for_all_keys() {
    let mut store = abcde(); // at 6
    let resp = do_del(&mut store, del("b", "e")).unwrap();
    assert_eq!(resp.deleted, 3);
    assert_eq!(store.current_revision(), 7);
    let events = store.last_events();
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == 7));
}

#[test]
fn a_txn_with_writes_is_one_revision_however_many_writes() {
    let mut store = Store::new();
    let resp = do_txn(
        &mut store,
        txn(
            vec![],
            vec![
                op_put(put("a", "1")),
                op_put(put("b", "1")),
                op_del(del("zz", "")),
            ],
            vec![],
        ),
    )
    .unwrap();
    assert_eq!(resp.header.unwrap().revision, 2);
    assert_eq!(store.current_revision(), 2);
    let a = &store.range(&get("a", "")).unwrap().kvs[0];
    let b_kv = &store.range(&get("b", "")).unwrap().kvs[0];
    assert_eq!(a.mod_revision, 2);
    assert_eq!(b_kv.mod_revision, 2);
    // Events in txn order (the sub-revision order).
    let keys: Vec<_> = store
        .last_events()
        .iter()
        .map(|e| e.kv.clone().unwrap().key)
        .collect();
    assert_eq!(keys, vec![b("a"), b("b")]);
}

#[test]
fn read_only_txns_and_txns_deleting_nothing_do_not_bump() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    let r = do_txn(&mut store, txn(vec![], vec![op_get(get("a", ""))], vec![])).unwrap();
    assert_eq!(r.header.unwrap().revision, 2);
    let r = do_txn(
        &mut store,
        txn(vec![], vec![op_del(del("nope", ""))], vec![]),
    )
    .unwrap();
    assert_eq!(r.header.unwrap().revision, 2);
    // A failed compare that selects an empty else-branch changes nothing either.
    let r = do_txn(
        &mut store,
        txn(
            vec![cmp("a", Equal, T::Version(99))],
            vec![op_put(put("a", "x"))],
            vec![],
        ),
    )
    .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.header.unwrap().revision, 2);
    assert_eq!(store.current_revision(), 2);
}

#[test]
fn failed_requests_change_nothing() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    let before = store.clone();
    assert!(do_put(&mut store, put("", "v")).is_err());
    assert!(do_put(
        &mut store,
        proto::etcdserverpb::PutRequest {
            lease: 7,
            ..put("a", "v")
        }
    )
    .is_err());
    // A txn that writes and then fails on a read of a future revision rolls back whole.
    let r = do_txn(
        &mut store,
        txn(
            vec![],
            vec![
                op_put(put("b", "1")),
                op_get(proto::etcdserverpb::RangeRequest {
                    revision: 50,
                    ..get("a", "")
                }),
            ],
            vec![],
        ),
    );
    assert!(r.is_err());
    assert_eq!(store, before);
}
