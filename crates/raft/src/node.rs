//! The public face of the core: [`RaftNode`], driven by `tick`/`step`/`propose`, drained
//! through [`Ready`] bundles and acknowledged with `advance`.
//!
//! # The contract with the caller (the node runtime, or the simulator)
//!
//! ```text
//! loop {
//!     feed inputs: tick(), step(msg), propose(data), read_index(ctx), transfer_leader(id)
//!     if node.has_ready() {
//!         let rd = node.ready();
//!         send rd.messages                         // may leave before our own write (§10.2.1)
//!         persist rd.snapshot, rd.entries, rd.hard_state   // one fsync for the batch
//!         send rd.persisted_messages               // votes, append acks: only after the fsync
//!         apply rd.committed_entries; serve rd.read_states once applied
//!         node.advance(rd.ack());                  // "all of that is durable now"
//!     }
//! }
//! ```
//!
//! `rd.entries` may start at an index ≤ the last stored index: the store then truncates its
//! log from `entries[0].index` before appending (a follower resolving a conflict).
//! `rd.snapshot`, when present, replaces the stored log entirely: the store drops every
//! entry it holds, then appends `rd.entries` (which follow the snapshot).
//!
//! After a restart from a snapshot, hand that snapshot to [`RaftNode::compact`] so a leader
//! can send it to followers that need compacted entries.

use std::collections::BTreeMap;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::log::RaftLog;
use crate::membership::ConfHistory;
use crate::progress::Progress;
use crate::read_index::ReadIndexQueue;
use crate::types::*;

/// Tunables. Times are in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// A follower that hears no leader for a random time in
    /// `[election_tick, election_tick + jitter)` campaigns (`jitter`: see
    /// `election_jitter_tick`). It is also the leader lease: no (pre)vote is granted while a
    /// leader was heard within `election_tick` ticks.
    pub election_tick: u32,
    /// Width of the range the election timeout is drawn from. `None` means `election_tick`,
    /// the paper's `[T, 2T)`. The spread only has to be wide compared with one vote round
    /// trip to make split votes rare (Raft paper §9.3); the wider it is, the longer the
    /// slowest follower waits for a dead leader, so a runtime with fast links may narrow
    /// it (docs/raft-deviations.md). Must be at least 1.
    pub election_jitter_tick: Option<u32>,
    /// A leader sends heartbeats every `heartbeat_tick` ticks. Must be < `election_tick`.
    pub heartbeat_tick: u32,
    /// Upper bound on the entry bytes of one Append message (at least one entry is always sent).
    pub max_size_per_msg: usize,
    /// Upper bound on un-acknowledged Append messages per follower in the replicate state.
    pub max_inflight_msgs: usize,
    /// Upper bound on un-acknowledged entry bytes per follower in the replicate state.
    pub max_inflight_bytes: usize,
    /// Run a pre-vote round before incrementing the term (§9.6 of the thesis).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down,
    /// and members refuse (pre)votes while they have heard from a leader recently.
    pub check_quorum: bool,
    /// Seed of the RNG that randomises election timeouts. Same seed ⇒ same behaviour.
    pub seed: u64,
    /// **Unsafe, for sabotage tests only**: let a leader propose a membership change while an
    /// earlier one is uncommitted or before it committed an entry of its term. The simulator
    /// turns it on to show its checkers catch the resulting split brain.
    #[doc(hidden)]
    pub unsafe_concurrent_conf_changes: bool,
}

impl Config {
    /// Sensible defaults for `id`: 10-tick elections, 1-tick heartbeats, pre-vote and
    /// check-quorum on, 1 MiB messages, 256 messages / 16 MiB in flight per follower.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            election_jitter_tick: None,
            heartbeat_tick: 1,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 16 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            seed: id,
            unsafe_concurrent_conf_changes: false,
        }
    }
}

/// Everything a node recovered from its storage, or the bootstrap state of a new cluster.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The membership. For a brand-new cluster: every initial member as a voter.
    pub conf_state: ConfState,
    /// Metadata of the snapshot the log starts after (index 0 / term 0 if none).
    pub snapshot: Option<SnapshotMeta>,
    /// The durable log entries after the snapshot, in order, contiguous.
    pub entries: Vec<Entry>,
    /// The index the state machine has already applied (≥ snapshot index, ≤ commit).
    pub applied: Index,
}

/// Why a configuration or initial state was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    Invalid(String),
}

/// Why a proposal or request could not be accepted. The caller may redirect to `leader`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is who it believes leads, if anyone.
    NotLeader { leader: Option<NodeId> },
    /// A leader transfer is in progress; proposals are paused until it ends.
    TransferInProgress,
    /// A membership change must wait: an earlier one is not committed yet, or this leader has
    /// not yet committed an entry of its own term.
    ConfChangePending,
    /// The membership change does not apply to the current configuration.
    InvalidConfChange(String),
}

/// Why a message was refused by `step`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// The message is not addressed to this node or comes from an unknown member.
    Misrouted,
}

/// Where the proposals of one `propose` call landed: entries `first..=last` of `term`.
/// The caller learns the outcome when an entry at such an index is applied: if its term
/// differs, the proposal was lost to a leader change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    pub first: Index,
    pub last: Index,
    pub term: Term,
}

/// Work for the caller. See the module documentation for the order of operations.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// Changed volatile state (leader, role), if any.
    pub soft_state: Option<SoftState>,
    /// Changed hard state, to persist with `entries` in one durable write.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to persist and load into the state machine
    /// before `committed_entries` are applied.
    pub snapshot: Option<Snapshot>,
    /// Entries to persist. If `entries[0].index` ≤ the store's last index, the store first
    /// truncates everything from that index on.
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once, before this Ready's writes are durable
    /// (a leader's Appends and heartbeats, requests for (pre)votes that need no new state).
    pub messages: Vec<Message>,
    /// Messages that depend on this Ready's writes (votes granted, append acknowledgements,
    /// a candidate's vote requests after it voted for itself): send only after the fsync.
    pub persisted_messages: Vec<Message>,
    /// Entries to apply to the state machine, in order. Never beyond the durable commit
    /// index, and never beyond what is durable in the local log.
    pub committed_entries: Vec<Entry>,
    /// Read requests confirmed by the leader.
    pub read_states: Vec<ReadState>,
}

/// What `advance` acknowledges: the durable position reached by the Ready it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyAck {
    /// Last index now durable in the local log (0 if the Ready wrote no entries).
    pub persisted_index: Index,
    pub persisted_term: Term,
    /// Last committed index handed out for applying.
    pub applied_index: Index,
    pub(crate) snapshot_index: Option<Index>,
}

impl Ready {
    /// The acknowledgement to hand to [`RaftNode::advance`] once everything in this Ready
    /// is durable and the committed entries are applied.
    pub fn ack(&self) -> ReadyAck {
        let (persisted_index, persisted_term) =
            self.entries.last().map_or((0, 0), |e| (e.index, e.term));
        ReadyAck {
            persisted_index,
            persisted_term,
            applied_index: self.committed_entries.last().map_or(0, |e| e.index),
            snapshot_index: self.snapshot.as_ref().map(|s| s.meta.index),
        }
    }
}

/// A summary of the node's state, for status endpoints, tests and the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub hard_state: HardState,
    /// First and last index of the in-memory log (first = snapshot index + 1).
    pub first_index: Index,
    pub last_index: Index,
    /// Highest index handed out in `committed_entries` and acknowledged by `advance`.
    pub applied: Index,
    pub conf_state: ConfState,
}

/// How a leader sees one member's replication (for status pages, metrics and the dashboard's
/// replication lag). See `progress.rs` for what the states mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: NodeId,
    /// Highest index known replicated and durable on that member.
    pub match_index: Index,
    pub next_index: Index,
    /// "probe", "replicate" or "snapshot".
    pub state: &'static str,
    /// Heard from during the current check-quorum period.
    pub recent_active: bool,
}

/// One Raft member's consensus state machine. Pure: no I/O, clock, threads or logging.
///
/// The behaviour is split by topic: `election.rs` (timeouts, pre-vote, votes, leader
/// transfer), `replication.rs` (appends, heartbeats, snapshots, commit), `read_index.rs`
/// (linearizable reads). This file holds the state, the public entry points, the term rules
/// every message passes through, and the Ready/advance bookkeeping.
pub struct RaftNode {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    /// The configuration in use: always `confs.latest()`.
    pub(crate) conf_state: ConfState,
    /// The configurations along the log (membership.rs).
    pub(crate) confs: ConfHistory,
    /// Leader only: replication state of every member (self included; its match is our
    /// durable last index).
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// (Pre-)candidate only: the answers received in this election.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Ticks since we last heard from a leader (follower), or since the last check-quorum
    /// round (leader).
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    /// This round's election timeout, drawn from `[election_tick, election_tick + jitter)`.
    pub(crate) randomized_timeout: u32,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) msgs: Vec<Message>,
    pub(crate) persisted_msgs: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) reads: ReadIndexQueue,
    /// Leader only: the member we are handing leadership to.
    pub(crate) transferee: Option<NodeId>,
    /// The latest snapshot given to `compact`, sent to followers behind the compaction.
    pub(crate) snapshot_to_send: Option<Snapshot>,
    /// A snapshot received from the leader, to hand out in the next Ready.
    pub(crate) pending_snapshot: Option<Snapshot>,
    pub(crate) reported_soft: SoftState,
    pub(crate) reported_hard: HardState,
}

impl RaftNode {
    /// Build a node from its configuration and what its storage recovered.
    pub fn new(config: Config, initial: InitialState) -> Result<RaftNode, ConfigError> {
        validate(&config)?;
        let invalid = ConfigError::Invalid;
        let log = RaftLog::recover(
            initial.snapshot.as_ref(),
            initial.entries,
            initial.hard_state.commit,
            initial.applied,
        )
        .map_err(invalid)?;
        let conf_state = match &initial.snapshot {
            Some(meta) if initial.conf_state == ConfState::default() => meta.conf_state.clone(),
            _ => initial.conf_state,
        };
        if conf_state.voters.contains(&0) || conf_state.learners.contains(&0) {
            return Err(ConfigError::Invalid("member id 0 is reserved".into()));
        }
        // Changes still in the log after the snapshot are in force already (thesis §4.1).
        let mut confs = ConfHistory::new(conf_state);
        if let Some(entries) = log.slice(log.first_index(), log.last_index() + 1, usize::MAX) {
            confs.record(&entries);
        }
        let conf_state = confs.latest().clone();
        let hard = HardState {
            term: initial.hard_state.term,
            vote: initial.hard_state.vote,
            commit: log.committed,
        };
        let soft = SoftState {
            leader: None,
            role: Role::Follower,
        };
        let mut node = RaftNode {
            id: config.id,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            term: hard.term,
            vote: hard.vote,
            role: Role::Follower,
            leader: None,
            log,
            conf_state,
            confs,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            reads: ReadIndexQueue::default(),
            transferee: None,
            snapshot_to_send: None,
            pending_snapshot: None,
            reported_soft: soft,
            reported_hard: hard,
        };
        node.reset_election_timeout();
        Ok(node)
    }

    /// Advance logical time by one tick (elections, heartbeats, check-quorum).
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Deliver a message from another member.
    ///
    /// Term rules live here so every message passes them exactly once: a higher term makes
    /// us a follower of it (except pre-vote traffic, which must change no state, and vote
    /// requests refused under leader stickiness, which must not disturb us at all); a lower
    /// term is stale and is dropped, answering just enough for its sender to catch up.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        // Senders outside our configuration are heard: a member added while we lag behind
        // may lead us, and a joining member knows nobody yet. Refusing removed members is
        // the transport's job (it knows the ids that were removed for good).
        if msg.to != self.id || msg.from == 0 || msg.from == self.id {
            return Err(StepError::Misrouted);
        }
        if msg.term > self.term {
            let vote_request = match msg.body {
                MessageBody::PreVote { .. } => Some(false),
                MessageBody::Vote { transfer, .. } => Some(transfer),
                _ => None,
            };
            if let Some(transfer) = vote_request {
                if self.in_leader_lease() && !transfer {
                    // Leader stickiness: a member that heard from a live leader within the
                    // election timeout neither votes nor lets the candidate bump its term.
                    return Ok(());
                }
            }
            match msg.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(msg.term, Some(msg.from));
                }
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            self.answer_stale(msg);
            return Ok(());
        }

        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(msg.from, msg.term, true, last_index, last_term),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(msg.from, msg.term, false, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                self.handle_vote_response(msg.from, msg.term, true, granted)
            }
            MessageBody::VoteResponse { granted } => {
                self.handle_vote_response(msg.from, msg.term, false, granted)
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.hear_from_leader(msg.from);
                self.handle_append(msg.from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.hear_from_leader(msg.from);
                self.handle_heartbeat(msg.from, commit, read_seq);
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.hear_from_leader(msg.from);
                self.handle_snapshot(msg.from, snapshot);
            }
            MessageBody::AppendResponse {
                rejected,
                match_index,
            } => self.handle_append_response(msg.from, rejected, match_index),
            MessageBody::HeartbeatResponse { read_seq } => {
                self.handle_heartbeat_response(msg.from, read_seq)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(msg.from),
            MessageBody::ReadIndex { ctx } => self.handle_read_index_request(msg.from, ctx),
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.handle_read_index_response(msg.from, ctx, index)
            }
        }
        Ok(())
    }

    /// Append `data` entries to the log (leader only). Many proposals may share one Ready.
    /// An empty `data` appends nothing (`first` is then `last + 1`).
    pub fn propose(&mut self, data: Vec<Bytes>) -> Result<Proposed, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let first = self.log.last_index() + 1;
        let term = self.term;
        let entries = data.into_iter().enumerate().map(|(i, data)| Entry {
            term,
            index: first + i as u64,
            kind: EntryKind::Normal,
            data,
        });
        self.log.append_new(entries);
        let last = self.log.last_index();
        if last >= first {
            self.broadcast_append(false);
        }
        Ok(Proposed { first, last, term })
    }

    /// Ask for a linearizable read point. On a leader that has committed an entry of its
    /// term, it is confirmed by a heartbeat round; on a follower it is forwarded to the
    /// leader. The answer arrives as a [`ReadState`] with the same `ctx`.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), ProposeError> {
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.leader_read(ctx, None);
                Ok(())
            }
            (_, Some(leader)) => {
                self.send(leader, MessageBody::ReadIndex { ctx });
                Ok(())
            }
            (_, None) => Err(ProposeError::NotLeader { leader: None }),
        }
    }

    /// Hand leadership to `to` (leader only): bring it up to date, then send TimeoutNow.
    /// A target that is this node or not a voter is ignored.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        self.start_transfer(to);
        Ok(())
    }

    /// Leader only: send a heartbeat round now, so idle followers learn the current commit
    /// index at once instead of with the next Append or scheduled heartbeat. The core does not
    /// do this by itself on every commit (it would double the messages per proposal); a
    /// runtime that serves reads or writes on followers calls it when the commit index moved
    /// and no proposal is going out to carry it. Returns false (and sends nothing) on a
    /// non-leader.
    pub fn announce_commit(&mut self) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        self.broadcast_heartbeat();
        true
    }

    /// Campaign now, as if the election timeout had elapsed (used by tests and tooling).
    pub fn campaign(&mut self) {
        if self.role != Role::Leader {
            self.start_campaign(false);
        }
    }

    /// The state machine has been snapshotted at `snapshot.meta.index` (≤ applied): drop
    /// the log up to it, and send this snapshot to followers that need compacted entries.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<(), ConfigError> {
        let meta = &snapshot.meta;
        self.log
            .compact(meta.index, meta.term)
            .map_err(ConfigError::Invalid)?;
        self.confs.compact(meta.index);
        self.snapshot_to_send = Some(snapshot);
        Ok(())
    }

    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.reported_soft
            || self.hard_state() != self.reported_hard
            || self.pending_snapshot.is_some()
            || self.log.has_unstable()
            || !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || self.reads.round_needed()
    }

    /// Take the pending work. Call [`RaftNode::advance`] with its ack before the next one.
    pub fn ready(&mut self) -> Ready {
        self.flush_read_round();
        let soft = self.soft_state();
        let hard = self.hard_state();
        let rd = Ready {
            soft_state: (soft != self.reported_soft).then_some(soft),
            hard_state: (hard != self.reported_hard).then_some(hard),
            snapshot: self.pending_snapshot.take(),
            entries: self.log.take_unstable(),
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.persisted_msgs),
            committed_entries: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
        };
        self.reported_soft = soft;
        self.reported_hard = hard;
        rd
    }

    /// Everything in the Ready that produced `ack` is durable and applied.
    pub fn advance(&mut self, ack: ReadyAck) {
        if let Some(index) = ack.snapshot_index {
            // The snapshot is durable and loaded into the state machine.
            self.log.applied_to(index);
        }
        if ack.persisted_index > 0 {
            self.log
                .persisted_to(ack.persisted_index, ack.persisted_term);
        }
        self.log.applied_to(ack.applied_index);
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            leader: self.leader,
            hard_state: self.hard_state(),
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            applied: self.log.applied,
            conf_state: self.conf_state.clone(),
        }
    }

    /// Log entries in `[lo, hi)` still held in memory (for tests, the simulator and the
    /// server's HashKV / debugging); `None` if any of them was compacted. `hi` is clamped
    /// to the end of the log.
    pub fn entries(&self, lo: Index, hi: Index) -> Option<Vec<Entry>> {
        self.log.slice(lo.max(1), hi, usize::MAX)
    }

    /// Leader only (empty otherwise): the replication state of every other member.
    pub fn progress(&self) -> Vec<PeerProgress> {
        use crate::progress::ProgressState;
        self.progress
            .iter()
            .filter(|(&id, _)| id != self.id)
            .map(|(&id, pr)| PeerProgress {
                id,
                match_index: pr.match_index,
                next_index: pr.next_index,
                state: match pr.state {
                    ProgressState::Probe => "probe",
                    ProgressState::Replicate => "replicate",
                    ProgressState::Snapshot { .. } => "snapshot",
                },
                recent_active: pr.recent_active,
            })
            .collect()
    }

    /// The commit index this node knows (possibly ahead of what the caller has persisted).
    pub fn commit_index(&self) -> Index {
        self.log.committed
    }

    // ----- shared helpers used by the topic modules -----

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.conf_state.voters.contains(&id)
    }

    /// Everyone we replicate to or ask for votes: voters then learners, without ourselves.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .conf_state
            .voters
            .iter()
            .chain(self.conf_state.learners.iter())
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Queue a message. Whether it may leave before this Ready's write is decided by what it
    /// says: answers that vouch for our term, vote or log (vote grants, append and heartbeat
    /// acks) and a candidate's vote requests (it voted for itself) wait for the fsync.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let after_persist = matches!(
            body,
            MessageBody::Vote { .. }
                | MessageBody::VoteResponse { .. }
                | MessageBody::PreVoteResponse { .. }
                | MessageBody::AppendResponse { .. }
                | MessageBody::HeartbeatResponse { .. }
        );
        let msg = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if after_persist {
            self.persisted_msgs.push(msg);
        } else {
            self.msgs.push(msg);
        }
    }

    pub(crate) fn reset_election_timeout(&mut self) {
        let base = self.config.election_tick;
        let jitter = self.config.election_jitter_tick.unwrap_or(base);
        self.randomized_timeout = self.rng.gen_range(base..base + jitter);
    }

    /// A message at our term from the leader: remember it and restart the election clock.
    fn hear_from_leader(&mut self, from: NodeId) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
    }

    /// A message from an older term. Drop it, but let its sender learn our term when that
    /// unblocks it: a stale leader must step down (otherwise a member stranded at a higher
    /// term would reject it forever), and a stale pre-candidate must learn it is behind.
    fn answer_stale(&mut self, msg: Message) {
        let checks = self.config.check_quorum || self.config.pre_vote;
        match msg.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } if checks => {
                self.send(
                    msg.from,
                    MessageBody::AppendResponse {
                        rejected: None,
                        match_index: 0,
                    },
                );
            }
            MessageBody::PreVote { .. } => {
                self.send(msg.from, MessageBody::PreVoteResponse { granted: false });
            }
            // Figure 2 answers every RequestVote with the current term. A candidate that is
            // not in our configuration hears from nobody else (a member added while we lag
            // is not among the peers we contact), so without this answer it could stay a
            // term behind a member that keeps campaigning and never win its vote.
            MessageBody::Vote { .. } => {
                self.send(msg.from, MessageBody::VoteResponse { granted: false });
            }
            _ => {}
        }
    }
}

fn validate(config: &Config) -> Result<(), ConfigError> {
    let fail = |why: &str| Err(ConfigError::Invalid(why.to_string()));
    if config.id == 0 {
        return fail("id 0 is reserved");
    }
    if config.heartbeat_tick == 0 || config.heartbeat_tick >= config.election_tick {
        return fail("need 0 < heartbeat_tick < election_tick");
    }
    if config.election_tick > u32::MAX / 2 {
        return fail("election_tick too large");
    }
    match config.election_jitter_tick {
        Some(0) => return fail("election_jitter_tick must be at least 1"),
        Some(j) if j > u32::MAX / 2 => return fail("election_jitter_tick too large"),
        _ => {}
    }
    if config.max_inflight_msgs == 0 || config.max_inflight_bytes == 0 {
        return fail("in-flight limits must be positive");
    }
    if config.max_size_per_msg == 0 {
        return fail("max_size_per_msg must be positive");
    }
    Ok(())
}
