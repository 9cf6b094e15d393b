//! Store snapshots: the whole store as bytes, for Raft snapshots and member catch-up.
//!
//! Format (all integers big-endian):
//!
//! ```text
//! magic     8 bytes  "RKVMVCC\0"
//! version   u32      2 (1: the same without the lease section; still restored)
//! current   i64      current revision
//! compacted i64      compaction revision (-1 if never)
//! keys      u64      number of keys, then for each key in ascending order:
//!   key_len u32, key bytes, entries u32, then for each entry in revision order:
//!     main i64, sub i64, kind u8 (1 = value, 2 = deletion), and for a value:
//!     create_revision i64, version i64, lease i64, value_len u32, value bytes
//! leases    u64      number of leases (version 2), then for each in ascending ID order:
//!   id i64, ttl i64 (s), remaining_ms i64, renewals u64
//! checksum  u32      CRC-32 (IEEE) of everything before it
//! ```
//!
//! Deterministic: equal stores give identical bytes. Restoring verifies the checksum and
//! the structure (revision order, bounds) before accepting anything. A lease's attached
//! keys are not stored: they are the keys whose current value names it.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::key_history::{Entry, KeyHistory, Live, State};
use crate::lease::{Lease, Leases};
use crate::revision::Revision;
use crate::store::{entry_size, Store};

const MAGIC: &[u8; 8] = b"RKVMVCC\0";
const FORMAT_VERSION: u32 = 2;
/// The format before leases existed.
const FORMAT_VERSION_NO_LEASES: u32 = 1;
const KIND_LIVE: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a store snapshot (wrong magic).
    NotASnapshot,
    /// Written by a format version this build cannot read.
    UnsupportedVersion(u32),
    /// The checksum does not match: the bytes were damaged.
    ChecksumMismatch,
    /// The bytes end early or hold an impossible structure.
    Malformed(&'static str),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::NotASnapshot => write!(f, "not an mvcc store snapshot"),
            SnapshotError::UnsupportedVersion(v) => {
                write!(f, "unsupported mvcc snapshot format version {v}")
            }
            SnapshotError::ChecksumMismatch => write!(f, "mvcc snapshot checksum mismatch"),
            SnapshotError::Malformed(what) => write!(f, "malformed mvcc snapshot: {what}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl Store {
    /// Serialises the whole store, history included.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.stored_bytes).unwrap_or(0) + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&self.compacted.to_be_bytes());
        out.extend_from_slice(&(self.keys.len() as u64).to_be_bytes());
        for (key, history) in &self.keys {
            put_len(&mut out, key.len());
            out.extend_from_slice(key);
            put_len(&mut out, history.entries.len());
            for entry in &history.entries {
                out.extend_from_slice(&entry.rev.main.to_be_bytes());
                out.extend_from_slice(&entry.rev.sub.to_be_bytes());
                match &entry.state {
                    State::Live(live) => {
                        out.push(KIND_LIVE);
                        out.extend_from_slice(&live.create_revision.to_be_bytes());
                        out.extend_from_slice(&live.version.to_be_bytes());
                        out.extend_from_slice(&live.lease.to_be_bytes());
                        put_len(&mut out, live.value.len());
                        out.extend_from_slice(&live.value);
                    }
                    State::Tombstone => out.push(KIND_TOMBSTONE),
                }
            }
        }
        out.extend_from_slice(&(self.leases.len() as u64).to_be_bytes());
        for lease in self.leases.iter() {
            out.extend_from_slice(&lease.id.to_be_bytes());
            out.extend_from_slice(&lease.ttl.to_be_bytes());
            out.extend_from_slice(&lease.remaining_ms.to_be_bytes());
            out.extend_from_slice(&lease.renewals.to_be_bytes());
        }
        let checksum = crc32fast::hash(&out);
        out.extend_from_slice(&checksum.to_be_bytes());
        out
    }

    /// Rebuilds a store from [`Store::snapshot`] output.
    pub fn restore(bytes: &[u8]) -> Result<Store, SnapshotError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        // magic + format version + checksum at the very least
        if bytes.len() < MAGIC.len() + 4 + 4 {
            return Err(SnapshotError::Malformed("too short"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let mut reader = Reader {
            rest: &body[MAGIC.len()..],
        };
        let version = reader.u32()?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_NO_LEASES {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let stored = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32fast::hash(body) != stored {
            return Err(SnapshotError::ChecksumMismatch);
        }

        let current = reader.i64()?;
        let compacted = reader.i64()?;
        if current < 1 || compacted < -1 || compacted > current {
            return Err(SnapshotError::Malformed("revision counters out of range"));
        }
        let key_count = reader.u64()?;
        let mut keys = BTreeMap::new();
        let mut by_revision = BTreeMap::new();
        let mut stored_bytes = 0u64;
        let mut previous_key: Option<Bytes> = None;
        for _ in 0..key_count {
            let key = Bytes::copy_from_slice(reader.take_len_prefixed()?);
            if key.is_empty() || previous_key.as_ref().is_some_and(|p| *p >= key) {
                return Err(SnapshotError::Malformed("keys not in ascending order"));
            }
            let entry_count = reader.u32()?;
            let mut history = KeyHistory::default();
            for _ in 0..entry_count {
                let rev = Revision::new(reader.i64()?, reader.i64()?);
                if rev.main < 2 || rev.main > current || rev.sub < 0 {
                    return Err(SnapshotError::Malformed("entry revision out of range"));
                }
                if history.latest().is_some_and(|last| last.rev >= rev) {
                    return Err(SnapshotError::Malformed("entries not in revision order"));
                }
                let state = match reader.u8()? {
                    KIND_LIVE => State::Live(Live {
                        create_revision: reader.i64()?,
                        version: reader.i64()?,
                        lease: reader.i64()?,
                        value: Bytes::copy_from_slice(reader.take_len_prefixed()?),
                    }),
                    KIND_TOMBSTONE => State::Tombstone,
                    _ => return Err(SnapshotError::Malformed("unknown entry kind")),
                };
                let entry = Entry { rev, state };
                stored_bytes += entry_size(&entry) + key.len() as u64;
                if by_revision.insert(rev, key.clone()).is_some() {
                    return Err(SnapshotError::Malformed("two entries share a revision"));
                }
                history.push(entry);
            }
            if history.is_empty() {
                return Err(SnapshotError::Malformed("key without history"));
            }
            keys.insert(key.clone(), history);
            previous_key = Some(key);
        }
        let mut leases = Leases::default();
        if version >= FORMAT_VERSION {
            let count = reader.u64()?;
            let mut previous: Option<i64> = None;
            for _ in 0..count {
                let id = reader.i64()?;
                let ttl = reader.i64()?;
                let remaining_ms = reader.i64()?;
                let renewals = reader.u64()?;
                if id == 0 || previous.is_some_and(|p| p >= id) {
                    return Err(SnapshotError::Malformed("leases not in ascending ID order"));
                }
                if !(1..=crate::MAX_LEASE_TTL).contains(&ttl) || remaining_ms < 0 {
                    return Err(SnapshotError::Malformed("lease TTL out of range"));
                }
                leases.by_id.insert(
                    id,
                    Lease {
                        id,
                        ttl,
                        remaining_ms,
                        renewals,
                        keys: Default::default(),
                    },
                );
                previous = Some(id);
            }
        }
        if !reader.rest.is_empty() {
            return Err(SnapshotError::Malformed("trailing bytes"));
        }
        let mut store = Store {
            current,
            compacted,
            keys,
            by_revision,
            stored_bytes,
            last_events: Vec::new(),
            leases,
            last_lease_changes: Vec::new(),
        };
        store
            .rebuild_lease_keys()
            .map_err(SnapshotError::Malformed)?;
        Ok(store)
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Keys and values are bounded by the request size limit, far below 4 GiB.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.rest.len() < n {
            return Err(SnapshotError::Malformed("unexpected end"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut buf = [0u8; N];
        buf.copy_from_slice(self.take(N)?);
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn take_len_prefixed(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}
