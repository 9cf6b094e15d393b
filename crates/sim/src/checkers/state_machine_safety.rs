//! State-machine safety (Raft §5.4.3): no two members apply different entries at the same
//! index, and each member applies in order without gaps (as the MIT tester demands).

use raft::{Index, NodeId};

use super::Violation;
use crate::state_machine::AppliedRecord;

#[derive(Debug, Default)]
pub struct StateMachineSafety {
    /// The first record applied anywhere at each index; `applied[i]` is index `i + 1`.
    applied: Vec<(NodeId, AppliedRecord)>,
}

impl StateMachineSafety {
    /// The highest index applied by any member.
    pub fn max_index(&self) -> Index {
        self.applied.len() as Index
    }

    pub fn get(&self, index: Index) -> Option<&AppliedRecord> {
        if index == 0 {
            return None;
        }
        self.applied.get((index - 1) as usize).map(|(_, r)| r)
    }

    /// `node`, whose state machine was at `applied_before`, applies `record` (or loads it
    /// from a snapshot). Returns whether this is the first time any member applied the index.
    pub fn observe_apply(
        &mut self,
        node: NodeId,
        applied_before: Index,
        record: &AppliedRecord,
    ) -> Result<bool, Violation> {
        if record.index != applied_before + 1 {
            return Err(Violation::new(
                "state-machine-safety",
                format!(
                    "node {node} applied index {} right after {applied_before}",
                    record.index
                ),
            ));
        }
        let slot = (record.index - 1) as usize;
        match self.applied.get(slot) {
            Some((first, old)) if old != record => Err(Violation::new(
                "state-machine-safety",
                format!(
                    "index {}: node {first} applied {:?}/{:?}/{:?}, node {node} applied {:?}/{:?}/{:?}",
                    record.index, old.term, old.kind, old.data, record.term, record.kind, record.data
                ),
            )),
            Some(_) => Ok(false),
            None if slot == self.applied.len() => {
                self.applied.push((node, record.clone()));
                Ok(true)
            }
            None => Err(Violation::new(
                "state-machine-safety",
                format!(
                    "node {node} applied index {} but no member ever applied {}",
                    record.index,
                    self.applied.len() + 1
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft::EntryKind;

    fn r(index: Index, term: u64, data: &'static str) -> AppliedRecord {
        AppliedRecord {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data.as_bytes()),
        }
    }

    #[test]
    fn different_entries_applied_at_one_index_are_caught() {
        let mut c = StateMachineSafety::default();
        assert!(c.observe_apply(1, 0, &r(1, 1, "a")).unwrap());
        assert!(!c.observe_apply(2, 0, &r(1, 1, "a")).unwrap());
        let v = c.observe_apply(3, 0, &r(1, 2, "b")).unwrap_err();
        assert!(v.detail.contains("index 1"), "{v}");
    }

    #[test]
    fn applying_out_of_order_is_caught() {
        let mut c = StateMachineSafety::default();
        c.observe_apply(1, 0, &r(1, 1, "a")).unwrap();
        assert!(c.observe_apply(1, 1, &r(3, 1, "c")).is_err());
    }
}
