//! Elections and replication on small clusters, end to end through the Ready loop.

mod common;

use common::*;
use raft::*;

#[test]
fn fresh_node_reports_itself_and_term_zero() {
    let c = Cluster::new(3);
    for id in 1..=3 {
        let st = c.node(id).status();
        assert_eq!(
            (st.id, st.hard_state.term, st.role, st.leader),
            (id, 0, Role::Follower, None)
        );
    }
}

#[test]
fn ticking_elects_exactly_one_leader() {
    let mut c = Cluster::new(3);
    c.tick_all(30);
    let leader = c.leader().expect("a leader within 30 ticks");
    let term = c.node(leader).status().hard_state.term;
    for id in 1..=3 {
        assert_eq!(c.node(id).status().leader, Some(leader));
        assert_eq!(c.node(id).status().hard_state.term, term);
    }
    assert_eq!(
        c.nodes
            .values()
            .filter(|n| n.status().role == Role::Leader)
            .count(),
        1
    );
}

#[test]
fn proposals_replicate_and_apply_everywhere() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, &["a", "b"]);
    c.propose(1, &["c"]);
    c.stabilize();
    assert_eq!(c.applied_data(1), ["a", "b", "c"]);
    c.tick_all(1); // followers learn the commit index from the next heartbeat
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), ["a", "b", "c"], "node {id}");
        assert_eq!(c.node(id).status().hard_state.commit, 4);
    }
}

#[test]
fn propose_on_follower_names_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(2);
    let err = c.node_mut(1).propose(vec!["x".into()]).unwrap_err();
    assert_eq!(err, ProposeError::NotLeader { leader: Some(2) });
    let fresh = Cluster::new(3);
    let mut fresh = fresh;
    let err = fresh.node_mut(1).propose(vec!["x".into()]).unwrap_err();
    assert_eq!(err, ProposeError::NotLeader { leader: None });
}

#[test]
fn new_leader_appends_a_noop() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let entries = c.node(1).entries(1, 2).unwrap();
    assert_eq!(entries[0].kind, EntryKind::Noop);
    assert_eq!(entries[0].term, c.node(1).status().hard_state.term);
}

#[test]
fn leader_failure_elects_another() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.crash(1);
    c.tick_all(40);
    let leader = c.leader().expect("new leader");
    assert_ne!(leader, 1);
}

#[test]
fn misrouted_messages_are_refused() {
    let mut c = Cluster::new(3);
    // A sender outside our configuration is heard (it may be a member added while we lag;
    // tests/membership.rs); a message from nobody (0) or from ourselves is not.
    for from in [0, 1] {
        let msg = Message {
            from,
            to: 1,
            term: 1,
            body: MessageBody::TimeoutNow,
        };
        assert_eq!(c.node_mut(1).step(msg), Err(StepError::Misrouted));
    }
    let msg = Message {
        from: 2,
        to: 3,
        term: 1,
        body: MessageBody::TimeoutNow,
    };
    assert_eq!(c.node_mut(1).step(msg), Err(StepError::Misrouted));
}

#[test]
fn invalid_configs_are_refused() {
    let mut cfg = Config::new(0);
    assert!(RaftNode::new(cfg.clone(), InitialState::default()).is_err());
    cfg.id = 1;
    cfg.heartbeat_tick = cfg.election_tick;
    assert!(RaftNode::new(cfg, InitialState::default()).is_err());
    let bad_commit = InitialState {
        hard_state: HardState {
            term: 1,
            vote: None,
            commit: 5,
        },
        ..Default::default()
    };
    assert!(RaftNode::new(Config::new(1), bad_commit).is_err());
}

#[test]
fn follower_catches_up_after_restart() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.crash(3);
    c.propose(1, &["a", "b", "c"]);
    c.stabilize();
    assert_eq!(c.applied_data(1), ["a", "b", "c"]);
    c.restart(3);
    c.tick_all(3);
    assert_eq!(c.applied_data(3), ["a", "b", "c"]);
    assert_eq!(c.disks[&3].entries, c.disks[&1].entries);
}

#[test]
fn same_seed_same_history() {
    let run = || {
        let mut c = Cluster::new(5);
        c.tick_all(40);
        let l = c.leader().unwrap();
        c.propose(l, &["x"]);
        c.stabilize();
        format!("{:?}", c.sent)
    };
    assert_eq!(run(), run());
}

#[test]
fn leader_reports_follower_progress() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, &["a"]);
    c.stabilize();
    let progress = c.node(1).progress();
    assert_eq!(progress.len(), 2);
    for p in &progress {
        assert_eq!((p.match_index, p.next_index, p.state), (2, 3, "replicate"));
    }
    assert!(c.node(2).progress().is_empty());
}
