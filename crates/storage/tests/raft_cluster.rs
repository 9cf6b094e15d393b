//! Three Raft cores on this storage, through power-loss/restart cycles.
//!
//! Each member has its own `LazyFs` "machine". The driver runs the Ready contract exactly
//! as the node runtime does (send `messages`, `save` with one fsync, send
//! `persisted_messages`, apply, `advance`), with a lossy, reordering in-memory network.
//! Power fails at random: in the middle of a `save` (a crash armed to fire a few system
//! calls in), or between a `save` and the messages that depend on it. The member is
//! restarted later from whatever its disk kept, as a restarting member
//! (`expect_existing`). Members snapshot and compact as they go, so restarts also load
//! snapshots and followers receive them.
//!
//! Checked throughout: no two members ever apply different entries at one index (so a
//! committed entry, once applied anywhere, is never replaced), every member applies
//! contiguously; at the end, after healing, all members reach the same applied index with
//! the same state-machine digest, which is the digest of every committed entry in order.
//! A variant whose members skip their `save` (acknowledging writes they never made
//! durable) must be caught by these checks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Config, Entry, Message, RaftNode, Role, Snapshot, SnapshotMeta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storage::{LazyFs, LossMode, Storage, StorageOptions};

const MEMBERS: [u64; 3] = [1, 2, 3];
const DIR: &str = "/var/lib/raftkv";

fn conf() -> ConfState {
    ConfState {
        voters: MEMBERS.to_vec(),
        learners: vec![],
    }
}

fn opts(id: u64, expect_existing: bool) -> StorageOptions {
    let mut o = StorageOptions::new(id, 0x3a3a);
    o.segment_size = 4096;
    o.expect_existing = expect_existing;
    o
}

/// The state machine: how far it applied and a digest of everything applied, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Machine {
    applied: u64,
    digest: u64,
}

impl Machine {
    fn apply(&mut self, e: &Entry) {
        let mut h =
            self.digest ^ e.index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ e.term.rotate_left(17);
        for &b in e.data.iter() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        self.digest = h;
        self.applied = e.index;
    }
    fn image(&self) -> Bytes {
        let mut v = self.applied.to_le_bytes().to_vec();
        v.extend_from_slice(&self.digest.to_le_bytes());
        Bytes::from(v)
    }
    fn from_image(data: &[u8]) -> Machine {
        Machine {
            applied: u64::from_le_bytes(data[..8].try_into().unwrap()),
            digest: u64::from_le_bytes(data[8..16].try_into().unwrap()),
        }
    }
}

struct Member {
    fs: Arc<LazyFs>,
    /// `None` while the member is powered off.
    live: Option<(RaftNode, Storage, Machine)>,
    down_until: u64,
    restarts: u64,
}

#[derive(Clone, Copy)]
struct Faults {
    crash_per_step: f64,
    drop_rate: f64,
    /// The bug the checks must catch: a runtime that sends `persisted_messages` (votes,
    /// append acks) before its `save` is durable, so a power loss in the save breaks them.
    ack_before_save: bool,
}

struct Cluster {
    rng: ChaCha8Rng,
    members: BTreeMap<u64, Member>,
    network: VecDeque<Message>,
    /// Every entry any member applied, by index: the committed log as observed.
    committed: BTreeMap<u64, Entry>,
    step: u64,
    faults: Faults,
}

type Check = Result<(), String>;

fn boot(
    id: u64,
    fs: &Arc<LazyFs>,
    expect_existing: bool,
) -> Result<(RaftNode, Storage, Machine), String> {
    let (store, rec) = Storage::open(fs.clone(), DIR, &opts(id, expect_existing))
        .map_err(|e| format!("member {id} failed to recover: {e}"))?;
    let machine = rec
        .snapshot
        .as_ref()
        .map(|s| Machine::from_image(&s.data))
        .unwrap_or_default();
    let mut cfg = Config::new(id);
    cfg.seed = id * 1000 + fs.sync_count();
    let node =
        RaftNode::new(cfg, rec.initial_state(conf())).map_err(|e| format!("member {id}: {e:?}"))?;
    Ok((node, store, machine))
}

impl Cluster {
    fn new(seed: u64, faults: Faults) -> Cluster {
        let mut members = BTreeMap::new();
        for id in MEMBERS {
            let fs = Arc::new(LazyFs::new());
            let live = boot(id, &fs, false).expect("fresh boot");
            members.insert(
                id,
                Member {
                    fs,
                    live: Some(live),
                    down_until: 0,
                    restarts: 0,
                },
            );
        }
        Cluster {
            rng: ChaCha8Rng::seed_from_u64(seed),
            members,
            network: VecDeque::new(),
            committed: BTreeMap::new(),
            step: 0,
            faults,
        }
    }

    fn leader(&self) -> Option<u64> {
        self.members.iter().find_map(|(id, m)| {
            m.live
                .as_ref()
                .filter(|(n, _, _)| n.status().role == Role::Leader)
                .map(|_| *id)
        })
    }

    fn power_off(&mut self, id: u64) {
        let down_for = self.rng.gen_range(5..40);
        let m = self.members.get_mut(&id).unwrap();
        m.live = None;
        m.down_until = self.step + down_for;
        let mode = match self.rng.gen_range(0..3) {
            0 => LossMode::DropUnsynced,
            1 => LossMode::KeepTornPrefix {
                seed: self.rng.gen(),
            },
            // Writes over zeros persisted page by page in any order (WAL format 2).
            _ => LossMode::TornPages {
                seed: self.rng.gen(),
                page: 64,
            },
        };
        m.fs.power_loss(mode);
    }

    fn record_apply(&mut self, id: u64, machine: &mut Machine, e: &Entry) -> Check {
        if e.index != machine.applied + 1 {
            return Err(format!(
                "member {id} applied {} after {}",
                e.index, machine.applied
            ));
        }
        match self.committed.get(&e.index) {
            Some(seen) if seen != e => {
                return Err(format!(
                    "member {id} applied {e:?} at index {}, but {seen:?} was applied there before: a committed entry was lost",
                    e.index
                ))
            }
            Some(_) => {}
            None => {
                self.committed.insert(e.index, e.clone());
            }
        }
        machine.apply(e);
        Ok(())
    }

    /// Run one member's Ready cycle, with the power possibly failing in it.
    fn process_ready(&mut self, id: u64, allow_crash: bool) -> Check {
        let Some((mut node, mut store, mut machine)) =
            self.members.get_mut(&id).unwrap().live.take()
        else {
            return Ok(());
        };
        if !node.has_ready() {
            self.members.get_mut(&id).unwrap().live = Some((node, store, machine));
            return Ok(());
        }
        let rd = node.ready();
        self.network.extend(rd.messages.iter().cloned());
        let fs = self.members[&id].fs.clone();
        let crash_in_save = allow_crash && self.rng.gen_bool(self.faults.crash_per_step);
        if crash_in_save {
            fs.crash_after_ops(self.rng.gen_range(0..6));
        }
        if self.faults.ack_before_save {
            self.network.extend(rd.persisted_messages.iter().cloned());
        }
        let saved = store.save(rd.hard_state.as_ref(), &rd.entries, rd.snapshot.as_ref());
        if let Err(e) = saved {
            if !fs.has_crashed() {
                return Err(format!(
                    "member {id}: save failed without a power loss: {e}"
                ));
            }
            self.power_off(id);
            return Ok(());
        }
        if crash_in_save && fs.has_crashed() {
            self.power_off(id);
            return Ok(());
        }
        if crash_in_save {
            // The crash did not fire inside the save: cut the power right after it,
            // before the messages that depend on it leave.
            self.power_off(id);
            return Ok(());
        }
        if !self.faults.ack_before_save {
            self.network.extend(rd.persisted_messages.iter().cloned());
        }
        if let Some(s) = &rd.snapshot {
            machine = Machine::from_image(&s.data);
        }
        for e in &rd.committed_entries {
            self.record_apply(id, &mut machine, e)?;
        }
        node.advance(rd.ack());
        // Snapshot every ~40 applied entries, the way the server will: write the image
        // (the background part), then make it current in storage and in the core.
        if machine.applied >= store.first_index() + 40 {
            let meta = SnapshotMeta {
                index: machine.applied,
                term: store.term(machine.applied).map_err(|e| e.to_string())?,
                conf_state: conf(),
            };
            let written = store
                .snapshot_writer()
                .write_bytes(&meta, &machine.image())
                .map_err(|e| e.to_string())?;
            store
                .compact_to(&written)
                .map_err(|e| format!("member {id} compact: {e}"))?;
            node.compact(Snapshot {
                meta,
                data: machine.image(),
            })
            .map_err(|e| format!("{e:?}"))?;
        }
        self.members.get_mut(&id).unwrap().live = Some((node, store, machine));
        Ok(())
    }

    fn tick(&mut self, faults_on: bool) -> Check {
        self.step += 1;
        for id in MEMBERS {
            let restart = {
                let m = &self.members[&id];
                m.live.is_none() && m.down_until <= self.step
            };
            if restart {
                let fs = self.members[&id].fs.clone();
                let live = boot(id, &fs, true)?;
                let m = self.members.get_mut(&id).unwrap();
                m.live = Some(live);
                m.restarts += 1;
            }
            if let Some((node, _, _)) = self.members.get_mut(&id).unwrap().live.as_mut() {
                node.tick();
            }
        }
        if let Some(leader) = self.leader() {
            if self.rng.gen_bool(0.7) {
                let n = self.rng.gen_range(1..4);
                let data = (0..n)
                    .map(|k| Bytes::from(format!("w{}-{k}", self.step)))
                    .collect();
                if let Some((node, _, _)) = self.members.get_mut(&leader).unwrap().live.as_mut() {
                    let _ = node.propose(data);
                }
            }
        }
        for _round in 0..3 {
            for id in MEMBERS {
                self.process_ready(id, faults_on)?;
            }
            self.deliver(faults_on);
        }
        Ok(())
    }

    fn deliver(&mut self, faults_on: bool) {
        let mut msgs: Vec<Message> = self.network.drain(..).collect();
        // Reorder a little: swap random neighbours.
        for i in 1..msgs.len() {
            if self.rng.gen_bool(0.2) {
                msgs.swap(i - 1, i);
            }
        }
        for m in msgs {
            if faults_on && self.rng.gen_bool(self.faults.drop_rate) {
                continue;
            }
            if let Some((node, _, _)) = self.members.get_mut(&m.to).and_then(|x| x.live.as_mut()) {
                let _ = node.step(m);
            }
        }
    }

    /// Heal, then wait (bounded) for every member to apply the same final state.
    fn converge(&mut self) -> Result<Machine, String> {
        for id in MEMBERS {
            self.members.get_mut(&id).unwrap().down_until = 0;
        }
        for _ in 0..3000 {
            self.tick(false)?;
            let machines: Vec<Machine> = self
                .members
                .values()
                .filter_map(|m| m.live.as_ref().map(|l| l.2))
                .collect();
            let top = self.committed.keys().next_back().copied().unwrap_or(0);
            if machines.len() == 3
                && machines
                    .iter()
                    .all(|m| *m == machines[0] && m.applied == top)
                && top > 0
            {
                // Quiet check: no proposals in flight would move it; stop here.
                return Ok(machines[0]);
            }
        }
        Err("the cluster did not converge after healing".into())
    }
}

fn run(seed: u64, faults: Faults, steps: u64) -> Result<(u64, u64), String> {
    let mut c = Cluster::new(seed, faults);
    for _ in 0..steps {
        c.tick(true)?;
    }
    let fin = c.converge()?;
    let mut expect = Machine::default();
    for (i, (index, e)) in c.committed.iter().enumerate() {
        if *index != i as u64 + 1 {
            return Err(format!("committed log has a hole before {index}"));
        }
        expect.apply(e);
    }
    if fin != expect {
        return Err(format!(
            "members agree on {fin:?}, but the committed log digests to {expect:?}"
        ));
    }
    let restarts = c.members.values().map(|m| m.restarts).sum();
    Ok((fin.applied, restarts))
}

#[test]
fn no_committed_entry_is_lost_across_power_loss_restarts() {
    let faults = Faults {
        crash_per_step: 0.01,
        drop_rate: 0.05,
        ack_before_save: false,
    };
    let (mut applied, mut restarts) = (0, 0);
    let seeds: u64 = std::env::var("RAFTKV_CLUSTER_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    for seed in 0..seeds {
        let (a, r) = run(seed, faults, 1500).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        applied += a;
        restarts += r;
    }
    println!("{applied} entries committed, {restarts} power-loss restarts");
    assert!(
        restarts >= 50,
        "too few restarts ({restarts}) to mean anything"
    );
    assert!(applied >= 2000, "too little progress ({applied} entries)");
}

#[test]
fn acknowledging_before_the_fsync_is_caught() {
    let faults = Faults {
        crash_per_step: 0.05,
        drop_rate: 0.05,
        ack_before_save: true,
    };
    let errors: Vec<String> = (0..40)
        .filter_map(|seed| run(seed, faults, 1500).err())
        .collect();
    for e in &errors {
        println!("caught: {e}");
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a committed entry was lost")),
        "acknowledging unsaved writes went unnoticed in every run"
    );
}
