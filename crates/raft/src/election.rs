//! Elections: timeouts, pre-vote, votes, check-quorum and leader transfer.
//!
//! Liveness under partial partitions needs three things together (raft-anchors §4.1):
//! **pre-vote** (a member that cannot win does not bump terms), **leader stickiness** (no vote
//! or pre-vote is granted — and a higher term is not even adopted — while we heard from a
//! leader within the election timeout, see `in_leader_lease`), and **check-quorum** (a leader
//! that has not heard from a majority within an election timeout steps down, so stickiness
//! cannot keep a dead leader's followers loyal forever). Leader transfer bypasses stickiness
//! on purpose: the old leader asked for the election.

use crate::node::RaftNode;
use crate::progress::Progress;
use crate::quorum::{majority, tally, VoteOutcome};
use crate::types::*;

impl RaftNode {
    /// Follower / candidate clock: campaign when no leader was heard for a random timeout.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if !self.may_campaign() {
            // A learner (or a member that does not know it was added yet) never campaigns,
            // but its clock keeps running: restarting it would keep it inside the leader
            // lease forever, and it would ignore the vote requests of a voter that needs it
            // (a member promoted in the leader's log but not yet in its own votes anyway).
            return;
        }
        if self.election_elapsed >= self.randomized_timeout {
            self.election_elapsed = 0;
            self.start_campaign(false);
        }
    }

    /// Leader clock: heartbeats, check-quorum, abandoning a transfer that takes too long, and
    /// resending snapshots presumed lost.
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, None);
                return;
            }
            let me = self.id;
            for (&id, pr) in self.progress.iter_mut() {
                pr.recent_active = id == me;
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.transferee = None;
        }
        for pr in self.progress.values_mut() {
            if matches!(pr.state, crate::progress::ProgressState::Snapshot { .. }) {
                pr.snapshot_ticks = pr.snapshot_ticks.saturating_add(1);
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            for pr in self.progress.values_mut() {
                pr.heartbeat_may_resend = true;
            }
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let voters = &self.conf_state.voters;
        let active = voters
            .iter()
            .filter(|&&id| id == self.id || self.progress.get(&id).is_some_and(|p| p.recent_active))
            .count();
        active >= majority(voters.len())
    }

    /// True while we believe a leader is alive: we (or, for a leader, a quorum) were heard
    /// from within the election timeout. Only meaningful with check-quorum on.
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_tick
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        // Figure 2: the election timer restarts only on hearing from a leader or granting a
        // vote. Adopting a higher term from a vote request we refuse must not restart it,
        // or members with stale logs could keep the up-to-date ones from ever campaigning.
        // (A leader's clock counts check-quorum rounds instead, so it does start afresh.)
        let restart_timer = self.role == Role::Leader;
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_role_state(restart_timer);
    }

    /// Clear everything that belongs to one role in one term.
    fn reset_role_state(&mut self, restart_timer: bool) {
        if restart_timer {
            self.election_elapsed = 0;
            self.reset_election_timeout();
        }
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        self.progress.clear();
        self.transferee = None;
        self.reads.clear();
    }

    /// Start an election: a pre-vote round first if configured, unless a leader asked us to
    /// take over (`transfer`), in which case we go straight to a real vote.
    pub(crate) fn start_campaign(&mut self, transfer: bool) {
        if !self.may_campaign() {
            return;
        }
        if self.config.pre_vote && !transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.reset_role_state(true);
            self.votes.insert(self.id, true);
            if self.election_outcome() == VoteOutcome::Won {
                self.start_election(false);
                return;
            }
            let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
            let term = self.term + 1;
            for id in self.voter_peers() {
                self.send_with_term(
                    id,
                    term,
                    MessageBody::PreVote {
                        last_index,
                        last_term,
                    },
                );
            }
        } else {
            self.start_election(transfer);
        }
    }

    /// A real election: new term, vote for ourselves, ask the others. The requests are
    /// persisted messages: they must not leave before our self-vote is durable.
    fn start_election(&mut self, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_role_state(true);
        self.votes.insert(self.id, true);
        if self.election_outcome() == VoteOutcome::Won {
            self.become_leader();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.voter_peers() {
            self.send(
                id,
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    fn voter_peers(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .conf_state
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn election_outcome(&self) -> VoteOutcome {
        tally(&self.conf_state.voters, &self.votes)
    }

    pub(crate) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.reset_role_state(true);
        let next = self.log.last_index() + 1;
        let (max_msgs, max_bytes) = (
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        );
        for id in self.peers() {
            self.progress
                .insert(id, Progress::new(next, max_msgs, max_bytes));
        }
        let mut own = Progress::new(next, max_msgs, max_bytes);
        own.recent_active = true;
        self.progress.insert(self.id, own);
        // The no-op lets us commit entries of earlier terms (Figure 8) and is what ReadIndex
        // waits for before serving reads.
        let noop = Entry {
            term: self.term,
            index: next,
            kind: EntryKind::Noop,
            data: Default::default(),
        };
        self.log.append_new([noop]);
        self.broadcast_append(true);
    }

    /// RequestVote / PreVote receiver. Granting needs (a) freedom to vote — we already voted
    /// for this candidate, or voted for nobody and know no leader in this term, or it is a
    /// pre-vote for a later term — and (b) a candidate log at least as up to date as ours.
    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        msg_term: Term,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        let free = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && msg_term > self.term);
        let grant = free && self.log.is_up_to_date(last_index, last_term);
        if pre_vote {
            // A granted pre-vote echoes the term asked about, so the pre-candidate counts it.
            let term = if grant { msg_term } else { self.term };
            self.send_with_term(from, term, MessageBody::PreVoteResponse { granted: grant });
        } else {
            if grant {
                self.vote = Some(from);
                self.election_elapsed = 0;
            }
            self.send(from, MessageBody::VoteResponse { granted: grant });
        }
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        msg_term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        let counts = match (self.role, pre_vote) {
            // Granted pre-votes carry our term + 1; refusals carry the refuser's term (ours,
            // or higher — which already made us a follower).
            (Role::PreCandidate, true) => {
                (granted && msg_term == self.term + 1) || (!granted && msg_term == self.term)
            }
            (Role::Candidate, false) => msg_term == self.term,
            _ => false,
        };
        if !counts {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match self.election_outcome() {
            VoteOutcome::Won if pre_vote => self.start_election(false),
            VoteOutcome::Won => self.become_leader(),
            VoteOutcome::Lost => self.become_follower(self.term, None),
            VoteOutcome::Pending => {}
        }
    }

    /// The leader asked us to take over: campaign at once, bypassing pre-vote and stickiness.
    pub(crate) fn handle_timeout_now(&mut self, _from: NodeId) {
        if self.role != Role::Leader {
            self.start_campaign(true);
        }
    }

    pub(crate) fn start_transfer(&mut self, to: NodeId) {
        if to == self.id || !self.is_voter(to) || self.transferee == Some(to) {
            return;
        }
        self.transferee = Some(to);
        // The transfer gets one election timeout to finish.
        self.election_elapsed = 0;
        if !self.maybe_send_timeout_now(to) {
            self.send_append(to, true);
        }
    }

    /// If `to` is the transfer target and has our whole log, tell it to campaign now.
    pub(crate) fn maybe_send_timeout_now(&mut self, to: NodeId) -> bool {
        if self.transferee != Some(to) {
            return false;
        }
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        }
        caught_up
    }
}
