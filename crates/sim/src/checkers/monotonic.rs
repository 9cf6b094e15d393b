//! Progress never goes backwards.
//!
//! Within one incarnation of a member (between restarts): term, commit index and applied
//! index never decrease. On its disk, across restarts: term, commit index and snapshot index
//! never decrease, and once a vote is durable for a term it never changes (a member that
//! forgot its vote could vote twice and elect two leaders).

use std::collections::HashMap;

use raft::{HardState, Index, NodeId, Term};

use super::Violation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Volatile {
    incarnation: u32,
    term: Term,
    commit: Index,
    applied: Index,
}

#[derive(Debug, Default)]
pub struct Monotonic {
    volatile: HashMap<NodeId, Volatile>,
    durable: HashMap<NodeId, (HardState, Index)>,
}

impl Monotonic {
    /// What the core reports about itself after a step.
    pub fn observe_status(
        &mut self,
        node: NodeId,
        incarnation: u32,
        term: Term,
        commit: Index,
        applied: Index,
    ) -> Result<(), Violation> {
        let now = Volatile {
            incarnation,
            term,
            commit,
            applied,
        };
        if let Some(before) = self.volatile.insert(node, now) {
            if before.incarnation == incarnation {
                for (what, b, n) in [
                    ("term", before.term, term),
                    ("commit", before.commit, commit),
                    ("applied", before.applied, applied),
                ] {
                    if n < b {
                        return Err(Violation::new(
                            "monotonic",
                            format!("node {node} (incarnation {incarnation}): {what} went from {b} to {n}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// What is on `node`'s disk after a write.
    pub fn observe_durable(
        &mut self,
        node: NodeId,
        hard_state: HardState,
        snapshot_index: Index,
    ) -> Result<(), Violation> {
        if let Some((before, before_snap)) = self.durable.insert(node, (hard_state, snapshot_index))
        {
            let fail = |detail: String| Err(Violation::new("monotonic", detail));
            if hard_state.term < before.term {
                return fail(format!(
                    "node {node}: durable term went from {} to {}",
                    before.term, hard_state.term
                ));
            }
            if hard_state.commit < before.commit {
                return fail(format!(
                    "node {node}: durable commit went from {} to {}",
                    before.commit, hard_state.commit
                ));
            }
            if snapshot_index < before_snap {
                return fail(format!(
                    "node {node}: durable snapshot went from {before_snap} to {snapshot_index}"
                ));
            }
            if hard_state.term == before.term
                && before.vote.is_some()
                && hard_state.vote != before.vote
            {
                return fail(format!(
                    "node {node}: durable vote in term {} changed from {:?} to {:?}",
                    hard_state.term, before.vote, hard_state.vote
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_regressions_within_an_incarnation_are_caught() {
        let mut c = Monotonic::default();
        c.observe_status(1, 0, 2, 5, 5).unwrap();
        assert!(c.observe_status(1, 0, 2, 4, 4).is_err());
        let mut c = Monotonic::default();
        c.observe_status(1, 0, 2, 5, 5).unwrap();
        assert!(c.observe_status(1, 0, 1, 5, 5).is_err());
        // A restart may begin with a lower applied index (the state machine is rebuilt).
        let mut c = Monotonic::default();
        c.observe_status(1, 0, 2, 5, 5).unwrap();
        c.observe_status(1, 1, 2, 5, 0).unwrap();
    }

    #[test]
    fn durable_regressions_and_changed_votes_are_caught() {
        let hs = |term, vote, commit| HardState { term, vote, commit };
        let mut c = Monotonic::default();
        c.observe_durable(1, hs(3, Some(2), 4), 0).unwrap();
        assert!(c.observe_durable(1, hs(3, Some(3), 4), 0).is_err());
        let mut c = Monotonic::default();
        c.observe_durable(1, hs(3, Some(2), 4), 0).unwrap();
        assert!(c.observe_durable(1, hs(3, Some(2), 3), 0).is_err());
        let mut c = Monotonic::default();
        c.observe_durable(1, hs(3, None, 4), 2).unwrap();
        assert!(c.observe_durable(1, hs(3, None, 4), 1).is_err());
        let mut c = Monotonic::default();
        c.observe_durable(1, hs(3, None, 4), 0).unwrap();
        assert!(c.observe_durable(1, hs(2, None, 4), 0).is_err());
        // A vote may appear where there was none, and a new term may carry a new vote.
        let mut c = Monotonic::default();
        c.observe_durable(1, hs(3, None, 4), 0).unwrap();
        c.observe_durable(1, hs(3, Some(1), 4), 0).unwrap();
        c.observe_durable(1, hs(4, Some(2), 4), 0).unwrap();
    }
}
