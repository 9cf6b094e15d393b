//! Membership changes through the log: single-server changes, one at a time (thesis §4.1).
//!
//! A change is an [`EntryKind::ConfChange`] entry whose data is an encoded [`ConfChange`].
//! Every member uses the **latest configuration in its log**, committed or not, from the
//! moment the entry is appended (thesis §4.1); a truncated change is undone with it. The
//! configuration before the first change still in the log is the *base* (the snapshot's, or
//! the bootstrap one), so `ConfHistory` can answer "which configuration holds at index i" for
//! a snapshot taken there.
//!
//! The rules that make single-server changes safe (each has a test in `tests/membership.rs`):
//! * a leader proposes a change only when no earlier change is uncommitted in its log, so at
//!   most one change separates any two configurations in use;
//! * a leader proposes a change only once it has committed an entry of its own term (the fix
//!   Ongaro published in 2015 for the single-server algorithm: without it, a change left
//!   uncommitted by a deposed leader and a different change of the new leader can both reach
//!   disjoint majorities);
//! * learners receive entries and snapshots but never vote, campaign or count for commit;
//! * a leader that removed itself keeps leading until the change commits (not counting itself),
//!   then hands over (TimeoutNow to the most up-to-date voter) and steps down.

use bytes::{BufMut, Bytes, BytesMut};

use crate::node::{ProposeError, Proposed, RaftNode};
use crate::types::*;

/// What a change does to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Make `node` a voter: a new member, or a learner promoted.
    AddVoter,
    /// Add `node` as a learner (it receives the log, never votes).
    AddLearner,
    /// Remove `node`, voter or learner.
    Remove,
}

/// One membership change, as carried by a `ConfChange` log entry. `context` is opaque to the
/// core: the server puts the member's attributes (name, URLs) there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node: NodeId,
    pub context: Bytes,
}

/// Format version byte of the encoding: `[version, kind, node (8 bytes LE), context...]`.
const ENCODING_VERSION: u8 = 1;

impl ConfChange {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(10 + self.context.len());
        out.put_u8(ENCODING_VERSION);
        out.put_u8(match self.kind {
            ConfChangeKind::AddVoter => 1,
            ConfChangeKind::AddLearner => 2,
            ConfChangeKind::Remove => 3,
        });
        out.put_u64_le(self.node);
        out.put_slice(&self.context);
        out.freeze()
    }

    pub fn decode(data: &Bytes) -> Result<ConfChange, String> {
        if data.len() < 10 {
            return Err(format!("conf change too short ({} bytes)", data.len()));
        }
        if data[0] != ENCODING_VERSION {
            return Err(format!("unknown conf change encoding {}", data[0]));
        }
        let kind = match data[1] {
            1 => ConfChangeKind::AddVoter,
            2 => ConfChangeKind::AddLearner,
            3 => ConfChangeKind::Remove,
            k => return Err(format!("unknown conf change kind {k}")),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[2..10]);
        Ok(ConfChange {
            kind,
            node: u64::from_le_bytes(id),
            context: data.slice(10..),
        })
    }

    /// The configuration after this change, or why the change is not valid against `conf`.
    /// Valid changes never leave the configuration without a voter.
    pub fn apply_to(&self, conf: &ConfState) -> Result<ConfState, String> {
        let id = self.node;
        if id == 0 {
            return Err("member id 0 is reserved".into());
        }
        let voter = conf.voters.contains(&id);
        let learner = conf.learners.contains(&id);
        let mut next = conf.clone();
        match self.kind {
            ConfChangeKind::AddVoter => {
                if voter {
                    return Err(format!("{id:x} is already a voter"));
                }
                next.learners.retain(|&l| l != id);
                next.voters.push(id);
            }
            ConfChangeKind::AddLearner => {
                if voter || learner {
                    return Err(format!("{id:x} is already a member"));
                }
                next.learners.push(id);
            }
            ConfChangeKind::Remove => {
                if !voter && !learner {
                    return Err(format!("{id:x} is not a member"));
                }
                next.voters.retain(|&v| v != id);
                next.learners.retain(|&l| l != id);
                if next.voters.is_empty() {
                    return Err("removing the last voter".into());
                }
            }
        }
        next.voters.sort_unstable();
        next.learners.sort_unstable();
        Ok(next)
    }
}

/// The first entries of a brand-new cluster's log (the same on every initial member): one
/// committed `AddVoter` per member, at term 1, with the hard state that goes with them. The
/// caller persists them and starts the node with an empty `ConfState`. A member that joins
/// later starts empty too and rebuilds the configuration from these entries (or from a
/// snapshot), so the membership lives in the log and snapshots only, never in flags.
pub fn bootstrap_log(voters: &[NodeId]) -> (HardState, Vec<Entry>) {
    let mut ids = voters.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let entries: Vec<Entry> = ids
        .iter()
        .enumerate()
        .map(|(i, &node)| Entry {
            term: 1,
            index: i as u64 + 1,
            kind: EntryKind::ConfChange,
            data: ConfChange {
                kind: ConfChangeKind::AddVoter,
                node,
                context: Bytes::new(),
            }
            .encode(),
        })
        .collect();
    let hard = HardState {
        term: 1,
        vote: None,
        commit: entries.len() as u64,
    };
    (hard, entries)
}

/// The configurations in force along the log: `base` up to the first change still in the log,
/// then one entry per `ConfChange` entry (its index and term, and the configuration after it).
#[derive(Clone, Debug, Default)]
pub(crate) struct ConfHistory {
    pub(crate) base: ConfState,
    changes: Vec<(Index, Term, ConfState)>,
}

impl ConfHistory {
    pub(crate) fn new(base: ConfState) -> ConfHistory {
        ConfHistory {
            base,
            changes: Vec::new(),
        }
    }

    /// The configuration in use: the latest in the log.
    pub(crate) fn latest(&self) -> &ConfState {
        self.changes.last().map_or(&self.base, |(_, _, c)| c)
    }

    /// Index of the latest change entry in the log (0 if none after the base).
    pub(crate) fn latest_index(&self) -> Index {
        self.changes.last().map_or(0, |(i, _, _)| *i)
    }

    /// The configuration in force at `index` (after applying every change at or before it).
    pub(crate) fn at(&self, index: Index) -> &ConfState {
        self.changes
            .iter()
            .rev()
            .find(|(i, _, _)| *i <= index)
            .map_or(&self.base, |(_, _, c)| c)
    }

    /// Record the change entries among `entries` (appended to the log in order). An entry
    /// whose data does not decode or does not apply leaves the configuration unchanged: a
    /// correct leader never writes one (it validates before appending).
    pub(crate) fn record(&mut self, entries: &[Entry]) {
        for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if self.changes.iter().any(|(i, _, _)| *i >= e.index) {
                continue;
            }
            let next = ConfChange::decode(&e.data).and_then(|cc| cc.apply_to(self.latest()));
            if let Ok(conf) = next {
                self.changes.push((e.index, e.term, conf));
            }
        }
    }

    /// Forget changes whose entries are no longer in the log (`term_at` says what is there).
    pub(crate) fn drop_replaced(&mut self, term_at: impl Fn(Index) -> Option<Term>) {
        self.changes.retain(|(i, t, _)| term_at(*i) == Some(*t));
    }

    /// The log was compacted up to `index`: fold the changes at or before it into the base.
    pub(crate) fn compact(&mut self, index: Index) {
        self.base = self.at(index).clone();
        self.changes.retain(|(i, _, _)| *i > index);
    }

    /// The log was replaced by a snapshot carrying `conf`.
    pub(crate) fn reset(&mut self, conf: ConfState) {
        self.base = conf;
        self.changes.clear();
    }
}

impl RaftNode {
    /// Propose a membership change (leader only). Refused while an earlier change is not yet
    /// committed, before this leader committed an entry of its own term, during a leader
    /// transfer, or when the change does not apply to the current configuration. The change
    /// takes effect on every member as soon as it is in its log; the caller learns that it
    /// committed when the entry at `Proposed::first` is applied with `Proposed::term`.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Proposed, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if !self.config.unsafe_concurrent_conf_changes {
            if self.confs.latest_index() > self.log.committed {
                return Err(ProposeError::ConfChangePending);
            }
            if self.log.term(self.log.committed) != Some(self.term) {
                return Err(ProposeError::ConfChangePending);
            }
        }
        cc.apply_to(&self.conf_state)
            .map_err(ProposeError::InvalidConfChange)?;
        let index = self.log.last_index() + 1;
        let term = self.term;
        let entry = Entry {
            term,
            index,
            kind: EntryKind::ConfChange,
            data: cc.encode(),
        };
        self.log.append_new([entry.clone()]);
        self.confs.record(&[entry]);
        self.conf_changed();
        self.broadcast_append(false);
        // A leader alone in the new configuration commits once its write is durable.
        Ok(Proposed {
            first: index,
            last: index,
            term,
        })
    }

    /// The configuration in force at `index` (for the metadata of a snapshot taken there).
    /// `None` if `index` is before the start of the log.
    pub fn conf_state_at(&self, index: Index) -> Option<ConfState> {
        (index >= self.log.snapshot_index()).then(|| self.confs.at(index).clone())
    }

    /// Bring `conf_state` (and, on a leader, the progress map) in line with the log's latest
    /// configuration. Called after anything that may add or drop change entries.
    pub(crate) fn conf_changed(&mut self) {
        let latest = self.confs.latest().clone();
        if latest == self.conf_state {
            return;
        }
        self.conf_state = latest;
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            let (max_msgs, max_bytes) = (
                self.config.max_inflight_msgs,
                self.config.max_inflight_bytes,
            );
            let members = self.peers();
            let me = self.id;
            self.progress
                .retain(|id, _| *id == me || members.contains(id));
            for id in members {
                if self.progress.contains_key(&id) {
                    continue;
                }
                self.progress.insert(
                    id,
                    crate::progress::Progress::new(next, max_msgs, max_bytes),
                );
                // Probe the new member at once: a joining member with an empty log rejects
                // it with a hint, and replication (or a snapshot) starts without waiting for
                // the next heartbeat.
                self.send_append(id, true);
            }
            if self.transferee.is_some_and(|t| !self.is_voter(t)) {
                self.transferee = None;
            }
        } else if matches!(self.role, Role::Candidate | Role::PreCandidate) && !self.may_campaign()
        {
            // A member that is no longer a voter stops campaigning.
            self.become_follower(self.term, None);
        }
    }

    /// Whether this member may campaign: it is a voter in its latest configuration, or in
    /// the configuration at its commit index. The second case is a member whose log holds
    /// an uncommitted change removing it (a leader that removed itself and lost leadership
    /// before the change committed): the remaining voters may need *its* log to make
    /// progress, since it may be the only one holding that change, and with it they would
    /// refuse each other's votes forever. Campaigning is always safe; it wins only with the
    /// votes of a majority of its latest configuration (itself not counted), then commits
    /// the change and steps down as any self-removing leader does.
    pub(crate) fn may_campaign(&self) -> bool {
        self.is_voter(self.id) || self.confs.at(self.log.committed).voters.contains(&self.id)
    }

    /// Leader only: once the change that removed us (or made us a learner) is committed, hand
    /// leadership to the most up-to-date voter and step down. Until then we keep replicating,
    /// without counting ourselves (thesis §4.2.2).
    pub(crate) fn step_down_if_removed(&mut self) {
        if self.role != Role::Leader
            || self.is_voter(self.id)
            || self.log.committed < self.confs.latest_index()
        {
            return;
        }
        let last = self.log.last_index();
        let successor = self
            .conf_state
            .voters
            .iter()
            .filter_map(|id| self.progress.get(id).map(|p| (p.match_index, *id)))
            .max();
        if let Some((match_index, id)) = successor {
            if match_index == last {
                self.send(id, MessageBody::TimeoutNow);
            }
        }
        self.become_follower(self.term, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[NodeId], learners: &[NodeId]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        }
    }

    fn cc(kind: ConfChangeKind, node: NodeId) -> ConfChange {
        ConfChange {
            kind,
            node,
            context: Bytes::from_static(b"ctx"),
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        for kind in [
            ConfChangeKind::AddVoter,
            ConfChangeKind::AddLearner,
            ConfChangeKind::Remove,
        ] {
            let c = cc(kind, 0xdead_beef);
            assert_eq!(ConfChange::decode(&c.encode()), Ok(c));
        }
        assert!(ConfChange::decode(&Bytes::from_static(b"short")).is_err());
        let mut bad = cc(ConfChangeKind::Remove, 3).encode().to_vec();
        bad[1] = 9;
        assert!(ConfChange::decode(&Bytes::from(bad.clone())).is_err());
        bad[0] = 7;
        assert!(ConfChange::decode(&Bytes::from(bad)).is_err());
    }

    #[test]
    fn changes_apply_and_invalid_ones_are_refused() {
        let c = conf(&[1, 2, 3], &[4]);
        assert_eq!(
            cc(ConfChangeKind::AddVoter, 4).apply_to(&c),
            Ok(conf(&[1, 2, 3, 4], &[]))
        );
        assert_eq!(
            cc(ConfChangeKind::AddLearner, 5).apply_to(&c),
            Ok(conf(&[1, 2, 3], &[4, 5]))
        );
        assert_eq!(
            cc(ConfChangeKind::Remove, 2).apply_to(&c),
            Ok(conf(&[1, 3], &[4]))
        );
        assert_eq!(
            cc(ConfChangeKind::Remove, 4).apply_to(&c),
            Ok(conf(&[1, 2, 3], &[]))
        );
        assert!(cc(ConfChangeKind::AddVoter, 1).apply_to(&c).is_err());
        assert!(cc(ConfChangeKind::AddLearner, 4).apply_to(&c).is_err());
        assert!(cc(ConfChangeKind::AddLearner, 2).apply_to(&c).is_err());
        assert!(cc(ConfChangeKind::Remove, 9).apply_to(&c).is_err());
        assert!(cc(ConfChangeKind::AddVoter, 0).apply_to(&c).is_err());
        assert!(cc(ConfChangeKind::Remove, 1)
            .apply_to(&conf(&[1], &[2]))
            .is_err());
    }

    #[test]
    fn history_follows_the_log() {
        let entry = |index, term, c: ConfChange| Entry {
            index,
            term,
            kind: EntryKind::ConfChange,
            data: c.encode(),
        };
        let mut h = ConfHistory::new(conf(&[1, 2, 3], &[]));
        h.record(&[
            entry(5, 1, cc(ConfChangeKind::AddLearner, 4)),
            entry(7, 1, cc(ConfChangeKind::AddVoter, 4)),
        ]);
        assert_eq!(h.latest(), &conf(&[1, 2, 3, 4], &[]));
        assert_eq!(h.at(6), &conf(&[1, 2, 3], &[4]));
        assert_eq!(h.at(4), &conf(&[1, 2, 3], &[]));
        // Recording the same entries again (a duplicated Append) changes nothing.
        h.record(&[entry(7, 1, cc(ConfChangeKind::AddVoter, 4))]);
        assert_eq!(h.latest(), &conf(&[1, 2, 3, 4], &[]));
        // Entry 7 was replaced by one of term 2: its change is undone.
        h.drop_replaced(|i| Some(if i == 7 { 2 } else { 1 }));
        assert_eq!(h.latest(), &conf(&[1, 2, 3], &[4]));
        // An entry that does not decode changes nothing.
        h.record(&[Entry {
            index: 8,
            term: 2,
            kind: EntryKind::ConfChange,
            data: Bytes::from_static(b"??"),
        }]);
        assert_eq!(h.latest(), &conf(&[1, 2, 3], &[4]));
        h.compact(6);
        assert_eq!(h.base, conf(&[1, 2, 3], &[4]));
        assert_eq!(h.latest_index(), 0);
        h.reset(conf(&[9], &[]));
        assert_eq!(h.latest(), &conf(&[9], &[]));
    }
}
