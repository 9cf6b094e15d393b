//! ReadIndex: a read is served at an index covering every entry committed before it was
//! asked (the `read-index` checker verifies each read state against the commit index known
//! when the read was requested), and a deposed or isolated leader confirms nothing.

mod common;

use common::*;
use rand::Rng;
use sim::NetConfig;

const FILE: &str = "read_index";

#[test]
fn a_leader_read_covers_every_earlier_commit() {
    let mut c = cluster(3, FILE, "a_leader_read_covers_every_earlier_commit", 801);
    let e = election(&c);
    let leader = c.wait_for_leader(5 * e);
    for k in 0..5 {
        c.one(format!("w{k}").as_bytes(), 3, true);
    }
    let committed = c.max_committed();
    c.read_index(leader, b("read-1"))
        .expect("a leader accepts reads");
    let got = c.run_until(2 * e, |c| !c.read_states(leader).is_empty());
    ensure(&c, got, "the leader never confirmed the read");
    let rs = c.read_states(leader)[0].clone();
    ensure(
        &c,
        rs.ctx == b("read-1") && rs.index >= committed,
        &format!("read {rs:?} below commit {committed}"),
    );
}

#[test]
fn a_follower_read_is_confirmed_through_the_leader() {
    let mut c = cluster(
        3,
        FILE,
        "a_follower_read_is_confirmed_through_the_leader",
        802,
    );
    let e = election(&c);
    let leader = c.wait_for_leader(5 * e);
    c.one(b"w", 3, true);
    let follower = leader % 3 + 1;
    let committed = c.max_committed();
    c.read_index(follower, b("via-follower"))
        .expect("followers forward reads");
    let got = c.run_until(2 * e, |c| !c.read_states(follower).is_empty());
    ensure(&c, got, "the follower never got its read confirmed");
    let rs = c.read_states(follower)[0].clone();
    ensure(
        &c,
        rs.index >= committed,
        "follower read below the commit index",
    );
}

#[test]
fn an_isolated_old_leader_confirms_no_read() {
    let mut c = cluster(3, FILE, "an_isolated_old_leader_confirms_no_read", 803);
    let e = election(&c);
    let old = c.wait_for_leader(5 * e);
    c.one(b"before", 3, true);
    c.disconnect(old);
    // The old leader may still believe it leads for a while: ask it right away.
    let _ = c.read_index(old, b("stale?"));
    c.wait_for_leader(5 * e);
    for k in 0..3 {
        c.one(format!("after-{k}").as_bytes(), 2, true);
    }
    c.run_ticks(3 * e);
    ensure(
        &c,
        c.read_states(old).is_empty(),
        "an isolated leader confirmed a read",
    );
    c.connect(old);
    c.one(b"healed", 3, true);
}

#[test]
fn reads_stay_linearizable_on_a_lossy_network_with_leader_changes() {
    let mut c = cluster(
        5,
        FILE,
        "reads_stay_linearizable_on_a_lossy_network_with_leader_changes",
        804,
    );
    let e = election(&c);
    c.set_net(NetConfig::unreliable());
    c.wait_for_leader(10 * e);
    for round in 0..40 {
        if let Some(l) = c.leader() {
            let _ = c.propose(l, b(&format!("w{round}")));
        }
        let at = c.rng().gen_range(1..=5);
        let _ = c.read_index(at, b(&format!("r{round}")));
        if round % 10 == 9 {
            if let Some(l) = c.leader() {
                c.disconnect(l);
                c.run_ticks(2 * e);
                c.connect(l);
            }
        }
        c.run_ticks(2);
    }
    c.set_net(NetConfig::reliable());
    c.run_ticks(3 * e);
    ensure(
        &c,
        c.reads_confirmed() >= 10,
        &format!("only {} reads confirmed", c.reads_confirmed()),
    );
}
