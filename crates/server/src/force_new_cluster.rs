//! `--force-new-cluster`: etcd's disaster recovery. A member restarted with it from its
//! data dir keeps its data, its member id and its cluster id, and becomes a cluster of one.
//!
//! As etcd 3.4 does it (`restartAsStandaloneNode`): the entries after the member's durable
//! commit index are discarded (nobody may have committed them), and membership changes that
//! remove every other member are appended to its own log and declared committed. So the
//! change is an ordinary part of the log: it reaches the replicated member list by being
//! applied like any removal, it survives a restart without the flag, and the members it
//! removed are refused by the transport (`the member has been permanently removed from
//! the cluster`) if they come back. Committing entries without a quorum bends Raft's rules
//! on purpose; docs/raft-deviations.md says where.
//!
//! [`plan`] is pure (what to write); [`force`] writes it and reopens the data dir.

use anyhow::{bail, Context as _};
use raft::{ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState};
use storage::{Recovered, Storage};
use tracing::{info, warn};

/// What turning a recovered data dir into a one-member cluster writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Entries after the durable commit index that are thrown away.
    pub discarded: usize,
    /// The membership changes (or, when there is none to make, one no-op that overwrites
    /// the discarded entries), appended at the old commit index + 1.
    pub entries: Vec<Entry>,
    /// The hard state that commits them.
    pub hard_state: HardState,
    /// The members removed, ascending.
    pub removed: Vec<u64>,
}

/// The configuration in force at the recovered commit index: `base` (the snapshot's, or the
/// bootstrap one from the flags when there is no snapshot) with every committed change.
fn committed_conf(base: &ConfState, entries: &[Entry], commit: u64) -> ConfState {
    let mut conf = base.clone();
    for e in entries
        .iter()
        .filter(|e| e.index <= commit && e.kind == EntryKind::ConfChange)
    {
        // The core skips a change that does not decode or apply; so does this.
        if let Ok(next) = ConfChange::decode(&e.data).and_then(|cc| cc.apply_to(&conf)) {
            conf = next;
        }
    }
    conf
}

/// Plan the standalone restart of member `self_id` from what it recovered. `base` is the
/// configuration the log starts from (see [`committed_conf`]).
pub fn plan(
    self_id: u64,
    base: &ConfState,
    entries: &[Entry],
    hard_state: HardState,
) -> anyhow::Result<Plan> {
    let commit = hard_state.commit;
    let discarded = entries.iter().filter(|e| e.index > commit).count();
    let conf = committed_conf(base, entries, commit);
    let mut changes = Vec::new();
    if !conf.voters.contains(&self_id) {
        if !conf.learners.contains(&self_id) {
            bail!(
                "--force-new-cluster: member {self_id:x} is not in the cluster's configuration at commit index {commit} (it was removed); start a member of the cluster with it"
            );
        }
        // A learner becomes the one voter (etcd adds itself the same way).
        changes.push(ConfChange {
            kind: ConfChangeKind::AddVoter,
            node: self_id,
            context: Default::default(),
        });
    }
    let mut removed: Vec<u64> = conf
        .voters
        .iter()
        .chain(&conf.learners)
        .copied()
        .filter(|&id| id != self_id)
        .collect();
    removed.sort_unstable();
    changes.extend(removed.iter().map(|&node| ConfChange {
        kind: ConfChangeKind::Remove,
        node,
        context: Default::default(),
    }));
    // Entries carry the member's current term, as etcd's do. A member that never saw an
    // election (term 0) writes them in term 1, so no entry has the reserved term 0.
    let term = hard_state.term.max(1);
    let mut entries: Vec<Entry> = changes
        .iter()
        .enumerate()
        .map(|(i, cc)| Entry {
            term,
            index: commit + 1 + i as u64,
            kind: EntryKind::ConfChange,
            data: cc.encode(),
        })
        .collect();
    if entries.is_empty() && discarded > 0 {
        // Already a cluster of one: the uncommitted tail still goes, overwritten by an
        // entry the state machine skips.
        entries.push(Entry {
            term,
            index: commit + 1,
            kind: EntryKind::Noop,
            data: Default::default(),
        });
    }
    let hard_state = HardState {
        term,
        vote: if term == hard_state.term {
            hard_state.vote
        } else {
            None
        },
        commit: entries.last().map_or(commit, |e| e.index),
    };
    Ok(Plan {
        discarded,
        entries,
        hard_state,
        removed,
    })
}

/// Carry out `--force-new-cluster` on an opened, existing data dir: write the [`plan`]
/// durably (one synced batch, which also truncates the discarded tail) and reopen the data
/// dir, so what the member starts from is exactly what a later restart will read.
pub fn force(
    storage: Storage,
    recovered: Recovered,
    self_id: u64,
    cluster_id: u64,
    bootstrap: &ConfState,
) -> anyhow::Result<(Storage, Recovered)> {
    let base = recovered
        .snapshot
        .as_ref()
        .map_or(bootstrap, |s| &s.meta.conf_state);
    let plan = plan(self_id, base, &recovered.entries, recovered.hard_state)?;
    if plan.discarded > 0 {
        warn!(
            commit_index_old = recovered.hard_state.commit,
            number_of_discarded_entries = plan.discarded,
            "discarding uncommitted WAL entries"
        );
    }
    let mut storage = storage;
    if !plan.entries.is_empty() {
        storage
            .save(Some(&plan.hard_state), &plan.entries, None)
            .context("--force-new-cluster: cannot write the membership changes")?;
    }
    for id in &plan.removed {
        info!(
            member = format_args!("{id:x}"),
            "--force-new-cluster: removing member from the cluster"
        );
    }
    info!(
        cluster_id = format_args!("{cluster_id:x}"),
        local_member_id = format_args!("{self_id:x}"),
        commit_index = plan.hard_state.commit,
        "forcing restart member"
    );
    let reopened = storage
        .reopen()
        .context("--force-new-cluster: cannot reopen the data dir")?;
    Ok(reopened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        }
    }

    fn normal(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"x"),
        }
    }

    fn change(index: u64, term: u64, kind: ConfChangeKind, node: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::ConfChange,
            data: ConfChange {
                kind,
                node,
                context: Bytes::new(),
            }
            .encode(),
        }
    }

    fn decoded(p: &Plan) -> Vec<(ConfChangeKind, u64)> {
        p.entries
            .iter()
            .map(|e| {
                let cc = ConfChange::decode(&e.data).unwrap();
                (cc.kind, cc.node)
            })
            .collect()
    }

    #[test]
    fn removes_every_other_member_after_the_commit_index_and_commits_the_removals() {
        let hs = HardState {
            term: 4,
            vote: Some(2),
            commit: 3,
        };
        let log = [
            normal(1, 2),
            normal(2, 3),
            normal(3, 4),
            normal(4, 4),
            normal(5, 4),
        ];
        let p = plan(2, &conf(&[1, 2, 3], &[]), &log, hs).unwrap();
        assert_eq!(p.discarded, 2);
        assert_eq!(p.removed, vec![1, 3]);
        assert_eq!(
            decoded(&p),
            vec![(ConfChangeKind::Remove, 1), (ConfChangeKind::Remove, 3)]
        );
        // Written over the discarded tail, in the current term, and committed.
        assert_eq!(
            p.entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(4, 4), (5, 4)]
        );
        assert_eq!(
            p.hard_state,
            HardState {
                term: 4,
                vote: Some(2),
                commit: 5
            }
        );
        // Applied to the committed configuration, the changes leave this member alone.
        let mut c = conf(&[1, 2, 3], &[]);
        for e in &p.entries {
            c = ConfChange::decode(&e.data).unwrap().apply_to(&c).unwrap();
        }
        assert_eq!(c, conf(&[2], &[]));
    }

    #[test]
    fn only_committed_changes_count() {
        // Member 4 was added (committed), member 3's removal was not committed.
        let log = [
            change(1, 2, ConfChangeKind::AddLearner, 4),
            change(2, 2, ConfChangeKind::Remove, 3),
        ];
        let hs = HardState {
            term: 2,
            vote: None,
            commit: 1,
        };
        let p = plan(1, &conf(&[1, 2, 3], &[]), &log, hs).unwrap();
        assert_eq!(p.discarded, 1);
        assert_eq!(p.removed, vec![2, 3, 4]);
        assert_eq!(p.hard_state.commit, 4);
    }

    #[test]
    fn a_learner_promotes_itself_first_and_a_removed_member_is_refused() {
        let hs = HardState {
            term: 3,
            vote: None,
            commit: 0,
        };
        let p = plan(9, &conf(&[1], &[9]), &[], hs).unwrap();
        assert_eq!(
            decoded(&p),
            vec![(ConfChangeKind::AddVoter, 9), (ConfChangeKind::Remove, 1)]
        );
        let e = plan(7, &conf(&[1, 2], &[]), &[], hs).unwrap_err();
        assert!(
            e.to_string().contains("not in the cluster's configuration"),
            "{e}"
        );
    }

    #[test]
    fn a_cluster_of_one_only_loses_its_uncommitted_tail() {
        let hs = HardState {
            term: 5,
            vote: Some(1),
            commit: 2,
        };
        let log = [normal(1, 5), normal(2, 5), normal(3, 5)];
        let p = plan(1, &conf(&[1], &[]), &log, hs).unwrap();
        assert_eq!(p.discarded, 1);
        assert!(p.removed.is_empty());
        assert_eq!(p.entries.len(), 1);
        assert_eq!(
            (p.entries[0].index, p.entries[0].kind),
            (3, EntryKind::Noop)
        );
        // Nothing uncommitted, nobody to remove: nothing to write.
        let hs = HardState { commit: 3, ..hs };
        let p = plan(1, &conf(&[1], &[]), &log, hs).unwrap();
        assert!(p.entries.is_empty());
        assert_eq!(p.hard_state, hs);
    }

    #[test]
    fn a_member_that_never_saw_an_election_writes_in_term_one() {
        let p = plan(1, &conf(&[1, 2], &[]), &[], HardState::default()).unwrap();
        assert_eq!(p.entries[0].term, 1);
        assert_eq!(
            p.hard_state,
            HardState {
                term: 1,
                vote: None,
                commit: 1
            }
        );
    }
}
