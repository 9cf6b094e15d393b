//! Membership changes through the node driver (`Driver::propose_conf_change`), in the
//! simulator: a spare joins from an empty disk as a learner, is promoted, then the leader
//! removes itself; each change is answered like a write, and refusals come back at once.

use bytes::Bytes;
use raft::{ConfChange, ConfChangeKind, ProposeError};
use sim::{CallResult, Cluster, SimConfig};

fn change(kind: ConfChangeKind, node: u64) -> ConfChange {
    ConfChange {
        kind,
        node,
        context: Bytes::from_static(b"member attributes"),
    }
}

/// Proposes `cc` on the leader's driver and waits for its answer.
fn apply_change(c: &mut Cluster, cc: ConfChange) -> u64 {
    let mut attempts = 0;
    let req = loop {
        let leader = c.wait_for_leader(200);
        match c.client_conf_change(leader, cc.clone()) {
            Ok(req) => break req,
            // A new leader takes no change before it committed an entry of its term.
            Err(ProposeError::ConfChangePending) if attempts < 100 => {
                attempts += 1;
                c.run_ticks(1);
            }
            Err(e) => c.fail(&format!("{cc:?} refused: {e:?}")),
        }
    };
    c.run_until(200, |c| c.has_result(req));
    match c.take_result(req) {
        Some(CallResult::Written(index)) => index,
        other => c.fail(&format!("{cc:?}: {other:?}")),
    }
}

#[test]
fn changes_through_the_driver_are_answered_like_writes() {
    let mut config = SimConfig::new(4, sim::seed_from_env_or(3));
    config.initial_members = Some(3);
    let mut c = Cluster::new(config);
    let leader = c.wait_for_leader(200);
    assert_eq!(c.members(), vec![1, 2, 3]);

    let at = apply_change(&mut c, change(ConfChangeKind::AddLearner, 4));
    assert!(
        c.run_until(200, |c| c.applied_index(4) >= at),
        "4 never caught up"
    );
    let st = c.status(4).expect("alive");
    assert_eq!(st.conf_state.learners, vec![4]);

    // A change the core refuses is answered at once, and nothing waits for it.
    let err = c
        .client_conf_change(leader, change(ConfChangeKind::Remove, 9))
        .unwrap_err();
    assert!(matches!(err, ProposeError::InvalidConfChange(_)), "{err:?}");

    apply_change(&mut c, change(ConfChangeKind::AddVoter, 4));
    assert_eq!(c.members(), vec![1, 2, 3, 4]);

    let leader = c.wait_for_leader(200);
    apply_change(&mut c, change(ConfChangeKind::Remove, leader));
    let next = c.wait_for_leader(200);
    assert_ne!(next, leader);
    let remaining: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != leader).collect();
    assert_eq!(c.members(), remaining);
    assert!(c.violation().is_none());
}

/// A member added as a voter enters the configuration as a learner and the leader's driver
/// promotes it by itself once it holds 90% of the log; a member added as a learner stays
/// one. Every promotion the driver proposes is checked (`checkers::promotion`).
#[test]
fn a_member_added_as_a_voter_is_promoted_by_the_leader_and_a_learner_stays_one() {
    let mut config = SimConfig::new(5, sim::seed_from_env_or(5));
    config.initial_members = Some(3);
    let mut c = Cluster::new(config);
    let leader = c.wait_for_leader(200);
    for i in 0..50 {
        c.propose(leader, Bytes::from(format!("w{i}")))
            .expect("leads");
    }
    c.run_ticks(20);

    let as_voter = ConfChange {
        kind: ConfChangeKind::AddLearner,
        node: 4,
        context: Bytes::from_static(sim::state_machine::ADDED_AS_VOTER),
    };
    apply_change(&mut c, as_voter);
    assert!(
        c.run_until(200, |c| c.stats().auto_promotions_applied == 1),
        "4 was never promoted: {:?}",
        c.leader().and_then(|l| c.status(l)).map(|s| s.conf_state)
    );
    let leader = c.wait_for_leader(200);
    let st = c.status(leader).expect("alive");
    assert!(st.conf_state.voters.contains(&4), "{st:?}");
    assert!(c.awaiting_promotion().is_empty());
    assert!(c.stats().auto_promotions >= 1);

    apply_change(&mut c, change(ConfChangeKind::AddLearner, 5));
    let at = c.max_committed();
    assert!(
        c.run_until(200, |c| c.applied_index(5) >= at),
        "5 never caught up"
    );
    c.run_ticks(100);
    let leader = c.wait_for_leader(200);
    let st = c.status(leader).expect("alive");
    assert_eq!(
        st.conf_state.learners,
        vec![5],
        "a learner added as one was promoted"
    );
    assert_eq!(c.stats().auto_promotions_applied, 1);
    assert!(c.violation().is_none());
}
