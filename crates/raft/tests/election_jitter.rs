//! The election-timeout spread (`Config::election_jitter_tick`): a follower that hears no
//! leader campaigns after a timeout drawn from `[election_tick, election_tick + jitter)`,
//! `jitter` defaulting to `election_tick` (the paper's `[T, 2T)`). The server narrows the
//! spread to shorten failover (docs/raft-deviations.md); these transcripts pin down exactly
//! which timeouts each setting can produce.

use std::collections::BTreeSet;

use raft::*;

/// A member of a three-voter cluster that never hears from anyone.
fn lonely_member(election_tick: u32, jitter: Option<u32>, seed: u64) -> RaftNode {
    let mut cfg = Config::new(1);
    cfg.election_tick = election_tick;
    cfg.election_jitter_tick = jitter;
    cfg.seed = seed;
    let initial = InitialState {
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            learners: vec![],
        },
        ..Default::default()
    };
    RaftNode::new(cfg, initial).expect("valid config")
}

/// Ticks until the node asks for (pre-)votes, `rounds` times in a row (nobody answers, so
/// every round draws a fresh timeout). Returns each round's length in ticks.
fn campaign_delays(node: &mut RaftNode, rounds: usize) -> Vec<u32> {
    let mut delays = Vec::new();
    let mut ticks = 0u32;
    while delays.len() < rounds {
        node.tick();
        ticks += 1;
        assert!(ticks <= 100_000, "no campaign within 100000 ticks");
        if !node.has_ready() {
            continue;
        }
        let rd = node.ready();
        let asked = rd
            .messages
            .iter()
            .chain(rd.persisted_messages.iter())
            .any(|m| {
                matches!(
                    m.body,
                    MessageBody::PreVote { .. } | MessageBody::Vote { .. }
                )
            });
        node.advance(rd.ack());
        if asked {
            delays.push(ticks);
            ticks = 0;
        }
    }
    delays
}

/// Every delay seen over 20 seeds × 20 rounds.
fn observed_delays(election_tick: u32, jitter: Option<u32>) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for seed in 0..20 {
        let mut node = lonely_member(election_tick, jitter, seed);
        seen.extend(campaign_delays(&mut node, 20));
    }
    seen
}

#[test]
fn default_spread_is_the_papers_t_to_2t() {
    // 400 draws over 10 values: every value shows up (the seeds are fixed, so this is a
    // fact about these runs, not a probability).
    let seen = observed_delays(10, None);
    assert_eq!(seen, (10..20).collect::<BTreeSet<u32>>());
}

#[test]
fn explicit_jitter_equal_to_election_tick_is_the_default() {
    for seed in 0..5 {
        let mut implicit = lonely_member(10, None, seed);
        let mut explicit = lonely_member(10, Some(10), seed);
        assert_eq!(
            campaign_delays(&mut implicit, 20),
            campaign_delays(&mut explicit, 20),
            "seed {seed}: same RNG, same range, so the same timeouts"
        );
    }
}

#[test]
fn narrow_spread_stays_within_t_to_t_plus_jitter() {
    // The server's setting for etcd's default flags: 10 ms ticks, 1.0 s minimum, 0.3 s spread.
    let seen = observed_delays(100, Some(30));
    assert_eq!(seen, (100..130).collect::<BTreeSet<u32>>());
}

#[test]
fn jitter_of_one_tick_is_a_fixed_timeout() {
    let seen = observed_delays(7, Some(1));
    assert_eq!(seen, BTreeSet::from([7]));
}

#[test]
fn zero_or_huge_jitter_is_refused() {
    for jitter in [0, u32::MAX] {
        let mut cfg = Config::new(1);
        cfg.election_jitter_tick = Some(jitter);
        let initial = InitialState {
            conf_state: ConfState {
                voters: vec![1],
                learners: vec![],
            },
            ..Default::default()
        };
        assert!(
            matches!(RaftNode::new(cfg, initial), Err(ConfigError::Invalid(_))),
            "jitter {jitter} must be refused"
        );
    }
}

#[test]
fn narrow_spread_leaves_the_leader_lease_at_election_tick() {
    // Stickiness is about the minimum timeout only: a member that heard from its leader
    // 99 ticks ago still refuses a pre-vote, at 100 it grants one.
    let mut cfg = Config::new(2);
    cfg.election_tick = 100;
    cfg.heartbeat_tick = 10;
    cfg.election_jitter_tick = Some(30);
    let initial = InitialState {
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            learners: vec![],
        },
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        ..Default::default()
    };
    let mut node = RaftNode::new(cfg, initial).expect("valid config");
    node.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    })
    .expect("member 1 is a voter");
    let pre_vote = Message {
        from: 3,
        to: 2,
        term: 2,
        body: MessageBody::PreVote {
            last_index: 0,
            last_term: 0,
        },
    };
    let answers = |node: &mut RaftNode| {
        if !node.has_ready() {
            return vec![];
        }
        let rd = node.ready();
        let granted: Vec<bool> = rd
            .messages
            .iter()
            .chain(rd.persisted_messages.iter())
            .filter_map(|m| match m.body {
                MessageBody::PreVoteResponse { granted } if m.to == 3 => Some(granted),
                _ => None,
            })
            .collect();
        node.advance(rd.ack());
        granted
    };
    answers(&mut node);
    for _ in 0..99 {
        node.tick();
    }
    node.step(pre_vote.clone()).expect("member 3 is a voter");
    assert_eq!(
        answers(&mut node),
        Vec::<bool>::new(),
        "ignored inside the lease"
    );
    node.tick();
    node.step(pre_vote).expect("member 3 is a voter");
    assert_eq!(
        answers(&mut node),
        vec![true],
        "granted once the lease ran out"
    );
}
