//! The history of one key: every version it had since the last compaction.

use bytes::Bytes;

use crate::revision::Revision;

/// The value a key held from one revision on, until the next entry of its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live {
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Bytes,
}

/// One change of a key: it got a value, or it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Live(Live),
    Tombstone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub rev: Revision,
    pub state: State,
}

/// Changes of a key in increasing revision order. Never empty while it is in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyHistory {
    pub entries: Vec<Entry>,
}

impl KeyHistory {
    /// The entry in effect at the end of main revision `rev` (including all its sub-revisions),
    /// or `None` when the key had no recorded change by then.
    pub fn entry_at(&self, rev: i64) -> Option<&Entry> {
        let after = self.entries.partition_point(|e| e.rev.main <= rev);
        after.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The key's value at revision `rev`, with the revision that set it; `None` if it did
    /// not exist then.
    pub fn live_at(&self, rev: i64) -> Option<(Revision, &Live)> {
        match self.entry_at(rev) {
            Some(Entry {
                rev,
                state: State::Live(live),
            }) => Some((*rev, live)),
            _ => None,
        }
    }

    /// The entry that precedes the entry at exactly `rev`, used for a watch event's prev_kv.
    pub fn entry_before(&self, rev: Revision) -> Option<&Entry> {
        let at = self.entries.partition_point(|e| e.rev < rev);
        at.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The entry written at exactly `rev`.
    pub fn entry_exactly_at(&self, rev: Revision) -> Option<&Entry> {
        self.entries
            .binary_search_by_key(&rev, |e| e.rev)
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn latest(&self) -> Option<&Entry> {
        self.entries.last()
    }

    pub fn push(&mut self, entry: Entry) {
        debug_assert!(self.entries.last().is_none_or(|last| last.rev < entry.rev));
        self.entries.push(entry);
    }

    /// Forgets what cannot be read any more once the store is compacted at `compact_rev`:
    /// every entry older than the last one at or before `compact_rev`, and that one too if it
    /// is a deletion from before `compact_rev` (a deleted key reads as absent either way).
    /// A deletion at exactly `compact_rev` is kept so that a watch starting at the compaction
    /// revision still sees it.
    ///
    /// Returns the entries dropped, so the store can drop them from its revision index.
    pub fn compact(&mut self, compact_rev: i64) -> Vec<Entry> {
        let after = self.entries.partition_point(|e| e.rev.main <= compact_rev);
        let Some(last_visible) = after.checked_sub(1) else {
            return Vec::new();
        };
        let mut keep_from = last_visible;
        let last = &self.entries[last_visible];
        if matches!(last.state, State::Tombstone) && last.rev.main < compact_rev {
            keep_from = last_visible + 1;
        }
        self.entries.drain(..keep_from).collect()
    }

    /// Whether the change at `rev` is one a compaction at `compacted` keeps (what
    /// [`KeyHistory::compact`] leaves): any change after it, and the one in effect at it
    /// unless that is a deletion made before it.
    pub fn survives_compaction(&self, rev: Revision, compacted: i64) -> bool {
        if rev.main > compacted {
            return true;
        }
        match self.entry_at(compacted) {
            Some(last) => {
                last.rev == rev
                    && !(matches!(last.state, State::Tombstone) && last.rev.main < compacted)
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(version: i64) -> State {
        State::Live(Live {
            create_revision: 2,
            version,
            lease: 0,
            value: Bytes::from(format!("v{version}")),
        })
    }

    fn history(entries: &[(i64, State)]) -> KeyHistory {
        KeyHistory {
            entries: entries
                .iter()
                .map(|(main, state)| Entry {
                    rev: Revision::new(*main, 0),
                    state: state.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn reads_the_entry_in_effect_at_a_revision() {
        let h = history(&[(2, live(1)), (4, live(2)), (6, State::Tombstone)]);
        assert!(h.live_at(1).is_none());
        assert_eq!(h.live_at(3).map(|(_, l)| l.version), Some(1));
        assert_eq!(h.live_at(4).map(|(_, l)| l.version), Some(2));
        assert_eq!(h.live_at(5).map(|(_, l)| l.version), Some(2));
        assert!(h.live_at(6).is_none());
        assert!(h.live_at(100).is_none());
    }

    #[test]
    fn compaction_keeps_the_value_visible_at_the_compaction_revision() {
        let mut h = history(&[(2, live(1)), (4, live(2)), (6, live(3))]);
        let dropped: Vec<Revision> = h.compact(5).iter().map(|e| e.rev).collect();
        assert_eq!(dropped, vec![Revision::new(2, 0)]);
        assert_eq!(h.live_at(5).map(|(_, l)| l.version), Some(2));
        assert_eq!(h.entries.len(), 2);
    }

    #[test]
    fn compaction_drops_an_older_tombstone_but_keeps_one_at_the_compaction_revision() {
        let mut older = history(&[(2, live(1)), (3, State::Tombstone)]);
        assert_eq!(older.compact(4).len(), 2);
        assert!(older.is_empty());

        let mut at = history(&[(2, live(1)), (3, State::Tombstone)]);
        let dropped: Vec<Revision> = at.compact(3).iter().map(|e| e.rev).collect();
        assert_eq!(dropped, vec![Revision::new(2, 0)]);
        assert_eq!(at.entries.len(), 1);
    }

    #[test]
    fn compaction_before_the_first_entry_changes_nothing() {
        let mut h = history(&[(5, live(1))]);
        assert!(h.compact(4).is_empty());
        assert_eq!(h.entries.len(), 1);
    }
}
