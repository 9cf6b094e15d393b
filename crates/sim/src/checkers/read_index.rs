//! ReadIndex linearizability: the index a read is served at must cover every entry that
//! was committed (anywhere) before the read was asked for. Otherwise a read could miss a
//! write that had already been acknowledged — a stale read.

use std::collections::HashMap;

use bytes::Bytes;
use raft::{Index, NodeId, ReadState};

use super::Violation;

#[derive(Debug, Default)]
pub struct ReadIndexChecker {
    /// For each outstanding request context: the commit index known when it was asked.
    floors: HashMap<Bytes, Index>,
    confirmed: u64,
}

impl ReadIndexChecker {
    /// A read with `ctx` was requested while `committed` was the highest index known committed.
    pub fn requested(&mut self, ctx: Bytes, committed: Index) {
        self.floors.insert(ctx, committed);
    }

    /// How many read states passed the check.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    pub fn observe_read_state(&mut self, node: NodeId, rs: &ReadState) -> Result<(), Violation> {
        match self.floors.get(&rs.ctx) {
            None => Err(Violation::new(
                "read-index",
                format!("node {node} confirmed a read {:?} nobody asked for", rs.ctx),
            )),
            Some(&floor) if rs.index < floor => Err(Violation::new(
                "read-index",
                format!(
                    "node {node} served read {:?} at index {} but {floor} was already committed when it was asked",
                    rs.ctx, rs.index
                ),
            )),
            Some(_) => {
                self.confirmed += 1;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_read_index_is_caught() {
        let mut c = ReadIndexChecker::default();
        c.requested(Bytes::from_static(b"r1"), 7);
        let ok = ReadState {
            ctx: Bytes::from_static(b"r1"),
            index: 7,
        };
        c.observe_read_state(1, &ok).unwrap();
        let stale = ReadState {
            ctx: Bytes::from_static(b"r1"),
            index: 6,
        };
        assert!(c.observe_read_state(1, &stale).is_err());
    }

    #[test]
    fn a_read_nobody_asked_for_is_caught() {
        let mut c = ReadIndexChecker::default();
        let rs = ReadState {
            ctx: Bytes::from_static(b"ghost"),
            index: 1,
        };
        assert!(c.observe_read_state(1, &rs).is_err());
    }
}
