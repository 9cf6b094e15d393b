//! What a restarted member recovers from its disk must be consistent: its state machine
//! (the snapshot) never runs ahead of its recovered commit index (safety rule 10: applied
//! never ahead of the durable commit after a restart). A commit index written without an
//! fsync may be lost at a crash, so the recovered commit can be below what the member had
//! applied before it crashed — legal, and counted so the sweep shows it happened.

use raft::{Index, NodeId};

use super::Violation;

/// A member restarted with `commit` and a state machine at `applied`.
pub fn check_restart(node: NodeId, commit: Index, applied: Index) -> Result<(), Violation> {
    if applied > commit {
        return Err(Violation::new(
            "recovery",
            format!("node {node} restarted with its state machine at {applied} but commit index {commit}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_ahead_of_the_recovered_commit_is_caught() {
        check_restart(1, 10, 10).unwrap();
        check_restart(1, 10, 4).unwrap();
        assert!(check_restart(1, 9, 10).is_err());
    }
}
