//! The in-memory replicated log and its three cursors.
//!
//! The core keeps every entry after the last snapshot in memory (the caller shortens it with
//! `compact`). Besides the entries themselves, the log tracks *how far the outside world has
//! got* with them, because safety depends on it:
//!
//! * `unstable_from` — entries at or after this index have not yet been handed to the caller
//!   in a `Ready` for persisting;
//! * `persisted` — the last index the caller confirmed durable (via `advance`). A leader counts
//!   itself toward commit only up to here, and nothing is applied beyond it;
//! * `committed` / `applying` / `applied` — the commit index, how far committed entries were
//!   handed out for applying, and how far the caller acknowledged applying them.
//!
//! Log terms never decrease with the index, which lets the conflict searches below use
//! binary search instead of scanning a possibly very long run of one term.

use std::collections::VecDeque;

use crate::types::{Entry, Index, SnapshotMeta, Term};

/// Why an append could not be accepted as is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// The entries now follow `prev`; the last of them is at this index.
    Accepted { last_new: Index },
    /// Our log has no entry `(prev_index, prev_term)`.
    Mismatch,
    /// The leader's entries conflict with one of our *committed* entries. This can only come
    /// from a broken peer; the message is ignored rather than allowed to rewrite history.
    ConflictsWithCommitted,
}

pub(crate) struct RaftLog {
    /// Index/term of the last entry covered by the snapshot this log starts after.
    snapshot_index: Index,
    snapshot_term: Term,
    /// Entries `snapshot_index + 1 ..= last_index()`, contiguous.
    entries: VecDeque<Entry>,
    /// First index not yet handed to the caller for persisting.
    unstable_from: Index,
    /// Last index the caller confirmed durable.
    pub(crate) persisted: Index,
    /// Highest index known committed.
    pub(crate) committed: Index,
    /// Highest index handed out in `committed_entries` (perhaps not yet acknowledged).
    pub(crate) applying: Index,
    /// Highest index the caller acknowledged as applied.
    pub(crate) applied: Index,
}

impl RaftLog {
    /// A log recovered from storage: everything given is durable already.
    pub(crate) fn recover(
        snapshot: Option<&SnapshotMeta>,
        entries: Vec<Entry>,
        commit: Index,
        applied: Index,
    ) -> Result<RaftLog, String> {
        let (snapshot_index, snapshot_term) = snapshot.map_or((0, 0), |s| (s.index, s.term));
        for (offset, entry) in entries.iter().enumerate() {
            if entry.index != snapshot_index + 1 + offset as u64 {
                return Err(format!("entry index {} is not contiguous", entry.index));
            }
        }
        if entries.windows(2).any(|w| w[1].term < w[0].term)
            || entries.first().is_some_and(|e| e.term < snapshot_term)
        {
            return Err("log terms decrease".into());
        }
        let last = snapshot_index + entries.len() as u64;
        if commit > last {
            return Err(format!("commit {commit} beyond last index {last}"));
        }
        let commit = commit.max(snapshot_index);
        // The state machine was loaded from the snapshot, so it has applied at least that.
        let applied = applied.max(snapshot_index);
        if applied > commit {
            return Err(format!("applied {applied} beyond commit {commit}"));
        }
        Ok(RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            unstable_from: last + 1,
            persisted: last,
            committed: commit,
            applying: applied,
            applied,
        })
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub(crate) fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`; `None` if it was compacted away or does not exist.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.first_index()) as usize].term)
    }

    /// Raft's "at least as up-to-date" check (§5.4.1): compare (last term, last index)
    /// lexicographically — a longer log of an older term is *less* up to date.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Leader path: add freshly proposed entries at the end.
    pub(crate) fn append_new(&mut self, entries: impl IntoIterator<Item = Entry>) {
        self.entries.extend(entries);
    }

    /// Follower path (AppendEntries receiver rules 2–4). Entries already present with the same
    /// term are skipped — a stale or duplicated message never truncates anything (safety
    /// rule 4). Only a real term conflict truncates, and never below the commit index.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
    ) -> AppendOutcome {
        if self.term(prev_index) != Some(prev_term) {
            return AppendOutcome::Mismatch;
        }
        let last_new = prev_index + entries.len() as u64;
        let first_new = entries
            .iter()
            .position(|e| self.term(e.index) != Some(e.term));
        if let Some(pos) = first_new {
            let at = entries[pos].index;
            if at <= self.committed {
                return AppendOutcome::ConflictsWithCommitted;
            }
            self.truncate_from(at);
            self.entries.extend(entries.into_iter().skip(pos));
        }
        AppendOutcome::Accepted { last_new }
    }

    /// Drop entries at `index` and after; they must be written again (or are gone for good).
    fn truncate_from(&mut self, index: Index) {
        let keep = (index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// Entries `[lo, hi)` limited to about `max_bytes` (at least one entry when the range is
    /// non-empty). `None` if `lo` was compacted.
    pub(crate) fn slice(&self, lo: Index, hi: Index, max_bytes: usize) -> Option<Vec<Entry>> {
        if lo < self.first_index() {
            return None;
        }
        let hi = hi.min(self.last_index() + 1);
        if lo >= hi {
            return Some(Vec::new());
        }
        let start = (lo - self.first_index()) as usize;
        let end = (hi - self.first_index()) as usize;
        let mut out = Vec::with_capacity(end - start);
        let mut bytes = 0usize;
        for entry in self.entries.range(start..end) {
            bytes += entry.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Hand the not-yet-persisted entries to the caller (once).
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out = self.slice(from, self.last_index() + 1, usize::MAX);
        self.unstable_from = self.last_index() + 1;
        out.unwrap_or_default()
    }

    /// The caller made entries up to `(index, term)` durable. If the log changed since (a
    /// truncation replaced that entry), the term no longer matches and nothing is credited:
    /// by the Log Matching property an equal (index, term) means an identical prefix.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) {
        if index < self.unstable_from && self.term(index) == Some(term) {
            self.persisted = self.persisted.max(index);
        }
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        debug_assert!(index <= self.last_index());
        self.committed = self.committed.max(index.min(self.last_index()));
    }

    /// The highest index that may be applied: committed *and* durable locally.
    fn applicable(&self) -> Index {
        self.committed.min(self.persisted)
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        self.applicable() > self.applying
    }

    /// Hand out committed, locally durable entries not handed out before.
    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let hi = self.applicable();
        if hi <= self.applying {
            return Vec::new();
        }
        let out = self
            .slice(self.applying + 1, hi + 1, usize::MAX)
            .unwrap_or_default();
        self.applying = hi;
        out
    }

    pub(crate) fn applied_to(&mut self, index: Index) {
        self.applied = self.applied.max(index.min(self.applying));
    }

    /// The state machine captured everything up to `index`: forget those entries.
    pub(crate) fn compact(&mut self, index: Index, term: Term) -> Result<(), String> {
        if index < self.snapshot_index {
            return Err(format!(
                "snapshot {index} older than current {}",
                self.snapshot_index
            ));
        }
        if index > self.applied {
            return Err(format!("snapshot {index} beyond applied {}", self.applied));
        }
        if self.term(index) != Some(term) {
            return Err(format!(
                "snapshot term {term} does not match log at {index}"
            ));
        }
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        Ok(())
    }

    /// Replace the whole log by a snapshot from the leader (our log conflicts with it or is
    /// too short). Everything up to the snapshot is committed by definition.
    pub(crate) fn restore(&mut self, meta: &SnapshotMeta) {
        self.entries.clear();
        self.snapshot_index = meta.index;
        self.snapshot_term = meta.term;
        self.unstable_from = meta.index + 1;
        self.persisted = meta.index;
        self.committed = meta.index;
        self.applying = meta.index;
    }

    /// The first index of the run of entries sharing the term at `index` (for reject hints).
    pub(crate) fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        if index <= self.snapshot_index {
            return index;
        }
        // Smallest j in [first, index] with term(j) >= term; terms are sorted by index.
        let (mut lo, mut hi) = (self.first_index(), index);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.term(mid).unwrap_or(0) < term {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The largest index ≤ `bound` whose term is ≤ `term` (leader side of fast backtracking).
    /// Below the snapshot we cannot know: `bound` is returned and a snapshot will follow.
    pub(crate) fn last_index_with_term_at_most(&self, bound: Index, term: Term) -> Index {
        let bound = bound.min(self.last_index());
        if bound <= self.snapshot_index {
            return bound;
        }
        // Largest j in [snapshot_index, bound] with term(j) <= term, or snapshot_index.
        let (mut lo, mut hi) = (self.snapshot_index, bound);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.term(mid).unwrap_or(u64::MAX) <= term {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| e(i as u64 + 1, *t))
            .collect();
        RaftLog::recover(None, entries, 0, 0).unwrap()
    }

    #[test]
    fn recover_rejects_gaps_and_bad_commit() {
        assert!(RaftLog::recover(None, vec![e(2, 1)], 0, 0).is_err());
        assert!(RaftLog::recover(None, vec![e(1, 1)], 2, 0).is_err());
        assert!(RaftLog::recover(None, vec![e(1, 2), e(2, 1)], 0, 0).is_err());
        assert!(RaftLog::recover(None, vec![e(1, 1)], 1, 1).is_ok());
    }

    #[test]
    fn duplicate_append_never_truncates() {
        let mut log = log_of(&[1, 1, 1, 1]);
        let out = log.maybe_append(1, 1, vec![e(2, 1)]);
        assert_eq!(out, AppendOutcome::Accepted { last_new: 2 });
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn conflicting_append_truncates_from_conflict() {
        let mut log = log_of(&[1, 1, 1, 1]);
        let out = log.maybe_append(2, 1, vec![e(3, 1), e(4, 2)]);
        assert_eq!(out, AppendOutcome::Accepted { last_new: 4 });
        assert_eq!(log.term(4), Some(2));
        assert_eq!(log.persisted, 3);
        assert_eq!(log.take_unstable(), vec![e(4, 2)]);
    }

    #[test]
    fn conflict_below_commit_is_refused() {
        let mut log = log_of(&[1, 1, 1]);
        log.commit_to(3);
        let out = log.maybe_append(1, 1, vec![e(2, 5)]);
        assert_eq!(out, AppendOutcome::ConflictsWithCommitted);
        assert_eq!(log.term(2), Some(1));
    }

    #[test]
    fn mismatch_when_prev_missing() {
        let mut log = log_of(&[1]);
        assert_eq!(log.maybe_append(3, 1, vec![]), AppendOutcome::Mismatch);
        assert_eq!(log.maybe_append(1, 2, vec![]), AppendOutcome::Mismatch);
    }

    #[test]
    fn up_to_date_is_lexicographic() {
        let log = log_of(&[1, 1, 2]);
        assert!(log.is_up_to_date(1, 3)); // shorter but newer term wins
        assert!(!log.is_up_to_date(10, 1)); // longer but older term loses
        assert!(log.is_up_to_date(3, 2));
        assert!(!log.is_up_to_date(2, 2));
    }

    #[test]
    fn term_searches() {
        let log = log_of(&[1, 1, 2, 2, 2, 4, 4]);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.first_index_of_term_at(2), 1);
        assert_eq!(log.first_index_of_term_at(7), 6);
        assert_eq!(log.last_index_with_term_at_most(7, 3), 5);
        assert_eq!(log.last_index_with_term_at_most(7, 0), 0);
        assert_eq!(log.last_index_with_term_at_most(4, 9), 4);
    }

    #[test]
    fn apply_never_passes_persisted() {
        let mut log = log_of(&[]);
        log.append_new(vec![e(1, 1), e(2, 1)]);
        log.commit_to(2);
        assert!(log.take_committed().is_empty());
        let written = log.take_unstable();
        assert_eq!(written.len(), 2);
        log.persisted_to(1, 1);
        assert_eq!(log.take_committed(), vec![e(1, 1)]);
    }

    #[test]
    fn persisted_ack_for_replaced_entry_is_ignored() {
        let mut log = log_of(&[]);
        log.append_new(vec![e(1, 1), e(2, 1)]);
        let _ = log.take_unstable();
        assert_eq!(
            log.maybe_append(1, 1, vec![e(2, 2)]),
            AppendOutcome::Accepted { last_new: 2 }
        );
        log.persisted_to(2, 1);
        assert_eq!(log.persisted, 0);
    }

    #[test]
    fn compact_and_restore() {
        let mut log = log_of(&[1, 1, 2]);
        log.commit_to(3);
        log.applied = 2;
        log.applying = 2;
        assert!(log.compact(3, 2).is_err()); // beyond applied
        assert!(log.compact(2, 2).is_err()); // wrong term
        log.compact(2, 1).unwrap();
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert!(log.slice(1, 4, usize::MAX).is_none());
        assert!(log.compact(1, 1).is_err()); // older than current
        log.restore(&SnapshotMeta {
            index: 10,
            term: 3,
            conf_state: Default::default(),
        });
        assert_eq!(
            (log.last_index(), log.last_term(), log.committed),
            (10, 3, 10)
        );
    }
}
