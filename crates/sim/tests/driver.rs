//! What running the production node driver in the simulator covers beyond the core:
//! client calls through any member, stalls, commit indexes lost at a crash, and the
//! driver's own regressions.

use sim::fuzz::{run_seed, FuzzOptions};
use sim::sweep::sweep;
use sim::{Cluster, SimConfig, UNITS_PER_TICK};

/// Regression: the commit announcement was re-triggered by every append acknowledgement,
/// including rejections and repeats answering heartbeat-driven resends, so a lagging
/// follower and its leader exchanged heartbeats at network speed (one of seeds 0..10 sent
/// 18 million messages in 400 ticks). Found by the first sweep that ran the driver.
#[test]
fn announcements_do_not_ping_pong_with_a_lagging_follower() {
    for seed in 0..10 {
        let report = run_seed(seed, &FuzzOptions::default());
        assert!(report.failure.is_none(), "{:?}", report.failure);
        let per_tick = report.net.sent / report.ticks.max(1);
        assert!(
            per_tick < 200,
            "seed {seed}: {} messages in {} ticks",
            report.net.sent,
            report.ticks
        );
    }
}

/// A follower whose loop stalls for several election timeouts while the leader's
/// heartbeats keep arriving must not campaign when it resumes: each heartbeat is taken
/// after the ticks that preceded its arrival, never before them. The catch-up cap is
/// lifted here so that only that ordering protects it.
#[test]
fn a_stalled_follower_with_heartbeats_queued_does_not_campaign() {
    let mut config = SimConfig::new(3, sim::seed_from_env_or(5));
    config.max_catch_up_ticks = 10_000;
    let election = config.election_tick as u64;
    let mut c = Cluster::new(config);
    let leader = c.wait_for_leader(20 * election);
    let term = c.term(leader).expect("alive");
    let follower = c
        .ids()
        .into_iter()
        .find(|&i| i != leader)
        .expect("3 members");
    c.stall(follower, 5 * election * UNITS_PER_TICK);
    c.run_ticks(6 * election);
    assert_eq!(c.leader(), Some(leader), "{}", c.report("leader changed"));
    assert_eq!(
        c.term(follower),
        Some(term),
        "{}",
        c.report("the follower campaigned")
    );
    assert_eq!(c.term(leader), Some(term));
}

/// The sweep really exercises what the driver added: writes answered through any member
/// (forwarded or parked), linearizable reads, stalls, and restarts that lost a commit
/// index written without an fsync.
#[test]
fn the_sweep_covers_client_calls_stalls_and_lost_commit_indexes() {
    let summary = sweep(0, 100, 2, &FuzzOptions::default());
    assert!(summary.failures.is_empty(), "{}", summary.headline());
    let t = summary.totals;
    println!("{}", summary.headline());
    assert!(t.writes_acked > 1_000, "{}", summary.headline());
    assert!(t.reads_served > 100, "{}", summary.headline());
    assert!(t.stalls > 10, "{}", summary.headline());
    assert!(t.restarts_below_applied > 10, "{}", summary.headline());
}
