//! raftkv's Jepsen-style harness.
//!
//! Real `raftkv` member processes run in their own network namespaces (one per member, joined
//! by a bridge in its own namespace; [`netns`]). Concurrent clients ([`register`], [`append`])
//! and [`lock`] each hold their own connection and record every operation into a history; a
//! [`nemesis`] partitions, kills, pauses, restarts, replaces ([`member_change`]) and skews the
//! clock of members meanwhile. At the end
//! everything is healed, every member is read back, and the histories go to `lincheck`
//! (linearizability per key for registers, the Elle-style checker for list-append; the lock
//! workload's fenced appends go to [`lock_check`]). See
//! `docs/testing.md`, section "Linearizability under faults".
//!
//! Needs root, iproute2 and iptables; it fails loudly without them.

pub mod append;
pub mod client;
pub mod cluster;
pub mod faults;
pub mod lock;
pub mod lock_check;
pub mod member_change;
pub mod nemesis;
pub mod netns;
pub mod recorder;
pub mod register;
pub mod run;
pub mod watch;
pub mod watch_progress;

pub use nemesis::{Fault, ALL_FAULTS};
pub use run::{run, RunConfig, RunReport};
