//! The driver: inputs in, [`Effects`] out. See the crate documentation for the loop and
//! `docs/node-driver.md` for the contract.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use raft::{HardState, Index, NodeId, RaftNode, ReadyAck, Role, Snapshot, Status, Term};

use crate::clock::TickClock;
use crate::effects::{
    ApplyItem, Effects, NodeError, Outcome, PeerFrame, PersistBatch, Reply, RequestId,
    SnapshotRequest,
};
use crate::lease_keeper::{LeaseConfig, LeaseKeeper};
use crate::promotion::Promotion;
use crate::reads::Reads;
use crate::routing::Routing;

/// The driver's tunables. Times are wall-clock durations; the core counts ticks.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// One core tick.
    pub tick_interval: Duration,
    /// Most ticks counted at once after a stall (see [`TickClock`]).
    pub max_catch_up_ticks: u32,
    /// The election timeout: a call waits at most twice this for a leader to be known,
    /// and a read round unanswered for half of it is asked again.
    pub election_timeout: Duration,
    /// A call not answered within this is answered with [`NodeError::Timeout`].
    pub request_timeout: Duration,
    /// Take a snapshot every this many applied entries (0: never)...
    pub snapshot_count: u64,
    /// ...but once the last image reached this many bytes, only when the entries applied
    /// since it also add up to at least a quarter of its size ([`IMAGE_BYTES_PER_LOG_BYTE`]).
    /// Why: an image is the whole store, so at a fixed count a large store spends most of
    /// its CPU and disk on snapshots (etcd's benchmark, 210,000 revisions of one key: 20
    /// images of up to 58 MB per member in 10 s, 45 % of the members' CPU). With the rule,
    /// writing images costs at most four bytes per byte of log they replace (entries count
    /// [`ENTRY_BYTES`] beyond their data, and [`MAX_COUNTS_PER_SNAPSHOT`] times the count
    /// forces a snapshot whatever the bytes). `u64::MAX`: the count alone decides.
    pub snapshot_size_floor: u64,
    /// Refuse proposals while applying lags committing by more than this.
    pub max_apply_gap: u64,
    /// First id of the forwarded proposals, and first context of the read rounds, this
    /// incarnation sends. Give each incarnation a different (random) one: a leader's answer
    /// to a previous incarnation's forward or read must never be taken for an answer to a
    /// new one.
    pub forward_id_base: u64,
    /// How often a leader looks for learners to promote (driver time; see
    /// `crate::promotion`). The server looks every 100 ms.
    pub promote_check_interval: Duration,
    /// Promote learners awaiting it without checking that they are in sync. A deliberately
    /// broken rule for the simulator's sabotage tests only; never set it elsewhere.
    pub unsafe_promote_unsynced: bool,
    /// The leader's lease duties (`lease_keeper`).
    pub lease: LeaseConfig,
}

/// At most this many bytes of image per byte of applied entries since the last snapshot,
/// once images reach [`DriverConfig::snapshot_size_floor`].
pub const IMAGE_BYTES_PER_LOG_BYTE: u64 = 4;

/// What an entry counts beyond its data: what each one costs in the in-memory logs (the
/// entry itself in the core's and the storage's, and an allocation), so that many tiny
/// entries (keep-alives, no-ops) count for what they hold.
pub const ENTRY_BYTES: u64 = 128;

/// However small the entries, a snapshot once this many times `snapshot_count` entries were
/// applied since the last one: a bound on the log kept in memory and replayed at a restart.
pub const MAX_COUNTS_PER_SNAPSHOT: u64 = 10;

/// Whether `batch` writes entries and, beyond them, changes nothing but the commit index: the
/// kind of write a leader's clients need not wait for ([`Effects::apply_first`]).
fn leaves_term_and_vote(batch: &PersistBatch, durable: &HardState) -> bool {
    !batch.entries.is_empty()
        && batch.snapshot.is_none()
        && batch
            .hard_state
            .is_none_or(|hs| hs.term == durable.term && hs.vote == durable.vote)
}

/// What the driver knows about itself, for status endpoints and checks.
#[derive(Clone, Debug)]
pub struct DriverStatus {
    pub core: Status,
    /// The index the caller's state machine reflects once the last batch is carried out.
    pub applied: Index,
    pub applied_term: Term,
}

/// The node driver. See the crate documentation.
pub struct Driver {
    pub(crate) raft: RaftNode,
    pub(crate) cfg: DriverConfig,
    pub(crate) id: NodeId,
    clock: TickClock,
    pub(crate) now: Duration,

    pub(crate) leader: Option<NodeId>,
    pub(crate) role: Role,
    /// The peers we hold a live connection to (forwarding goes only over one).
    pub(crate) connected: BTreeSet<NodeId>,

    pub(crate) applied: Index,
    applied_term: Term,
    /// Entries handed to the caller for applying that its apply stage has not applied
    /// yet ([`Driver::set_apply_lag`]); counted with the gap between commit and `applied`.
    apply_lag: u64,
    /// The hard state as of the last fsynced write (the durability rule compares to it).
    durable: HardState,

    last_snapshot: Index,
    /// Size of the last image taken or installed (0: none since the start).
    last_image_bytes: u64,
    /// Bytes of entries ([`ENTRY_BYTES`] each beyond their data) applied since the last
    /// snapshot was asked for or installed.
    log_bytes_since_snapshot: u64,
    /// What `log_bytes_since_snapshot` was when the running snapshot was asked for: given
    /// back if it fails, so the retry comes after `snapshot_count` entries as before.
    log_bytes_in_running_snapshot: u64,
    snapshot_running: bool,
    /// An operator asked for a snapshot now (`request_snapshot`), whatever the count says.
    snapshot_asked: bool,

    /// The highest commit index followers were told about by `announce_commit`.
    announced_commit: Index,
    /// A follower acknowledged entries beyond what it had acknowledged before, since the
    /// last announcement.
    pub(crate) acks_seen: bool,
    /// The highest index each follower acknowledged (successful appends only).
    acked: BTreeMap<NodeId, Index>,

    pub(crate) routing: Routing,
    pub(crate) reads: Reads,
    pub(crate) leases: LeaseKeeper,

    /// Answers produced by inputs, delivered with the next batch.
    pub(crate) replies: Vec<Reply>,
    /// Forwarding frames produced by inputs, sent with the next batch.
    pub(crate) frames: Vec<(NodeId, PeerFrame)>,

    /// The round (inputs, then polls until `None`) placed entries in our log.
    round_proposed: bool,
    round_flushed: bool,
    round_announced: bool,
    /// The ack of the batch handed out and not yet `advance`d.
    unacked: Option<ReadyAck>,

    /// Members the replicated state records as voters (`set_promotion_candidates`).
    pub(crate) promotion_candidates: BTreeSet<NodeId>,
    /// When the leader last looked for learners to promote.
    promote_checked: Duration,
    /// Promotions proposed since the last batch, reported with the next one.
    pub(crate) promotions: Vec<Promotion>,
}

impl Driver {
    /// Wrap a core built from the member's recovered state. `applied`/`applied_term`: what
    /// the state machine reflects at start (the recovered snapshot); `durable`: the hard
    /// state recovered from disk; `now`: the current time.
    pub fn new(raft: RaftNode, cfg: DriverConfig, applied: (Index, Term), now: Duration) -> Driver {
        let status = raft.status();
        let clock = TickClock::new(cfg.tick_interval, now, cfg.max_catch_up_ticks);
        let routing = Routing::new(cfg.forward_id_base);
        Driver {
            id: status.id,
            leader: None,
            role: Role::Follower,
            connected: BTreeSet::new(),
            applied: applied.0,
            applied_term: applied.1,
            apply_lag: 0,
            durable: status.hard_state,
            last_snapshot: applied.0,
            last_image_bytes: 0,
            log_bytes_since_snapshot: 0,
            log_bytes_in_running_snapshot: 0,
            snapshot_running: false,
            snapshot_asked: false,
            announced_commit: 0,
            acks_seen: false,
            acked: BTreeMap::new(),
            routing,
            reads: Reads::starting_at(cfg.forward_id_base),
            leases: LeaseKeeper::new(cfg.lease.clone(), now),
            replies: Vec::new(),
            frames: Vec::new(),
            round_proposed: false,
            round_flushed: false,
            round_announced: false,
            unacked: None,
            promotion_candidates: BTreeSet::new(),
            promote_checked: now,
            promotions: Vec::new(),
            clock,
            now,
            raft,
            cfg,
        }
    }

    // ----- inputs ------------------------------------------------------------------------

    /// The time is `now`: count the core ticks due and do the time-based duties (expire
    /// calls that waited too long, retry read rounds that were probably lost). Call it
    /// with each input's arrival time before handing the input over, and with the current
    /// time once per loop iteration.
    pub fn tick(&mut self, now: Duration) {
        if now <= self.now {
            return;
        }
        self.now = now;
        let due = self.clock.due(now);
        if due == 0 {
            return;
        }
        for _ in 0..due {
            self.raft.tick();
        }
        self.expire();
        if now >= self.promote_checked + self.cfg.promote_check_interval {
            self.promote_checked = now;
            self.maybe_promote();
        }
    }

    /// When the next tick is due: the caller need not call [`Driver::tick`] before then
    /// unless an input arrives.
    pub fn next_tick_due(&self) -> Duration {
        self.clock.next_due()
    }

    /// A Raft message from a peer. A message the core refuses (misrouted, from a
    /// stranger) changes nothing; the error is for the caller's logs and checks.
    pub fn step(&mut self, msg: raft::Message) -> Result<(), raft::StepError> {
        if let raft::MessageBody::AppendResponse {
            rejected: None,
            match_index,
        } = msg.body
        {
            // Only news counts: a repeated acknowledgement (an answer to a heartbeat-driven
            // resend) must not trigger another announcement, or a lagging follower and
            // the leader would ping-pong heartbeats at network speed.
            let known = self.acked.entry(msg.from).or_insert(0);
            if match_index > *known {
                *known = match_index;
                self.acks_seen = true;
            }
        }
        self.raft.step(msg)
    }

    /// A forwarding frame from peer `from`.
    pub fn step_frame(&mut self, from: NodeId, frame: PeerFrame) {
        match frame {
            PeerFrame::Forward { req_id, data } => self.on_forward(from, req_id, data),
            PeerFrame::ForwardResult { req_id, result } => {
                self.on_forward_result(from, req_id, result)
            }
        }
    }

    /// A client proposal: answered through the [`ApplyItem`] of its entry once applied
    /// here, or with a [`Reply`] saying why not.
    pub fn propose(&mut self, req: RequestId, data: Bytes) {
        if self.apply_lags() {
            self.reply(req, Outcome::Failed(NodeError::TooManyRequests));
            return;
        }
        self.routing.queue_local(req, data, self.now);
    }

    /// The caller's apply stage is `entries` behind what the driver handed it: a caller
    /// that applies on a thread of its own (the server's, docs/node-driver.md "Applying
    /// on a stage of its own") counts an entry applied here once it hands it over, so the
    /// backpressure rule (refuse proposals while applying lags committing by more than
    /// `max_apply_gap`) must be told how far behind the stage really is. A caller that
    /// applies as it is told never calls this (the lag stays 0).
    pub fn set_apply_lag(&mut self, entries: u64) {
        self.apply_lag = entries;
    }

    /// A linearizable read: answered with [`Outcome::ReadReady`] once the local state
    /// machine reflects every write committed before this call.
    pub fn read(&mut self, req: RequestId) {
        self.reads.queue(req, self.now);
    }

    /// Our connection to `peer` is up.
    pub fn peer_connected(&mut self, peer: NodeId) {
        self.connected.insert(peer);
    }

    /// Our connection to `peer` is down.
    pub fn peer_lost(&mut self, peer: NodeId) {
        self.connected.remove(&peer);
    }

    /// The snapshot asked for by [`Effects::start_snapshot`] is durable (`Ok`) or could not
    /// be written (`Err`). Returns true when the caller must now compact its stored log to
    /// it; false when it is no longer useful (a newer snapshot arrived from the leader
    /// meanwhile) or failed (another is attempted after `snapshot_count` more entries).
    pub fn snapshot_written(&mut self, written: Result<Snapshot, ()>) -> bool {
        self.snapshot_running = false;
        let Ok(snapshot) = written else {
            self.last_snapshot = self.applied;
            self.log_bytes_since_snapshot += self.log_bytes_in_running_snapshot;
            return false;
        };
        let index = snapshot.meta.index;
        let image_bytes = snapshot.data.len() as u64;
        if index < self.raft.status().first_index || self.raft.compact(snapshot).is_err() {
            self.last_snapshot = self.last_snapshot.max(index);
            return false;
        }
        self.last_snapshot = index;
        self.last_image_bytes = image_bytes;
        true
    }

    /// Hand the core `snapshot`'s image again, as other bytes of the same content: the
    /// snapshot the log starts at, mapped from its file, in place of the heap copy a
    /// snapshot received from the leader arrived as. Why: the core keeps that image to send
    /// to followers behind its log, as long as it is current, and on the heap it is the
    /// store's size again in resident memory. Returns false, changing nothing, when the log
    /// no longer starts right after `snapshot` (a newer one replaced it meanwhile).
    pub fn keep_snapshot_image(&mut self, snapshot: Snapshot) -> bool {
        snapshot.meta.index + 1 == self.raft.status().first_index
            && self.raft.compact(snapshot).is_ok()
    }

    /// Compact storage now (the server's answer to etcd's `Defragment`): at the next
    /// poll, ask for a snapshot of everything applied, so the log it covers can be
    /// dropped, whatever `snapshot_count` says. Returns false when there is nothing to
    /// compact: the last snapshot already covers everything applied and none is running.
    /// Otherwise the caller learns the outcome from the next [`Driver::snapshot_written`].
    pub fn request_snapshot(&mut self) -> bool {
        if !self.snapshot_running && self.applied <= self.last_snapshot {
            return false;
        }
        self.snapshot_asked = true;
        true
    }

    // ----- effects -----------------------------------------------------------------------

    /// The next batch of work, or `None` when this round is done. Call [`Driver::advance`]
    /// after carrying out each batch, before polling again.
    pub fn poll(&mut self) -> Option<Effects> {
        assert!(
            self.unacked.is_none(),
            "Driver::poll called before the previous batch was advanced"
        );
        if !self.round_flushed {
            self.round_flushed = true;
            self.round_proposed = self.flush_proposals();
            self.flush_reads();
        }
        if !self.raft.has_ready() && !self.round_announced {
            self.round_announced = true;
            self.announce_commit();
        }
        if self.raft.has_ready() {
            return Some(self.take_ready());
        }
        let start_snapshot = self.maybe_snapshot();
        if start_snapshot.is_some()
            || !self.replies.is_empty()
            || !self.frames.is_empty()
            || !self.promotions.is_empty()
        {
            return Some(Effects {
                frames: std::mem::take(&mut self.frames),
                replies: std::mem::take(&mut self.replies),
                promotions: std::mem::take(&mut self.promotions),
                start_snapshot,
                ..Effects::default()
            });
        }
        self.round_flushed = false;
        self.round_announced = false;
        self.round_proposed = false;
        None
    }

    /// The last batch from [`Driver::poll`] is carried out: written (and synced if it
    /// said so), sent, applied, answered.
    pub fn advance(&mut self) {
        if let Some(ack) = self.unacked.take() {
            self.raft.advance(ack);
        }
    }

    fn take_ready(&mut self) -> Effects {
        let rd = self.raft.ready();
        self.unacked = Some(rd.ack());
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss.leader, ss.role);
        }
        let durable_before = self.durable;
        let persist = if rd.hard_state.is_some() || !rd.entries.is_empty() || rd.snapshot.is_some()
        {
            let sync = crate::must_sync(
                rd.hard_state.as_ref(),
                &rd.entries,
                rd.snapshot.as_ref(),
                &self.durable,
            );
            if sync {
                if let Some(hs) = rd.hard_state {
                    self.durable = hs;
                }
            }
            Some(PersistBatch {
                hard_state: rd.hard_state,
                entries: rd.entries,
                snapshot: rd.snapshot.clone(),
                sync,
            })
        } else {
            None
        };
        if let Some(snap) = &rd.snapshot {
            self.on_snapshot_installed(snap);
        }
        let mut apply = Vec::with_capacity(rd.committed_entries.len());
        for entry in rd.committed_entries {
            if entry.index <= self.applied {
                continue; // already reflected (by a snapshot)
            }
            self.applied = entry.index;
            self.applied_term = entry.term;
            self.log_bytes_since_snapshot += entry.data.len() as u64 + ENTRY_BYTES;
            let answers = self
                .routing
                .take_waiter(entry.index, entry.term, &mut self.replies);
            apply.push(ApplyItem { entry, answers });
        }
        let read_states = self.on_read_states(rd.read_states);
        let apply_first = self.role == Role::Leader
            && !apply.is_empty()
            && persist
                .as_ref()
                .is_some_and(|p| leaves_term_and_vote(p, &durable_before));
        Effects {
            soft_state: rd.soft_state,
            apply_first,
            messages: rd.messages,
            frames: std::mem::take(&mut self.frames),
            persist,
            persisted_messages: rd.persisted_messages,
            install_snapshot: rd.snapshot,
            apply,
            replies: std::mem::take(&mut self.replies),
            read_states,
            start_snapshot: None,
            promotions: std::mem::take(&mut self.promotions),
        }
    }

    fn on_soft_state(&mut self, leader: Option<NodeId>, role: Role) {
        if leader != self.leader {
            // Proposals forwarded to the previous leader may or may not be in the log, and
            // we will not hear where they landed: answer now rather than at the timeout.
            self.routing
                .fail_forwarded(NodeError::LeaderChanged, &mut self.replies);
        }
        self.leader = leader;
        self.role = role;
    }

    fn on_snapshot_installed(&mut self, snap: &Snapshot) {
        self.applied = snap.meta.index;
        self.applied_term = snap.meta.term;
        self.last_snapshot = snap.meta.index;
        self.last_image_bytes = snap.data.len() as u64;
        self.log_bytes_since_snapshot = 0;
        // Proposals at or below the snapshot: their results are inside the image, unknown.
        self.routing
            .fail_waiters_through(snap.meta.index, NodeError::Timeout, &mut self.replies);
    }

    /// Tell followers about a commit index that advanced while no new entries are going
    /// out to carry it.
    ///
    /// Why: the core announces a new commit index only with the next Append or heartbeat,
    /// so an idle follower would learn it up to one heartbeat interval late — and a write or
    /// linearizable read served by that follower waits for exactly that. When proposals
    /// were placed this round, the Appends carrying them carry the commit index too. A
    /// follower is told a commit index only up to what it is known to hold, so a follower
    /// whose acknowledgement arrives after the commit (made by a faster follower) needs an
    /// announcement too: hence also after any append acknowledgement.
    fn announce_commit(&mut self) {
        let commit = self.raft.commit_index();
        let acks = std::mem::take(&mut self.acks_seen);
        if self.role != Role::Leader
            || self.round_proposed
            || (commit <= self.announced_commit && !acks)
        {
            return;
        }
        self.announced_commit = commit;
        self.raft.announce_commit();
    }

    /// Every `snapshot_count` applied entries (and, for a large store, enough of them:
    /// [`DriverConfig::snapshot_size_floor`]), ask for a snapshot (one at a time).
    fn maybe_snapshot(&mut self) -> Option<SnapshotRequest> {
        let count = self.cfg.snapshot_count;
        let worth_it = self.last_image_bytes < self.cfg.snapshot_size_floor
            || self
                .log_bytes_since_snapshot
                .saturating_mul(IMAGE_BYTES_PER_LOG_BYTE)
                >= self.last_image_bytes;
        let entries = self.applied.saturating_sub(self.last_snapshot);
        let counted = count != 0
            && entries >= count
            && (worth_it || entries >= count.saturating_mul(MAX_COUNTS_PER_SNAPSHOT));
        let asked = self.snapshot_asked && self.applied > self.last_snapshot;
        if self.snapshot_running || !(counted || asked) {
            return None;
        }
        self.snapshot_asked = false;
        self.snapshot_running = true;
        self.log_bytes_in_running_snapshot = std::mem::take(&mut self.log_bytes_since_snapshot);
        Some(SnapshotRequest {
            index: self.applied,
            term: self.applied_term,
            // The configuration at the snapshot's index, not the latest one: a change
            // appended after `applied` may still be truncated away.
            conf_state: self
                .raft
                .conf_state_at(self.applied)
                .unwrap_or_else(|| self.raft.status().conf_state),
        })
    }

    /// Time-based duties, once per tick.
    fn expire(&mut self) {
        let now = self.now;
        let no_leader = 2 * self.cfg.election_timeout;
        let timeout = self.cfg.request_timeout;
        self.routing
            .expire(now, no_leader, timeout, &mut self.replies);
        let retry_after = (self.cfg.election_timeout / 2).max(3 * self.clock.interval());
        self.reads
            .expire(now, no_leader, timeout, retry_after, &mut self.replies);
    }

    pub(crate) fn tick_interval(&self) -> Duration {
        self.clock.interval()
    }

    pub(crate) fn apply_lags(&self) -> bool {
        let gap = self.raft.commit_index().saturating_sub(self.applied);
        gap.saturating_add(self.apply_lag) > self.cfg.max_apply_gap
    }

    pub(crate) fn reply(&mut self, req: RequestId, outcome: Outcome) {
        self.replies.push(Reply { req, outcome });
    }

    // ----- observation -------------------------------------------------------------------

    pub fn status(&self) -> DriverStatus {
        DriverStatus {
            core: self.raft.status(),
            applied: self.applied,
            applied_term: self.applied_term,
        }
    }

    /// The core, for observation.
    pub fn core(&self) -> &RaftNode {
        &self.raft
    }

    /// The core, for tests and tools that drive it directly (the simulator's scripted
    /// scenarios campaign, transfer leadership and propose through it). Whatever they
    /// cause still leaves through [`Driver::poll`]; the driver ignores read states and
    /// entries it did not ask for.
    pub fn core_mut(&mut self) -> &mut RaftNode {
        &mut self.raft
    }
}
