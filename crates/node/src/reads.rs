//! Linearizable reads: ReadIndex rounds through the leader, released once the local state
//! machine has applied the confirmed index.
//!
//! Reads that arrive in one round share one ReadIndex request. A round unanswered for half
//! an election timeout was probably lost to a leader change: its reads are asked again
//! under a new context (a late answer to the old one is ignored).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use raft::{Index, ReadState};

use crate::driver::Driver;
use crate::effects::{NodeError, Outcome, Reply, RequestId};

/// The first byte of the driver's ReadIndex contexts: tells them apart from contexts a
/// test hands to the core directly.
const CTX_TAG: u8 = b'R';

#[derive(Default)]
pub(crate) struct Reads {
    /// Reads not yet handed to the core (with when they arrived).
    unsent: Vec<(RequestId, Duration)>,
    /// Read rounds handed to the core, by context: the reads and when the round started.
    inflight: BTreeMap<u64, (Vec<(RequestId, Duration)>, Duration)>,
    /// Confirmed reads waiting for the apply index to reach theirs.
    confirmed: BTreeMap<Index, Vec<(RequestId, Duration)>>,
    /// The next read round's context. Starts at the incarnation's random base
    /// ([`crate::DriverConfig::forward_id_base`]): a follower's contexts go to the leader and
    /// back, and an answer sent to a previous incarnation that arrives after a restart must
    /// not be taken for the answer to a new round with the same context. It would name an
    /// index from before the new read was asked: a stale read (raftkv-sim seed 63186).
    next_ctx: u64,
}

impl Reads {
    pub(crate) fn starting_at(ctx_base: u64) -> Reads {
        Reads {
            next_ctx: ctx_base,
            ..Reads::default()
        }
    }

    pub(crate) fn queue(&mut self, req: RequestId, now: Duration) {
        self.unsent.push((req, now));
    }

    pub(crate) fn expire(
        &mut self,
        now: Duration,
        no_leader: Duration,
        timeout: Duration,
        retry_after: Duration,
        replies: &mut Vec<Reply>,
    ) {
        let age = |since: Duration| now.saturating_sub(since);
        let stale: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, (_, started))| age(*started) >= retry_after)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((reqs, _)) = self.inflight.remove(&ctx) {
                self.unsent.extend(reqs);
            }
        }
        let unsent = std::mem::take(&mut self.unsent);
        for (req, since) in unsent {
            if age(since) >= no_leader {
                // Unsent this long: no leader was known, or no round got through.
                fail(replies, req, NodeError::NoLeader);
            } else {
                self.unsent.push((req, since));
            }
        }
        for reqs in self.confirmed.values_mut() {
            reqs.retain(|&(req, since)| {
                let keep = age(since) < timeout;
                if !keep {
                    fail(replies, req, NodeError::Timeout);
                }
                keep
            });
        }
        self.confirmed.retain(|_, reqs| !reqs.is_empty());
    }
}

fn fail(replies: &mut Vec<Reply>, req: RequestId, e: NodeError) {
    replies.push(Reply {
        req,
        outcome: Outcome::Failed(e),
    });
}

fn encode_ctx(ctx: u64) -> Bytes {
    let mut b = Vec::with_capacity(9);
    b.push(CTX_TAG);
    b.extend_from_slice(&ctx.to_be_bytes());
    Bytes::from(b)
}

fn decode_ctx(b: &[u8]) -> Option<u64> {
    match b {
        [CTX_TAG, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

impl Driver {
    /// Hand this round's reads to the core as one ReadIndex request.
    pub(crate) fn flush_reads(&mut self) {
        if self.reads.unsent.is_empty() || self.leader.is_none() {
            return;
        }
        let ctx = self.reads.next_ctx;
        self.reads.next_ctx = ctx.wrapping_add(1);
        // On error (no leader after all) the reads stay queued until one appears or they
        // expire.
        if self.raft.read_index(encode_ctx(ctx)).is_ok() {
            let reqs = std::mem::take(&mut self.reads.unsent);
            self.reads.inflight.insert(ctx, (reqs, self.now));
        }
    }

    /// Act on the core's confirmed reads; returns those the driver did not ask for.
    pub(crate) fn on_read_states(&mut self, states: Vec<ReadState>) -> Vec<ReadState> {
        let mut foreign = Vec::new();
        for rs in states {
            let Some(ctx) = decode_ctx(&rs.ctx) else {
                match crate::lease_keeper::decode_ctx(&rs.ctx) {
                    Some(ctx) => self.on_lease_read_state(ctx, rs.index),
                    None => foreign.push(rs),
                }
                continue;
            };
            let Some((reqs, _)) = self.reads.inflight.remove(&ctx) else {
                continue;
            };
            self.reads
                .confirmed
                .entry(rs.index)
                .or_default()
                .extend(reqs);
        }
        self.release_reads();
        foreign
    }

    /// Answer the reads whose confirmed index is applied (in this batch or before).
    pub(crate) fn release_reads(&mut self) {
        let later = self.reads.confirmed.split_off(&(self.applied + 1));
        for (_, reqs) in std::mem::replace(&mut self.reads.confirmed, later) {
            for (req, _) in reqs {
                self.reply(req, Outcome::ReadReady);
            }
        }
    }
}
