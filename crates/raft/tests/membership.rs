//! Membership changes (single-server, one at a time; `src/membership.rs`): one test per rule.

mod common;

use bytes::Bytes;
use common::*;
use raft::*;

fn change(kind: ConfChangeKind, node: NodeId) -> ConfChange {
    ConfChange {
        kind,
        node,
        context: Bytes::new(),
    }
}

fn voters(c: &Cluster, id: NodeId) -> Vec<NodeId> {
    c.node(id).status().conf_state.voters
}

fn learners(c: &Cluster, id: NodeId) -> Vec<NodeId> {
    c.node(id).status().conf_state.learners
}

/// A bootstrapped 3-member cluster led by 1 that has committed its no-op.
fn three() -> Cluster {
    let mut c = Cluster::bootstrapped(3);
    c.elect(1);
    c.stabilize();
    c
}

fn propose_change(c: &mut Cluster, kind: ConfChangeKind, node: NodeId) -> Proposed {
    let leader = c.leader().expect("leader");
    c.node_mut(leader)
        .propose_conf_change(change(kind, node))
        .expect("change accepted")
}

#[test]
fn bootstrap_log_gives_every_member_the_configuration() {
    let c = Cluster::bootstrapped(3);
    for id in 1..=3 {
        assert_eq!(voters(&c, id), vec![1, 2, 3]);
        assert_eq!(c.node(id).commit_index(), 3);
    }
}

#[test]
fn an_added_voter_catches_up_from_an_empty_log_and_counts_for_commit() {
    let mut c = three();
    c.add_node(4);
    assert!(voters(&c, 4).is_empty(), "a joining member knows nobody");
    let p = propose_change(&mut c, ConfChangeKind::AddVoter, 4);
    c.stabilize();
    c.tick_all(1); // a heartbeat tells the followers the new commit index
    for id in 1..=4 {
        assert_eq!(voters(&c, id), vec![1, 2, 3, 4], "member {id}");
        assert!(c.node(id).commit_index() >= p.first);
    }
    c.propose(1, &["x"]);
    c.stabilize();
    c.tick_all(1);
    assert_eq!(c.applied_data(4), vec!["x"]);
    // Four voters need three: with 2 and 3 cut off, 1 and 4 cannot commit.
    c.isolate(2);
    c.isolate(3);
    let p = c.propose(1, &["y"]);
    c.stabilize();
    assert!(c.node(1).commit_index() < p.first, "two of four committed");
    c.heal();
    c.tick_all(2);
    assert!(c.node(1).commit_index() >= p.first);
}

#[test]
fn a_change_is_in_force_when_appended_not_when_committed() {
    let mut c = three();
    c.isolate(2);
    c.isolate(3);
    let p = propose_change(&mut c, ConfChangeKind::Remove, 3);
    c.stabilize();
    assert!(c.node(1).commit_index() < p.first);
    assert_eq!(
        voters(&c, 1),
        vec![1, 2],
        "the leader uses the new configuration at once"
    );
    assert_eq!(voters(&c, 2), vec![1, 2, 3], "2 has not received it");
}

#[test]
fn a_learner_gets_the_log_but_never_votes_campaigns_or_counts() {
    let mut c = three();
    c.add_node(4);
    propose_change(&mut c, ConfChangeKind::AddLearner, 4);
    c.stabilize();
    assert_eq!(voters(&c, 1), vec![1, 2, 3]);
    assert_eq!(learners(&c, 1), vec![4]);
    assert_eq!(learners(&c, 4), vec![4]);
    c.propose(1, &["a"]);
    c.stabilize();
    c.tick_all(1);
    assert_eq!(c.applied_data(4), vec!["a"]);

    // It does not count for commit: 1 with the learner alone commits nothing.
    c.isolate(2);
    c.isolate(3);
    let p = c.propose(1, &["b"]);
    c.stabilize();
    assert!(c.node(1).commit_index() < p.first);
    c.heal();
    c.stabilize();

    // It never campaigns, however long it hears nothing.
    c.crash(1);
    let votes_before = c.count_sent(|m| {
        m.from == 4
            && matches!(
                m.body,
                MessageBody::Vote { .. } | MessageBody::PreVote { .. }
            )
    });
    c.node_mut(4).campaign();
    for _ in 0..50 {
        c.node_mut(4).tick();
        c.stabilize();
    }
    let votes_after = c.count_sent(|m| {
        m.from == 4
            && matches!(
                m.body,
                MessageBody::Vote { .. } | MessageBody::PreVote { .. }
            )
    });
    assert_eq!(votes_before, votes_after, "a learner asked for votes");
    assert_ne!(c.node(4).status().role, Role::Leader);
}

#[test]
fn a_learners_vote_is_neither_asked_for_nor_counted() {
    let mut cfg = config(2);
    cfg.pre_vote = false;
    let initial = InitialState {
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
        },
        ..Default::default()
    };
    let mut node = RaftNode::new(cfg, initial).unwrap();
    node.campaign();
    let rd = flush(&mut node);
    let asked: Vec<NodeId> = all_messages(&rd).iter().map(|m| m.to).collect();
    assert_eq!(asked, vec![1, 3]);
    let term = node.status().hard_state.term;
    node.step(msg(4, 2, term, MessageBody::VoteResponse { granted: true }))
        .unwrap();
    assert_eq!(
        node.status().role,
        Role::Candidate,
        "won with a learner's vote"
    );
    node.step(msg(3, 2, term, MessageBody::VoteResponse { granted: true }))
        .unwrap();
    assert_eq!(node.status().role, Role::Leader);
}

#[test]
fn promoting_a_learner_makes_it_a_voter() {
    let mut c = three();
    c.add_node(4);
    propose_change(&mut c, ConfChangeKind::AddLearner, 4);
    c.stabilize();
    propose_change(&mut c, ConfChangeKind::AddVoter, 4);
    c.stabilize();
    for id in 1..=4 {
        assert_eq!(voters(&c, id), vec![1, 2, 3, 4]);
        assert!(learners(&c, id).is_empty());
    }
    // Now it can lead.
    c.node_mut(1).transfer_leader(4).unwrap();
    c.stabilize();
    assert_eq!(c.leader(), Some(4));
}

#[test]
fn only_one_change_may_be_uncommitted() {
    let mut c = three();
    c.add_node(4);
    c.add_node(5);
    c.isolate(2);
    c.isolate(3);
    propose_change(&mut c, ConfChangeKind::AddLearner, 4);
    c.stabilize();
    let err = c
        .node_mut(1)
        .propose_conf_change(change(ConfChangeKind::AddLearner, 5))
        .unwrap_err();
    assert_eq!(err, ProposeError::ConfChangePending);
    c.heal();
    c.tick_all(2);
    propose_change(&mut c, ConfChangeKind::AddLearner, 5);
    c.stabilize();
    assert_eq!(learners(&c, 1), vec![4, 5]);
}

#[test]
fn a_new_leader_proposes_no_change_before_committing_an_entry_of_its_term() {
    let mut c = three();
    // Hand leadership to 2, and cut everything towards 2 the moment it has won, so its
    // no-op cannot commit.
    c.node_mut(1).transfer_leader(2).unwrap();
    for _ in 0..10_000 {
        if c.node(2).status().role == Role::Leader {
            break;
        }
        for id in 1..=3 {
            c.process(id);
        }
        c.deliver_one();
    }
    c.cut.insert((1, 2));
    c.cut.insert((3, 2));
    c.stabilize();
    assert_eq!(c.node(2).status().role, Role::Leader);
    let term = c.node(2).status().hard_state.term;
    assert_ne!(
        c.node(2)
            .entries(c.node(2).commit_index(), c.node(2).commit_index() + 1)
            .unwrap()[0]
            .term,
        term,
        "the no-op must still be uncommitted for this test"
    );
    let err = c
        .node_mut(2)
        .propose_conf_change(change(ConfChangeKind::Remove, 1))
        .unwrap_err();
    assert_eq!(err, ProposeError::ConfChangePending);
    c.heal();
    c.tick_all(2);
    c.node_mut(2)
        .propose_conf_change(change(ConfChangeKind::Remove, 1))
        .expect("accepted once the no-op committed");
}

#[test]
fn invalid_changes_and_non_leaders_are_refused() {
    let mut c = three();
    let err = c
        .node_mut(1)
        .propose_conf_change(change(ConfChangeKind::AddVoter, 2))
        .unwrap_err();
    assert!(matches!(err, ProposeError::InvalidConfChange(_)), "{err:?}");
    let err = c
        .node_mut(1)
        .propose_conf_change(change(ConfChangeKind::Remove, 9))
        .unwrap_err();
    assert!(matches!(err, ProposeError::InvalidConfChange(_)), "{err:?}");
    let err = c
        .node_mut(2)
        .propose_conf_change(change(ConfChangeKind::AddLearner, 9))
        .unwrap_err();
    assert_eq!(err, ProposeError::NotLeader { leader: Some(1) });
    // Nothing was appended by the refusals.
    let last = c.node(1).status().last_index;
    c.stabilize();
    assert_eq!(c.node(1).status().last_index, last);
}

#[test]
fn a_truncated_change_is_undone() {
    let mut node = scripted(2, &[1, 2, 3], false);
    let added = Entry {
        term: 1,
        index: 2,
        kind: EntryKind::ConfChange,
        data: change(ConfChangeKind::AddLearner, 4).encode(),
    };
    let append = |from, term, prev: (Index, Term), entries, commit| {
        msg(
            from,
            2,
            term,
            MessageBody::Append {
                prev_index: prev.0,
                prev_term: prev.1,
                entries,
                commit,
            },
        )
    };
    node.step(append(1, 1, (0, 0), vec![entry(1, 1), added], 1))
        .unwrap();
    assert_eq!(
        node.status().conf_state.learners,
        vec![4],
        "in force once appended"
    );
    // A leader of term 2 that never had the change overwrites index 2.
    node.step(append(3, 2, (1, 1), vec![entry(2, 2)], 0))
        .unwrap();
    assert!(node.status().conf_state.learners.is_empty(), "not undone");
    assert_eq!(
        node.conf_state_at(2).unwrap().learners,
        Vec::<NodeId>::new()
    );
}

#[test]
fn a_leader_that_removes_itself_steps_down_once_committed_and_hands_over() {
    let mut c = three();
    let p = propose_change(&mut c, ConfChangeKind::Remove, 1);
    c.stabilize();
    assert!(c.node(2).commit_index() >= p.first || c.node(3).commit_index() >= p.first);
    assert_ne!(c.node(1).status().role, Role::Leader, "1 still leads");
    let leader = c.leader().expect("handed over without an election timeout");
    assert!(leader == 2 || leader == 3);
    assert_eq!(voters(&c, leader), vec![2, 3]);
    // The removed member never campaigns again.
    c.tick_all(100);
    assert_ne!(c.node(1).status().role, Role::Leader);
    assert!(matches!(c.node(1).status().role, Role::Follower));
    let p = c.propose(leader, &["after"]);
    c.stabilize();
    assert!(c.node(leader).commit_index() >= p.first);
}

#[test]
fn a_leader_removing_itself_keeps_leading_until_the_change_commits() {
    let mut c = three();
    c.isolate(2);
    c.isolate(3);
    propose_change(&mut c, ConfChangeKind::Remove, 1);
    c.stabilize();
    assert_eq!(c.node(1).status().role, Role::Leader);
    // It does not count itself: with 1 alone nothing of the new configuration commits.
    c.heal();
    c.tick_all(3);
    assert_ne!(c.node(1).status().role, Role::Leader);
}

#[test]
fn a_removed_follower_is_not_needed_for_commit() {
    let mut c = Cluster::bootstrapped(4);
    c.elect(1);
    c.stabilize();
    propose_change(&mut c, ConfChangeKind::Remove, 4);
    c.stabilize();
    c.crash(4);
    c.isolate(3);
    // {1,2,3}: 1 and 2 are a majority; with 4 still a voter they would not be (2 of 4).
    let p = c.propose(1, &["z"]);
    c.stabilize();
    assert!(c.node(1).commit_index() >= p.first);
}

#[test]
fn snapshots_carry_the_configuration_and_a_new_member_catches_up_by_one() {
    let mut c = three();
    c.add_node(4);
    propose_change(&mut c, ConfChangeKind::AddLearner, 4);
    c.stabilize();
    c.crash(4);
    c.propose(1, &["a", "b"]);
    c.stabilize();
    let applied = c.node(1).status().applied;
    let conf = c.node(1).conf_state_at(applied).unwrap();
    assert_eq!(conf.learners, vec![4]);
    // The configuration before the change is still answered for indexes before it.
    assert!(c.node(1).conf_state_at(3).unwrap().learners.is_empty());
    let term = c.node(1).entries(applied, applied + 1).unwrap()[0].term;
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: applied,
            term,
            conf_state: conf,
        },
        data: Bytes::from_static(b"image"),
    };
    c.node_mut(1).compact(snap).unwrap();
    assert_eq!(c.node(1).conf_state_at(applied).unwrap().learners, vec![4]);
    // Member 4's disk is wiped and it is added again under a new id, 5.
    propose_change(&mut c, ConfChangeKind::Remove, 4);
    c.stabilize();
    c.add_node(5);
    propose_change(&mut c, ConfChangeKind::AddVoter, 5);
    c.stabilize();
    let st = c.node(5).status();
    assert_eq!(st.conf_state.voters, vec![1, 2, 3, 5]);
    assert!(st.first_index > 1, "5 started from the snapshot");
    assert!(c.disks[&5].snapshot.is_some());
}

#[test]
fn a_restarted_member_recovers_the_configuration_from_its_log() {
    let mut c = three();
    c.add_node(4);
    propose_change(&mut c, ConfChangeKind::AddVoter, 4);
    c.stabilize();
    c.crash(2);
    c.restart(2);
    assert_eq!(voters(&c, 2), vec![1, 2, 3, 4]);
    c.crash(4);
    c.restart(4);
    assert_eq!(voters(&c, 4), vec![1, 2, 3, 4]);
}

#[test]
fn a_member_added_behind_a_lagging_follower_is_still_followed() {
    // 4 is added while 3 is cut off; 4 then leads, and 3 (which never saw 4 added) follows it.
    let mut c = three();
    c.add_node(4);
    c.isolate(3);
    propose_change(&mut c, ConfChangeKind::AddVoter, 4);
    c.stabilize();
    c.node_mut(1).transfer_leader(4).unwrap();
    c.stabilize();
    assert_eq!(c.leader(), Some(4));
    c.heal();
    let p = c.propose(4, &["from 4"]);
    c.tick_all(3);
    assert_eq!(voters(&c, 3), vec![1, 2, 3, 4]);
    assert!(c.node(3).commit_index() >= p.first);
    assert_eq!(c.node(3).status().leader, Some(4));
}

#[test]
fn a_member_that_does_not_know_it_was_promoted_still_votes() {
    // 2 is a learner in its own log; the leader's log (1) already made it a voter, and 1 needs
    // its vote. 2's lease on the old leader must expire even though it never campaigns.
    let mut cfg = config(2);
    cfg.pre_vote = false;
    let initial = InitialState {
        conf_state: ConfState {
            voters: vec![1],
            learners: vec![2],
        },
        ..Default::default()
    };
    let mut node = RaftNode::new(cfg, initial).unwrap();
    node.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ))
    .unwrap();
    flush(&mut node);
    for _ in 0..100 {
        node.tick();
    }
    flush(&mut node);
    node.step(msg(
        1,
        2,
        2,
        MessageBody::Vote {
            last_index: 5,
            last_term: 1,
            transfer: false,
        },
    ))
    .unwrap();
    let rd = flush(&mut node);
    assert!(
        all_messages(&rd)
            .iter()
            .any(|m| m.body == MessageBody::VoteResponse { granted: true }),
        "{rd:?}"
    );
}

#[test]
fn a_member_holding_its_own_uncommitted_removal_still_campaigns() {
    // 1 leads {1,2} and appends its own removal, which 2 never receives; 1 restarts. 2 cannot
    // win (1's log is ahead of it), so 1 must campaign in its new configuration {2}, commit
    // the change and step down.
    let mut c = Cluster::bootstrapped(2);
    c.elect(1);
    c.stabilize();
    c.cut.insert((1, 2));
    propose_change(&mut c, ConfChangeKind::Remove, 1);
    c.stabilize();
    c.crash(1);
    c.restart(1);
    c.heal();
    assert_eq!(voters(&c, 1), vec![2]);
    assert_eq!(voters(&c, 2), vec![1, 2]);
    c.tick_all(100);
    assert_eq!(voters(&c, 2), vec![2], "the removal never reached 2");
    assert_eq!(c.leader(), Some(2));
    let p = c.propose(2, &["alone"]);
    c.stabilize();
    assert!(c.node(2).commit_index() >= p.first);
}

#[test]
fn a_stale_vote_request_is_answered_with_the_current_term() {
    // 2 is at term 5; a candidate of term 3 (outside 2's configuration, so nobody else tells
    // it) must learn term 5 from the refusal, or it stays behind for ever.
    let mut node = recovered(
        2,
        &[1, 2],
        &[1],
        HardState {
            term: 5,
            vote: None,
            commit: 0,
        },
    );
    node.step(msg(
        7,
        2,
        3,
        MessageBody::Vote {
            last_index: 9,
            last_term: 3,
            transfer: false,
        },
    ))
    .unwrap();
    let rd = flush(&mut node);
    let answers: Vec<Message> = all_messages(&rd)
        .into_iter()
        .filter(|m| m.to == 7)
        .collect();
    assert_eq!(
        answers,
        vec![msg(2, 7, 5, MessageBody::VoteResponse { granted: false })]
    );
    assert_eq!(node.status().hard_state.term, 5);
}
