//! The node runtime: one OS thread owns the Raft core and the storage and drives the
//! core's `Ready` contract; everything else talks to it through [`NodeHandle`].
//!
//! Why a dedicated thread rather than a tokio task: the loop does blocking work (the WAL
//! fsync, applying to the state machine) on every iteration, and it must never be starved
//! by, or starve, the gRPC tasks. Inputs arrive on one channel and are drained in batches,
//! so many proposals share one `Ready` and one fsync (group commit).

pub mod probe;
mod runtime;
pub mod state_machine;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::errors::ServerError;
use crate::transport::PeerEvent;
pub use runtime::{channel, spawn, NodeParams};
pub use state_machine::StateMachine;

/// The answer to a proposal: the state machine's output, or why it did not apply.
pub type ProposeResult<O> = Result<O, ServerError>;

/// Work for the node thread.
pub enum Input<O> {
    Peer(PeerEvent),
    Propose(Bytes, oneshot::Sender<ProposeResult<O>>),
    /// Answer once a linearizable read may be served from the local state machine.
    Read(oneshot::Sender<Result<(), ServerError>>),
    /// The background snapshot writer finished.
    SnapshotWritten(Result<(storage::WrittenSnapshot, raft::Snapshot), String>),
    Shutdown,
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
}

/// A cheap, cloneable way to submit work to the node and to read its state.
pub struct NodeHandle<S: StateMachine> {
    pub id: u64,
    pub cluster_id: u64,
    tx: mpsc::Sender<Input<S::Output>>,
    pub status: Arc<SharedStatus>,
    pub state: Arc<RwLock<S>>,
    timeout: Duration,
}

impl<S: StateMachine> Clone for NodeHandle<S> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            cluster_id: self.cluster_id,
            tx: self.tx.clone(),
            status: self.status.clone(),
            state: self.state.clone(),
            timeout: self.timeout,
        }
    }
}

impl<S: StateMachine> NodeHandle<S> {
    /// Replicate `data` through the log and return what applying it produced.
    pub async fn propose(&self, data: Bytes) -> ProposeResult<S::Output> {
        probe::mark("rpc_in", 0);
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Propose(data, tx))
            .map_err(|_| ServerError::Stopped)?;
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
        self.tx
            .send(Input::Read(tx))
            .map_err(|_| ServerError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Ask the node thread to stop (it answers pending requests with "server stopped").
    pub fn shutdown(&self) {
        let _ = self.tx.send(Input::Shutdown);
    }

    /// The sender the transport uses to deliver peer frames.
    pub fn peer_sink(&self) -> crate::transport::Sink {
        let tx = self.tx.clone();
        Arc::new(move |ev| {
            let _ = tx.send(Input::Peer(ev));
        })
    }
}
