//! What clients were told. A write is acknowledged only once its entry is applied on the
//! member that answers, and that entry must be the client's own; once acknowledged, no
//! member may ever apply anything else at its index. A linearizable read must reflect
//! every write that was committed, or acknowledged, before the read was asked for.

use std::collections::HashMap;

use bytes::Bytes;
use raft::{Index, NodeId};

use super::Violation;

#[derive(Debug, Default)]
pub struct ClientCalls {
    /// Acknowledged writes: the index each landed at, and its payload.
    acked: HashMap<Index, Bytes>,
    max_acked: Index,
    writes_acked: u64,
    reads_served: u64,
}

impl ClientCalls {
    /// The least index a read asked for now must reflect, given the highest index known
    /// committed anywhere.
    pub fn read_floor(&self, committed: Index) -> Index {
        committed.max(self.max_acked)
    }

    /// Member `node` acknowledged a write of `asked` as the entry at `index`, which
    /// carries `entry`.
    pub fn observe_write_ack(
        &mut self,
        node: NodeId,
        index: Index,
        asked: &Bytes,
        entry: &Bytes,
    ) -> Result<(), Violation> {
        if asked != entry {
            return Err(Violation::new(
                "client-calls",
                format!(
                    "node {node} acknowledged a write of {asked:?} with the entry at {index}, which carries {entry:?}"
                ),
            ));
        }
        if let Some(before) = self.acked.insert(index, asked.clone()) {
            if before != asked {
                return Err(Violation::new(
                    "client-calls",
                    format!("index {index} acknowledged for {before:?} and then for {asked:?}"),
                ));
            }
        }
        self.max_acked = self.max_acked.max(index);
        self.writes_acked += 1;
        Ok(())
    }

    /// Member `node` applies `data` at `index`: an acknowledged write there must be it.
    pub fn observe_apply(&self, node: NodeId, index: Index, data: &Bytes) -> Result<(), Violation> {
        match self.acked.get(&index) {
            Some(acked) if acked != data => Err(Violation::new(
                "client-calls",
                format!(
                    "acknowledged write {acked:?} at index {index} lost: node {node} applies {data:?} there"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Member `node` served a read asked for when `floor` was the read floor, from a state
    /// machine at `applied`.
    pub fn observe_read(
        &mut self,
        node: NodeId,
        floor: Index,
        applied: Index,
    ) -> Result<(), Violation> {
        if applied < floor {
            return Err(Violation::new(
                "client-calls",
                format!(
                    "stale read on node {node}: served at applied index {applied}, but index {floor} was committed or acknowledged before the read was asked"
                ),
            ));
        }
        self.reads_served += 1;
        Ok(())
    }

    pub fn writes_acked(&self) -> u64 {
        self.writes_acked
    }

    pub fn reads_served(&self) -> u64 {
        self.reads_served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_write_acknowledged_with_another_entry_is_caught() {
        let mut c = ClientCalls::default();
        assert!(c.observe_write_ack(1, 5, &b("x"), &b("y")).is_err());
    }

    #[test]
    fn an_acknowledged_write_replaced_later_is_caught() {
        let mut c = ClientCalls::default();
        c.observe_write_ack(1, 5, &b("x"), &b("x")).unwrap();
        c.observe_apply(2, 5, &b("x")).unwrap();
        assert!(c.observe_apply(3, 5, &b("other")).is_err());
    }

    #[test]
    fn a_read_missing_an_acknowledged_write_is_caught() {
        let mut c = ClientCalls::default();
        c.observe_write_ack(1, 9, &b("x"), &b("x")).unwrap();
        // Committed anywhere: only 7, but the write at 9 was acknowledged.
        let floor = c.read_floor(7);
        assert_eq!(floor, 9);
        assert!(c.observe_read(2, floor, 8).is_err());
        c.observe_read(2, floor, 9).unwrap();
        assert_eq!(c.reads_served(), 1);
    }
}
