//! The apply stage under a real node thread: a one-member node with a state machine whose
//! apply of one entry blocks until the test lets it go.
//!
//! What it shows: while an apply is stuck, the node thread goes on (it commits the next
//! proposal and keeps its leadership fresh), and the stage still answers in order: the
//! proposals after the stuck one, and a linearizable read asked meanwhile, are answered
//! only once the stuck entry is applied.

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{channel, spawn, NodeHandle, NodeParams, StateMachine};
use crate::transport::{LocalIdentity, Transport};

/// Entries whose data is this block their apply until [`Gate::open`].
const STUCK: &[u8] = b"stuck";

/// Where a stuck apply waits, and how the test sees that it got there.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (an apply is waiting, the gate is open)
    changed: Condvar,
}

impl Gate {
    fn wait_here(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        self.changed.notify_all();
        while !s.1 {
            s = self.changed.wait(s).unwrap();
        }
    }

    fn wait_for_applier(&self, within: Duration) -> bool {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, within, |s| !s.0)
            .unwrap();
        s.0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// Applies answer with their entry's index; a [`STUCK`] entry waits at the gate first.
struct Gated {
    gate: Arc<Gate>,
}

impl StateMachine for Gated {
    type Output = u64;
    type View = ();
    fn apply(&mut self, entry: &raft::Entry) -> Option<u64> {
        if entry.data.is_empty() {
            return None; // a leader's no-op
        }
        if entry.data == STUCK {
            self.gate.wait_here();
        }
        Some(entry.index)
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

/// A one-member node on a fresh data dir in `dir`, leading once its election is over.
fn single_member(dir: &std::path::Path, gate: Arc<Gate>) -> NodeHandle<Gated> {
    let opts = storage::StorageOptions::new(1, 1);
    let (storage, recovered) =
        storage::Storage::open(Arc::new(storage::RealFs), dir, &opts).expect("data dir");
    let initial = recovered.initial_state(raft::ConfState {
        voters: vec![1],
        learners: vec![],
    });
    let raft = raft::RaftNode::new(raft::Config::new(1), initial).expect("core");
    let state = Arc::new(RwLock::new(Gated { gate }));
    let (handle, inbox) = channel(1, 1, state.clone(), Duration::from_secs(30));
    let local = LocalIdentity {
        cluster_id: 1,
        member_id: 1,
        incarnation: 1,
        name: "stage-test".into(),
        client_urls: vec![],
    };
    let transport = Transport::start(local, &[], handle.peer_sink(), CancellationToken::new());
    let params = NodeParams {
        id: 1,
        cluster_id: 1,
        raft,
        storage,
        state,
        applied: 0,
        applied_term: 0,
        tick: Duration::from_millis(10),
        election_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_secs(30),
        snapshot_count: 0,
        tick_interval: Arc::new(|t| t),
    };
    spawn(params, &handle, inbox, transport).expect("node thread");
    handle
}

/// Polls `cond` every millisecond until it holds or `within` passed.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_apply_holds_up_the_answers_behind_it_but_not_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let node = single_member(dir.path(), gate.clone());
    let status = node.status.clone();
    assert!(
        eventually(Duration::from_secs(10), || status.leader() == Some(1)).await,
        "the member did not elect itself"
    );
    // The first write settles the leader's no-op, so the indexes below are known.
    let first = node.propose(Bytes::from_static(b"first")).await.unwrap();

    let stuck = tokio::spawn({
        let node = node.clone();
        async move { node.propose(Bytes::from_static(STUCK)).await }
    });
    let gate_for_wait = gate.clone();
    let reached = tokio::task::spawn_blocking(move || {
        gate_for_wait.wait_for_applier(Duration::from_secs(10))
    });
    assert!(reached.await.unwrap(), "the stuck entry was never applied");

    // The apply is stuck. The node thread still takes the next write into the log and
    // commits it, and still finds itself leading, round after round.
    let after = tokio::spawn({
        let node = node.clone();
        async move { node.propose(Bytes::from_static(b"after")).await }
    });
    let read = tokio::spawn({
        let node = node.clone();
        async move { node.read_barrier().await }
    });
    let stuck_index = first + 1;
    assert!(
        eventually(Duration::from_secs(10), || status.commit() > stuck_index).await,
        "the write after the stuck apply was not committed (commit {})",
        status.commit()
    );
    assert_eq!(
        status.applied(),
        first,
        "nothing after the stuck entry may count as applied"
    );
    let leading_since = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || {
            leading_since.elapsed() > Duration::from_millis(300)
                && status.leads_within(Duration::from_millis(50))
        })
        .await,
        "the node thread stopped coming round while the apply was stuck"
    );
    // Nothing behind the stuck entry is answered: not the write, not the read.
    assert!(!stuck.is_finished() && !after.is_finished() && !read.is_finished());

    gate.open();
    assert_eq!(stuck.await.unwrap().unwrap(), stuck_index);
    assert_eq!(after.await.unwrap().unwrap(), stuck_index + 1);
    read.await
        .unwrap()
        .expect("the read is served once the entries before it are applied");
    assert!(status.applied() > stuck_index);
    node.shutdown();
}
