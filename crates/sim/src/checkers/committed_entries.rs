//! A committed entry is never lost or changed.
//!
//! The ledger records every entry some member has declared committed (its durable commit
//! index covers it, or it arrived inside a snapshot). From then on: no member may write a
//! different entry at that index, no member's durable commit may point past its durable log
//! (a restart would then commit entries it does not have), and every new leader must hold
//! the ledger (see `leader_completeness`).

use bytes::Bytes;
use raft::{EntryKind, Index, NodeId, Term};

use super::Violation;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    pub term: Term,
    pub kind: EntryKind,
    pub data: Bytes,
}

#[derive(Debug, Default)]
pub struct CommittedLedger {
    /// `slots[i]` is index `i + 1`: the entry and the lowest term by which some member knew
    /// it committed; `None` where no member has shown us the entry yet.
    slots: Vec<Option<(CommittedEntry, Term)>>,
}

impl CommittedLedger {
    /// The highest index known committed anywhere.
    pub fn max_index(&self) -> Index {
        self.slots.len() as Index
    }

    pub fn get(&self, index: Index) -> Option<&CommittedEntry> {
        if index == 0 {
            return None;
        }
        self.slots
            .get((index - 1) as usize)
            .and_then(|s| s.as_ref())
            .map(|(e, _)| e)
    }

    /// The lowest term in which some member already knew `index` committed. Leaders of
    /// this term or later must hold the entry (leader completeness); a stale leader of an
    /// older term need not.
    pub fn known_committed_in(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return None;
        }
        self.slots
            .get((index - 1) as usize)
            .and_then(|s| s.as_ref())
            .map(|(_, t)| *t)
    }

    /// `node`, in term `as_of`, considers `(index, term, kind, data)` committed.
    pub fn record(
        &mut self,
        node: NodeId,
        index: Index,
        entry: CommittedEntry,
        as_of: Term,
    ) -> Result<(), Violation> {
        if index == 0 {
            return Err(Violation::new(
                "committed-entries",
                format!("node {node} committed index 0"),
            ));
        }
        let slot = (index - 1) as usize;
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        match &mut self.slots[slot] {
            None => {
                self.slots[slot] = Some((entry, as_of));
                Ok(())
            }
            Some((old, _)) if *old != entry => Err(Violation::new(
                "committed-entries",
                format!(
                    "index {index} was committed as {:?}/{:?}/{:?}, node {node} commits {:?}/{:?}/{:?}",
                    old.term, old.kind, old.data, entry.term, entry.kind, entry.data
                ),
            )),
            Some((_, known_in)) => {
                *known_in = (*known_in).min(as_of);
                Ok(())
            }
        }
    }

    /// `node` replaces (or truncates away, `new` = `None`) its durable entry `old` at
    /// `index`, by a write from a leader of term `writer_term` or later (the highest term
    /// among the entries written; `Term::MAX` when nothing bounds it). A durable copy of a
    /// committed entry must never go to a write from a leader of the term in which the entry
    /// was known committed or later: such a leader holds that very entry
    /// ([`Self::known_committed_in`]; `leader_completeness` checks that), so no legitimate
    /// conflict can reach it. A leader of an older term may never have had the entry: a
    /// member that still follows it (its Append was delayed, or the member was stalled) may
    /// take that leader's suffix, as Raft allows; the copies the commit counted are elsewhere,
    /// and the member is set right by a current leader (raftkv-sim seed 238202: a leader of
    /// term 8 stalled, resumed and took a term-12 Append over entries committed in term 13).
    /// (A stale member writing something else at a committed index it never held is fine:
    /// its entry is uncommitted and will be overwritten.)
    pub fn check_replaced(
        &self,
        node: NodeId,
        index: Index,
        old_term: Term,
        old_data: &Bytes,
        new: Option<(Term, &Bytes)>,
        writer_term: Term,
    ) -> Result<(), Violation> {
        let (Some(c), Some(known_in)) = (self.get(index), self.known_committed_in(index)) else {
            return Ok(());
        };
        let old_is_committed = c.term == old_term && c.data == *old_data;
        let new_is_committed = new.is_some_and(|(t, d)| c.term == t && c.data == *d);
        if old_is_committed && !new_is_committed && writer_term >= known_in {
            return Err(Violation::new(
                "committed-entries",
                format!(
                    "node {node} dropped its copy of committed entry {index} (term {}), replacing it with {new:?}",
                    c.term
                ),
            ));
        }
        Ok(())
    }

    /// A durable commit index must be covered by the durable log (or snapshot).
    pub fn check_commit_covered(
        node: NodeId,
        durable_commit: Index,
        durable_last: Index,
    ) -> Result<(), Violation> {
        if durable_commit > durable_last {
            return Err(Violation::new(
                "committed-entries",
                format!(
                    "node {node} durably committed {durable_commit} but its durable log ends at {durable_last}"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(term: Term, data: &'static str) -> CommittedEntry {
        CommittedEntry {
            term,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data.as_bytes()),
        }
    }

    #[test]
    fn a_changed_committed_entry_is_caught() {
        let mut l = CommittedLedger::default();
        l.record(1, 1, c(1, "a"), 1).unwrap();
        l.record(2, 1, c(1, "a"), 2).unwrap();
        assert!(l.record(3, 1, c(2, "b"), 2).is_err());
        assert_eq!(l.known_committed_in(1), Some(1));
    }

    #[test]
    fn dropping_a_durable_copy_of_a_committed_entry_is_caught() {
        let mut l = CommittedLedger::default();
        let (x, y) = (Bytes::from_static(b"x"), Bytes::from_static(b"y"));
        l.record(1, 3, c(2, "x"), 2).unwrap();
        // Rewriting the same entry, or replacing an uncommitted one, is fine.
        l.check_replaced(2, 3, 2, &x, Some((2, &x)), 2).unwrap();
        l.check_replaced(2, 3, 1, &y, Some((3, &y)), 3).unwrap();
        l.check_replaced(2, 4, 9, &y, None, 9).unwrap();
        // Replacing or truncating the committed copy is not, by a leader of the term it was
        // known committed in or later.
        assert!(l.check_replaced(2, 3, 2, &x, Some((3, &x)), 3).is_err());
        assert!(l.check_replaced(2, 3, 2, &x, Some((2, &y)), 2).is_err());
        assert!(l.check_replaced(2, 3, 2, &x, None, 2).is_err());
        assert!(l.check_replaced(2, 3, 2, &x, None, Term::MAX).is_err());
    }

    #[test]
    fn a_leader_older_than_the_commit_may_replace_a_followers_copy() {
        let mut l = CommittedLedger::default();
        let x = Bytes::from_static(b"x");
        // Entry 71 of term 8, first known committed by a member in term 13.
        l.record(2, 71, c(8, "x"), 13).unwrap();
        // A member that still follows the leader of term 12, which never had it.
        l.check_replaced(3, 71, 8, &x, Some((12, &Bytes::new())), 12)
            .unwrap();
        l.check_replaced(3, 72, 8, &x, None, 12).unwrap();
        // The leader of term 13 holds it: a write from it (or later) must not drop it.
        assert!(l
            .check_replaced(3, 71, 8, &x, Some((13, &Bytes::new())), 13)
            .is_err());
    }

    #[test]
    fn a_commit_past_the_durable_log_is_caught() {
        CommittedLedger::check_commit_covered(1, 5, 5).unwrap();
        assert!(CommittedLedger::check_commit_covered(1, 6, 5).is_err());
    }
}
