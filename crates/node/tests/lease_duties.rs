//! `Driver::lease_duties`: only a leader decides; an expiry waits for a read barrier asked
//! after the lease ran out and for the apply of its index, and covers only the leases that
//! had run out when it was asked; checkpoints come at their cadence, without a barrier.

use std::time::Duration;

mod common;

use bytes::Bytes;
use common::TICK;
use node::{Driver, DriverConfig, LeaseConfig, LeaseDecision, Lessor};
use raft::EntryKind;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A driver whose lease duties expire a lease as soon as its deadline passed (no grace),
/// unless a test asks for one.
fn driver(voters: Vec<u64>) -> Driver {
    driver_with_grace(voters, Duration::ZERO)
}

fn driver_with_grace(voters: Vec<u64>, expiry_grace: Duration) -> Driver {
    driver_with(
        voters,
        LeaseConfig {
            expiry_grace,
            ..LeaseConfig::default()
        },
    )
}

fn driver_with(voters: Vec<u64>, lease: LeaseConfig) -> Driver {
    let cfg = DriverConfig {
        lease,
        ..common::config()
    };
    Driver::new(common::member(1, voters), cfg, (0, 0), Duration::ZERO)
}

/// Carries out every batch; returns the normal entries applied.
fn drain(d: &mut Driver) -> Vec<Bytes> {
    let mut applied = Vec::new();
    while let Some(fx) = d.poll() {
        for item in fx.apply {
            if item.entry.kind == EntryKind::Normal {
                applied.push(item.entry.data.clone());
            }
        }
        d.advance();
    }
    applied
}

fn encode(d: &LeaseDecision) -> Bytes {
    Bytes::from(format!("{d:?}"))
}

/// A single member that leads, at time `now`.
fn leader() -> (Driver, Duration) {
    leader_with_grace(Duration::ZERO)
}

fn leader_with_grace(grace: Duration) -> (Driver, Duration) {
    leader_with(LeaseConfig {
        expiry_grace: grace,
        ..LeaseConfig::default()
    })
}

fn leader_with(lease: LeaseConfig) -> (Driver, Duration) {
    let mut d = driver_with(vec![1], lease);
    let mut now = Duration::ZERO;
    while d.status().core.leader != Some(1) {
        now += TICK;
        d.tick(now);
        drain(&mut d);
        assert!(now < Duration::from_secs(5), "single member elects itself");
    }
    (d, now)
}

#[test]
fn a_leader_expires_only_after_a_barrier_asked_once_the_lease_ran_out() {
    let (mut d, mut now) = leader();
    let mut lessor = Lessor::new();
    lessor.renewed(7, 0, ms(1000), now);
    lessor.renewed(8, 0, ms(1100), now);
    let start = now;
    // Before the deadline: nothing to decide, no barrier.
    while now < start + ms(990) {
        now += TICK;
        d.tick(now);
        if d.lease_duties_due() {
            assert!(d.lease_duties(&lessor, now, encode).is_empty());
        }
        assert!(drain(&mut d).is_empty());
    }
    // Past lease 7's deadline: the first call asks for the barrier, decides nothing.
    now = start + ms(1050);
    d.tick(now);
    assert!(d.lease_duties_due());
    assert!(d.lease_duties(&lessor, now, encode).is_empty());
    drain(&mut d); // the single member confirms its read at once
                   // Lease 8 runs out meanwhile; the decision still covers only what the barrier saw.
    now = start + ms(1200);
    d.tick(now);
    assert!(d.lease_duties_due());
    let decided = d.lease_duties(&lessor, now, encode);
    assert_eq!(decided.len(), 1, "{decided:?}");
    let LeaseDecision::Expire {
        term,
        leases,
        barrier,
    } = &decided[0]
    else {
        panic!("{decided:?}")
    };
    assert_eq!(*term, d.status().core.hard_state.term);
    assert_eq!(leases.iter().map(|l| l.id).collect::<Vec<_>>(), [7]);
    let barrier = barrier.expect("backed by a barrier");
    assert_eq!(barrier.asked_at, start + ms(1050));
    assert!(barrier.index <= d.status().applied);
    // The driver placed it in the log itself.
    assert_eq!(drain(&mut d), vec![encode(&decided[0])]);
}

#[test]
fn a_lease_is_expired_only_once_its_deadline_passed_by_the_grace() {
    let (mut d, mut now) = leader_with_grace(ms(300));
    let mut lessor = Lessor::new();
    lessor.renewed(7, 0, ms(1000), now);
    let start = now;
    // Past the deadline but within the grace: no barrier, no decision.
    while now < start + ms(1290) {
        now += TICK;
        d.tick(now);
        if d.lease_duties_due() {
            assert!(d.lease_duties(&lessor, now, encode).is_empty());
        }
        assert!(
            drain(&mut d).is_empty(),
            "nothing proposed at {:?}",
            now - start
        );
    }
    // Past deadline + grace: a barrier, then the expiry.
    let mut decided = Vec::new();
    while decided.is_empty() {
        now += TICK;
        d.tick(now);
        if d.lease_duties_due() {
            decided = d.lease_duties(&lessor, now, encode);
        }
        drain(&mut d);
        assert!(now < start + ms(2000), "lease 7 never expired");
    }
    let LeaseDecision::Expire {
        leases, barrier, ..
    } = &decided[0]
    else {
        panic!("{decided:?}")
    };
    assert_eq!(leases.iter().map(|l| l.id).collect::<Vec<_>>(), [7]);
    assert!(barrier.expect("backed by a barrier").asked_at >= start + ms(1300));
}

#[test]
fn a_follower_never_decides() {
    let mut d = driver(vec![1, 2, 3]);
    let mut lessor = Lessor::new();
    lessor.renewed(7, 0, ms(100), Duration::ZERO);
    // Member 1 alone never wins an election of three: it stays a (pre-)candidate.
    let mut now = Duration::ZERO;
    for _ in 0..300 {
        now += TICK;
        d.tick(now);
        if d.lease_duties_due() {
            assert!(d.lease_duties(&lessor, now, encode).is_empty());
        }
        assert!(drain(&mut d).is_empty());
    }
}

#[test]
fn checkpoints_come_at_their_cadence_without_a_barrier() {
    let (mut d, mut now) = leader();
    let mut lessor = Lessor::new();
    let granted = now;
    lessor.renewed(5, 3, Duration::from_secs(60), granted);
    let mut seen = Vec::new();
    while now < granted + Duration::from_secs(7) {
        now += TICK;
        d.tick(now);
        if d.lease_duties_due() {
            for decision in d.lease_duties(&lessor, now, encode) {
                seen.push((now, decision));
            }
        }
        drain(&mut d);
    }
    let (at, first) = seen.first().expect("a checkpoint");
    assert!(*at >= granted + Duration::from_secs(5), "{at:?}");
    assert!(*at < granted + Duration::from_secs(7), "{at:?}");
    let LeaseDecision::Checkpoint { leases, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(leases[0].0.id, 5);
    assert_eq!(leases[0].0.renewals, 3);
    assert_eq!(leases[0].1, granted + Duration::from_secs(60) - *at);
}

/// With more leases run out than one decision takes, the next barrier waits until the last
/// decision's leases left the lease clock (its entry applied here): a barrier confirmed
/// before that finds the same leases run out and decides them again, an entry that
/// revokes nothing (every other decision of a mass expiry was such a duplicate).
#[test]
fn a_leader_decides_again_only_once_its_last_expiry_is_applied() {
    let (mut d, mut now) = leader();
    let max = LeaseConfig::default().max_batch;
    let mut lessor = Lessor::new();
    let total = max as i64 + max as i64 / 2;
    for id in 1..=total {
        lessor.renewed(id, 0, ms(1000), now);
    }
    now += ms(1100);
    let mut decided_ids: Vec<i64> = Vec::new();
    let mut rounds_waiting = 0;
    for _ in 0..200 {
        now += TICK;
        d.tick(now);
        if d.lease_duties_due() {
            for decision in d.lease_duties(&lessor, now, encode) {
                let LeaseDecision::Expire { leases, .. } = decision else {
                    continue;
                };
                for at in &leases {
                    assert!(
                        !decided_ids.contains(&at.id),
                        "lease {} decided twice: once its first decision was placed, no \
                         barrier may be asked until that decision is applied",
                        at.id
                    );
                    decided_ids.push(at.id);
                }
                // The decision is in the log but not applied yet: a few rounds pass with
                // the lease clock unchanged, and nothing more may be decided.
                for _ in 0..5 {
                    now += TICK;
                    d.tick(now);
                    drain(&mut d);
                    if d.lease_duties_due() {
                        assert!(d.lease_duties(&lessor, now, encode).is_empty());
                    }
                    rounds_waiting += 1;
                }
                // Applied: the leases leave the clock.
                for at in &leases {
                    lessor.removed(at.id);
                }
            }
        }
        drain(&mut d);
        if lessor.is_empty() {
            break;
        }
    }
    assert!(
        lessor.is_empty(),
        "every lease decided: {} left",
        lessor.len()
    );
    assert_eq!(decided_ids.len(), total as usize);
    assert!(rounds_waiting >= 10, "two decisions, each waited for");
}

/// Ticks from `now`, calling the lease duties whenever they are due and carrying out every
/// batch, until an expiry is decided (or `limit` passes); the lease clock is left as it is.
fn next_expiry(
    d: &mut Driver,
    lessor: &Lessor,
    now: &mut Duration,
    limit: Duration,
) -> Option<Vec<i64>> {
    let until = *now + limit;
    while *now < until {
        *now += TICK;
        d.tick(*now);
        if d.lease_duties_due() {
            for decision in d.lease_duties(lessor, *now, encode) {
                if let LeaseDecision::Expire { leases, .. } = decision {
                    drain(d);
                    return Some(leases.iter().map(|l| l.id).collect());
                }
            }
        }
        drain(d);
    }
    None
}

/// A single member that leads, scanning every two ticks with no expiry grace: the waits
/// below are then told apart from the scan interval.
fn fast_scanning_leader() -> (Driver, Duration) {
    leader_with(LeaseConfig {
        expiry_grace: Duration::ZERO,
        scan_interval: 2 * TICK,
        ..LeaseConfig::default()
    })
}

/// The wait for the last decision's apply has an end: a decision whose entry never changes
/// the lease clock here (lost: a leadership transfer drops queued proposals) holds the next
/// one up for an election timeout, no longer.
#[test]
fn a_decision_that_never_applies_holds_the_next_for_an_election_timeout_at_most() {
    let election_timeout = common::config().election_timeout;
    let (mut d, mut now) = fast_scanning_leader();
    let mut lessor = Lessor::new();
    lessor.renewed(1, 0, ms(1000), now);
    now += ms(1000);
    let first = next_expiry(&mut d, &lessor, &mut now, ms(500)).expect("first decision");
    assert_eq!(first, [1]);
    let decided_at = now;
    // The lease clock never hears of it: the same lease is decided again, once the wait
    // was given up.
    let again = next_expiry(&mut d, &lessor, &mut now, ms(1000)).expect("decided again");
    assert_eq!(again, [1]);
    let waited = now - decided_at;
    assert!(
        waited >= election_timeout && waited <= election_timeout + ms(100),
        "decided again after {waited:?} (election timeout {election_timeout:?})"
    );
}

/// A lease of the last decision renewed before it applied (the decision is stale for it)
/// ends the wait at once, as one that left the clock does.
#[test]
fn a_lease_renewed_since_the_last_decision_ends_the_wait() {
    let election_timeout = common::config().election_timeout;
    let (mut d, mut now) = fast_scanning_leader();
    let mut lessor = Lessor::new();
    lessor.renewed(1, 0, ms(1000), now);
    lessor.renewed(2, 0, ms(1000), now);
    lessor.renewed(3, 0, ms(1030), now);
    now += ms(1000);
    let first = next_expiry(&mut d, &lessor, &mut now, ms(25)).expect("first decision");
    assert_eq!(first, [1, 2]);
    let decided_at = now;
    // Applied: lease 2 revoked, lease 1 renewed meanwhile (the decision's guard keeps it).
    lessor.removed(2);
    lessor.renewed(1, 1, ms(10_000), now);
    let next = next_expiry(&mut d, &lessor, &mut now, ms(1000)).expect("lease 3 decided");
    assert_eq!(next, [3]);
    assert!(
        now - decided_at < election_timeout,
        "lease 3 waited {:?}: the renewal should have ended the wait",
        now - decided_at
    );
}
