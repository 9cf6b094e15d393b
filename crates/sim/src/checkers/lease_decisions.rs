//! No follower clock, no stale leader: every expiry that takes effect (revokes at least one
//! lease) was decided by a member that led the term the decision names — as the simulator
//! saw independently, from each member's role after every step — and that passed a read
//! barrier asked after its lease clock said each revoked lease had run out, and had
//! applied the barrier's index when it decided.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use node::Barrier;
use raft::{Index, NodeId, Term};

use super::Violation;

const NAME: &str = "lease-expiry-decider";

/// What the simulator saw when a driver decided an expiry.
#[derive(Clone, Debug)]
pub struct Decision {
    pub proposer: NodeId,
    pub term: Term,
    pub barrier: Option<Barrier>,
    /// Per lease named: whether the proposer's lease clock said it had run out by the time
    /// the barrier was asked.
    pub ran_out_by_barrier: Vec<(i64, bool)>,
    /// The proposer's applied index when it decided.
    pub applied: Index,
}

#[derive(Debug, Default)]
pub struct LeaseDecisions {
    leaders: BTreeMap<Term, NodeId>,
    /// Expiry decisions by the payload of their entry.
    decisions: HashMap<Bytes, Decision>,
}

impl LeaseDecisions {
    pub fn observe_leader(&mut self, id: NodeId, term: Term) {
        self.leaders.entry(term).or_insert(id);
    }

    pub fn decided(&mut self, payload: Bytes, d: Decision) {
        self.decisions.insert(payload, d);
    }

    /// The expiry entry `payload` was first applied and revoked `revoked`.
    pub fn observe_effect(&self, payload: &Bytes, revoked: &[i64]) -> Result<(), Violation> {
        let fail = |what: String| {
            Err(Violation::new(
                NAME,
                format!("an expiry revoking {revoked:?} took effect, but {what}"),
            ))
        };
        let Some(d) = self.decisions.get(payload) else {
            return fail("no member decided it".into());
        };
        if self.leaders.get(&d.term) != Some(&d.proposer) {
            return fail(format!(
                "its proposer {} never led term {} (leader: {:?})",
                d.proposer,
                d.term,
                self.leaders.get(&d.term)
            ));
        }
        let Some(b) = d.barrier else {
            return fail(format!(
                "member {} decided without a read barrier",
                d.proposer
            ));
        };
        if b.index > d.applied {
            return fail(format!(
                "member {} decided at applied {} before applying its barrier's index {}",
                d.proposer, d.applied, b.index
            ));
        }
        for id in revoked {
            if !d.ran_out_by_barrier.contains(&(*id, true)) {
                return fail(format!(
                    "lease {id} had not run out on member {}'s clock when its barrier was asked at {:?}",
                    d.proposer, b.asked_at
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn decision(proposer: NodeId, barrier: Option<Barrier>, ran_out: bool) -> Decision {
        Decision {
            proposer,
            term: 2,
            barrier,
            ran_out_by_barrier: vec![(7, ran_out)],
            applied: 10,
        }
    }

    const B: Barrier = Barrier {
        asked_at: Duration::from_millis(5),
        index: 9,
    };

    #[test]
    fn a_leader_with_a_barrier_after_the_deadline_passes() {
        let mut c = LeaseDecisions::default();
        c.observe_leader(1, 2);
        c.decided(Bytes::from("e"), decision(1, Some(B), true));
        c.observe_effect(&Bytes::from("e"), &[7]).unwrap();
    }

    #[test]
    fn followers_barrierless_and_early_decisions_are_caught() {
        let mut c = LeaseDecisions::default();
        c.observe_leader(1, 2);
        c.decided(Bytes::from("follower"), decision(2, Some(B), true));
        c.decided(Bytes::from("no barrier"), decision(1, None, true));
        c.decided(Bytes::from("early"), decision(1, Some(B), false));
        let mut unapplied = decision(1, Some(B), true);
        unapplied.applied = 8;
        c.decided(Bytes::from("unapplied"), unapplied);
        for p in ["follower", "no barrier", "early", "unapplied", "unknown"] {
            c.observe_effect(&Bytes::from(p), &[7]).unwrap_err();
        }
    }
}
