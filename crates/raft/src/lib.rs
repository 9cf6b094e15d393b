//! # raft — the raftkv consensus core
//!
//! A pure, deterministic implementation of Raft (Ongaro's thesis, with pre-vote,
//! check-quorum, ReadIndex, leader transfer and snapshots). It performs no I/O and reads
//! no clock: time is [`RaftNode::tick`], randomness comes from a seeded RNG, and all work
//! for the outside world is returned in [`Ready`] bundles. The same inputs always produce
//! the same outputs, which is what lets the simulator explore millions of fault schedules.
//!
//! Where this deviates from the paper, `docs/raft-deviations.md` says so.

mod node;
pub mod types;

pub use node::*;
pub use types::*;
