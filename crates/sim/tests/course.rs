//! The course assignment's scenarios on three members (the original practica's checks),
//! on the simulator: stable ids and initial state, first leader, leader failure, agreement,
//! a stopped follower catching up, no progress without a majority, concurrent submissions.

mod common;

use common::*;
use raft::Role;

const FILE: &str = "course";

#[test]
fn start_and_stop_report_the_initial_state() {
    let mut c = cluster(3, FILE, "start_and_stop_report_the_initial_state", 101);
    for id in c.ids() {
        let s = c.status(id).expect("every member starts alive");
        ensure(&c, s.id == id, "a member reports another id");
        ensure(
            &c,
            s.hard_state.term == 0,
            "term is not 0 before any election",
        );
        ensure(
            &c,
            s.role != Role::Leader,
            "a member leads before any election",
        );
        ensure(
            &c,
            s.leader.is_none(),
            "a leader is known before any election",
        );
    }
    for id in c.ids() {
        c.crash(id);
        ensure(&c, c.status(id).is_none(), "a stopped member still answers");
    }
    for id in c.ids() {
        c.restart(id);
        let s = c.status(id).expect("restarted");
        ensure(
            &c,
            s.id == id && s.hard_state.term == 0,
            "restart changed id or term",
        );
    }
}

#[test]
fn a_first_leader_is_elected_within_a_bound() {
    let mut c = cluster(3, FILE, "a_first_leader_is_elected_within_a_bound", 102);
    // Bound: the longest randomised timeout (2 election timeouts) plus a few rounds.
    let bound = 5 * election(&c);
    let leader = c.wait_for_leader(bound);
    ensure(&c, c.leaders().len() == 1, "more than one leader");
    c.run_ticks(election(&c));
    let term = check_terms_agree(&c);
    ensure(&c, term >= 1, "leader elected in term 0");
    for id in c.ids() {
        let s = c.status(id).unwrap();
        ensure(
            &c,
            s.leader == Some(leader),
            &format!("member {id} does not know the leader"),
        );
    }
}

#[test]
fn a_failed_leader_is_replaced_by_another_member() {
    let mut c = cluster(
        3,
        FILE,
        "a_failed_leader_is_replaced_by_another_member",
        103,
    );
    let first = c.wait_for_leader(5 * election(&c));
    let first_term = c.term(first).unwrap();
    c.crash(first);
    let second = c.wait_for_leader(5 * election(&c));
    ensure(&c, second != first, "the crashed member still leads");
    ensure(
        &c,
        c.term(second).unwrap() > first_term,
        "new leader without a new term",
    );
}

#[test]
fn three_operations_commit_in_a_stable_cluster() {
    let mut c = cluster(3, FILE, "three_operations_commit_in_a_stable_cluster", 104);
    c.wait_for_leader(5 * election(&c));
    let i1 = c.one(b"op-1", 3, false);
    let i2 = c.one(b"op-2", 3, false);
    let i3 = c.one(b"op-3", 3, false);
    ensure(&c, i1 < i2 && i2 < i3, "operations committed out of order");
    check_logs_identical(&c, &c.ids());
}

#[test]
fn a_stopped_follower_does_not_block_agreement_and_catches_up() {
    let mut c = cluster(
        3,
        FILE,
        "a_stopped_follower_does_not_block_agreement_and_catches_up",
        105,
    );
    let leader = c.wait_for_leader(5 * election(&c));
    c.one(b"before", 3, false);
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    c.crash(follower);
    for k in 0..5 {
        c.one(format!("while-down-{k}").as_bytes(), 2, false);
    }
    c.restart(follower);
    c.one(b"after", 3, true);
    wait_converged(&mut c, 10);
    check_logs_identical(&c, &c.ids());
}

#[test]
fn no_agreement_without_a_majority_then_agreement_when_it_returns() {
    let mut c = cluster(
        3,
        FILE,
        "no_agreement_without_a_majority_then_agreement_when_it_returns",
        106,
    );
    let leader = c.wait_for_leader(5 * election(&c));
    c.one(b"first", 3, false);
    let others: Vec<_> = c.ids().into_iter().filter(|&i| i != leader).collect();
    for &o in &others {
        c.crash(o);
    }
    let stuck = c
        .propose(leader, b("lonely"))
        .expect("still leader right after the crashes");
    c.run_ticks(5 * election(&c));
    let (n, _) = c.n_committed(stuck.last);
    ensure(
        &c,
        n == 0,
        "an entry committed with only one of three members up",
    );
    for &o in &others {
        c.restart(o);
    }
    c.one(b"after-return", 3, true);
    wait_converged(&mut c, 10);
    check_logs_identical(&c, &c.ids());
}

#[test]
fn five_concurrent_submissions_all_commit_with_identical_logs() {
    let mut c = cluster(
        3,
        FILE,
        "five_concurrent_submissions_all_commit_with_identical_logs",
        107,
    );
    let leader = c.wait_for_leader(5 * election(&c));
    let mut indexes = Vec::new();
    for k in 0..5 {
        let p = c
            .propose(leader, b(&format!("concurrent-{k}")))
            .expect("leader accepts");
        indexes.push(p.last);
    }
    let ok = c.run_until(5 * election(&c), |c| {
        indexes.iter().all(|&i| c.n_committed(i).0 == 3)
    });
    ensure(&c, ok, "not all five submissions committed on all members");
    let mut sorted = indexes.clone();
    sorted.dedup();
    ensure(&c, sorted.len() == 5, "two submissions got the same index");
    check_logs_identical(&c, &c.ids());
}
