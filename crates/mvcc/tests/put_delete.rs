//! Put and DeleteRange options and their errors.

mod common;
use common::*;
use mvcc::{Code, MvccError, Store};
use proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

#[test]
fn put_prev_kv_returns_the_previous_record_only_when_asked() {
    let mut store = Store::new();
    let first = do_put(
        &mut store,
        PutRequest {
            prev_kv: true,
            ..put("a", "1")
        },
    )
    .unwrap();
    assert!(first.prev_kv.is_none());
    let second = do_put(
        &mut store,
        PutRequest {
            prev_kv: true,
            ..put("a", "2")
        },
    )
    .unwrap();
    let prev = second.prev_kv.unwrap();
    assert_eq!(
        (prev.value.as_ref(), prev.mod_revision, prev.version),
        (&b"1"[..], 2, 1)
    );
    let third = do_put(&mut store, put("a", "3")).unwrap();
    assert!(third.prev_kv.is_none());
}

#[test]
fn ignore_value_keeps_the_value_and_bumps_version() {
    let mut store = Store::new();
    must_put(&mut store, "a", "keep");
    let resp = do_put(
        &mut store,
        PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put("a", "")
        },
    )
    .unwrap();
    assert_eq!(resp.prev_kv.unwrap().value, b("keep"));
    let kv = &store.range(&get("a", "")).unwrap().kvs[0];
    assert_eq!(
        (kv.value.as_ref(), kv.version, kv.mod_revision),
        (&b"keep"[..], 2, 3)
    );
}

#[test]
fn ignore_lease_keeps_the_lease_and_sets_the_value() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    do_put(
        &mut store,
        PutRequest {
            ignore_lease: true,
            ..put("a", "2")
        },
    )
    .unwrap();
    let kv = &store.range(&get("a", "")).unwrap().kvs[0];
    assert_eq!((kv.value.as_ref(), kv.lease), (&b"2"[..], 0));
}

#[test]
fn option_conflicts_and_missing_keys_are_errors() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    assert_eq!(do_put(&mut store, put("", "v")), Err(MvccError::EmptyKey));
    assert_eq!(
        do_put(
            &mut store,
            PutRequest {
                ignore_value: true,
                ..put("a", "v")
            }
        ),
        Err(MvccError::ValueProvided)
    );
    assert_eq!(
        do_put(
            &mut store,
            PutRequest {
                ignore_lease: true,
                lease: 5,
                ..put("a", "v")
            }
        ),
        Err(MvccError::LeaseProvided)
    );
    assert_eq!(
        do_put(
            &mut store,
            PutRequest {
                ignore_value: true,
                ..put("nokey", "")
            }
        ),
        Err(MvccError::KeyNotFound)
    );
    assert_eq!(
        do_put(
            &mut store,
            PutRequest {
                ignore_lease: true,
                ..put("nokey", "v")
            }
        ),
        Err(MvccError::KeyNotFound)
    );
    assert_eq!(do_del(&mut store, del("", "")), Err(MvccError::EmptyKey));
    assert_eq!(store.current_revision(), 2);
}

#[test]
fn a_put_naming_an_unknown_lease_is_not_found() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    let err = do_put(
        &mut store,
        PutRequest {
            lease: 5,
            ..put("a", "v")
        },
    )
    .unwrap_err();
    assert_eq!(err, MvccError::LeaseNotFound);
    assert_eq!(
        err.to_status(),
        (
            Code::NotFound,
            "etcdserver: requested lease not found".into()
        )
    );
}

/// Observed on etcd 3.4.23: a plain put checks the lease before the key, a put inside a
/// txn checks the key first.
#[test]
fn etcd_observed_lease_and_missing_key_error_order() {
    let mut store = Store::new();
    let bad = PutRequest {
        lease: 5,
        ignore_value: true,
        ..put("nokey", "")
    };
    assert_eq!(
        do_put(&mut store, bad.clone()),
        Err(MvccError::LeaseNotFound)
    );
    assert_eq!(
        do_txn(&mut store, txn(vec![], vec![op_put(bad)], vec![])),
        Err(MvccError::KeyNotFound)
    );
}

#[test]
fn delete_range_counts_and_returns_prev_kvs() {
    let mut store = abcde();
    let resp = do_del(
        &mut store,
        DeleteRangeRequest {
            prev_kv: true,
            ..del("b", "d")
        },
    )
    .unwrap();
    assert_eq!(resp.deleted, 2);
    assert_eq!(
        resp.prev_kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        vec![b("b"), b("c")]
    );
    assert_eq!(resp.prev_kvs[0].value, b("v1"));
    let resp = do_del(&mut store, del("a", "\0")).unwrap();
    assert_eq!(resp.deleted, 3);
    assert!(resp.prev_kvs.is_empty(), "prev_kvs only when asked");
    assert_eq!(store.key_count(), 0);
}
