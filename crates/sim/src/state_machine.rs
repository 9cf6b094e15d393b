//! The simulated state machine: it simply remembers every entry it applied, in order.
//!
//! Keeping the whole applied history (rather than a digest) is what lets the checkers
//! compare two members index by index, and lets a snapshot carry checkable contents: the
//! snapshot of this state machine is the encoded history itself.
//!
//! Lease entries (`crate::leases`) also build the replicated lease table, a function of
//! the history (rebuilt by replaying it after a restore).

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeSet;

use raft::{ConfChange, ConfChangeKind, Entry, EntryKind, Index, NodeId, Term};

/// The context of an `AddLearner` that adds a member as a voter: it enters the
/// configuration as a learner and the leader's driver promotes it once it is in sync (the
/// server says the same with an `etcdserverpb.Member` whose `is_learner` is false).
pub const ADDED_AS_VOTER: &[u8] = b"added-as-voter";

use crate::leases::{LeaseApplied, LeaseTable};

/// One applied entry, as the state machine saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedRecord {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl From<&Entry> for AppliedRecord {
    fn from(e: &Entry) -> AppliedRecord {
        AppliedRecord {
            index: e.index,
            term: e.term,
            kind: e.kind,
            data: e.data.clone(),
        }
    }
}

/// The applied history of one member incarnation; `records[i]` has index `i + 1`.
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    records: Vec<AppliedRecord>,
    leases: LeaseTable,
    /// What the last pushed record did to leases, if it was a lease entry.
    last_lease: Option<LeaseApplied>,
}

impl StateMachine {
    pub fn applied_index(&self) -> Index {
        self.records.len() as Index
    }

    pub fn records(&self) -> &[AppliedRecord] {
        &self.records
    }

    pub fn record(&self, index: Index) -> Option<&AppliedRecord> {
        if index == 0 {
            return None;
        }
        self.records.get((index - 1) as usize)
    }

    /// Appends the next record. The caller has checked it is `applied_index() + 1`.
    pub fn push(&mut self, record: AppliedRecord) {
        self.last_lease = match record.kind {
            EntryKind::Normal => self.leases.apply(&record.data, record.term),
            _ => None,
        };
        self.records.push(record);
    }

    /// Replaces the whole history with a snapshot's contents.
    pub fn restore(&mut self, records: Vec<AppliedRecord>) {
        self.leases = LeaseTable::default();
        for r in &records {
            if r.kind == EntryKind::Normal {
                self.leases.apply(&r.data, r.term);
            }
        }
        self.last_lease = None;
        self.records = records;
    }

    /// The members this history records as voters, including those added as voters that
    /// are still learners in the configuration (the driver promotes those once in sync):
    /// the simulator's counterpart of the server's member list. A member joins the set by
    /// an `AddVoter` or by an `AddLearner` whose context is [`ADDED_AS_VOTER`], and leaves it
    /// by an `AddLearner` without it or a removal.
    pub fn promotion_candidates(&self) -> BTreeSet<NodeId> {
        let mut ids = BTreeSet::new();
        for r in self
            .records
            .iter()
            .filter(|r| r.kind == EntryKind::ConfChange)
        {
            let Ok(cc) = ConfChange::decode(&r.data) else {
                continue;
            };
            match cc.kind {
                ConfChangeKind::AddVoter => ids.insert(cc.node),
                ConfChangeKind::AddLearner if cc.context.as_ref() == ADDED_AS_VOTER => {
                    ids.insert(cc.node)
                }
                ConfChangeKind::AddLearner | ConfChangeKind::Remove => ids.remove(&cc.node),
            };
        }
        ids
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// What the last [`StateMachine::push`] did to leases (`None`: no lease entry).
    pub fn last_lease(&self) -> Option<&LeaseApplied> {
        self.last_lease.as_ref()
    }

    /// The snapshot image: every record, length-prefixed.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.records.len() * 32);
        for r in &self.records {
            out.put_u64_le(r.index);
            out.put_u64_le(r.term);
            out.put_u8(kind_code(r.kind));
            out.put_u32_le(r.data.len() as u32);
            out.put_slice(&r.data);
        }
        out.freeze()
    }

    /// Parses a snapshot image made by [`StateMachine::encode`]. The records must be
    /// exactly indexes 1..=n: an image with holes is as bad as a corrupt one.
    pub fn decode(image: &Bytes) -> Result<Vec<AppliedRecord>, String> {
        let mut records = Vec::new();
        let mut pos = 0usize;
        let take = |pos: &mut usize, n: usize| -> Result<Bytes, String> {
            if *pos + n > image.len() {
                return Err(format!("snapshot image truncated at byte {}", *pos));
            }
            let b = image.slice(*pos..*pos + n);
            *pos += n;
            Ok(b)
        };
        while pos < image.len() {
            let index = u64::from_le_bytes(take(&mut pos, 8)?[..].try_into().unwrap());
            let term = u64::from_le_bytes(take(&mut pos, 8)?[..].try_into().unwrap());
            let kind = kind_from_code(take(&mut pos, 1)?[0])?;
            let len = u32::from_le_bytes(take(&mut pos, 4)?[..].try_into().unwrap()) as usize;
            let data = take(&mut pos, len)?;
            if index != records.len() as u64 + 1 {
                return Err(format!(
                    "snapshot image has index {index} where {} was expected",
                    records.len() + 1
                ));
            }
            records.push(AppliedRecord {
                index,
                term,
                kind,
                data,
            });
        }
        Ok(records)
    }
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    }
}

fn kind_from_code(code: u8) -> Result<EntryKind, String> {
    match code {
        0 => Ok(EntryKind::Normal),
        1 => Ok(EntryKind::Noop),
        2 => Ok(EntryKind::ConfChange),
        other => Err(format!("unknown entry kind {other} in snapshot image")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trips() {
        let mut sm = StateMachine::default();
        for i in 1..=3u64 {
            sm.push(AppliedRecord {
                index: i,
                term: 2,
                kind: if i == 1 {
                    EntryKind::Noop
                } else {
                    EntryKind::Normal
                },
                data: Bytes::from(format!("v{i}")),
            });
        }
        let back = StateMachine::decode(&sm.encode()).unwrap();
        assert_eq!(back, sm.records());
    }

    #[test]
    fn promotion_candidates_follow_the_conf_changes_applied() {
        let mut sm = StateMachine::default();
        let changes = [
            (ConfChangeKind::AddLearner, 4, ADDED_AS_VOTER),
            (ConfChangeKind::AddLearner, 5, &b""[..]),
            (ConfChangeKind::AddVoter, 6, &b""[..]),
            (ConfChangeKind::AddLearner, 7, ADDED_AS_VOTER),
            (ConfChangeKind::Remove, 7, &b""[..]),
        ];
        for (i, (kind, node, context)) in changes.into_iter().enumerate() {
            let cc = ConfChange {
                kind,
                node,
                context: Bytes::from_static(context),
            };
            sm.push(AppliedRecord {
                index: i as u64 + 1,
                term: 1,
                kind: EntryKind::ConfChange,
                data: cc.encode(),
            });
        }
        assert_eq!(sm.promotion_candidates(), BTreeSet::from([4, 6]));
    }

    #[test]
    fn corrupt_images_are_refused() {
        let mut sm = StateMachine::default();
        sm.push(AppliedRecord {
            index: 2,
            term: 1,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        });
        assert!(StateMachine::decode(&sm.encode()).is_err());
        let image = Bytes::from_static(&[1, 2, 3]);
        assert!(StateMachine::decode(&image).is_err());
    }
}
