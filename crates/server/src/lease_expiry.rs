//! The leader's lease decisions as log entries. *What* expired and *when* the leader may
//! say so is decided by the node driver (`node::lease_keeper`, run by the node thread
//! with this member's lease clock, `crate::lease_clock`): only a leader, after a read
//! barrier asked once its clock said the lease ran out, in the term it leads. This module
//! only writes each decision as the `InternalRequest` that `mvcc::lease` applies (which
//! checks the term and the renewal count again, so a stale decision changes nothing).

use bytes::Bytes;
use node::lessor::LeaseAt;
use node::LeaseDecision;
use prost::Message as _;
use proto::raftkvpb::{
    internal_request::Request as Internal, InternalRequest, LeaseCheckpointAt, LeaseCheckpoints,
    LeaseExpiry,
};

fn proto_at(at: LeaseAt) -> proto::raftkvpb::LeaseAt {
    proto::raftkvpb::LeaseAt {
        id: at.id,
        renewals: at.renewals,
    }
}

/// The log entry of one decision.
pub fn entry(decision: &LeaseDecision) -> Bytes {
    let request = match decision {
        LeaseDecision::Expire { term, leases, .. } => Internal::LeaseExpiry(LeaseExpiry {
            term: *term,
            leases: leases.iter().copied().map(proto_at).collect(),
        }),
        LeaseDecision::Checkpoint { term, leases } => {
            Internal::LeaseCheckpoints(LeaseCheckpoints {
                term: *term,
                checkpoints: leases
                    .iter()
                    .map(|(at, left)| LeaseCheckpointAt {
                        lease: Some(proto_at(*at)),
                        remaining_ms: i64::try_from(left.as_millis()).unwrap_or(i64::MAX),
                    })
                    .collect(),
            })
        }
    };
    Bytes::from(
        InternalRequest {
            auth: None,
            request: Some(request),
        }
        .encode_to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn decisions_become_the_entries_mvcc_applies() {
        let at = LeaseAt { id: 9, renewals: 2 };
        let expire = LeaseDecision::Expire {
            term: 4,
            leases: vec![at],
            barrier: None,
        };
        let decoded = InternalRequest::decode(entry(&expire)).expect("decodes");
        let Some(Internal::LeaseExpiry(e)) = decoded.request else {
            panic!("{decoded:?}")
        };
        assert_eq!(e.term, 4);
        assert_eq!((e.leases[0].id, e.leases[0].renewals), (9, 2));
        let cp = LeaseDecision::Checkpoint {
            term: 5,
            leases: vec![(at, Duration::from_millis(1500))],
        };
        let decoded = InternalRequest::decode(entry(&cp)).expect("decodes");
        let Some(Internal::LeaseCheckpoints(c)) = decoded.request else {
            panic!("{decoded:?}")
        };
        assert_eq!(c.term, 5);
        assert_eq!(c.checkpoints[0].remaining_ms, 1500);
    }
}
