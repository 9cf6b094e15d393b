//! # node — the node driver
//!
//! Everything a member decides around the Raft core, in one deterministic piece that both
//! the server (`crates/server`, real sockets, WAL and clock) and the simulator
//! (`crates/sim`, virtual network, disk and time) run. The driver owns the
//! [`raft::RaftNode`] and the bookkeeping that used to live in the server's node thread:
//! where a client proposal goes (our log, the leader, or a parking spot while no leader is
//! known), which client waits for which log index, read barriers and their retries, the
//! commit announcement, the fsync decision, snapshot scheduling, the failure of waiters and
//! the automatic promotion of learners that were added as voters.
//!
//! It does no I/O: no threads, clock, sockets, files or async. Inputs are method calls
//! ([`Driver::tick`] with the current time, [`Driver::step_frame`], [`Driver::propose`],
//! [`Driver::read`], [`Driver::peer_connected`], [`Driver::snapshot_written`],
//! [`Driver::set_promotion_candidates`], …); effects
//! come out of [`Driver::poll`] as [`Effects`] bundles that the caller carries out in the
//! order `docs/node-driver.md` prescribes, then acknowledges with [`Driver::advance`].
//!
//! ```text
//! loop {
//!     for each input (with the time it arrived): driver.tick(t); driver.<input>(…)
//!     driver.tick(now)
//!     while let Some(fx) = driver.poll() {
//!         send fx.messages and fx.frames
//!         write fx.persist (fsync only if fx.persist.sync)
//!         send fx.persisted_messages
//!         load fx.install_snapshot, apply fx.apply (answering each entry's waiter)
//!         deliver fx.replies
//!         driver.advance()
//!         start fx.start_snapshot in the background, if any
//!     }
//! }
//! ```

mod clock;
mod driver;
mod durability;
mod effects;
mod lease_keeper;
pub mod lessor;
mod promotion;
mod reads;
mod routing;

pub use clock::TickClock;
pub use driver::{
    Driver, DriverConfig, DriverStatus, ENTRY_BYTES, IMAGE_BYTES_PER_LOG_BYTE,
    MAX_COUNTS_PER_SNAPSHOT,
};
pub use durability::must_sync;
pub use effects::{
    ApplyItem, Effects, ForwardError, NodeError, Outcome, PeerFrame, PersistBatch, Reply, RequestId,
};
pub use lease_keeper::{promised_ttl, Barrier, LeaseConfig, LeaseDecision, EXPIRY_GRACE};
pub use lessor::Lessor;
pub use promotion::{learner_in_sync, Promotion};

/// etcd's limit on how far applying may fall behind committing before new proposals are
/// refused with `etcdserver: too many requests` (etcd's `maxGapBetweenApplyAndCommitIndex`).
pub const MAX_APPLY_GAP: u64 = 5_000;
