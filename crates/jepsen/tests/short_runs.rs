//! The short version of the Jepsen-style runs, part of the default test suite: four histories
//! with different fault mixes (the fourth replaces members, issue 15) against real member
//! processes in network namespaces. Every one must be linearizable (registers), anomaly-free
//! (list-append), keep fenced lock holders apart (`jepsen::lock_check`), lose no acknowledged
//! write and end with equal HashKV on every member. Needs root, iproute2 and iptables (fails
//! otherwise).

mod common;

use std::time::Duration;

use jepsen::{Fault, RunConfig};

fn config(name: &str, seed: u64, faults: &[Fault]) -> RunConfig {
    let mut c = RunConfig::new(name, &common::run_dir(name), &common::member_binary());
    c.duration = Duration::from_secs(22);
    c.seed = seed;
    c.faults = faults.to_vec();
    // Kills in the crash mix also lose every un-fsynced write (the members keep file data in
    // memory until fsync).
    c.lose_unsynced = name == "crashes";
    c
}

#[test]
fn short_histories_under_faults_are_linearizable() {
    let mixes: [(&str, &[Fault]); 4] = [
        (
            "partitions",
            &[
                Fault::PartitionLeader,
                Fault::PartitionHalves,
                Fault::PartitionBridge,
                Fault::PartitionOneWay,
            ],
        ),
        (
            "crashes",
            &[
                Fault::KillOne,
                Fault::KillLeader,
                Fault::KillMinority,
                Fault::PauseLeader,
            ],
        ),
        (
            "restarts-and-clocks",
            &[
                Fault::RollingRestart,
                Fault::ClockSkew,
                Fault::PartitionLeader,
            ],
        ),
        ("membership", &[Fault::MemberReplace]),
    ];
    let mut reports = Vec::new();
    for (i, (name, faults)) in mixes.iter().enumerate() {
        let report = jepsen::run(&config(name, 100 + i as u64, faults))
            .unwrap_or_else(|e| panic!("run {name} could not be carried out: {e:#}"));
        eprintln!("{}", report.one_line());
        reports.push(report);
    }
    for r in &reports {
        assert!(
            r.passed(),
            "{}\nlost: {:?}\nunexpected: {:?}\nhashes: {:?}\nsee {}",
            r.one_line(),
            r.lost_writes,
            r.unexpected_elements,
            r.hashes,
            r.dir.display()
        );
        // Not vacuous: traffic flowed, faults were injected, appends were acknowledged.
        assert!(
            r.register_ops.ok >= 100,
            "too little traffic: {}",
            r.one_line()
        );
        assert!(r.append_txns.ok >= 20, "too few appends: {}", r.one_line());
        assert!(r.acknowledged_appends > 0, "{}", r.one_line());
        assert!(
            r.watch_events >= 100,
            "watchers saw too little: {}",
            r.one_line()
        );
        assert!(
            r.watch_progress.answered >= 50,
            "too few progress requests answered: {}",
            r.one_line()
        );
        assert!(
            r.faults.values().sum::<usize>() >= 2,
            "too few faults: {}",
            r.one_line()
        );
        assert!(
            r.lock.fenced_sessions >= 3 && r.lock.acknowledged_appends >= 5,
            "the lock workload did too little: {}",
            r.one_line()
        );
    }
    // The membership mix replaced members for real (the timeline says how each ended).
    let replaced = reports[3]
        .faults
        .get("member-replace")
        .copied()
        .unwrap_or(0);
    assert!(replaced >= 2, "{}", reports[3].one_line());
    // The stalled holders were turned away by the fence somewhere (each stall outlasts
    // the TTL by 2 s).
    assert!(
        reports
            .iter()
            .map(|r| r.lock.after_stall_fenced)
            .sum::<usize>()
            >= 1,
        "no stalled holder was fenced out: {:?}",
        reports
            .iter()
            .map(|r| r.lock.one_line())
            .collect::<Vec<_>>()
    );
}
