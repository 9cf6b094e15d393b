//! Migration from etcd: an etcd 3.4 backend (the bbolt file in `member/snap/db`, or what
//! `etcdctl snapshot save` wrote: that file followed by its SHA-256) read into raftkv's
//! MVCC store with its whole history — every key's revisions, versions and create
//! revisions, the current and compacted revisions — so that reads after the migration
//! answer exactly as etcd did.
//!
//! * [`read_file`] / [`EtcdBackend::parse`] check the file (its SHA-256 when it has one,
//!   bbolt's structure) and decode etcd's buckets.
//! * [`EtcdBackend::into_store`] builds the [`mvcc::Store`] with its leases and their
//!   keys, refusing any history the store's invariants reject, and refusing state raftkv
//!   would silently lose ([`EtcdBackend::unsupported`]: auth, for now).
//!
//! * [`export`] is the other way: a store written as an etcd backend, for backups that
//!   etcd's tools read (module `export`), with [`raftkv_image`] to get the store back.
//!
//! etcd's layout, from its `mvcc`, `lease` and `auth` packages:
//! * bucket `key`: key = revision (main u64 big-endian, `_`, sub u64 big-endian, plus `t`
//!   for a deletion), value = an encoded `mvccpb.KeyValue` (only the key for a deletion);
//! * bucket `meta`: `consistent_index` (u64 big-endian), `scheduledCompactRev` and
//!   `finishedCompactRev` (revisions in the same 17-byte form);
//! * bucket `lease`: lease id (u64 big-endian) → `leasepb.Lease {ID, TTL, RemainingTTL}`;
//! * buckets `auth` (`authEnabled`, `authRevision`), `authUsers`, `authRoles`.

mod backend;
mod error;
mod export;

use std::path::Path;

pub use backend::{EtcdBackend, EtcdLease};
pub use error::MigrateError;
pub use export::{export, raftkv_image, CLUSTER_VERSION, IMAGE_KEY, RAFTKV_BUCKET};

/// Reads and decodes the etcd backend or snapshot file at `path`.
pub fn read_file(path: &Path) -> Result<EtcdBackend, MigrateError> {
    let bytes = std::fs::read(path).map_err(|e| MigrateError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    EtcdBackend::parse(bytes)
}

/// What `etcdctl snapshot save` appends to the database: its SHA-256. etcd recognises it
/// by the file's length: a bbolt file is whole pages, so a length 32 past a multiple of
/// 512 means a trailer is there.
pub const SHA256_LEN: usize = 32;

/// Splits off and checks the SHA-256 trailer, if the file has one. Returns the database
/// bytes and whether a trailer was verified.
pub fn strip_checksum(mut bytes: Vec<u8>) -> Result<(Vec<u8>, bool), MigrateError> {
    if bytes.len() % 512 != SHA256_LEN {
        return Ok((bytes, false));
    }
    let db_len = bytes.len() - SHA256_LEN;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes[..db_len]);
    if digest.as_ref() != &bytes[db_len..] {
        return Err(MigrateError::ChecksumMismatch);
    }
    bytes.truncate(db_len);
    Ok((bytes, true))
}
