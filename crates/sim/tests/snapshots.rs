//! Log compaction and snapshot installation, MIT-lab style (our own versions). The
//! simulated application snapshots its state machine every 10 applied entries and calls
//! `compact`; a member that falls behind the compacted prefix must be brought back with
//! InstallSnapshot.

mod common;

use common::*;
use sim::{Cluster, NetConfig};

const FILE: &str = "snapshots";
const EVERY: u64 = 10;

fn compacting_cluster(test: &str, seed: u64) -> Cluster {
    let mut cfg = config(3, FILE, test, seed);
    cfg.compact_every = Some(EVERY);
    Cluster::new(cfg)
}

/// The durable log after the snapshot stays short: compaction really trims it.
fn check_log_bounded(c: &Cluster) {
    for id in c.ids() {
        let d = c.durable(id);
        let tail = d.last_index() - d.snapshot_index();
        ensure(
            c,
            tail <= 3 * EVERY,
            &format!("member {id} keeps {tail} entries after its snapshot"),
        );
    }
}

#[test]
fn snapshots_keep_logs_short_and_need_no_install_when_all_keep_up() {
    let mut c = compacting_cluster(
        "snapshots_keep_logs_short_and_need_no_install_when_all_keep_up",
        701,
    );
    c.wait_for_leader(5 * election(&c));
    for k in 0..60 {
        c.one(format!("v{k}").as_bytes(), 3, true);
    }
    wait_converged(&mut c, 10);
    check_log_bounded(&c);
    ensure(
        &c,
        c.stats().snapshots_taken >= 3 * 5,
        "members did not compact",
    );
    ensure(
        &c,
        c.stats().snapshots_installed == 0,
        "a snapshot was shipped although every follower kept up",
    );
}

fn install_after_falling_behind(c: &mut Cluster, crash: bool) {
    let e = election(c);
    c.wait_for_leader(5 * e);
    c.one(b"start", 3, true);
    let leader = c.leader().unwrap();
    let victim = leader % 3 + 1;
    if crash {
        c.crash(victim);
    } else {
        c.disconnect(victim);
    }
    for k in 0..(4 * EVERY) {
        c.one(format!("while-away-{k}").as_bytes(), 2, true);
    }
    // The others compacted past everything the victim has.
    let survivors: Vec<_> = c.ids().into_iter().filter(|&i| i != victim).collect();
    for &s in &survivors {
        let behind = c.durable(victim).last_index();
        ensure(
            c,
            c.durable(s).snapshot_index() > behind,
            "the survivors did not compact past the victim",
        );
    }
    let installed_before = c.stats().snapshots_installed;
    if crash {
        c.restart(victim);
    } else {
        c.connect(victim);
    }
    c.one(b"back", 3, true);
    wait_converged(c, 20);
    ensure(
        c,
        c.stats().snapshots_installed > installed_before,
        "the victim caught up without a snapshot",
    );
    check_logs_identical(c, &c.ids());
    check_log_bounded(c);
}

#[test]
fn a_disconnected_follower_behind_the_compaction_gets_a_snapshot() {
    let mut c = compacting_cluster(
        "a_disconnected_follower_behind_the_compaction_gets_a_snapshot",
        702,
    );
    install_after_falling_behind(&mut c, false);
}

#[test]
fn a_crashed_follower_behind_the_compaction_gets_a_snapshot() {
    let mut c = compacting_cluster(
        "a_crashed_follower_behind_the_compaction_gets_a_snapshot",
        703,
    );
    install_after_falling_behind(&mut c, true);
}

#[test]
fn snapshot_install_on_an_unreliable_network() {
    let mut c = compacting_cluster("snapshot_install_on_an_unreliable_network", 704);
    c.set_net(NetConfig::unreliable());
    let e = election(&c);
    c.wait_for_leader(10 * e);
    let victim = c.leader().unwrap() % 3 + 1;
    c.disconnect(victim);
    for k in 0..(4 * EVERY) {
        c.one(format!("lossy-{k}").as_bytes(), 2, true);
    }
    c.connect(victim);
    c.set_net(NetConfig::reliable());
    c.one(b"back", 3, true);
    wait_converged(&mut c, 20);
    check_logs_identical(&c, &c.ids());
}

#[test]
fn all_crash_after_snapshots_and_nothing_committed_is_lost() {
    let mut c = compacting_cluster(
        "all_crash_after_snapshots_and_nothing_committed_is_lost",
        705,
    );
    let e = election(&c);
    c.wait_for_leader(5 * e);
    let mut last = 0;
    for round in 0..4 {
        for k in 0..(EVERY + 3) {
            last = c.one(format!("r{round}-{k}").as_bytes(), 3, true);
        }
        for id in c.ids() {
            c.crash(id);
        }
        for id in c.ids() {
            c.restart(id);
        }
        let next = c.one(format!("after-restart-{round}").as_bytes(), 3, true);
        ensure(
            &c,
            next > last,
            &format!("index went back from {last} to {next} after restarting all"),
        );
        last = next;
    }
}

#[test]
fn restarting_twice_after_a_snapshot_keeps_it() {
    let mut c = compacting_cluster("restarting_twice_after_a_snapshot_keeps_it", 706);
    let e = election(&c);
    c.wait_for_leader(5 * e);
    for k in 0..=EVERY {
        c.one(format!("init-{k}").as_bytes(), 3, true);
    }
    let mut last = 0;
    for round in 0..2 {
        for id in c.ids() {
            c.crash(id);
            c.restart(id);
        }
        let index = c.one(format!("after-{round}").as_bytes(), 3, true);
        ensure(&c, index > last, "a restart lost the snapshot");
        last = index;
    }
    for id in c.ids() {
        ensure(
            &c,
            c.durable(id).snapshot_index() >= EVERY,
            "snapshot missing from disk",
        );
    }
}
