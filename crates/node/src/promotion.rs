//! Automatic promotion of learners that were added as voters.
//!
//! A member added "as a voter" enters the Raft configuration as a learner, so that a member
//! that never starts (a wrong URL, a typo) cannot take a quorum member away; the leader
//! promotes it once it is in sync (etcd's rule for `MemberPromote`, see
//! [`learner_in_sync`]). Which learners were added as voters is replicated state (the
//! member list of the caller's state machine): the caller tells the driver with
//! [`Driver::set_promotion_candidates`] and the driver decides when to promote, so the
//! server and the simulator run the same rule.

use std::collections::BTreeSet;

use bytes::Bytes;
use raft::{ConfChange, ConfChangeKind, Index, NodeId, Role, Term};

use crate::driver::Driver;

/// Whether a learner whose acknowledged log ends at `matched` is in sync with a leader
/// whose log ends at `leader_last`: it holds at least 90% of it (etcd's `isLearnerReady`,
/// same threshold). A learner that acknowledged nothing is never in sync. Both the
/// automatic promotion and an operator's `MemberPromote` use this rule.
pub fn learner_in_sync(matched: Index, leader_last: Index) -> bool {
    matched > 0 && u128::from(matched) * 10 >= u128::from(leader_last) * 9
}

/// A promotion the driver proposed, with what it saw when it decided (for logs and for
/// the simulator's `promotion` checker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promotion {
    /// The learner promoted.
    pub node: NodeId,
    /// The learner's acknowledged log end, as the leader's progress said.
    pub matched: Index,
    /// The leader's last index before the promotion entry.
    pub leader_last: Index,
    /// Where the promotion entry was placed (index, term).
    pub index: Index,
    pub term: Term,
}

impl Driver {
    /// The members the replicated state records as voters, including those added as voters
    /// that are still learners in the Raft configuration (etcd's member list shows them as
    /// voters from the start). Any of them that is a learner in the configuration awaits
    /// promotion. Call it at start (from the recovered state) and whenever applying an
    /// entry or installing a snapshot may have changed it; the set replaces the last one.
    pub fn set_promotion_candidates(&mut self, ids: BTreeSet<NodeId>) {
        self.promotion_candidates = ids;
    }

    /// The learners of the current configuration that await promotion.
    pub fn awaiting_promotion(&self) -> Vec<NodeId> {
        self.raft
            .status()
            .conf_state
            .learners
            .into_iter()
            .filter(|id| self.promotion_candidates.contains(id))
            .collect()
    }

    /// Whether learner `id` is in sync with this leader ([`learner_in_sync`] on the core's
    /// progress). False on a member that does not lead (it knows no progress).
    pub fn learner_in_sync(&self, id: NodeId) -> bool {
        let status = self.raft.status();
        status.role == Role::Leader && learner_in_sync(self.matched(id), status.last_index)
    }

    fn matched(&self, id: NodeId) -> Index {
        self.raft
            .progress()
            .iter()
            .find(|p| p.id == id)
            .map_or(0, |p| p.match_index)
    }

    /// On the leader, every `promote_check_interval`: propose the promotion of the first
    /// learner awaiting it that is in sync. One change at a time: the core refuses a second
    /// while one is uncommitted (and before the leader committed an entry of its term), and
    /// the next look tries again. The promotion answers nobody; it is reported in
    /// [`crate::Effects::promotions`].
    pub(crate) fn maybe_promote(&mut self) {
        if self.promotion_candidates.is_empty() || self.role != Role::Leader {
            return;
        }
        let waiting = self.awaiting_promotion();
        if waiting.is_empty() {
            return;
        }
        let leader_last = self.raft.status().last_index;
        for id in waiting {
            let matched = self.matched(id);
            if !self.cfg.unsafe_promote_unsynced && !learner_in_sync(matched, leader_last) {
                continue;
            }
            let cc = ConfChange {
                kind: ConfChangeKind::AddVoter,
                node: id,
                context: Bytes::new(),
            };
            if let Ok(placed) = self.raft.propose_conf_change(cc) {
                self.promotions.push(Promotion {
                    node: id,
                    matched,
                    leader_last,
                    index: placed.first,
                    term: placed.term,
                });
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::learner_in_sync;

    #[test]
    fn in_sync_means_ninety_percent_of_the_leaders_log() {
        assert!(learner_in_sync(90, 100));
        assert!(learner_in_sync(100, 100));
        assert!(!learner_in_sync(89, 100));
        assert!(learner_in_sync(9, 10));
        assert!(!learner_in_sync(8, 10));
        assert!(learner_in_sync(1, 1));
    }

    #[test]
    fn a_learner_that_acknowledged_nothing_is_never_in_sync() {
        assert!(!learner_in_sync(0, 0));
        assert!(!learner_in_sync(0, 1));
    }

    #[test]
    fn huge_indexes_do_not_overflow() {
        assert!(learner_in_sync(u64::MAX, u64::MAX));
        assert!(!learner_in_sync(u64::MAX / 2, u64::MAX));
    }
}
