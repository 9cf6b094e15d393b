//! # raft — the raftkv consensus core
//!
//! A pure, deterministic implementation of Raft (Ongaro's thesis, with pre-vote,
//! check-quorum, ReadIndex, leader transfer and snapshots). It performs no I/O and reads
//! no clock: time is [`RaftNode::tick`], randomness comes from a seeded RNG, and all work
//! for the outside world is returned in [`Ready`] bundles. The same inputs always produce
//! the same outputs, which is what lets the simulator explore millions of fault schedules.
//!
//! Where this deviates from the paper, `docs/raft-deviations.md` says so.
//!
//! Module map: `node` (public API, term rules, Ready), `election`, `replication`,
//! `read_index`, `log` (in-memory log and its persistence cursors), `progress` (per-follower
//! flow control), `quorum` (majority arithmetic).

mod election;
mod log;
mod membership;
mod node;
mod progress;
mod quorum;
mod read_index;
mod replication;
pub mod types;

pub use membership::{bootstrap_log, ConfChange, ConfChangeKind};
pub use node::*;
pub use types::*;
