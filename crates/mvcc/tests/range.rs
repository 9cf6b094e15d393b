//! Range: key selection, revisions, limit/more/count, sorting, filters, flags.

mod common;
use common::*;
use mvcc::{key_range::prefix_end, MvccError, Store};
use proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use proto::etcdserverpb::RangeRequest;

#[test]
fn single_key_span_prefix_from_key_and_all() {
    let mut store = abcde();
    must_put(&mut store, "ab", "x");
    assert_eq!(keys(&store.range(&get("a", "")).unwrap()), ["a"]);
    assert_eq!(keys(&store.range(&get("b", "d")).unwrap()), ["b", "c"]);
    let end = String::from_utf8(prefix_end(b"a")).unwrap();
    assert_eq!(keys(&store.range(&get("a", &end)).unwrap()), ["a", "ab"]);
    assert_eq!(
        keys(&store.range(&get("c", "\0")).unwrap()),
        ["c", "d", "e"]
    );
    assert_eq!(
        keys(&store.range(&get("\0", "\0")).unwrap()),
        ["a", "ab", "b", "c", "d", "e"]
    );
    assert!(store.range(&get("zz", "")).unwrap().kvs.is_empty());
}

#[test]
fn an_inverted_or_empty_span_is_empty_not_an_error() {
    let store = abcde();
    let resp = store.range(&get("d", "b")).unwrap();
    assert!(resp.kvs.is_empty());
    assert_eq!(resp.count, 0);
    assert!(store.range(&get("c", "c")).unwrap().kvs.is_empty());
}

#[test]
fn an_empty_key_is_rejected() {
    let store = abcde();
    assert_eq!(store.range(&get("", "")), Err(MvccError::EmptyKey));
    assert_eq!(store.range(&get("", "z")), Err(MvccError::EmptyKey));
}

#[test]
fn limit_sets_more_and_count_ignores_limit() {
    let store = abcde();
    let resp = store
        .range(&RangeRequest {
            limit: 2,
            ..get("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), ["a", "b"]);
    assert!(resp.more);
    assert_eq!(resp.count, 5);
    let exact = store
        .range(&RangeRequest {
            limit: 5,
            ..get("a", "\0")
        })
        .unwrap();
    assert!(!exact.more);
    assert_eq!(exact.kvs.len(), 5);
    // A negative limit means no limit, as in etcd.
    let negative = store
        .range(&RangeRequest {
            limit: -1,
            ..get("a", "\0")
        })
        .unwrap();
    assert_eq!(negative.kvs.len(), 5);
}

#[test]
fn count_only_returns_only_the_count_and_never_more() {
    let store = abcde();
    let resp = store
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..get("a", "\0")
        })
        .unwrap();
    assert!(resp.kvs.is_empty());
    assert!(!resp.more);
    assert_eq!(resp.count, 5);
}

#[test]
fn keys_only_drops_values_but_sorting_by_value_still_works() {
    let mut store = Store::new();
    must_put(&mut store, "a", "2");
    must_put(&mut store, "b", "3");
    must_put(&mut store, "c", "1");
    let resp = store
        .range(&RangeRequest {
            keys_only: true,
            sort_target: SortTarget::Value as i32,
            sort_order: SortOrder::Descend as i32,
            ..get("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), ["b", "a", "c"]);
    assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(resp.kvs[0].version, 1);
}

#[test]
fn sorting_by_each_target() {
    let mut store = Store::new();
    must_put(&mut store, "c", "1"); // 2
    must_put(&mut store, "a", "3"); // 3
    must_put(&mut store, "b", "2"); // 4
    must_put(&mut store, "c", "0"); // 5: c has version 2
    let sorted = |target: SortTarget, order: SortOrder| {
        keys(
            &store
                .range(&RangeRequest {
                    sort_target: target as i32,
                    sort_order: order as i32,
                    ..get("a", "\0")
                })
                .unwrap(),
        )
    };
    assert_eq!(sorted(SortTarget::Key, SortOrder::Descend), ["c", "b", "a"]);
    assert_eq!(sorted(SortTarget::Key, SortOrder::Ascend), ["a", "b", "c"]);
    assert_eq!(
        sorted(SortTarget::Create, SortOrder::Ascend),
        ["c", "a", "b"]
    );
    assert_eq!(sorted(SortTarget::Mod, SortOrder::Descend), ["c", "b", "a"]);
    assert_eq!(
        sorted(SortTarget::Value, SortOrder::Ascend),
        ["c", "b", "a"]
    );
    // Equal versions keep ascending key order in both directions.
    assert_eq!(
        sorted(SortTarget::Version, SortOrder::Descend),
        ["c", "a", "b"]
    );
    // A non-key target with order NONE sorts ascending.
    assert_eq!(sorted(SortTarget::Create, SortOrder::None), ["c", "a", "b"]);
}

/// Observed on etcd 3.4.23: with a non-KEY sort target, order NONE and a limit, etcd
/// fetches only limit+1 keys in key order and sorts those.
#[test]
fn etcd_observed_sort_target_without_order_sorts_only_the_first_limit_plus_one_keys() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    must_put(&mut store, "a", "2"); // a: version 2
    must_put(&mut store, "b", "3"); // b: version 1
    must_put(&mut store, "c", "1");
    must_put(&mut store, "c", "2");
    must_put(&mut store, "c", "0"); // c: version 3
    must_put(&mut store, "d", "9"); // d: version 1
    let resp = store
        .range(&RangeRequest {
            limit: 2,
            sort_target: SortTarget::Version as i32,
            ..get("a", "z")
        })
        .unwrap();
    // Sorted among a, b, c only: b(1), a(2); d (version 1) is not considered.
    assert_eq!(keys(&resp), ["b", "a"]);
    assert!(resp.more);
    assert_eq!(resp.count, 4);
    // With an explicit order etcd sorts everything.
    let resp = store
        .range(&RangeRequest {
            limit: 2,
            sort_target: SortTarget::Version as i32,
            sort_order: SortOrder::Descend as i32,
            ..get("a", "z")
        })
        .unwrap();
    assert_eq!(keys(&resp), ["c", "a"]);
}

/// Observed on etcd 3.4.23 (keys v1=c, v2=b, v3=a): `sort_order` 5 or -1 with target KEY or
/// VALUE answers v1, v2, v3 — no sort, every key fetched, then `limit` applied.
#[test]
fn etcd_observed_an_unknown_sort_order_is_no_order() {
    let mut store = Store::new();
    must_put(&mut store, "v1", "c");
    must_put(&mut store, "v2", "b");
    must_put(&mut store, "v3", "a");
    for order in [5, -1, 7] {
        for target in [SortTarget::Key, SortTarget::Value, SortTarget::Version] {
            let resp = store
                .range(&RangeRequest {
                    sort_order: order,
                    sort_target: target as i32,
                    ..get("v1", "v4")
                })
                .unwrap();
            assert_eq!(keys(&resp), ["v1", "v2", "v3"], "order {order} {target:?}");
            let resp = store
                .range(&RangeRequest {
                    sort_order: order,
                    sort_target: target as i32,
                    limit: 2,
                    ..get("v1", "v4")
                })
                .unwrap();
            assert_eq!(keys(&resp), ["v1", "v2"], "order {order} {target:?}");
            assert!(resp.more);
            assert_eq!(resp.count, 3);
        }
    }
    // The same inside a txn: validated before proposing and again when applied.
    let read = txn(
        vec![],
        vec![op_get(RangeRequest {
            sort_order: 5,
            sort_target: SortTarget::Value as i32,
            ..get("v1", "v4")
        })],
        vec![],
    );
    assert!(mvcc::validate::check_txn(&read, &mvcc::Limits::default()).is_ok());
    let resp = store.read_txn(&read).unwrap();
    let Some(proto::etcdserverpb::response_op::Response::ResponseRange(r)) =
        &resp.responses[0].response
    else {
        panic!("not a range response: {resp:?}");
    };
    assert_eq!(keys(r), ["v1", "v2", "v3"]);
}

/// etcd 3.4.23 crashes on an unknown `sort_target`; we answer like etcd 3.5+.
#[test]
fn an_unknown_sort_target_is_rejected() {
    let store = abcde();
    assert_eq!(
        store.range(&RangeRequest {
            sort_target: 9,
            ..get("a", "")
        }),
        Err(MvccError::InvalidSortOption)
    );
}

#[test]
fn revision_filters_prune_but_count_is_unfiltered() {
    let store = abcde(); // a..e at revisions 2..6
    let resp = store
        .range(&RangeRequest {
            min_mod_revision: 3,
            max_mod_revision: 5,
            ..get("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), ["b", "c", "d"]);
    assert_eq!(resp.count, 5);
    let resp = store
        .range(&RangeRequest {
            min_create_revision: 5,
            ..get("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), ["d", "e"]);
    let resp = store
        .range(&RangeRequest {
            max_create_revision: 3,
            ..get("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), ["a", "b"]);
    // With a limit, `more` reflects the filtered rows.
    let resp = store
        .range(&RangeRequest {
            min_mod_revision: 4,
            max_mod_revision: 5,
            limit: 1,
            ..get("a", "\0")
        })
        .unwrap();
    assert_eq!(keys(&resp), ["c"]);
    assert!(resp.more);
}

#[test]
fn reads_at_old_revisions_see_old_values_and_header_is_current() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    must_put(&mut store, "a", "2"); // 3
    do_del(&mut store, del("a", "")).unwrap(); // 4
    must_put(&mut store, "b", "1"); // 5
    let at = |rev: i64| {
        store
            .range(&RangeRequest {
                revision: rev,
                ..get("a", "\0")
            })
            .unwrap()
    };
    assert!(at(1).kvs.is_empty());
    assert_eq!(values(&at(2)), ["1"]);
    assert_eq!(values(&at(3)), ["2"]);
    assert!(keys(&at(4)).is_empty());
    assert_eq!(keys(&at(5)), ["b"]);
    assert_eq!(header_rev(&at(2)), 5);
    assert_eq!(at(3).kvs[0].mod_revision, 3);
}

#[test]
fn future_and_compacted_revisions_fail() {
    let mut store = abcde(); // at 6
    let req = |rev| RangeRequest {
        revision: rev,
        ..get("a", "")
    };
    assert_eq!(store.range(&req(7)), Err(MvccError::FutureRevision));
    assert!(store.range(&req(6)).is_ok());
    do_compact(&mut store, 4).unwrap();
    assert_eq!(store.range(&req(3)), Err(MvccError::Compacted));
    assert!(
        store.range(&req(4)).is_ok(),
        "reading at the compaction revision works"
    );
    assert!(store.range(&req(0)).is_ok());
    assert!(store.range(&req(-3)).is_ok(), "revision <= 0 means latest");
}
