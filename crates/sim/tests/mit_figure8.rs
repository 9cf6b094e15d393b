//! Figure 8 of the Raft paper, MIT-lab style (our own versions): leaders crash (or are cut
//! off) right after accepting entries, over and over, so that entries from old terms are
//! replicated to a majority by later leaders. Committing such an entry by counting
//! replicas would be unsafe; the checkers watch every step. Plus agreement on a lossy net.

mod common;

use bytes::Bytes;
use common::*;
use rand::Rng;
use sim::NetConfig;

const FILE: &str = "mit_figure8";

fn random_payload(c: &mut sim::Cluster) -> Bytes {
    let v: u64 = c.rng().gen();
    b(&format!("f8-{v}"))
}

/// Figure 8's pacing: usually under a tick, sometimes up to half an election timeout (`e` ticks),
/// so leaders are crashed or cut off both before and after they replicate.
fn let_time_pass(c: &mut sim::Cluster, e: u64) {
    let pause = if c.rng().gen_bool(0.1) {
        c.rng().gen_range(0..=e / 2 * sim::UNITS_PER_TICK)
    } else {
        c.rng().gen_range(0..=sim::UNITS_PER_TICK)
    };
    for _ in 0..pause {
        c.step_unit();
    }
}

#[test]
fn figure8_reliable_with_crashes() {
    for seed in seeds(501 * 100, 20) {
        figure8_reliable(seed);
    }
}

fn figure8_reliable(seed: u64) {
    let mut c = cluster(5, FILE, "figure8_reliable_with_crashes", seed);
    let e = election(&c);
    c.wait_for_leader(5 * e);
    let first = random_payload(&mut c);
    c.one(&first, 1, true);
    let mut up = 5;
    for _iter in 0..300 {
        let mut leader = None;
        for id in c.ids() {
            let p = random_payload(&mut c);
            if c.is_alive(id) && c.propose(id, p).is_ok() {
                leader = Some(id);
            }
        }
        let_time_pass(&mut c, e);
        if let Some(l) = leader {
            c.crash(l);
            up -= 1;
        }
        if up < 3 {
            let s = c.rng().gen_range(1..=5);
            if !c.is_alive(s) {
                c.restart(s);
                up += 1;
            }
        }
    }
    for id in c.ids() {
        c.restart(id);
    }
    let last = random_payload(&mut c);
    c.one(&last, 5, true);
}

#[test]
fn figure8_unreliable_with_disconnections() {
    for seed in seeds(502 * 100, 20) {
        figure8_unreliable(seed);
    }
}

fn figure8_unreliable(seed: u64) {
    let mut c = cluster(5, FILE, "figure8_unreliable_with_disconnections", seed);
    let e = election(&c);
    c.set_net(NetConfig::unreliable());
    c.wait_for_leader(10 * e);
    let first = random_payload(&mut c);
    c.one(&first, 1, true);
    let mut up = 5;
    for iter in 0..300 {
        if iter == 100 {
            // From here on, many messages are held back for long: heavy reordering.
            let mut net = NetConfig::unreliable();
            net.long_delay_prob = 0.4;
            net.long_delay_max = 200;
            c.set_net(net);
        }
        let mut leader = None;
        for id in c.ids() {
            let p = random_payload(&mut c);
            if c.is_connected(id) && c.propose(id, p).is_ok() {
                leader = Some(id);
            }
        }
        let_time_pass(&mut c, e);
        if let Some(l) = leader {
            if c.rng().gen_bool(0.5) {
                c.disconnect(l);
                up -= 1;
            }
        }
        if up < 3 {
            let s = c.rng().gen_range(1..=5);
            if !c.is_connected(s) {
                c.connect(s);
                up += 1;
            }
        }
    }
    for id in c.ids() {
        c.connect(id);
    }
    let last = random_payload(&mut c);
    c.one(&last, 5, true);
}

#[test]
fn unreliable_agreement_of_concurrent_and_sequential_commands() {
    for seed in seeds(503 * 100, 20) {
        unreliable_agreement(seed);
    }
}

fn unreliable_agreement(seed: u64) {
    let mut c = cluster(
        5,
        FILE,
        "unreliable_agreement_of_concurrent_and_sequential_commands",
        seed,
    );
    let e = election(&c);
    c.set_net(NetConfig::unreliable());
    c.wait_for_leader(10 * e);
    for iter in 1..=50 {
        let concurrent: Vec<Bytes> = (0..4).map(|j| b(&format!("{}", 100 * iter + j))).collect();
        if let Some(l) = c.leader() {
            for p in &concurrent {
                let _ = c.propose(l, p.clone());
            }
        }
        c.one(iter.to_string().as_bytes(), 1, true);
        commit_all(&mut c, &concurrent, 1, 20);
    }
    c.set_net(NetConfig::reliable());
    c.one(b"100", 5, true);
}
