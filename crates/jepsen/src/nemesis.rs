//! The nemesis: injects one fault at a time, holds it a few seconds, heals it, waits a little,
//! and again, until the run ends. Every fault is written into the histories (as `nemesis`
//! events) and into the timeline with evidence that it took effect.
//!
//! It runs on its own OS thread: faults are made with blocking commands (iptables, kill) and
//! must not stall the clients' runtime.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use raftkv_client::leader::poll_states;
use raftkv_client::{Client, Timeouts};

use crate::cluster::Cluster;
use crate::recorder::Recorder;

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The leader cut from every other member (both directions).
    PartitionLeader,
    /// A random minority cut from the majority.
    PartitionHalves,
    /// Two sides that cannot talk to each other, both talking to one bridge member.
    PartitionBridge,
    /// The leader hears nothing from the others, who still hear it.
    PartitionOneWay,
    KillOne,
    KillLeader,
    KillMinority,
    /// SIGSTOP of the leader for longer than the election timeout, then SIGCONT.
    PauseLeader,
    /// Every member SIGKILLed and restarted in turn, waiting for it to rejoin.
    RollingRestart,
    /// One member's clock runs 4x fast (a follower) or 4x slow (the leader).
    ClockSkew,
    /// A member (the leader a third of the time) removed, wiped, and replaced by a new member with an
    /// empty data directory that joins and is promoted ([`crate::member_change`]).
    MemberReplace,
}

pub const ALL_FAULTS: [Fault; 11] = [
    Fault::PartitionLeader,
    Fault::PartitionHalves,
    Fault::PartitionBridge,
    Fault::PartitionOneWay,
    Fault::KillOne,
    Fault::KillLeader,
    Fault::KillMinority,
    Fault::PauseLeader,
    Fault::RollingRestart,
    Fault::ClockSkew,
    Fault::MemberReplace,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionBridge => "partition-bridge",
            Fault::PartitionOneWay => "partition-one-way",
            Fault::KillOne => "kill-one",
            Fault::KillLeader => "kill-leader",
            Fault::KillMinority => "kill-minority",
            Fault::PauseLeader => "pause-leader",
            Fault::RollingRestart => "rolling-restart",
            Fault::ClockSkew => "clock-skew",
            Fault::MemberReplace => "member-replace",
        }
    }

    pub fn parse(s: &str) -> Result<Fault> {
        match ALL_FAULTS.iter().find(|f| f.name() == s) {
            Some(f) => Ok(*f),
            None => bail!(
                "unknown fault {s:?}; known: {}",
                ALL_FAULTS.map(|f| f.name()).join(", ")
            ),
        }
    }
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineEntry {
    pub fault: Fault,
    pub start_ns: u64,
    pub end_ns: u64,
    /// What was done, to whom.
    pub detail: String,
    /// Observations showing it was in effect (rules installed, process state, leaders).
    pub evidence: String,
}

/// Settings of the nemesis.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    pub faults: Vec<Fault>,
    /// Quiet time between faults.
    pub quiet: (Duration, Duration),
    /// How long a fault is held.
    pub hold: (Duration, Duration),
}

pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub histories: Vec<Arc<Recorder>>,
    pub config: NemesisConfig,
    pub rng: ChaCha8Rng,
    pub stop: Arc<AtomicBool>,
    /// Status of every member (short deadlines: a partitioned member must not stall a fault).
    pub status: Client,
    pub runtime: tokio::runtime::Runtime,
    pub timeline: Vec<TimelineEntry>,
    ids: HashMap<u64, usize>,
}

/// Who leads, as far as the members that answer agree (highest term wins).
///
/// Unlike `raftkv_client::leader::agreed_leader` this does not wait for every member: during
/// a fault some never answer, and the nemesis only needs its best guess to pick a victim.
pub async fn find_leader(status: &Client, ids: &mut HashMap<u64, usize>) -> Option<usize> {
    let mut best: Option<(u64, u64)> = None;
    for (i, state) in poll_states(status).await.into_iter().enumerate() {
        if let Ok(s) = state {
            ids.insert(s.member_id, i);
            if s.leader != 0 && best.is_none_or(|(t, _)| s.term > t) {
                best = Some((s.term, s.leader));
            }
        }
    }
    best.and_then(|(_, l)| ids.get(&l).copied())
}

/// Deadlines of the nemesis's Status calls.
pub const STATUS_TIMEOUTS: Timeouts = Timeouts {
    dial: Duration::from_millis(700),
    call: Duration::from_millis(700),
};

impl Nemesis {
    pub fn new(
        cluster: Arc<Mutex<Cluster>>,
        histories: Vec<Arc<Recorder>>,
        config: NemesisConfig,
        rng: ChaCha8Rng,
        stop: Arc<AtomicBool>,
    ) -> Result<Nemesis> {
        let endpoints: Vec<String> = {
            let c = lock(&cluster);
            (0..c.len()).map(|i| c.endpoint(i)).collect()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let status = {
            let _guard = runtime.enter();
            Client::new(&endpoints, STATUS_TIMEOUTS)?
        };
        Ok(Nemesis {
            cluster,
            histories,
            config,
            rng,
            stop,
            status,
            runtime,
            timeline: Vec::new(),
            ids: HashMap::new(),
        })
    }

    fn leader(&mut self) -> Option<usize> {
        let (status, ids) = (&self.status, &mut self.ids);
        self.runtime.block_on(find_leader(status, ids))
    }

    fn now(&self) -> u64 {
        self.histories.first().map_or(0, |h| h.now())
    }

    fn note(&self, text: &str) -> u64 {
        note_all(&self.histories, text)
    }

    /// Sleeps up to `d`, returning early (false) if the run is stopping.
    fn pause_for(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
        true
    }

    fn between(&mut self, range: (Duration, Duration)) -> Duration {
        if range.1 <= range.0 {
            return range.0;
        }
        let ms = self
            .rng
            .gen_range(range.0.as_millis() as u64..=range.1.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// Runs faults until stopped; everything is healed when it returns.
    pub fn run(mut self) -> Vec<TimelineEntry> {
        while !self.stop.load(Ordering::Relaxed) {
            let quiet = self.between(self.config.quiet);
            if !self.pause_for(quiet) {
                break;
            }
            let Some(&fault) = self.config.faults.choose(&mut self.rng) else {
                break;
            };
            if let Err(e) = self.inject(fault) {
                self.note(&format!("error {}: {e:#}", fault.name()));
            }
        }
        if let Err(e) = lock(&self.cluster).heal_all() {
            self.note(&format!("error healing: {e:#}"));
        }
        self.timeline
    }

    fn members_except(&self, n: usize, out: &[usize]) -> Vec<usize> {
        (0..n).filter(|i| !out.contains(i)).collect()
    }

    /// Injects one fault, holds it, heals it, and appends it to the timeline.
    fn inject(&mut self, fault: Fault) -> Result<()> {
        let n = lock(&self.cluster).len();
        let hold = self.between(self.config.hold);
        let leader_before = self.leader();
        let leader = leader_before.unwrap_or_else(|| self.rng.gen_range(0..n));
        let mut evidence = String::new();
        let detail;
        let start;
        match fault {
            Fault::PartitionLeader
            | Fault::PartitionHalves
            | Fault::PartitionBridge
            | Fault::PartitionOneWay => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                let cuts: Vec<(usize, usize, bool)> = match fault {
                    Fault::PartitionLeader => self
                        .members_except(n, &[leader])
                        .into_iter()
                        .map(|o| (leader, o, true))
                        .collect(),
                    Fault::PartitionHalves => {
                        let minority = &order[..(n - 1) / 2];
                        let majority = &order[(n - 1) / 2..];
                        minority
                            .iter()
                            .flat_map(|&a| majority.iter().map(move |&b| (a, b, true)))
                            .collect()
                    }
                    Fault::PartitionBridge => {
                        // order[0] is the bridge; the rest split in two sides.
                        let rest = &order[1..];
                        let (left, right) = rest.split_at(rest.len() / 2);
                        left.iter()
                            .flat_map(|&a| right.iter().map(move |&b| (a, b, true)))
                            .collect()
                    }
                    _ => self
                        .members_except(n, &[leader])
                        .into_iter()
                        .map(|o| (leader, o, false))
                        .collect(),
                };
                {
                    let c = lock(&self.cluster);
                    for &(a, b, both) in &cuts {
                        if both {
                            c.net.cut(a, b)?;
                        } else {
                            c.net.drop_from(a, b)?;
                        }
                    }
                    let rules: Vec<String> = (0..n)
                        .map(|i| format!("{}:{}", c.name(i), c.net.rule_count(i).unwrap_or(0)))
                        .collect();
                    evidence.push_str(&format!("drop rules {}", rules.join(" ")));
                    let names = |i: usize| c.name(i).to_string();
                    detail = cuts
                        .iter()
                        .map(|&(a, b, both)| {
                            format!(
                                "{}{}{}",
                                names(a),
                                if both { "<x>" } else { "<-x-" },
                                names(b)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                }
                start = self.note(&format!("start {} {detail}", fault.name()));
                self.pause_for(hold);
                let during = self.leader();
                evidence.push_str(&format!("; leader during: {}", self.member_name(during)));
                lock(&self.cluster).net.heal()?;
            }
            Fault::KillOne | Fault::KillLeader | Fault::KillMinority => {
                let victims: Vec<usize> = match fault {
                    Fault::KillLeader => vec![leader],
                    Fault::KillOne => vec![self.rng.gen_range(0..n)],
                    _ => {
                        let mut order: Vec<usize> = (0..n).collect();
                        order.shuffle(&mut self.rng);
                        order.truncate((n - 1) / 2);
                        order
                    }
                };
                detail = self.names(&victims);
                {
                    let mut c = lock(&self.cluster);
                    for &v in &victims {
                        c.kill(v)?;
                    }
                    let dead = victims.iter().filter(|&&v| !c.is_running(v)).count();
                    evidence.push_str(&format!("{dead}/{} not running", victims.len()));
                }
                start = self.note(&format!("start {} {detail}", fault.name()));
                self.pause_for(hold);
                let mut c = lock(&self.cluster);
                for &v in &victims {
                    c.restart(v)?;
                }
            }
            Fault::PauseLeader => {
                detail = self.names(&[leader]);
                let election = lock(&self.cluster).election_timeout();
                {
                    let mut c = lock(&self.cluster);
                    c.pause(leader);
                }
                start = self.note(&format!("start {} {detail}", fault.name()));
                let hold = hold.max(election * 3);
                self.pause_for(Duration::from_millis(200));
                let state = lock(&self.cluster).proc_state(leader);
                evidence.push_str(&format!("process state {state:?}"));
                self.pause_for(hold);
                let during = self.leader();
                evidence.push_str(&format!("; leader during: {}", self.member_name(during)));
                lock(&self.cluster).resume(leader);
            }
            Fault::RollingRestart => {
                detail = "all, one at a time".to_string();
                start = self.note(&format!("start {} {detail}", fault.name()));
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                let mut rejoined = 0;
                for v in order {
                    {
                        let mut c = lock(&self.cluster);
                        c.kill(v)?;
                        c.restart(v)?;
                    }
                    // Wait (bounded) until the restarted member answers and knows a leader.
                    let deadline = Instant::now() + Duration::from_secs(15);
                    while Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
                        let member = self.status.only(v);
                        let knows = self.runtime.block_on(async {
                            matches!(member.status().await, Ok(s) if s.leader != 0)
                        });
                        if knows {
                            rejoined += 1;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                evidence.push_str(&format!("{rejoined}/{n} rejoined with a leader"));
            }
            Fault::ClockSkew => {
                let fast_follower = self.rng.gen_bool(0.5) && n > 1;
                let (victim, rate) = if fast_follower {
                    let others = self.members_except(n, &[leader]);
                    (*others.choose(&mut self.rng).unwrap_or(&0), 4.0)
                } else {
                    (leader, 0.25)
                };
                detail = format!("{} clock rate x{rate}", self.names(&[victim]));
                lock(&self.cluster).set_clock_rate(victim, rate)?;
                start = self.note(&format!("start {} {detail}", fault.name()));
                self.pause_for(hold);
                let during = self.leader();
                evidence.push_str(&format!("leader during: {}", self.member_name(during)));
                lock(&self.cluster).set_clock_rate(victim, 1.0)?;
            }
            Fault::MemberReplace => {
                // The leader a third of the time: it must hand over after removing itself.
                let victim = if self.rng.gen_bool(1.0 / 3.0) {
                    leader
                } else {
                    *self
                        .members_except(n, &[leader])
                        .choose(&mut self.rng)
                        .unwrap_or(&leader)
                };
                let as_learner = self.rng.gen_bool(0.5);
                let histories = self.histories.clone();
                let note = |text: &str| note_all(&histories, text);
                let (done, at) = self.runtime.block_on(crate::member_change::replace(
                    &self.cluster,
                    victim,
                    as_learner,
                    note,
                ))?;
                detail = done.detail;
                evidence.push_str(&done.evidence);
                start = at;
            }
        }
        let end = self.note(&format!("end {}", fault.name()));
        evidence.push_str(&format!(
            "; leader before: {}",
            self.member_name(leader_before)
        ));
        self.timeline.push(TimelineEntry {
            fault,
            start_ns: start,
            end_ns: end.max(self.now()),
            detail,
            evidence,
        });
        Ok(())
    }

    fn names(&self, members: &[usize]) -> String {
        let c = lock(&self.cluster);
        members
            .iter()
            .map(|&i| c.name(i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn member_name(&self, m: Option<usize>) -> String {
        match m {
            Some(i) => self.names(&[i]),
            None => "none".into(),
        }
    }
}

/// Records a nemesis event in every history; returns its time.
fn note_all(histories: &[Arc<Recorder>], text: &str) -> u64 {
    let mut t = 0;
    for h in histories {
        t = h.record(|time| lincheck::jsonl::TxnEvent::Nemesis {
            time,
            fault: text.to_string(),
        });
    }
    t
}

/// Counts of each fault in a timeline.
pub fn fault_counts(timeline: &[TimelineEntry]) -> BTreeMap<Fault, usize> {
    let mut counts = BTreeMap::new();
    for e in timeline {
        *counts.entry(e.fault).or_insert(0) += 1;
    }
    counts
}

/// Locks the cluster even if a panicking thread poisoned it (teardown must still happen).
pub fn lock(c: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}
