//! `Driver::request_snapshot` (the server's Defragment): a snapshot of everything applied
//! is asked for at once, whatever `snapshot_count` says, and only when there is something
//! to compact.

use std::time::Duration;

use bytes::Bytes;
use node::{Driver, DriverConfig};
use raft::{ConfState, HardState, InitialState, RaftNode};

const TICK: Duration = Duration::from_millis(10);

/// A single-member cluster that never snapshots by count.
fn single_member() -> Driver {
    let initial = InitialState {
        hard_state: HardState::default(),
        conf_state: ConfState {
            voters: vec![1],
            learners: vec![],
        },
        snapshot: None,
        entries: vec![],
        applied: 0,
    };
    let raft = RaftNode::new(raft::Config::new(1), initial).expect("core");
    let cfg = DriverConfig {
        tick_interval: TICK,
        max_catch_up_ticks: 10,
        election_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
        snapshot_count: 0,
        snapshot_size_floor: u64::MAX,
        max_apply_gap: 5000,
        forward_id_base: 1 << 40,
        promote_check_interval: Duration::from_millis(100),
        unsafe_promote_unsynced: false,
        lease: node::LeaseConfig::default(),
    };
    Driver::new(raft, cfg, (0, 0), Duration::ZERO)
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
