//! Randomised runs: one seed → one cluster, one fault schedule, one client workload.
//!
//! A run has two phases. The **fault phase** runs with every fault on: lossy, duplicating,
//! reordering network; partitions of every shape; crashes (some in the middle of a Ready);
//! restarts; leader transfers; forced campaigns; reads; compaction. The **liveness phase**
//! then heals everything (all members up, no partitions, reliable network) and demands that
//! within stated bounds a leader appears and every client proposal ever made is applied on
//! every member. Clients behave like real ones: they call any member (whose driver forwards
//! to the leader or parks the write), wait for its answer, and retry a write that failed or
//! whose outcome is unknown until it is committed. Reads go through the drivers' read
//! barriers too, and every answer is checked (`checkers::client_calls`).
//!
//! Lease holders grant leases through random members and keep them alive (every third of
//! the TTL) through random members, alone or several in one batched entry, and now and
//! then stop keeping one alive; at healing
//! they all stop, and the liveness phase also demands that every lease is revoked within
//! its bound (`checkers::lease_liveness`).

use std::collections::BTreeMap;

use bytes::Bytes;
use node::RequestId;
use raft::NodeId;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkers::promotion;
use crate::cluster::{CallResult, ClusterStats, CrashPoint, Sabotage};
use crate::network::{NetConfig, NetStats};
use crate::state_machine::ADDED_AS_VOTER;
use crate::{Cluster, SimConfig};

/// How long a run lasts.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    /// Mean length of the fault phase in ticks (each seed draws 0.5× to 1.5× of it).
    pub fault_ticks: u64,
    /// Keep the full event trace.
    pub trace: bool,
    /// A deliberately broken runtime (checker self-tests only).
    pub sabotage: Option<Sabotage>,
    /// The intense fault profile (see `Plan`): a different seed space from the normal one.
    pub intense: bool,
    /// Narrow the election-timeout spread to this percentage of `election_tick` (at least
    /// `MIN_NARROW_JITTER_TICKS`), as the server does with 30 (docs/raft-deviations.md). `None`: the
    /// paper's `[T, 2T)`. Draws nothing from the RNG, so a seed's faults and workload are
    /// the same either way; only the members' timeouts differ.
    pub election_jitter_percent: Option<u32>,
    /// Membership changes among the faults: the configuration lives in the log, spare
    /// members start outside it, and the fault phase adds voters and learners, promotes
    /// learners and removes members (the leader too). A different seed space from the
    /// fixed-membership one.
    pub membership: bool,
    /// Apply on a stage of its own (`SimConfig::apply_stage`), as the server does:
    /// `None` decides per seed (on for [`APPLY_STAGE_SHARE`] of them), `Some` forces it on
    /// or off. The choice and the stage's shape come from a stream of their own, so a seed
    /// run without a stage replays exactly as before the stage existed, and forcing the
    /// stage on for a seed that draws it gives the same run.
    pub apply_stage: Option<bool>,
}

impl Default for FuzzOptions {
    fn default() -> Self {
        FuzzOptions {
            fault_ticks: 400,
            trace: false,
            sabotage: None,
            intense: false,
            election_jitter_percent: None,
            membership: false,
            apply_stage: None,
        }
    }
}

/// A narrowed spread is never below this many ticks (the server's floor too): with a
/// single possible timeout, members that lost their leader together campaign together
/// forever.
pub const MIN_NARROW_JITTER_TICKS: u32 = 3;

/// The share of seeds that apply on a stage when `FuzzOptions::apply_stage` leaves it to
/// the seed. Half: the server runs the stage, and the synchronous order is the driver's
/// contract itself; both keep 10,000 seeds in the default test sweep.
pub const APPLY_STAGE_SHARE: f64 = 0.5;

/// Stage jobs run within this many ticks of their hand-over (bounded, so the liveness
/// phase ends).
pub const APPLY_STAGE_MAX_DELAY_TICKS: u64 = 2;

/// Mixed into the seed for the stage's own random stream.
const APPLY_STAGE_STREAM: u64 = 0x5354_4147_4553_5452;

/// After healing: a leader within this many election timeouts…
pub const LEADER_BOUND_ELECTIONS: u64 = 10;
/// …and every client proposal applied on every member within this many.
pub const COMMIT_BOUND_ELECTIONS: u64 = 40;

/// The per-seed choices: cluster shape, fault intensities, workload.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Ticks of the fault phase (drawn around `FuzzOptions::fault_ticks`).
    pub fault_ticks: u64,
    pub nodes: usize,
    pub election_tick: u32,
    /// `None`: the core's default spread, `election_tick`.
    pub election_jitter_tick: Option<u32>,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_size_per_msg: usize,
    pub max_inflight_msgs: usize,
    pub compact_every: Option<u64>,
    pub net: NetConfig,
    pub clients: usize,
    pub p_propose: f64,
    pub p_crash: f64,
    pub p_restart: f64,
    pub p_partition: f64,
    pub p_read: f64,
    pub p_transfer: f64,
    pub p_campaign: f64,
    /// Chance per tick that a member stalls (its loop stuck, inputs queueing up).
    pub p_stall: f64,
    /// Membership runs only: members started outside the configuration, to be added.
    pub spares: usize,
    /// Membership runs only: chance per tick that the leader is asked for a change.
    pub p_member_change: f64,
    /// Lease holders (each with at most one lease at a time), their leases' TTL in ticks,
    /// and the chance, at each keep-alive due, that a holder stops keeping its lease alive.
    pub lease_holders: usize,
    pub lease_ttl_ticks: u64,
    pub p_abandon_lease: f64,
    /// Apply on a stage of its own, and its shape (see [`draw_apply_stage`]).
    pub apply_stage: Option<crate::ApplyStageConfig>,
}

impl Plan {
    fn draw(rng: &mut ChaCha8Rng, mean_fault_ticks: u64, intense: bool) -> Plan {
        let fault_ticks = rng.gen_range(mean_fault_ticks / 2..=mean_fault_ticks * 3 / 2);
        let nodes = *[1, 2, 3, 3, 3, 3, 4, 5, 5, 5]
            .choose(rng)
            .expect("non-empty");
        let small = rng.gen_bool(0.3);
        Plan {
            fault_ticks,
            nodes,
            election_tick: *[5, 10, 10, 20].choose(rng).expect("non-empty"),
            election_jitter_tick: None,
            pre_vote: rng.gen_bool(0.8),
            check_quorum: rng.gen_bool(0.8),
            max_size_per_msg: if small { 60 } else { 1024 * 1024 },
            max_inflight_msgs: if small { rng.gen_range(1..=4) } else { 256 },
            compact_every: if rng.gen_bool(0.7) {
                Some(rng.gen_range(2..=20))
            } else {
                None
            },
            net: NetConfig {
                drop_prob: rng.gen_range(0.0..0.2),
                dup_prob: rng.gen_range(0.0..0.1),
                min_delay: 1,
                max_delay: rng.gen_range(1..=15),
                long_delay_prob: rng.gen_range(0.0..0.1),
                long_delay_max: rng.gen_range(20..=150),
            },
            clients: rng.gen_range(1..=5),
            p_propose: rng.gen_range(0.1..0.8),
            p_crash: rng.gen_range(0.0..0.03),
            p_restart: rng.gen_range(0.02..0.15),
            p_partition: rng.gen_range(0.0..0.04),
            p_read: rng.gen_range(0.0..0.2),
            p_transfer: rng.gen_range(0.0..0.02),
            p_campaign: rng.gen_range(0.0..0.01),
            p_stall: rng.gen_range(0.0..0.01),
            spares: 0,
            p_member_change: 0.0,
            lease_holders: 0,
            lease_ttl_ticks: 0,
            p_abandon_lease: 0.0,
            apply_stage: None,
        }
        .intensified(intense, rng)
    }

    /// The lease workload, drawn after everything else: 0–2 holders, a TTL of 4 to 10
    /// election timeouts (the server's minimum is 1.5), abandoning 0–20 % of the time.
    fn with_leases(mut self, rng: &mut ChaCha8Rng) -> Plan {
        self.lease_holders = rng.gen_range(0..=2);
        let e = self.election_tick as u64;
        self.lease_ttl_ticks = rng.gen_range(4 * e..=10 * e);
        self.p_abandon_lease = rng.gen_range(0.0..0.2);
        self
    }

    /// Membership runs: spare members and a rate of changes, drawn after everything else.
    fn with_membership(mut self, rng: &mut ChaCha8Rng) -> Plan {
        self.spares = rng.gen_range(1..=3);
        self.p_member_change = rng.gen_range(0.005..0.05);
        self
    }

    /// The intense profile: bigger clusters (up to 7), and three times the crashes,
    /// partitions, transfers and forced campaigns, on a lossier network.
    fn intensified(mut self, intense: bool, rng: &mut ChaCha8Rng) -> Plan {
        if intense {
            self.nodes = *[3, 5, 5, 7, 7].choose(rng).expect("non-empty");
            self.net.drop_prob = (self.net.drop_prob * 1.5).min(0.3);
            self.p_crash *= 3.0;
            self.p_restart = (self.p_restart * 2.0).min(0.5);
            self.p_partition *= 3.0;
            self.p_transfer *= 3.0;
            self.p_campaign *= 3.0;
        }
        self
    }
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct FuzzReport {
    pub seed: u64,
    /// The checker that failed (`None` for a liveness failure or success).
    pub violation: Option<crate::Violation>,
    pub plan: Plan,
    /// `None` if every invariant held and the liveness phase passed.
    pub failure: Option<String>,
    pub ticks: u64,
    pub proposals: usize,
    pub committed_index: u64,
    pub reads_confirmed: u64,
    /// Client writes acknowledged and linearizable reads served through the drivers.
    pub writes_acked: u64,
    pub reads_served: u64,
    pub stats: ClusterStats,
    pub net: NetStats,
    pub trace: Vec<String>,
}

/// The command that replays `seed` (run with `options`) with its event trace.
pub fn replay_command(seed: u64, options: &FuzzOptions) -> String {
    let ticks = if options.fault_ticks == FuzzOptions::default().fault_ticks {
        String::new()
    } else {
        format!("RAFTKV_SIM_FAULT_TICKS={} ", options.fault_ticks)
    };
    let ticks = if options.intense {
        format!("{ticks}RAFTKV_SIM_INTENSE=1 ")
    } else {
        ticks
    };
    let ticks = match options.election_jitter_percent {
        Some(percent) => format!("{ticks}RAFTKV_SIM_JITTER_PERCENT={percent} "),
        None => ticks,
    };
    let ticks = if options.membership {
        format!("{ticks}RAFTKV_SIM_MEMBERSHIP=1 ")
    } else {
        ticks
    };
    let ticks = match options.apply_stage {
        Some(true) => format!("{ticks}RAFTKV_SIM_APPLY_STAGE=on "),
        Some(false) => format!("{ticks}RAFTKV_SIM_APPLY_STAGE=off "),
        None => ticks,
    };
    format!(
        "RAFTKV_SIM_SEED={seed} {ticks}RAFTKV_SIM_TRACE=1 cargo test -p raftkv-sim --release --test sweep replay_one_seed -- --nocapture"
    )
}

/// Whether seed `seed` applies on a stage, and how: drawn from a stream of its own (not
/// the run's RNG, so runs without a stage keep their draws). A stage's jobs wait up to
/// 1 unit to [`APPLY_STAGE_MAX_DELAY_TICKS`] ticks; in half the stage seeds the drivers'
/// backpressure threshold is 4–32 entries instead of 5,000, so the lag the stage
/// reports (`Driver::set_apply_lag`) really refuses proposals now and then.
pub fn draw_apply_stage(seed: u64, forced: Option<bool>) -> Option<crate::ApplyStageConfig> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ APPLY_STAGE_STREAM);
    let drawn = rng.gen_bool(APPLY_STAGE_SHARE);
    let max_delay_units = rng.gen_range(1..=APPLY_STAGE_MAX_DELAY_TICKS * crate::UNITS_PER_TICK);
    let max_apply_gap = if rng.gen_bool(0.5) {
        rng.gen_range(4..=32)
    } else {
        node::MAX_APPLY_GAP
    };
    forced.unwrap_or(drawn).then_some(crate::ApplyStageConfig {
        max_delay_units,
        max_apply_gap,
    })
}

/// One client: at most one operation outstanding, like a real client waiting for its
/// answer. It calls a random member and retries with exponential backoff after a failure
/// or an unknown outcome.
struct Client {
    /// The operation to complete, if any.
    op: Option<Bytes>,
    /// The call in flight for it, if any.
    call: Option<RequestId>,
    next_try: u64,
    backoff: u64,
}

struct Clients {
    all: Vec<Bytes>,
    clients: Vec<Client>,
    min_backoff: u64,
    max_backoff: u64,
}

impl Clients {
    fn new(count: usize, election: u64) -> Clients {
        Clients {
            all: Vec::new(),
            clients: (0..count)
                .map(|_| Client {
                    op: None,
                    call: None,
                    next_try: 0,
                    backoff: 0,
                })
                .collect(),
            min_backoff: (election / 2).max(1),
            max_backoff: 4 * election,
        }
    }

    /// A random idle client starts a new operation.
    fn submit(&mut self, c: &mut Cluster) {
        let idle: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].op.is_none())
            .collect();
        let Some(&k) = idle.choose(c.rng()) else {
            return;
        };
        let payload = Bytes::from(format!("op-{}", self.all.len()));
        self.all.push(payload.clone());
        let now = c.now_ticks();
        let min_backoff = self.min_backoff;
        let client = &mut self.clients[k];
        client.op = Some(payload);
        client.call = None;
        client.next_try = now;
        client.backoff = min_backoff;
    }

    /// Each client collects its answer, or (re)sends its operation when due.
    fn drive(&mut self, c: &mut Cluster) {
        let now = c.now_ticks();
        for k in 0..self.clients.len() {
            let Some(payload) = self.clients[k].op.clone() else {
                continue;
            };
            if let Some(req) = self.clients[k].call {
                let client = &mut self.clients[k];
                match c.take_result(req) {
                    None => continue,
                    Some(CallResult::Written(_)) => {
                        client.op = None;
                        client.call = None;
                        continue;
                    }
                    Some(_) => {
                        client.call = None;
                        client.next_try = now + client.backoff;
                        client.backoff = (client.backoff * 2).min(self.max_backoff);
                    }
                }
            }
            // A retried write whose earlier attempt did land is done too.
            if c.committed_index_of(&payload).is_some() {
                self.clients[k].op = None;
                continue;
            }
            if self.clients[k].next_try > now {
                continue;
            }
            let target = client_target(c);
            match c.client_write(target, payload) {
                Some(req) => self.clients[k].call = Some(req),
                None => self.clients[k].next_try = now + 1,
            }
        }
    }

    fn pending(&self) -> Vec<&Bytes> {
        self.clients.iter().filter_map(|c| c.op.as_ref()).collect()
    }
}

/// Whom a client calls: any member of the configuration (a client knows the members'
/// endpoints; a removed member refuses clients, a spare is nobody's endpoint yet). Runs
/// without membership changes draw exactly as before.
fn client_target(c: &mut Cluster) -> NodeId {
    if c.config().initial_members.is_none() {
        return random_node(c);
    }
    let members = c.members();
    match members.choose(c.rng()) {
        Some(&id) => id,
        None => random_node(c),
    }
}

fn random_node(c: &mut Cluster) -> NodeId {
    let n = c.ids().len() as NodeId;
    c.rng().gen_range(1..=n)
}

/// Runs one seed: fault phase, then liveness phase. Never panics on a protocol failure; the
/// report says what broke.
pub fn run_seed(seed: u64, options: &FuzzOptions) -> FuzzReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan = Plan::draw(&mut rng, options.fault_ticks, options.intense);
    if options.membership {
        plan = plan.with_membership(&mut rng);
        if options.sabotage == Some(Sabotage::ConcurrentConfChanges) {
            // Give the broken rule its chance: changes every few ticks, on bigger clusters.
            plan.p_member_change = 0.3;
            plan.spares = 4;
            plan.p_partition = plan.p_partition.max(0.05);
        }
    }
    plan = plan.with_leases(&mut rng);
    if matches!(
        options.sabotage,
        Some(Sabotage::LeaseExpiryWithoutBarrier | Sabotage::LessorIgnoresCheckpoints)
    ) {
        // Give the broken rule its chance: leases in every seed, abandoned often.
        plan.lease_holders = plan.lease_holders.max(2);
        plan.p_abandon_lease = plan.p_abandon_lease.max(0.3);
    }
    // The stage sabotages need a stage.
    let stage_sabotage = matches!(
        options.sabotage,
        Some(Sabotage::ReleaseReadsAtHandOver | Sabotage::StageJobsOutOfOrder)
    );
    plan.apply_stage =
        draw_apply_stage(seed, options.apply_stage.or(stage_sabotage.then_some(true)));
    plan.election_jitter_tick = options
        .election_jitter_percent
        .map(|percent| (plan.election_tick * percent / 100).max(MIN_NARROW_JITTER_TICKS));
    let mut config = SimConfig::new(plan.nodes + plan.spares, seed);
    if options.membership {
        config.initial_members = Some(plan.nodes);
    }
    config.election_tick = plan.election_tick;
    config.election_jitter_tick = plan.election_jitter_tick;
    config.heartbeat_tick = 1;
    config.pre_vote = plan.pre_vote;
    config.check_quorum = plan.check_quorum;
    config.max_size_per_msg = plan.max_size_per_msg;
    config.max_inflight_msgs = plan.max_inflight_msgs;
    config.compact_every = plan.compact_every;
    config.net = plan.net.clone();
    config.trace = options.trace;
    config.replay = replay_command(seed, options);
    config.panic_on_violation = false;
    config.sabotage = options.sabotage;
    config.apply_stage = plan.apply_stage;
    let mut c = Cluster::with_rng(config, rng);
    let mut clients = Clients::new(plan.clients, plan.election_tick as u64);
    let mut holders = LeaseHolders::new(&plan);
    let mut spares: Vec<NodeId> = ((plan.nodes + 1) as NodeId
        ..=(plan.nodes + plan.spares) as NodeId)
        .rev()
        .collect();
    let failure = fault_phase(
        &mut c,
        &plan,
        &mut clients,
        &mut holders,
        &mut spares,
        plan.fault_ticks,
    )
    .and_then(|()| liveness_phase(&mut c, &plan, &mut clients, &mut holders))
    .err();
    FuzzReport {
        seed,
        violation: c.violation().cloned(),
        failure: failure.map(|f| {
            c.report(&format!(
                "{f}\n  plan (every choice drawn from the seed): {plan:?}"
            ))
        }),
        ticks: c.now_ticks(),
        proposals: clients.all.len(),
        committed_index: c.max_committed(),
        reads_confirmed: c.reads_confirmed(),
        writes_acked: c.client_calls_answered().0,
        reads_served: c.client_calls_answered().1,
        stats: c.stats(),
        net: c.net_stats(),
        trace: c.trace().to_vec(),
        plan,
    }
}

fn violation(c: &Cluster) -> Result<(), String> {
    match c.violation() {
        Some(v) => Err(v.to_string()),
        None => Ok(()),
    }
}

fn fault_phase(
    c: &mut Cluster,
    plan: &Plan,
    clients: &mut Clients,
    holders: &mut LeaseHolders,
    spares: &mut Vec<NodeId>,
    ticks: u64,
) -> Result<(), String> {
    let ids = c.ids();
    let mut reads = 0u64;
    for _ in 0..ticks {
        if c.rng().gen_bool(plan.p_propose) {
            clients.submit(c);
        }
        clients.drive(c);
        holders.drive(c);
        if c.rng().gen_bool(plan.p_crash) {
            let alive: Vec<NodeId> = ids.iter().copied().filter(|&i| c.is_alive(i)).collect();
            if let Some(&victim) = alive.choose(c.rng()) {
                match c.rng().gen_range(0..6) {
                    0 => c.crash_at_next_ready(victim, CrashPoint::BeforePersist),
                    1 => c.crash_at_next_ready(victim, CrashPoint::AfterPersist),
                    2 => c.crash_at_next_ready(victim, CrashPoint::BeforeApply),
                    _ => c.crash(victim),
                }
            }
        }
        if c.rng().gen_bool(plan.p_restart) {
            let dead: Vec<NodeId> = ids.iter().copied().filter(|&i| !c.is_alive(i)).collect();
            if let Some(&back) = dead.choose(c.rng()) {
                c.restart(back);
            }
        }
        if c.rng().gen_bool(plan.p_partition) {
            repartition(c, &ids);
        }
        if c.rng().gen_bool(plan.p_read) {
            let at = random_node(c);
            reads += 1;
            // Half through the driver's read barrier (a client's linearizable read), half
            // straight to the core's ReadIndex (its read points checked on their own).
            if c.rng().gen_bool(0.5) {
                let _ = c.client_read(at);
            } else {
                let _ = c.read_index(at, Bytes::from(format!("read-{reads}")));
            }
        }
        if c.rng().gen_bool(plan.p_stall) {
            let who = random_node(c);
            let units = c
                .rng()
                .gen_range(1..=5 * plan.election_tick as u64 * crate::UNITS_PER_TICK);
            c.stall(who, units);
        }
        if c.rng().gen_bool(plan.p_transfer) {
            if let Some(leader) = c.leader() {
                let to = random_node(c);
                if to != leader {
                    let _ = c.transfer_leader(leader, to);
                }
            }
        }
        if c.rng().gen_bool(plan.p_campaign) {
            let who = random_node(c);
            c.campaign(who);
        }
        if plan.p_member_change > 0.0 && c.rng().gen_bool(plan.p_member_change) {
            member_change(c, spares);
        }
        c.run_ticks(1);
        violation(c)?;
    }
    Ok(())
}

/// Asks the leader for a random membership change: add a spare as a learner (that stays
/// one) or as a voter (a learner whose context says [`ADDED_AS_VOTER`]: the leader's driver
/// promotes it once it is in sync, as the server's `MemberAdd` does), promote a learner as
/// an operator would, or remove a member (the leader itself included). Spares are used once:
/// a removed member never comes back under its id, as in etcd. The core refuses changes that
/// would break its rules (one at a time, not before the leader's first commit); those count
/// as attempts.
fn member_change(c: &mut Cluster, spares: &mut Vec<NodeId>) {
    use raft::{ConfChange, ConfChangeKind};
    let Some(leader) = c.leader() else { return };
    let Some(conf) = c.status(leader).map(|s| s.conf_state) else {
        return;
    };
    let (kind, node, context) = match c.rng().gen_range(0..4) {
        0 | 1 => {
            let Some(&spare) = spares.last() else { return };
            let context = if c.rng().gen_bool(0.5) {
                Bytes::new()
            } else {
                Bytes::from_static(ADDED_AS_VOTER)
            };
            (ConfChangeKind::AddLearner, spare, context)
        }
        2 => match conf.learners.choose(c.rng()) {
            Some(&learner) => (ConfChangeKind::AddVoter, learner, Bytes::new()),
            None => return,
        },
        _ => {
            let members: Vec<NodeId> = conf.voters.iter().chain(&conf.learners).copied().collect();
            match members.choose(c.rng()) {
                Some(&m) => (ConfChangeKind::Remove, m, Bytes::new()),
                None => return,
            }
        }
    };
    let cc = ConfChange {
        kind,
        node,
        context,
    };
    if c.propose_conf_change(leader, cc).is_ok() && spares.last() == Some(&node) {
        spares.pop();
    }
}

/// Picks a new network shape: healed, one member isolated, a random split, extra one-way
/// cuts, or a bridge.
fn repartition(c: &mut Cluster, ids: &[NodeId]) {
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(c.rng());
    match c.rng().gen_range(0..5) {
        0 => c.heal(),
        1 => {
            c.heal();
            c.disconnect(shuffled[0]);
        }
        2 => {
            c.heal();
            let cut = c.rng().gen_range(1..=shuffled.len());
            let (a, b) = shuffled.split_at(cut);
            c.partition(&[a, b]);
        }
        3 => {
            for _ in 0..c.rng().gen_range(1..=3) {
                let from = random_node(c);
                let to = random_node(c);
                if from != to {
                    c.block_link(from, to);
                }
            }
        }
        _ => {
            c.heal();
            if shuffled.len() >= 3 {
                let cut = c.rng().gen_range(1..shuffled.len() - 1);
                let (left, rest) = shuffled.split_at(cut);
                c.bridge(left, rest[0], &rest[1..]);
            }
        }
    }
}

fn liveness_phase(
    c: &mut Cluster,
    plan: &Plan,
    clients: &mut Clients,
    holders: &mut LeaseHolders,
) -> Result<(), String> {
    c.heal();
    c.set_net(NetConfig::reliable());
    c.disarm_crashes();
    // A stall drawn late in the fault phase may last five election timeouts: ended here,
    // or the bounds below (lease expiry's, counted from the leader seen) would run while
    // the leader cannot act (seed 126294: a single member stalled from before healing
    // until 8 ticks past its lease's bound).
    c.end_stalls();
    holders.stop();
    let election = plan.election_tick as u64;
    c.start_lease_liveness(
        LEASE_SLACK_ELECTIONS * election * crate::UNITS_PER_TICK + LEASE_SLACK_UNITS,
    );
    for id in c.ids() {
        c.restart(id);
    }
    violation(c)?;
    let healed_at = c.now_ticks();
    let leader_deadline = healed_at + LEADER_BOUND_ELECTIONS * election;
    let commit_deadline = healed_at + COMMIT_BOUND_ELECTIONS * election;
    let mut leader_seen = false;
    let mut last_leader = None;
    loop {
        let leader = c.leader().map(|l| (l, c.term(l)));
        if leader.is_some() && leader != last_leader {
            c.lease_leader_change();
        }
        last_leader = leader;
        leader_seen |= leader.is_some();
        if leader_seen
            && everything_applied_everywhere(c, clients)
            && c.awaiting_promotion().is_empty()
            && c.lease_liveness_done()
        {
            return Ok(());
        }
        violation(c)?;
        let now = c.now_ticks();
        if !leader_seen && now >= leader_deadline {
            return Err(format!(
                "liveness: no leader within {LEADER_BOUND_ELECTIONS} election timeouts ({} ticks) after healing at tick {healed_at}",
                LEADER_BOUND_ELECTIONS * election
            ));
        }
        if now >= commit_deadline && leader_seen && everything_applied_everywhere(c, clients) {
            // Only promotions are missing.
            let leader = c.leader().unwrap_or(0);
            let r = promotion::check_all_promoted(leader, &c.awaiting_promotion());
            c.record_violation(r);
            return violation(c);
        }
        if now >= commit_deadline {
            return Err(format!(
                "liveness: {} client proposals not applied on every member within {COMMIT_BOUND_ELECTIONS} election timeouts ({} ticks) after healing at tick {healed_at}; leader {:?}; applied per member {:?}; still pending {:?}",
                unapplied_count(c, clients),
                COMMIT_BOUND_ELECTIONS * election,
                c.leader(),
                c.ids().iter().map(|&i| c.applied_index(i)).collect::<Vec<_>>(),
                clients.pending()
            ));
        }
        clients.drive(c);
        holders.drive(c);
        c.run_ticks(1);
        violation(c)?;
    }
}

/// The liveness bound's slack for lease expiry (`checkers::lease_liveness`): two election
/// timeouts plus 100 units cover the scan interval (2 ticks), the leader's first commit,
/// the read barrier, the expiry entry's commit and the ticks each waits for.
pub const LEASE_SLACK_ELECTIONS: u64 = 2;
pub const LEASE_SLACK_UNITS: u64 = 100;

/// One lease holder: at most one lease and one call at a time.
struct Holder {
    lease: Option<i64>,
    granted: bool,
    call: Option<RequestId>,
    next_keepalive: u64,
}

/// The lease clients of a run.
struct LeaseHolders {
    holders: Vec<Holder>,
    ttl_ticks: u64,
    p_abandon: f64,
    next_id: i64,
    stopped: bool,
}

impl LeaseHolders {
    fn new(plan: &Plan) -> LeaseHolders {
        LeaseHolders {
            holders: (0..plan.lease_holders)
                .map(|_| Holder {
                    lease: None,
                    granted: false,
                    call: None,
                    next_keepalive: 0,
                })
                .collect(),
            ttl_ticks: plan.lease_ttl_ticks,
            p_abandon: plan.p_abandon_lease,
            next_id: 1,
            stopped: false,
        }
    }

    /// Nobody keeps anything alive from now on (answers are still collected).
    fn stop(&mut self) {
        self.stopped = true;
    }

    /// When keep-alives are due, half of the time every holder with a live lease renews in
    /// one batch (`KeepAlives`, as a server member coalesces the keep-alives it takes
    /// together), otherwise each due one alone; a batch's call is shared by every holder
    /// in it.
    fn drive(&mut self, c: &mut Cluster) {
        use crate::leases::LeaseEntry;
        let now = c.now_ticks();
        let every = (self.ttl_ticks / 3).max(1);
        // A batch's answer is taken once and told to each holder that shares its call.
        let mut answers: BTreeMap<RequestId, Option<CallResult>> = BTreeMap::new();
        let mut due = Vec::new();
        for k in 0..self.holders.len() {
            if let Some(req) = self.holders[k].call {
                let answer = answers
                    .entry(req)
                    .or_insert_with(|| c.take_result(req))
                    .clone();
                let h = &mut self.holders[k];
                match answer {
                    None => continue,
                    Some(CallResult::Written(_)) => {
                        h.granted = true;
                        h.next_keepalive = now + every;
                    }
                    // A grant with an unknown outcome: start over under a new id (if it
                    // landed, nobody keeps it alive, and it must expire).
                    Some(_) if !h.granted => h.lease = None,
                    Some(_) => h.next_keepalive = now + 1,
                }
                h.call = None;
            }
            if self.stopped {
                continue;
            }
            if let Some(id) = self.holders[k].lease {
                if c.lease_gone(id) {
                    self.holders[k].lease = None;
                }
            }
            match self.holders[k].lease {
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let ttl_ms = self.ttl_ticks * crate::UNITS_PER_TICK;
                    let target = client_target(c);
                    let call = c.client_lease(target, &LeaseEntry::Grant { id, ttl_ms });
                    let h = &mut self.holders[k];
                    if call.is_some() {
                        h.lease = Some(id);
                        h.granted = false;
                        h.call = call;
                    }
                }
                Some(id) if self.holders[k].granted && now >= self.holders[k].next_keepalive => {
                    if c.rng().gen_bool(self.p_abandon) {
                        self.holders[k].lease = None;
                        continue;
                    }
                    due.push((k, id));
                }
                Some(_) => {}
            }
        }
        // Half the time, every other holder with a live lease and no call in flight
        // renews early in the same batch (harmless: a renewal is never too early).
        if !due.is_empty() && c.rng().gen_bool(0.5) {
            for (k, h) in self.holders.iter().enumerate() {
                let idle = h.granted && h.call.is_none() && !due.iter().any(|&(d, _)| d == k);
                if let (true, Some(id)) = (idle, h.lease) {
                    due.push((k, id));
                }
            }
        }
        if due.len() > 1 {
            let target = client_target(c);
            let ids = due.iter().map(|&(_, id)| id).collect();
            let call = c.client_lease(target, &LeaseEntry::KeepAlives { ids });
            for (k, _) in due {
                match call {
                    Some(req) => self.holders[k].call = Some(req),
                    None => self.holders[k].next_keepalive = now + 1,
                }
            }
            return;
        }
        for (k, id) in due {
            let target = client_target(c);
            match c.client_lease(target, &LeaseEntry::KeepAlive { id }) {
                Some(req) => self.holders[k].call = Some(req),
                None => self.holders[k].next_keepalive = now + 1,
            }
        }
    }
}

fn unapplied_count(c: &Cluster, clients: &Clients) -> usize {
    clients
        .all
        .iter()
        .filter(|p| match c.committed_index_of(p) {
            None => true,
            Some(i) => c.members().iter().any(|&id| c.applied_index(id) < i),
        })
        .count()
}

fn everything_applied_everywhere(c: &Cluster, clients: &Clients) -> bool {
    let mut highest = 0;
    for p in &clients.all {
        match c.committed_index_of(p) {
            Some(i) => highest = highest.max(i),
            None => return false,
        }
    }
    c.members().iter().all(|&id| c.applied_index(id) >= highest)
}
