//! Store snapshots: the whole store as bytes, for Raft snapshots and member catch-up.
//!
//! Format (all integers big-endian):
//!
//! ```text
//! magic     8 bytes  "RKVMVCC\0"
//! version   u32      1
//! current   i64      current revision
//! compacted i64      compaction revision (-1 if never)
//! keys      u64      number of keys, then for each key in ascending order:
//!   key_len u32, key bytes, entries u32, then for each entry in revision order:
//!     main i64, sub i64, kind u8 (1 = value, 2 = deletion), and for a value:
//!     create_revision i64, version i64, lease i64, value_len u32, value bytes
//! sections  zero or more of: tag u8, len u32, body (len bytes), in ascending tag order:
//!   'A' the auth store (crate::auth::encode_snapshot)
//!   'C' a compaction in progress (crate::store::Compacting): revision i64, then the next
//!       revision to look at, main i64, sub i64
//!   'L' leases: count u64, then for each in ascending ID order:
//!       id i64, ttl i64 (s), remaining_ms i64, renewals u64
//!   'W' alarms: count u32, then member_id u64, type i32 each
//! checksum  u32      CRC-32 (IEEE) of everything before it
//! ```
//!
//! Replicated state added after the first version goes into a tagged section, written only
//! when that state is not empty: a snapshot taken before the state existed (no sections)
//! restores to its empty default, and a store without auth, leases or alarms writes exactly
//! the first version's bytes. A section this build does not know is refused, never skipped.
//!
//! Deterministic: equal stores give identical bytes. Restoring verifies the checksum and
//! the structure (revision order, bounds) before accepting anything. A lease's attached
//! keys are not stored: they are the keys whose current value names it.

use std::fmt;
use std::io::{self, Write};

use bytes::Bytes;
use imbl::OrdMap;

use crate::key_history::{Entry, KeyHistory, Live, State};
use crate::lease::{Leases, Terms};
use crate::revision::Revision;
use crate::store::{entry_size, Store};

const MAGIC: &[u8; 8] = b"RKVMVCC\0";
const FORMAT_VERSION: u32 = 1;
const KIND_LIVE: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const SECTION_AUTH: u8 = b'A';
const SECTION_COMPACTING: u8 = b'C';
const SECTION_LEASES: u8 = b'L';
/// W for warnings: the alarms.
const SECTION_ALARMS: u8 = b'W';

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
        // A capacity hint only: `snapshot_len` would be exact but walks the whole store again.
        let mut out = Vec::with_capacity(usize::try_from(self.stored_bytes).unwrap_or(0) + 64);
        self.snapshot_to(&mut out)
            .expect("writing into memory cannot fail");
        out
    }

    /// The exact number of bytes [`Store::snapshot_to`] writes: a container that puts the
    /// image's length before it (the state machine's envelope) can then stream the image
    /// instead of holding a copy of the whole store in memory. Walks the store once.
    pub fn snapshot_len(&self) -> u64 {
        let mut len = (MAGIC.len() + 4 + 8 + 8 + 8) as u64;
        for (key, history) in &self.keys {
            len += 4 + key.len() as u64 + 4;
            for entry in &history.entries {
                len += ENTRY_FIXED;
                if let State::Live(live) = &entry.state {
                    len += LIVE_FIXED + live.value.len() as u64;
                }
            }
        }
        for (_, body) in self.sections() {
            len += 1 + 4 + body.len() as u64;
        }
        len + 4
    }

    /// Writes [`Store::snapshot`]'s bytes to `sink` a chunk at a time, so that a large
    /// store is never held twice in memory (see [`Store::snapshot_len`]).
    pub fn snapshot_to(&self, sink: &mut dyn Write) -> io::Result<()> {
        let mut out = Chunks::new(sink);
        let buf = &mut out.buf;
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        buf.extend_from_slice(&self.current.to_be_bytes());
        buf.extend_from_slice(&self.compacted.to_be_bytes());
        buf.extend_from_slice(&(self.keys.len() as u64).to_be_bytes());
        for (key, history) in &self.keys {
            put_len(&mut out.buf, key.len());
            out.buf.extend_from_slice(key);
            put_len(&mut out.buf, history.entries.len());
            for entry in &history.entries {
                let buf = &mut out.buf;
                buf.extend_from_slice(&entry.rev.main.to_be_bytes());
                buf.extend_from_slice(&entry.rev.sub.to_be_bytes());
                match &entry.state {
                    State::Live(live) => {
                        buf.push(KIND_LIVE);
                        buf.extend_from_slice(&live.create_revision.to_be_bytes());
                        buf.extend_from_slice(&live.version.to_be_bytes());
                        buf.extend_from_slice(&live.lease.to_be_bytes());
                        put_len(buf, live.value.len());
                        buf.extend_from_slice(&live.value);
                    }
                    State::Tombstone => buf.push(KIND_TOMBSTONE),
                }
                // Inside the key too: one key may hold a long history.
                out.flush_if_full()?;
            }
        }
        for (tag, body) in self.sections() {
            put_section(&mut out.buf, tag, &body);
        }
        out.finish()
    }

    /// The tagged sections after the keys, in ascending tag order; only those not empty.
    fn sections(&self) -> Vec<(u8, Vec<u8>)> {
        let mut sections = Vec::new();
        if self.auth != crate::auth::AuthStore::new() {
            let mut body = Vec::new();
            crate::auth::encode_snapshot(&self.auth, &mut body);
            sections.push((SECTION_AUTH, body));
        }
        if let Some(c) = &self.compacting {
            let mut body = Vec::with_capacity(24);
            body.extend_from_slice(&c.rev.to_be_bytes());
            body.extend_from_slice(&c.cursor.main.to_be_bytes());
            body.extend_from_slice(&c.cursor.sub.to_be_bytes());
            sections.push((SECTION_COMPACTING, body));
        }
        if !self.leases.is_empty() {
            let mut body = Vec::with_capacity(8 + 32 * self.leases.len());
            body.extend_from_slice(&(self.leases.len() as u64).to_be_bytes());
            for lease in self.leases.iter() {
                body.extend_from_slice(&lease.id.to_be_bytes());
                body.extend_from_slice(&lease.ttl.to_be_bytes());
                body.extend_from_slice(&lease.remaining_ms.to_be_bytes());
                body.extend_from_slice(&lease.renewals.to_be_bytes());
            }
            sections.push((SECTION_LEASES, body));
        }
        let alarms = self.alarms.list();
        if !alarms.is_empty() {
            let mut body = Vec::new();
            put_len(&mut body, alarms.len());
            for a in &alarms {
                body.extend_from_slice(&a.member_id.to_be_bytes());
                body.extend_from_slice(&a.alarm.to_be_bytes());
            }
            sections.push((SECTION_ALARMS, body));
        }
        sections
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
        if version != FORMAT_VERSION {
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
        // Parsed into vectors first and turned into the persistent maps in sorted order on
        // two threads (`build_maps`): inserting in order is several times cheaper than the
        // revision index's random order, and restart time is a target (docs/storage.md).
        let mut keys = Vec::new();
        let mut by_revision = Vec::new();
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
                by_revision.push((rev, key.clone()));
                history.push(entry);
            }
            if history.is_empty() {
                return Err(SnapshotError::Malformed("key without history"));
            }
            keys.push((key.clone(), history));
            previous_key = Some(key);
        }
        let (keys, by_revision) = build_maps(keys, by_revision)?;
        let mut store = Store {
            current,
            compacted,
            keys,
            by_revision,
            stored_bytes,
            ..Store::new()
        };
        let mut last_tag = 0u8;
        while !reader.rest.is_empty() {
            let tag = reader.u8()?;
            if tag <= last_tag {
                return Err(SnapshotError::Malformed(
                    "sections repeated or out of order",
                ));
            }
            last_tag = tag;
            let mut body = Reader {
                rest: reader.take_len_prefixed()?,
            };
            match tag {
                SECTION_AUTH => {
                    store.auth = crate::auth::decode_snapshot(body.rest)
                        .map_err(SnapshotError::Malformed)?;
                    body.rest = &[];
                }
                SECTION_COMPACTING => {
                    let rev = i64::from_be_bytes(body.array()?);
                    let main = i64::from_be_bytes(body.array()?);
                    let sub = i64::from_be_bytes(body.array()?);
                    if rev != store.compacted {
                        return Err(SnapshotError::Malformed(
                            "compaction in progress at another revision",
                        ));
                    }
                    store.compacting = Some(crate::store::Compacting {
                        rev,
                        cursor: Revision::new(main, sub),
                    });
                }
                SECTION_LEASES => store.leases = read_leases(&mut body)?,
                SECTION_ALARMS => {
                    for _ in 0..body.u32()? {
                        let member_id = body.u64()?;
                        let alarm = i32::from_be_bytes(body.array()?);
                        store.alarms.insert(member_id, alarm);
                    }
                }
                _ => return Err(SnapshotError::Malformed("unknown section")),
            }
            if !body.rest.is_empty() {
                return Err(SnapshotError::Malformed("trailing bytes in a section"));
            }
        }
        store
            .rebuild_lease_keys()
            .map_err(SnapshotError::Malformed)?;
        Ok(store)
    }
}

/// The store's two big maps from a snapshot's keys (already in ascending order, checked
/// by the caller) and its (revision, key) pairs (in key order): the revision index is
/// sorted, checked for a revision used twice, and built on a second thread while this one
/// builds the key map.
#[allow(clippy::type_complexity)]
fn build_maps(
    keys: Vec<(Bytes, KeyHistory)>,
    mut by_revision: Vec<(Revision, Bytes)>,
) -> Result<(OrdMap<Bytes, KeyHistory>, OrdMap<Revision, Bytes>), SnapshotError> {
    std::thread::scope(|scope| {
        let index = scope.spawn(move || {
            by_revision.sort_unstable_by_key(|(rev, _)| *rev);
            if by_revision.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(SnapshotError::Malformed("two entries share a revision"));
            }
            Ok(by_revision.into_iter().collect::<OrdMap<_, _>>())
        });
        let keys: OrdMap<_, _> = keys.into_iter().collect();
        let by_revision = index
            .join()
            .map_err(|_| SnapshotError::Malformed("revision index build failed"))??;
        Ok((keys, by_revision))
    })
}

fn read_leases(body: &mut Reader<'_>) -> Result<Leases, SnapshotError> {
    let mut leases = Leases::default();
    let mut previous: Option<i64> = None;
    for _ in 0..body.u64()? {
        let id = body.i64()?;
        let ttl = body.i64()?;
        let remaining_ms = body.i64()?;
        let renewals = body.u64()?;
        if id == 0 || previous.is_some_and(|p| p >= id) {
            return Err(SnapshotError::Malformed("leases not in ascending ID order"));
        }
        if !(1..=crate::MAX_LEASE_TTL).contains(&ttl) || remaining_ms < 0 {
            return Err(SnapshotError::Malformed("lease TTL out of range"));
        }
        leases.insert(
            id,
            Terms {
                ttl,
                remaining_ms,
                renewals,
            },
        );
        previous = Some(id);
    }
    Ok(leases)
}

/// An entry's bytes before its state's: main and sub revision, kind.
const ENTRY_FIXED: u64 = 8 + 8 + 1;
/// A live entry's bytes besides its value: create revision, version, lease, value length.
const LIVE_FIXED: u64 = 8 + 8 + 8 + 4;

/// The encoder's output buffer: handed to the sink a chunk at a time, with the running
/// checksum over everything handed on.
struct Chunks<'a> {
    sink: &'a mut dyn Write,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl<'a> Chunks<'a> {
    const SIZE: usize = 1 << 20;

    fn new(sink: &'a mut dyn Write) -> Chunks<'a> {
        Chunks {
            sink,
            buf: Vec::with_capacity(Self::SIZE + (64 << 10)),
            crc: crc32fast::Hasher::new(),
        }
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= Self::SIZE {
            self.hand_on()?;
        }
        Ok(())
    }

    fn hand_on(&mut self) -> io::Result<()> {
        self.crc.update(&self.buf);
        self.sink.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// The rest, then the checksum of everything before it.
    fn finish(mut self) -> io::Result<()> {
        self.hand_on()?;
        let checksum = self.crc.finalize();
        self.sink.write_all(&checksum.to_be_bytes())
    }
}

fn put_section(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    put_len(out, body.len());
    out.extend_from_slice(body);
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
