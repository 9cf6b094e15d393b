//! Snapshots: round trip, determinism, and rejection of damaged input.

mod common;
use common::*;
use mvcc::{SnapshotError, Store};

fn busy_store() -> Store {
    let mut store = abcde();
    do_del(&mut store, del("b", "")).unwrap();
    must_put(&mut store, "a", "again");
    do_txn(
        &mut store,
        txn(
            vec![],
            vec![op_put(put("x", "1")), op_del(del("c", "d"))],
            vec![],
        ),
    )
    .unwrap();
    do_compact(&mut store, 4).unwrap();
    must_put(&mut store, "bin\u{0}\u{ff}", "\u{1}");
    store
}

#[test]
fn restore_gives_back_an_equal_store_that_continues_identically() {
    let mut original = busy_store();
    let bytes = original.snapshot();
    let mut restored = Store::restore(&bytes).unwrap();
    assert_eq!(restored, original);
    assert_eq!(restored.hash_kv(0), original.hash_kv(0));
    assert_eq!(restored.approximate_size(), original.approximate_size());
    for store in [&mut original, &mut restored] {
        must_put(store, "z", "1");
        do_del(store, del("a", "\0")).unwrap();
    }
    assert_eq!(restored, original);
    assert_eq!(restored.last_events(), original.last_events());
}

#[test]
fn snapshots_are_deterministic() {
    assert_eq!(busy_store().snapshot(), busy_store().snapshot());
    assert_eq!(
        Store::new().snapshot(),
        Store::restore(&Store::new().snapshot()).unwrap().snapshot()
    );
}

#[test]
fn any_flipped_byte_is_detected() {
    let bytes = busy_store().snapshot();
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x40;
        assert!(
            Store::restore(&damaged).is_err(),
            "flip at {i} went unnoticed"
        );
    }
}

#[test]
fn truncated_or_foreign_input_is_rejected_without_panicking() {
    let bytes = busy_store().snapshot();
    for len in 0..bytes.len() {
        assert!(
            Store::restore(&bytes[..len]).is_err(),
            "truncation to {len} accepted"
        );
    }
    assert_eq!(
        Store::restore(b"definitely not a snapshot"),
        Err(SnapshotError::NotASnapshot)
    );
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&99u32.to_be_bytes());
    assert_eq!(
        Store::restore(&future),
        Err(SnapshotError::UnsupportedVersion(99))
    );
}
