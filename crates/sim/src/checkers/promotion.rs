//! Automatic promotion (the node driver's `promotion` module): a leader's driver promotes
//! only a learner that was added as a voter and is in sync at that moment, and once the
//! faults are healed every learner awaiting promotion becomes a voter.
//!
//! The driver reports each promotion with what it saw (`node::Promotion`: the learner's
//! acknowledged log end, the leader's last index). The checker holds it to the rule, and
//! holds what it saw to the truth: the learner's durable log must really hold the leader's
//! entry at the acknowledged index, unless the learner has since heard of a later term (a
//! newer leader may have cut its log, and this leader's change will never commit).

use node::{learner_in_sync, Promotion};
use raft::{Index, NodeId, Term};

use super::Violation;

const CHECKER: &str = "promotion";

/// The promoted learner's durable log at the moment of the promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnerLog {
    /// Its durable term.
    pub term: Term,
    pub snapshot_index: Index,
    pub last_index: Index,
    /// The term of its entry at the promotion's `matched` index, if it holds one there
    /// above its snapshot.
    pub term_at_matched: Option<Term>,
}

/// What the leader's durable log and applied state say at the moment of the promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderView {
    pub id: NodeId,
    pub term: Term,
    /// The member list the leader applied records the learner as added as a voter.
    pub added_as_voter: bool,
    /// The term of the leader's entry at the promotion's `matched` index, if it holds one
    /// above its snapshot.
    pub term_at_matched: Option<Term>,
}

/// Counts what it checked (for the sweep's statistics).
#[derive(Debug, Default)]
pub struct PromotionChecker {
    checked: u64,
}

impl PromotionChecker {
    /// Promotions checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// A leader's driver proposed promotion `p`.
    pub fn observe(
        &mut self,
        leader: &LeaderView,
        p: &Promotion,
        learner: &LearnerLog,
    ) -> Result<(), Violation> {
        self.checked += 1;
        let who = format!(
            "leader {} (term {}) promoted learner {} at {}/{}",
            leader.id, leader.term, p.node, p.index, p.term
        );
        if !leader.added_as_voter {
            return Err(Violation::new(
                CHECKER,
                format!("{who}, which its applied state does not record as added as a voter"),
            ));
        }
        if !learner_in_sync(p.matched, p.leader_last) {
            return Err(Violation::new(
                CHECKER,
                format!(
                    "{who} although it was not in sync: it had acknowledged {} of the leader's {}",
                    p.matched, p.leader_last
                ),
            ));
        }
        if learner.term > leader.term {
            return Ok(()); // a newer leader may have cut the learner's log since
        }
        let holds = if p.matched <= learner.snapshot_index {
            true
        } else if p.matched > learner.last_index {
            false
        } else {
            match (learner.term_at_matched, leader.term_at_matched) {
                (Some(a), Some(b)) => a == b,
                _ => true, // below the leader's snapshot: committed, the ledger checks it
            }
        };
        if !holds {
            return Err(Violation::new(
                CHECKER,
                format!(
                    "{who} believing it held the log through {}, but its durable log ({learner:?}) does not hold the leader's entry there ({:?})",
                    p.matched, leader.term_at_matched
                ),
            ));
        }
        Ok(())
    }
}

/// At the end of the liveness phase (everything healed, every member up): no learner of
/// the leader's configuration may still await promotion.
pub fn check_all_promoted(leader: NodeId, awaiting: &[NodeId]) -> Result<(), Violation> {
    if awaiting.is_empty() {
        return Ok(());
    }
    Err(Violation::new(
        CHECKER,
        format!("after healing, leader {leader} never promoted the learners {awaiting:?} that were added as voters"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader() -> LeaderView {
        LeaderView {
            id: 1,
            term: 3,
            added_as_voter: true,
            term_at_matched: Some(3),
        }
    }

    fn promotion(matched: Index, leader_last: Index) -> Promotion {
        Promotion {
            node: 4,
            matched,
            leader_last,
            index: leader_last + 1,
            term: 3,
        }
    }

    fn learner_holding(last_index: Index) -> LearnerLog {
        LearnerLog {
            term: 3,
            snapshot_index: 0,
            last_index,
            term_at_matched: Some(3),
        }
    }

    #[test]
    fn an_in_sync_learner_added_as_a_voter_may_be_promoted() {
        let mut c = PromotionChecker::default();
        c.observe(&leader(), &promotion(95, 100), &learner_holding(95))
            .unwrap();
        assert_eq!(c.checked(), 1);
    }

    #[test]
    fn promoting_a_learner_that_is_not_in_sync_is_caught() {
        let mut c = PromotionChecker::default();
        let v = c
            .observe(&leader(), &promotion(10, 100), &learner_holding(10))
            .unwrap_err();
        assert_eq!(v.checker, "promotion");
        assert!(v.detail.contains("not in sync"), "{v}");
        assert!(c
            .observe(&leader(), &promotion(0, 5), &learner_holding(0))
            .is_err());
    }

    #[test]
    fn promoting_a_learner_not_added_as_a_voter_is_caught() {
        let mut c = PromotionChecker::default();
        let mut l = leader();
        l.added_as_voter = false;
        let v = c
            .observe(&l, &promotion(100, 100), &learner_holding(100))
            .unwrap_err();
        assert!(v.detail.contains("added as a voter"), "{v}");
    }

    #[test]
    fn a_leader_that_believed_a_log_the_learner_does_not_hold_is_caught() {
        let mut c = PromotionChecker::default();
        // Shorter than the leader thought.
        assert!(c
            .observe(&leader(), &promotion(95, 100), &learner_holding(50))
            .is_err());
        // Long enough, but another term's entry at the acknowledged index.
        let mut other = learner_holding(95);
        other.term_at_matched = Some(2);
        assert!(c.observe(&leader(), &promotion(95, 100), &other).is_err());
        // ... unless the learner has since heard of a later leader, which may cut its log.
        other.term = 4;
        c.observe(&leader(), &promotion(95, 100), &other).unwrap();
        // Held inside its snapshot: fine.
        let snap = LearnerLog {
            term: 3,
            snapshot_index: 96,
            last_index: 96,
            term_at_matched: None,
        };
        c.observe(&leader(), &promotion(95, 100), &snap).unwrap();
    }

    #[test]
    fn a_learner_left_awaiting_promotion_after_healing_is_caught() {
        check_all_promoted(1, &[]).unwrap();
        let v = check_all_promoted(1, &[4]).unwrap_err();
        assert_eq!(v.checker, "promotion");
    }
}
