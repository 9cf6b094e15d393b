//! `Driver::request_snapshot` (the server's Defragment): a snapshot of everything applied
//! is asked for at once, whatever `snapshot_count` says, and only when there is something
//! to compact.

use std::time::Duration;

mod common;

use bytes::Bytes;
use common::TICK;
use node::Driver;

/// A single-member cluster that never snapshots by count.
fn single_member() -> Driver {
    Driver::new(
        common::member(1, vec![1]),
        common::config(),
        (0, 0),
        Duration::ZERO,
    )
}

/// Runs every batch (as if written, sent and applied) and reports whether one asked for
/// a snapshot, and at which index.
fn drain(d: &mut Driver) -> Option<u64> {
    let mut asked = None;
    while let Some(fx) = d.poll() {
        if let Some(s) = fx.start_snapshot {
            asked = Some(s.index);
        }
        d.advance();
    }
    asked
}

#[test]
fn a_requested_snapshot_covers_everything_applied() {
    let mut d = single_member();
    let mut now = Duration::ZERO;
    for _ in 0..100 {
        now += TICK;
        d.tick(now);
        assert_eq!(
            drain(&mut d),
            None,
            "snapshot_count 0 never snapshots by itself"
        );
        if d.status().core.leader == Some(1) {
            break;
        }
    }
    assert_eq!(
        d.status().core.leader,
        Some(1),
        "single member elects itself"
    );
    d.propose(1, Bytes::from_static(b"x"));
    assert_eq!(drain(&mut d), None);
    let applied = d.status().applied;
    assert!(applied >= 2, "no-op and proposal applied: {applied}");

    assert!(d.request_snapshot());
    assert_eq!(drain(&mut d), Some(applied));
    // Asked once, started once.
    assert_eq!(drain(&mut d), None);
}

#[test]
fn nothing_to_compact_before_anything_is_applied() {
    let mut d = single_member();
    assert!(!d.request_snapshot());
    assert_eq!(drain(&mut d), None);
}
