//! ReadIndex: linearizable reads without writing to the log (thesis §6.4).
//!
//! A read may be served at the leader's commit index once the leader has proved it was still
//! the leader *after* the read arrived. Two subtleties decide correctness:
//!
//! 1. A new leader's commit index may trail its predecessor's until it commits an entry of its
//!    own term (its no-op). Reads arriving before that wait in `waiting_for_commit`
//!    (raft-anchors §4.12).
//! 2. The proof is a heartbeat round acknowledged by a majority. Rounds are numbered by the
//!    leader (`read_seq`, strictly increasing), and a read is confirmed only by acks of its own
//!    round or a later one — never by a delayed ack of an earlier round, whatever context the
//!    client chose (raft-anchors §4.13).
//!
//! Reads are batched: all reads queued before the next `ready()` share one round.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::node::RaftNode;
use crate::quorum::quorum_value;
use crate::types::*;

/// A read waiting for its heartbeat round to be acknowledged by a majority.
#[derive(Debug)]
struct PendingRead {
    ctx: Bytes,
    /// The follower that forwarded it, or `None` for a read made on this node.
    from: Option<NodeId>,
    /// The commit index when the read arrived: the read is served once this is applied.
    index: Index,
    /// The heartbeat round that must be acknowledged.
    seq: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReadIndexQueue {
    waiting_for_commit: Vec<(Bytes, Option<NodeId>)>,
    pending: VecDeque<PendingRead>,
    /// The last round broadcast. Never reset, so rounds stay increasing across terms too.
    last_seq: u64,
    /// Reads were queued for round `last_seq + 1`, which is not broadcast yet.
    round_needed: bool,
}

impl ReadIndexQueue {
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub(crate) fn round_needed(&self) -> bool {
        self.round_needed
    }

    /// Leadership ended or began: no read of the old role may be answered any more.
    pub(crate) fn clear(&mut self) {
        self.waiting_for_commit.clear();
        self.pending.clear();
        self.round_needed = false;
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len() + self.waiting_for_commit.len()
    }
}

impl RaftNode {
    /// A read request on the leader, made locally (`from == None`) or forwarded.
    pub(crate) fn leader_read(&mut self, ctx: Bytes, from: Option<NodeId>) {
        let committed = self.log.committed;
        if self.log.term(committed) != Some(self.term) {
            self.reads.waiting_for_commit.push((ctx, from));
            return;
        }
        if self.conf_state.voters == [self.id] {
            // We alone are the quorum: nobody else can have been elected.
            self.deliver_read(ctx, from, committed);
            return;
        }
        let seq = self.reads.last_seq + 1;
        self.reads.round_needed = true;
        self.reads.pending.push_back(PendingRead {
            ctx,
            from,
            index: committed,
            seq,
        });
    }

    /// Broadcast the heartbeat round that confirms the reads queued since the last one.
    pub(crate) fn flush_read_round(&mut self) {
        if self.role == Role::Leader && self.reads.round_needed {
            self.reads.last_seq += 1;
            self.reads.round_needed = false;
            self.broadcast_heartbeat();
        }
    }

    /// The first commit in our term happened: serve the reads that were waiting for it.
    pub(crate) fn release_reads_waiting_for_commit(&mut self) {
        if self.log.term(self.log.committed) != Some(self.term) {
            return;
        }
        for (ctx, from) in std::mem::take(&mut self.reads.waiting_for_commit) {
            self.leader_read(ctx, from);
        }
    }

    /// A follower echoed round `seq`: confirm every read whose round a majority has seen.
    pub(crate) fn on_read_ack(&mut self, from: NodeId, seq: u64) {
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.read_ack = pr.read_ack.max(seq);
        }
        let me = self.id;
        let progress = &self.progress;
        let confirmed = quorum_value(&self.conf_state.voters, |id| {
            if id == me {
                u64::MAX
            } else {
                progress.get(&id).map_or(0, |p| p.read_ack)
            }
        });
        while self
            .reads
            .pending
            .front()
            .is_some_and(|r| r.seq <= confirmed)
        {
            if let Some(read) = self.reads.pending.pop_front() {
                self.deliver_read(read.ctx, read.from, read.index);
            }
        }
    }

    fn deliver_read(&mut self, ctx: Bytes, from: Option<NodeId>, index: Index) {
        match from {
            None => self.read_states.push(ReadState { ctx, index }),
            Some(to) => self.send(
                to,
                MessageBody::ReadIndexResponse {
                    ctx,
                    index: Some(index),
                },
            ),
        }
    }

    pub(crate) fn handle_read_index_request(&mut self, from: NodeId, ctx: Bytes) {
        if self.role == Role::Leader {
            self.leader_read(ctx, Some(from));
        } else {
            self.send(from, MessageBody::ReadIndexResponse { ctx, index: None });
        }
    }

    pub(crate) fn handle_read_index_response(
        &mut self,
        _from: NodeId,
        ctx: Bytes,
        index: Option<Index>,
    ) {
        if self.role == Role::Leader {
            return;
        }
        if let Some(index) = index {
            self.read_states.push(ReadState { ctx, index });
        }
    }

    /// Reads accepted but not yet answered (for tests and metrics).
    pub fn pending_read_count(&self) -> usize {
        self.reads.pending_count()
    }
}
