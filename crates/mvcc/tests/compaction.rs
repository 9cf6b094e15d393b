//! Compaction, HashKV and watch events.

mod common;
use common::*;
use mvcc::{MvccError, Store};
use proto::etcdserverpb::RangeRequest;
use proto::mvccpb::event::EventType;

#[test]
fn compaction_bounds() {
    let mut store = abcde(); // at 6
    assert_eq!(do_compact(&mut store, 7), Err(MvccError::FutureRevision));
    do_compact(&mut store, 4).unwrap();
    assert_eq!(store.compact_revision(), 4);
    assert_eq!(do_compact(&mut store, 4), Err(MvccError::Compacted));
    assert_eq!(do_compact(&mut store, 3), Err(MvccError::Compacted));
    do_compact(&mut store, 6).unwrap();
    assert_eq!(
        store.current_revision(),
        6,
        "compaction does not bump the revision"
    );
}

/// Observed on etcd 3.4.23: a fresh store (compact revision -1) accepts Compact(0).
#[test]
fn etcd_observed_compacting_at_zero_on_a_fresh_store() {
    let mut store = Store::new();
    do_compact(&mut store, 0).unwrap();
    assert_eq!(store.compact_revision(), 0);
    assert_eq!(do_compact(&mut store, 0), Err(MvccError::Compacted));
}

#[test]
fn compaction_keeps_what_is_visible_at_and_after_the_compaction_revision() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    must_put(&mut store, "a", "2"); // 3
    must_put(&mut store, "b", "1"); // 4
    do_del(&mut store, del("b", "")).unwrap(); // 5
    must_put(&mut store, "a", "3"); // 6
    must_put(&mut store, "c", "1"); // 7
    let expected: Vec<_> = (4..=7)
        .map(|rev| {
            store
                .range(&RangeRequest {
                    revision: rev,
                    ..get("\0", "\0")
                })
                .unwrap()
        })
        .collect();
    let size_before = store.approximate_size();
    do_compact(&mut store, 4).unwrap();
    for (i, rev) in (4..=7).enumerate() {
        assert_eq!(
            store
                .range(&RangeRequest {
                    revision: rev,
                    ..get("\0", "\0")
                })
                .unwrap(),
            expected[i],
            "rev {rev}"
        );
    }
    assert!(
        store.approximate_size() < size_before,
        "history was dropped"
    );
    do_compact(&mut store, 7).unwrap();
    assert_eq!(store.range(&get("\0", "\0")).unwrap(), expected[3]);
    assert_eq!(store.key_count(), 2);
}

#[test]
fn hash_kv_rules_and_compact_revision() {
    let mut store = abcde(); // at 6
    let h = store.hash_kv(0).unwrap();
    assert_eq!((h.compact_revision, h.hash_revision), (-1, 6));
    assert_eq!(store.hash_kv(7), Err(MvccError::FutureRevision));
    assert_eq!(store.hash_kv(3).unwrap().hash_revision, 3);
    assert_ne!(store.hash_kv(3).unwrap().hash, h.hash);
    do_compact(&mut store, 3).unwrap();
    // Observed on etcd 3.4.23: hashing at exactly the compaction revision is "compacted".
    assert_eq!(store.hash_kv(3), Err(MvccError::Compacted));
    assert_eq!(store.hash_kv(4).unwrap().compact_revision, 3);
}

#[test]
fn equal_histories_hash_equal_and_any_difference_shows() {
    let mut one = abcde();
    let mut two = abcde();
    assert_eq!(one.hash_kv(0), two.hash_kv(0));
    must_put(&mut one, "x", "1");
    must_put(&mut two, "x", "2");
    assert_ne!(one.hash_kv(0).unwrap().hash, two.hash_kv(0).unwrap().hash);
    // Up to the revision before they diverged, they still agree.
    assert_eq!(one.hash_kv(6), two.hash_kv(6));
}

#[test]
fn last_events_describe_the_last_apply() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1");
    let e = &store.last_events()[0];
    assert_eq!(e.r#type, EventType::Put as i32);
    assert_eq!(e.kv.as_ref().unwrap().version, 1);
    assert!(e.prev_kv.is_none());
    must_put(&mut store, "a", "2");
    let e = &store.last_events()[0];
    assert_eq!(e.prev_kv.as_ref().unwrap().value, b("1"));
    do_del(&mut store, del("a", "")).unwrap();
    let e = &store.last_events()[0];
    assert_eq!(e.r#type, EventType::Delete as i32);
    let kv = e.kv.as_ref().unwrap();
    // A delete event carries only the key and the deletion revision.
    assert_eq!(
        (
            kv.key.clone(),
            kv.mod_revision,
            kv.version,
            kv.create_revision
        ),
        (b("a"), 4, 0, 0)
    );
    assert!(kv.value.is_empty());
    assert_eq!(e.prev_kv.as_ref().unwrap().value, b("2"));
    store.range(&get("a", "")).unwrap();
    assert_eq!(
        store.last_events().len(),
        1,
        "reads do not touch the events"
    );
    assert!(do_put(&mut store, put("", "")).is_err());
}

#[test]
fn events_between_replays_history_in_revision_order() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    do_txn(
        &mut store,
        txn(
            vec![],
            vec![op_put(put("c", "1")), op_put(put("b", "1"))],
            vec![],
        ),
    )
    .unwrap(); // 3
    do_del(&mut store, del("a", "")).unwrap(); // 4
    must_put(&mut store, "b", "2"); // 5
    let events = store.events_between(3, 5).unwrap();
    let summary: Vec<(i64, String, i32)> = events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                kv.mod_revision,
                String::from_utf8_lossy(&kv.key).into_owned(),
                e.r#type,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, "c".into(), EventType::Put as i32),
            (3, "b".into(), EventType::Put as i32),
            (4, "a".into(), EventType::Delete as i32),
            (5, "b".into(), EventType::Put as i32),
        ]
    );
    assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b("1"));
    assert_eq!(events[3].prev_kv.as_ref().unwrap().value, b("1"));
    assert!(store.events_between(6, 10).unwrap().is_empty());
}

#[test]
fn events_at_the_compaction_revision_survive_it() {
    let mut store = Store::new();
    must_put(&mut store, "a", "1"); // 2
    do_del(&mut store, del("a", "")).unwrap(); // 3
    must_put(&mut store, "b", "1"); // 4
    do_compact(&mut store, 3).unwrap();
    let events = store.events_between(3, 4).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].r#type, EventType::Delete as i32);
    assert_eq!(store.events_between(2, 4), Err(MvccError::Compacted));
    // A later compaction drops the old tombstone.
    do_compact(&mut store, 4).unwrap();
    assert_eq!(store.events_between(4, 4).unwrap().len(), 1);
}
