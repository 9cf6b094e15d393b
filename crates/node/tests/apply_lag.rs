//! The backpressure rule with an apply stage (`Driver::set_apply_lag`): a caller that
//! applies on a thread of its own counts entries applied when it hands them over, so the
//! driver must hear how far behind that thread is to refuse proposals in time.

use std::time::Duration;

mod common;

use bytes::Bytes;
use common::TICK;
use node::{Driver, NodeError, Outcome};
use raft::Role;

/// A single-member cluster that has elected itself, with a small apply gap.
fn single_leader(max_apply_gap: u64) -> (Driver, Duration) {
    let mut cfg = common::config();
    cfg.max_apply_gap = max_apply_gap;
    let mut d = Driver::new(common::member(1, vec![1]), cfg, (0, 0), Duration::ZERO);
    let mut now = Duration::ZERO;
    while d.status().core.role != Role::Leader {
        assert!(now < Duration::from_secs(10), "no leader elected");
        now += TICK;
        d.tick(now);
        drain(&mut d);
    }
    drain(&mut d);
    (d, now)
}

/// Carries out every batch; returns (proposals answered by their entry, refusals).
fn drain(d: &mut Driver) -> (Vec<u64>, Vec<(u64, NodeError)>) {
    let (mut applied, mut refused) = (Vec::new(), Vec::new());
    while let Some(fx) = d.poll() {
        applied.extend(fx.apply.iter().filter_map(|i| i.answers));
        for r in fx.replies {
            if let Outcome::Failed(e) = r.outcome {
                refused.push((r.req, e));
            }
        }
        d.advance();
    }
    (applied, refused)
}

#[test]
fn a_stage_that_lags_by_more_than_the_gap_has_proposals_refused_until_it_catches_up() {
    let (mut d, _) = single_leader(10);
    d.propose(1, Bytes::from_static(b"a"));
    assert_eq!(
        drain(&mut d),
        (vec![1], vec![]),
        "no lag: taken and applied"
    );

    // The driver handed everything over; the stage says it is 11 entries behind.
    d.set_apply_lag(11);
    d.propose(2, Bytes::from_static(b"b"));
    let (applied, refused) = drain(&mut d);
    assert!(applied.is_empty());
    assert_eq!(refused, vec![(2, NodeError::TooManyRequests)]);

    // At the gap itself a proposal is still taken (the rule is "more than").
    d.set_apply_lag(10);
    d.propose(3, Bytes::from_static(b"c"));
    assert_eq!(drain(&mut d), (vec![3], vec![]));

    d.set_apply_lag(0);
    d.propose(4, Bytes::from_static(b"d"));
    assert_eq!(drain(&mut d), (vec![4], vec![]));
}
