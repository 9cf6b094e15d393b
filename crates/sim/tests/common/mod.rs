//! Shared setup for the scenario tests: a cluster whose failures print the seed and the
//! exact command that replays the failing test.

#![allow(dead_code)]

use bytes::Bytes;
use raft::{NodeId, Role};
use sim::{seed_from_env_or, Cluster, SimConfig};

/// The seeds a multi-seed scenario runs: just `RAFTKV_SIM_SEED` when replaying a failure,
/// else `first..first + count`.
pub fn seeds(first: u64, count: u64) -> Vec<u64> {
    match std::env::var("RAFTKV_SIM_SEED") {
        Ok(_) => vec![seed_from_env_or(first)],
        Err(_) => (first..first + count).collect(),
    }
}

/// A cluster for test `test` in test file `file`, seeded from `RAFTKV_SIM_SEED` if set.
pub fn config(nodes: usize, file: &str, test: &str, default_seed: u64) -> SimConfig {
    let seed = seed_from_env_or(default_seed);
    let mut c = SimConfig::new(nodes, seed);
    c.replay = format!(
        "RAFTKV_SIM_SEED={seed} RAFTKV_SIM_TRACE=1 cargo test -p raftkv-sim --release --test {file} {test} -- --exact --nocapture"
    );
    c
}

pub fn cluster(nodes: usize, file: &str, test: &str, default_seed: u64) -> Cluster {
    Cluster::new(config(nodes, file, test, default_seed))
}

/// One election timeout in ticks (the randomised timeout is within [1, 2) of these).
pub fn election(c: &Cluster) -> u64 {
    c.config().election_tick as u64
}

/// Fails with the seed unless `cond` holds.
pub fn ensure(c: &Cluster, cond: bool, what: &str) {
    if !cond {
        c.fail(what);
    }
}

/// Waits a few election timeouts and requires that no connected member leads.
pub fn check_no_leader(c: &mut Cluster, ticks: u64) {
    c.run_ticks(ticks);
    let leaders = c.leaders();
    ensure(
        c,
        leaders.is_empty(),
        &format!("expected no leader, found {leaders:?}"),
    );
}

/// The term every live, connected member agrees on (fails if they disagree).
pub fn check_terms_agree(c: &Cluster) -> u64 {
    let terms: Vec<(NodeId, u64)> = c
        .ids()
        .into_iter()
        .filter(|&i| c.is_connected(i))
        .filter_map(|i| c.term(i).map(|t| (i, t)))
        .collect();
    let first = terms.first().map(|t| t.1).unwrap_or(0);
    ensure(
        c,
        terms.iter().all(|t| t.1 == first),
        &format!("members disagree on the term: {terms:?}"),
    );
    first
}

/// Every member's durable log and applied history, compared: they must be identical.
pub fn check_logs_identical(c: &Cluster, ids: &[NodeId]) {
    let reference = c.applied(ids[0]).to_vec();
    for &id in &ids[1..] {
        ensure(
            c,
            c.applied(id) == reference.as_slice(),
            &format!("applied history of {id} differs from {}'s", ids[0]),
        );
        let (a, b) = (c.durable(ids[0]), c.durable(id));
        ensure(
            c,
            a.last_index() == b.last_index(),
            &format!(
                "durable logs of {} and {id} end at different indexes",
                ids[0]
            ),
        );
        for index in a.snapshot_index().max(b.snapshot_index()) + 1..=a.last_index() {
            ensure(
                c,
                a.entry(index) == b.entry(index),
                &format!("durable logs of {} and {id} differ at {index}", ids[0]),
            );
        }
    }
}

/// Waits (up to `elections` election timeouts) until every live member has applied
/// everything committed and holds the same durable log length.
pub fn wait_converged(c: &mut Cluster, elections: u64) {
    let max_ticks = elections * election(c);
    let ok = c.run_until(max_ticks, |c| {
        let live: Vec<NodeId> = c.ids().into_iter().filter(|&i| c.is_alive(i)).collect();
        let Some(target) = live
            .iter()
            .filter_map(|&i| c.status(i))
            .map(|s| s.hard_state.commit)
            .max()
        else {
            return false;
        };
        live.iter().all(|&i| c.applied_index(i) == target)
            && live
                .iter()
                .all(|&i| c.durable(i).last_index() == c.durable(live[0]).last_index())
    });
    ensure(
        c,
        ok,
        &format!("members did not converge within {max_ticks} ticks"),
    );
}

pub fn role(c: &Cluster, id: NodeId) -> Option<Role> {
    c.status(id).map(|s| s.role)
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Proposes each payload to whoever claims leadership, retrying (like a client) until each
/// is applied on at least `expected` members; fails after `elections` election timeouts.
pub fn commit_all(c: &mut Cluster, payloads: &[Bytes], expected: usize, elections: u64) {
    let deadline = c.now_ticks() + elections * election(c);
    let retry = 2 * election(c);
    let mut next_try = vec![0u64; payloads.len()];
    loop {
        let done = payloads.iter().all(|p| {
            c.committed_index_of(p)
                .is_some_and(|i| c.n_committed(i).0 >= expected)
        });
        if done {
            return;
        }
        if c.now_ticks() >= deadline {
            c.fail(&format!(
                "{} payloads not applied on {expected} members within {elections} election timeouts",
                payloads.len()
            ));
        }
        let now = c.now_ticks();
        for (k, p) in payloads.iter().enumerate() {
            if c.committed_index_of(p).is_some() || next_try[k] > now {
                continue;
            }
            if let Some(leader) = c.leader() {
                if c.propose(leader, p.clone()).is_ok() {
                    next_try[k] = now + retry;
                }
            }
        }
        c.run_ticks(1);
    }
}
