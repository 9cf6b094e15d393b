//! Keep-alives that reach one member together become one log entry
//! (`InternalRequest::LeaseKeepAlives`).
//!
//! Why: with every keep-alive its own entry, each one paid for a proposal message to the
//! node thread, a Raft entry, a WAL record, its replication, and a decode and apply on
//! every member. Many streams renewing at once (a fleet of sessions) spent most of the
//! cluster's CPU on that per-entry cost (docs/lease.md, "Keep-alives").
//!
//! How: a keep-alive joins its member's queue (`Context::keep_alives`). One that finds no
//! proposer scheduled and fewer than [`MAX_IN_FLIGHT`] batches in flight spawns one (else
//! the first batch to be answered does), which first yields once (so that the keep-alives whose
//! requests are already readable on other streams run and join the queue: no timer, so a
//! keep-alive alone is proposed at once), then takes everything queued (at most
//! [`MAX_BATCH`]) and proposes it as one entry. It takes the queue *before* it proposes, so
//! the next keep-alive can start the next batch while this one commits; but at most
//! [`MAX_IN_FLIGHT`] batches are in flight per member, and the keep-alives that arrive
//! while they are wait for the first of them to be answered and then go together (up to
//! [`MAX_BATCH`]; the rest waits for the next free place). A batch unanswered after
//! [`HOLDS_PLACE_FOR`] gives its place up while it goes on waiting, so one stuck proposal
//! (a forward whose answer was lost waits for the request timeout) cannot hold up the
//! keep-alives after it for longer than that.
//!
//! Why the bound: without it, how many keep-alives share an entry depended on how the
//! scheduler interleaved the streams and the proposers. On a busy machine the proposer ran
//! at once on the other core and found one or two keep-alives each time (2,000 pipelined
//! keep-alives took 288 entries in one CI run, 7 each), so the per-entry cost grew exactly
//! when the machine had least to spare. With the bound, the busier the member, the fuller
//! each entry; a keep-alive that finds nothing in flight is still proposed at once. Each
//! waiter gets its own ID's answer; a failure of the proposal (no leader, timeout,
//! overload) is each waiter's error.
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
use std::time::Duration;

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

/// Most batches proposed and not yet answered, per member: one committing while the next
/// is proposed, so a member's batches overlap without splintering (module doc).
pub(super) const MAX_IN_FLIGHT: usize = 2;

/// How long a batch counts against [`MAX_IN_FLIGHT`]: far longer than a commit round on a
/// working member, far shorter than the shortest TTL (2 s with etcd's defaults).
const HOLDS_PLACE_FOR: Duration = Duration::from_millis(100);

/// What a waiter learns: the lease's granted TTL in seconds, 0 for an unknown or expired
/// lease, or the error of the whole proposal.
type Answer = Result<i64, Status>;

type Waiter = (i64, oneshot::Sender<Answer>);

/// One member's keep-alives waiting for a proposer (the member's `Context` holds it).
#[derive(Debug, Default)]
pub struct KeepAliveQueue(Mutex<Batches<Waiter>>);

impl KeepAliveQueue {
    fn lock(&self) -> MutexGuard<'_, Batches<Waiter>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When a batch is proposed: the queue, whether a proposer is scheduled to take it, and
/// how many batches are in flight. Pure, so the rules are unit-tested without a member;
/// each method that answers `true` tells its caller to start a proposer.
#[derive(Debug)]
struct Batches<T> {
    waiting: Vec<T>,
    scheduled: bool,
    in_flight: usize,
}

impl<T> Default for Batches<T> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            scheduled: false,
            in_flight: 0,
        }
    }
}

impl<T> Batches<T> {
    /// Queues one; a proposer starts unless one is scheduled or the member has
    /// [`MAX_IN_FLIGHT`] batches in flight (then the first to be answered starts it).
    fn push(&mut self, item: T) -> bool {
        self.waiting.push(item);
        self.schedule_if_due()
    }

    /// The scheduled proposer takes its batch: the first `max` queued, in order. It counts
    /// as in flight until [`Batches::answered`]; a remainder gets a proposer of its own if
    /// the bound allows.
    fn take(&mut self, max: usize) -> (Vec<T>, bool) {
        self.scheduled = false;
        let rest = self.waiting.split_off(max.min(self.waiting.len()));
        let batch = std::mem::replace(&mut self.waiting, rest);
        if !batch.is_empty() {
            self.in_flight += 1;
        }
        (batch, self.schedule_if_due())
    }

    /// A batch's proposal was answered (or gave its place up): what queued meanwhile gets
    /// its proposer.
    fn answered(&mut self) -> bool {
        debug_assert!(self.in_flight > 0, "a batch answered twice");
        self.in_flight = self.in_flight.saturating_sub(1);
        self.schedule_if_due()
    }

    fn schedule_if_due(&mut self) -> bool {
        let due = !self.scheduled && !self.waiting.is_empty() && self.in_flight < MAX_IN_FLIGHT;
        if due {
            self.scheduled = true;
        }
        due
    }
}

/// Renews lease `id` through the log, in one entry with whatever other keep-alives this
/// member takes meanwhile: the granted TTL in seconds once this member applied the
/// entry, 0 if the lease does not exist (then), or the proposal's error.
pub(super) async fn renew(ctx: &Context, id: i64) -> Answer {
    let (tx, rx) = oneshot::channel();
    let start = ctx.keep_alives.lock().push((id, tx));
    if start {
        schedule(ctx.clone());
    }
    // Dropped unanswered only if the proposer task was dropped: the runtime is stopping.
    rx.await
        .unwrap_or_else(|_| Err(ServerError::Stopped.into()))
}

/// Starts a proposer for the member's queue. (A plain function, so that a proposer may
/// start the next without its future's type depending on itself.) Without a runtime,
/// which happens only while the process exits and a [`Place`] is dropped, nothing is
/// waiting and nothing starts.
fn schedule(ctx: Context) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(propose_batch(ctx));
    }
}

/// A batch's place among the [`MAX_IN_FLIGHT`], given back when dropped: after the
/// answer, after [`HOLDS_PLACE_FOR`], or if the proposer task ends any other way (a panic,
/// the runtime stopping), so that no place is ever lost.
struct Place(Option<Context>);

impl Place {
    fn give_up(&mut self) {
        let Some(ctx) = self.0.take() else {
            return;
        };
        if ctx.keep_alives.lock().answered() {
            schedule(ctx);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.give_up();
    }
}

/// Takes up to [`MAX_BATCH`] queued keep-alives (after letting the ready ones join) and
/// proposes them as one entry; once answered, starts the proposer for what queued
/// meanwhile.
async fn propose_batch(ctx: Context) {
    tokio::task::yield_now().await;
    let (batch, another) = ctx.keep_alives.lock().take(MAX_BATCH);
    if another {
        schedule(ctx.clone());
    }
    if batch.is_empty() {
        return;
    }
    let mut place = Place(Some(ctx.clone()));
    let (ids, waiters): (Vec<i64>, Vec<_>) = batch.into_iter().unzip();
    let count = waiters.len();
    let proposal = async {
        if ctx
            .transport
            .every_peer_advertises(crate::transport::codec::FEATURE_LEASE_KEEP_ALIVES)
        {
            renew_together(&ctx, ids, count).await
        } else {
            renew_one_by_one(&ctx, ids).await
        }
    };
    tokio::pin!(proposal);
    let answers = match tokio::time::timeout(HOLDS_PLACE_FOR, &mut proposal).await {
        Ok(answers) => answers,
        Err(_) => {
            place.give_up();
            proposal.await
        }
    };
    // Before the answers go out, so that the keep-alives they release find the next
    // proposer already counted.
    drop(place);
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

#[cfg(test)]
mod tests {
    use super::{Batches, MAX_IN_FLIGHT};

    #[test]
    fn a_keep_alive_alone_is_proposed_at_once() {
        let mut b = Batches::default();
        assert!(b.push(1), "the first keep-alive starts a proposer");
        assert!(
            !b.push(2),
            "the second joins the scheduled proposer's batch"
        );
        assert_eq!(b.take(10), (vec![1, 2], false));
        assert!(
            b.push(3),
            "with one batch in flight the next starts its own"
        );
    }

    #[test]
    fn what_arrives_while_the_bound_is_reached_waits_for_the_first_answer_and_goes_together() {
        let mut b = Batches::default();
        for n in 0..MAX_IN_FLIGHT {
            assert!(b.push(n));
            assert_eq!(b.take(10), (vec![n], false));
        }
        for n in 0..50 {
            assert!(
                !b.push(100 + n),
                "no proposer while {MAX_IN_FLIGHT} are in flight"
            );
        }
        assert!(
            b.answered(),
            "the first answer starts the waiting batch's proposer"
        );
        assert!(!b.answered(), "one proposer is enough for one batch");
        let (batch, another) = b.take(1000);
        assert_eq!(batch, (100..150).collect::<Vec<_>>());
        assert!(!another);
        assert!(!b.answered(), "nothing queued: no proposer");
        assert_eq!(b.in_flight, 0);
    }

    #[test]
    fn a_batch_over_the_limit_leaves_the_rest_to_the_next_proposer() {
        let mut b = Batches::default();
        assert!(b.push(0));
        for n in 1..10 {
            assert!(!b.push(n));
        }
        assert_eq!(
            b.take(4),
            (vec![0, 1, 2, 3], true),
            "the rest gets its proposer"
        );
        let (second, another) = b.take(4);
        assert_eq!(second, vec![4, 5, 6, 7]);
        assert!(!another, "two in flight: the remainder waits for an answer");
        assert!(b.answered());
        assert_eq!(b.take(4), (vec![8, 9], false));
    }
}
