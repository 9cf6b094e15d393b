//! "No panics on bad input": a node fed random, mostly nonsensical messages (wrong terms,
//! indexes past the log, gaps, bogus hints, acks of entries never sent) must neither panic
//! nor break its own invariants.

mod common;

use bytes::Bytes;
use common::*;
use raft::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const V3: &[NodeId] = &[1, 2, 3];

fn random_entries(rng: &mut ChaCha8Rng, start: Index) -> Vec<Entry> {
    let n = rng.gen_range(0..4);
    let contiguous = rng.gen_bool(0.8);
    (0..n)
        .map(|i| Entry {
            term: rng.gen_range(0..6),
            index: if contiguous {
                start + i
            } else {
                rng.gen_range(0..20)
            },
            kind: EntryKind::Normal,
            data: Bytes::new(),
        })
        .collect()
}

fn random_message(rng: &mut ChaCha8Rng) -> Message {
    let small = |rng: &mut ChaCha8Rng| rng.gen_range(0..20u64);
    let prev_index = small(rng);
    let body = match rng.gen_range(0..13) {
        0 => MessageBody::PreVote {
            last_index: small(rng),
            last_term: small(rng),
        },
        1 => MessageBody::PreVoteResponse { granted: rng.gen() },
        2 => MessageBody::Vote {
            last_index: small(rng),
            last_term: small(rng),
            transfer: rng.gen(),
        },
        3 => MessageBody::VoteResponse { granted: rng.gen() },
        4 => MessageBody::Append {
            prev_index,
            prev_term: small(rng),
            entries: random_entries(rng, prev_index + 1),
            commit: small(rng),
        },
        5 => MessageBody::AppendResponse {
            rejected: rng.gen_bool(0.5).then(|| {
                (
                    small(rng),
                    RejectHint {
                        index: small(rng),
                        term: small(rng),
                    },
                )
            }),
            match_index: if rng.gen_bool(0.1) {
                u64::MAX
            } else {
                small(rng)
            },
        },
        6 => MessageBody::Heartbeat {
            commit: small(rng),
            read_seq: small(rng),
        },
        7 => MessageBody::HeartbeatResponse {
            read_seq: small(rng),
        },
        8 => MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: small(rng),
                    term: small(rng),
                    conf_state: ConfState {
                        voters: V3.to_vec(),
                        learners: vec![],
                    },
                },
                data: Bytes::new(),
            },
        },
        9 => MessageBody::TimeoutNow,
        10 => MessageBody::ReadIndex { ctx: Bytes::new() },
        11 => MessageBody::ReadIndexResponse {
            ctx: Bytes::new(),
            index: Some(small(rng)),
        },
        _ => MessageBody::AppendResponse {
            rejected: Some((
                u64::MAX,
                RejectHint {
                    index: u64::MAX,
                    term: u64::MAX,
                },
            )),
            match_index: 0,
        },
    };
    Message {
        from: rng.gen_range(0..5),
        to: 1,
        term: rng.gen_range(0..6),
        body,
    }
}

#[test]
fn random_messages_never_panic() {
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut n = scripted(1, V3, seed % 2 == 0);
        for step in 0..300 {
            match rng.gen_range(0..10) {
                0 => n.tick(),
                1 => {
                    let _ = n.propose(vec![Bytes::from_static(b"x")]);
                }
                2 => n.campaign(),
                3 => {
                    let _ = n.read_index(Bytes::new());
                }
                4 => {
                    let _ = n.transfer_leader(rng.gen_range(0..5));
                }
                _ => {
                    let _ = n.step(random_message(&mut rng));
                }
            }
            if n.has_ready() {
                let before = n.status();
                let rd = flush(&mut n);
                let after = n.status();
                assert!(
                    after.hard_state.term >= before.hard_state.term,
                    "seed {seed} step {step}"
                );
                assert!(
                    after.hard_state.commit >= before.hard_state.commit,
                    "seed {seed}"
                );
                assert!(
                    after.hard_state.commit <= after.last_index,
                    "seed {seed} step {step}"
                );
                assert!(rd
                    .committed_entries
                    .iter()
                    .all(|e| e.index <= after.hard_state.commit));
            }
        }
    }
}
