//! Election safety: at most one leader per term (Raft §5.2).

use std::collections::HashMap;

use raft::{NodeId, Term};

use super::Violation;

#[derive(Debug, Default)]
pub struct ElectionSafety {
    leader_of_term: HashMap<Term, NodeId>,
}

impl ElectionSafety {
    /// `node` reports itself leader in `term`.
    pub fn observe_leader(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.leader_of_term.insert(term, node) {
            Some(other) if other != node => Err(Violation::new(
                "election-safety",
                format!("nodes {other} and {node} were both leader in term {term}"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut c = ElectionSafety::default();
        c.observe_leader(1, 3).unwrap();
        c.observe_leader(1, 3).unwrap();
        c.observe_leader(2, 4).unwrap();
        let v = c.observe_leader(2, 3).unwrap_err();
        assert!(v.detail.contains("term 3"), "{v}");
    }
}
