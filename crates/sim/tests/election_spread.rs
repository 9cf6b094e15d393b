//! The narrow election-timeout spread the server uses (`[T, 1.3 T)` instead of the paper's
//! `[T, 2T)`, docs/raft-deviations.md) keeps Raft live and safe, and shortens failover:
//!
//! * the seed sweep, every fault on, with each run's spread cut to 30% of its election
//!   timeout (at least 3 ticks, as in the server). That is coarser than the server's 30
//!   ticks (here 3 to 6 ticks, against message delays of up to 1.5 ticks and members
//!   ticking in lockstep), so split votes are far likelier than in a real cluster;
//! * leader failover at the server's exact tuning (10 ms ticks: election 100 ticks, spread
//!   30, heartbeat 10; delays of 1 to 3 ms, slower than loopback), with each member on its
//!   own tick phase as real members are, measured in virtual time and compared with the
//!   paper's spread and with lockstep ticks on the same seeds.

use std::io::Write;

use bytes::Bytes;
use raft::{Index, NodeId};
use rand::Rng;

use sim::fuzz::{replay_command, FuzzOptions};
use sim::network::NetConfig;
use sim::sweep::sweep;
use sim::{Cluster, SimConfig, UNITS_PER_TICK};

/// The server's spread, in percent of the election timeout (server `config.rs`).
const SERVER_JITTER_PERCENT: u32 = 30;

fn count_from_env(default: u64) -> u64 {
    std::env::var("RAFTKV_SIM_SWEEP_COUNT")
        .ok()
        .map(|v| v.parse().expect("RAFTKV_SIM_SWEEP_COUNT is a number"))
        .unwrap_or(default)
}

#[test]
fn sweep_with_a_narrow_spread_stays_safe_and_live() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for intense in [false, true] {
        let options = FuzzOptions {
            intense,
            election_jitter_percent: Some(SERVER_JITTER_PERCENT),
            ..FuzzOptions::default()
        };
        let count = count_from_env(if intense { 250 } else { 1000 });
        let summary = sweep(0, count, threads, &options);
        let _ = writeln!(
            std::io::stderr(),
            "sim sweep (spread {SERVER_JITTER_PERCENT}%{}): {}",
            if intense { ", intense" } else { "" },
            summary.headline()
        );
        let failed: Vec<u64> = summary.failures.iter().map(|f| f.seed).collect();
        assert!(
            failed.is_empty(),
            "{}\nfailing seeds: {failed:?}\nfirst failure: {}\nreplay: {}",
            summary.headline(),
            summary.failures[0].failure.as_deref().unwrap_or(""),
            replay_command(failed[0], &options)
        );
    }
}

/// Server timing in simulator units: one unit is 1 ms when a tick is 10 ms.
const ELECTION_TICK: u32 = 100;
const HEARTBEAT_TICK: u32 = 10;
const SERVER_JITTER_TICKS: u32 = 30;

/// Kills the leader of a settled three-member cluster at a random point of the heartbeat
/// cycle and returns the virtual milliseconds until the new leader has applied a write
/// (when a real server would answer the client) and how many terms the failover took.
fn one_failover(seed: u64, jitter: Option<u32>, staggered_ticks: bool) -> (u64, u64) {
    let mut config = SimConfig::new(3, seed);
    config.election_tick = ELECTION_TICK;
    config.heartbeat_tick = HEARTBEAT_TICK;
    config.election_jitter_tick = jitter;
    config.staggered_ticks = staggered_ticks;
    config.net = NetConfig {
        min_delay: 1,
        max_delay: 3,
        long_delay_max: 3,
        ..NetConfig::reliable()
    };
    let mut c = Cluster::new(config);
    let election = u64::from(ELECTION_TICK);
    let old = c.wait_for_leader(10 * election);
    c.one(b"before", 3, true);
    // Let a random part of the heartbeat cycle pass: the kill lands anywhere in it.
    let pause = c
        .rng()
        .gen_range(0..u64::from(HEARTBEAT_TICK) * UNITS_PER_TICK);
    for _ in 0..pause {
        c.step_unit();
    }
    let killed_at = c.now_units();
    let old_term = c.term(old).expect("alive");
    c.crash(old);
    let mut written: Option<(NodeId, Index)> = None;
    loop {
        match written {
            Some((leader, index)) if c.applied_index(leader) >= index => break,
            Some(_) => {}
            None => {
                if let Some(leader) = c.leader().filter(|&l| l != old) {
                    if let Ok(p) = c.propose(leader, Bytes::from_static(b"after")) {
                        written = Some((leader, p.last));
                    }
                }
            }
        }
        if c.now_units() - killed_at > 10 * election * UNITS_PER_TICK {
            c.fail("no write applied within 10 election timeouts of the kill");
        }
        c.step_unit();
    }
    let (leader, _) = written.expect("the loop ends only after a write");
    let terms = c.term(leader).expect("alive") - old_term;
    (c.now_units() - killed_at, terms)
}

struct Distribution {
    name: &'static str,
    /// Failover times in virtual ms, sorted.
    ms: Vec<u64>,
    /// Kills that needed more than one new term (a split vote, or a refused first try).
    extra_rounds: usize,
}

impl Distribution {
    fn measure(name: &'static str, seeds: u64, jitter: Option<u32>, staggered: bool) -> Self {
        let runs: Vec<(u64, u64)> = (0..seeds)
            .map(|s| one_failover(s, jitter, staggered))
            .collect();
        let mut ms: Vec<u64> = runs.iter().map(|r| r.0).collect();
        ms.sort_unstable();
        let extra_rounds = runs.iter().filter(|r| r.1 > 1).count();
        Distribution {
            name,
            ms,
            extra_rounds,
        }
    }

    /// Nearest-rank percentile.
    fn p(&self, percent: f64) -> u64 {
        let rank = ((percent / 100.0) * self.ms.len() as f64).ceil() as usize;
        self.ms[rank.clamp(1, self.ms.len()) - 1]
    }

    fn line(&self) -> String {
        format!(
            "{}: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; {} of {} kills needed a second term",
            self.name,
            self.p(50.0),
            self.p(90.0),
            self.p(99.0),
            self.ms[self.ms.len() - 1],
            self.extra_rounds,
            self.ms.len()
        )
    }
}

#[test]
fn failover_at_server_timing_is_bounded_by_the_narrow_spread() {
    let seeds = count_from_env(400);
    let narrow = Distribution::measure(
        "[1.0 s, 1.3 s), own tick phases",
        seeds,
        Some(SERVER_JITTER_TICKS),
        true,
    );
    let wide = Distribution::measure("[1.0 s, 2.0 s), own tick phases", seeds, None, true);
    let lockstep = Distribution::measure(
        "[1.0 s, 1.3 s), lockstep ticks",
        seeds,
        Some(SERVER_JITTER_TICKS),
        false,
    );
    let _ = writeln!(
        std::io::stderr(),
        "sim failover at server timing (virtual ms from the kill to a write applied by the new \
         leader)\n  {}\n  {}\n  {}",
        narrow.line(),
        wide.line(),
        lockstep.line()
    );
    let tick_ms = UNITS_PER_TICK; // one unit is 1 ms
    let min_ms = u64::from(ELECTION_TICK) * tick_ms;
    let spread_ms = u64::from(SERVER_JITTER_TICKS) * tick_ms;
    // Nobody campaigns before the minimum timeout, counted from the last heartbeat (which
    // may have arrived up to a heartbeat interval before the kill).
    assert!(
        narrow.ms[0] >= min_ms - u64::from(HEARTBEAT_TICK) * tick_ms,
        "{}",
        narrow.line()
    );
    // Nine kills in ten: the first timeout wins, within T + spread plus a few round trips.
    assert!(
        narrow.p(90.0) <= min_ms + spread_ms + 20,
        "{}",
        narrow.line()
    );
    // The rest are split votes (both survivors campaigning within one round trip of each
    // other), rare with per-member clocks, and each costs exactly one more round.
    assert!(
        narrow.extra_rounds * 100 <= 3 * narrow.ms.len(),
        "{}",
        narrow.line()
    );
    let worst = narrow.ms[narrow.ms.len() - 1];
    assert!(worst <= 2 * (min_ms + spread_ms) + 50, "{}", narrow.line());
    // What the narrow spread buys: the typical and the slow-but-not-split failovers are
    // several hundred ms faster than with the paper's spread.
    assert!(
        narrow.p(50.0) + 250 <= wide.p(50.0),
        "{}\n{}",
        narrow.line(),
        wide.line()
    );
    assert!(
        narrow.p(90.0) + 400 <= wide.p(90.0),
        "{}\n{}",
        narrow.line(),
        wide.line()
    );
}
