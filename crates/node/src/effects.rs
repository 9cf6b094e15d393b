//! What the driver asks its caller to do, and the vocabulary of its inputs.

use bytes::Bytes;
use raft::{
    Entry, HardState, Index, Message, NodeId, ReadState, Snapshot, SnapshotMeta, SoftState, Term,
};

/// The caller's name for one client call (a proposal or a read). Unique among the calls
/// a driver has not answered yet; the driver answers each exactly once.
pub type RequestId = u64;

/// Why a client call failed. Each maps to one of etcd's errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// No leader was known for long enough (`etcdserver: no leader`).
    NoLeader,
    /// The proposal may or may not have been applied: leadership moved while it was in
    /// flight (`etcdserver: leader changed`).
    LeaderChanged,
    /// No outcome within the request timeout (`etcdserver: request timed out`).
    Timeout,
    /// Applying lags committing by more than [`crate::MAX_APPLY_GAP`]
    /// (`etcdserver: too many requests`).
    TooManyRequests,
}

/// The outcome of a client call that is not carried by an applied entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read barrier passed: the local state machine now reflects every write committed
    /// before the read was asked for. Serve the read from it.
    ReadReady,
    Failed(NodeError),
}

/// An answer for a waiting client call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub req: RequestId,
    pub outcome: Outcome,
}

/// Why a leader did not place a forwarded proposal. Carried back to the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardError {
    /// The receiver does not lead (any more). Nothing was appended: retrying is safe.
    NotLeader,
    /// The leader's applying lags its committing too far: the client should back off.
    TooManyRequests,
}

/// Messages between drivers that are not Raft's own: forwarding a proposal from a
/// follower to the leader and telling the follower where it landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFrame {
    /// A client proposal made on a follower, for the leader to place in its log.
    Forward { req_id: u64, data: Bytes },
    /// Where the forwarded proposal `req_id` landed (index, term), or why it did not.
    ForwardResult {
        req_id: u64,
        result: Result<(Index, Term), ForwardError>,
    },
}

/// One durable write: the snapshot (if any) replaces the stored log, then `entries` are
/// appended (truncating from `entries[0].index` if the store holds that index), then the
/// hard state is recorded.
#[derive(Clone, Debug, Default)]
pub struct PersistBatch {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    /// Fsync before going on (see [`crate::must_sync`]). False only for a write that
    /// changes nothing but the commit index: a crash may lose it.
    pub sync: bool,
}

impl PersistBatch {
    /// Take the hard state out of the batch, for a caller that writes it on its own first
    /// ([`Effects::apply_first`]: then it changes nothing but the commit index, and that
    /// write needs no fsync). The entries that stay keep `sync`.
    pub fn take_commit(&mut self) -> Option<HardState> {
        self.hard_state.take()
    }
}

/// One committed entry to apply, and whom its result answers.
#[derive(Clone, Debug)]
pub struct ApplyItem {
    pub entry: Entry,
    /// The local client call that proposed this entry (same index, same term). Answer it
    /// with the result of applying the entry; an entry that yields no result (a no-op)
    /// answers it with [`NodeError::LeaderChanged`].
    pub answers: Option<RequestId>,
}

/// A snapshot the driver wants taken: serialise the state machine as it is now (it is
/// at `meta.index`), write it durably in the background, then call
/// [`crate::Driver::snapshot_written`].
pub type SnapshotRequest = SnapshotMeta;

/// Work for the caller, to be carried out in field order (see `docs/node-driver.md`),
/// then acknowledged with [`crate::Driver::advance`].
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// Changed leader or role, if any (for logs and status).
    pub soft_state: Option<SoftState>,
    /// The caller may apply and answer *before* writing `persist`'s entries: write
    /// `persist.hard_state` first without an fsync ([`PersistBatch::take_commit`]), then
    /// `install_snapshot` (never set then), `apply` and `replies`, then the entries with their
    /// fsync and `persisted_messages`. Set only on a leader, for a batch that appends entries
    /// and changes neither term nor vote: everything in `apply` was durable here before this
    /// batch, so its clients need not wait for the fsync of entries proposed after theirs,
    /// while a follower's acknowledgements (which commit depends on) still go out first.
    pub apply_first: bool,
    /// Raft messages that may leave before `persist` is durable.
    pub messages: Vec<Message>,
    /// Forwarding frames, which never depend on `persist`.
    pub frames: Vec<(NodeId, PeerFrame)>,
    /// The durable write, if any.
    pub persist: Option<PersistBatch>,
    /// Raft messages that may leave only once `persist` is durable (votes, append acks).
    pub persisted_messages: Vec<Message>,
    /// A snapshot from the leader to load into the state machine (it is in `persist`).
    pub install_snapshot: Option<Snapshot>,
    /// Committed entries to apply, in order, after `install_snapshot`.
    pub apply: Vec<ApplyItem>,
    /// Answers to deliver once `apply` is done (a read released here relies on it).
    pub replies: Vec<Reply>,
    /// Read points the core confirmed for contexts the driver did not ask for (a test
    /// that called the core's `read_index` directly). Nothing to do for a server.
    pub read_states: Vec<ReadState>,
    /// Start a snapshot of the state machine, after `advance`.
    pub start_snapshot: Option<SnapshotRequest>,
    /// Learners the driver proposed to promote since the last batch, with what it saw
    /// (their entries are in `messages`/`persist` like any other). Nothing to carry out:
    /// for logs and checks.
    pub promotions: Vec<crate::Promotion>,
}
