//! Feature transcripts: pre-vote and stickiness, fast backtracking, flow control, batching,
//! ReadIndex, leader transfer and snapshots.

mod common;

use common::*;
use raft::*;

const V3: &[NodeId] = &[1, 2, 3];

fn hs(term: Term, vote: Option<NodeId>, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

fn appends_to(rd: &Ready, to: NodeId) -> Vec<(Index, usize)> {
    rd.messages
        .iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::Append {
                prev_index,
                entries,
                ..
            } => Some((*prev_index, entries.len())),
            _ => None,
        })
        .collect()
}

// ----- elections -----

#[test]
fn single_node_elects_itself_on_timeout() {
    let mut c = Cluster::new(1);
    c.tick_all(25);
    assert_eq!(c.leader(), Some(1));
}

#[test]
fn isolated_node_does_not_bump_its_term_with_pre_vote() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).status().hard_state.term;
    c.isolate(3);
    c.tick_all(60);
    assert_eq!(c.node(3).status().hard_state.term, term);
    assert_eq!(c.node(3).status().role, Role::PreCandidate);
    c.heal();
    c.tick_all(5);
    assert_eq!(c.leader(), Some(1), "rejoining does not depose the leader");
    assert_eq!(c.node(1).status().hard_state.term, term);
    assert_eq!(c.node(3).status().leader, Some(1));
}

#[test]
fn pre_vote_traffic_changes_no_term() {
    let mut n = scripted(1, V3, true);
    let pre = MessageBody::PreVote {
        last_index: 0,
        last_term: 0,
    };
    n.step(msg(2, 1, 1, pre)).unwrap();
    let rd = flush(&mut n);
    assert_eq!(rd.hard_state, None, "granting a pre-vote writes nothing");
    let answer = &rd.persisted_messages[0];
    assert_eq!(
        (answer.term, &answer.body),
        (1, &MessageBody::PreVoteResponse { granted: true })
    );

    // A pre-candidate counts a grant carrying term + 1 without adopting that term.
    let mut p = scripted(1, V3, true);
    p.campaign();
    assert_eq!(p.status().role, Role::PreCandidate);
    let rd = flush(&mut p);
    assert_eq!(rd.hard_state, None);
    assert!(rd
        .messages
        .iter()
        .all(|m| m.term == 1 && matches!(m.body, MessageBody::PreVote { .. })));
    p.step(msg(2, 1, 1, MessageBody::PreVoteResponse { granted: true }))
        .unwrap();
    // Won the pre-vote: now a real candidate of term 1.
    let st = p.status();
    assert_eq!(
        (st.role, st.hard_state.term, st.hard_state.vote),
        (Role::Candidate, 1, Some(1))
    );
}

#[test]
fn sticky_follower_ignores_higher_term_votes_unless_transfer() {
    let mut n = scripted(1, V3, true);
    n.step(msg(
        2,
        1,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ))
    .unwrap();
    flush(&mut n);
    let vote = |transfer| MessageBody::Vote {
        last_index: 0,
        last_term: 0,
        transfer,
    };
    n.step(msg(3, 1, 5, vote(false))).unwrap();
    assert!(!n.has_ready(), "ignored entirely: no answer, no new term");
    assert_eq!(n.status().hard_state.term, 1);
    n.step(msg(
        3,
        1,
        5,
        MessageBody::PreVote {
            last_index: 0,
            last_term: 0,
        },
    ))
    .unwrap();
    assert!(!n.has_ready());
    // A transfer-triggered election bypasses stickiness.
    n.step(msg(3, 1, 5, vote(true))).unwrap();
    let rd = flush(&mut n);
    assert_eq!(rd.hard_state, Some(hs(5, Some(3), 0)));
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { granted: true }
    );
}

#[test]
fn stickiness_ends_after_an_election_timeout_without_the_leader() {
    let mut n = scripted(1, V3, true);
    n.step(msg(
        2,
        1,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    ))
    .unwrap();
    flush(&mut n);
    for _ in 0..10 {
        n.tick();
    }
    flush(&mut n);
    n.step(msg(
        3,
        1,
        2,
        MessageBody::PreVote {
            last_index: 0,
            last_term: 0,
        },
    ))
    .unwrap();
    let rd = flush(&mut n);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::PreVoteResponse { granted: true }
    );
}

#[test]
fn stale_leader_learns_the_higher_term_and_steps_down() {
    let mut n = scripted(1, V3, false);
    make_leader(&mut n, V3);
    // A member stranded at term 7 answers our append: we must step down, not spin.
    let old = MessageBody::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![],
        commit: 0,
    };
    let mut f = recovered(2, V3, &[], hs(7, None, 0));
    f.step(msg(1, 2, 1, old)).unwrap();
    let rd = flush(&mut f);
    let answer = rd.persisted_messages[0].clone();
    assert_eq!(answer.term, 7);
    n.step(answer).unwrap();
    let st = n.status();
    assert_eq!((st.role, st.hard_state.term), (Role::Follower, 7));
}

// ----- replication -----

#[test]
fn fast_backtracking_skips_whole_terms() {
    // Leader 1: [1, 3, 3, ... (10 × term 3)], follower 2: [1, 2 × 50], never committed.
    let mut leader_log = vec![1];
    leader_log.extend([3; 10]);
    let mut follower_log = vec![1];
    follower_log.extend([2; 50]);
    let mut l = recovered(1, V3, &leader_log, hs(3, None, 1));
    let mut f = recovered(2, V3, &follower_log, hs(3, None, 1));
    make_leader(&mut l, V3);
    let mut rejections = 0;
    for _ in 0..20 {
        let rd = flush(&mut l);
        for m in all_messages(&rd).into_iter().filter(|m| m.to == 2) {
            f.step(m).unwrap();
        }
        let rd = flush(&mut f);
        for m in all_messages(&rd) {
            if matches!(
                m.body,
                MessageBody::AppendResponse {
                    rejected: Some(_),
                    ..
                }
            ) {
                rejections += 1;
            }
            l.step(m).unwrap();
        }
    }
    assert_eq!(
        f.entries(1, 13).unwrap(),
        l.entries(1, 13).unwrap(),
        "logs converged"
    );
    assert!(
        rejections <= 2,
        "one rejection per conflicting term, got {rejections}"
    );
}

#[test]
fn probing_follower_gets_one_append_at_a_time() {
    let mut l = scripted(1, V3, false);
    make_leader(&mut l, V3);
    let rd = flush(&mut l);
    assert_eq!(appends_to(&rd, 2), vec![(0, 1)]); // the no-op probe
    l.propose(vec!["a".into()]).unwrap();
    l.propose(vec!["b".into()]).unwrap();
    let rd = flush(&mut l);
    assert!(
        appends_to(&rd, 2).is_empty(),
        "paused until the probe is answered"
    );
    l.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse {
            rejected: None,
            match_index: 1,
        },
    ))
    .unwrap();
    let rd = flush(&mut l);
    assert_eq!(
        appends_to(&rd, 2),
        vec![(1, 2)],
        "then everything missing, in replicate"
    );
}

#[test]
fn replicate_window_bounds_messages_and_bytes_in_flight() {
    let mut c = Cluster::with_config(3, |id| {
        let mut cfg = config(id);
        cfg.max_inflight_msgs = 3;
        cfg.max_inflight_bytes = 100_000;
        cfg
    });
    c.elect(1);
    for i in 0..10 {
        c.propose(1, &[&format!("p{i}")]);
    }
    let rd = flush(c.node_mut(1));
    assert_eq!(appends_to(&rd, 2).len(), 3, "window of 3 messages");

    // Now by bytes: 128-byte payloads (152 with header), at most ~400 bytes in flight.
    let mut c = Cluster::with_config(3, |id| {
        let mut cfg = config(id);
        cfg.max_inflight_bytes = 400;
        cfg
    });
    c.elect(1);
    let payload = "x".repeat(128);
    for _ in 0..10 {
        c.propose(1, &[&payload]);
    }
    let rd = flush(c.node_mut(1));
    assert_eq!(
        appends_to(&rd, 2).len(),
        3,
        "the third message crosses 400 bytes"
    );
    c.network.extend(all_messages(&rd));
    c.stabilize();
    c.tick_all(1); // the heartbeat carries the final commit index
    assert_eq!(
        c.applied_data(2).len(),
        10,
        "the window reopens as acks arrive"
    );
}

#[test]
fn max_size_per_msg_splits_appends_and_proposals_batch_in_one_ready() {
    let mut c = Cluster::with_config(3, |id| {
        let mut cfg = config(id);
        cfg.max_size_per_msg = 3 * (24 + 2);
        cfg
    });
    c.elect(1);
    for i in 0..3 {
        c.propose(1, &[&format!("a{i}"), &format!("b{i}")]);
    }
    let rd = flush(c.node_mut(1));
    assert_eq!(rd.entries.len(), 6, "three propose calls, one Ready");
    let sizes: Vec<usize> = appends_to(&rd, 2).iter().map(|a| a.1).collect();
    assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 6);
}

// ----- ReadIndex -----

#[test]
fn one_heartbeat_round_confirms_a_batch_of_reads() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(1);
    c.sent.clear();
    for i in 0..5 {
        c.node_mut(1).read_index(format!("r{i}").into()).unwrap();
    }
    c.stabilize();
    let heartbeats = c.count_sent(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    assert_eq!(heartbeats, 2, "one round: one heartbeat per follower");
    let reads = &c.read_states[&1];
    assert_eq!(reads.len(), 5);
    assert!(reads.iter().all(|r| r.index == c.node(1).commit_index()));
}

#[test]
fn follower_read_is_forwarded_and_answered() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, &["a"]);
    c.stabilize();
    c.node_mut(2).read_index("f".into()).unwrap();
    c.stabilize();
    assert_eq!(
        c.read_states[&2],
        vec![ReadState {
            ctx: "f".into(),
            index: 2
        }]
    );
    // Without a known leader, the caller is told so.
    let mut fresh = Cluster::new(3);
    let err = fresh.node_mut(2).read_index("x".into()).unwrap_err();
    assert_eq!(err, ProposeError::NotLeader { leader: None });
}

#[test]
fn single_node_leader_answers_reads_at_once() {
    let mut n = scripted(1, &[1], false);
    n.campaign();
    n.read_index("early".into()).unwrap();
    let rd = flush(&mut n); // no-op written
    assert!(rd.read_states.is_empty());
    let rd = flush(&mut n); // no-op committed: the queued read is served
    assert_eq!(rd.read_states.len(), 1);
    n.read_index("late".into()).unwrap();
    let rd = flush(&mut n);
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.read_states,
        vec![ReadState {
            ctx: "late".into(),
            index: 1
        }]
    );
}

#[test]
fn deposed_leader_drops_pending_reads() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node_mut(1).read_index("r".into()).unwrap();
    c.tick_all(30);
    assert!(c.read_states[&1].is_empty());
    assert_eq!(c.node(1).pending_read_count(), 0);
}

// ----- leader transfer -----

#[test]
fn transfer_hands_leadership_to_the_target() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.crash(3);
    c.propose(1, &["a", "b"]);
    c.stabilize();
    c.restart(3);
    c.node_mut(1).transfer_leader(3).unwrap();
    let err = c.node_mut(1).propose(vec!["x".into()]).unwrap_err();
    assert_eq!(err, ProposeError::TransferInProgress);
    c.stabilize();
    assert_eq!(c.leader(), Some(3), "3 was caught up, then took over");
    c.propose(3, &["c"]);
    c.stabilize();
    assert_eq!(c.applied_data(3), ["a", "b", "c"]);
}

#[test]
fn transfer_to_an_unreachable_member_is_abandoned() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.crash(2);
    c.node_mut(1).transfer_leader(2).unwrap();
    assert_eq!(
        c.node_mut(1).propose(vec!["x".into()]),
        Err(ProposeError::TransferInProgress)
    );
    c.tick_all(c.configs[&1].election_tick);
    assert_eq!(c.leader(), Some(1));
    assert!(c.node_mut(1).propose(vec!["x".into()]).is_ok());
    assert_eq!(
        c.node_mut(2).transfer_leader(1),
        Err(ProposeError::NotLeader { leader: Some(1) })
    );
}

// ----- snapshots -----

#[test]
fn follower_behind_a_compaction_gets_the_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.crash(3);
    for i in 0..20 {
        c.propose(1, &[&format!("p{i}")]);
    }
    c.stabilize();
    let applied = c.node(1).status().applied;
    let term = c.node(1).status().hard_state.term;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: applied,
            term,
            conf_state: ConfState {
                voters: V3.to_vec(),
                learners: vec![],
            },
        },
        data: "image".into(),
    };
    c.node_mut(1).compact(snapshot).unwrap();
    assert_eq!(c.node(1).status().first_index, applied + 1);
    c.restart(3);
    c.propose(1, &["after"]);
    c.tick_all(3);
    assert_eq!(
        c.count_sent(|m| matches!(m.body, MessageBody::InstallSnapshot { .. })),
        1
    );
    let st = c.node(3).status();
    assert_eq!(st.first_index, applied + 1);
    assert_eq!(st.applied, applied + 1);
    assert_eq!(
        c.applied_data(3),
        ["after"],
        "only the entry after the snapshot is replayed"
    );
    // The snapshot reached the disk, and the durable log starts after it.
    assert_eq!(
        c.disks[&3].snapshot.as_ref().map(|s| s.meta.index),
        Some(applied)
    );
}

#[test]
fn compact_refuses_what_is_not_applied() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let snapshot = |index| Snapshot {
        meta: SnapshotMeta {
            index,
            term: 1,
            conf_state: ConfState::default(),
        },
        data: Default::default(),
    };
    assert!(c.node_mut(1).compact(snapshot(5)).is_err());
    assert!(c.node_mut(1).compact(snapshot(1)).is_ok());
}

/// Leader 1 of three, recovered with entries 1..=4 of term 1, all applied.
fn applied_leader_of_four() -> RaftNode {
    let mut l = recovered(1, V3, &[1, 1, 1, 1], hs(1, None, 4));
    flush(&mut l); // applies 1..=4
    l
}

/// Follower 2 has nothing: its rejection of an append at 4 (the leader then sends it the
/// snapshot).
fn rejection_from_empty_follower() -> Message {
    let reject = MessageBody::AppendResponse {
        rejected: Some((4, RejectHint { index: 0, term: 0 })),
        match_index: 0,
    };
    msg(2, 1, 2, reject)
}

/// The shell may hand `compact` the snapshot the log already starts at, as other bytes of
/// the same image (the server's copy mapped from the file, after a restart or an install):
/// nothing more is compacted, and that copy is what a follower behind the log receives.
#[test]
fn compact_at_the_log_start_only_replaces_the_image_sent() {
    let mut l = applied_leader_of_four();
    l.compact(snapshot_of_three(3, "heap copy")).unwrap();
    l.compact(snapshot_of_three(3, "mapped copy")).unwrap();
    assert_eq!(l.status().first_index, 4, "entry 4 is still in the log");
    make_leader(&mut l, V3);
    flush(&mut l);
    l.step(rejection_from_empty_follower()).unwrap();
    let sent: Vec<_> = flush(&mut l)
        .messages
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::InstallSnapshot { snapshot } => Some(snapshot),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].meta, snapshot_of_three(3, "").meta);
    assert_eq!(&sent[0].data[..], b"mapped copy");
}

#[test]
fn leader_moves_on_when_a_snapshot_is_answered() {
    let mut l = applied_leader_of_four();
    l.compact(snapshot_of_three(4, "image")).unwrap();
    make_leader(&mut l, V3);
    flush(&mut l);
    // Follower 2 has nothing: its rejection sends it the snapshot, and nothing else.
    l.step(rejection_from_empty_follower()).unwrap();
    let rd = flush(&mut l);
    assert_eq!(rd.messages.len(), 1);
    assert!(matches!(
        rd.messages[0].body,
        MessageBody::InstallSnapshot { .. }
    ));
    assert_eq!(l.progress()[0].state, "snapshot");
    l.propose(vec!["x".into()]).unwrap();
    assert!(
        appends_to(&flush(&mut l), 2).is_empty(),
        "paused while the snapshot travels"
    );
    // The follower answers with an append ack at (or beyond) the snapshot index — also what
    // it does when it refuses a snapshot older than its commit index.
    let ack = MessageBody::AppendResponse {
        rejected: None,
        match_index: 4,
    };
    l.step(msg(2, 1, 2, ack)).unwrap();
    let rd = flush(&mut l);
    assert_eq!(
        appends_to(&rd, 2),
        vec![(4, 2)],
        "no-op and x follow at once"
    );
    assert_eq!(l.progress()[0].state, "replicate");
}

// ----- membership comes from ConfState -----

fn with_learner(id: NodeId) -> RaftNode {
    let mut cfg = config(id);
    cfg.pre_vote = false;
    let initial = InitialState {
        conf_state: ConfState {
            voters: V3.to_vec(),
            learners: vec![4],
        },
        ..Default::default()
    };
    RaftNode::new(cfg, initial).unwrap()
}

#[test]
fn learners_replicate_but_never_vote_or_campaign() {
    let mut learner = with_learner(4);
    for _ in 0..100 {
        learner.tick();
    }
    assert_eq!(
        learner.status().role,
        Role::Follower,
        "a learner never campaigns"
    );
    assert!(!learner.has_ready());

    let mut l = with_learner(1);
    make_leader(&mut l, V3);
    let rd = flush(&mut l);
    assert_eq!(
        appends_to(&rd, 4),
        vec![(0, 1)],
        "the learner gets the log too"
    );
    // The learner's acknowledgement does not count toward commit: 1 (leader) + learner is
    // not a majority of the three voters.
    let ack = MessageBody::AppendResponse {
        rejected: None,
        match_index: 1,
    };
    l.step(msg(4, 1, 1, ack.clone())).unwrap();
    assert_eq!(l.commit_index(), 0);
    l.step(msg(2, 1, 1, ack)).unwrap();
    assert_eq!(l.commit_index(), 1);
}

#[test]
fn announce_commit_tells_idle_followers_at_once() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, &["a"]);
    c.stabilize();
    assert_eq!(c.applied_data(1), ["a"]);
    assert!(
        c.applied_data(2).is_empty(),
        "followers learn the commit later by default"
    );
    assert!(c.node_mut(1).announce_commit());
    c.stabilize();
    assert_eq!(c.applied_data(2), ["a"]);
    assert_eq!(c.applied_data(3), ["a"]);
    assert!(
        !c.node_mut(2).announce_commit(),
        "followers have nothing to announce"
    );
}
