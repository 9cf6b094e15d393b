//! A tiny deterministic test cluster: in-memory "disks", a FIFO network with cuttable links,
//! and helpers that drive the Ready loop exactly as the node runtime must (send `messages`,
//! persist, send `persisted_messages`, apply, advance). Tests read like transcripts on top.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raft::*;

/// What a node has made durable.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl Disk {
    pub fn write(&mut self, rd: &Ready) {
        if let Some(snapshot) = &rd.snapshot {
            self.entries.clear();
            self.snapshot = Some(snapshot.clone());
        }
        if let Some(first) = rd.entries.first() {
            let offset = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
            let keep = (first.index - offset - 1) as usize;
            self.entries.truncate(keep);
            self.entries.extend(rd.entries.iter().cloned());
        }
        if let Some(hs) = rd.hard_state {
            self.hard_state = hs;
        }
    }
}

pub fn config(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.seed = 1000 + id;
    c
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RaftNode>,
    pub disks: BTreeMap<NodeId, Disk>,
    /// What each node's state machine applied, in order (Normal entries only).
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    pub network: VecDeque<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Stopped nodes: they neither receive nor act.
    pub down: BTreeSet<NodeId>,
    pub configs: BTreeMap<NodeId, Config>,
    /// Every message ever sent, for assertions about traffic.
    pub sent: Vec<Message>,
    /// The configuration a restarted node starts from before its snapshot and log: every
    /// initial member for `new`, nobody for `bootstrapped` (the log says who).
    pub base: ConfState,
}

impl Cluster {
    pub fn new(n: u64) -> Cluster {
        Self::with_config(n, config)
    }

    pub fn with_config(n: u64, make: impl Fn(NodeId) -> Config) -> Cluster {
        let voters: Vec<NodeId> = (1..=n).collect();
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            configs: BTreeMap::new(),
            sent: Vec::new(),
            base: ConfState {
                voters: voters.clone(),
                learners: vec![],
            },
        };
        for &id in &voters {
            let cfg = make(id);
            let initial = InitialState {
                conf_state: ConfState {
                    voters: voters.clone(),
                    learners: vec![],
                },
                ..Default::default()
            };
            c.nodes
                .insert(id, RaftNode::new(cfg.clone(), initial).unwrap());
            c.configs.insert(id, cfg);
            c.disks.insert(id, Disk::default());
            c.applied.insert(id, vec![]);
            c.read_states.insert(id, vec![]);
        }
        c
    }

    /// A cluster of `n` members whose membership is in the log: each starts from
    /// `raft::bootstrap_log` (already durable) and an empty configuration.
    pub fn bootstrapped(n: u64) -> Cluster {
        let mut c = Self::with_config(n, config);
        c.base = ConfState::default();
        let voters: Vec<NodeId> = (1..=n).collect();
        let (hard_state, entries) = bootstrap_log(&voters);
        for id in 1..=n {
            let initial = InitialState {
                hard_state,
                entries: entries.clone(),
                ..Default::default()
            };
            c.nodes
                .insert(id, RaftNode::new(config(id), initial).unwrap());
            c.disks.insert(
                id,
                Disk {
                    hard_state,
                    snapshot: None,
                    entries: entries.clone(),
                },
            );
        }
        c
    }

    /// Start a brand-new member `id` with an empty data dir (it learns everything from the
    /// leader once a change adds it).
    pub fn add_node(&mut self, id: NodeId) {
        let cfg = config(id);
        self.nodes.insert(
            id,
            RaftNode::new(cfg.clone(), InitialState::default()).unwrap(),
        );
        self.configs.insert(id, cfg);
        self.disks.insert(id, Disk::default());
        self.applied.insert(id, vec![]);
        self.read_states.insert(id, vec![]);
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).unwrap()
    }

    fn post(&mut self, msg: Message) {
        self.sent.push(msg.clone());
        if !self.cut.contains(&(msg.from, msg.to)) {
            self.network.push_back(msg);
        }
    }

    /// Run one Ready cycle on `id`, the way the runtime must.
    pub fn process(&mut self, id: NodeId) -> bool {
        if self.down.contains(&id) || !self.nodes[&id].has_ready() {
            return false;
        }
        let rd = self.node_mut(id).ready();
        for m in rd.messages.clone() {
            self.post(m);
        }
        self.disks.get_mut(&id).unwrap().write(&rd);
        for m in rd.persisted_messages.clone() {
            self.post(m);
        }
        let applied = self.applied.get_mut(&id).unwrap();
        if let Some(s) = &rd.snapshot {
            applied.retain(|e| e.index <= s.meta.index);
            applied.push(Entry {
                term: s.meta.term,
                index: s.meta.index,
                kind: EntryKind::Noop,
                data: s.data.clone(),
            });
        }
        // Safety rule 10: nothing is applied beyond the commit index already on disk.
        let durable_commit = self.disks[&id].hard_state.commit;
        if let Some(last) = rd.committed_entries.last() {
            assert!(
                last.index <= durable_commit,
                "node {id} applies {} beyond durable commit {durable_commit}",
                last.index
            );
        }
        let applied = self.applied.get_mut(&id).unwrap();
        applied.extend(rd.committed_entries.iter().cloned());
        self.read_states
            .get_mut(&id)
            .unwrap()
            .extend(rd.read_states.iter().cloned());
        self.node_mut(id).advance(rd.ack());
        true
    }

    /// Deliver one queued message. Returns false when the network is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.network.pop_front() else {
            return false;
        };
        if !self.down.contains(&m.to) {
            self.node_mut(m.to).step(m).unwrap();
        }
        true
    }

    /// Process and deliver until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                moved |= self.process(id);
            }
            while self.deliver_one() {
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    pub fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if !self.down.contains(&id) {
                    self.node_mut(id).tick();
                }
            }
            self.stabilize();
        }
    }

    /// Make `id` campaign and settle.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.stabilize();
        assert_eq!(
            self.node(id).status().role,
            Role::Leader,
            "{id} not elected"
        );
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, _)| !self.down.contains(id))
            .find(|(_, n)| n.status().role == Role::Leader)
            .map(|(&id, _)| id)
    }

    pub fn propose(&mut self, id: NodeId, payloads: &[&str]) -> Proposed {
        let data = payloads
            .iter()
            .map(|p| Bytes::from(p.to_string()))
            .collect();
        self.node_mut(id).propose(data).unwrap()
    }

    /// Payloads of the Normal entries `id` applied.
    pub fn applied_data(&self, id: NodeId) -> Vec<String> {
        self.applied[&id]
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect()
    }

    pub fn isolate(&mut self, id: NodeId) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crash `id`: it loses everything not on its disk and its queued inbound messages.
    pub fn crash(&mut self, id: NodeId) {
        self.down.insert(id);
        self.network.retain(|m| m.to != id && m.from != id);
    }

    /// Restart `id` from its disk.
    pub fn restart(&mut self, id: NodeId) {
        let disk = self.disks[&id].clone();
        let snapshot_meta = disk.snapshot.as_ref().map(|s| s.meta.clone());
        let applied = snapshot_meta.as_ref().map_or(0, |m| m.index);
        let initial = InitialState {
            hard_state: disk.hard_state,
            conf_state: self.base.clone(),
            snapshot: snapshot_meta,
            entries: disk.entries.clone(),
            applied,
        };
        let mut node = RaftNode::new(self.configs[&id].clone(), initial).unwrap();
        if let Some(s) = disk.snapshot {
            node.compact(s).unwrap();
        }
        let applied_log = self.applied.get_mut(&id).unwrap();
        applied_log.retain(|e| e.index <= applied);
        self.nodes.insert(id, node);
        self.down.remove(&id);
    }

    /// Messages of the given kind ever sent.
    pub fn count_sent(&self, pred: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| pred(m)).count()
    }
}

// ----- helpers for scripted single-node transcripts -----

/// A node of a `voters`-sized cluster, with pre-vote off unless asked (scripts are shorter).
pub fn scripted(id: NodeId, voters: &[NodeId], pre_vote: bool) -> RaftNode {
    let mut cfg = config(id);
    cfg.pre_vote = pre_vote;
    let initial = InitialState {
        conf_state: ConfState {
            voters: voters.to_vec(),
            learners: vec![],
        },
        ..Default::default()
    };
    RaftNode::new(cfg, initial).unwrap()
}

/// A node recovered with the given log (terms by index) and hard state.
pub fn recovered(id: NodeId, voters: &[NodeId], terms: &[Term], hs: HardState) -> RaftNode {
    let mut cfg = config(id);
    cfg.pre_vote = false;
    let initial = InitialState {
        hard_state: hs,
        conf_state: ConfState {
            voters: voters.to_vec(),
            learners: vec![],
        },
        snapshot: None,
        entries: terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect(),
        applied: 0,
    };
    RaftNode::new(cfg, initial).unwrap()
}

pub fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("{index}@{term}")),
    }
}

pub fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Take a Ready and acknowledge it at once (as if written and applied instantly).
pub fn flush(node: &mut RaftNode) -> Ready {
    let rd = node.ready();
    node.advance(rd.ack());
    rd
}

/// All messages of a Ready, both kinds.
pub fn all_messages(rd: &Ready) -> Vec<Message> {
    rd.messages
        .iter()
        .chain(rd.persisted_messages.iter())
        .cloned()
        .collect()
}

/// Make a scripted node the leader of `term - 1 + 1` by granting it votes (pre-vote off).
pub fn make_leader(node: &mut RaftNode, voters: &[NodeId]) {
    node.campaign();
    let term = node.status().hard_state.term;
    flush(node);
    let me = node.status().id;
    for &v in voters.iter().filter(|&&v| v != me) {
        if node.status().role == Role::Leader {
            break;
        }
        node.step(msg(
            v,
            me,
            term,
            MessageBody::VoteResponse { granted: true },
        ))
        .unwrap();
    }
    assert_eq!(node.status().role, Role::Leader);
}

/// A snapshot of members 1–3 at `index` (term 1) whose image is `data`.
pub fn snapshot_of_three(index: Index, data: &'static str) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term: 1,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![],
            },
        },
        data: data.into(),
    }
}
