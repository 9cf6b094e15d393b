//! Applied ≤ durable commit (safety rule 10): a member never applies an entry its own disk
//! does not yet record as committed, or a crash could leave it having applied an entry that
//! its restarted self (and so the cluster) might not consider committed.

use raft::{Index, NodeId};

use super::Violation;

pub fn check(node: NodeId, applied: Index, durable_commit: Index) -> Result<(), Violation> {
    if applied > durable_commit {
        return Err(Violation::new(
            "applied-within-commit",
            format!("node {node} applied {applied} but its durable commit is {durable_commit}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn applying_past_the_durable_commit_is_caught() {
        super::check(1, 3, 3).unwrap();
        assert!(super::check(1, 4, 3).is_err());
    }
}
