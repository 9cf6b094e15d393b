//! A compaction drops history a step per apply ([`crate::store::COMPACTION_STEP`]): at every
//! step the store answers exactly as a store whose compaction finished at once.

use bytes::Bytes;
use proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest};

use crate::store::COMPACTION_STEP;
use crate::{MvccError, Store};

fn apply(store: &mut Store, r: Internal) -> Result<crate::Response, MvccError> {
    store.apply(&InternalRequest {
        auth: None,
        request: Some(r),
    })
}

fn put(key: String, value: &str) -> Internal {
    Internal::Put(PutRequest {
        key: Bytes::from(key),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    })
}

/// Many revisions over a few keys: overwrites, deletions, deleted-then-recreated keys.
fn history() -> Store {
    let mut s = Store::new();
    for i in 0..5 * 1024 {
        let key = format!("k{:03}", i % 97);
        if i % 13 == 0 {
            apply(
                &mut s,
                Internal::DeleteRange(DeleteRangeRequest {
                    key: Bytes::from(key),
                    ..Default::default()
                }),
            )
            .expect("delete");
        } else {
            apply(&mut s, put(key, &format!("v{i}"))).expect("put");
        }
    }
    s
}

fn all(rev: i64) -> RangeRequest {
    RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        revision: rev,
        ..Default::default()
    }
}

/// What a client can see: ranges at and after the compaction point, history for watchers,
/// HashKV at every revision from the compaction point on, the key count.
fn assert_same_answers(a: &Store, b: &Store, compacted: i64) {
    assert_eq!(a.compact_revision(), b.compact_revision());
    assert_eq!(a.current_revision(), b.current_revision());
    for rev in [
        compacted,
        compacted + 1,
        (compacted + a.current_revision()) / 2,
        0,
    ] {
        assert_eq!(a.range(&all(rev)), b.range(&all(rev)), "range at {rev}");
    }
    assert_eq!(
        a.events_between(compacted, a.current_revision()),
        b.events_between(compacted, b.current_revision())
    );
    for rev in [compacted + 1, a.current_revision(), 0] {
        assert_eq!(a.hash_kv(rev), b.hash_kv(rev), "hash_kv at {rev}");
    }
    assert_eq!(a.range(&all(compacted - 1)), Err(MvccError::Compacted));
    assert_eq!(b.range(&all(compacted - 1)), Err(MvccError::Compacted));
    assert_eq!(a.key_count(), b.key_count());
}

#[test]
fn a_compaction_answers_as_compacted_from_its_apply_and_drops_history_step_by_step() {
    let mut s = history();
    let at = s.current_revision() - 100;
    let before = s.approximate_size();
    apply(
        &mut s,
        Internal::Compaction(CompactionRequest {
            revision: at,
            physical: false,
        }),
    )
    .expect("compact");
    assert!(
        s.compaction_in_progress(),
        "5 steps of history: not done in one"
    );
    let mut done = s.clone();
    done.finish_compaction();
    assert!(!done.compaction_in_progress());
    assert!(done.approximate_size() < before / 10);
    assert_same_answers(&s, &done, at);

    // Every later apply takes one step; answers stay those of the finished store.
    let mut steps = 0;
    while s.compaction_in_progress() {
        let size = s.approximate_size();
        // A refused request steps too (every member steps at every entry).
        let _ = apply(
            &mut s,
            Internal::Compaction(CompactionRequest {
                revision: 1,
                physical: false,
            }),
        );
        assert!(s.approximate_size() <= size);
        assert_same_answers(&s, &done, at);
        // A snapshot taken mid-way carries the progress.
        let restored = Store::restore(&s.snapshot()).expect("restore");
        assert_eq!(restored, s);
        steps += 1;
        assert!(steps <= COMPACTION_STEP * 5, "the compaction does not end");
    }
    assert!(steps >= 3, "{steps} steps");
    assert_eq!(s, done, "finished step by step = finished at once");
}

#[test]
fn a_new_compaction_takes_over_one_in_progress() {
    let mut s = history();
    let first = s.current_revision() / 3;
    let second = s.current_revision() - 10;
    for rev in [first, second] {
        apply(
            &mut s,
            Internal::Compaction(CompactionRequest {
                revision: rev,
                physical: false,
            }),
        )
        .expect("compact");
    }
    let mut reference = history();
    apply(
        &mut reference,
        Internal::Compaction(CompactionRequest {
            revision: second,
            physical: false,
        }),
    )
    .expect("compact");
    reference.finish_compaction();
    assert_same_answers(&s, &reference, second);
    s.finish_compaction();
    assert_eq!(s.range(&all(0)), reference.range(&all(0)));
    assert_eq!(s.approximate_size(), reference.approximate_size());
    assert_eq!(s.hash_kv(0), reference.hash_kv(0));
}

#[test]
fn writes_during_a_compaction_are_kept() {
    let mut s = history();
    let at = s.current_revision();
    apply(
        &mut s,
        Internal::Compaction(CompactionRequest {
            revision: at,
            physical: false,
        }),
    )
    .expect("compact");
    for i in 0..20 {
        apply(&mut s, put(format!("k{:03}", i), "new")).expect("put");
    }
    s.finish_compaction();
    let got = s.range(&all(0)).expect("range");
    for i in 0..20 {
        let kv = got
            .kvs
            .iter()
            .find(|kv| kv.key == format!("k{i:03}").as_bytes())
            .expect("key");
        assert_eq!(&kv.value[..], b"new");
    }
    assert_eq!(
        s.events_between(at + 1, s.current_revision())
            .expect("history after the compaction")
            .len(),
        20
    );
}
