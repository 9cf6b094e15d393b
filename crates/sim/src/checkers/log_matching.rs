//! Log matching (Raft §5.3): two logs holding an entry with the same index and term are
//! identical up to that index.
//!
//! Checked incrementally: every (index, term) ever written to any durable log must always
//! carry the same payload and follow the same term at `index - 1`. By induction on the index
//! this is exactly the log matching property, at O(1) per written entry. It also checks that
//! terms never decrease along a log.

use std::collections::HashMap;

use bytes::Bytes;
use raft::{Entry, EntryKind, Index, NodeId, Term};

use super::Violation;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    prev_term: Term,
    kind: EntryKind,
    data: Bytes,
    first_seen_on: NodeId,
}

#[derive(Debug, Default)]
pub struct LogMatching {
    seen: HashMap<(Index, Term), Fingerprint>,
}

impl LogMatching {
    /// `node` durably wrote `entry`, right after an entry (or snapshot) of term `prev_term`.
    pub fn observe_entry(
        &mut self,
        node: NodeId,
        entry: &Entry,
        prev_term: Term,
    ) -> Result<(), Violation> {
        if entry.term < prev_term {
            return Err(Violation::new(
                "log-matching",
                format!(
                    "node {node}: entry {} has term {} after an entry of term {prev_term}",
                    entry.index, entry.term
                ),
            ));
        }
        let print = Fingerprint {
            prev_term,
            kind: entry.kind,
            data: entry.data.clone(),
            first_seen_on: node,
        };
        match self.seen.get(&(entry.index, entry.term)) {
            None => {
                self.seen.insert((entry.index, entry.term), print);
                Ok(())
            }
            Some(old) if old.prev_term != prev_term => Err(Violation::new(
                "log-matching",
                format!(
                    "entry {}/{}: node {} has it after term {}, node {node} after term {prev_term}",
                    entry.index, entry.term, old.first_seen_on, old.prev_term
                ),
            )),
            Some(old) if old.kind != print.kind || old.data != print.data => Err(Violation::new(
                "log-matching",
                format!(
                    "entry {}/{} differs: node {} has {:?} {:?}, node {node} has {:?} {:?}",
                    entry.index,
                    entry.term,
                    old.first_seen_on,
                    old.kind,
                    old.data,
                    print.kind,
                    print.data
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: Index, term: Term, data: &'static str) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data.as_bytes()),
        }
    }

    #[test]
    fn same_index_and_term_with_different_history_is_caught() {
        let mut c = LogMatching::default();
        c.observe_entry(1, &e(1, 1, "a"), 0).unwrap();
        c.observe_entry(1, &e(2, 2, "b"), 1).unwrap();
        // Node 2 has 2/2 but after an entry of term 2, not term 1.
        assert!(c.observe_entry(2, &e(2, 2, "b"), 2).is_err());
    }

    #[test]
    fn same_index_and_term_with_different_payload_is_caught() {
        let mut c = LogMatching::default();
        c.observe_entry(1, &e(1, 1, "a"), 0).unwrap();
        c.observe_entry(2, &e(1, 1, "a"), 0).unwrap();
        assert!(c.observe_entry(3, &e(1, 1, "x"), 0).is_err());
    }

    #[test]
    fn decreasing_terms_are_caught() {
        let mut c = LogMatching::default();
        assert!(c.observe_entry(1, &e(5, 2, "a"), 3).is_err());
    }
}
