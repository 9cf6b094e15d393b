//! Where a client proposal goes, and who waits for which log index.
//!
//! A proposal made on the leader goes into its log; one made on a follower is forwarded to
//! the leader over a live connection, and the leader tells the follower where it landed;
//! while no leader is known (or the connection to it is down) it is parked. Whoever
//! placed it waits for the entry at that index to be applied locally: if the entry there
//! has another term, leadership moved and the proposal was lost.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use raft::{Index, NodeId, ProposeError, Role, Term};

use crate::driver::Driver;
use crate::effects::{ForwardError, NodeError, Outcome, PeerFrame, Reply, RequestId};

/// Where a proposal to be placed in the log came from.
enum Origin {
    /// A client call on this member, waiting since the given time.
    Local(RequestId, Duration),
    /// Forwarded by follower `from` as its forward `req_id`.
    Remote { from: NodeId, req_id: u64 },
    /// The driver's own decision (lease duties): nobody waits for it. Placed only by a
    /// leader; anywhere else it is dropped (forwarded, untracked, only under the lease
    /// sabotage of the simulator's self-tests).
    Internal,
}

/// A client call waiting for the entry at an index to be applied.
struct InLog {
    req: RequestId,
    term: Term,
    since: Duration,
}

/// A proposal forwarded to the leader, waiting to learn its position.
struct Forwarded {
    req: RequestId,
    data: Bytes,
    to: NodeId,
    since: Duration,
}

/// The proposal bookkeeping. Ordered maps only: iteration order is part of what the
/// simulator replays.
pub(crate) struct Routing {
    /// Proposals received this round, placed in the log together.
    to_propose: Vec<(Bytes, Origin)>,
    /// Proposals waiting for a leader to be known (with when they arrived).
    parked: Vec<(RequestId, Bytes, Duration)>,
    /// Forwarded proposals by forward id.
    forwarded: BTreeMap<u64, Forwarded>,
    next_forward_id: u64,
    /// Placed proposals by log index.
    in_log: BTreeMap<Index, InLog>,
}

impl Routing {
    pub(crate) fn new(forward_id_base: u64) -> Routing {
        Routing {
            to_propose: Vec::new(),
            parked: Vec::new(),
            forwarded: BTreeMap::new(),
            next_forward_id: forward_id_base,
            in_log: BTreeMap::new(),
        }
    }

    pub(crate) fn queue_internal(&mut self, data: Bytes) {
        self.to_propose.push((data, Origin::Internal));
    }

    pub(crate) fn queue_local(&mut self, req: RequestId, data: Bytes, now: Duration) {
        self.to_propose.push((data, Origin::Local(req, now)));
    }

    /// The waiter of the entry at `index` applied with `term`: its request id if the
    /// entry is the proposal it placed; a failure reply if leadership moved in between.
    pub(crate) fn take_waiter(
        &mut self,
        index: Index,
        term: Term,
        replies: &mut Vec<Reply>,
    ) -> Option<RequestId> {
        let w = self.in_log.remove(&index)?;
        if w.term == term {
            Some(w.req)
        } else {
            fail(replies, w.req, NodeError::LeaderChanged);
            None
        }
    }

    fn wait_at(&mut self, index: Index, w: InLog, replies: &mut Vec<Reply>) {
        if let Some(old) = self.in_log.insert(index, w) {
            // Another call waited there under an older term: that entry is gone.
            fail(replies, old.req, NodeError::LeaderChanged);
        }
    }

    pub(crate) fn fail_forwarded(&mut self, e: NodeError, replies: &mut Vec<Reply>) {
        for (_, f) in std::mem::take(&mut self.forwarded) {
            fail(replies, f.req, e);
        }
    }

    pub(crate) fn fail_waiters_through(
        &mut self,
        index: Index,
        e: NodeError,
        replies: &mut Vec<Reply>,
    ) {
        let later = self.in_log.split_off(&(index + 1));
        for (_, w) in std::mem::replace(&mut self.in_log, later) {
            fail(replies, w.req, e);
        }
    }

    pub(crate) fn expire(
        &mut self,
        now: Duration,
        no_leader: Duration,
        timeout: Duration,
        replies: &mut Vec<Reply>,
    ) {
        let parked = std::mem::take(&mut self.parked);
        for (req, data, since) in parked {
            if now.saturating_sub(since) >= no_leader {
                fail(replies, req, NodeError::NoLeader);
            } else {
                self.parked.push((req, data, since));
            }
        }
        self.forwarded.retain(|_, f| {
            let keep = now.saturating_sub(f.since) < timeout;
            if !keep {
                fail(replies, f.req, NodeError::Timeout);
            }
            keep
        });
        self.in_log.retain(|_, w| {
            let keep = now.saturating_sub(w.since) < timeout;
            if !keep {
                fail(replies, w.req, NodeError::Timeout);
            }
            keep
        });
    }
}

fn fail(replies: &mut Vec<Reply>, req: RequestId, e: NodeError) {
    replies.push(Reply {
        req,
        outcome: Outcome::Failed(e),
    });
}

impl Driver {
    /// A proposal of the driver's own (a lease decision): placed with this round's
    /// proposals if this member leads, dropped otherwise.
    pub(crate) fn propose_internal(&mut self, data: Bytes) {
        self.routing.queue_internal(data);
    }

    pub(crate) fn on_forward(&mut self, from: NodeId, req_id: u64, data: Bytes) {
        if self.apply_lags() {
            self.frames.push((
                from,
                PeerFrame::ForwardResult {
                    req_id,
                    result: Err(ForwardError::TooManyRequests),
                },
            ));
            return;
        }
        self.routing
            .to_propose
            .push((data, Origin::Remote { from, req_id }));
    }

    pub(crate) fn on_forward_result(
        &mut self,
        from: NodeId,
        req_id: u64,
        result: Result<(Index, Term), ForwardError>,
    ) {
        // Only the member we forwarded to can answer (ids are unique per incarnation, so
        // an answer meant for an earlier incarnation of this member matches nothing).
        if self
            .routing
            .forwarded
            .get(&req_id)
            .is_none_or(|f| f.to != from)
        {
            return;
        }
        let Some(f) = self.routing.forwarded.remove(&req_id) else {
            return;
        };
        match result {
            Ok((index, term)) if index > self.applied => {
                let w = InLog {
                    req: f.req,
                    term,
                    since: f.since,
                };
                self.routing.wait_at(index, w, &mut self.replies);
            }
            // Applied before we learnt where it landed: the outcome is unknown here.
            Ok(_) => self.reply(f.req, Outcome::Failed(NodeError::Timeout)),
            // Leadership is moving: wait for the next leader like a new proposal. Nothing
            // was appended, so retrying cannot duplicate the write.
            Err(ForwardError::NotLeader) => self.routing.parked.push((f.req, f.data, f.since)),
            Err(ForwardError::TooManyRequests) => {
                self.reply(f.req, Outcome::Failed(NodeError::TooManyRequests))
            }
        }
    }

    /// A membership change (leader only: the server sends it to the leader). Answered like
    /// a proposal: through the [`crate::ApplyItem`] of its entry once applied here, with
    /// `LeaderChanged` if another entry took its place, or with a timeout. Refused at once
    /// when the core refuses it (not leader, a change pending, invalid change).
    pub fn propose_conf_change(
        &mut self,
        req: RequestId,
        cc: raft::ConfChange,
    ) -> Result<(), ProposeError> {
        let placed = self.raft.propose_conf_change(cc)?;
        let w = InLog {
            req,
            term: placed.term,
            since: self.now,
        };
        self.routing.wait_at(placed.first, w, &mut self.replies);
        Ok(())
    }

    /// Place this round's proposals: in our log if we lead, with the leader otherwise, or
    /// parked until a leader is known. Returns whether entries were added to our log.
    pub(crate) fn flush_proposals(&mut self) -> bool {
        let r = &mut self.routing;
        if self.leader.is_some() && !r.parked.is_empty() {
            for (req, data, since) in std::mem::take(&mut r.parked) {
                r.to_propose.push((data, Origin::Local(req, since)));
            }
        }
        if r.to_propose.is_empty() {
            return false;
        }
        let batch = std::mem::take(&mut r.to_propose);
        if self.role == Role::Leader {
            let datas: Vec<Bytes> = batch.iter().map(|(d, _)| d.clone()).collect();
            match self.raft.propose(datas) {
                Ok(placed) => {
                    for (i, (_, origin)) in batch.into_iter().enumerate() {
                        let index = placed.first + i as u64;
                        match origin {
                            Origin::Local(req, since) => {
                                let w = InLog {
                                    req,
                                    term: placed.term,
                                    since,
                                };
                                self.routing.wait_at(index, w, &mut self.replies);
                            }
                            Origin::Remote { from, req_id } => self.frames.push((
                                from,
                                PeerFrame::ForwardResult {
                                    req_id,
                                    result: Ok((index, placed.term)),
                                },
                            )),
                            Origin::Internal => {}
                        }
                    }
                    return true;
                }
                Err(ProposeError::NotLeader { leader }) => self.leader = leader,
                // `propose` never refuses for membership reasons; listed for completeness.
                Err(ProposeError::TransferInProgress)
                | Err(ProposeError::ConfChangePending)
                | Err(ProposeError::InvalidConfChange(_)) => {}
            }
            // Could not place them now: as if we were not the leader.
        }
        for (data, origin) in batch {
            match origin {
                Origin::Internal => {
                    if !self.leases.cfg.unsafe_expire_without_barrier {
                        continue;
                    }
                    if let Some(l) = self.leader.filter(|&l| l != self.id) {
                        let req_id = self.routing.next_forward_id;
                        self.routing.next_forward_id = req_id.wrapping_add(1);
                        self.frames.push((l, PeerFrame::Forward { req_id, data }));
                    }
                }
                Origin::Remote { from, req_id } => self.frames.push((
                    from,
                    PeerFrame::ForwardResult {
                        req_id,
                        result: Err(ForwardError::NotLeader),
                    },
                )),
                // Forward only over a live connection: a frame queued for a dead leader is
                // dropped, and the client would wait for nothing until its timeout.
                Origin::Local(req, since) => match self.leader {
                    Some(l) if l != self.id && self.connected.contains(&l) => {
                        let req_id = self.routing.next_forward_id;
                        self.routing.next_forward_id = req_id.wrapping_add(1);
                        self.frames.push((
                            l,
                            PeerFrame::Forward {
                                req_id,
                                data: data.clone(),
                            },
                        ));
                        let f = Forwarded {
                            req,
                            data,
                            to: l,
                            since,
                        };
                        self.routing.forwarded.insert(req_id, f);
                    }
                    _ => self.routing.parked.push((req, data, since)),
                },
            }
        }
        false
    }
}
