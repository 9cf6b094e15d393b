//! Leader completeness (Raft §5.4): a leader's log holds every entry committed in an
//! earlier term. Checked once per (leader, term), the first time we see it lead, against the
//! ledger of everything known committed so far — but only entries some member already knew
//! committed by the leader's own term: a stale leader whose election finished late (a newer
//! term has meanwhile committed more) need not hold what was committed after its term.

use std::collections::HashSet;

use raft::{Index, NodeId, Term};

use super::{CommittedLedger, Violation};

#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    checked: HashSet<(NodeId, Term)>,
}

impl LeaderCompleteness {
    /// `node` leads `term`. `snapshot_index` is where its log starts (earlier entries are in
    /// its snapshot, checked when it was taken or installed) and `term_at` reads its log.
    pub fn observe_leader(
        &mut self,
        node: NodeId,
        term: Term,
        ledger: &CommittedLedger,
        snapshot_index: Index,
        term_at: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), Violation> {
        if !self.checked.insert((node, term)) {
            return Ok(());
        }
        for index in snapshot_index + 1..=ledger.max_index() {
            let Some(committed) = ledger.get(index) else {
                continue;
            };
            if ledger.known_committed_in(index).is_some_and(|t| t > term) {
                continue;
            }
            match term_at(index) {
                Some(t) if t == committed.term => {}
                found => {
                    return Err(Violation::new(
                        "leader-completeness",
                        format!(
                            "node {node} leads term {term} but has {found:?} at index {index}, committed with term {}",
                            committed.term
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::committed_entries::CommittedEntry;
    use bytes::Bytes;
    use raft::EntryKind;

    /// A ledger where entry i+1 has term `terms[i]` and was known committed in that term.
    fn ledger_with(terms: &[Term]) -> CommittedLedger {
        let mut l = CommittedLedger::default();
        for (i, t) in terms.iter().enumerate() {
            l.record(
                1,
                i as Index + 1,
                CommittedEntry {
                    term: *t,
                    kind: EntryKind::Normal,
                    data: Bytes::new(),
                },
                *t,
            )
            .unwrap();
        }
        l
    }

    #[test]
    fn a_stale_leader_need_not_hold_entries_committed_after_its_term() {
        // Index 3 was committed in term 6; a leader of term 5 whose election finished late
        // does not have it, and that is fine. A leader of term 6 or later must have it.
        let ledger = ledger_with(&[1, 1, 6]);
        let log = |i: Index| [None, Some(1), Some(1), Some(5)].get(i as usize).copied()?;
        let mut c = LeaderCompleteness::default();
        c.observe_leader(1, 5, &ledger, 0, log).unwrap();
        assert!(c.observe_leader(1, 7, &ledger, 0, log).is_err());
    }

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let ledger = ledger_with(&[1, 1, 2]);
        let mut c = LeaderCompleteness::default();
        let full_log = |i: Index| [None, Some(1), Some(1), Some(2)].get(i as usize).copied()?;
        c.observe_leader(1, 3, &ledger, 0, full_log).unwrap();
        let short_log = |i: Index| [None, Some(1), Some(1)].get(i as usize).copied()?;
        assert!(c.observe_leader(2, 4, &ledger, 0, short_log).is_err());
    }

    #[test]
    fn a_leader_with_a_different_term_at_a_committed_index_is_caught() {
        let ledger = ledger_with(&[1, 2]);
        let mut c = LeaderCompleteness::default();
        let log = |i: Index| [None, Some(1), Some(3)].get(i as usize).copied()?;
        assert!(c.observe_leader(3, 3, &ledger, 0, log).is_err());
        // Entries covered by the leader's snapshot are not read from its log.
        let mut c = LeaderCompleteness::default();
        c.observe_leader(3, 3, &ledger, 2, |_| None).unwrap();
    }
}
