//! This member's lease clock (`node::lessor`) behind its own small lock, so that it can
//! be read and renewed without the state machine's lock; and the store's revision as of
//! the last apply, for the header of an answer given without that lock.
//!
//! Why: applying holds the state machine's write lock for a whole batch, and a burst of
//! big writes keeps the node thread busy for seconds. The leader answers a keep-alive
//! from this clock at once (docs/lease.md, "Keep-alives"), and must not wait for either.
//! Applies set it (every lease change), the leader's expiry loop reads it
//! (`crate::lease_expiry`), and the keep-alive fast path renews it (`grpc::lease`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use node::lessor::Lessor;

#[derive(Clone)]
pub struct LeaseClock {
    lessor: Arc<Mutex<Lessor>>,
    revision: Arc<AtomicI64>,
    epoch: Instant,
}

impl Default for LeaseClock {
    fn default() -> Self {
        LeaseClock {
            lessor: Arc::default(),
            revision: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

impl LeaseClock {
    /// The clock's time: since it was made.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The lessor. A poisoned lock (a panic while it was held) is recovered: every
    /// method of `Lessor` leaves it consistent, so the data is still sound.
    pub fn lessor(&self) -> MutexGuard<'_, Lessor> {
        self.lessor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store's revision after the last apply.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub fn set_revision(&self, revision: i64) {
        self.revision.store(revision, Ordering::Relaxed);
    }

    /// A keep-alive of `id` answered now, before the log has it: the granted TTL, or
    /// `None` when the log must decide (see `Lessor::renewed_unlogged`).
    pub fn renew_unlogged(&self, id: i64) -> Option<Duration> {
        let now = self.now();
        self.lessor().renewed_unlogged(id, now)
    }
}
