//! The leader's side of lease expiry: it reads this member's lease clock
//! (`node::lessor`, kept by every apply in `crate::kv`) and proposes, through the log,
//! the revocation of what ran out and checkpoints of what is left. Followers run the loop
//! too but never act (and an entry a deposed leader still proposes changes nothing at
//! apply: `mvcc::lease`).
//!
//! Before deciding that anything expired, the leader passes a read barrier: it confirms
//! it still leads (a quorum answered in its term) and has applied every renewal committed
//! until then, so a leader that was frozen, or just elected and still applying its
//! predecessor's entries, decides on an up-to-date clock.

use std::time::{Duration, Instant};

use bytes::Bytes;
use node::lessor::LeaseAt;
use prost::Message as _;
use proto::raftkvpb::{
    internal_request::Request as Internal, InternalRequest, LeaseCheckpointAt, LeaseCheckpoints,
    LeaseExpiry,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::kv::MvccMachine;
use crate::node::NodeHandle;

/// How often the leader looks for expired leases (etcd: 500 ms).
pub const SCAN_INTERVAL: Duration = Duration::from_millis(100);

/// A lease's remaining time is recorded in the log when it was last recorded this long ago
/// (docs/lease.md: the bound on expiry after a restart).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// Leases per expiry or checkpoint entry.
pub const MAX_BATCH: usize = 1000;

fn proto_at(at: LeaseAt) -> proto::raftkvpb::LeaseAt {
    proto::raftkvpb::LeaseAt {
        id: at.id,
        renewals: at.renewals,
    }
}

fn leads(node: &NodeHandle<MvccMachine>, term: u64) -> bool {
    node.status.leader() == Some(node.id) && node.status.term() == term
}

fn clock<T>(node: &NodeHandle<MvccMachine>, f: impl FnOnce(&MvccMachine) -> T) -> Option<T> {
    node.state.read().ok().map(|sm| f(&sm))
}

async fn propose(node: &NodeHandle<MvccMachine>, request: Internal) -> bool {
    let data = InternalRequest {
        auth: None,
        request: Some(request),
    }
    .encode_to_vec();
    match node.propose(Bytes::from(data)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "lease entry refused");
            false
        }
        Err(e) => {
            debug!(error = %e, "lease entry not committed");
            false
        }
    }
}

/// Runs until `shutdown`.
pub async fn run(node: NodeHandle<MvccMachine>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(SCAN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let term = node.status.term();
        if !leads(&node, term) {
            continue;
        }
        while expire_once(&node, term).await {}
        if last_checkpoint.elapsed() >= Duration::from_secs(1) {
            last_checkpoint = Instant::now();
            checkpoint_once(&node, term).await;
        }
    }
}

/// Proposes the revocation of one batch of expired leases. Returns true when a full batch
/// was revoked (there may be more).
async fn expire_once(node: &NodeHandle<MvccMachine>, term: u64) -> bool {
    let any = clock(node, |sm| {
        !sm.lessor.lessor().expired(sm.now(), 1).is_empty()
    })
    .unwrap_or(false);
    if !any {
        return false;
    }
    if node.read_barrier().await.is_err() || !leads(node, term) {
        return false;
    }
    let Some(expired) = clock(node, |sm| sm.lessor.lessor().expired(sm.now(), MAX_BATCH)) else {
        return false;
    };
    if expired.is_empty() {
        return false;
    }
    let full = expired.len() == MAX_BATCH;
    let count = expired.len();
    let ok = propose(
        node,
        Internal::LeaseExpiry(LeaseExpiry {
            term,
            leases: expired.into_iter().map(proto_at).collect(),
        }),
    )
    .await;
    if ok {
        info!(count, term, "revoked expired leases");
    }
    ok && full
}

async fn checkpoint_once(node: &NodeHandle<MvccMachine>, term: u64) {
    let Some(due) = clock(node, |sm| {
        sm.lessor
            .lessor()
            .due_checkpoints(sm.now(), CHECKPOINT_INTERVAL, MAX_BATCH)
    }) else {
        return;
    };
    if due.is_empty() {
        return;
    }
    let checkpoints = due
        .into_iter()
        .map(|(at, left)| LeaseCheckpointAt {
            lease: Some(proto_at(at)),
            remaining_ms: i64::try_from(left.as_millis()).unwrap_or(i64::MAX),
        })
        .collect();
    propose(
        node,
        Internal::LeaseCheckpoints(LeaseCheckpoints { term, checkpoints }),
    )
    .await;
}
