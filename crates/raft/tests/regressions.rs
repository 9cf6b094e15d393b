//! Regression tests for bugs found by the simulator (docs/simulator.md says how to replay a
//! seed) or by our own chaos test. Each names the seed that found it.

mod common;

use bytes::Bytes;
use common::*;
use raft::*;

const V3: &[NodeId] = &[1, 2, 3];

/// raftkv-sim sweep seed 1671: a member that had *installed* a snapshot from the leader later
/// became leader itself, but kept offering the older snapshot it had compacted to before.
/// That snapshot did not reach its log's start, so a lagging follower was sent it forever.
#[test]
fn leader_ships_the_snapshot_it_installed_not_an_older_one() {
    let mut n = recovered(
        1,
        V3,
        &[1, 1, 1],
        HardState {
            term: 1,
            vote: None,
            commit: 3,
        },
    );
    let rd = flush(&mut n);
    assert_eq!(rd.committed_entries.len(), 3);
    n.compact(snapshot_of_three(3, "old")).unwrap();
    n.step(msg(
        2,
        1,
        1,
        MessageBody::InstallSnapshot {
            snapshot: snapshot_of_three(10, "new"),
        },
    ))
    .unwrap();
    flush(&mut n);
    make_leader(&mut n, V3);
    flush(&mut n);
    // Follower 3 has nothing: it rejects the first probe with an empty-log hint.
    let reject = MessageBody::AppendResponse {
        rejected: Some((10, RejectHint { index: 0, term: 0 })),
        match_index: 0,
    };
    n.step(msg(3, 1, 2, reject)).unwrap();
    let rd = flush(&mut n);
    let sent: Vec<_> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { snapshot } if m.to == 3 => Some(snapshot.meta.index),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![10]);
}

/// raftkv-sim sweep seed 1861 (pre-vote off, 4 members): members with stale logs kept
/// campaigning, and every refused vote request restarted the election timer of the members
/// with up-to-date logs, so none of those ever campaigned. Figure 2: only hearing from a
/// leader or *granting* a vote restarts the timer.
#[test]
fn refusing_a_vote_does_not_restart_the_election_timer() {
    // How many ticks an undisturbed node waits before campaigning (same seed ⇒ same timeout).
    let mut probe = recovered(
        1,
        V3,
        &[1, 1],
        HardState {
            term: 1,
            vote: None,
            commit: 2,
        },
    );
    let mut timeout = 0;
    while probe.status().role == Role::Follower {
        probe.tick();
        timeout += 1;
    }
    let mut n = recovered(
        1,
        V3,
        &[1, 1],
        HardState {
            term: 1,
            vote: None,
            commit: 2,
        },
    );
    for _ in 0..timeout - 1 {
        n.tick();
    }
    // A candidate with a stale log asks for a vote in a higher term: refused, term adopted.
    let stale = MessageBody::Vote {
        last_index: 1,
        last_term: 1,
        transfer: false,
    };
    n.step(msg(2, 1, 5, stale)).unwrap();
    let rd = flush(&mut n);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { granted: false }
    );
    n.tick();
    assert_eq!(n.status().role, Role::Candidate, "the timer kept running");
    assert_eq!(n.status().hard_state.term, 6);
}

/// Found while checking message budgets (raftkv-sim `message_counts_stay_bounded`): every
/// heartbeat answer from a follower with Appends in flight triggered an extra empty Append.
/// Now only a follower that made no progress over a whole heartbeat round gets one.
#[test]
fn heartbeat_answers_do_not_duplicate_a_healthy_pipeline() {
    let mut l = scripted(1, V3, false);
    make_leader(&mut l, V3);
    let ack = |m| MessageBody::AppendResponse {
        rejected: None,
        match_index: m,
    };
    l.step(msg(2, 1, 1, ack(1))).unwrap();
    flush(&mut l);
    l.propose(vec!["a".into()]).unwrap();
    flush(&mut l); // Append of index 2 in flight to 2
    let periodic_heartbeat = |l: &mut RaftNode| {
        for _ in 0..config(1).heartbeat_tick {
            l.tick();
        }
        flush(l);
    };
    periodic_heartbeat(&mut l);
    l.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 }))
        .unwrap();
    let rd = flush(&mut l);
    assert!(rd.messages.is_empty(), "{:?}", rd.messages);
    // A second answer without progress, to the next periodic heartbeat: the Append is
    // presumed lost and re-probed.
    periodic_heartbeat(&mut l);
    l.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { read_seq: 0 }))
        .unwrap();
    let rd = flush(&mut l);
    assert_eq!(rd.messages.len(), 1);
    assert!(matches!(
        rd.messages[0].body,
        MessageBody::Append { prev_index: 2, .. }
    ));
}

/// Jepsen `short_runs` "partitions" (CI run of 743b9a7): after a partition healed, a
/// leader took 7,504 heartbeat answers from a follower behind its log in one round and
/// spent 41 s of CPU in it. Every answer un-paused the follower's probe, and each probe
/// carried up to `max_size_per_msg` of entries: 7,504 Appends of up to 1 MiB, built,
/// encoded and mostly dropped, while no tick ran. Read rounds send a heartbeat each, so
/// answers come as fast as clients read, not once per heartbeat interval. Now only the
/// first answer after each periodic heartbeat may resend.
#[test]
fn a_flood_of_heartbeat_answers_resends_to_a_probed_follower_once_per_heartbeat_interval() {
    let mut l = scripted(1, V3, false);
    make_leader(&mut l, V3);
    for _ in 0..50 {
        l.propose(vec!["x".repeat(100).into()]).unwrap();
    }
    flush(&mut l); // the probes to 2 and 3; the one to 2 is lost
                   // Follower 3 holds the no-op: the leader has committed in its term, so reads go out
                   // as heartbeat rounds.
    let holds = |m| MessageBody::AppendResponse {
        rejected: None,
        match_index: m,
    };
    l.step(msg(3, 1, 1, holds(1))).unwrap();
    flush(&mut l);
    let appends_to_2 = |rd: &Ready| {
        all_messages(rd)
            .into_iter()
            .filter(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. }))
            .count()
    };
    let answer = |l: &mut RaftNode, seq| {
        l.step(msg(
            2,
            1,
            1,
            MessageBody::HeartbeatResponse { read_seq: seq },
        ))
        .unwrap();
        appends_to_2(&flush(l))
    };
    // Read rounds: each one a heartbeat, each answered by 2, no tick in between.
    let mut sent = 0;
    let mut last_seq = 0;
    for i in 1..=1000 {
        l.read_index(Bytes::from(format!("r{i}"))).unwrap();
        let round = all_messages(&flush(&mut l))
            .into_iter()
            .find_map(|m| match m.body {
                MessageBody::Heartbeat { read_seq, .. } if m.to == 2 => Some(read_seq),
                _ => None,
            });
        let seq = round.unwrap_or_else(|| panic!("read {i} went out as no heartbeat round"));
        assert!(seq > last_seq, "a new round");
        last_seq = seq;
        sent += answer(&mut l, seq);
    }
    assert_eq!(
        sent, 0,
        "answers to read rounds resent to the probed follower {sent} times"
    );
    for _ in 0..config(1).heartbeat_tick {
        l.tick();
    }
    flush(&mut l); // the periodic heartbeat
    assert_eq!(answer(&mut l, last_seq), 1, "its answer probes again, once");
    assert_eq!(answer(&mut l, last_seq), 0);
}

/// raftkv-sim seed 108686 (fault ticks 2000): a long-delayed rejection of an old probe arrived
/// after the follower had acknowledged more. It moved `next_index` to or below `match_index`;
/// with one entry per message every answer was then an ack that did not advance `match_index`,
/// `next_index` never moved, and the leader re-sent the same entry forever.
#[test]
fn stale_probe_rejection_cannot_trap_the_leader_in_a_resend_loop() {
    let mut cfg = config(1);
    cfg.pre_vote = false;
    cfg.max_size_per_msg = 1; // one entry per Append
    let initial = InitialState {
        conf_state: ConfState {
            voters: V3.to_vec(),
            learners: vec![],
        },
        ..Default::default()
    };
    let mut l = RaftNode::new(cfg, initial).unwrap();
    make_leader(&mut l, V3);
    l.propose(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    flush(&mut l);
    let ack = |m| MessageBody::AppendResponse {
        rejected: None,
        match_index: m,
    };
    let reject = |r, i, t| MessageBody::AppendResponse {
        rejected: Some((r, RejectHint { index: i, term: t })),
        match_index: 0,
    };
    l.step(msg(2, 1, 1, ack(1))).unwrap(); // replicate from 2 on
                                           // A later Append was lost: the follower rejects prev 2, and we fall back to probing at 2.
    l.step(msg(2, 1, 1, reject(2, 1, 1))).unwrap();
    flush(&mut l);
    // Now a delayed rejection of prev 1 — an index the follower already acknowledged.
    l.step(msg(2, 1, 1, reject(1, 0, 0))).unwrap();
    let p = &l.progress()[0];
    assert!(p.next_index > p.match_index, "{p:?}");
    // Play the follower honestly from here: it holds index 1 only.
    // (Messages sent so far were lost; heartbeats make the leader probe again.)
    let mut follower_last = 1;
    for _ in 0..20 {
        l.tick();
        let rd = flush(&mut l);
        for m in rd.messages.into_iter().filter(|m| m.to == 2) {
            let answer = match m.body {
                MessageBody::Append {
                    prev_index,
                    entries,
                    ..
                } if prev_index <= follower_last => {
                    follower_last = follower_last.max(prev_index + entries.len() as u64);
                    ack(follower_last)
                }
                MessageBody::Append { prev_index, .. } => reject(prev_index, follower_last, 1),
                MessageBody::Heartbeat { read_seq, .. } => {
                    MessageBody::HeartbeatResponse { read_seq }
                }
                _ => continue,
            };
            l.step(msg(2, 1, 1, answer)).unwrap();
        }
    }
    assert_eq!(follower_last, 4, "the follower received every entry");
}
