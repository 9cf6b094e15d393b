//! The node thread: feeds the core, drains its `Ready`s in the order the contract demands,
//! applies committed entries, answers proposals and reads, and snapshots in the background.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{Entry, Message, ProposeError, RaftNode, ReadState, Role, Snapshot, SnapshotMeta};
use storage::Storage;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::{probe, Input, NodeHandle, ProposeResult, SharedStatus, StateMachine};
use crate::errors::ServerError;
use crate::transport::{ForwardError, Frame, PeerEvent, Transport};

/// Most ticks counted at once after a slow iteration: one heartbeat interval, far below an
/// election timeout.
const MAX_CATCH_UP_TICKS: u32 = crate::config::TICKS_PER_HEARTBEAT as u32;

/// How many ticks to count at `now` when the next one was due at `due_at` (`now >= due_at`),
/// and when the following one is due.
fn ticks_due(now: Instant, due_at: Instant, interval: Duration) -> (u32, Instant) {
    let late = (now - due_at).as_nanos() / interval.as_nanos().max(1);
    let count = u32::try_from(late).unwrap_or(u32::MAX).saturating_add(1);
    let next = due_at + interval.saturating_mul(count);
    (count.min(MAX_CATCH_UP_TICKS), next)
}

/// Inputs handled per loop iteration before the core is drained (bounds latency).
const MAX_INPUTS_PER_ROUND: usize = 8192;

/// Everything the node thread needs.
pub struct NodeParams<S: StateMachine> {
    pub id: u64,
    pub cluster_id: u64,
    pub raft: RaftNode,
    pub storage: Storage,
    pub state: Arc<RwLock<S>>,
    /// Index the state machine reflects at start (the recovered snapshot's index).
    pub applied: u64,
    /// Term of the entry at `applied`.
    pub applied_term: u64,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    pub request_timeout: Duration,
    pub snapshot_count: u64,
    /// The wait before the next tick, given `heartbeat` (the identity except under the Jepsen
    /// harness, which skews one member's clock: `crate::hooks`).
    pub tick_interval: Arc<dyn Fn(Duration) -> Duration + Send + Sync>,
}

/// Create the node's input channel and a handle on it. The channel exists before the
/// thread so the transport (which needs the handle's sink) can start first.
pub fn channel<S: StateMachine>(
    id: u64,
    cluster_id: u64,
    state: Arc<RwLock<S>>,
    request_timeout: Duration,
) -> (NodeHandle<S>, mpsc::Receiver<Input<S::Output>>) {
    let (tx, rx) = mpsc::channel();
    let handle = NodeHandle {
        id,
        cluster_id,
        tx,
        status: Arc::new(SharedStatus::default()),
        state,
        timeout: request_timeout,
    };
    (handle, rx)
}

/// Start the node thread. It runs until [`NodeHandle::shutdown`] or a fatal error, which
/// the returned join handle yields.
pub fn spawn<S: StateMachine>(
    params: NodeParams<S>,
    handle: &NodeHandle<S>,
    inbox: mpsc::Receiver<Input<S::Output>>,
    transport: Transport,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let rt = Runtime {
        leader: None,
        role: Role::Follower,
        term: params.raft.status().hard_state.term,
        applied: params.applied,
        applied_term: params.applied_term,
        last_snapshot: params.applied,
        snapshot_running: false,
        announced_commit: 0,
        acks_seen: false,
        pending: BTreeMap::new(),
        to_propose: Vec::new(),
        parked: Vec::new(),
        forwarded: HashMap::new(),
        next_req: 1,
        reads_unsent: Vec::new(),
        reads_inflight: HashMap::new(),
        reads_confirmed: BTreeMap::new(),
        next_read_ctx: 1,
        inbox_tx: handle.tx.clone(),
        shared: handle.status.clone(),
        transport,
        inbox,
        p: params,
    };
    std::thread::Builder::new()
        .name("raft-node".into())
        .spawn(move || rt.run())
}

type Responder<O> = oneshot::Sender<ProposeResult<O>>;
type ReadWaiter = oneshot::Sender<Result<(), ServerError>>;

/// Where a proposal to be placed in the log came from.
enum Origin<O> {
    /// A client call on this member, waiting since the given instant.
    Local(Responder<O>, Instant),
    /// Forwarded by follower `from` as its request `req_id`.
    Remote { from: u64, req_id: u64 },
}

struct Runtime<S: StateMachine> {
    p: NodeParams<S>,
    inbox: mpsc::Receiver<Input<S::Output>>,
    inbox_tx: mpsc::Sender<Input<S::Output>>,
    transport: Transport,
    shared: Arc<SharedStatus>,

    leader: Option<u64>,
    role: Role,
    term: u64,
    applied: u64,
    applied_term: u64,
    last_snapshot: u64,
    snapshot_running: bool,
    /// The highest commit index we made sure followers hear about (see `announce_commit`).
    announced_commit: u64,
    /// Append acknowledgements were stepped since the last `announce_commit`.
    acks_seen: bool,

    /// Proposals in the log, by index: answered when that index is applied.
    pending: BTreeMap<u64, (u64, Responder<S::Output>)>,
    /// Proposals received this round, placed in the log together.
    to_propose: Vec<(Bytes, Origin<S::Output>)>,
    /// Proposals waiting for a leader to be known.
    parked: Vec<(Bytes, Responder<S::Output>, Instant)>,
    /// Proposals forwarded to the leader, waiting to learn their log position.
    forwarded: HashMap<u64, (Bytes, Responder<S::Output>, Instant)>,
    next_req: u64,

    /// Reads not yet handed to the core (with when they arrived).
    reads_unsent: Vec<(ReadWaiter, Instant)>,
    /// Read rounds handed to the core, by context.
    reads_inflight: HashMap<u64, (Vec<(ReadWaiter, Instant)>, Instant)>,
    /// Confirmed reads waiting for the apply index to reach theirs.
    reads_confirmed: BTreeMap<u64, Vec<ReadWaiter>>,
    next_read_ctx: u64,
}

impl<S: StateMachine> Runtime<S> {
    fn run(mut self) -> anyhow::Result<()> {
        let result = self.event_loop();
        if let Err(e) = &result {
            error!(error = %format!("{e:#}"), "node stopped on an error");
            self.shared.failed.store(true, Ordering::Relaxed);
        }
        self.fail_everything(ServerError::Stopped);
        result
    }

    fn event_loop(&mut self) -> anyhow::Result<()> {
        let hb = self.p.heartbeat;
        let mut next_tick = Instant::now() + hb;
        self.publish();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(input) => {
                    if !self.handle(input)? {
                        return Ok(());
                    }
                    for _ in 0..MAX_INPUTS_PER_ROUND {
                        match self.inbox.try_recv() {
                            Ok(input) => {
                                if !self.handle(input)? {
                                    return Ok(());
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                let hb = (self.p.tick_interval)(hb);
                // Every tick interval that passed counts, up to a heartbeat's worth. A long
                // iteration (a slow fsync, a burst of input) must not slow the Raft clock:
                // a leader whose clock runs slow sends heartbeats late and its followers
                // time out (seen under `check perf --load=xl` on an overloaded machine). A
                // stall of seconds is not replayed in full, though: many election timeouts
                // at once would make check-quorum step a healthy leader down.
                let (due, next) = ticks_due(now, next_tick, hb);
                for _ in 0..due {
                    self.p.raft.tick();
                }
                next_tick = next;
                self.housekeeping(now);
            }
            let proposed = self.flush_proposals();
            self.flush_reads();
            while self.p.raft.has_ready() {
                self.process_ready()?;
            }
            self.announce_commit(proposed);
            while self.p.raft.has_ready() {
                self.process_ready()?;
            }
            self.maybe_snapshot();
        }
    }

    /// Take one input. Returns false to stop.
    fn handle(&mut self, input: Input<S::Output>) -> anyhow::Result<bool> {
        match input {
            Input::Peer(PeerEvent::Frame { from, frame }) => self.on_frame(from, frame),
            Input::Peer(PeerEvent::Refused { peer, reason }) => {
                if reason.contains("lost its data dir") {
                    anyhow::bail!("member {peer:x} refuses this member: {reason}");
                }
                debug!(peer = format_args!("{peer:x}"), %reason, "peer refused our connection");
            }
            Input::Propose(data, resp) => {
                probe::mark("node_in", 0);
                self.to_propose
                    .push((data, Origin::Local(resp, Instant::now())))
            }
            Input::Read(w) => self.reads_unsent.push((w, Instant::now())),
            Input::SnapshotWritten(r) => self.on_snapshot_written(r)?,
            Input::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    fn on_frame(&mut self, from: u64, frame: Frame) {
        match frame {
            Frame::Raft(m) => {
                match &m.body {
                    raft::MessageBody::AppendResponse { match_index, .. } => {
                        probe::mark("ack_step", *match_index);
                        self.acks_seen = true;
                    }
                    raft::MessageBody::Append { entries, .. } if !entries.is_empty() => {
                        probe::mark("f_node", entries[entries.len() - 1].index);
                    }
                    _ => {}
                }
                if let Err(e) = self.p.raft.step(m) {
                    debug!(?e, "core refused a message");
                }
            }
            Frame::Forward { req_id, data } => self
                .to_propose
                .push((data, Origin::Remote { from, req_id })),
            Frame::ForwardResult { req_id, result } => {
                let Some((data, resp, _)) = self.forwarded.remove(&req_id) else {
                    return;
                };
                match result {
                    Ok((index, term)) if index > self.applied => {
                        self.pending.insert(index, (term, resp));
                    }
                    // Applied before we learnt where it landed: the outcome is unknown here.
                    Ok(_) => {
                        let _ = resp.send(Err(ServerError::Timeout));
                    }
                    Err(ForwardError::NotLeader) => {
                        // Leadership is moving: wait for the next leader like a new proposal.
                        // Nothing was appended, so retrying cannot duplicate the write.
                        debug!("forwarded proposal refused by a non-leader; parking it");
                        self.parked.push((data, resp, Instant::now()));
                    }
                    Err(ForwardError::TooManyRequests) => {
                        let _ = resp.send(Err(ServerError::TooManyRequests));
                    }
                }
            }
            Frame::Hello(_) | Frame::HelloReply(_) => {}
        }
    }

    /// Tell followers about a commit index that advanced while no new entries are going
    /// out to carry it.
    ///
    /// Why: the core announces a new commit index only with the next Append or heartbeat,
    /// so an idle follower would learn it up to one heartbeat interval late — and a write or
    /// linearizable read served by that follower waits for exactly that. A ReadIndex round
    /// is the core's way to broadcast a heartbeat (carrying the commit index) now; its
    /// answer is ignored. When proposals were placed this round, the Appends carrying them
    /// also carry the commit index, so nothing extra is sent.
    ///
    /// A follower is only told a commit index up to what it is known to hold, so a follower
    /// whose acknowledgement arrives after the commit (made by a faster follower) needs an
    /// announcement too: hence also after any append acknowledgement.
    fn announce_commit(&mut self, proposed: bool) {
        let commit = self.shared.commit();
        let acks = std::mem::take(&mut self.acks_seen);
        if self.role != Role::Leader || proposed || (commit <= self.announced_commit && !acks) {
            return;
        }
        self.announced_commit = commit;
        let _ = self
            .p
            .raft
            .read_index(Bytes::from_static(b"commit-announce"));
    }

    /// Place this round's proposals: in our log if we lead, with the leader otherwise, or
    /// parked until a leader is known. Returns whether entries were added to our log.
    fn flush_proposals(&mut self) -> bool {
        if self.leader.is_some() && !self.parked.is_empty() {
            for (data, resp, since) in std::mem::take(&mut self.parked) {
                self.to_propose.push((data, Origin::Local(resp, since)));
            }
        }
        if self.to_propose.is_empty() {
            return false;
        }
        let batch = std::mem::take(&mut self.to_propose);
        if self.role == Role::Leader {
            let datas: Vec<Bytes> = batch.iter().map(|(d, _)| d.clone()).collect();
            match self.p.raft.propose(datas) {
                Ok(placed) => {
                    probe::mark("placed", placed.last);
                    for (i, (_, origin)) in batch.into_iter().enumerate() {
                        let index = placed.first + i as u64;
                        match origin {
                            Origin::Local(resp, _) => {
                                self.pending.insert(index, (placed.term, resp));
                            }
                            Origin::Remote { from, req_id } => self.transport.send(
                                from,
                                Frame::ForwardResult {
                                    req_id,
                                    result: Ok((index, placed.term)),
                                },
                            ),
                        }
                    }
                    return true;
                }
                Err(ProposeError::NotLeader { leader }) => self.leader = leader,
                Err(ProposeError::TransferInProgress) => {}
            }
            // Could not place them now: treat as if we were not the leader.
        }
        let now = Instant::now();
        for (data, origin) in batch {
            match origin {
                Origin::Remote { from, req_id } => self.transport.send(
                    from,
                    Frame::ForwardResult {
                        req_id,
                        result: Err(ForwardError::NotLeader),
                    },
                ),
                // Forward only over a live connection: a frame queued for a dead leader is
                // dropped, and the client would wait for nothing until its timeout.
                Origin::Local(resp, since) => match self.leader {
                    Some(l) if l != self.p.id && self.transport.is_connected(l) => {
                        let req_id = self.next_req;
                        self.next_req += 1;
                        self.transport.send(
                            l,
                            Frame::Forward {
                                req_id,
                                data: data.clone(),
                            },
                        );
                        self.forwarded.insert(req_id, (data, resp, now));
                    }
                    _ => self.parked.push((data, resp, since)),
                },
            }
        }
        false
    }

    /// Hand this round's reads to the core as one ReadIndex request.
    fn flush_reads(&mut self) {
        if self.reads_unsent.is_empty() || self.leader.is_none() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        // On error (no leader after all) the reads stay queued until one appears or they
        // expire.
        let ctx_bytes = Bytes::copy_from_slice(&ctx.to_be_bytes());
        if self.p.raft.read_index(ctx_bytes).is_ok() {
            let waiters = std::mem::take(&mut self.reads_unsent);
            self.reads_inflight.insert(ctx, (waiters, Instant::now()));
        }
    }

    /// Time-based duties, once per tick: expire what waited too long, retry lost reads.
    fn housekeeping(&mut self, now: Instant) {
        let no_leader_deadline = 2 * self.p.election_timeout;
        let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(_, _, t)| now - *t < no_leader_deadline);
        self.parked = keep;
        for (_, resp, _) in expired {
            let _ = resp.send(Err(ServerError::NoLeader));
        }
        let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_unsent)
            .into_iter()
            .partition(|(_, t)| now - *t < no_leader_deadline);
        self.reads_unsent = keep;
        for (w, _) in expired {
            let _ = w.send(Err(ServerError::NoLeader));
        }
        // A read round unanswered for half an election timeout was probably lost to a
        // leader change: ask again under a new context (answers to the old one are ignored).
        let retry_after = (self.p.election_timeout / 2).max(3 * self.p.heartbeat);
        let stale: Vec<u64> = self
            .reads_inflight
            .iter()
            .filter(|(_, (_, t))| now - *t >= retry_after)
            .map(|(c, _)| *c)
            .collect();
        for ctx in stale {
            if let Some((waiters, _)) = self.reads_inflight.remove(&ctx) {
                self.reads_unsent
                    .extend(waiters.into_iter().filter(|(w, _)| !w.is_closed()));
            }
        }
        let timeout = self.p.request_timeout;
        self.forwarded
            .retain(|_, (_, resp, t)| !resp.is_closed() && now - *t < timeout);
        self.pending.retain(|_, (_, resp)| !resp.is_closed());
    }

    fn process_ready(&mut self) -> anyhow::Result<()> {
        let rd = self.p.raft.ready();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss.leader, ss.role);
        }
        if let Some(hs) = rd.hard_state {
            if hs.term != self.term {
                debug!(term = hs.term, "term changed");
                self.term = hs.term;
            }
        }
        self.send_all(&rd.messages);
        let last = rd.entries.last().map_or(0, |e| e.index);
        if last > 0 {
            probe::mark("sent", last);
        }
        // A Ready that only moves the commit index (the usual one after the acknowledgements
        // of a write, on every member) is written without an fsync: the commit index is
        // volatile in Raft and waiting for it would put a second fsync on every write's path
        // (see `Storage::save_commit`). Term, vote, entries and snapshots stay durable first.
        let stored = self.p.storage.hard_state();
        let saved = match rd.hard_state {
            Some(hs)
                if rd.entries.is_empty()
                    && rd.snapshot.is_none()
                    && hs.term == stored.term
                    && hs.vote == stored.vote =>
            {
                self.p.storage.save_commit(&hs)
            }
            _ => self
                .p
                .storage
                .save(rd.hard_state.as_ref(), &rd.entries, rd.snapshot.as_ref()),
        };
        saved.map_err(|e| anyhow::anyhow!("cannot persist the raft log: {e}"))?;
        if last > 0 {
            probe::mark("saved", last);
        }
        self.send_all(&rd.persisted_messages);
        if last > 0 && !rd.persisted_messages.is_empty() {
            probe::mark("ack_sent", last);
        }
        if let Some(snap) = &rd.snapshot {
            self.install_snapshot(snap)?;
        }
        if !rd.committed_entries.is_empty() {
            self.apply(&rd.committed_entries)?;
        }
        self.on_read_states(&rd.read_states);
        self.p.raft.advance(rd.ack());
        self.publish();
        Ok(())
    }

    fn send_all(&self, msgs: &[Message]) {
        if !msgs.is_empty() {
            self.transport.send_raft(msgs);
        }
    }

    fn on_soft_state(&mut self, leader: Option<u64>, role: Role) {
        if leader != self.leader {
            // Proposals forwarded to the previous leader may or may not be in the log; we
            // will not hear where they landed. Answer now rather than at the timeout.
            for (_, (_, resp, _)) in std::mem::take(&mut self.forwarded) {
                let _ = resp.send(Err(ServerError::LeaderChanged));
            }
            match leader {
                Some(l) => info!(
                    leader = format_args!("{l:x}"),
                    term = self.p.raft.status().hard_state.term,
                    "leader elected{}",
                    if l == self.p.id { " (this member)" } else { "" }
                ),
                None => info!(term = self.p.raft.status().hard_state.term, "leader lost"),
            }
        }
        if role != self.role {
            info!(from = ?self.role, to = ?role, term = self.p.raft.status().hard_state.term, "role changed");
        }
        self.leader = leader;
        self.role = role;
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> anyhow::Result<()> {
        info!(
            index = snap.meta.index,
            term = snap.meta.term,
            bytes = snap.data.len(),
            "installing snapshot from the leader"
        );
        {
            let mut sm = self
                .p
                .state
                .write()
                .map_err(|_| anyhow::anyhow!("state machine lock poisoned"))?;
            sm.restore(&snap.data)?;
        }
        self.applied = snap.meta.index;
        self.applied_term = snap.meta.term;
        self.last_snapshot = snap.meta.index;
        // Proposals at or below the snapshot: their results are inside the image, unknown.
        let later = self.pending.split_off(&(snap.meta.index + 1));
        for (_, (_, resp)) in std::mem::replace(&mut self.pending, later) {
            let _ = resp.send(Err(ServerError::Timeout));
        }
        Ok(())
    }

    /// Apply committed entries in order. A poisoned lock means a reader or an earlier apply
    /// panicked: stopping is the only safe answer (acknowledging entries we did not apply
    /// would silently diverge this replica).
    fn apply(&mut self, entries: &[Entry]) -> anyhow::Result<()> {
        let mut outputs = Vec::new();
        probe::mark("commit", entries.last().map_or(0, |e| e.index));
        {
            let mut sm = self
                .p
                .state
                .write()
                .map_err(|_| anyhow::anyhow!("state machine lock poisoned; cannot apply"))?;
            for e in entries {
                if e.index <= self.applied {
                    continue; // already reflected (e.g. by a snapshot)
                }
                let out = sm.apply(e);
                self.applied = e.index;
                self.applied_term = e.term;
                if let Some((term, resp)) = self.pending.remove(&e.index) {
                    outputs.push((term == e.term, out, resp));
                }
            }
        }
        self.shared.applied.store(self.applied, Ordering::Relaxed);
        let outputs_empty = outputs.is_empty();
        for (same_term, out, resp) in outputs {
            let answer = match (same_term, out) {
                (true, Some(o)) => Ok(o),
                _ => Err(ServerError::LeaderChanged),
            };
            let _ = resp.send(answer);
        }
        if !outputs_empty {
            probe::mark("answered", self.applied);
        }
        self.release_reads();
        Ok(())
    }

    fn on_read_states(&mut self, states: &[ReadState]) {
        for rs in states {
            let Ok(ctx) = <[u8; 8]>::try_from(rs.ctx.as_ref()) else {
                continue;
            };
            let Some((waiters, _)) = self.reads_inflight.remove(&u64::from_be_bytes(ctx)) else {
                continue;
            };
            self.reads_confirmed
                .entry(rs.index)
                .or_default()
                .extend(waiters.into_iter().map(|(w, _)| w));
        }
        self.release_reads();
    }

    fn release_reads(&mut self) {
        let later = self.reads_confirmed.split_off(&(self.applied + 1));
        for (_, ws) in std::mem::replace(&mut self.reads_confirmed, later) {
            for w in ws {
                let _ = w.send(Ok(()));
            }
        }
    }

    fn publish(&self) {
        let st = self.p.raft.status();
        let s = &self.shared;
        s.leader.store(st.leader.unwrap_or(0), Ordering::Relaxed);
        s.term.store(st.hard_state.term, Ordering::Relaxed);
        s.commit.store(st.hard_state.commit, Ordering::Relaxed);
        s.applied.store(self.applied, Ordering::Relaxed);
        let role = match st.role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        s.role.store(role, Ordering::Relaxed);
    }

    /// Every `snapshot_count` applied entries, serialise the state machine and write it on
    /// another thread; the log is compacted when the file is durable.
    fn maybe_snapshot(&mut self) {
        if self.snapshot_running || self.applied < self.last_snapshot + self.p.snapshot_count {
            return;
        }
        let image = match self.p.state.read() {
            Ok(sm) => sm.snapshot(),
            Err(_) => return,
        };
        let meta = SnapshotMeta {
            index: self.applied,
            term: self.applied_term,
            conf_state: self.p.raft.status().conf_state,
        };
        let writer = self.p.storage.snapshot_writer();
        let tx = self.inbox_tx.clone();
        self.snapshot_running = true;
        info!(
            index = meta.index,
            term = meta.term,
            bytes = image.len(),
            "snapshot started"
        );
        let spawned = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                let r = writer
                    .write_bytes(&meta, &image)
                    .map(|w| (w, Snapshot { meta, data: image }))
                    .map_err(|e| e.to_string());
                let _ = tx.send(Input::SnapshotWritten(r));
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the snapshot writer");
            self.snapshot_running = false;
        }
    }

    fn on_snapshot_written(
        &mut self,
        r: Result<(storage::WrittenSnapshot, Snapshot), String>,
    ) -> anyhow::Result<()> {
        self.snapshot_running = false;
        let (written, snap) = match r {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "snapshot failed; will retry later");
                self.last_snapshot = self.applied;
                return Ok(());
            }
        };
        self.p
            .storage
            .compact_to(&written)
            .map_err(|e| anyhow::anyhow!("cannot compact the log: {e}"))?;
        let index = snap.meta.index;
        if let Err(e) = self.p.raft.compact(snap) {
            warn!(?e, "core refused log compaction");
        }
        self.last_snapshot = index;
        info!(index, file = %written.path.display(), "snapshot saved and log compacted");
        Ok(())
    }

    fn fail_everything(&mut self, e: ServerError) {
        for (_, (_, r)) in std::mem::take(&mut self.pending) {
            let _ = r.send(Err(e.clone()));
        }
        for (_, (_, r, _)) in std::mem::take(&mut self.forwarded) {
            let _ = r.send(Err(e.clone()));
        }
        for (_, r, _) in std::mem::take(&mut self.parked) {
            let _ = r.send(Err(e.clone()));
        }
        for (_, o) in std::mem::take(&mut self.to_propose) {
            if let Origin::Local(r, _) = o {
                let _ = r.send(Err(e.clone()));
            }
        }
        for (w, _) in std::mem::take(&mut self.reads_unsent) {
            let _ = w.send(Err(e.clone()));
        }
        for (_, (ws, _)) in std::mem::take(&mut self.reads_inflight) {
            for (w, _) in ws {
                let _ = w.send(Err(e.clone()));
            }
        }
        for (_, ws) in std::mem::take(&mut self.reads_confirmed) {
            for w in ws {
                let _ = w.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_loop_counts_the_missed_ticks_up_to_a_heartbeat() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        // On time: one tick, the next one interval later.
        assert_eq!(ticks_due(t0, t0, ms(10)), (1, t0 + ms(10)));
        // 35 ms late: the due tick and three missed ones; the clock keeps its phase.
        assert_eq!(ticks_due(t0 + ms(35), t0, ms(10)), (4, t0 + ms(40)));
        // A 5 s stall counts as one heartbeat interval, not as several election timeouts.
        let (n, next) = ticks_due(t0 + ms(5000), t0, ms(10));
        assert_eq!(n, MAX_CATCH_UP_TICKS);
        assert!(next > t0 + ms(5000) && next <= t0 + ms(5010));
    }
}
