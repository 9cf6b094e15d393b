//! Keep-alives that reach one member together become one log entry
//! (`InternalRequest::LeaseKeepAlives`).
//!
//! Why: with every keep-alive its own entry, each one paid for a proposal message to the
//! node thread, a Raft entry, a WAL record, its replication, and a decode and apply on
//! every member. Many streams renewing at once (a fleet of sessions) spent most of the
//! cluster's CPU on that per-entry cost (docs/lease.md, "Keep-alives").
//!
//! How: a keep-alive joins its member's queue (`Context::keep_alives`). The first one to find the queue empty
//! spawns a proposer task, which first yields once (so that the keep-alives whose
//! requests are already readable on other streams run and join the queue: no timer, so a
//! keep-alive alone is proposed at once), then takes everything queued (at most
//! [`MAX_BATCH`]) and proposes it as one entry. It takes the queue *before* it proposes, so
//! the next keep-alive starts the next batch at once: batches do not wait for each other
//! (the node thread already group-commits whatever proposals it finds). Each waiter gets
//! its own ID's answer; a failure of the proposal (no leader, timeout, overload) is each
//! waiter's error.
//!
//! The entry is proposed ahead of the writes waiting for room (`NodeHandle::propose_ahead`):
//! a keep-alive that waited in that line behind a burst of big writes could arrive after
//! its lease ran out, although the client sent it in time (etcd#18100's symptom).
//!
//! An ID queued twice in one batch (two streams renewing the same lease) stays twice in
//! the entry: each occurrence is a renewal, as two separate entries would have been, and
//! each waiter gets its own answer.
//!
//! Mixed builds: a member from before the batched entry would apply it as an empty request
//! and its replica would diverge. So the batch is proposed only once every peer advertised
//! that it applies it (`transport::codec::FEATURE_LEASE_KEEP_ALIVES`, in the peer
//! handshake); until then, during a rolling upgrade or while a peer was never reached, each
//! keep-alive of the batch goes into an entry of its own (`LeaseKeepAliveRequest`, which
//! every build applies), all proposed at once.

use std::sync::{Mutex, MutexGuard, PoisonError};

use mvcc::Response as Applied;
use proto::etcdserverpb::LeaseKeepAliveRequest;
use proto::raftkvpb::{internal_request::Request as Internal, LeaseKeepAlives};
use tokio::sync::oneshot;
use tonic::Status;

use super::lease::{propose_renewals, LeaseService};
use super::Context;
use crate::errors::ServerError;

/// Most keep-alives in one entry: at most about 11 bytes each once encoded, so an entry
/// stays below 45 KiB, far under any request size limit, and one apply stays short.
pub(super) const MAX_BATCH: usize = 4096;

/// What a waiter learns: the lease's granted TTL in seconds, 0 for an unknown or expired
/// lease, or the error of the whole proposal.
type Answer = Result<i64, Status>;

type Waiting = Vec<(i64, oneshot::Sender<Answer>)>;

/// One member's keep-alives waiting for a proposer (the member's `Context` holds it).
/// `Some` exactly while a proposer task is scheduled, so that the next keep-alive knows
/// whether to start one.
#[derive(Debug, Default)]
pub struct KeepAliveQueue(Mutex<Option<Waiting>>);

impl KeepAliveQueue {
    fn lock(&self) -> MutexGuard<'_, Option<Waiting>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Renews lease `id` through the log, in one entry with whatever other keep-alives this
/// member takes meanwhile: the granted TTL in seconds once this member applied the
/// entry, 0 if the lease does not exist (then), or the proposal's error.
pub(super) async fn renew(ctx: &Context, id: i64) -> Answer {
    let (tx, rx) = oneshot::channel();
    let first = {
        let mut queue = ctx.keep_alives.lock();
        match queue.as_mut() {
            Some(waiting) => {
                waiting.push((id, tx));
                false
            }
            None => {
                *queue = Some(vec![(id, tx)]);
                true
            }
        }
    };
    if first {
        schedule(ctx.clone());
    }
    // Dropped unanswered only if the proposer task was dropped: the runtime is stopping.
    rx.await
        .unwrap_or_else(|_| Err(ServerError::Stopped.into()))
}

/// Starts a proposer for the member's queue. (A plain function, so that a proposer may
/// start the next without its future's type depending on itself.)
fn schedule(ctx: Context) {
    tokio::spawn(propose_batch(ctx));
}

/// Takes up to [`MAX_BATCH`] queued keep-alives (after letting the ready ones join) and
/// proposes them as one entry; a remainder gets its own proposer at once.
async fn propose_batch(ctx: Context) {
    tokio::task::yield_now().await;
    let batch = {
        let mut queue = ctx.keep_alives.lock();
        let Some(waiting) = queue.as_mut() else {
            return;
        };
        if waiting.len() > MAX_BATCH {
            let rest = waiting.split_off(MAX_BATCH);
            let batch = std::mem::replace(waiting, rest);
            schedule(ctx.clone());
            batch
        } else {
            queue.take().unwrap_or_default()
        }
    };
    let (ids, waiters): (Vec<i64>, Vec<_>) = batch.into_iter().unzip();
    let answers = if ctx
        .transport
        .every_peer_advertises(crate::transport::codec::FEATURE_LEASE_KEEP_ALIVES)
    {
        renew_together(&ctx, ids, waiters.len()).await
    } else {
        renew_one_by_one(&ctx, ids).await
    };
    for (waiter, answer) in waiters.into_iter().zip(answers) {
        // A waiter whose stream was closed meanwhile is gone; nothing to tell it.
        let _ = waiter.send(answer);
    }
}

/// The batch as one `LeaseKeepAlives` entry: each ID's answer, in order.
async fn renew_together(ctx: &Context, ids: Vec<i64>, waiters: usize) -> Vec<Answer> {
    match propose_renewals(ctx, Internal::LeaseKeepAlives(LeaseKeepAlives { ids })).await {
        Ok(Applied::LeaseKeepAlives(ttls)) if ttls.len() == waiters => {
            ttls.into_iter().map(Ok).collect()
        }
        Ok(_) => vec![Err(unexpected()); waiters],
        Err(e) => vec![Err(e); waiters],
    }
}

/// Each ID in an entry of its own, the form every build applies, all proposed at once (the
/// node thread still commits together what it finds queued): each ID's answer, in order.
async fn renew_one_by_one(ctx: &Context, ids: Vec<i64>) -> Vec<Answer> {
    let proposals: Vec<_> = ids
        .into_iter()
        .map(|id| tokio::spawn(renew_alone(ctx.clone(), id)))
        .collect();
    let mut answers = Vec::with_capacity(proposals.len());
    for p in proposals {
        // A proposal task ends only by answering, or dropped when the runtime stops.
        answers.push(p.await.unwrap_or_else(|_| Err(ServerError::Stopped.into())));
    }
    answers
}

/// One keep-alive as its own `LeaseKeepAliveRequest` entry; an unknown lease answers 0, as
/// in a batch.
async fn renew_alone(ctx: Context, id: i64) -> Answer {
    match propose_renewals(&ctx, Internal::LeaseKeepAlive(LeaseKeepAliveRequest { id })).await {
        Ok(Applied::LeaseKeepAlive(r)) => Ok(r.ttl),
        Ok(_) => Err(unexpected()),
        // `etcdserver: requested lease not found`, the only NotFound a keep-alive applies.
        Err(e) if e.code() == tonic::Code::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn unexpected() -> Status {
    LeaseService::unexpected("lease keep-alive")
}
