//! Admission of proposals by bytes: overload makes requests wait, not fail.
//!
//! Why: a member used to hand every proposal to the node thread at once and start its
//! request timeout then. With 500 clients writing 512 KiB values, 250 MiB of proposals
//! (and, on followers, as many forwards to the leader) queued in front of a leader that
//! commits a few MiB per second on a loaded machine: a request spent most of the 7 s
//! timeout in the queue and failed with `request timed out`, although nothing was wrong
//! but load (issue 18). Followers' forwards beyond the 64 MiB peer backlog were dropped,
//! and those requests failed at the timeout too.
//!
//! So each member lets at most [`ADMITTED_BYTES`] of proposals be in flight through it (in
//! its queue, forwarded, in the log, not yet applied); a proposal that does not fit waits
//! for room, in arrival order, and its request timeout starts only once it is admitted.
//! The timeout then covers what etcd's covers (replicating and applying a proposal the
//! server took), while the wait for room is the client's to bound: its deadline cancels
//! the call, which leaves the line. The leader holds at most the members' admitted bytes
//! at once (its own and the followers' forwards), a few rounds of work
//! (`round::MAX_ROUND_BYTES`), plus at most 1 MiB per member of keep-alive entries, which
//! have a line of their own (`NodeHandle::propose_ahead`), so an admitted proposal is
//! applied well within its timeout even on a starved machine. Small values never wait:
//! 1,000 clients writing 1 KiB values have 1 MiB in flight.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Payload bytes of proposals a member has in flight at most: one leader round's budget.
/// With 512 KiB values that is 8 proposals per member, enough to fill the leader's rounds
/// (three members' admissions are three rounds) without queueing seconds of work.
pub const ADMITTED_BYTES: usize = super::round::MAX_ROUND_BYTES;

/// The gate. Cloning shares it.
#[derive(Clone)]
pub struct Admission {
    room: Arc<Semaphore>,
    capacity: usize,
}

/// Room held by an admitted proposal; given back when dropped (the call answered, failed
/// or cancelled).
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(capacity: usize) -> Admission {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Admission {
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// What a proposal of `bytes` holds: its size, at least 1 (so every proposal keeps its
    /// place in line) and at most the whole capacity (so a proposal larger than it is
    /// admitted alone rather than never).
    fn charge(&self, bytes: usize) -> u32 {
        bytes.clamp(1, self.capacity) as u32
    }

    /// Wait until a proposal of `bytes` fits. Waiters are admitted in arrival order: a
    /// small proposal does not overtake a large one that waits for room.
    pub async fn admit(&self, bytes: usize) -> Admitted {
        let permit = self
            .room
            .clone()
            .acquire_many_owned(self.charge(bytes))
            .await
            .expect("the admission semaphore is never closed");
        Admitted { _permit: permit }
    }

    /// Bytes of room free now (for tests and status).
    pub fn available(&self) -> usize {
        self.room.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_proposal_waits_for_room_and_enters_when_one_in_flight_is_done() {
        let gate = Admission::new(100);
        let first = gate.admit(60).await;
        let mut second = Box::pin(gate.admit(60));
        assert!(
            (&mut second).now_or_never().is_none(),
            "60 + 60 bytes exceed the 100 of room: the second waits"
        );
        drop(first);
        let second = second
            .now_or_never()
            .expect("admitted once the first is done");
        assert_eq!(gate.available(), 40);
        drop(second);
        assert_eq!(gate.available(), 100);
    }

    #[tokio::test]
    async fn waiters_enter_in_arrival_order_a_small_one_does_not_overtake() {
        let gate = Admission::new(100);
        let held = gate.admit(90).await;
        let mut big = Box::pin(gate.admit(50));
        assert!((&mut big).now_or_never().is_none());
        // 10 bytes are free, but the 50-byte proposal came first.
        let mut small = Box::pin(gate.admit(5));
        assert!((&mut small).now_or_never().is_none());
        drop(held);
        assert!(big.now_or_never().is_some());
        assert!(small.now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_proposal_larger_than_the_room_is_admitted_alone_and_empty_ones_queue() {
        let gate = Admission::new(100);
        let huge = gate.admit(1 << 30).await;
        assert_eq!(gate.available(), 0);
        let mut empty = Box::pin(gate.admit(0));
        assert!(
            (&mut empty).now_or_never().is_none(),
            "an empty proposal keeps its place in line too"
        );
        drop(huge);
        assert!(empty.now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_line_and_holds_no_room() {
        let gate = Admission::new(100);
        let held = gate.admit(100).await;
        let mut waiting = Box::pin(gate.admit(80));
        assert!((&mut waiting).now_or_never().is_none());
        // The client's deadline passed: its call (and this wait) is dropped.
        drop(waiting);
        let mut next = Box::pin(gate.admit(100));
        assert!((&mut next).now_or_never().is_none());
        drop(held);
        assert!(
            next.now_or_never().is_some(),
            "nothing left behind by the cancelled wait"
        );
    }
}
