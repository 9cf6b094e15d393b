//! The node thread: a thin shell around the node driver (`crates/node`). It takes inputs
//! off its queue, hands them to the driver with the time they arrived, and carries out
//! the driver's effects in the order `docs/node-driver.md` prescribes: transport, WAL,
//! state machine, and the answers to the waiting gRPC calls. It decides nothing itself.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use node::{Driver, DriverConfig, Effects, NodeError, Outcome, PeerFrame, RequestId};
use raft::{RaftNode, Role, Snapshot};
use storage::Storage;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::apply_stage::{self, Job, StageHandle};
use super::queue::ControlQueue;
use super::round::{RoundBudget, RoundTimes};
use super::{probe, ChangeRefusal, Input, NodeHandle, SharedStatus, Stamped, StateMachine};
use crate::errors::ServerError;
use crate::metrics::metrics;
use crate::transport::{Frame, PeerEvent, Transport};

/// How long a member that applied its own removal keeps running before it stops (etcd
/// waits the same second): a leader removing itself still has to hand over leadership,
/// and the others have to hear that the change committed.
const REMOVED_GRACE: Duration = Duration::from_secs(1);

/// How often a leader's driver looks for members added as voters that have caught up.
const PROMOTE_CHECK: Duration = Duration::from_millis(100);

/// How often the node copies the leader's view of its members' replication into
/// [`SharedStatus`] for the dashboard (a member that does not lead copies an empty list),
/// so a status page costs the event loop one clock read per iteration, not a copy.
pub const PROGRESS_PUBLISH: Duration = Duration::from_millis(200);

/// Inputs handled per loop iteration before the driver is polled (bounds latency).
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
    /// One Raft tick (a tenth of the heartbeat interval, `config::TICKS_PER_HEARTBEAT`).
    pub tick: Duration,
    pub election_timeout: Duration,
    pub request_timeout: Duration,
    pub snapshot_count: u64,
    /// The wait for one tick, given `tick` (the identity except under the Jepsen
    /// harness, which skews one member's clock: `crate::hooks`).
    pub tick_interval: Arc<dyn Fn(Duration) -> Duration + Send + Sync>,
}

/// Images from this size on are taken only once the log since the last one is a quarter of
/// it (`node::DriverConfig::snapshot_size_floor`); smaller stores snapshot by
/// `--snapshot-count` alone, as etcd does.
pub const SNAPSHOT_SIZE_FLOOR: u64 = 16 << 20;

/// Create the node's input queue and a handle on it. The queue exists before the thread
/// so the transport (which needs the handle's sink) can start first.
pub fn channel<S: StateMachine>(
    id: u64,
    cluster_id: u64,
    state: Arc<RwLock<S>>,
    request_timeout: Duration,
) -> (NodeHandle<S>, mpsc::Receiver<Stamped<S::Output>>) {
    let (tx, rx) = mpsc::sync_channel(super::INPUT_QUEUE);
    let handle = NodeHandle {
        id,
        cluster_id,
        tx,
        control: Arc::new(ControlQueue::default()),
        status: Arc::new(SharedStatus::default()),
        state,
        timeout: request_timeout,
        admission: super::admission::Admission::new(super::admission::ADMITTED_BYTES),
        ahead: super::admission::Admission::new(super::AHEAD_ADMITTED_BYTES),
    };
    (handle, rx)
}

/// Start the node thread. It runs until [`NodeHandle::shutdown`] or a fatal error, which
/// the returned join handle yields.
pub fn spawn<S: StateMachine>(
    params: NodeParams<S>,
    handle: &NodeHandle<S>,
    inbox: mpsc::Receiver<Stamped<S::Output>>,
    transport: Transport,
) -> std::io::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let epoch = Instant::now();
    let cfg = DriverConfig {
        tick_interval: params.tick,
        max_catch_up_ticks: crate::config::TICKS_PER_HEARTBEAT as u32,
        election_timeout: params.election_timeout,
        request_timeout: params.request_timeout,
        snapshot_count: params.snapshot_count,
        snapshot_size_floor: SNAPSHOT_SIZE_FLOOR,
        max_apply_gap: node::MAX_APPLY_GAP,
        forward_id_base: random_u64(),
        promote_check_interval: PROMOTE_CHECK,
        unsafe_promote_unsynced: false,
        lease: node::LeaseConfig::default(),
    };
    let id = params.id;
    let NodeParams {
        raft,
        storage,
        state,
        applied,
        applied_term,
        tick,
        tick_interval,
        ..
    } = params;
    let mut driver = Driver::new(raft, cfg, (applied, applied_term), Duration::ZERO);
    // Which learners await promotion is replicated state: the recovered state's answer
    // now, and again whenever an applied change or an installed snapshot may change it.
    if let Ok(sm) = state.read() {
        driver.set_promotion_candidates(sm.promotion_candidates());
    }
    let lease_clock = state.read().ok().and_then(|sm| sm.lease_clock());
    let stage = apply_stage::spawn(
        id,
        applied,
        state.clone(),
        handle.status.clone(),
        handle.control.clone(),
        handle.tx.clone(),
    )?;
    let shell = Shell {
        stage,
        conf_in_stage: 0,
        lease_clock,
        id,
        changes: HashMap::new(),
        remote_changes: HashMap::new(),
        next_change_id: random_u64(),
        removed_at: None,
        progress_published: Instant::now(),
        driver,
        storage,
        state,
        clock: ShellClock::new(epoch, tick, tick_interval),
        role: Role::Follower,
        leader: None,
        proposals: HashMap::new(),
        reads: HashMap::new(),
        compact_waiters: Vec::new(),
        next_req: 1,
        control: handle.control.clone(),
        shared: handle.status.clone(),
        transport,
        inbox,
        round: RoundTimes::start(),
        heartbeat_interval: tick * crate::config::TICKS_PER_HEARTBEAT as u32,
    };
    std::thread::Builder::new()
        .name("raft-node".into())
        .spawn(move || {
            super::priority::raise_node_thread();
            shell.run()
        })
}

/// A random number from the kernel (distinct per incarnation), without another crate.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

use apply_stage::{ReadWaiter, Responder};
type ChangeWaiter = oneshot::Sender<Result<(), ChangeRefusal>>;

/// Who waits for a membership change this leader placed.
enum ChangeOrigin {
    /// A Cluster call on this member.
    Local(ChangeWaiter),
    /// A follower's ([`Frame::Change`]), answered with a [`Frame::ChangeResult`].
    Remote { from: u64, req_id: u64 },
}

/// A refusal that may pass if the change is asked for again.
fn retry_later(message: &str) -> ChangeRefusal {
    ChangeRefusal {
        retry: true,
        code: tonic::Code::Unavailable as i32,
        message: message.to_string(),
    }
}

/// The time the driver sees: wall-clock time since the thread started, scaled by the
/// test-only clock-rate fault hook (1 outside the Jepsen harness).
struct ShellClock {
    base_real: Instant,
    base_virtual: Duration,
    tick: Duration,
    /// The hook: the configured tick to the one to wait (identity in production).
    tick_interval: Arc<dyn Fn(Duration) -> Duration + Send + Sync>,
    rate: f64,
}

impl ShellClock {
    fn new(
        epoch: Instant,
        tick: Duration,
        tick_interval: Arc<dyn Fn(Duration) -> Duration + Send + Sync>,
    ) -> ShellClock {
        ShellClock {
            base_real: epoch,
            base_virtual: Duration::ZERO,
            tick,
            tick_interval,
            rate: 1.0,
        }
    }

    /// The driver's time at the real instant `at` (not before the last rate change).
    fn at(&self, at: Instant) -> Duration {
        let real = at.saturating_duration_since(self.base_real);
        if self.rate == 1.0 {
            self.base_virtual + real
        } else {
            self.base_virtual + real.mul_f64(self.rate)
        }
    }

    /// Re-read the clock rate (cheap when the hook is off).
    fn resample(&mut self, now: Instant) {
        let scaled = (self.tick_interval)(self.tick);
        let rate = self.tick.as_secs_f64() / scaled.as_secs_f64().max(1e-9);
        if rate != self.rate {
            self.base_virtual = self.at(now);
            self.base_real = now;
            self.rate = rate;
        }
    }

    /// The real instant at which the driver's time reaches `t`.
    fn real_instant(&self, t: Duration) -> Instant {
        let ahead = t.saturating_sub(self.base_virtual);
        self.base_real + ahead.div_f64(self.rate.max(1e-9))
    }
}

struct Shell<S: StateMachine> {
    id: u64,
    /// Membership changes this leader placed, by the request id given to the driver.
    changes: HashMap<RequestId, ChangeOrigin>,
    /// Membership changes sent to the leader, by the id in their [`Frame::Change`].
    remote_changes: HashMap<u64, ChangeWaiter>,
    next_change_id: u64,
    /// When this member applied its own removal; it stops [`REMOVED_GRACE`] later.
    removed_at: Option<Instant>,
    /// When replication progress was last published ([`PROGRESS_PUBLISH`]).
    progress_published: Instant,
    driver: Driver,
    /// Where committed entries are applied (`apply_stage.rs`): the node thread hands them
    /// over and goes on.
    stage: StageHandle<S::Output>,
    /// Index of the last membership change handed to the stage: the next change is
    /// checked against the member list only once the stage applied this one.
    conf_in_stage: u64,
    /// The lease clock applies keep, lent to the driver's lease duties.
    lease_clock: Option<crate::lease_clock::LeaseClock>,
    storage: Storage,
    state: Arc<RwLock<S>>,
    clock: ShellClock,
    role: Role,
    leader: Option<u64>,
    /// The gRPC calls waiting for the driver's answer, by the request id given to it.
    proposals: HashMap<RequestId, Responder<S::Output>>,
    reads: HashMap<RequestId, ReadWaiter>,
    /// Defragment calls waiting for the snapshot they asked for.
    compact_waiters: Vec<oneshot::Sender<Result<(), String>>>,
    next_req: RequestId,
    inbox: mpsc::Receiver<Stamped<S::Output>>,
    /// Control inputs, taken ahead of the bulk ones in `inbox` (`queue.rs`).
    control: Arc<ControlQueue<S::Output>>,
    transport: Transport,
    shared: Arc<SharedStatus>,
    /// The current loop round's counts and times (for the slow-round warning).
    round: RoundTimes,
    /// A round longer than this delays the heartbeats a leader owes (it is warned about).
    heartbeat_interval: Duration,
}

impl<S: StateMachine> Shell<S> {
    fn run(mut self) -> anyhow::Result<()> {
        let result = self.event_loop();
        if let Err(e) = &result {
            error!(error = %format!("{e:#}"), "node stopped on an error");
            self.shared.failed.store(true, Ordering::Relaxed);
        }
        // What was handed over is applied and answered before the rest is failed.
        self.stage.stop();
        for (_, r) in self.proposals.drain() {
            let _ = r.send(Err(ServerError::Stopped));
        }
        for (_, r) in self.reads.drain() {
            let _ = r.send(Err(ServerError::Stopped));
        }
        for (_, origin) in std::mem::take(&mut self.changes) {
            self.answer_change(origin, Err(ServerError::Stopped.into()));
        }
        for (_, w) in self.remote_changes.drain() {
            let _ = w.send(Err(ServerError::Stopped.into()));
        }
        result
    }

    fn event_loop(&mut self) -> anyhow::Result<()> {
        self.publish();
        loop {
            if let Some(at) = self.removed_at {
                if at.elapsed() >= REMOVED_GRACE {
                    removed_for_good();
                    return Ok(());
                }
            }
            let due = self.clock.real_instant(self.driver.next_tick_due());
            let mut wait = due.saturating_duration_since(Instant::now());
            if let Some(at) = self.removed_at {
                wait = wait.min(REMOVED_GRACE.saturating_sub(at.elapsed()));
            }
            self.round = RoundTimes::start();
            // Control inputs that came while the last round ran: take them now, and do not
            // wait for bulk input before the round's effects go out.
            match self.take_control()? {
                None => return Ok(()),
                Some(0) => {}
                Some(_) => wait = Duration::ZERO,
            }
            let waiting = Instant::now();
            let received = self.inbox.recv_timeout(wait);
            self.round.idle = waiting.elapsed();
            match received {
                Ok(input) => {
                    // One round: inputs up to a count and a byte budget (round.rs says why
                    // the bytes matter: a round's write and apply delay its heartbeats).
                    // Control traffic is taken before each bulk input, so it never waits
                    // behind bulk data that arrived after it.
                    let mut budget = RoundBudget::default();
                    let mut next = Some(input);
                    while let Some(input) = next.take() {
                        if self.take_control()?.is_none() {
                            return Ok(());
                        }
                        let more = budget.take(&input.1);
                        self.round.inputs += 1;
                        if !self.handle(input)? {
                            return Ok(());
                        }
                        if more && self.round.inputs <= MAX_INPUTS_PER_ROUND {
                            next = self.inbox.try_recv().ok();
                        }
                    }
                    self.round.bytes = budget.bytes();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            self.clock.resample(now);
            self.driver.tick(self.clock.at(now));
            self.driver.set_apply_lag(self.stage.lag(&self.shared));
            self.lease_duties();
            while let Some(fx) = self.driver.poll() {
                self.carry_out(fx)?;
            }
            self.round.report_if_slower_than(self.heartbeat_interval);
            self.publish();
        }
    }

    /// Take one input. Returns false to stop.
    fn handle(&mut self, Stamped(arrived, input): Stamped<S::Output>) -> anyhow::Result<bool> {
        self.driver.tick(self.clock.at(arrived));
        match input {
            Input::Peer(ev) => {
                if !self.on_peer_event(ev)? {
                    return Ok(false);
                }
            }
            Input::Propose(data, resp) | Input::ProposeAhead(data, resp) => {
                probe::mark("node_in", 0);
                self.driver.set_apply_lag(self.stage.lag(&self.shared));
                let req = self.new_request();
                self.proposals.insert(req, resp);
                self.driver.propose(req, data);
            }
            Input::Read(w) => {
                let req = self.new_request();
                self.reads.insert(req, w);
                self.driver.read(req);
            }
            Input::Compact(w) => {
                if self.driver.request_snapshot() {
                    self.compact_waiters.push(w);
                } else {
                    let _ = w.send(Ok(()));
                }
            }
            Input::TransferLeader(target, answer) => {
                let r = match self.driver.core_mut().transfer_leader(target) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(ServerError::NotLeader),
                };
                let _ = answer.send(r);
            }
            Input::Change(cc, w) => self.on_change(cc, ChangeOrigin::Local(w)),
            Input::SnapshotWritten(r) => self.on_snapshot_written(r)?,
            Input::Applied(news) => self.on_applied(*news),
            Input::ApplyFailed(e) => anyhow::bail!("cannot apply committed entries: {e}"),
            Input::Shutdown => return Ok(false),
            Input::Wake => {}
        }
        Ok(true)
    }

    /// Take every queued control input. `None` to stop; else how many were taken.
    fn take_control(&mut self) -> anyhow::Result<Option<usize>> {
        let items = self.control.take_all();
        let n = items.len();
        for input in items {
            self.round.inputs += 1;
            if !self.handle(input)? {
                return Ok(None);
            }
        }
        Ok(Some(n))
    }

    fn new_request(&mut self) -> RequestId {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    fn on_peer_event(&mut self, ev: PeerEvent) -> anyhow::Result<bool> {
        match ev {
            PeerEvent::Frame { from, frame } => match frame {
                Frame::Raft(m) => {
                    match &m.body {
                        raft::MessageBody::AppendResponse { match_index, .. } => {
                            probe::mark("ack_step", *match_index)
                        }
                        raft::MessageBody::Append { entries, .. } if !entries.is_empty() => {
                            probe::mark("f_node", entries[entries.len() - 1].index)
                        }
                        _ => {}
                    }
                    if let Err(e) = self.driver.step(m) {
                        debug!(?e, "core refused a message");
                    }
                }
                Frame::Forward { req_id, data } => self
                    .driver
                    .step_frame(from, PeerFrame::Forward { req_id, data }),
                Frame::ForwardResult { req_id, result } => self
                    .driver
                    .step_frame(from, PeerFrame::ForwardResult { req_id, result }),
                Frame::Change { req_id, change } => match raft::ConfChange::decode(&change) {
                    Ok(cc) => self.on_change(cc, ChangeOrigin::Remote { from, req_id }),
                    Err(e) => self.answer_change(
                        ChangeOrigin::Remote { from, req_id },
                        Err(ChangeRefusal {
                            retry: false,
                            code: tonic::Code::Internal as i32,
                            message: format!("undecodable membership change: {e}"),
                        }),
                    ),
                },
                Frame::ChangeResult { req_id, result } => {
                    if let Some(w) = self.remote_changes.remove(&req_id) {
                        let _ = w.send(result);
                    }
                }
                // Handshakes, round-trip probes, HashKV questions and snapshot parts (whole
                // snapshots reach the node as `Frame::Raft`) end in the transport.
                Frame::Hello(_)
                | Frame::HelloReply(_)
                | Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::JoinQuery { .. }
                | Frame::JoinAnswer { .. }
                | Frame::AddMe { .. }
                | Frame::AddMeAnswer { .. }
                | Frame::HashKv { .. }
                | Frame::HashKvResult { .. }
                | Frame::SnapshotHead { .. }
                | Frame::SnapshotPart { .. } => {}
            },
            PeerEvent::Removed { peer } => {
                info!(
                    peer = format_args!("{peer:x}"),
                    "a member says this member was removed"
                );
                removed_for_good();
                return Ok(false);
            }
            PeerEvent::Connected { peer } => self.driver.peer_connected(peer),
            PeerEvent::Disconnected { peer } => self.driver.peer_lost(peer),
            PeerEvent::IdentityRefused { peer, reason } => {
                anyhow::bail!("member {peer:x} refuses this member: {reason}");
            }
            PeerEvent::Refused { peer, reason } => {
                debug!(peer = format_args!("{peer:x}"), %reason, "peer refused our connection");
            }
        }
        Ok(true)
    }

    /// A membership change asked for here (`Local`) or by a follower (`Remote`). The leader
    /// checks it against the member list it applied and places it; a follower passes a
    /// local one on to the leader.
    fn on_change(&mut self, cc: raft::ConfChange, origin: ChangeOrigin) {
        if self.role != Role::Leader {
            match (origin, self.leader) {
                (ChangeOrigin::Local(w), Some(leader)) if leader != self.id => {
                    let req_id = self.next_change_id;
                    self.next_change_id = self.next_change_id.wrapping_add(1);
                    self.remote_changes.insert(req_id, w);
                    self.transport.send(
                        leader,
                        Frame::Change {
                            req_id,
                            change: cc.encode(),
                        },
                    );
                }
                (origin, _) => {
                    self.answer_change(origin, Err(retry_later("etcdserver: no leader")))
                }
            }
            return;
        }
        if !self.stage.has_applied(&self.shared, self.conf_in_stage) {
            // The member list the check reads must include the change before this one.
            return self.answer_change(origin, Err(retry_later("etcdserver: request timed out")));
        }
        let checked = match self.state.read() {
            Ok(sm) => sm.check_conf_change(&cc),
            Err(_) => Err(ServerError::Stopped.into()),
        };
        if let Err(r) = checked.and_then(|()| self.learner_ready(&cc)) {
            return self.answer_change(origin, Err(r));
        }
        let req = self.new_request();
        match self.driver.propose_conf_change(req, cc) {
            Ok(()) => {
                self.changes.insert(req, origin);
            }
            Err(e) => {
                use raft::ProposeError as P;
                let r = match e {
                    P::NotLeader { .. } | P::TransferInProgress | P::ConfChangePending => {
                        retry_later("etcdserver: request timed out")
                    }
                    P::InvalidConfChange(why) => ChangeRefusal {
                        retry: false,
                        code: tonic::Code::FailedPrecondition as i32,
                        message: format!("etcdserver: {why}"),
                    },
                };
                self.answer_change(origin, Err(r));
            }
        }
    }

    /// A promotion needs the learner in sync with the leader: the driver's rule
    /// (`node::learner_in_sync`: its acknowledged log at least 90% of the leader's, etcd's
    /// `isLearnerReady`), the same one its automatic promotion follows; etcd's text.
    fn learner_ready(&self, cc: &raft::ConfChange) -> Result<(), ChangeRefusal> {
        if cc.kind != raft::ConfChangeKind::AddVoter
            || !self
                .driver
                .core()
                .status()
                .conf_state
                .learners
                .contains(&cc.node)
        {
            return Ok(());
        }
        if !self.driver.learner_in_sync(cc.node) {
            return Err(ChangeRefusal {
                retry: false,
                code: tonic::Code::FailedPrecondition as i32,
                message:
                    "etcdserver: can only promote a learner member which is in sync with leader"
                        .into(),
            });
        }
        Ok(())
    }

    fn answer_change(&mut self, origin: ChangeOrigin, result: Result<(), ChangeRefusal>) {
        match origin {
            ChangeOrigin::Local(w) => {
                let _ = w.send(result);
            }
            ChangeOrigin::Remote { from, req_id } => self
                .transport
                .send(from, Frame::ChangeResult { req_id, result }),
        }
    }

    /// The transport follows the membership: a member being added is dialled as soon as
    /// the change is in our log (a leader needs it before the change can commit).
    fn dial_added_members(&self, entries: &[raft::Entry]) {
        for (id, urls) in members_added_in(entries) {
            self.transport.add_peer(id, &urls);
        }
    }

    /// An applied removal: the transport drops the member for good; our own removal stops
    /// this member shortly (etcd's words in the log).
    fn follow_removal(&mut self, entry: &raft::Entry) {
        let Ok(cc) = raft::ConfChange::decode(&entry.data) else {
            return;
        };
        if cc.kind != raft::ConfChangeKind::Remove {
            return;
        }
        if cc.node == self.id {
            if self.removed_at.is_none() {
                info!(index = entry.index, "applied the removal of this member");
                self.removed_at = Some(Instant::now());
            }
        } else {
            info!(
                member = format_args!("{:x}", cc.node),
                "removed member from the cluster"
            );
            self.transport.remove_peer(cc.node);
        }
    }

    /// The driver's lease duties, with this member's lease clock (as the last round's
    /// applies left it). The decisions it places go out with this round's proposals.
    fn lease_duties(&mut self) {
        let Some(clock) = &self.lease_clock else {
            return;
        };
        if !self.driver.lease_duties_due() {
            return;
        }
        let decided = {
            let lessor = clock.lessor();
            self.driver
                .lease_duties(&lessor, clock.now(), S::lease_entry)
        };
        for d in decided {
            match d {
                node::LeaseDecision::Expire { term, leases, .. } => {
                    info!(count = leases.len(), term, "revoking expired leases")
                }
                node::LeaseDecision::Checkpoint { term, leases } => {
                    debug!(count = leases.len(), term, "checkpointing lease times")
                }
            }
        }
    }

    /// Carry out one batch of effects, in the contract's order (docs/node-driver.md): a
    /// leader's batch marked `apply_first` applies and answers before its entry write.
    fn carry_out(&mut self, mut fx: Effects) -> anyhow::Result<()> {
        if let Some(ss) = fx.soft_state {
            self.on_soft_state(ss.leader, ss.role);
        }
        for p in &fx.promotions {
            info!(
                member = format_args!("{:x}", p.node),
                matched = p.matched,
                leader_last = p.leader_last,
                index = p.index,
                "promoting a member added as a voter: it caught up"
            );
        }
        if let Some(batch) = &fx.persist {
            self.dial_added_members(&batch.entries);
        }
        if !fx.messages.is_empty() {
            self.transport.send_raft(&fx.messages);
        }
        for (to, frame) in std::mem::take(&mut fx.frames) {
            let frame = match frame {
                PeerFrame::Forward { req_id, data } => Frame::Forward { req_id, data },
                PeerFrame::ForwardResult { req_id, result } => {
                    Frame::ForwardResult { req_id, result }
                }
            };
            self.transport.send(to, frame);
        }
        if fx.apply_first {
            if let Some(hs) = fx.persist.as_mut().and_then(|b| b.take_commit()) {
                self.storage
                    .save_commit(&hs)
                    .map_err(|e| anyhow::anyhow!("cannot persist the raft log: {e}"))?;
            }
            self.hand_over(&mut fx)?;
            self.persist(&fx)?;
        } else {
            self.persist(&fx)?;
            self.hand_over(&mut fx)?;
        }
        self.driver.advance();
        if fx.install_snapshot.is_some() {
            self.keep_installed_image_mapped();
        }
        if let Some(meta) = fx.start_snapshot {
            let mut job = Job::new();
            job.snapshot = Some((meta, self.storage.snapshot_writer()));
            self.stage.hand_over(job, None)?;
        }
        Ok(())
    }

    /// The batch's durable write, then the messages that wait for it.
    fn persist(&mut self, fx: &Effects) -> anyhow::Result<()> {
        if let Some(batch) = &fx.persist {
            let last = batch.entries.last().map_or(0, |e| e.index);
            if last > 0 {
                probe::mark(
                    if self.role == Role::Leader {
                        "placed"
                    } else {
                        "sent"
                    },
                    last,
                );
            }
            let persist_started = Instant::now();
            let saved = match (&batch.hard_state, batch.sync) {
                (Some(hs), false) => self.storage.save_commit(hs),
                _ => {
                    // A synced batch: the WAL write and its fdatasync (the write lands in
                    // the page cache, so the time is the fsync's).
                    let started = Instant::now();
                    let r = self.storage.save(
                        batch.hard_state.as_ref(),
                        &batch.entries,
                        batch.snapshot.as_ref(),
                    );
                    metrics().wal_fsync.observe(started.elapsed().as_secs_f64());
                    r
                }
            };
            saved.map_err(|e| anyhow::anyhow!("cannot persist the raft log: {e}"))?;
            self.round.persist += persist_started.elapsed();
            if last > 0 {
                probe::mark("saved", last);
                if !fx.persisted_messages.is_empty() {
                    probe::mark("ack_sent", last);
                }
            }
        }
        if !fx.persisted_messages.is_empty() {
            self.transport.send_raft(&fx.persisted_messages);
        }
        Ok(())
    }

    /// Hand the batch's state-machine work to the apply stage, in the contract's order
    /// (install, apply and answer, then release the reads), and answer at once what needs
    /// no apply: failures, and a read that is no longer waited for.
    fn hand_over(&mut self, fx: &mut Effects) -> anyhow::Result<()> {
        let mut job = Job::new();
        let mut last = None;
        if let Some(snap) = &fx.install_snapshot {
            last = Some(snap.meta.index);
            job.install = Some(snap.clone());
        }
        let apply = std::mem::take(&mut fx.apply);
        if let Some(item) = apply.last() {
            last = Some(item.entry.index);
        }
        job.items.reserve(apply.len());
        for item in apply {
            if item.entry.kind == raft::EntryKind::ConfChange {
                self.conf_in_stage = item.entry.index;
            }
            let responder = item.answers.and_then(|req| self.proposals.remove(&req));
            job.items.push((item, responder));
        }
        for r in std::mem::take(&mut fx.replies) {
            if matches!(r.outcome, Outcome::ReadReady) {
                if let Some(w) = self.reads.remove(&r.req) {
                    job.reads.push(w);
                    continue;
                }
            }
            self.answer(r.req, r.outcome);
        }
        if !job.is_empty() {
            self.stage.hand_over(job, last)?;
        }
        Ok(())
    }

    /// What an applied batch means for the node thread: promotion candidates, peer URLs,
    /// membership changes (answered now that they are applied) and removals.
    fn on_applied(&mut self, news: apply_stage::Applied) {
        if let Some(candidates) = news.candidates {
            self.driver.set_promotion_candidates(candidates);
        }
        for (id, urls) in news.peer_urls {
            self.transport.set_peer_urls(id, &urls);
        }
        if let Some(index) = news.removed_by_snapshot {
            if self.removed_at.is_none() {
                info!(index, "the snapshot says this member was removed");
                self.removed_at = Some(Instant::now());
            }
        }
        for (entry, answers) in news.changes {
            self.follow_removal(&entry);
            if let Some(origin) = answers.and_then(|req| self.changes.remove(&req)) {
                self.answer_change(origin, Ok(()));
            }
        }
    }

    fn answer(&mut self, req: RequestId, outcome: Outcome) {
        if let Some(origin) = self.changes.remove(&req) {
            let e = match outcome {
                Outcome::Failed(e) => server_error(e),
                Outcome::ReadReady => ServerError::LeaderChanged,
            };
            return self.answer_change(origin, Err(e.into()));
        }
        match outcome {
            Outcome::ReadReady => {
                if let Some(w) = self.reads.remove(&req) {
                    let _ = w.send(Ok(()));
                }
            }
            Outcome::Failed(e) => {
                let e = server_error(e);
                if let Some(r) = self.proposals.remove(&req) {
                    metrics().proposals_failed.inc();
                    let _ = r.send(Err(e));
                } else if let Some(w) = self.reads.remove(&req) {
                    let _ = w.send(Err(e));
                }
            }
        }
    }

    fn on_soft_state(&mut self, leader: Option<u64>, role: Role) {
        let term = self.driver.core().status().hard_state.term;
        if leader != self.leader {
            if leader.is_some() {
                metrics().leader_changes.inc();
            }
            match leader {
                Some(l) => info!(
                    leader = format_args!("{l:x}"),
                    term,
                    "leader elected{}",
                    if l == self.driver.status().core.id {
                        " (this member)"
                    } else {
                        ""
                    }
                ),
                None => info!(term, "leader lost"),
            }
        }
        if role != self.role {
            info!(from = ?self.role, to = ?role, term, "role changed");
        }
        if leader != self.leader {
            // Changes sent to the previous leader may or may not have been made: say so
            // now rather than at the timeout (as for forwarded writes).
            for (_, w) in self.remote_changes.drain() {
                let _ = w.send(Err(ServerError::LeaderChanged.into()));
            }
        }
        self.leader = leader;
        self.role = role;
    }

    /// A snapshot received from the leader is durable and installed: let the core keep it
    /// as the file's pages rather than the heap copy it arrived as (that copy is freed once
    /// this batch's effects are dropped). Where nothing can be mapped, the copy stays.
    fn keep_installed_image_mapped(&mut self) {
        match self.storage.map_snapshot() {
            Ok(Some(mapped)) => {
                let index = mapped.meta.index;
                if !self.driver.keep_snapshot_image(mapped) {
                    debug!(index, "installed snapshot superseded before it was mapped");
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot map the installed snapshot; keeping its copy"),
        }
    }

    fn publish(&mut self) {
        let st = self.driver.status();
        let s = &self.shared;
        s.last_index.store(st.core.last_index, Ordering::Relaxed);
        s.learner.store(
            st.core.conf_state.learners.contains(&self.id),
            Ordering::Relaxed,
        );
        if self.progress_published.elapsed() >= PROGRESS_PUBLISH {
            self.progress_published = Instant::now();
            let progress = self.driver.core().progress();
            if let Ok(mut shared) = s.progress.lock() {
                *shared = progress;
            }
        }
        s.leader
            .store(st.core.leader.unwrap_or(0), Ordering::Relaxed);
        s.term.store(st.core.hard_state.term, Ordering::Relaxed);
        s.commit.store(st.core.hard_state.commit, Ordering::Relaxed);
        let role = match st.core.role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        s.role.store(role, Ordering::Relaxed);
        if let Ok(mut at) = s.leading_at.lock() {
            *at = (st.core.role == Role::Leader).then(Instant::now);
        }
        metrics().proposals_pending.set(self.proposals.len() as i64);
    }

    fn on_snapshot_written(
        &mut self,
        r: Result<(storage::WrittenSnapshot, Snapshot), String>,
    ) -> anyhow::Result<()> {
        let (written, snap) = match r {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "snapshot failed; will retry later");
                self.driver.snapshot_written(Err(()));
                for w in self.compact_waiters.drain(..) {
                    let _ = w.send(Err(format!("etcdserver: cannot compact storage: {e}")));
                }
                return Ok(());
            }
        };
        let index = snap.meta.index;
        if !self.driver.snapshot_written(Ok(snap)) {
            info!(
                index,
                "snapshot superseded by a newer one; log not compacted to it"
            );
            // A newer snapshot (from the leader) covers at least as much: storage is as
            // compact as the caller asked.
            for w in self.compact_waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            return Ok(());
        }
        self.storage
            .compact_to(&written)
            .map_err(|e| anyhow::anyhow!("cannot compact the log: {e}"))?;
        info!(index, file = %written.path.display(), "snapshot saved and log compacted");
        for w in self.compact_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        Ok(())
    }
}

/// etcd's last words for a member removed from the cluster.
fn removed_for_good() {
    error!("{}", crate::transport::REMOVED);
    info!("the data-dir used by this member must be removed.");
}

fn server_error(e: NodeError) -> ServerError {
    match e {
        NodeError::NoLeader => ServerError::NoLeader,
        NodeError::LeaderChanged => ServerError::LeaderChanged,
        NodeError::Timeout => ServerError::Timeout,
        NodeError::TooManyRequests => ServerError::TooManyRequests,
    }
}

/// The members (id, peer URLs) that the membership changes among `entries` add. The node
/// thread dials them as such entries are appended; at start-up the server dials those of the
/// entries recovered from the data dir, which are appended no more.
pub fn members_added_in(entries: &[raft::Entry]) -> Vec<(u64, Vec<String>)> {
    use prost::Message as _;
    entries
        .iter()
        .filter(|e| e.kind == raft::EntryKind::ConfChange)
        .filter_map(|e| raft::ConfChange::decode(&e.data).ok())
        .filter(|cc| cc.kind != raft::ConfChangeKind::Remove && !cc.context.is_empty())
        .filter_map(|cc| {
            proto::etcdserverpb::Member::decode(cc.context.as_ref())
                .ok()
                .map(|m| (cc.node, m.peer_ur_ls))
        })
        .collect()
}
