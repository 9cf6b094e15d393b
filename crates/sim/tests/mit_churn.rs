//! Churn, MIT-lab style (our own versions): clients keep submitting while members are
//! disconnected, crashed and restarted at random; at the end every value a client saw
//! committed must be in the final log of every member.

mod common;

use bytes::Bytes;
use common::*;
use rand::Rng;
use sim::{Cluster, NetConfig};

const FILE: &str = "mit_churn";

fn churn(c: &mut Cluster, unreliable: bool) {
    let e = election(c);
    if unreliable {
        c.set_net(NetConfig::unreliable());
    }
    c.wait_for_leader(10 * e);
    let mut submitted: Vec<Bytes> = Vec::new();
    let mut seen_committed: Vec<Bytes> = Vec::new();
    for round in 0..60 {
        // Three clients each submit a value to whoever claims to lead.
        for client in 0..3 {
            let value = b(&format!("client-{client}-round-{round}"));
            for id in c.ids() {
                if c.propose(id, value.clone()).is_ok() {
                    submitted.push(value.clone());
                    break;
                }
            }
        }
        // Random trouble.
        let victim = c.rng().gen_range(1..=5);
        let roll: f64 = c.rng().gen();
        if roll < 0.2 {
            c.disconnect(victim);
        } else if roll < 0.4 {
            c.crash(victim);
        } else if roll < 0.6 {
            c.restart(victim);
            c.connect(victim);
        }
        // Keep a majority around most of the time.
        let down: Vec<_> = c
            .ids()
            .into_iter()
            .filter(|&i| !c.is_alive(i) || !c.is_connected(i))
            .collect();
        if down.len() > 2 {
            let back = down[c.rng().gen_range(0..down.len())];
            c.restart(back);
            c.connect(back);
        }
        let pause = c.rng().gen_range(1..=e);
        c.run_ticks(pause);
        for v in &submitted {
            if !seen_committed.contains(v) && c.committed_index_of(v).is_some() {
                seen_committed.push(v.clone());
            }
        }
    }
    c.set_net(NetConfig::reliable());
    for id in c.ids() {
        c.restart(id);
        c.connect(id);
    }
    c.one(b"final", 5, true);
    wait_converged(c, 10);
    ensure(
        c,
        seen_committed.len() >= 10,
        &format!(
            "only {} values committed during churn",
            seen_committed.len()
        ),
    );
    for v in &seen_committed {
        let index = c.committed_index_of(v).unwrap();
        for id in c.ids() {
            let rec = c.applied(id).get(index as usize - 1);
            ensure(
                c,
                rec.is_some_and(|r| r.data == v),
                &format!("{v:?} seen committed but missing on {id}"),
            );
        }
    }
    check_logs_identical(c, &c.ids());
}

#[test]
fn reliable_churn_keeps_every_committed_value() {
    for seed in seeds(601 * 100, 20) {
        reliable_churn(seed);
    }
}

fn reliable_churn(seed: u64) {
    let mut c = cluster(5, FILE, "reliable_churn_keeps_every_committed_value", seed);
    churn(&mut c, false);
}

#[test]
fn unreliable_churn_keeps_every_committed_value() {
    for seed in seeds(602 * 100, 20) {
        unreliable_churn(seed);
    }
}

fn unreliable_churn(seed: u64) {
    let mut c = cluster(
        5,
        FILE,
        "unreliable_churn_keeps_every_committed_value",
        seed,
    );
    churn(&mut c, true);
}
