//! Why an etcd file cannot be migrated.

use bbolt::{BoltError, WriteError};
use mvcc::ImportError;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("the file's SHA-256 trailer does not match its contents: the snapshot is damaged")]
    ChecksumMismatch,
    #[error("not a readable bbolt database: {0}")]
    Bolt(#[from] BoltError),
    #[error("not an etcd backend: it has no `{0}` bucket")]
    MissingBucket(&'static str),
    #[error("etcd bucket `{bucket}` holds a malformed entry (key {key:02x?}): {problem}")]
    Malformed {
        bucket: &'static str,
        key: Vec<u8>,
        problem: String,
    },
    #[error("etcd's history is inconsistent: {0}")]
    Inconsistent(#[from] ImportError),
    #[error("cannot write the store as a bbolt file: {0}")]
    Write(#[from] WriteError),
    #[error("raftkv cannot yet hold everything in this backend, and would lose: {0}")]
    Unsupported(String),
}
