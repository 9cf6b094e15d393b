//! Observing a cluster from outside through `Maintenance.Status`: who leads, in which term,
//! and whether Raft's election safety ("at most one leader per term") ever looked violated.
//!
//! This is the etcd-API equivalent of the course's `pruebaUnLider`: ask every member for its
//! state, group self-declared leaders by term, and fail if a term has two. The demo, the test
//! suites and the container tests decide "who leads" with [`agreed_leader`], so a leader means
//! the same thing everywhere.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::etcdserverpb::StatusResponse;

use crate::client::{CallError, Client};

/// One member's answer to Status, reduced to what leadership checks need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub endpoint: String,
    pub member_id: u64,
    /// The leader this member believes in (0 = none).
    pub leader: u64,
    pub term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub revision: i64,
}

impl MemberState {
    /// The parts of `endpoint`'s Status answer that leadership checks use.
    pub fn from_status(endpoint: String, status: StatusResponse) -> Self {
        let header = status.header.unwrap_or_default();
        MemberState {
            endpoint,
            member_id: header.member_id,
            leader: status.leader,
            term: status.raft_term,
            raft_index: status.raft_index,
            applied_index: status.raft_applied_index,
            revision: header.revision,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }
}

/// Status of every endpoint of `client`, in order (errors kept per endpoint).
pub async fn poll_states(client: &Client) -> Vec<Result<MemberState, CallError>> {
    let mut out = Vec::new();
    for (endpoint, one) in client.endpoints().into_iter().zip(client.each()) {
        out.push(
            one.status()
                .await
                .map(|s| MemberState::from_status(endpoint, s)),
        );
    }
    out
}

/// Every leader seen, by term. Feeding it all observations turns any two members that
/// claimed leadership of the same term into an error.
///
/// A claim counts once the same member makes it in two consecutive rounds. `Status` reads a
/// member's leader and term separately — etcd even reports the term of the last *applied*
/// entry, so a freshly elected etcd leader briefly shows the previous term — and a single
/// round can pair the new leader with the old term. Real split leadership persists until
/// the stale leader hears of the newer term, so it is still caught.
#[derive(Debug, Default)]
pub struct TermLedger {
    leaders: BTreeMap<u64, u64>,
    /// Claims `(member, term)` seen in the previous round, awaiting confirmation.
    pending: BTreeMap<u64, u64>,
    samples: usize,
}

impl TermLedger {
    /// Records the self-declared leaders among `states`; an error names the term that had
    /// two different (confirmed) leaders.
    pub fn record(&mut self, states: &[MemberState]) -> Result<(), String> {
        self.samples += 1;
        let claims: BTreeMap<u64, u64> = states
            .iter()
            .filter(|s| s.is_leader())
            .map(|s| (s.member_id, s.term))
            .collect();
        for (&member, &term) in &claims {
            if self.pending.get(&member) != Some(&term) {
                continue;
            }
            match self.leaders.get(&term) {
                Some(&other) if other != member => {
                    return Err(format!(
                        "term {term} has two leaders: {other:x} and {member:x}"
                    ))
                }
                _ => {
                    self.leaders.insert(term, member);
                }
            }
        }
        self.pending = claims;
        Ok(())
    }

    /// `(term, leader)` pairs confirmed so far.
    pub fn leaders(&self) -> &BTreeMap<u64, u64> {
        &self.leaders
    }

    /// How many rounds of observations were recorded.
    pub fn samples(&self) -> usize {
        self.samples
    }
}

/// A leader that every reachable member agrees on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgreedLeader {
    pub member_id: u64,
    pub term: u64,
    /// Index (in the client's endpoint order) of the leader's endpoint.
    pub endpoint_index: usize,
}

/// The leader, if all members in `states` answered, agree on one leader, that leader is
/// among them and declares itself leader in the highest term seen.
pub fn agreed_leader(states: &[Result<MemberState, CallError>]) -> Result<AgreedLeader, String> {
    let mut ok = Vec::new();
    for s in states {
        match s {
            Ok(state) => ok.push(state),
            Err(e) => return Err(format!("{} did not answer: {}", e.endpoint, e.message())),
        }
    }
    let Some(first) = ok.first() else {
        return Err("no member answered".into());
    };
    if first.leader == 0 {
        return Err(format!("{} knows no leader", first.endpoint));
    }
    if let Some(other) = ok.iter().find(|s| s.leader != first.leader) {
        return Err(format!(
            "members disagree on the leader ({} says {:x}, {} says {:x})",
            first.endpoint, first.leader, other.endpoint, other.leader
        ));
    }
    let Some(index) = ok.iter().position(|s| s.member_id == first.leader) else {
        return Err(format!(
            "the leader {:x} is not among the polled members",
            first.leader
        ));
    };
    let leader = ok[index];
    let max_term = ok.iter().map(|s| s.term).max().unwrap_or(0);
    if !leader.is_leader() || leader.term != max_term {
        return Err(format!(
            "{:x} is not (yet) leader of term {max_term}",
            leader.member_id
        ));
    }
    Ok(AgreedLeader {
        member_id: leader.member_id,
        term: leader.term,
        endpoint_index: index,
    })
}

/// Polls every member until they agree on a leader (recording every observation in `ledger`),
/// or fails after `limit` with the last reason. An election-safety violation fails at once.
pub async fn wait_for_leader(
    client: &Client,
    ledger: &mut TermLedger,
    limit: Duration,
    accept: impl Fn(&AgreedLeader) -> bool,
) -> Result<AgreedLeader, String> {
    let deadline = Instant::now() + limit;
    loop {
        let states = poll_states(client).await;
        let answered: Vec<MemberState> = states
            .iter()
            .filter_map(|s| s.as_ref().ok().cloned())
            .collect();
        ledger.record(&answered)?;
        let last = match agreed_leader(&states) {
            Ok(leader) if accept(&leader) => return Ok(leader),
            Ok(leader) => format!(
                "leader {:x} (term {}) is not the one awaited",
                leader.member_id, leader.term
            ),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(format!("no agreed leader after {limit:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(endpoint: &str, id: u64, leader: u64, term: u64) -> MemberState {
        MemberState {
            endpoint: endpoint.into(),
            member_id: id,
            leader,
            term,
            raft_index: 0,
            applied_index: 0,
            revision: 1,
        }
    }

    #[test]
    fn ledger_catches_two_leaders_in_one_term() {
        let mut ledger = TermLedger::default();
        for _ in 0..2 {
            ledger
                .record(&[state("a", 1, 1, 2), state("b", 2, 1, 2)])
                .unwrap();
        }
        for _ in 0..2 {
            ledger.record(&[state("b", 2, 2, 3)]).unwrap();
        }
        ledger.record(&[state("c", 3, 3, 3)]).unwrap();
        let err = ledger.record(&[state("c", 3, 3, 3)]).unwrap_err();
        assert!(err.contains("term 3 has two leaders"), "{err}");
        assert_eq!(ledger.leaders().len(), 2);
    }

    #[test]
    fn ledger_ignores_a_single_torn_observation() {
        let mut ledger = TermLedger::default();
        for _ in 0..2 {
            ledger.record(&[state("a", 1, 1, 2)]).unwrap();
        }
        // The new leader once reported with the previous term, then with its own.
        ledger.record(&[state("b", 2, 2, 2)]).unwrap();
        for _ in 0..2 {
            ledger.record(&[state("b", 2, 2, 3)]).unwrap();
        }
        assert_eq!(ledger.leaders().len(), 2, "{:?}", ledger.leaders());
    }

    #[test]
    fn agreement_needs_everyone_and_a_self_declared_leader() {
        let all = vec![
            Ok(state("a", 1, 2, 5)),
            Ok(state("b", 2, 2, 5)),
            Ok(state("c", 3, 2, 5)),
        ];
        assert_eq!(
            agreed_leader(&all),
            Ok(AgreedLeader {
                member_id: 2,
                term: 5,
                endpoint_index: 1
            })
        );
        let split = vec![
            Ok(state("a", 1, 2, 5)),
            Ok(state("b", 2, 2, 5)),
            Ok(state("c", 3, 0, 6)),
        ];
        assert!(agreed_leader(&split).is_err());
        let stale = vec![Ok(state("a", 1, 2, 6)), Ok(state("b", 2, 2, 5))];
        assert!(
            agreed_leader(&stale).is_err(),
            "leader's term is behind a follower's"
        );
        let absent = vec![Ok(state("a", 1, 9, 5))];
        assert!(agreed_leader(&absent).is_err());
    }
}
