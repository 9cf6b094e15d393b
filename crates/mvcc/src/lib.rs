//! raftkv's replicated state machine: a multi-version key-value store with etcd v3's
//! semantics (revisions, ranges at old revisions, txns, compaction), deterministic and free
//! of I/O so that every Raft member that applies the same entries ends in the same state.
//!
//! * [`Store::apply`] applies one committed [`proto::raftkvpb::InternalRequest`].
//! * [`Store::range`] serves reads ([`RangeStream`]: a big answer encoded in pieces); [`Store::read_txn`] serves txns that cannot write
//!   (check with [`txn::is_read_only`]) without a trip through the log.
//! * [`validate`] holds the checks etcd makes before proposing a request.
//! * [`Store::hash_kv`], [`Store::snapshot`] and [`Store::restore`] compare and transfer
//!   replicas; [`Store::import`] builds a store from another store's history (etcd's).
//! * [`auth`]: users, roles and key permissions, replicated with the keys and checked
//!   at apply time ([`Store::auth`]).
//! * [`Store::last_events`] / [`Store::events_between`] feed watchers.
//!
//! docs/mvcc.md explains the design and lists etcd's quirks that we reproduce.

pub mod alarm;
pub mod auth;
#[cfg(test)]
mod compaction_tests;
mod error;
mod hash;
mod import;
mod key_history;
pub mod key_range;
pub mod lease;
mod range;
pub mod range_stream;
mod revision;
mod snapshot;
mod store;
pub mod txn;
pub mod validate;

pub use alarm::{quota_cost, Alarms};
pub use error::{Code, MvccError};
pub use hash::HashKv;
pub use import::{ImportError, ImportedChange, ImportedLease, ImportedValue};
pub use lease::{Lease, LeaseChange, Leases, MAX_LEASE_TTL};
pub use range_stream::RangeStream;
pub use revision::Revision;
pub use snapshot::SnapshotError;
pub use store::{Response, Store};
pub use validate::{Limits, DEFAULT_MAX_TXN_OPS};
