//! Persistence scenarios in the style of the MIT 6.824 Raft lab (our own versions), plus
//! crashes in the middle of processing a Ready (after the write but before the dependent
//! messages leave, and so on).

mod common;

use common::*;
use sim::CrashPoint;

const FILE: &str = "mit_persist";

#[test]
fn persist1_restarts_of_all_leader_and_followers_keep_commits() {
    let mut c = cluster(
        3,
        FILE,
        "persist1_restarts_of_all_leader_and_followers_keep_commits",
        401,
    );
    let e = election(&c);
    c.wait_for_leader(5 * e);
    c.one(b"11", 3, true);
    for id in c.ids() {
        c.crash(id);
    }
    for id in c.ids() {
        c.restart(id);
    }
    c.one(b"12", 3, true);

    let leader1 = c.wait_for_leader(5 * e);
    c.crash(leader1);
    c.restart(leader1);
    c.one(b"13", 3, true);

    let leader2 = c.wait_for_leader(5 * e);
    c.crash(leader2);
    c.one(b"14", 2, true);
    c.restart(leader2);
    let index = c.committed_index_of(&b("14")).unwrap();
    let all = c.run_until(10 * e, |c| c.n_committed(index).0 == 3);
    ensure(&c, all, "the restarted leader never caught up");

    let leader3 = c.wait_for_leader(5 * e);
    let follower = leader3 % 3 + 1;
    c.crash(follower);
    c.one(b"15", 2, true);
    c.restart(follower);
    c.one(b"16", 3, true);
    wait_converged(&mut c, 10);
    check_logs_identical(&c, &c.ids());
}

#[test]
fn persist2_repeated_crashes_of_subsets_of_five() {
    let mut c = cluster(5, FILE, "persist2_repeated_crashes_of_subsets_of_five", 402);
    let e = election(&c);
    c.wait_for_leader(5 * e);
    let mut k = 10;
    for _round in 0..5 {
        k += 1;
        c.one(k.to_string().as_bytes(), 5, true);
        let leader = c.wait_for_leader(5 * e);
        let ring = |d: u64| (leader - 1 + d) % 5 + 1;
        c.crash(ring(1));
        c.crash(ring(2));
        k += 1;
        c.one(k.to_string().as_bytes(), 3, true);
        c.crash(ring(0));
        c.crash(ring(3));
        c.crash(ring(4));
        c.restart(ring(1));
        c.restart(ring(2));
        c.run_ticks(e);
        c.restart(ring(3));
        k += 1;
        c.one(k.to_string().as_bytes(), 3, true);
        c.restart(ring(4));
        c.restart(ring(0));
    }
    c.one(b"1000", 5, true);
}

#[test]
fn persist3_a_restarted_leader_and_a_partitioned_follower_continue() {
    let mut c = cluster(
        3,
        FILE,
        "persist3_a_restarted_leader_and_a_partitioned_follower_continue",
        403,
    );
    let e = election(&c);
    c.wait_for_leader(5 * e);
    c.one(b"101", 3, false);
    let leader = c.leader().unwrap();
    let ring = |d: u64| (leader - 1 + d) % 3 + 1;
    c.disconnect(ring(2));
    c.one(b"102", 2, false);
    c.crash(ring(0));
    c.crash(ring(1));
    c.connect(ring(2));
    c.restart(ring(0));
    c.one(b"103", 2, true);
    c.restart(ring(1));
    c.one(b"104", 3, true);
    wait_converged(&mut c, 10);
    check_logs_identical(&c, &c.ids());
}

/// Crashes a member while it processes a Ready, at each point of the contract, in each
/// role, and checks nothing committed is lost and the cluster goes on.
#[test]
fn crashes_inside_a_ready_lose_nothing_committed() {
    let mut c = cluster(
        3,
        FILE,
        "crashes_inside_a_ready_lose_nothing_committed",
        404,
    );
    let e = election(&c);
    c.wait_for_leader(5 * e);
    c.one(b"base", 3, true);
    let points = [
        CrashPoint::BeforePersist,
        CrashPoint::AfterPersist,
        CrashPoint::BeforeApply,
    ];
    let mut k = 0;
    for point in points {
        for victim_is_leader in [false, true] {
            let leader = c.wait_for_leader(5 * e);
            let victim = if victim_is_leader {
                leader
            } else {
                leader % 3 + 1
            };
            c.crash_at_next_ready(victim, point);
            k += 1;
            // The victim's next Ready carries this proposal (leader) or its replication
            // (follower); it crashes partway through it.
            let _ = c.propose(leader, b(&format!("mid-ready-{k}")));
            c.run_ticks(2);
            ensure(
                &c,
                !c.is_alive(victim),
                &format!("armed crash at {point:?} never struck"),
            );
            c.one(format!("survivors-{k}").as_bytes(), 2, true);
            c.restart(victim);
            c.one(format!("all-{k}").as_bytes(), 3, true);
        }
    }
    wait_converged(&mut c, 10);
    check_logs_identical(&c, &c.ids());
}

/// A candidate that crashes after durably voting for itself but before its vote requests
/// leave must not vote again in that term after restarting (the monotonic checker watches
/// the durable vote; election safety watches the outcome).
#[test]
fn a_candidate_crashing_after_persisting_its_vote_does_not_vote_twice() {
    let mut c = cluster(
        3,
        FILE,
        "a_candidate_crashing_after_persisting_its_vote_does_not_vote_twice",
        405,
    );
    let e = election(&c);
    c.wait_for_leader(5 * e);
    for round in 0..6 {
        let leader = c.leader().unwrap_or(1);
        let candidate = (leader + round % 2) % 3 + 1;
        c.crash_at_next_ready(candidate, CrashPoint::AfterPersist);
        c.campaign(candidate);
        c.run_ticks(1);
        c.restart(candidate);
        c.wait_for_leader(6 * e);
        c.one(format!("round-{round}").as_bytes(), 3, true);
    }
}
