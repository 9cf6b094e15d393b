//! Throughput of the consensus core alone: 3 nodes in one process, messages handed from
//! one node to the next directly, "storage" that acknowledges at once (no fsync), 128-byte
//! payloads. Reports committed entries per second (counted on the leader as they come out
//! in `committed_entries`) at batch sizes 1, 16 and 256 entries per `propose` call.
//!
//! Run: `cargo run --release -p raftkv-raft --example core_bench [seconds-per-batch-size]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::*;

const PAYLOAD: usize = 128;
/// Compact a node's log once this many applied entries are held in memory.
const COMPACT_EVERY: u64 = 50_000;

struct Bench {
    nodes: Vec<RaftNode>,
    inbox: Vec<Message>,
    committed_on_leader: u64,
}

impl Bench {
    fn new() -> Bench {
        let voters = vec![1, 2, 3];
        let nodes = voters
            .iter()
            .map(|&id| {
                let initial = InitialState {
                    conf_state: ConfState {
                        voters: voters.clone(),
                        learners: vec![],
                    },
                    ..Default::default()
                };
                RaftNode::new(Config::new(id), initial).expect("valid config")
            })
            .collect();
        let mut bench = Bench {
            nodes,
            inbox: Vec::new(),
            committed_on_leader: 0,
        };
        bench.nodes[0].campaign();
        while bench.nodes[0].status().role != Role::Leader {
            bench.pump();
        }
        bench.pump();
        bench
    }

    /// One round: every node handles its Ready, then every message is delivered.
    fn pump(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            let mut rd = node.ready();
            let ack = rd.ack();
            self.inbox.append(&mut rd.messages);
            self.inbox.append(&mut rd.persisted_messages);
            if i == 0 {
                self.committed_on_leader += rd
                    .committed_entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::Normal)
                    .count() as u64;
            }
            node.advance(ack);
            let st = node.status();
            if st.applied >= st.first_index + COMPACT_EVERY {
                let term = node.entries(st.applied, st.applied + 1).expect("in memory")[0].term;
                let snapshot = Snapshot {
                    meta: SnapshotMeta {
                        index: st.applied,
                        term,
                        conf_state: st.conf_state.clone(),
                    },
                    data: Bytes::new(),
                };
                node.compact(snapshot).expect("compact applied prefix");
            }
        }
        for msg in self.inbox.drain(..) {
            let to = (msg.to - 1) as usize;
            self.nodes[to].step(msg).expect("routed");
        }
    }
}

fn run(batch: usize, duration: Duration) -> f64 {
    let mut bench = Bench::new();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let start = Instant::now();
    let mut proposed = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            let data = vec![payload.clone(); batch];
            bench.nodes[0].propose(data).expect("leader");
            proposed += batch as u64;
            bench.pump();
        }
    }
    // Drain the pipeline so every counted entry really committed.
    while bench.committed_on_leader < proposed {
        bench.pump();
    }
    let elapsed = start.elapsed().as_secs_f64();
    bench.committed_on_leader as f64 / elapsed
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("seconds per batch size"))
        .unwrap_or(3.0);
    println!("raft core bench: 3 nodes, in-memory, no fsync, {PAYLOAD}-byte entries");
    for batch in [1usize, 16, 256] {
        let rate = run(batch, Duration::from_secs_f64(secs));
        println!("batch {batch:>3}: {rate:>12.0} committed entries/s");
    }
}
