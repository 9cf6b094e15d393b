//! Leader transfer (TimeoutNow): the chosen member takes over, up to date, without losing
//! anything; a transfer to an unreachable member gives up and the old leader carries on.

mod common;

use common::*;

const FILE: &str = "leader_transfer";

#[test]
fn leadership_moves_to_the_chosen_follower() {
    let mut c = cluster(3, FILE, "leadership_moves_to_the_chosen_follower", 901);
    let e = election(&c);
    let leader = c.wait_for_leader(5 * e);
    c.one(b"before", 3, true);
    let target = leader % 3 + 1;
    let term = c.term(leader).unwrap();
    c.transfer_leader(leader, target)
        .expect("a leader accepts a transfer");
    let moved = c.run_until(2 * e, |c| c.leader() == Some(target));
    ensure(&c, moved, "leadership did not move to the chosen member");
    ensure(
        &c,
        c.term(target).unwrap() > term,
        "transfer without a new term",
    );
    c.one(b"after", 3, true);
    check_logs_identical(&c, &c.ids());
}

#[test]
fn a_lagging_target_is_caught_up_before_taking_over() {
    let mut c = cluster(
        3,
        FILE,
        "a_lagging_target_is_caught_up_before_taking_over",
        902,
    );
    let e = election(&c);
    let leader = c.wait_for_leader(5 * e);
    let target = leader % 3 + 1;
    c.disconnect(target);
    for k in 0..20 {
        c.one(format!("lag-{k}").as_bytes(), 2, true);
    }
    c.connect(target);
    c.transfer_leader(leader, target)
        .expect("a leader accepts a transfer");
    let moved = c.run_until(4 * e, |c| c.leader() == Some(target));
    ensure(&c, moved, "the lagging target never took over");
    c.one(b"after", 3, true);
    check_logs_identical(&c, &c.ids());
}

#[test]
fn a_transfer_to_a_dead_member_is_abandoned() {
    let mut c = cluster(3, FILE, "a_transfer_to_a_dead_member_is_abandoned", 903);
    let e = election(&c);
    let leader = c.wait_for_leader(5 * e);
    let target = leader % 3 + 1;
    c.crash(target);
    let _ = c.transfer_leader(leader, target);
    // Within a few election timeouts the transfer is given up and proposals flow again.
    c.run_ticks(3 * e);
    c.one(b"still-working", 2, true);
}
