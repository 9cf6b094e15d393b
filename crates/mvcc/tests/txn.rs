//! Txn: compares, branches, nesting, validation, atomicity.

mod common;
use common::*;
use mvcc::{validate, Limits, MvccError, Store};
use proto::etcdserverpb::{compare, response_op, Compare, RangeRequest, RequestOp};

fn succeeded(store: &mut Store, compares: Vec<Compare>) -> bool {
    do_txn(store, txn(compares, vec![], vec![]))
        .unwrap()
        .succeeded
}

#[test]
fn every_compare_target_and_operator() {
    let mut store = Store::new();
    must_put(&mut store, "a", "m"); // 2
    must_put(&mut store, "a", "m"); // 3: version 2, create 2, mod 3
    let s = &mut store;
    assert!(succeeded(s, vec![cmp("a", Equal, T::Version(2))]));
    assert!(succeeded(s, vec![cmp("a", Greater, T::Version(1))]));
    assert!(succeeded(s, vec![cmp("a", Less, T::Version(3))]));
    assert!(succeeded(s, vec![cmp("a", NotEqual, T::Version(1))]));
    assert!(!succeeded(s, vec![cmp("a", NotEqual, T::Version(2))]));
    assert!(succeeded(s, vec![cmp("a", Equal, T::CreateRevision(2))]));
    assert!(succeeded(s, vec![cmp("a", Equal, T::ModRevision(3))]));
    assert!(succeeded(s, vec![cmp("a", Greater, T::Value(b("l")))]));
    assert!(succeeded(s, vec![cmp("a", Less, T::Value(b("ma")))]));
    assert!(succeeded(s, vec![cmp("a", Equal, T::Value(b("m")))]));
    assert!(succeeded(s, vec![cmp("a", Equal, T::Lease(0))]));
    assert!(!succeeded(s, vec![cmp("a", Greater, T::Lease(0))]));
    // All compares must hold.
    assert!(!succeeded(
        s,
        vec![
            cmp("a", Equal, T::Version(2)),
            cmp("a", Equal, T::Version(3))
        ]
    ));
}

#[test]
fn a_missing_key_compares_as_zero_except_value_which_always_fails() {
    let mut store = Store::new();
    let s = &mut store;
    assert!(succeeded(s, vec![cmp("x", Equal, T::Version(0))]));
    assert!(succeeded(s, vec![cmp("x", Equal, T::CreateRevision(0))]));
    assert!(succeeded(s, vec![cmp("x", Equal, T::ModRevision(0))]));
    assert!(succeeded(s, vec![cmp("x", Equal, T::Lease(0))]));
    assert!(!succeeded(
        s,
        vec![cmp("x", NotEqual, T::Value(b("anything")))]
    ));
    assert!(!succeeded(s, vec![cmp("x", Equal, T::Value(b("")))]));
}

#[test]
fn a_compare_with_range_end_must_hold_for_every_key() {
    let mut store = abcde();
    must_put(&mut store, "c", "again"); // c: version 2
    let ranged = |target: T, result, end: &str| Compare {
        range_end: b(end),
        ..cmp("a", result, target)
    };
    assert!(succeeded(
        &mut store,
        vec![ranged(T::Version(0), Greater, "e")]
    ));
    assert!(!succeeded(
        &mut store,
        vec![ranged(T::Version(1), Equal, "e")]
    ));
    assert!(succeeded(
        &mut store,
        vec![ranged(T::Version(1), Equal, "c")]
    ));
    assert!(succeeded(
        &mut store,
        vec![ranged(T::Version(3), Less, "\0")]
    ));
    // An empty range compares against an all-zero record.
    assert!(succeeded(
        &mut store,
        vec![Compare {
            range_end: b("y"),
            ..cmp("x", Equal, T::CreateRevision(0))
        }]
    ));
}

/// Observed on etcd 3.4.23: the operand is read only if the union variant matches the
/// target; otherwise it counts as zero.
#[test]
fn etcd_observed_a_mismatched_operand_counts_as_zero() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    let mismatched = Compare {
        target: compare::CompareTarget::Mod as i32,
        ..cmp("a", Equal, T::Version(2))
    };
    assert!(!succeeded(&mut store, vec![mismatched.clone()]));
    let vs_zero = Compare {
        result: compare::CompareResult::Greater as i32,
        ..mismatched
    };
    assert!(succeeded(&mut store, vec![vs_zero]));
}

#[test]
fn success_and_failure_branches_with_responses() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    let t = |v| {
        txn(
            vec![cmp("a", Equal, T::Value(b(v)))],
            vec![op_put(put("r", "then"))],
            vec![op_get(get("a", ""))],
        )
    };
    let fail = do_txn(&mut store, t("2")).unwrap();
    assert!(!fail.succeeded);
    assert_eq!(
        values(range_of(fail.responses[0].response.as_ref().unwrap())),
        ["1"]
    );
    let ok = do_txn(&mut store, t("1")).unwrap();
    assert!(ok.succeeded);
    assert!(matches!(
        ok.responses[0].response,
        Some(response_op::Response::ResponsePut(_))
    ));
    assert_eq!(value_of(&store, "r").as_deref(), Some("then"));
}

#[test]
fn reads_in_a_txn_see_its_earlier_writes_and_report_the_pending_revision() {
    let mut store = Store::new();
    must_put(&mut store, "a", "old"); // 2
    let resp = do_txn(
        &mut store,
        txn(
            vec![],
            vec![
                op_get(get("a", "")),
                op_put(put("a", "new")),
                op_get(get("a", "")),
                op_get(RangeRequest {
                    revision: 2,
                    ..get("a", "")
                }),
                op_del(del("zz", "")),
            ],
            vec![],
        ),
    )
    .unwrap();
    let r = |i: usize| range_of(resp.responses[i].response.as_ref().unwrap()).clone();
    assert_eq!(
        (values(&r(0)), header_rev(&r(0))),
        (vec!["old".to_string()], 2)
    );
    assert_eq!(
        (values(&r(2)), header_rev(&r(2))),
        (vec!["new".to_string()], 3)
    );
    assert_eq!(
        (values(&r(3)), header_rev(&r(3))),
        (vec!["old".to_string()], 3)
    );
    match resp.responses[4].response.as_ref().unwrap() {
        response_op::Response::ResponseDeleteRange(d) => {
            assert_eq!(d.header.as_ref().unwrap().revision, 3)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(resp.header.unwrap().revision, 3);
}

/// Observed on etcd 3.4.23: nested compares are decided before the outer txn writes, and
/// nested txn responses carry a header with revision 0.
#[test]
fn etcd_observed_nested_compares_see_the_state_before_the_txn() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    let resp = do_txn(
        &mut store,
        txn(
            vec![cmp("a", Greater, T::Version(0))],
            vec![
                op_put(put("x", "1")),
                op_txn(txn(
                    vec![cmp("x", Equal, T::Version(0))], // x did not exist before the txn
                    vec![op_put(put("z", "then")), op_get(get("z", ""))],
                    vec![op_put(put("w", "else"))],
                )),
            ],
            vec![],
        ),
    )
    .unwrap();
    assert!(resp.succeeded);
    let nested = match resp.responses[1].response.as_ref().unwrap() {
        response_op::Response::ResponseTxn(t) => t.clone(),
        other => panic!("{other:?}"),
    };
    assert!(nested.succeeded);
    assert_eq!(nested.header.unwrap().revision, 0);
    assert_eq!(
        values(range_of(nested.responses[1].response.as_ref().unwrap())),
        ["then"]
    );
    assert_eq!(value_of(&store, "z").as_deref(), Some("then"));
    assert_eq!(value_of(&store, "w"), None);
    assert_eq!(store.current_revision(), 3);
}

#[test]
fn too_many_operations() {
    let limits = Limits { max_txn_ops: 3 };
    let puts = |n: usize| {
        (0..n)
            .map(|i| op_put(put(&format!("k{i}"), "v")))
            .collect::<Vec<RequestOp>>()
    };
    assert!(validate::check_txn(&txn(vec![], puts(3), vec![]), &limits).is_ok());
    assert_eq!(
        validate::check_txn(&txn(vec![], puts(4), vec![]), &limits),
        Err(MvccError::TooManyOps)
    );
    assert_eq!(
        validate::check_txn(&txn(vec![], vec![], puts(4)), &limits),
        Err(MvccError::TooManyOps)
    );
    let compares = vec![cmp("a", Equal, T::Version(0)); 4];
    assert_eq!(
        validate::check_txn(&txn(compares, vec![], vec![]), &limits),
        Err(MvccError::TooManyOps)
    );
    // Default limit is etcd's 128.
    let mut store = Store::new();
    assert_eq!(
        do_txn(&mut store, txn(vec![], puts(129), vec![])),
        Err(MvccError::TooManyOps)
    );
    assert!(do_txn(&mut store, txn(vec![], puts(128), vec![])).is_ok());
}

/// Observed on etcd 3.4.23: a nested txn's budget is the parent's limit minus the parent's
/// own operation count (2 compares + 127 nested puts > 128, but 126 fit).
#[test]
fn etcd_observed_nested_txns_get_the_remaining_budget() {
    let nested = |n: usize| {
        txn(
            vec![cmp("a", Equal, T::Version(0)); 2],
            vec![op_txn(txn(
                vec![],
                (0..n).map(|i| op_put(put(&format!("t{i}"), "v"))).collect(),
                vec![],
            ))],
            vec![],
        )
    };
    let limits = Limits::default();
    assert_eq!(
        validate::check_txn(&nested(127), &limits),
        Err(MvccError::TooManyOps)
    );
    assert!(validate::check_txn(&nested(126), &limits).is_ok());
}

#[test]
fn apply_does_not_enforce_the_per_member_op_limit() {
    // Determinism: a txn already in the log applies the same everywhere, whatever
    // --max-txn-ops each member was started with.
    let mut store = Store::new();
    let big = txn(
        vec![],
        (0..200)
            .map(|i| op_put(put(&format!("k{i:03}"), "v")))
            .collect(),
        vec![],
    );
    let req = proto::raftkvpb::InternalRequest {
        auth: None,
        request: Some(proto::raftkvpb::internal_request::Request::Txn(big)),
    };
    assert!(store.apply(&req).is_ok());
    assert_eq!(store.key_count(), 200);
}

#[test]
fn empty_keys_and_empty_ops_are_rejected() {
    let mut store = Store::new();
    assert_eq!(
        do_txn(
            &mut store,
            txn(vec![cmp("", Equal, T::Version(0))], vec![], vec![])
        ),
        Err(MvccError::EmptyKey)
    );
    assert_eq!(
        do_txn(&mut store, txn(vec![], vec![op_get(get("", ""))], vec![])),
        Err(MvccError::EmptyKey)
    );
    assert_eq!(
        do_txn(&mut store, txn(vec![], vec![], vec![op_del(del("", ""))])),
        Err(MvccError::EmptyKey)
    );
    assert_eq!(
        do_txn(
            &mut store,
            txn(vec![], vec![RequestOp { request: None }], vec![])
        ),
        Err(MvccError::KeyNotFound)
    );
}

fn dup(success: Vec<RequestOp>) -> Result<(), MvccError> {
    validate::check_txn(&txn(vec![], success, vec![]), &Limits::default())
}

#[test]
fn duplicate_writes_within_a_branch() {
    assert_eq!(
        dup(vec![op_put(put("k", "1")), op_put(put("k", "2"))]),
        Err(MvccError::DuplicateKey)
    );
    assert_eq!(
        dup(vec![op_put(put("k", "1")), op_del(del("j", "l"))]),
        Err(MvccError::DuplicateKey)
    );
    assert_eq!(
        dup(vec![op_del(del("k", "")), op_put(put("k", "1"))]),
        Err(MvccError::DuplicateKey)
    );
    // Overlapping deletes are fine; reads never conflict.
    assert!(dup(vec![op_del(del("k", "")), op_del(del("j", "l"))]).is_ok());
    assert!(dup(vec![op_put(put("k", "1")), op_get(get("k", ""))]).is_ok());
    // Then- and else-branch of one txn are separate.
    assert!(validate::check_txn(
        &txn(
            vec![],
            vec![op_put(put("k", "1"))],
            vec![op_put(put("k", "2"))]
        ),
        &Limits::default()
    )
    .is_ok());
}

#[test]
fn duplicate_writes_across_nested_txns() {
    let nested =
        |then: Vec<RequestOp>, otherwise: Vec<RequestOp>| op_txn(txn(vec![], then, otherwise));
    // The two branches of one nested txn may write the same key.
    assert!(dup(vec![nested(
        vec![op_put(put("m", "t"))],
        vec![op_put(put("m", "e"))]
    )])
    .is_ok());
    // A nested put conflicts with a put or a delete of the parent.
    assert_eq!(
        dup(vec![
            nested(vec![op_put(put("n", "t"))], vec![]),
            op_put(put("n", "o"))
        ]),
        Err(MvccError::DuplicateKey)
    );
    assert_eq!(
        dup(vec![
            op_del(del("n", "")),
            nested(vec![op_put(put("n", "t"))], vec![])
        ]),
        Err(MvccError::DuplicateKey)
    );
    // Two nested txns putting the same key conflict.
    assert_eq!(
        dup(vec![
            nested(vec![op_put(put("q", "1"))], vec![]),
            nested(vec![op_put(put("q", "2"))], vec![])
        ]),
        Err(MvccError::DuplicateKey)
    );
    // A nested delete followed by a nested put of the key conflicts.
    assert_eq!(
        dup(vec![
            nested(vec![op_del(del("q", ""))], vec![]),
            nested(vec![op_put(put("q", "t"))], vec![])
        ]),
        Err(MvccError::DuplicateKey)
    );
}

/// Observed on etcd 3.4.23: two quirks of its interval check that let a key be put and
/// deleted in one txn. A from-key delete is the interval [key, "\0"), empty as a string
/// interval, so it never conflicts; and a nested put followed by a nested delete is not
/// checked. Both then execute in order.
#[test]
fn etcd_observed_put_then_delete_loopholes() {
    let mut store = Store::new();
    let resp = do_txn(
        &mut store,
        txn(
            vec![],
            vec![op_put(put("k", "1")), op_del(del("k", "\0"))],
            vec![],
        ),
    )
    .unwrap();
    assert_eq!(resp.header.unwrap().revision, 2);
    assert_eq!(value_of(&store, "k"), None, "the delete ran after the put");
    assert_eq!(store.last_events().len(), 2);

    let nested = |op: RequestOp| op_txn(txn(vec![], vec![op], vec![]));
    let resp = do_txn(
        &mut store,
        txn(
            vec![],
            vec![nested(op_put(put("p", "t"))), nested(op_del(del("p", "")))],
            vec![],
        ),
    )
    .unwrap();
    assert_eq!(resp.header.unwrap().revision, 3);
    assert_eq!(value_of(&store, "p"), None);
}

#[test]
fn a_txn_checks_puts_and_reads_of_the_chosen_path_before_writing() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    let before = store.clone();
    // A future read later in the branch fails the whole txn, including the earlier put.
    let r = do_txn(
        &mut store,
        txn(
            vec![],
            vec![
                op_put(put("b", "1")),
                op_get(RangeRequest {
                    revision: 99,
                    ..get("a", "")
                }),
            ],
            vec![],
        ),
    );
    assert_eq!(r, Err(MvccError::FutureRevision));
    assert_eq!(store, before);
    // Puts are checked before reads: the lease error wins over the future read.
    let r = do_txn(
        &mut store,
        txn(
            vec![],
            vec![
                op_get(RangeRequest {
                    revision: 99,
                    ..get("a", "")
                }),
                op_put(proto::etcdserverpb::PutRequest {
                    lease: 3,
                    ..put("a", "")
                }),
            ],
            vec![],
        ),
    );
    assert_eq!(r, Err(MvccError::LeaseNotFound));
    // Errors in the branch not taken do not matter.
    let r = do_txn(
        &mut store,
        txn(
            vec![cmp("a", Equal, T::Version(1))],
            vec![],
            vec![op_get(RangeRequest {
                revision: 99,
                ..get("a", "")
            })],
        ),
    );
    assert!(r.unwrap().succeeded);
    // A read of a compacted revision inside a txn fails too.
    must_put(&mut store, "a", "2"); // 3
    do_compact(&mut store, 3).unwrap();
    let r = do_txn(
        &mut store,
        txn(
            vec![],
            vec![op_get(RangeRequest {
                revision: 2,
                ..get("a", "")
            })],
            vec![],
        ),
    );
    assert_eq!(r, Err(MvccError::Compacted));
}

#[test]
fn read_only_txns_served_without_the_log_answer_like_applied_ones() {
    let mut store = abcde();
    let reads = txn(
        vec![cmp("a", Equal, T::Version(1))],
        vec![
            op_get(RangeRequest {
                limit: 2,
                ..get("a", "\0")
            }),
            op_txn(txn(
                vec![cmp("zz", Equal, T::Version(1))],
                vec![],
                vec![op_get(RangeRequest {
                    revision: 3,
                    ..get("b", "")
                })],
            )),
        ],
        vec![op_get(get("e", ""))],
    );
    assert!(mvcc::txn::is_read_only(&reads));
    let served = store.read_txn(&reads).unwrap();
    let applied = do_txn(&mut store, reads).unwrap();
    assert_eq!(served, applied);
    assert_eq!(store.current_revision(), 6);
}

#[test]
fn read_txn_refuses_writes_anywhere_and_keeps_read_errors() {
    let store = abcde();
    let nested_write = txn(
        vec![],
        vec![],
        vec![op_txn(txn(vec![], vec![op_del(del("a", ""))], vec![]))],
    );
    assert!(!mvcc::txn::is_read_only(&nested_write));
    assert!(matches!(
        store.read_txn(&nested_write),
        Err(MvccError::Internal(_))
    ));
    let future = txn(
        vec![],
        vec![op_get(RangeRequest {
            revision: 7,
            ..get("a", "")
        })],
        vec![],
    );
    assert_eq!(store.read_txn(&future), Err(MvccError::FutureRevision));
    assert_eq!(
        store.read_txn(&txn(vec![], vec![op_get(get("", ""))], vec![])),
        Err(MvccError::EmptyKey)
    );
}
