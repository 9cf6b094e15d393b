//! The storage error type.
//!
//! Every variant that can stop a member from starting says which file (and where in it) is
//! at fault and what an operator can do about it, because the person reading it is usually
//! looking at a crash-looping pod at an inconvenient hour.

use std::io;
use std::path::PathBuf;

/// What the operator can do when a member's durable state is damaged or missing.
const REPAIR_HINT: &str = "do NOT delete files to make the error go away (that can lose \
committed writes); either restore this member's data dir from a backup, or remove the member \
from the cluster and add it back under a NEW member id with an empty data dir so it receives a \
snapshot from the leader";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed (other than running out of space).
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The disk is full. The write was rolled back; nothing durable was changed.
    #[error(
        "disk full while writing {path} ({op}): free space on the volume; nothing already \
         acknowledged was lost and the write can be retried once space returns"
    )]
    NoSpace { op: &'static str, path: PathBuf },

    /// A WAL record that is not a torn tail failed its checks.
    #[error(
        "corrupt WAL record in {path} at byte offset {offset}: {reason}; {}",
        REPAIR_HINT
    )]
    CorruptWal {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// WAL segments are missing (a gap in sequence numbers, or entries that should be there).
    #[error("WAL is incomplete in {dir}: {reason}; {}", REPAIR_HINT)]
    MissingWal { dir: PathBuf, reason: String },

    /// The snapshot the WAL refers to is missing or fails its checksum.
    #[error("snapshot {path} is unusable: {reason}; {}", REPAIR_HINT)]
    CorruptSnapshot { path: PathBuf, reason: String },

    /// The data dir belongs to another cluster.
    #[error(
        "data dir {dir} belongs to cluster {found:#x}, but this member was started for cluster \
         {expected:#x}: check --data-dir and --initial-cluster-token; never point two clusters \
         at one data dir"
    )]
    ClusterMismatch {
        dir: PathBuf,
        expected: u64,
        found: u64,
    },

    /// The data dir belongs to another member.
    #[error(
        "data dir {dir} belongs to member {found:#x}, but this process is member {expected:#x}: \
         each member needs its own data dir (check --data-dir / --name)"
    )]
    MemberMismatch {
        dir: PathBuf,
        expected: u64,
        found: u64,
    },

    /// The data dir was written by a newer raftkv.
    #[error(
        "data dir {dir} has storage format version {found}, newer than this binary supports \
         ({supported}): run a newer raftkv (downgrades are not supported)"
    )]
    NewerFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The metadata file is unreadable or damaged.
    #[error("metadata file {path} is invalid: {reason}; {}", REPAIR_HINT)]
    BadMetadata { path: PathBuf, reason: String },

    /// The member expects durable state (it is restarting), but the data dir holds none.
    #[error(
        "data dir {dir} has no raftkv state ({reason}), but this member is expected to have \
         some: if its volume was wiped, it must not rejoin under its old id (it may have voted \
         or acknowledged writes it no longer remembers); remove it from the cluster and add it \
         back under a new member id"
    )]
    MissingState { dir: PathBuf, reason: String },

    /// The data dir has files but no metadata: it is not a raftkv data dir (or it was damaged).
    #[error(
        "data dir {dir} is not empty but has no metadata file ({reason}): refusing to use or \
         overwrite it; point --data-dir at an empty or raftkv directory"
    )]
    ForeignDir { dir: PathBuf, reason: String },

    /// Another process has this data dir open.
    #[error(
        "data dir {dir} is in use by another process (lock file {lock} is held): two members \
         must never share a data dir; stop the other process or use another --data-dir"
    )]
    Locked { dir: PathBuf, lock: PathBuf },

    /// A caller asked for something impossible (a gap in appended entries, a range that
    /// is not in the log, ...).
    #[error("invalid storage request: {0}")]
    Invalid(String),

    /// Entries below the first retained index were requested.
    #[error("entries up to {0} were compacted into a snapshot")]
    Compacted(u64),

    /// An earlier fsync failed: the page cache can no longer be trusted, so this store
    /// refuses further writes. Restart the process to recover from what is on disk.
    #[error("storage is failed after an earlier error ({0}); restart the member to recover")]
    Failed(String),
}

impl StorageError {
    /// Classify an I/O failure: out-of-space gets its own variant so callers can retry later.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_no_space(&source) {
            StorageError::NoSpace { op, path }
        } else {
            StorageError::Io { op, path, source }
        }
    }

    /// True if this error means the volume ran out of space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::NoSpace { .. })
    }
}

/// ENOSPC (28) or EDQUOT (122 on Linux). Matched by number to keep the MSRV low.
fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
