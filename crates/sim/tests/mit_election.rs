//! Leader election scenarios in the style of the MIT 6.824 Raft lab (our own versions).

mod common;

use common::*;
use rand::seq::SliceRandom;

const FILE: &str = "mit_election";

#[test]
fn initial_election_is_stable_without_failures() {
    let mut c = cluster(3, FILE, "initial_election_is_stable_without_failures", 201);
    let leader = c.wait_for_leader(5 * election(&c));
    c.run_ticks(election(&c));
    let term1 = check_terms_agree(&c);
    ensure(&c, term1 >= 1, "term is 0 after an election");
    c.run_ticks(2 * election(&c));
    let term2 = check_terms_agree(&c);
    ensure(&c, term1 == term2, "term changed with no failures");
    ensure(
        &c,
        c.leader() == Some(leader),
        "leader changed with no failures",
    );
}

#[test]
fn re_election_after_leader_loss_and_quorum_loss() {
    let mut c = cluster(
        3,
        FILE,
        "re_election_after_leader_loss_and_quorum_loss",
        202,
    );
    let e = election(&c);
    let leader1 = c.wait_for_leader(5 * e);

    // The leader leaves: the other two elect one of themselves.
    c.disconnect(leader1);
    let leader2 = c.wait_for_leader(5 * e);
    ensure(
        &c,
        leader2 != leader1,
        "disconnected member still counted as leader",
    );

    // The old leader comes back: it must not disturb the new one (pre-vote, stickiness).
    c.connect(leader1);
    c.run_ticks(3 * e);
    ensure(
        &c,
        c.leaders() == vec![(leader2, c.term(leader2).unwrap())],
        "the returning old leader disturbed the new one",
    );

    // Two of three gone: nobody can lead.
    let other = leader2 % 3 + 1;
    c.disconnect(leader2);
    c.disconnect(other);
    check_no_leader(&mut c, 4 * e);

    // Quorum back: a leader again; and with everyone back, still exactly one.
    c.connect(other);
    c.wait_for_leader(5 * e);
    c.connect(leader2);
    c.run_ticks(2 * e);
    ensure(
        &c,
        c.leaders().len() == 1,
        "not exactly one leader with everyone connected",
    );
}

#[test]
fn many_elections_on_seven_members() {
    let mut c = cluster(7, FILE, "many_elections_on_seven_members", 203);
    let e = election(&c);
    c.wait_for_leader(5 * e);
    for _round in 0..10 {
        let mut ids = c.ids();
        ids.shuffle(c.rng());
        let gone = &ids[..3];
        for &i in gone {
            c.disconnect(i);
        }
        // The four remaining form a majority: one of them must lead.
        c.wait_for_leader(6 * e);
        let leaders = c.leaders();
        ensure(
            &c,
            leaders.len() == 1,
            &format!("several leaders among the majority: {leaders:?}"),
        );
        for &i in gone {
            c.connect(i);
        }
    }
    c.wait_for_leader(6 * e);
}
