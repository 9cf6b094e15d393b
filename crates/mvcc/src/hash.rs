//! HashKV: a checksum of the store's history up to a revision, to compare replicas.
//!
//! Not bit-compatible with etcd's hash (which hashes its bbolt records); it is equal on two
//! stores exactly when they hold the same history up to the revision, which is what the
//! comparison needs.

use crate::error::MvccError;
use crate::key_history::State;
use crate::revision::Revision;
use crate::store::Store;

/// The answer to a HashKV request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    /// The store's compaction revision (-1 if never compacted).
    pub compact_revision: i64,
    /// The revision the hash covers.
    pub hash_revision: i64,
}

impl Store {
    /// Maintenance/Hash: a checksum of everything the store holds (its whole serialised
    /// image: every key's kept history, the current and compaction revisions). etcd hashes
    /// its whole bbolt file for this call and documents it as a testing aid; so is this one.
    /// Equal on two stores exactly when their images are.
    pub fn hash_all(&self) -> u32 {
        crc32fast::hash(&self.snapshot())
    }

    /// Hashes every change kept with main revision <= `rev` (0 = the current revision).
    /// As in etcd, `rev` must be above the compaction revision and not in the future.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv, MvccError> {
        if rev > 0 && rev <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if rev > self.current {
            return Err(MvccError::FutureRevision);
        }
        let rev = if rev <= 0 { self.current } else { rev };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.compacted.to_be_bytes());
        for (at, key) in self.by_revision.range(..Revision::start_of(rev + 1)) {
            let history = self.keys.get(key);
            // History below the compaction point that a compaction in progress has not
            // dropped yet is not hashed: members hash the same whatever their progress.
            if at.main <= self.compacted
                && !history.is_some_and(|h| h.survives_compaction(*at, self.compacted))
            {
                continue;
            }
            hasher.update(&at.main.to_be_bytes());
            hasher.update(&at.sub.to_be_bytes());
            hasher.update(&(key.len() as u64).to_be_bytes());
            hasher.update(key);
            let entry = history.and_then(|h| h.entry_exactly_at(*at));
            match entry.map(|e| &e.state) {
                Some(State::Live(live)) => {
                    hasher.update(&[1]);
                    hasher.update(&live.create_revision.to_be_bytes());
                    hasher.update(&live.version.to_be_bytes());
                    hasher.update(&live.lease.to_be_bytes());
                    hasher.update(&(live.value.len() as u64).to_be_bytes());
                    hasher.update(&live.value);
                }
                Some(State::Tombstone) => hasher.update(&[2]),
                None => hasher.update(&[0]),
            }
        }
        Ok(HashKv {
            hash: hasher.finalize(),
            compact_revision: self.compacted,
            hash_revision: rev,
        })
    }
}
