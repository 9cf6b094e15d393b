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

use bytes::Bytes;

use crate::types::*;

/// Tunables. Times are in ticks; the runtime decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// A follower that hears no leader for a random time in
    /// `[election_tick, 2 * election_tick)` campaigns.
    pub election_tick: u32,
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
}

impl Config {
    /// Sensible defaults for `id`: 10-tick elections, 1-tick heartbeats, pre-vote and
    /// check-quorum on, 1 MiB messages, 256 messages / 16 MiB in flight per follower.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 16 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            seed: id,
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
        todo!("core issue")
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

/// One Raft member's consensus state machine. Pure: no I/O, clock, threads or logging.
pub struct RaftNode {
    _private: (),
}

impl RaftNode {
    /// Build a node from its configuration and what its storage recovered.
    pub fn new(_config: Config, _initial: InitialState) -> Result<RaftNode, ConfigError> {
        todo!("core issue")
    }

    /// Advance logical time by one tick (elections, heartbeats, check-quorum).
    pub fn tick(&mut self) {
        todo!("core issue")
    }

    /// Deliver a message from another member.
    pub fn step(&mut self, _msg: Message) -> Result<(), StepError> {
        todo!("core issue")
    }

    /// Append `data` entries to the log (leader only). Many proposals may share one Ready.
    pub fn propose(&mut self, _data: Vec<Bytes>) -> Result<Proposed, ProposeError> {
        todo!("core issue")
    }

    /// Ask for a linearizable read point. On a leader that has committed an entry of its
    /// term, it is confirmed by a heartbeat round; on a follower it is forwarded to the
    /// leader. The answer arrives as a [`ReadState`] with the same `ctx`.
    pub fn read_index(&mut self, _ctx: Bytes) -> Result<(), ProposeError> {
        todo!("core issue")
    }

    /// Hand leadership to `to` (leader only): bring it up to date, then send TimeoutNow.
    pub fn transfer_leader(&mut self, _to: NodeId) -> Result<(), ProposeError> {
        todo!("core issue")
    }

    /// Campaign now, as if the election timeout had elapsed (used by tests and tooling).
    pub fn campaign(&mut self) {
        todo!("core issue")
    }

    /// The state machine has been snapshotted at `snapshot.meta.index` (≤ applied): drop
    /// the log up to it, and send this snapshot to followers that need compacted entries.
    pub fn compact(&mut self, _snapshot: Snapshot) -> Result<(), ConfigError> {
        todo!("core issue")
    }

    pub fn has_ready(&self) -> bool {
        todo!("core issue")
    }

    /// Take the pending work. Call [`RaftNode::advance`] with its ack before the next one.
    pub fn ready(&mut self) -> Ready {
        todo!("core issue")
    }

    /// Everything in the Ready that produced `ack` is durable and applied.
    pub fn advance(&mut self, _ack: ReadyAck) {
        todo!("core issue")
    }

    pub fn status(&self) -> Status {
        todo!("core issue")
    }

    /// Log entries in `[lo, hi)` still held in memory (for tests, the simulator and the
    /// server's HashKV / debugging); `None` if any of them was compacted.
    pub fn entries(&self, _lo: Index, _hi: Index) -> Option<Vec<Entry>> {
        todo!("core issue")
    }
}
