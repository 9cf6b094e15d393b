//! Majority arithmetic, kept apart so the same two functions decide commits, elections,
//! check-quorum and ReadIndex confirmation. Membership is always passed in (it comes from the
//! current `ConfState`); nothing here knows a fixed cluster size.

use std::collections::BTreeMap;

use crate::types::NodeId;

/// How many of `voters` make a majority.
pub(crate) fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The largest value `v` such that a majority of `voters` report a value ≥ `v`.
/// Used with match indexes (→ commit index) and read acknowledgements (→ confirmed round).
/// With no voters nothing can be agreed on, so the answer is 0.
pub(crate) fn quorum_value(voters: &[NodeId], mut value_of: impl FnMut(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return 0;
    }
    let mut values: Vec<u64> = voters.iter().map(|&id| value_of(id)).collect();
    // Descending: the majority-th largest value is held by at least a majority.
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[majority(voters.len()) - 1]
}

/// The state of an election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteOutcome {
    Won,
    Lost,
    Pending,
}

/// Tally `votes` (granted or refused, by voter) against the membership. Votes from
/// non-voters are not counted.
pub(crate) fn tally(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteOutcome {
    let need = majority(voters.len());
    let (mut yes, mut no) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    if voters.is_empty() {
        VoteOutcome::Lost
    } else if yes >= need {
        VoteOutcome::Won
    } else if voters.len() - no < need {
        VoteOutcome::Lost
    } else {
        VoteOutcome::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_value_takes_the_majority_position() {
        let voters = [1, 2, 3];
        let m = BTreeMap::from([(1, 5), (2, 3), (3, 9)]);
        assert_eq!(quorum_value(&voters, |id| m[&id]), 5);
        let five = [1, 2, 3, 4, 5];
        let m = BTreeMap::from([(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
        assert_eq!(quorum_value(&five, |id| m[&id]), 3);
        assert_eq!(quorum_value(&[7], |_| 4), 4);
        assert_eq!(quorum_value(&[], |_| 4), 0);
        // Four voters need three: the third largest.
        let m = BTreeMap::from([(1, 10), (2, 10), (3, 1), (4, 1)]);
        assert_eq!(quorum_value(&[1, 2, 3, 4], |id| m[&id]), 1);
    }

    #[test]
    fn tally_outcomes() {
        let voters = [1, 2, 3];
        let mut votes = BTreeMap::from([(1, true)]);
        assert_eq!(tally(&voters, &votes), VoteOutcome::Pending);
        votes.insert(2, false);
        assert_eq!(tally(&voters, &votes), VoteOutcome::Pending);
        votes.insert(3, false);
        assert_eq!(tally(&voters, &votes), VoteOutcome::Lost);
        votes.insert(3, true);
        assert_eq!(tally(&voters, &votes), VoteOutcome::Won);
        // A vote from a non-member changes nothing.
        let votes = BTreeMap::from([(1, true), (9, true)]);
        assert_eq!(tally(&voters, &votes), VoteOutcome::Pending);
        assert_eq!(tally(&[], &votes), VoteOutcome::Lost);
    }
}
