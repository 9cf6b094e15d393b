//! The vocabulary shared by the core, the storage, the simulator and the server.
//!
//! These types are plain data: everything that crosses the boundary of the pure core
//! (into storage, onto the network, into the state machine) is one of them.

use bytes::Bytes;

/// A member's identity. Never 0 (0 is reserved to mean "nobody") and never reused.
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log. The first real entry has index 1.
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data for the state machine.
    Normal,
    /// The empty entry a new leader appends to commit its predecessors' entries (Figure 8).
    /// The state machine skips it.
    Noop,
    /// A membership change: `data` is an encoded `ConfChange` (`membership.rs`). In force
    /// on a member as soon as it is in its log.
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry costs for flow control (payload plus a fixed header estimate).
    pub fn size(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state that must be durable before the core's dependent messages leave the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: Term,
    /// Whom this node voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
    /// Highest index known committed. Persisted so a restart never applies past it.
    pub commit: Index,
}

/// The membership: who votes and who only learns. Lives in the log and in snapshots,
/// never in command-line flags (flags only seed the very first configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    /// Non-voting members: they receive the log and snapshots, never vote or count.
    pub learners: Vec<NodeId>,
}

/// Describes the state-machine image a snapshot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership as of `index`.
    pub conf_state: ConfState,
}

/// A state-machine image plus its metadata. `data` is opaque to the core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// A message between members. `term` is the sender's term, except for pre-vote requests,
/// which carry the term the sender *would* campaign in (its term + 1) without adopting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// Why an append was rejected, so the leader can skip a whole conflicting term at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The follower's last index, or the index of the first entry of the conflicting term.
    pub index: Index,
    /// The term of the follower's entry at `index` (0 if it has none there).
    pub term: Term,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Ask whether the receiver *would* vote for us; granting changes no state.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// A real vote request. `transfer` is set when a leader asked us to campaign
    /// (TimeoutNow): receivers then ignore leader stickiness.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    /// Replicate `entries` after (`prev_index`, `prev_term`); `commit` is the leader's commit.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// `Ok(match_index)` on success; `Err(hint)` on a log mismatch at `rejected`.
    AppendResponse {
        rejected: Option<(Index, RejectHint)>,
        match_index: Index,
    },
    /// Leader liveness and commit propagation. `read_seq` is the leader's ReadIndex round
    /// (strictly increasing within a term); followers echo it back.
    Heartbeat {
        commit: Index,
        read_seq: u64,
    },
    HeartbeatResponse {
        read_seq: u64,
    },
    /// The leader's state-machine image for a follower that needs compacted entries.
    InstallSnapshot {
        snapshot: Snapshot,
    },
    /// Sent by a leader to its chosen successor: campaign now (leader transfer).
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of a client request.
    ReadIndex {
        ctx: Bytes,
    },
    /// The leader's answer: `index` is None if the leader cannot serve reads yet.
    ReadIndexResponse {
        ctx: Bytes,
        index: Option<Index>,
    },
}

/// The role a node currently plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state worth reporting when it changes (for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// A confirmed read: once the local state machine has applied `index`, a read for `ctx`
/// may be served linearizably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: Bytes,
    pub index: Index,
}
