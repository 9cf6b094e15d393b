//! One transcript per safety rule of DESIGN.md ("Safety rules every implementation gets
//! wrong once"). Each test drives a node by hand, message by message, and checks exactly the
//! property the rule states. Rule 9 (never reused member ids) is the server's job.

mod common;

use common::*;
use raft::*;

const V3: &[NodeId] = &[1, 2, 3];

fn hs(term: Term, vote: Option<NodeId>, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

/// Rule 1: term and vote are persisted atomically before any vote or append reply leaves.
#[test]
fn rule1_vote_and_append_replies_wait_for_the_hard_state() {
    let mut n = scripted(1, V3, false);
    let vote = MessageBody::Vote {
        last_index: 0,
        last_term: 0,
        transfer: false,
    };
    n.step(msg(2, 1, 5, vote)).unwrap();
    let rd = flush(&mut n);
    // The grant and the (term, vote) it depends on travel in the same Ready...
    assert_eq!(rd.hard_state, Some(hs(5, Some(2), 0)));
    assert!(rd.messages.is_empty(), "nothing may leave before the fsync");
    assert_eq!(rd.persisted_messages.len(), 1);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { granted: true }
    );

    // ...and an append acknowledgement waits for the entries it acknowledges.
    let append = MessageBody::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![entry(1, 5)],
        commit: 0,
    };
    n.step(msg(2, 1, 5, append)).unwrap();
    let rd = flush(&mut n);
    assert_eq!(rd.entries, vec![entry(1, 5)]);
    assert!(rd.messages.is_empty());
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::AppendResponse {
            rejected: None,
            match_index: 1
        }
    ));

    // A candidate's own vote requests depend on its self-vote being durable.
    let mut c = scripted(1, V3, false);
    c.campaign();
    let rd = c.ready();
    assert_eq!(rd.hard_state, Some(hs(1, Some(1), 0)));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 2);
    assert!(rd
        .persisted_messages
        .iter()
        .all(|m| matches!(m.body, MessageBody::Vote { .. })));
}

/// Rule 2: only an entry of the leader's own term is committed by counting replicas; older
/// entries commit with it. A new leader appends a no-op to get there.
#[test]
fn rule2_figure8_old_term_entries_are_not_committed_by_counting() {
    // Node 1 holds an entry of term 2 at index 2 that was never committed.
    let mut n = recovered(1, V3, &[1, 2], hs(2, None, 1));
    make_leader(&mut n, V3);
    assert_eq!(n.status().hard_state.term, 3);
    let noop = n.entries(3, 4).unwrap();
    assert_eq!((noop[0].kind, noop[0].term), (EntryKind::Noop, 3));
    flush(&mut n); // the leader's own log is durable

    // A follower now holds index 2 too: a majority has the term-2 entry, yet it must not
    // be committed by counting (Figure 8).
    let ack = |m| MessageBody::AppendResponse {
        rejected: None,
        match_index: m,
    };
    n.step(msg(2, 1, 3, ack(2))).unwrap();
    assert_eq!(n.commit_index(), 1);
    // Once the term-3 no-op is on a majority, everything up to it commits.
    n.step(msg(2, 1, 3, ack(3))).unwrap();
    assert_eq!(n.commit_index(), 3);
}

/// Rule 3: committed means durable on a quorum — a single-node cluster commits only after
/// its own write, and a leader never applies entries it has not persisted itself.
#[test]
fn rule3_single_node_commits_only_after_its_own_fsync() {
    let mut n = scripted(1, &[1], false);
    n.campaign();
    assert_eq!(n.status().role, Role::Leader);
    n.propose(vec!["x".into()]).unwrap();
    let rd = n.ready();
    assert_eq!(rd.entries.len(), 2); // no-op + x
    assert!(rd.committed_entries.is_empty(), "nothing is durable yet");
    assert_eq!(n.commit_index(), 0);
    n.advance(rd.ack()); // the fsync happened
    assert_eq!(n.commit_index(), 2);
    let rd = flush(&mut n);
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(2));
    assert_eq!(rd.committed_entries.len(), 2);
}

#[test]
fn rule3_leader_applies_nothing_it_has_not_persisted() {
    let mut n = scripted(1, V3, false);
    make_leader(&mut n, V3);
    flush(&mut n);
    n.propose(vec!["x".into()]).unwrap();
    let rd = n.ready(); // the leader's write of index 2 is in progress
    assert_eq!(rd.entries.len(), 1);
    let ack = |m| MessageBody::AppendResponse {
        rejected: None,
        match_index: m,
    };
    // Both followers have index 2 durably: it is committed (a quorum holds it)...
    n.step(msg(2, 1, 1, ack(2))).unwrap();
    n.step(msg(3, 1, 1, ack(2))).unwrap();
    assert_eq!(n.commit_index(), 2);
    // ...but the leader does not apply it before its own write completes.
    let rd2 = n.ready();
    assert!(rd2.committed_entries.iter().all(|e| e.index < 2));
    n.advance(rd2.ack());
    n.advance(rd.ack());
    let rd3 = flush(&mut n);
    assert_eq!(rd3.committed_entries.last().map(|e| e.index), Some(2));
}

/// Rule 4: a follower truncates only on a real conflict; a stale or duplicated Append
/// never deletes entries.
#[test]
fn rule4_stale_append_never_truncates() {
    let mut n = scripted(1, V3, false);
    let append = |prev_index, prev_term, entries: Vec<Entry>| MessageBody::Append {
        prev_index,
        prev_term,
        entries,
        commit: 0,
    };
    n.step(msg(
        2,
        1,
        1,
        append(0, 0, vec![entry(1, 1), entry(2, 1), entry(3, 1)]),
    ))
    .unwrap();
    flush(&mut n);
    // A delayed copy of an earlier, shorter Append arrives.
    n.step(msg(2, 1, 1, append(0, 0, vec![entry(1, 1)])))
        .unwrap();
    let rd = flush(&mut n);
    assert!(rd.entries.is_empty(), "nothing rewritten");
    assert_eq!(n.status().last_index, 3);

    // A real conflict (a newer leader's entry at index 2) truncates from there.
    n.step(msg(3, 1, 2, append(1, 1, vec![entry(2, 2)])))
        .unwrap();
    let rd = flush(&mut n);
    assert_eq!(rd.entries, vec![entry(2, 2)]);
    assert_eq!(n.status().last_index, 2);
}

/// Rule 5: the up-to-date check compares (last term, last index) lexicographically, and
/// seeing a higher term is not granting a vote.
#[test]
fn rule5_up_to_date_is_lexicographic_and_higher_term_is_not_a_vote() {
    // Our log ends at (index 3, term 2).
    let mut n = recovered(1, V3, &[1, 1, 2], hs(2, None, 0));
    let vote = |last_index, last_term| MessageBody::Vote {
        last_index,
        last_term,
        transfer: false,
    };
    // Longer log, older last term: refused — but the term is adopted, with no vote.
    n.step(msg(2, 1, 3, vote(10, 1))).unwrap();
    let rd = flush(&mut n);
    assert_eq!(rd.hard_state, Some(hs(3, None, 0)));
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { granted: false }
    );
    // Shorter log, newer last term: granted.
    n.step(msg(3, 1, 4, vote(1, 3))).unwrap();
    let rd = flush(&mut n);
    assert_eq!(rd.hard_state, Some(hs(4, Some(3), 0)));
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { granted: true }
    );
    // Same term, equally long: granted only to the one we voted for.
    n.step(msg(2, 1, 4, vote(3, 2))).unwrap();
    let rd = flush(&mut n);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { granted: false }
    );
}

/// Rule 6: ReadIndex waits for the leader's first commit in its term, and a read is
/// confirmed only by acks of its own heartbeat round, never by an earlier round's.
#[test]
fn rule6_read_index_waits_for_term_commit_and_ignores_stale_acks() {
    let mut n = scripted(1, V3, false);
    make_leader(&mut n, V3);
    flush(&mut n);
    n.read_index("r1".into()).unwrap();
    let rd = flush(&mut n);
    assert!(
        rd.read_states.is_empty(),
        "no read before the no-op commits"
    );
    let hb_seq = |rd: &Ready| {
        rd.messages.iter().find_map(|m| match m.body {
            MessageBody::Heartbeat { read_seq, .. } => Some(read_seq),
            _ => None,
        })
    };
    assert_eq!(hb_seq(&rd), None, "no confirmation round before the commit");

    // The no-op commits; the queued read gets a round of its own.
    let ack = MessageBody::AppendResponse {
        rejected: None,
        match_index: 1,
    };
    n.step(msg(2, 1, 1, ack)).unwrap();
    let rd = flush(&mut n);
    let round = hb_seq(&rd).expect("a heartbeat round for the read");
    assert!(rd.read_states.is_empty());

    // An ack of an earlier round (a delayed heartbeat response) must not confirm it.
    let hb_ack = |seq| MessageBody::HeartbeatResponse { read_seq: seq };
    n.step(msg(2, 1, 1, hb_ack(round - 1))).unwrap();
    n.step(msg(3, 1, 1, hb_ack(round - 1))).unwrap();
    assert!(flush(&mut n).read_states.is_empty());
    // An ack of its round from one follower makes a majority with the leader.
    n.step(msg(3, 1, 1, hb_ack(round))).unwrap();
    let rd = flush(&mut n);
    assert_eq!(
        rd.read_states,
        vec![ReadState {
            ctx: "r1".into(),
            index: 1
        }]
    );

    // Rounds are strictly increasing.
    n.read_index("r2".into()).unwrap();
    let rd = flush(&mut n);
    assert!(hb_seq(&rd).unwrap() > round);
}

/// Rule 7: pre-vote + check-quorum + stickiness. A member cut off from the leader (but not
/// from the others) must not disrupt it; a leader that lost its quorum steps down.
#[test]
fn rule7_partial_partition_does_not_disrupt_a_live_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).status().hard_state.term;
    c.sent.clear();
    // 3 cannot hear 1 (and 1 cannot hear 3) but 2 hears both.
    c.cut.insert((1, 3));
    c.cut.insert((3, 1));
    c.tick_all(100);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.node(1).status().hard_state.term, term);
    assert_eq!(c.node(2).status().hard_state.term, term);
    // Pre-vote kept 3's term from climbing too.
    assert_eq!(c.node(3).status().hard_state.term, term);
    let granted_prevotes =
        c.count_sent(|m| matches!(m.body, MessageBody::PreVoteResponse { granted: true }));
    assert_eq!(
        granted_prevotes, 0,
        "stickiness: no pre-vote granted while 2 hears 1"
    );

    // Without pre-vote and stickiness the same partition deposes the leader.
    let mut c = Cluster::with_config(3, |id| {
        let mut cfg = config(id);
        cfg.pre_vote = false;
        cfg.check_quorum = false;
        cfg
    });
    c.elect(1);
    c.cut.insert((1, 3));
    c.cut.insert((3, 1));
    c.tick_all(100);
    // 3 campaigns at ever higher terms and 2 follows it away from the live leader.
    assert!(
        c.node(2).status().hard_state.term > term,
        "the control run must be disrupted"
    );
    assert_ne!(c.node(2).status().leader, Some(1));
}

#[test]
fn rule7_leader_without_quorum_steps_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    let election_tick = c.configs[&1].election_tick;
    c.tick_all(election_tick * 2);
    assert_ne!(c.node(1).status().role, Role::Leader);
}

/// Rule 8: installing a snapshot discards the conflicting log; a snapshot older than what is
/// committed (hence possibly applied) is refused, with an answer that lets the leader move on.
#[test]
fn rule8_snapshot_replaces_conflicting_log_and_old_snapshots_are_refused() {
    let snap = |index, term| Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState {
                voters: V3.to_vec(),
                learners: vec![],
            },
        },
        data: "image".into(),
    };
    // Conflicting log: everything is replaced.
    let mut n = recovered(1, V3, &[1, 1, 2, 2], hs(2, None, 2));
    n.step(msg(
        2,
        1,
        3,
        MessageBody::InstallSnapshot {
            snapshot: snap(5, 3),
        },
    ))
    .unwrap();
    let rd = flush(&mut n);
    assert_eq!(rd.snapshot.as_ref().map(|s| s.meta.index), Some(5));
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(5));
    let st = n.status();
    assert_eq!((st.first_index, st.last_index, st.applied), (6, 5, 5));
    assert!(n.entries(3, 5).is_none(), "the conflicting prefix is gone");

    // Matching entry at the snapshot index: the suffix after it is kept.
    let mut n = recovered(1, V3, &[1, 1, 1, 1, 1, 1], hs(1, None, 1));
    n.step(msg(
        2,
        1,
        1,
        MessageBody::InstallSnapshot {
            snapshot: snap(4, 1),
        },
    ))
    .unwrap();
    let rd = flush(&mut n);
    assert!(rd.snapshot.is_none());
    assert_eq!(n.status().last_index, 6);
    assert_eq!(n.commit_index(), 4);

    // Older than our commit index: refused, answered as an append ack at our commit.
    let mut n = recovered(1, V3, &[1, 1, 1, 1, 1], hs(1, None, 5));
    n.step(msg(
        2,
        1,
        1,
        MessageBody::InstallSnapshot {
            snapshot: snap(3, 1),
        },
    ))
    .unwrap();
    let rd = flush(&mut n);
    assert!(rd.snapshot.is_none());
    assert_eq!(n.status().last_index, 5);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::AppendResponse {
            rejected: None,
            match_index: 5
        }
    );
}

/// Rule 10: after a restart the applied index never runs ahead of the durable commit index,
/// even when the log on disk holds more entries.
#[test]
fn rule10_restart_applies_only_up_to_the_durable_commit() {
    let mut n = recovered(1, V3, &[1, 1, 1, 1, 1], hs(1, None, 2));
    let rd = flush(&mut n);
    assert_eq!(rd.committed_entries, vec![entry(1, 1), entry(2, 1)]);
    // A heartbeat's commit beyond our log is clamped to what we hold.
    let mut f = recovered(2, V3, &[1, 1], hs(1, None, 0));
    f.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 9,
            read_seq: 0,
        },
    ))
    .unwrap();
    let rd = flush(&mut f);
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(2));
    assert_eq!(rd.committed_entries.len(), 2);
}
