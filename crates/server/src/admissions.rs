//! Operators' admissions of peers (`raftkv peer admit`, `InternalRequest` field 41) as
//! replicated state: which incarnation each admitted member has, and the log index of the
//! entry that said so (docs/security.md, "A pre-claimed member").
//!
//! Each member keeps its peers' incarnations in its own `raftkv.peers` file
//! (`transport::Incarnations`), and an applied admission rewrites that record. A member that
//! was down when the admission was applied, and that catches up from a snapshot taken after
//! it, never applies the entry: so the state machine keeps every admission it applied and
//! carries them in its snapshot (`crate::kv::envelope`), and installing a snapshot hands
//! them to the transport's record, which takes each unless it already holds a later one.
//!
//! The checks an admission must pass ([`check`]) are made twice with the same code: by
//! the member that takes the call, for a prompt answer, and by every member when the entry
//! is applied, against the member list as applied at that index, so that all members take
//! the same decision.

use std::collections::BTreeMap;

use proto::raftkvpb::PeerIncarnation;

use crate::members::MemberList;

/// One admission: the incarnation, and the index of the log entry that admitted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub incarnation: u64,
    pub at: u64,
}

/// Every admission applied so far, the latest per member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admissions(BTreeMap<u64, Admission>);

/// Bytes per admission in [`Admissions::encode`].
const RECORD: usize = 24;

impl Admissions {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Record the admission of `member` applied at log index `at`.
    pub fn record(&mut self, member: u64, admission: Admission) {
        self.0.insert(member, admission);
    }

    /// Members and their admissions, in member id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Admission)> + '_ {
        self.0.iter().map(|(&id, &a)| (id, a))
    }

    /// For the state machine's snapshot: per admission, in member id order, the member id,
    /// the incarnation and the log index, each a little-endian u64.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD * self.0.len());
        for (id, a) in &self.0 {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&a.incarnation.to_le_bytes());
            out.extend_from_slice(&a.at.to_le_bytes());
        }
        out
    }

    /// Reads what [`Admissions::encode`] wrote; anything else is an error, never a panic.
    pub fn decode(data: &[u8]) -> anyhow::Result<Admissions> {
        if !data.len().is_multiple_of(RECORD) {
            anyhow::bail!("admissions in a snapshot: truncated record");
        }
        let word = |c: &[u8], i: usize| {
            u64::from_le_bytes(c[8 * i..8 * i + 8].try_into().expect("8 bytes"))
        };
        let mut out = BTreeMap::new();
        for c in data.chunks_exact(RECORD) {
            let (id, incarnation, at) = (word(c, 0), word(c, 1), word(c, 2));
            if incarnation == 0 || out.keys().next_back().is_some_and(|&last| last >= id) {
                anyhow::bail!("admissions in a snapshot: malformed record for member {id:x}");
            }
            out.insert(id, Admission { incarnation, at });
        }
        Ok(Admissions(out))
    }
}

/// Whether `req` may be applied to a cluster whose member list is `list`: the member must
/// be in it (not unknown, not removed) and the incarnation non-zero. The refusal is the gRPC
/// status the caller gets (etcd's `member not found` for an unknown or removed member).
pub fn check(list: &MemberList, req: &PeerIncarnation) -> Result<(), tonic::Status> {
    if req.incarnation == 0 {
        return Err(tonic::Status::invalid_argument(
            "raftkv: an incarnation is a non-zero number (the content of the member's \
             raftkv.incarnation file)",
        ));
    }
    if list.get(req.member_id).is_none() || list.is_removed(req.member_id) {
        return Err(tonic::Status::not_found("etcdserver: member not found"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_round_trip_and_bad_bytes_are_an_error() {
        let mut a = Admissions::default();
        a.record(
            9,
            Admission {
                incarnation: 0x600d,
                at: 40,
            },
        );
        a.record(
            3,
            Admission {
                incarnation: 7,
                at: 12,
            },
        );
        let bytes = a.encode();
        assert_eq!(Admissions::decode(&bytes).unwrap(), a);
        assert_eq!(
            Admissions::decode(&[]).unwrap(),
            Admissions::default(),
            "no admissions"
        );
        for cut in 1..bytes.len() {
            if !cut.is_multiple_of(RECORD) {
                assert!(Admissions::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
        // Out of order, and a zero incarnation, are refused.
        let mut swapped = bytes[RECORD..].to_vec();
        swapped.extend_from_slice(&bytes[..RECORD]);
        assert!(Admissions::decode(&swapped).is_err());
        let mut zero = bytes.clone();
        zero[8..16].fill(0);
        assert!(Admissions::decode(&zero).is_err());
    }
}
