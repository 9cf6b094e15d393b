//! The log-store abstraction the conformance suite is written against, with the WAL-backed
//! [`Storage`] and a plain in-memory reference implementation.

use raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

use crate::error::{Result, StorageError};
use crate::store::Storage;

/// What the Raft runtime needs from a durable log. `save` is durable when it returns;
/// `reopen` is a restart: the store must come back with exactly what it had made durable.
pub trait LogStore: Sized {
    /// Persist a snapshot (installed from a leader), entries (truncating a conflicting
    /// suffix) and a hard state as one durable batch.
    fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<()>;
    /// Make a local snapshot of applied state current and drop the entries it covers.
    fn compact(&mut self, snapshot: &Snapshot) -> Result<()>;
    fn hard_state(&self) -> HardState;
    fn snapshot_meta(&self) -> Option<SnapshotMeta>;
    fn first_index(&self) -> Index;
    fn last_index(&self) -> Index;
    /// Entries `[lo, hi)`.
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>>;
    fn term(&self, index: Index) -> Result<Term>;
    /// Close and open again from durable state.
    fn reopen(self) -> Result<Self>;
}

impl LogStore for Storage {
    fn save(
        &mut self,
        hs: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<()> {
        Storage::save(self, hs, entries, snapshot)
    }
    fn compact(&mut self, snapshot: &Snapshot) -> Result<()> {
        let written = self
            .snapshot_writer()
            .write_bytes(&snapshot.meta, &snapshot.data)?;
        self.compact_to(&written)
    }
    fn hard_state(&self) -> HardState {
        Storage::hard_state(self)
    }
    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        Storage::snapshot_meta(self).cloned()
    }
    fn first_index(&self) -> Index {
        Storage::first_index(self)
    }
    fn last_index(&self) -> Index {
        Storage::last_index(self)
    }
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        Storage::entries(self, lo, hi)
    }
    fn term(&self, index: Index) -> Result<Term> {
        Storage::term(self, index)
    }
    fn reopen(self) -> Result<Self> {
        Storage::reopen(self).map(|(s, _)| s)
    }
}

/// The simplest correct log store: everything in memory, "durable" by definition. It is
/// the reference the conformance suite is checked against, and a stand-in for tests that
/// need no disk.
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    /// Entries after the snapshot.
    entries: Vec<Entry>,
}

impl MemLogStore {
    pub fn new() -> MemLogStore {
        MemLogStore::default()
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map(|s| s.index).unwrap_or(0)
    }
}

impl LogStore for MemLogStore {
    fn save(
        &mut self,
        hs: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<()> {
        if let Some(snap) = snapshot {
            let m = &snap.meta;
            if m.index <= self.snapshot_index() {
                return Err(StorageError::Invalid("snapshot is not newer".into()));
            }
            let keep =
                matches!(self.term(m.index), Ok(t) if t == m.term) && m.index <= self.last_index();
            if keep {
                self.entries.retain(|e| e.index > m.index);
            } else {
                self.entries.clear();
            }
            self.snapshot = Some(m.clone());
        }
        if let Some(first) = entries.first() {
            if first.index <= self.snapshot_index() || first.index > self.last_index() + 1 {
                return Err(StorageError::Invalid(format!(
                    "entry {} does not fit the log",
                    first.index
                )));
            }
            if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
                return Err(StorageError::Invalid("entries are not contiguous".into()));
            }
            self.entries
                .truncate((first.index - self.first_index()) as usize);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            self.hard_state = *hs;
        }
        Ok(())
    }

    fn compact(&mut self, snapshot: &Snapshot) -> Result<()> {
        let m = &snapshot.meta;
        if m.index <= self.snapshot_index() {
            return Ok(());
        }
        if m.index > self.hard_state.commit || self.term(m.index)? != m.term {
            return Err(StorageError::Invalid(
                "snapshot does not match the committed log".into(),
            ));
        }
        self.entries.retain(|e| e.index > m.index);
        self.snapshot = Some(m.clone());
        Ok(())
    }

    fn hard_state(&self) -> HardState {
        self.hard_state
    }
    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot.clone()
    }
    fn first_index(&self) -> Index {
        self.snapshot_index() + 1
    }
    fn last_index(&self) -> Index {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or(self.snapshot_index())
    }
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted(self.snapshot_index()));
        }
        if lo > hi || hi > self.last_index() + 1 {
            return Err(StorageError::Invalid(format!(
                "range [{lo}, {hi}) is outside the log"
            )));
        }
        let base = self.first_index();
        Ok(self.entries[(lo - base) as usize..(hi - base) as usize].to_vec())
    }
    fn term(&self, index: Index) -> Result<Term> {
        if index == self.snapshot_index() {
            return Ok(self.snapshot.as_ref().map(|s| s.term).unwrap_or(0));
        }
        if index < self.first_index() {
            return Err(StorageError::Compacted(self.snapshot_index()));
        }
        self.entries
            .get((index - self.first_index()) as usize)
            .map(|e| e.term)
            .ok_or_else(|| StorageError::Invalid(format!("index {index} is past the end")))
    }
    fn reopen(self) -> Result<Self> {
        Ok(self)
    }
}
