//! The durable half of a simulated member: exactly what survives a crash.
//!
//! The simulator writes a batch's snapshot, entries and hard state here in one atomic step
//! (the model of one fsync). A batch the driver marks as not needing an fsync (a
//! commit-only hard state) is written but not yet durable, exactly as the server's
//! `Storage::save_commit`: the next durable write makes it durable, a crash before then
//! loses it. Anything the core held only in memory is gone after a crash; a restart
//! rebuilds the core from this store alone.

use raft::{ConfState, Entry, HardState, Index, InitialState, Snapshot, Term};

/// One member's disk: hard state, the latest snapshot and the log after it.
#[derive(Clone, Debug, Default)]
pub struct DurableStore {
    hard_state: HardState,
    /// The hard state as of the last durable write, while a later one is not durable yet.
    synced_hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    /// Contiguous entries, the first at `snapshot_index() + 1`.
    entries: Vec<Entry>,
}

impl DurableStore {
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Record a hard state durably (and with it everything written before).
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
        self.synced_hard_state = None;
    }

    /// Record a hard state without an fsync: a crash before the next durable write loses it.
    pub fn set_hard_state_unsynced(&mut self, hard_state: HardState) {
        if self.synced_hard_state.is_none() {
            self.synced_hard_state = Some(self.hard_state);
        }
        self.hard_state = hard_state;
    }

    /// The hard state a crash now would leave.
    pub fn durable_hard_state(&self) -> HardState {
        self.synced_hard_state.unwrap_or(self.hard_state)
    }

    /// A durable write happened: everything written before it is durable too.
    pub fn synced(&mut self) {
        self.synced_hard_state = None;
    }

    /// The member crashed: what was not durable is gone. Returns whether anything was lost.
    pub fn lose_unsynced(&mut self) -> bool {
        match self.synced_hard_state.take() {
            Some(hs) => {
                self.hard_state = hs;
                true
            }
            None => false,
        }
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot.as_ref().map_or(0, |s| s.meta.term)
    }

    pub fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `index`, if it is in the (uncompacted) log.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let first = self.snapshot_index() + 1;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// The term at `index`: 0 for index 0, the snapshot's term at its index, else the entry's.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if index == self.snapshot_index() {
            return Some(self.snapshot_term());
        }
        self.entry(index).map(|e| e.term)
    }

    /// Writes `entries`, first truncating everything from `entries[0].index` on (a follower
    /// resolving a conflict). Refuses a write that would leave a hole or reach into the
    /// compacted prefix: the core must never ask for either.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(format!(
                    "entries to persist are not contiguous: {} then {}",
                    pair[0].index, pair[1].index
                ));
            }
        }
        if first.index > self.last_index() + 1 {
            return Err(format!(
                "entries to persist start at {} but the durable log ends at {}",
                first.index,
                self.last_index()
            ));
        }
        if first.index <= self.snapshot_index() {
            return Err(format!(
                "entries to persist start at {}, inside the snapshot (index {})",
                first.index,
                self.snapshot_index()
            ));
        }
        let keep = (first.index - self.snapshot_index() - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Installs a snapshot received from the leader. Per the Ready contract the snapshot
    /// replaces the stored log entirely: every entry goes, the Ready's entries follow it.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    /// Our own compaction: the snapshot replaces the log prefix up to its index; the
    /// entries after it stay. The caller has checked that the log holds the snapshot's last
    /// entry.
    pub fn compact_to(&mut self, snapshot: Snapshot) {
        let drop = (snapshot.meta.index - self.snapshot_index()) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = Some(snapshot);
    }

    /// What a restarted member recovers. The state machine is volatile in the simulator
    /// except for its snapshot, so `applied` restarts at the snapshot index.
    pub fn initial_state(&self, bootstrap_voters: &[u64]) -> InitialState {
        let conf_state = match &self.snapshot {
            Some(s) => s.meta.conf_state.clone(),
            None => ConfState {
                voters: bootstrap_voters.to_vec(),
                learners: Vec::new(),
            },
        };
        InitialState {
            hard_state: self.hard_state,
            conf_state,
            snapshot: self.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: self.entries.clone(),
            applied: self.snapshot_index(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft::{EntryKind, SnapshotMeta};

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn snapshot(index: Index, term: Term) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: ConfState::default(),
            },
            data: Bytes::new(),
        }
    }

    #[test]
    fn append_truncates_a_conflicting_suffix() {
        let mut store = DurableStore::default();
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        store.append(&[entry(2, 2)]).unwrap();
        assert_eq!(store.last_index(), 2);
        assert_eq!(store.term_at(2), Some(2));
    }

    #[test]
    fn append_refuses_holes_and_compacted_indexes() {
        let mut store = DurableStore::default();
        assert!(store.append(&[entry(2, 1)]).is_err());
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.install_snapshot(snapshot(2, 1));
        assert!(store.append(&[entry(2, 1)]).is_err());
    }

    #[test]
    fn compaction_keeps_the_suffix_but_an_installed_snapshot_replaces_the_log() {
        let mut store = DurableStore::default();
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        store.compact_to(snapshot(2, 1));
        assert_eq!((store.snapshot_index(), store.last_index()), (2, 3));

        let mut other = DurableStore::default();
        other
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        other.install_snapshot(snapshot(2, 1));
        assert_eq!((other.snapshot_index(), other.last_index()), (2, 2));
        assert!(other.entries().is_empty());
    }
}
