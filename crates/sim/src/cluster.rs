//! The simulated cluster: N members of the real core on a virtual-time network, with the
//! simulator playing the node runtime exactly as the Ready contract prescribes.
//!
//! Virtual time advances in units; every `UNITS_PER_TICK` units each live member gets one
//! `tick()`. Messages are delivered when their (seeded, random) delay has elapsed. After
//! every input to a member (a tick, a delivered message, a client call) the simulator drains
//! its Ready bundles and then runs every invariant checker on it. One ChaCha RNG, seeded from
//! the run seed, decides every random choice, so a seed replays bit for bit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use node::{Driver, DriverConfig, NodeError, RequestId};
use raft::{
    Config, Index, NodeId, ProposeError, Proposed, RaftNode, ReadState, Role, Snapshot, SoftState,
    Status, Term,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::apply_stage::{ApplyStage, ApplyStageConfig};
use crate::checkers::{Checkers, Violation};
use crate::network::{NetConfig, NetStats, Network, Packet};
use crate::runtime::describe;
use crate::state_machine::{AppliedRecord, StateMachine};
use crate::store::DurableStore;

/// Virtual time units per core tick. Network delays are counted in units, so a message
/// normally takes a fraction of a tick.
pub const UNITS_PER_TICK: u64 = 10;

/// Where, inside the processing of one Ready, an armed crash strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The early messages left, nothing was written.
    BeforePersist,
    /// The write is durable, but the messages that depend on it never left.
    AfterPersist,
    /// Everything was sent, but nothing was applied and `advance` never happened.
    BeforeApply,
}

/// Deliberate runtime bugs, to prove the checkers catch what they claim to: a sweep with a
/// sabotaged runtime must fail. Never set outside such tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// The "fsync" lies: a crash loses the last write although its acknowledgements left.
    LoseLastWriteOnCrash,
    /// A restart forgets whom the member voted for in its current term.
    ForgetVoteOnRestart,
    /// A write the durability rule says to fsync is not: new entries stay volatile until
    /// the next write of a term or vote, and a crash before then loses them.
    SkipRequiredSync,
    /// A follower answers a forwarded write as soon as the leader says where it landed,
    /// before it is committed.
    AckForwardedWriteEarly,
    /// The core lets a leader propose a membership change while an earlier one is
    /// uncommitted, or before it committed an entry of its term
    /// (`raft::Config::unsafe_concurrent_conf_changes`).
    ConcurrentConfChanges,
    /// The driver promotes learners added as voters without checking that they are in
    /// sync (`node::DriverConfig::unsafe_promote_unsynced`).
    PromoteUnsyncedLearners,
    /// Every member's driver, followers included, expires leases at once on its own clock,
    /// without a read barrier (`node::LeaseConfig::unsafe_expire_without_barrier`).
    LeaseExpiryWithoutBarrier,
    /// The lease clocks ignore checkpoints and a restored lease starts with its full TTL
    /// (etcd's default, without checkpointing): a restart hands out fresh TTLs.
    LessorIgnoresCheckpoints,
    /// A member that answers a renewal late still promises the full TTL from its answer
    /// (raftkv before issue 14's fix: the answer ignored how long ago the member took the
    /// call, while every leader's clock counts from its own, earlier, apply).
    LeaseAckIgnoresLag,
    /// The apply stage releases a linearizable read when it is handed over, not after the
    /// applies queued before it: the read may miss entries the driver counts applied.
    ReleaseReadsAtHandOver,
    /// The apply stage runs the newest due job first instead of the oldest.
    StageJobsOutOfOrder,
}

/// The outcome of a client call made through a member's driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// The write was applied as the entry at this index.
    Written(Index),
    /// The read was served from a state machine at this applied index.
    Read(Index),
    Failed(NodeError),
    /// The member crashed before answering: the outcome is unknown.
    Lost,
}

/// A client call a member has not answered yet.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) node: NodeId,
    /// The payload of a write; `None` for a read.
    pub(crate) write: Option<Bytes>,
    /// For a read: the least index it must reflect.
    pub(crate) floor: Index,
    /// When the member took the call (virtual units).
    pub(crate) since: u64,
}

/// An input that reached a stalled member, handled when the stall ends.
#[derive(Clone, Debug)]
pub(crate) enum Queued {
    Packet(Packet),
    Propose(RequestId, Bytes),
    Read(RequestId),
}

/// A snapshot being written in the background.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotInProgress {
    pub(crate) incarnation: u32,
    pub(crate) due: u64,
    pub(crate) snapshot: Snapshot,
}

/// Everything that shapes one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub election_tick: u32,
    /// Width of the election-timeout range (`raft::Config::election_jitter_tick`).
    pub election_jitter_tick: Option<u32>,
    pub heartbeat_tick: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_size_per_msg: usize,
    pub max_inflight_msgs: usize,
    /// Apply-side snapshot (then `compact`) whenever this many entries were applied since
    /// the last snapshot. `None`: never compact.
    pub compact_every: Option<u64>,
    pub net: NetConfig,
    /// Keep the full event trace (for replays and the determinism test).
    pub trace: bool,
    /// The command that replays this run; printed with every failure.
    pub replay: String,
    /// Panic (with seed and replay command) on the first violation. Scenario tests want this;
    /// the seed sweep collects violations instead.
    pub panic_on_violation: bool,
    /// A deliberately broken runtime (checker self-tests only).
    pub sabotage: Option<Sabotage>,
    /// Most ticks a member counts at once after a stall (the server's: one heartbeat).
    pub max_catch_up_ticks: u32,
    /// A client call unanswered for this many ticks is answered with a timeout.
    pub request_timeout_ticks: u64,
    /// Give each member its own tick phase (a seeded offset of 0 to `UNITS_PER_TICK - 1`
    /// units), as real members, each ticking on its own clock, have. Off, every member ticks
    /// at the same instant, so two members that draw the same timeout campaign at exactly
    /// the same moment: a worst case for split votes.
    pub staggered_ticks: bool,
    /// Membership in the log: `Some(m)` bootstraps members `1..=m` with `raft::bootstrap_log`
    /// and starts the others (`m+1..=nodes`) as spares with empty disks, outside the
    /// configuration until a change adds them. `None`: every member is a voter from the
    /// start, given by the initial state (the configuration before membership changes).
    pub initial_members: Option<usize>,
    /// The leaders' lease duties, at the simulator's scale (`sim_lease_config`).
    pub lease: node::LeaseConfig,
    /// Apply on a stage of its own, as the server does (`apply_stage`): each batch's
    /// state-machine work runs later, in order, behind the node thread. `None`: apply as
    /// the driver hands out, before `advance` (the contract as the driver defines it).
    pub apply_stage: Option<ApplyStageConfig>,
}

/// The lease duties at the simulator's time scale (a tick is 10 ms, elections take tens
/// of ticks): scan every 2 ticks, look for checkpoints every 5, checkpoint a lease whose
/// remaining time was recorded 20 ticks ago, expire a lease 5 ticks after its deadline
/// (the server: 500 ms, half its default election timeout). Same rules as the server's,
/// faster cadence.
pub fn sim_lease_config() -> node::LeaseConfig {
    node::LeaseConfig {
        scan_interval: time(2 * UNITS_PER_TICK),
        checkpoint_scan: time(5 * UNITS_PER_TICK),
        checkpoint_interval: time(20 * UNITS_PER_TICK),
        expiry_grace: time(5 * UNITS_PER_TICK),
        ..node::LeaseConfig::default()
    }
}

impl SimConfig {
    /// A reliable network, default core tunables, no compaction.
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        let defaults = Config::new(1);
        SimConfig {
            seed,
            nodes,
            election_tick: defaults.election_tick,
            election_jitter_tick: defaults.election_jitter_tick,
            heartbeat_tick: defaults.heartbeat_tick,
            pre_vote: defaults.pre_vote,
            check_quorum: defaults.check_quorum,
            max_size_per_msg: defaults.max_size_per_msg,
            max_inflight_msgs: defaults.max_inflight_msgs,
            compact_every: None,
            net: NetConfig::reliable(),
            trace: std::env::var_os("RAFTKV_SIM_TRACE").is_some(),
            replay: format!("RAFTKV_SIM_SEED={seed} cargo test -p raftkv-sim --release"),
            panic_on_violation: true,
            sabotage: None,
            staggered_ticks: false,
            initial_members: None,
            lease: sim_lease_config(),
            apply_stage: None,
            max_catch_up_ticks: defaults.heartbeat_tick,
            request_timeout_ticks: 8 * defaults.election_tick as u64,
        }
    }
}

/// Virtual time as the drivers see it: one unit is one millisecond.
pub(crate) fn time(units: u64) -> Duration {
    Duration::from_millis(units)
}

/// Counters of what happened during a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub crashes: u64,
    pub restarts: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub readies: u64,
    /// Leader batches carried out with `apply_first`: applied and answered before their
    /// entry write.
    pub applied_first: u64,
    /// Restarts that recovered a commit index below what the member had applied before it
    /// crashed (its last commit index was written without an fsync and lost).
    pub restarts_below_applied: u64,
    pub stalls: u64,
    /// Membership changes a leader accepted (through its core or its driver).
    pub conf_changes: u64,
    /// Distinct members whose removal some member applied.
    pub removals_applied: u64,
    /// Promotions of learners added as voters that leaders' drivers proposed on their own,
    /// and distinct learners whose such promotion some member applied.
    pub auto_promotions: u64,
    pub auto_promotions_applied: u64,
    /// Lease grants and renewing keep-alives acknowledged to clients.
    pub lease_grants: u64,
    pub lease_keepalives: u64,
    /// Of the keep-alives, those acknowledged from an entry of several (`KeepAlives`).
    pub lease_keepalives_batched: u64,
    /// Of those, acknowledgements that promised less than the TTL (answered after more
    /// than the expiry grace; `node::promised_ttl`).
    pub lease_acks_shortened: u64,
    /// Leases revoked by an expiry that took effect, and leases an applied expiry named
    /// that the apply-side guard refused (another term, or renewed since).
    pub leases_expired: u64,
    pub lease_expiries_refused: u64,
    /// Lease checkpoints recorded.
    pub lease_checkpoints: u64,
    /// Apply-stage jobs run, reads they released, jobs a crash dropped; the most entries
    /// and jobs one member's stage held at once.
    pub stage_jobs: u64,
    pub stage_reads_released: u64,
    pub stage_jobs_dropped: u64,
    pub stage_max_lag: u64,
    pub stage_max_jobs: u64,
    /// Lease expiries decided while the deciding member's stage had not yet applied the
    /// barrier's index (its lease clock lagged what the driver counts applied).
    pub lease_decisions_ahead_of_stage: u64,
    /// Client calls refused with *too many requests* (the backpressure rule).
    pub too_many_requests: u64,
}

/// One member: its driver and core (absent while crashed), its disk and its state machine.
pub struct SimNode {
    pub(crate) id: NodeId,
    pub(crate) driver: Option<Driver>,
    pub(crate) store: DurableStore,
    pub(crate) sm: StateMachine,
    pub(crate) incarnation: u32,
    pub(crate) crash_at: Option<CrashPoint>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) soft: Option<SoftState>,
    /// Highest durable commit index already copied into the committed ledger.
    pub(crate) ledger_mark: Index,
    /// The disk before the last write (kept only under `Sabotage::LoseLastWriteOnCrash`
    /// and `Sabotage::SkipRequiredSync`).
    pub(crate) before_last_write: Option<DurableStore>,
    /// The peers the driver was told it is connected to.
    pub(crate) links: BTreeSet<NodeId>,
    /// While stalled: until when, and the inputs that arrived meanwhile (with their time).
    pub(crate) stalled_until: Option<u64>,
    pub(crate) stall_queue: Vec<(u64, Queued)>,
    /// The highest index this member applied in any incarnation.
    pub(crate) max_applied: Index,
    /// This incarnation's lease clock, fed by its applies at virtual time.
    pub(crate) lessor: node::Lessor,
    /// The apply stage's jobs not yet run (volatile; empty without a stage).
    pub(crate) stage: ApplyStage,
    /// The highest index this incarnation handed out to apply (what the driver counts
    /// applied); without a stage, also what the state machine applied.
    pub(crate) handed_over: Index,
}

pub struct Cluster {
    pub(crate) config: SimConfig,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: u64,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) voters: Vec<NodeId>,
    pub(crate) net: Network,
    pub(crate) checks: Checkers,
    pub(crate) trace: Option<Vec<String>>,
    pub(crate) violation: Option<Violation>,
    pub(crate) payload_index: HashMap<Bytes, Index>,
    pub(crate) stats: ClusterStats,
    /// Per member (by index): the unit offset of its ticks (all 0 unless `staggered_ticks`).
    pub(crate) tick_phase: Vec<u64>,
    /// Client calls not answered yet, and the answers not yet collected.
    pub(crate) calls: BTreeMap<RequestId, Call>,
    pub(crate) results: BTreeMap<RequestId, CallResult>,
    pub(crate) next_request: RequestId,
    pub(crate) snapshots_in_progress: BTreeMap<usize, SnapshotInProgress>,
    /// Under `Sabotage::AckForwardedWriteEarly`: the payload of each forward, by sender
    /// and forward id.
    pub(crate) forwarded_payloads: HashMap<(NodeId, u64), Bytes>,
    /// Members whose removal some member has applied (so it is committed). The network drops
    /// their Raft messages, as the server's transport refuses removed members.
    pub(crate) removed: BTreeSet<NodeId>,
    /// The entries (index, term) of the promotions drivers proposed, and the learner each
    /// promotes: an applied one counts in `ClusterStats::auto_promotions_applied`.
    pub(crate) promotion_entries: BTreeMap<(Index, Term), NodeId>,
    /// Learners whose automatic promotion some member applied.
    pub(crate) auto_promoted: BTreeSet<NodeId>,
    /// Numbers that make lease payloads unique: client calls, and driver decisions.
    pub(crate) lease_nonce: u64,
    pub(crate) lease_seq: u64,
    /// Leases whose revocation (by a client or an expiry) took effect.
    pub(crate) leases_gone: BTreeSet<i64>,
}

macro_rules! trace {
    ($c:expr, $($arg:tt)*) => {
        if let Some(t) = $c.trace.as_mut() {
            t.push(format!("{:>7} {}", $c.now, format_args!($($arg)*)));
        }
    };
}
pub(crate) use trace;

impl Cluster {
    pub fn new(config: SimConfig) -> Cluster {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Cluster::with_rng(config, rng)
    }

    /// A cluster that continues drawing from `rng` (already seeded from `config.seed`), so a
    /// caller that drew its own choices first still has one RNG drive the whole run.
    pub fn with_rng(config: SimConfig, rng: ChaCha8Rng) -> Cluster {
        let voters: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let net = Network::new(config.net.clone());
        let mut cluster = Cluster {
            trace: config.trace.then(Vec::new),
            config,
            rng,
            now: 0,
            nodes: Vec::new(),
            voters,
            net,
            checks: Checkers::default(),
            violation: None,
            payload_index: HashMap::new(),
            stats: ClusterStats::default(),
            tick_phase: Vec::new(),
            calls: BTreeMap::new(),
            results: BTreeMap::new(),
            next_request: 1,
            snapshots_in_progress: BTreeMap::new(),
            forwarded_payloads: HashMap::new(),
            removed: BTreeSet::new(),
            promotion_entries: BTreeMap::new(),
            auto_promoted: BTreeSet::new(),
            lease_nonce: 0,
            lease_seq: 0,
            leases_gone: BTreeSet::new(),
        };
        // Drawn only when asked for, so runs without it keep their RNG sequence.
        cluster.tick_phase = (0..cluster.voters.len())
            .map(|_| {
                if cluster.config.staggered_ticks {
                    cluster.rng.gen_range(0..UNITS_PER_TICK)
                } else {
                    0
                }
            })
            .collect();
        trace!(cluster, "config {:?}", cluster.config);
        for &id in &cluster.voters.clone() {
            cluster.nodes.push(SimNode {
                id,
                driver: None,
                store: DurableStore::default(),
                sm: StateMachine::default(),
                incarnation: 0,
                crash_at: None,
                read_states: Vec::new(),
                soft: None,
                ledger_mark: 0,
                before_last_write: None,
                links: BTreeSet::new(),
                stalled_until: None,
                stall_queue: Vec::new(),
                max_applied: 0,
                lessor: node::Lessor::new(),
                stage: ApplyStage::default(),
                handed_over: 0,
            });
            if let Some(m) = cluster.config.initial_members {
                if id as usize <= m {
                    let initial: Vec<NodeId> = (1..=m as NodeId).collect();
                    let (hard_state, entries) = raft::bootstrap_log(&initial);
                    let store = &mut cluster.nodes[(id - 1) as usize].store;
                    store.append(&entries).expect("empty store");
                    store.set_hard_state(hard_state);
                }
            }
            cluster.boot(id);
        }
        cluster
    }

    // ----- time -------------------------------------------------------------------------

    /// Advances virtual time by one unit: each member's driver sees the new time (and
    /// ticks its core when a tick is due), stalls that end are worked off, background
    /// snapshots that are due complete, then every message that is due is delivered.
    pub fn step_unit(&mut self) {
        self.now += 1;
        for idx in 0..self.nodes.len() {
            if self.nodes[idx].driver.is_none() {
                continue;
            }
            if let Some(until) = self.nodes[idx].stalled_until {
                if self.now < until {
                    continue;
                }
                self.end_stall(idx);
                continue;
            }
            let t = self.local_time(idx, self.now);
            let driver = self.nodes[idx].driver.as_mut().expect("alive");
            let due = driver.next_tick_due();
            driver.tick(t);
            if driver.next_tick_due() != due {
                self.lease_duties(idx);
                self.after_input(idx);
            }
        }
        self.run_stages();
        self.complete_snapshots();
        while let Some(packet) = self.net.pop_due(self.now) {
            let Some(idx) = self.index_of(packet.to()) else {
                continue;
            };
            if self.nodes[idx].driver.is_none() {
                continue;
            }
            if self.nodes[idx].stalled_until.is_some() {
                let now = self.now;
                self.nodes[idx]
                    .stall_queue
                    .push((now, Queued::Packet(packet)));
                continue;
            }
            self.deliver(idx, packet);
            self.after_input(idx);
        }
    }

    /// A member's own clock: virtual time shifted by its tick phase.
    pub(crate) fn local_time(&self, idx: usize, units: u64) -> Duration {
        time(units + self.tick_phase[idx])
    }

    fn deliver(&mut self, idx: usize, packet: Packet) {
        match packet {
            Packet::Raft(msg) if self.removed.contains(&msg.from) => {
                trace!(self, "refuse from removed member {}", describe(&msg));
            }
            Packet::Raft(msg) => {
                trace!(self, "deliver {}", describe(&msg));
                let driver = self.nodes[idx].driver.as_mut().expect("checked alive");
                if let Err(e) = driver.step(msg.clone()) {
                    self.violate(
                        "ready-contract",
                        format!(
                            "node {} refused a well-formed message {msg:?}: {e:?}",
                            idx + 1
                        ),
                    );
                }
            }
            Packet::Frame { from, to, frame } => {
                trace!(self, "deliver frame {from}->{to} {frame:?}");
                if self.config.sabotage == Some(Sabotage::AckForwardedWriteEarly) {
                    self.ack_forwarded_early(idx, &frame);
                }
                let driver = self.nodes[idx].driver.as_mut().expect("checked alive");
                driver.step_frame(from, frame);
            }
        }
    }

    /// Stalls member `id` for `units` of virtual time: it neither ticks nor handles
    /// anything; what reaches it waits, stamped with its arrival time, like the input
    /// queue of a member whose loop is stuck in a slow fsync.
    pub fn stall(&mut self, id: NodeId, units: u64) {
        let Some(idx) = self.alive_index(id) else {
            return;
        };
        if self.nodes[idx].stalled_until.is_some() {
            return;
        }
        trace!(self, "stall node {id} for {units} units");
        self.stats.stalls += 1;
        self.nodes[idx].stalled_until = Some(self.now + units.max(1));
    }

    /// End every stall now (the liveness phase: every fault is over). What queued up is
    /// handed over as when a stall ends by itself.
    pub fn end_stalls(&mut self) {
        for idx in 0..self.nodes.len() {
            if self.nodes[idx].driver.is_some() && self.nodes[idx].stalled_until.is_some() {
                self.end_stall(idx);
            }
        }
    }

    /// The stall is over: hand over what arrived, each after ticking to its arrival time.
    fn end_stall(&mut self, idx: usize) {
        self.nodes[idx].stalled_until = None;
        let queued = std::mem::take(&mut self.nodes[idx].stall_queue);
        trace!(
            self,
            "node {} resumes with {} queued inputs",
            idx + 1,
            queued.len()
        );
        for (at, input) in queued {
            let t = self.local_time(idx, at);
            let Some(driver) = self.nodes[idx].driver.as_mut() else {
                return;
            };
            driver.tick(t);
            match input {
                Queued::Packet(p) => self.deliver(idx, p),
                Queued::Propose(req, data) => {
                    let driver = self.nodes[idx].driver.as_mut().expect("alive");
                    driver.propose(req, data);
                }
                Queued::Read(req) => {
                    let driver = self.nodes[idx].driver.as_mut().expect("alive");
                    driver.read(req);
                }
            }
        }
        let t = self.local_time(idx, self.now);
        if let Some(driver) = self.nodes[idx].driver.as_mut() {
            driver.tick(t);
        }
        self.after_input(idx);
    }

    /// Runs for `ticks` ticks (stops early only on a violation when not panicking).
    pub fn run_ticks(&mut self, ticks: u64) {
        for _ in 0..ticks * UNITS_PER_TICK {
            self.step_unit();
            if self.violation.is_some() {
                return;
            }
        }
    }

    /// Runs until `done` holds (checked after every unit) or `max_ticks` pass. Returns
    /// whether it held.
    pub fn run_until(&mut self, max_ticks: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        if done(self) {
            return true;
        }
        for _ in 0..max_ticks * UNITS_PER_TICK {
            self.step_unit();
            if self.violation.is_some() {
                return false;
            }
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Virtual time in whole ticks.
    pub fn now_ticks(&self) -> u64 {
        self.now / UNITS_PER_TICK
    }

    /// Virtual time in units (`UNITS_PER_TICK` to a tick), for measuring durations finer
    /// than a tick.
    pub fn now_units(&self) -> u64 {
        self.now
    }

    // ----- faults -----------------------------------------------------------------------

    /// Crashes `id` now: its driver, core and state machine vanish, its disk keeps only
    /// what was durable, and messages on their way to it are lost. Its unanswered client
    /// calls end with an unknown outcome.
    pub fn crash(&mut self, id: NodeId) {
        let Some(idx) = self.index_of(id) else { return };
        if self.nodes[idx].driver.is_none() {
            return;
        }
        trace!(self, "crash node {id}");
        let node = &mut self.nodes[idx];
        if let Some(older) = node.before_last_write.take() {
            node.store = older;
        }
        if node.store.lose_unsynced() {
            trace!(self, "node {id} loses its unsynced commit index");
        }
        let node = &mut self.nodes[idx];
        node.max_applied = node.max_applied.max(node.sm.applied_index());
        node.driver = None;
        node.sm = StateMachine::default();
        node.lessor = node::Lessor::new();
        node.crash_at = None;
        node.read_states.clear();
        node.soft = None;
        node.links.clear();
        node.stalled_until = None;
        node.stall_queue.clear();
        // The stage's work was volatile: a restart re-applies from the durable state.
        let dropped = std::mem::take(&mut node.stage).len() as u64;
        self.stats.stage_jobs_dropped += dropped;
        self.snapshots_in_progress.remove(&idx);
        let lost: Vec<RequestId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.node == id)
            .map(|(r, _)| *r)
            .collect();
        for req in lost {
            self.calls.remove(&req);
            self.results.insert(req, CallResult::Lost);
        }
        self.net.drop_addressed_to(id);
        self.stats.crashes += 1;
        self.refresh_links();
    }

    /// Arms a crash that strikes `id` at `point` while it processes its next Ready.
    pub fn crash_at_next_ready(&mut self, id: NodeId, point: CrashPoint) {
        if let Some(idx) = self.index_of(id) {
            if self.nodes[idx].driver.is_some() {
                trace!(self, "arm crash of node {id} at {point:?}");
                self.nodes[idx].crash_at = Some(point);
            }
        }
    }

    /// Cancels every armed crash (the liveness phase heals everything).
    pub fn disarm_crashes(&mut self) {
        for node in &mut self.nodes {
            node.crash_at = None;
        }
    }

    /// Restarts a crashed member from its disk alone.
    pub fn restart(&mut self, id: NodeId) {
        let Some(idx) = self.index_of(id) else { return };
        if self.nodes[idx].driver.is_some() {
            return;
        }
        self.nodes[idx].incarnation += 1;
        self.stats.restarts += 1;
        trace!(self, "restart node {id}");
        self.boot(id);
    }

    fn boot(&mut self, id: NodeId) {
        let idx = (id - 1) as usize;
        if self.config.sabotage == Some(Sabotage::ForgetVoteOnRestart) {
            let mut hs = self.nodes[idx].store.hard_state();
            hs.vote = None;
            self.nodes[idx].store.set_hard_state(hs);
        }
        let bootstrap = match self.config.initial_members {
            Some(_) => Vec::new(),
            None => self.voters.clone(),
        };
        let initial = self.nodes[idx].store.initial_state(&bootstrap);
        let records = match self.nodes[idx].store.snapshot() {
            Some(s) => match StateMachine::decode(&s.data) {
                Ok(r) => r,
                Err(e) => {
                    self.violate("ready-contract", format!("node {id}: own snapshot: {e}"));
                    return;
                }
            },
            None => Vec::new(),
        };
        self.nodes[idx].sm.restore(records);
        self.reset_lessor(idx);
        let (commit, applied) = (initial.hard_state.commit, initial.applied);
        self.nodes[idx].handed_over = applied;
        let r = crate::checkers::recovery::check_restart(id, commit, applied);
        if !self.check(r) {
            return;
        }
        if commit < self.nodes[idx].max_applied {
            self.stats.restarts_below_applied += 1;
        }
        let applied_term = self.nodes[idx].store.snapshot_term();
        let config = self.raft_config(id);
        let driver_config = self.driver_config();
        match RaftNode::new(config, initial) {
            Ok(mut raft) => {
                // The contract: after a restart from a snapshot, hand it to `compact` so this
                // member can ship it to followers that need compacted entries.
                if let Some(snapshot) = self.nodes[idx].store.snapshot() {
                    if let Err(e) = raft.compact(snapshot.clone()) {
                        self.violate(
                            "ready-contract",
                            format!("node {id} refused its own recovered snapshot: {e:?}"),
                        );
                        return;
                    }
                }
                // Start the clock on a tick boundary of the member's own phase, so members
                // without staggered ticks tick at the same instants.
                let aligned = (self.now + self.tick_phase[idx]) / UNITS_PER_TICK * UNITS_PER_TICK;
                let mut driver =
                    Driver::new(raft, driver_config, (applied, applied_term), time(aligned));
                driver.set_promotion_candidates(self.nodes[idx].sm.promotion_candidates());
                self.nodes[idx].driver = Some(driver);
                self.refresh_links();
                self.after_input(idx);
            }
            Err(e) => self.violate(
                "ready-contract",
                format!("node {id} cannot restart from its own disk: {e:?}"),
            ),
        }
    }

    fn driver_config(&mut self) -> DriverConfig {
        let tick = time(UNITS_PER_TICK);
        DriverConfig {
            tick_interval: tick,
            max_catch_up_ticks: self.config.max_catch_up_ticks,
            election_timeout: tick * self.config.election_tick,
            request_timeout: tick * self.config.request_timeout_ticks as u32,
            snapshot_count: self.config.compact_every.map_or(0, |n| n.max(1)),
            // The count alone: `compact_every` already varies when snapshots happen, and
            // the simulator's images are far below the server's floor anyway.
            snapshot_size_floor: u64::MAX,
            max_apply_gap: self
                .config
                .apply_stage
                .map_or(node::MAX_APPLY_GAP, |s| s.max_apply_gap),
            forward_id_base: self.rng.gen(),
            // Every tick (the server: every heartbeat interval, 100 ms).
            promote_check_interval: tick,
            unsafe_promote_unsynced: self.config.sabotage
                == Some(Sabotage::PromoteUnsyncedLearners),
            lease: node::LeaseConfig {
                unsafe_expire_without_barrier: self.config.sabotage
                    == Some(Sabotage::LeaseExpiryWithoutBarrier),
                ..self.config.lease.clone()
            },
        }
    }

    /// Tells every live member's driver which peers it can reach now (a live member over
    /// a link that is up), as the transport reports connections coming and going.
    pub(crate) fn refresh_links(&mut self) {
        for idx in 0..self.nodes.len() {
            if self.nodes[idx].driver.is_none() {
                continue;
            }
            let a = idx as NodeId + 1;
            for b in self.voters.clone() {
                if b == a {
                    continue;
                }
                let up = self.alive_index(b).is_some() && self.net.link_up(a, b);
                let node = &mut self.nodes[idx];
                let driver = node.driver.as_mut().expect("alive");
                if up && node.links.insert(b) {
                    driver.peer_connected(b);
                } else if !up && node.links.remove(&b) {
                    driver.peer_lost(b);
                }
            }
        }
    }

    fn raft_config(&mut self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.election_tick = self.config.election_tick;
        c.election_jitter_tick = self.config.election_jitter_tick;
        c.heartbeat_tick = self.config.heartbeat_tick;
        c.pre_vote = self.config.pre_vote;
        c.check_quorum = self.config.check_quorum;
        c.max_size_per_msg = self.config.max_size_per_msg;
        c.max_inflight_msgs = self.config.max_inflight_msgs;
        c.seed = self.rng.gen();
        c.unsafe_concurrent_conf_changes =
            self.config.sabotage == Some(Sabotage::ConcurrentConfChanges);
        c
    }

    /// Cuts `id` off from everyone (both directions), like the MIT tester's disconnect.
    pub fn disconnect(&mut self, id: NodeId) {
        trace!(self, "disconnect node {id}");
        self.net.isolate(id);
        self.refresh_links();
    }

    pub fn connect(&mut self, id: NodeId) {
        trace!(self, "connect node {id}");
        self.net.rejoin(id);
        self.refresh_links();
    }

    pub fn is_connected(&self, id: NodeId) -> bool {
        !self.net.is_isolated(id)
    }

    /// Splits the members into groups that only talk within themselves. Members in no
    /// group are alone.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        trace!(self, "partition {groups:?}");
        let group_of = |id: NodeId| groups.iter().position(|g| g.contains(&id));
        for &a in &self.voters {
            for &b in &self.voters {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.net.block(a, b);
                }
            }
        }
        self.refresh_links();
    }

    /// Cuts the one-way link `from → to`.
    pub fn block_link(&mut self, from: NodeId, to: NodeId) {
        trace!(self, "block {from} -> {to}");
        self.net.block(from, to);
        self.refresh_links();
    }

    /// `left` and `right` cannot talk to each other; `bridge` talks to both.
    pub fn bridge(&mut self, left: &[NodeId], bridge: NodeId, right: &[NodeId]) {
        trace!(self, "bridge {left:?} <-> {bridge} <-> {right:?}");
        for &a in left {
            for &b in right {
                self.net.block(a, b);
                self.net.block(b, a);
            }
        }
        self.refresh_links();
    }

    /// Removes all partitions (not loss or delay).
    pub fn heal(&mut self) {
        trace!(self, "heal partitions");
        self.net.heal();
        self.refresh_links();
    }

    pub fn set_net(&mut self, config: NetConfig) {
        trace!(self, "network {config:?}");
        self.net.config = config;
    }

    // ----- client calls -----------------------------------------------------------------

    pub(crate) fn core(&self, idx: usize) -> &RaftNode {
        self.nodes[idx].driver.as_ref().expect("alive").core()
    }

    pub(crate) fn core_mut(&mut self, idx: usize) -> &mut RaftNode {
        self.nodes[idx].driver.as_mut().expect("alive").core_mut()
    }

    /// A client asks member `id` to write `data`, as a gRPC call would: through the
    /// member's driver, which places it, forwards it to the leader or parks it. `None` if
    /// the member is down (the client cannot connect). Collect the answer with
    /// [`Cluster::take_result`].
    pub fn client_write(&mut self, id: NodeId, data: Bytes) -> Option<RequestId> {
        let idx = self.alive_index(id)?;
        let req = self.new_call(id, Some(data.clone()), 0);
        trace!(self, "client write {data:?} at node {id} (call {req})");
        if self.nodes[idx].stalled_until.is_some() {
            let now = self.now;
            self.nodes[idx]
                .stall_queue
                .push((now, Queued::Propose(req, data)));
            return Some(req);
        }
        self.nodes[idx]
            .driver
            .as_mut()
            .expect("alive")
            .propose(req, data);
        self.after_input(idx);
        Some(req)
    }

    /// A client asks member `id` for a linearizable read. Its answer must reflect every
    /// write committed or acknowledged before now (checked when it is served).
    pub fn client_read(&mut self, id: NodeId) -> Option<RequestId> {
        let idx = self.alive_index(id)?;
        let floor = self
            .checks
            .clients
            .read_floor(self.checks.committed.max_index());
        let req = self.new_call(id, None, floor);
        trace!(self, "client read at node {id} (call {req}, floor {floor})");
        if self.nodes[idx].stalled_until.is_some() {
            let now = self.now;
            self.nodes[idx].stall_queue.push((now, Queued::Read(req)));
            return Some(req);
        }
        self.nodes[idx].driver.as_mut().expect("alive").read(req);
        self.after_input(idx);
        Some(req)
    }

    /// A client's lease call (grant, keep-alive, revoke) to member `id`, as a write.
    pub fn client_lease(
        &mut self,
        id: NodeId,
        entry: &crate::leases::LeaseEntry,
    ) -> Option<RequestId> {
        self.lease_nonce += 1;
        let data = crate::leases::client_entry(entry, self.lease_nonce);
        self.client_write(id, data)
    }

    /// Whether lease `id`'s revocation took effect (it is gone for every client).
    pub fn lease_gone(&self, id: i64) -> bool {
        self.leases_gone.contains(&id)
    }

    fn new_call(&mut self, node: NodeId, write: Option<Bytes>, floor: Index) -> RequestId {
        let req = self.next_request;
        self.next_request += 1;
        let since = self.now;
        self.calls.insert(
            req,
            Call {
                node,
                write,
                floor,
                since,
            },
        );
        req
    }

    /// Whether call `req` has an answer waiting to be taken.
    pub fn has_result(&self, req: RequestId) -> bool {
        self.results.contains_key(&req)
    }

    /// The answer to call `req`, once there is one (taken: asked again, `None`).
    pub fn take_result(&mut self, req: RequestId) -> Option<CallResult> {
        self.results.remove(&req)
    }

    /// Acknowledged writes and served reads so far.
    pub fn client_calls_answered(&self) -> (u64, u64) {
        (
            self.checks.clients.writes_acked(),
            self.checks.clients.reads_served(),
        )
    }

    pub fn propose(&mut self, id: NodeId, data: Bytes) -> Result<Proposed, ProposeError> {
        self.propose_batch(id, vec![data])
    }

    pub fn propose_batch(
        &mut self,
        id: NodeId,
        data: Vec<Bytes>,
    ) -> Result<Proposed, ProposeError> {
        let Some(idx) = self.alive_index(id) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let n = data.len();
        let result = self.core_mut(idx).propose(data);
        trace!(self, "propose {n} to node {id}: {result:?}");
        self.after_input(idx);
        result
    }

    /// Asks `id` for a linearizable read point; remembers what was committed at this moment
    /// so the answer can be checked.
    pub fn read_index(&mut self, id: NodeId, ctx: Bytes) -> Result<(), ProposeError> {
        let Some(idx) = self.alive_index(id) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let floor = self.checks.committed.max_index();
        self.checks.reads.requested(ctx.clone(), floor);
        let result = self.core_mut(idx).read_index(ctx.clone());
        trace!(
            self,
            "read_index {ctx:?} at node {id} (floor {floor}): {result:?}"
        );
        self.after_input(idx);
        result
    }

    pub fn transfer_leader(&mut self, from: NodeId, to: NodeId) -> Result<(), ProposeError> {
        let Some(idx) = self.alive_index(from) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let result = self.core_mut(idx).transfer_leader(to);
        trace!(self, "transfer leader {from} -> {to}: {result:?}");
        self.after_input(idx);
        result
    }

    /// Propose a membership change on member `id` (its core; it must lead).
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        cc: raft::ConfChange,
    ) -> Result<Proposed, ProposeError> {
        let Some(idx) = self.alive_index(id) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let result = self.core_mut(idx).propose_conf_change(cc.clone());
        trace!(self, "conf change {cc:?} at node {id}: {result:?}");
        if result.is_ok() {
            self.stats.conf_changes += 1;
        }
        self.after_input(idx);
        result
    }

    /// A client asks member `id`'s driver for a membership change (it must lead). Answered
    /// like a write: `CallResult::Written(index)` once the change is applied there, checked
    /// by the client-call checker against the entry it names. Refused at once with the core's
    /// error.
    pub fn client_conf_change(
        &mut self,
        id: NodeId,
        cc: raft::ConfChange,
    ) -> Result<RequestId, ProposeError> {
        let Some(idx) = self.alive_index(id) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        let req = self.new_call(id, Some(cc.encode()), 0);
        let driver = self.nodes[idx].driver.as_mut().expect("alive");
        let result = driver.propose_conf_change(req, cc.clone());
        trace!(
            self,
            "client conf change {cc:?} at node {id} (call {req}): {result:?}"
        );
        if result.is_err() {
            self.calls.remove(&req);
        } else {
            self.stats.conf_changes += 1;
        }
        self.after_input(idx);
        result.map(|()| req)
    }

    /// The members of the configuration the leader uses (voters and learners); every member
    /// when no leader is known.
    pub fn members(&self) -> Vec<NodeId> {
        match self.leader().and_then(|l| self.status(l)) {
            Some(s) => {
                let mut ids = s.conf_state.voters;
                ids.extend(s.conf_state.learners);
                ids.sort_unstable();
                ids
            }
            None => self.voters.clone(),
        }
    }

    /// The learners of the leader's configuration that its applied state records as added
    /// as voters: they await the driver's automatic promotion. Empty when no leader is known.
    pub fn awaiting_promotion(&self) -> Vec<NodeId> {
        self.leader()
            .and_then(|l| self.alive_index(l))
            .and_then(|idx| self.nodes[idx].driver.as_ref())
            .map_or_else(Vec::new, |d| d.awaiting_promotion())
    }

    /// Members whose removal is committed (some member applied it).
    pub fn removed(&self) -> &BTreeSet<NodeId> {
        &self.removed
    }

    pub fn campaign(&mut self, id: NodeId) {
        if let Some(idx) = self.alive_index(id) {
            trace!(self, "campaign node {id}");
            self.core_mut(idx).campaign();
            self.after_input(idx);
        }
    }

    // ----- observation ------------------------------------------------------------------

    pub fn ids(&self) -> Vec<NodeId> {
        self.voters.clone()
    }

    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    pub fn is_alive(&self, id: NodeId) -> bool {
        self.alive_index(id).is_some()
    }

    pub fn status(&self, id: NodeId) -> Option<Status> {
        self.alive_index(id).map(|idx| self.core(idx).status())
    }

    pub fn term(&self, id: NodeId) -> Option<Term> {
        self.status(id).map(|s| s.hard_state.term)
    }

    /// The leader among live, connected members (the highest term wins if a stale leader
    /// has not noticed yet), like the MIT tester's `checkOneLeader`.
    pub fn leader(&self) -> Option<NodeId> {
        self.voters
            .iter()
            .filter(|&&id| self.is_connected(id))
            .filter_map(|&id| self.status(id))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.hard_state.term)
            .map(|s| s.id)
    }

    /// All live, connected members that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.voters
            .iter()
            .filter(|&&id| self.is_connected(id))
            .filter_map(|&id| self.status(id))
            .filter(|s| s.role == Role::Leader)
            .map(|s| (s.id, s.hard_state.term))
            .collect()
    }

    /// Waits up to `max_ticks` for a leader; fails the test (with the seed) if none appears.
    pub fn wait_for_leader(&mut self, max_ticks: u64) -> NodeId {
        if !self.run_until(max_ticks, |c| c.leader().is_some()) {
            self.fail(&format!("no leader within {max_ticks} ticks"));
        }
        self.leader().expect("checked")
    }

    /// The applied history of `id`'s current incarnation.
    pub fn applied(&self, id: NodeId) -> &[AppliedRecord] {
        self.index_of(id)
            .map_or(&[], |idx| self.nodes[idx].sm.records())
    }

    pub fn applied_index(&self, id: NodeId) -> Index {
        self.index_of(id)
            .map_or(0, |idx| self.nodes[idx].sm.applied_index())
    }

    pub fn durable(&self, id: NodeId) -> &DurableStore {
        &self.nodes[(id - 1) as usize].store
    }

    pub fn read_states(&self, id: NodeId) -> &[ReadState] {
        self.index_of(id)
            .map_or(&[], |idx| &self.nodes[idx].read_states)
    }

    /// How many members have applied `index`, and what (the checkers guarantee they agree).
    pub fn n_committed(&self, index: Index) -> (usize, Option<AppliedRecord>) {
        let mut count = 0;
        let mut what = None;
        for node in &self.nodes {
            if let Some(r) = node.sm.record(index) {
                count += 1;
                what = Some(r.clone());
            }
        }
        (count, what)
    }

    /// Where a client payload was first applied anywhere (its commit point).
    pub fn committed_index_of(&self, payload: &Bytes) -> Option<Index> {
        self.payload_index.get(payload).copied()
    }

    /// The highest index known committed anywhere.
    pub fn max_committed(&self) -> Index {
        self.checks.committed.max_index()
    }

    /// Read states that passed the ReadIndex check so far.
    pub fn reads_confirmed(&self) -> u64 {
        self.checks.reads.confirmed()
    }

    pub fn net_stats(&self) -> NetStats {
        self.net.stats
    }

    pub fn stats(&self) -> ClusterStats {
        self.stats
    }

    /// Records a checker's verdict reached outside the cluster's own steps (the liveness
    /// phase's): a violation is the run's if it is the first.
    pub fn record_violation(&mut self, result: Result<(), Violation>) {
        if let Err(v) = result {
            self.record(v);
        }
    }

    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Submits `data` to whoever claims leadership until `expected` members have applied
    /// it, like the MIT tester's `one()`. Returns its index; fails the test (printing the
    /// seed) if that takes longer than 10 election timeouts.
    pub fn one(&mut self, data: &[u8], expected: usize, retry: bool) -> Index {
        let data = Bytes::copy_from_slice(data);
        let election = self.config.election_tick as u64;
        let deadline = self.now_ticks() + 10 * 2 * election;
        let mut next = 0usize;
        while self.now_ticks() < deadline {
            let mut index = None;
            for _ in 0..self.nodes.len() {
                next = (next + 1) % self.nodes.len();
                let id = self.voters[next];
                if !self.is_connected(id) {
                    continue;
                }
                if let Ok(p) = self.propose(id, data.clone()) {
                    index = Some(p.last);
                    break;
                }
            }
            if let Some(index) = index {
                let agreed = self.run_until(4 * election, |c| {
                    let (n, rec) = c.n_committed(index);
                    n >= expected && rec.is_some_and(|r| r.data == data)
                });
                if agreed {
                    return index;
                }
                if !retry {
                    self.fail(&format!(
                        "one({data:?}) at index {index} did not reach {expected} members"
                    ));
                }
            } else {
                self.run_ticks(election / 2);
            }
        }
        self.fail(&format!(
            "one({data:?}) failed to reach agreement on {expected} members"
        ))
    }

    /// Panics with the seed, the replay command and the end of the trace.
    pub fn fail(&self, message: &str) -> ! {
        panic!("{}", self.report(message))
    }

    /// A failure report: what broke, the seed, how to replay it, the last trace events.
    pub fn report(&self, message: &str) -> String {
        let mut out = format!(
            "raftkv-sim failure: {message}\n  seed: {}\n  at tick: {}\n  replay: {}\n",
            self.config.seed,
            self.now_ticks(),
            self.config.replay
        );
        match &self.trace {
            Some(t) => {
                out.push_str("  last events:\n");
                for line in t.iter().rev().take(60).rev() {
                    out.push_str("    ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str("  (set RAFTKV_SIM_TRACE=1 when replaying to see the event trace)\n")
            }
        }
        out
    }
}

/// The seed to use: `RAFTKV_SIM_SEED` if set (to replay a failure), else `default`.
pub fn seed_from_env_or(default: u64) -> u64 {
    match std::env::var("RAFTKV_SIM_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RAFTKV_SIM_SEED={s:?} is not a u64")),
        Err(_) => default,
    }
}
