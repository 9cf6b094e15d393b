//! Keep-alives that reach one member together become one log entry
//! (`InternalRequest::LeaseKeepAlives`).
//!
//! Why: with every keep-alive its own entry, each one paid for a proposal message to the
//! node thread, a Raft entry, a WAL record, its replication, and a decode and apply on
//! every member. Many streams renewing at once (a fleet of sessions) spent most of the
//! cluster's CPU on that per-entry cost (docs/lease.md, "Keep-alives").
//!
//! How: a keep-alive joins its member's queue. The first one to find the queue empty
//! spawns a proposer task, which first yields once (so that the keep-alives whose
//! requests are already readable on other streams run and join the queue: no timer, so a
//! keep-alive alone is proposed at once), then takes everything queued (at most
//! [`MAX_BATCH`]) and proposes it as one entry. It takes the queue *before* it proposes, so
//! the next keep-alive starts the next batch at once: batches do not wait for each other
//! (the node thread already group-commits whatever proposals it finds). Each waiter gets
//! its own ID's answer; a failure of the proposal (no leader, timeout, overload) is each
//! waiter's error.
//!
//! An ID queued twice in one batch (two streams renewing the same lease) stays twice in
//! the entry: each occurrence is a renewal, as two separate entries would have been, and
//! each waiter gets its own answer.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use mvcc::Response as Applied;
use prost::Message as _;
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest, LeaseKeepAlives};
use tokio::sync::oneshot;
use tonic::Status;

use super::Context;
use crate::errors::ServerError;

/// Most keep-alives in one entry: at most about 11 bytes each once encoded, so an entry
/// stays below 45 KiB, far under any request size limit, and one apply stays short.
pub(super) const MAX_BATCH: usize = 4096;

/// What a waiter learns: the lease's granted TTL in seconds, 0 for an unknown or expired
/// lease, or the error of the whole proposal.
type Answer = Result<i64, Status>;

/// The keep-alives waiting for a proposer, per member: each lease ID with its waiter.
type Queues = HashMap<usize, Vec<(i64, oneshot::Sender<Answer>)>>;

/// The queues of every member in this process. A member is present exactly while a
/// proposer task is scheduled for it (so the next keep-alive knows whether to spawn one).
/// Keyed by the member's node status (by address), as `RenewalLog` is, because tests run
/// several members in one process.
fn queues() -> MutexGuard<'static, Queues> {
    static QUEUES: OnceLock<Mutex<Queues>> = OnceLock::new();
    QUEUES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn member_of(ctx: &Context) -> usize {
    std::sync::Arc::as_ptr(&ctx.node.status) as usize
}

/// Renews lease `id` through the log, in one entry with whatever other keep-alives this
/// member takes meanwhile: the granted TTL in seconds once this member applied the
/// entry, 0 if the lease does not exist (then), or the proposal's error.
pub(super) async fn renew(ctx: &Context, id: i64) -> Answer {
    let (tx, rx) = oneshot::channel();
    let member = member_of(ctx);
    let first = match queues().entry(member) {
        Entry::Occupied(mut queued) => {
            queued.get_mut().push((id, tx));
            false
        }
        Entry::Vacant(empty) => {
            empty.insert(vec![(id, tx)]);
            true
        }
    };
    if first {
        schedule(ctx.clone(), member);
    }
    // Dropped unanswered only if the proposer task was dropped: the runtime is stopping.
    rx.await
        .unwrap_or_else(|_| Err(ServerError::Stopped.into()))
}

/// Starts a proposer for `member`'s queue. (A plain function, so that a proposer may start
/// the next without its future's type depending on itself.)
fn schedule(ctx: Context, member: usize) {
    tokio::spawn(propose_batch(ctx, member));
}

/// Takes up to [`MAX_BATCH`] queued keep-alives of `member` (after letting the ready ones
/// join) and proposes them as one entry; a remainder gets its own proposer at once.
async fn propose_batch(ctx: Context, member: usize) {
    tokio::task::yield_now().await;
    let batch = {
        let mut queues = queues();
        let Entry::Occupied(mut queued) = queues.entry(member) else {
            return;
        };
        if queued.get().len() > MAX_BATCH {
            let rest = queued.get_mut().split_off(MAX_BATCH);
            let batch = std::mem::replace(queued.get_mut(), rest);
            schedule(ctx.clone(), member);
            batch
        } else {
            queued.remove()
        }
    };
    let (ids, waiters): (Vec<i64>, Vec<_>) = batch.into_iter().unzip();
    let data = InternalRequest {
        auth: None,
        request: Some(Internal::LeaseKeepAlives(LeaseKeepAlives { ids })),
    }
    .encode_to_vec();
    let answers: Vec<Answer> = match ctx.node.propose(Bytes::from(data)).await {
        Ok(Ok(Applied::LeaseKeepAlives(ttls))) if ttls.len() == waiters.len() => {
            ttls.into_iter().map(Ok).collect()
        }
        Ok(Ok(_)) => vec![Err(unexpected()); waiters.len()],
        Ok(Err(e)) => vec![Err(Status::from(e)); waiters.len()],
        Err(e) => vec![Err(Status::from(e)); waiters.len()],
    };
    for (waiter, answer) in waiters.into_iter().zip(answers) {
        // A waiter whose stream was closed meanwhile is gone; nothing to tell it.
        let _ = waiter.send(answer);
    }
}

fn unexpected() -> Status {
    Status::internal("etcdserver: unexpected apply result for lease keep-alive")
}
