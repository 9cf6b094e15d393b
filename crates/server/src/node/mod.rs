//! The node thread: one OS thread owns the node driver (`crates/node`), the storage and
//! the state machine, and carries out what the driver decides; everything else talks to
//! it through [`NodeHandle`].
//!
//! Why a dedicated thread rather than a tokio task: the loop does blocking work (the WAL
//! fsync, applying to the state machine) on every iteration, and it must never be starved
//! by, or starve, the gRPC tasks. Inputs arrive on one bounded channel and are drained in
//! batches, so many proposals share one `Ready` and one fsync (group commit).

pub mod admission;
mod apply_stage;
pub(crate) mod priority;
pub mod probe;
mod queue;
mod round;
mod runtime;
pub use runtime::members_added_in;
#[cfg(test)]
mod stage_tests;
pub mod state_machine;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::errors::ServerError;
pub use crate::transport::ChangeRefusal;
use crate::transport::PeerEvent;
pub use runtime::{channel, spawn, NodeParams};
pub use state_machine::StateMachine;

/// The answer to a proposal: the state machine's output, or why it did not apply.
pub type ProposeResult<O> = Result<O, ServerError>;

/// Inputs the node thread's queue holds at most. When it is full, a client proposal is
/// refused at once with `etcdserver: too many requests` and a peer frame is dropped (Raft
/// retransmits): a member that cannot keep up must push back, not queue without bound.
pub const INPUT_QUEUE: usize = 32 * 1024;

/// The largest proposal [`NodeHandle::propose_ahead`] takes ahead of the line: a full batch
/// of keep-alives is under 45 KiB (`grpc::keep_alive_batch::MAX_BATCH`).
pub const AHEAD_MAX_BYTES: usize = 64 << 10;

/// Bytes of proposals ahead of the line a member has in flight at most, each charged at
/// least [`AHEAD_MIN_CHARGE`]: so they can neither fill the control queue that heartbeats
/// and votes need (at most 1,024 of them are queued or in flight) nor make a round take
/// more than 1 MiB beyond its budget.
pub const AHEAD_ADMITTED_BYTES: usize = 1 << 20;

/// What a proposal ahead of the line holds of [`AHEAD_ADMITTED_BYTES`] at least.
pub const AHEAD_MIN_CHARGE: usize = 1 << 10;

/// Work for the node thread, stamped with when it arrived (the driver ticks to that time
/// before taking it).
pub struct Stamped<O>(pub Instant, pub Input<O>);

/// Work for the node thread.
pub enum Input<O> {
    Peer(PeerEvent),
    Propose(Bytes, oneshot::Sender<ProposeResult<O>>),
    /// A small proposal taken ahead of the bulk ones queued before it
    /// ([`NodeHandle::propose_ahead`]); otherwise handled as `Propose`.
    ProposeAhead(Bytes, oneshot::Sender<ProposeResult<O>>),
    /// Answer once a linearizable read may be served from the local state machine.
    Read(oneshot::Sender<Result<(), ServerError>>),
    /// Compact storage now (Maintenance/Defragment): snapshot everything applied and drop
    /// the log it covers; answered once that is durable (at once if nothing to compact).
    Compact(oneshot::Sender<Result<(), String>>),
    /// Hand leadership to this member (MoveLeader). Answered once the core took the request
    /// (or refused it: not the leader); the caller watches the leader change.
    TransferLeader(u64, oneshot::Sender<Result<(), ServerError>>),
    /// A membership change (a Cluster call): the leader checks it against the member list
    /// and places it; a follower sends it to the leader. Answered once the change is applied
    /// on the leader, or with why not.
    Change(raft::ConfChange, oneshot::Sender<Result<(), ChangeRefusal>>),
    /// The background snapshot writer finished.
    SnapshotWritten(Result<(storage::WrittenSnapshot, raft::Snapshot), String>),
    /// The apply stage applied a batch the node thread must act on (`apply_stage.rs`).
    Applied(Box<apply_stage::Applied>),
    /// The apply stage could not apply (the node stops).
    ApplyFailed(String),
    Shutdown,
    /// Control inputs are waiting in their own queue (`queue.rs`); nothing else to do.
    Wake,
}

impl From<ServerError> for ChangeRefusal {
    fn from(e: ServerError) -> ChangeRefusal {
        let st = tonic::Status::from(e);
        ChangeRefusal {
            retry: false,
            code: st.code() as i32,
            message: st.message().to_string(),
        }
    }
}

impl From<ChangeRefusal> for tonic::Status {
    fn from(r: ChangeRefusal) -> tonic::Status {
        tonic::Status::new(tonic::Code::from_i32(r.code), r.message)
    }
}

/// The node's state as last published by its thread, for Status, health and headers.
#[derive(Default)]
pub struct SharedStatus {
    pub leader: AtomicU64,
    pub term: AtomicU64,
    pub commit: Arc<AtomicU64>,
    pub applied: AtomicU64,
    /// 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    pub role: AtomicU8,
    /// Set when the node thread stopped because of an error.
    pub failed: AtomicBool,
    /// Last index of the local log.
    pub last_index: AtomicU64,
    /// This member is a learner in the Raft configuration it knows (Status's `isLearner`;
    /// a member added as a voter is one until the leader promotes it).
    pub learner: AtomicBool,
    /// While leader: how every member's replication stands, refreshed every
    /// [`runtime::PROGRESS_PUBLISH`] (a status page's precision, not the hot path's cost).
    /// Empty on followers.
    pub progress: Mutex<Vec<raft::PeerProgress>>,
    /// When the node thread last found this member leading (it publishes after every
    /// round); `None` while it does not. A leader whose thread has not come round for a
    /// while (a long apply, a freeze) may have been deposed without knowing it.
    pub leading_at: Mutex<Option<Instant>>,
}

impl SharedStatus {
    pub fn leader(&self) -> Option<u64> {
        match self.leader.load(Ordering::Relaxed) {
            0 => None,
            l => Some(l),
        }
    }

    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    pub fn commit(&self) -> u64 {
        self.commit.load(Ordering::Relaxed)
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn last_index(&self) -> u64 {
        self.last_index.load(Ordering::Relaxed)
    }

    pub fn is_learner(&self) -> bool {
        self.learner.load(Ordering::Relaxed)
    }

    /// This member leads, and its node thread said so within `within`: what the leader's
    /// keep-alive answers rely on (`grpc::lease`). With check-quorum a leader that lost
    /// its quorum steps down within an election timeout of its own rounds.
    pub fn leads_within(&self, within: Duration) -> bool {
        self.leading_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// The leader's view of every member's replication (empty unless this member leads).
    pub fn progress(&self) -> Vec<raft::PeerProgress> {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A cheap, cloneable way to submit work to the node and to read its state.
pub struct NodeHandle<S: StateMachine> {
    pub id: u64,
    pub cluster_id: u64,
    tx: mpsc::SyncSender<Stamped<S::Output>>,
    /// Raft control traffic and small calls, taken ahead of `tx`'s bulk inputs.
    control: Arc<queue::ControlQueue<S::Output>>,
    pub status: Arc<SharedStatus>,
    pub state: Arc<RwLock<S>>,
    timeout: Duration,
    /// Room for proposals in flight through this member (`admission.rs`).
    admission: admission::Admission,
    /// Room for proposals ahead of the line ([`NodeHandle::propose_ahead`]).
    ahead: admission::Admission,
}

impl<S: StateMachine> Clone for NodeHandle<S> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            cluster_id: self.cluster_id,
            tx: self.tx.clone(),
            control: self.control.clone(),
            status: self.status.clone(),
            state: self.state.clone(),
            timeout: self.timeout,
            admission: self.admission.clone(),
            ahead: self.ahead.clone(),
        }
    }
}

impl<S: StateMachine> NodeHandle<S> {
    /// Replicate `data` through the log and return what applying it produced. Waits for
    /// room among the proposals in flight first (`admission.rs`); the request timeout
    /// starts once the proposal is admitted, so overload shows as latency, not as
    /// `request timed out`.
    pub async fn propose(&self, data: Bytes) -> ProposeResult<S::Output> {
        let _admitted = self.admission.admit(data.len()).await;
        probe::mark("rpc_in", 0);
        let (tx, rx) = oneshot::channel();
        self.submit(Input::Propose(data, tx))?;
        self.proposal_answer(rx).await
    }

    /// Replicate a small proposal that must not wait behind bulk writes: lease renewals,
    /// which a client sends to keep its lease, and which waiting in line behind megabytes
    /// of writes would let expire although the client kept sending them (etcd#18100).
    /// It skips the admission line and goes to the node thread's control queue, which the
    /// thread empties before each bulk input, so it is placed in the log in the next round,
    /// behind the proposals already admitted (`admission.rs` bounds those), the other
    /// proposals ahead of the line and, on the leader, the followers' forwards queued
    /// before it. Concurrent proposals have no order to keep, so taking one ahead of others
    /// is no reordering a client can tell. Proposals ahead of the line have a small line of
    /// their own ([`AHEAD_ADMITTED_BYTES`]). One over [`AHEAD_MAX_BYTES`], or one that
    /// finds the control queue full, takes the admission line as any other.
    pub async fn propose_ahead(&self, data: Bytes) -> ProposeResult<S::Output> {
        if data.len() > AHEAD_MAX_BYTES {
            return self.propose(data).await;
        }
        let _admitted = self.ahead.admit(data.len().max(AHEAD_MIN_CHARGE)).await;
        let (tx, rx) = oneshot::channel();
        match self.submit(Input::ProposeAhead(data.clone(), tx)) {
            Ok(()) => self.proposal_answer(rx).await,
            Err(ServerError::TooManyRequests) => self.propose(data).await,
            Err(e) => Err(e),
        }
    }

    /// The answer to a submitted proposal, within the request timeout.
    async fn proposal_answer(
        &self,
        rx: oneshot::Receiver<ProposeResult<S::Output>>,
    ) -> ProposeResult<S::Output> {
        let r = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        };
        probe::mark("rpc_out", 0);
        r
    }

    /// Wait until the local state machine reflects every write committed before this call
    /// (ReadIndex through the leader).
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Input::Read(tx))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Snapshot the state machine and compact the log now; returns when done.
    pub async fn compact_storage(&self) -> Result<(), ServerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Input::Compact(tx))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ServerError::Storage(e)),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Have a membership change made (through the leader, one at a time). `Ok` once the
    /// leader applied it; a refusal with `retry` may succeed if asked again (a change in
    /// flight, a leader that has not committed an entry of its term yet).
    pub async fn propose_change(&self, cc: raft::ConfChange) -> Result<(), ChangeRefusal> {
        let (tx, rx) = oneshot::channel();
        let refusal = |e: ServerError| ChangeRefusal::from(e);
        self.submit(Input::Change(cc, tx)).map_err(refusal)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(refusal(ServerError::Stopped)),
            Err(_) => Err(refusal(ServerError::Timeout)),
        }
    }

    /// Ask the core to hand leadership to `target` (it must lead). Returns once the request
    /// is in the core; whether the target took over shows in [`SharedStatus::leader`].
    pub async fn transfer_leader(&self, target: u64) -> Result<(), ServerError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Input::TransferLeader(target, tx))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// How long a client call may wait (the request timeout).
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// Queue a client call; a full queue refuses it (see [`INPUT_QUEUE`]).
    fn submit(&self, input: Input<S::Output>) -> Result<(), ServerError> {
        deliver(&self.tx, &self.control, input)
    }

    /// Ask the node thread to stop (it answers pending requests with "server stopped").
    /// Queued even when the queue is full: a stop must not be lost.
    pub fn shutdown(&self) {
        let _ = self.control.push(Input::Shutdown, true, &self.tx);
    }

    /// The sender the transport uses to deliver peer events. A full queue drops a frame
    /// (Raft retransmits); never blocks the transport's task.
    pub fn peer_sink(&self) -> crate::transport::Sink {
        let tx = self.tx.clone();
        let control = self.control.clone();
        Arc::new(move |ev| {
            let _ = deliver(&tx, &control, Input::Peer(ev));
        })
    }
}

/// Queue `input` for the node thread: control traffic on its own queue, the rest on the
/// bulk channel (`queue.rs` says why). A full queue refuses it as busy.
fn deliver<O>(
    tx: &mpsc::SyncSender<Stamped<O>>,
    control: &queue::ControlQueue<O>,
    input: Input<O>,
) -> Result<(), ServerError> {
    if queue::is_control(&input) {
        return control
            .push(input, false, tx)
            .map_err(|_| ServerError::TooManyRequests);
    }
    match tx.try_send(Stamped(Instant::now(), input)) {
        Ok(()) => Ok(()),
        Err(mpsc::TrySendError::Full(_)) => Err(ServerError::TooManyRequests),
        Err(mpsc::TrySendError::Disconnected(_)) => Err(ServerError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// A state machine that holds nothing: these tests play the node thread themselves.
    struct Nothing;

    impl StateMachine for Nothing {
        type Output = u64;
        type View = ();
        fn apply(&mut self, _entry: &raft::Entry) -> Option<u64> {
            None
        }
        fn view(&self) {}
        fn encode_to(_view: &(), _sink: &mut dyn std::io::Write) -> std::io::Result<()> {
            Ok(())
        }
        fn restore(&mut self, _image: &Bytes) -> anyhow::Result<()> {
            Ok(())
        }
        fn size(&self) -> u64 {
            1
        }
    }

    /// The next proposal on the node's queue, if any (skipping wake-ups).
    fn queued(rx: &mpsc::Receiver<Stamped<u64>>) -> Option<Responder> {
        while let Ok(Stamped(_, input)) = rx.try_recv() {
            if let Input::Propose(_, r) = input {
                return Some(r);
            }
        }
        None
    }
    type Responder = oneshot::Sender<ProposeResult<u64>>;

    /// A handle and the node's bulk queue, with no thread behind it: the test plays it.
    fn idle_node() -> (NodeHandle<Nothing>, mpsc::Receiver<Stamped<u64>>) {
        let state = Arc::new(RwLock::new(Nothing));
        channel(1, 1, state, Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn a_proposal_reaches_the_node_only_once_there_is_room_for_it() {
        let (handle, rx) = idle_node();
        let full = Bytes::from(vec![7u8; admission::ADMITTED_BYTES]);
        let mut first = Box::pin(handle.propose(full.clone()));
        assert!(
            (&mut first).now_or_never().is_none(),
            "waits for its answer"
        );
        let first_answer = queued(&rx).expect("the first proposal fits and is queued");
        let mut second = Box::pin(handle.propose(Bytes::from_static(b"small")));
        assert!((&mut second).now_or_never().is_none());
        assert!(
            queued(&rx).is_none(),
            "no room: the second proposal waits outside the node's queue"
        );
        first_answer.send(Ok(1)).unwrap();
        assert_eq!(first.now_or_never(), Some(Ok(1)));
        assert!((&mut second).now_or_never().is_none());
        let second_answer = queued(&rx).expect("admitted once the first was answered");
        second_answer.send(Ok(2)).unwrap();
        assert_eq!(second.now_or_never(), Some(Ok(2)));
    }

    #[tokio::test]
    async fn a_proposal_ahead_passes_the_writes_waiting_for_room_and_the_bulk_queue() {
        let (handle, rx) = idle_node();
        let full = Bytes::from(vec![7u8; admission::ADMITTED_BYTES]);
        let mut first = Box::pin(handle.propose(full));
        assert!((&mut first).now_or_never().is_none());
        let mut waiting = Box::pin(handle.propose(Bytes::from_static(b"small write")));
        assert!((&mut waiting).now_or_never().is_none());
        let mut ahead = Box::pin(handle.propose_ahead(Bytes::from_static(b"renewals")));
        assert!(
            (&mut ahead).now_or_never().is_none(),
            "waits for its answer"
        );

        let mut control = handle.control.take_all();
        assert_eq!(control.len(), 1, "the renewals are on the control queue");
        let Some(Stamped(_, Input::ProposeAhead(data, answer))) = control.pop_front() else {
            panic!("not a proposal ahead");
        };
        assert_eq!(&data[..], b"renewals");
        answer.send(Ok(3)).unwrap();
        assert_eq!(ahead.now_or_never(), Some(Ok(3)));
        assert!(
            queued(&rx).is_some(),
            "the admitted write is on the bulk queue"
        );
        assert!(
            queued(&rx).is_none(),
            "the small write still waits for room"
        );

        let big = Bytes::from(vec![1u8; AHEAD_MAX_BYTES + 1]);
        let mut too_big = Box::pin(handle.propose_ahead(big));
        assert!((&mut too_big).now_or_never().is_none());
        assert!(
            handle.control.take_all().is_empty(),
            "a proposal over the limit takes the admission line"
        );
    }

    #[tokio::test]
    async fn proposals_ahead_of_the_line_have_a_bounded_line_of_their_own() {
        let (handle, _rx) = idle_node();
        let small = Bytes::from_static(b"renewal");
        let room = AHEAD_ADMITTED_BYTES / AHEAD_MIN_CHARGE;
        let mut in_flight = Vec::new();
        for _ in 0..room {
            // Unconstrained: polled all in one task, tokio's per-task budget would make the
            // 129th wait for room it has.
            let mut p = Box::pin(tokio::task::unconstrained(
                handle.propose_ahead(small.clone()),
            ));
            assert!((&mut p).now_or_never().is_none());
            in_flight.push(p);
        }
        assert_eq!(handle.control.take_all().len(), room);
        let mut next = Box::pin(handle.propose_ahead(small.clone()));
        assert!((&mut next).now_or_never().is_none());
        assert!(
            handle.control.take_all().is_empty(),
            "each small proposal holds {AHEAD_MIN_CHARGE} bytes: no room for one more"
        );
        drop(in_flight.pop());
        assert!((&mut next).now_or_never().is_none());
        assert_eq!(
            handle.control.take_all().len(),
            1,
            "queued once one in flight was done"
        );
    }

    #[tokio::test]
    async fn a_proposal_ahead_that_finds_the_control_queue_full_takes_the_admission_line() {
        let (handle, rx) = idle_node();
        for _ in 0..queue::CONTROL_QUEUE {
            handle
                .control
                .push(Input::Wake, false, &handle.tx)
                .expect("room in the control queue");
        }
        let mut p = Box::pin(handle.propose_ahead(Bytes::from_static(b"renewal")));
        assert!((&mut p).now_or_never().is_none());
        let answer = queued(&rx).expect("on the bulk queue, through admission");
        answer.send(Ok(5)).unwrap();
        assert_eq!(p.now_or_never(), Some(Ok(5)));
    }
}
