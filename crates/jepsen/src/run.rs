//! One run: start the cluster, drive the clients and the nemesis for a while, heal, converge,
//! read everything back from every member, check, and write the run directory:
//!
//! - `history-lock.json`: the lock workload's holdings and fenced appends (`crate::lock`);
//! - `history-register.jsonl`, `history-append.jsonl`: the histories (lincheck formats, nemesis
//!   events included), checkable again with `lincheck --format etcd-jsonl|append-jsonl`;
//! - `timeline.json`: every fault with its start/end and evidence it was in effect;
//! - `summary.json` and `verdict.txt`: verdicts, op counts, rate, durability and hash checks;
//! - `report-*.txt|svg`: the checker's witness when something is wrong;
//! - `member-m*.log`: the members' logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lincheck::cli::{check_file, Format};
use lincheck::elle::MicroOp;
use lincheck::models::etcd::{EtcdInput, EtcdOutput};
use lincheck::{CheckOptions, Verdict};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::append::{self, Appends};
use raftkv_client::leader::poll_states;
use raftkv_client::{Client, Timeouts};

use crate::client::{EtcdClient, Outcome};
use crate::cluster::{Cluster, MemberFaults, Timing};
use crate::lock::{self, Locks};
use crate::lock_check::{self, LockReport};
use crate::nemesis::{self, fault_counts, lock, Fault, Nemesis, NemesisConfig};
use crate::netns::Net;
use crate::recorder::{OpCounts, ProcessIds, Recorder};
use crate::register::{self, Registers};
use crate::watch;

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub name: String,
    /// The run directory (created; must not hold an earlier run).
    pub dir: PathBuf,
    pub member_binary: PathBuf,
    pub members: usize,
    /// Client traffic duration.
    pub duration: Duration,
    pub faults: Vec<Fault>,
    pub register_clients: usize,
    pub register_slots: usize,
    pub append_clients: usize,
    pub append_keys: usize,
    /// Watchers following the register keys from revision 1 (`crate::watch`).
    pub watch_clients: usize,
    /// Clients contending for one lock with fenced appends (`crate::lock`).
    pub lock_clients: usize,
    pub seed: u64,
    /// Run the deliberately broken build (reads without ReadIndex).
    pub stale_reads: bool,
    /// Members keep written data in memory until fsync: every kill loses un-fsynced writes.
    pub lose_unsynced: bool,
    /// The first member breaks its watch responses (the watch checker's negative control).
    pub watch_fault: Option<crate::faults::WatchFault>,
    pub timing: Timing,
    pub client_deadline: Duration,
    pub quiet: (Duration, Duration),
    pub hold: (Duration, Duration),
    pub check_budget: Duration,
}

impl RunConfig {
    /// Defaults: 3 members, 5 register + 3 append clients, faults every 5–10 s.
    pub fn new(name: &str, dir: &Path, member_binary: &Path) -> RunConfig {
        RunConfig {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            member_binary: member_binary.to_path_buf(),
            members: 3,
            duration: Duration::from_secs(30),
            faults: nemesis::ALL_FAULTS.to_vec(),
            register_clients: 5,
            register_slots: 3,
            append_clients: 3,
            append_keys: 4,
            watch_clients: 2,
            lock_clients: 3,
            seed: 1,
            stale_reads: false,
            lose_unsynced: false,
            watch_fault: None,
            timing: Timing::default(),
            client_deadline: Duration::from_millis(1500),
            quiet: (Duration::from_secs(2), Duration::from_secs(4)),
            hold: (Duration::from_secs(3), Duration::from_secs(5)),
            check_budget: Duration::from_secs(60),
        }
    }
}

/// The outcome of one run (also written as `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub name: String,
    pub dir: PathBuf,
    pub seed: u64,
    pub members: usize,
    pub stale_reads_build: bool,
    pub lose_unsynced: bool,
    pub duration_s: f64,
    /// Register history: linearizability verdict (per key + revision order).
    pub register_verdict: String,
    pub register_summary: String,
    /// List-append history: "valid" or the anomalies found.
    pub append_verdict: String,
    pub register_ops: OpCounts,
    pub append_txns: OpCounts,
    /// Watchers: "valid" or the violations `crate::watch::check` found.
    pub watch_verdict: String,
    /// Events the watchers received (all of them), and the streams they opened.
    pub watch_events: usize,
    pub watch_streams: u64,
    /// The watchers' progress requests: how many were answered, and how fast.
    pub watch_progress: crate::watch_progress::ProgressStats,
    /// The lock workload: fenced appends (ok / fenced out or failed / unknown) and the
    /// checker's findings.
    pub lock_appends: OpCounts,
    pub lock: LockReport,
    /// Completed (ok) operations per second of traffic.
    pub ok_rate: f64,
    pub faults: BTreeMap<String, usize>,
    /// Acknowledged writes missing from the final reads of some member.
    pub lost_writes: Vec<String>,
    /// Append elements whose transaction failed but that some member shows.
    pub unexpected_elements: Vec<String>,
    /// Acknowledged appends checked against the final reads.
    pub acknowledged_appends: usize,
    pub hashes_equal: bool,
    pub hashes: Vec<String>,
    /// Whether every member answered the final reads.
    pub final_reads_complete: bool,
}

impl RunReport {
    /// All checks hold: linearizable, no anomaly, nothing lost, members agree.
    pub fn passed(&self) -> bool {
        self.register_verdict == Verdict::Linearizable.to_string()
            && self.append_verdict == "valid"
            && self.watch_verdict == "valid"
            && self.lock.passed()
            && self.lost_writes.is_empty()
            && self.unexpected_elements.is_empty()
            && self.hashes_equal
            && self.final_reads_complete
    }

    pub fn one_line(&self) -> String {
        format!(
            "{}: register {} ({} ok/{} fail/{} info), append {} ({} ok/{} fail/{} info), \
             watch {} ({} events, {} streams, {}), {}, {:.0} ok ops/s, faults {:?}, lost {}, \
             unexpected {}, hashes equal {}",
            self.name,
            self.register_verdict,
            self.register_ops.ok,
            self.register_ops.fail,
            self.register_ops.indeterminate,
            self.append_verdict,
            self.append_txns.ok,
            self.append_txns.fail,
            self.append_txns.indeterminate,
            self.watch_verdict,
            self.watch_events,
            self.watch_streams,
            self.watch_progress.one_line(),
            self.lock.one_line(),
            self.ok_rate,
            self.faults,
            self.lost_writes.len(),
            self.unexpected_elements.len(),
            self.hashes_equal
        )
    }
}

/// Runs one history end to end. Errors are harness failures (cluster never came up, ...), not
/// verdicts; everything created is torn down either way.
pub fn run(config: &RunConfig) -> Result<RunReport> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let net = Net::create(config.members)?;
    let cluster = Cluster::start(
        net,
        &config.member_binary,
        &config.dir,
        config.timing,
        MemberFaults {
            stale_reads: config.stale_reads,
            lose_unsynced: config.lose_unsynced,
            watch: config.watch_fault,
        },
    )?;
    let cluster = Arc::new(Mutex::new(cluster));
    let result = rt.block_on(drive(config, cluster.clone()));
    if result.is_err() {
        let c = lock(&cluster);
        for i in 0..c.len() {
            eprintln!("--- {} log tail ---\n{}", c.name(i), c.log_tail(i, 15));
        }
    }
    drop(rt);
    drop(cluster);
    result
}

fn endpoints(cluster: &Mutex<Cluster>) -> Vec<String> {
    let c = lock(cluster);
    (0..c.len()).map(|i| c.endpoint(i)).collect()
}

/// Polls until some member reports a leader and every member answers with the same applied
/// index as the leader's commit (the cluster converged).
async fn wait_converged(eps: &[String], deadline: Duration, all: bool) -> Result<()> {
    let until = Instant::now() + deadline;
    let status = Client::new(eps, nemesis::STATUS_TIMEOUTS)?;
    let mut last = String::new();
    while Instant::now() < until {
        let states = poll_states(&status).await;
        let answered: Vec<_> = states.iter().flatten().collect();
        let leader = answered.iter().map(|s| s.leader).find(|&l| l != 0);
        let applied: HashSet<u64> = answered.iter().map(|s| s.applied_index).collect();
        last = format!(
            "{} of {} answered, leader {leader:?}, applied {applied:?}",
            answered.len(),
            eps.len()
        );
        let everyone = answered.len() == eps.len();
        if leader.is_some() && (!all || (everyone && applied.len() == 1)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("cluster did not converge within {deadline:?}: {last}")
}

async fn drive(config: &RunConfig, cluster: Arc<Mutex<Cluster>>) -> Result<RunReport> {
    let eps = endpoints(&cluster);
    wait_converged(&eps, Duration::from_secs(30), false)
        .await
        .context("no leader after start")?;
    let start = Instant::now();
    let processes = Arc::new(ProcessIds::default());
    let regs = Arc::new(Registers::new(
        Arc::new(Recorder::new(start)),
        processes.clone(),
        config.register_slots,
    ));
    let appends = Arc::new(Appends::new(
        Arc::new(Recorder::new(start)),
        processes.clone(),
        config.append_keys,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let mut seeds = ChaCha8Rng::seed_from_u64(config.seed);
    let mut next_rng = || ChaCha8Rng::seed_from_u64(rand::Rng::gen(&mut seeds));

    let mut register_tasks = Vec::new();
    for i in 0..config.register_clients {
        let client = EtcdClient::new(&eps[i % eps.len()], config.client_deadline)?;
        register_tasks.push(tokio::spawn(register::client_loop(
            regs.clone(),
            client,
            next_rng(),
            stop.clone(),
        )));
    }
    let mut append_tasks = Vec::new();
    for i in 0..config.append_clients {
        let client = EtcdClient::new(&eps[(i + 1) % eps.len()], config.client_deadline)?;
        append_tasks.push(tokio::spawn(append::client_loop(
            appends.clone(),
            client,
            next_rng(),
            stop.clone(),
        )));
    }
    let locks = Arc::new(Locks::new(Arc::new(Recorder::new(start))));
    let mut lock_tasks = Vec::new();
    for i in 0..config.lock_clients {
        lock_tasks.push(tokio::spawn(lock::client_loop(
            locks.clone(),
            i,
            eps[i % eps.len()].clone(),
            config.client_deadline,
            next_rng(),
            stop.clone(),
        )));
    }
    let final_revision = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut watch_tasks = Vec::new();
    for i in 0..config.watch_clients {
        watch_tasks.push(tokio::spawn(watch::watcher_loop(
            format!("watcher{i}"),
            eps[(i + 2) % eps.len()].clone(),
            stop.clone(),
            final_revision.clone(),
            regs.acknowledged_revision.clone(),
            WATCH_CATCH_UP,
        )));
    }
    // The nemesis records its faults into both histories.
    let histories = vec![regs.history.clone(), appends.history.clone()];
    let nemesis = Nemesis::new(
        cluster.clone(),
        histories.clone(),
        NemesisConfig {
            faults: config.faults.clone(),
            quiet: config.quiet,
            hold: config.hold,
        },
        next_rng(),
        stop.clone(),
    )?;
    let nemesis_thread = std::thread::spawn(move || nemesis.run());

    tokio::time::sleep(config.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut register_ops = OpCounts::default();
    for t in register_tasks {
        register_ops.add(t.await?);
    }
    let mut append_txns = OpCounts::default();
    for t in append_tasks {
        append_txns.add(t.await?);
    }
    let mut lock_appends = OpCounts::default();
    for t in lock_tasks {
        lock_appends.add(t.await?);
    }
    let traffic = start.elapsed();
    let timeline = nemesis_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the nemesis thread panicked"))?;
    // The nemesis healed everything on its way out.
    lock(&cluster).heal_all()?;
    wait_converged(&eps, Duration::from_secs(40), true)
        .await
        .context("after healing")?;

    let finals = final_reads(&eps, &regs, &appends, config.client_deadline).await;
    // The watchers stop once they have delivered everything up to the final revision.
    final_revision.store(
        current_revision(&eps)
            .await
            .context("reading the final revision")?,
        Ordering::Relaxed,
    );
    let mut watchers = Vec::new();
    for t in watch_tasks {
        watchers.push(t.await?);
    }
    std::fs::write(
        config.dir.join("history-watch.json"),
        serde_json::to_string(&watchers)?,
    )?;
    let watch_violations = match finals.registers.first() {
        Some(reads) => {
            let store: watch::FinalState = reads
                .iter()
                .map(|(k, (v, rev))| (k.clone(), v.clone().map(|v| (v, *rev as i64))))
                .collect();
            watch::check(&watchers, &store)
        }
        None => vec!["no final reads to compare the watchers with".to_string()],
    };
    if !watch_violations.is_empty() {
        std::fs::write(
            config.dir.join("report-watch.txt"),
            watch_violations.join("\n"),
        )?;
    }
    let sessions = crate::register::lock(&locks.sessions).clone();
    std::fs::write(
        config.dir.join("history-lock.json"),
        serde_json::to_string(&sessions)?,
    )?;
    let lock_report = if config.lock_clients > 0 {
        lock_check::check(
            &sessions,
            &final_lock_lists(&eps, config.client_deadline).await,
        )
    } else {
        lock_check::check(&[], &[])
    };
    if !lock_report.passed() {
        std::fs::write(
            config.dir.join("report-lock.txt"),
            lock_report.violations.join("\n"),
        )?;
    }
    let (lost_writes, unexpected_elements, acknowledged_appends) =
        durability(&regs, &appends, &finals);
    let (hashes_equal, hashes) = compare_hashes(&eps).await;

    let reg_path = config.dir.join("history-register.jsonl");
    let app_path = config.dir.join("history-append.jsonl");
    std::fs::write(&reg_path, regs.history.text())?;
    std::fs::write(&app_path, appends.history.text())?;
    std::fs::write(
        config.dir.join("timeline.json"),
        serde_json::to_string_pretty(&timeline)?,
    )?;

    let options = CheckOptions {
        budget: config.check_budget,
        minimise: true,
    };
    let reg_verdict = check_file(Format::EtcdJsonl, &reg_path, &options)?;
    let app_verdict = check_file(Format::AppendJsonl, &app_path, &options)?;
    for (v, name) in [(&reg_verdict, "register"), (&app_verdict, "append")] {
        let text = v.report();
        if !text.is_empty() {
            std::fs::write(config.dir.join(format!("report-{name}.txt")), &text)?;
        }
        if let Some(violation) = v.result().and_then(|r| r.violation.as_ref()) {
            lincheck::report::write_svg(violation, &config.dir.join(format!("report-{name}.svg")))?;
        }
    }
    let register_summary = match reg_verdict.result() {
        Some(r) => format!(
            "{} keys, largest {} ops, unknown keys {:?}, {:.2}s",
            r.partitions,
            r.largest_partition,
            r.unknown_keys,
            r.elapsed.as_secs_f64()
        ),
        None => String::new(),
    };
    let secs = traffic.as_secs_f64().max(0.001);
    let report = RunReport {
        name: config.name.clone(),
        dir: config.dir.clone(),
        seed: config.seed,
        members: config.members,
        stale_reads_build: config.stale_reads,
        lose_unsynced: config.lose_unsynced,
        duration_s: secs,
        register_verdict: reg_verdict.verdict.to_string(),
        register_summary,
        append_verdict: app_verdict.summary(),
        register_ops,
        append_txns,
        watch_verdict: match watch_violations.len() {
            0 => "valid".to_string(),
            n => format!("{n} violation(s), first: {}", watch_violations[0]),
        },
        watch_events: watchers.iter().map(|w| w.events.len()).sum(),
        watch_streams: watchers.iter().map(|w| w.streams).sum(),
        watch_progress: crate::watch_progress::stats(&watchers),
        ok_rate: (register_ops.ok + append_txns.ok + lock_appends.ok) as f64 / secs,
        lock_appends,
        lock: lock_report,
        faults: fault_counts(&timeline)
            .into_iter()
            .map(|(f, n)| (f.name().to_string(), n))
            .collect(),
        lost_writes,
        unexpected_elements,
        acknowledged_appends,
        hashes_equal,
        hashes,
        final_reads_complete: finals.complete,
    };
    std::fs::write(
        config.dir.join("summary.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(
        config.dir.join("verdict.txt"),
        format!(
            "{}\n{}\n",
            if report.passed() { "PASS" } else { "FAIL" },
            report.one_line()
        ),
    )?;
    Ok(report)
}

/// How long watchers may take, once the final revision is known, to deliver everything up to it.
const WATCH_CATCH_UP: Duration = Duration::from_secs(30);

/// The cluster's current revision, from a linearizable read on any member.
async fn current_revision(eps: &[String]) -> Result<i64> {
    let client = Client::new(eps, nemesis::STATUS_TIMEOUTS)?;
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let read = client
            .range(proto::etcdserverpb::RangeRequest {
                key: watch::PREFIX.as_bytes().to_vec().into(),
                count_only: true,
                ..Default::default()
            })
            .await;
        match read {
            Ok(r) => return Ok(r.header.map_or(0, |h| h.revision)),
            Err(e) if Instant::now() >= until => bail!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What the final reads saw on each member.
struct Finals {
    /// Per member: key → (value, mod_revision).
    registers: Vec<HashMap<String, (Option<String>, u64)>>,
    /// Per member: key → list.
    lists: Vec<HashMap<String, Vec<u64>>>,
    complete: bool,
}

/// Reads every key from every member (recorded into the histories, so the checkers see them
/// too), retrying failed reads for a bounded time.
async fn final_reads(
    eps: &[String],
    regs: &Registers,
    appends: &Appends,
    deadline: Duration,
) -> Finals {
    let keys = regs.keys();
    let mut finals = Finals {
        registers: Vec::new(),
        lists: Vec::new(),
        complete: true,
    };
    for ep in eps {
        let mut seen = HashMap::new();
        let mut lists = HashMap::new();
        let Ok(mut client) = EtcdClient::new(ep, deadline) else {
            finals.complete = false;
            continue;
        };
        for key in &keys {
            let until = Instant::now() + Duration::from_secs(15);
            loop {
                let process = regs.processes.next();
                match regs.run_op(&mut client, process, key, EtcdInput::Get).await {
                    Outcome::Ok(EtcdOutput::Get {
                        value,
                        mod_revision,
                        ..
                    }) => {
                        seen.insert(key.clone(), (value, mod_revision));
                        break;
                    }
                    _ if Instant::now() < until => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    _ => {
                        finals.complete = false;
                        break;
                    }
                }
            }
        }
        let plan: Vec<(String, bool)> = appends.keys.iter().map(|k| (k.clone(), false)).collect();
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let process = appends.processes.next();
            match appends.run_txn(&mut client, process, &plan).await {
                Outcome::Ok(ops) => {
                    for op in ops {
                        if let MicroOp::Read {
                            key,
                            list: Some(list),
                        } = op
                        {
                            lists.insert(key, list);
                        }
                    }
                    break;
                }
                _ if Instant::now() < until => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => {
                    finals.complete = false;
                    break;
                }
            }
        }
        finals.registers.push(seen);
        finals.lists.push(lists);
    }
    finals
}

/// The lock workload's list as each member has it (`None`: unreadable or not a list),
/// retrying each member's read for a bounded time.
async fn final_lock_lists(eps: &[String], deadline: Duration) -> Vec<Option<Vec<(u64, u64)>>> {
    let mut lists = Vec::new();
    for ep in eps {
        let mut list = None;
        if let Ok(mut client) = EtcdClient::new(ep, deadline) {
            let until = Instant::now() + Duration::from_secs(15);
            loop {
                match client.get(lock::LIST_KEY).await {
                    Outcome::Ok(read) => {
                        list = lock::parse_list(read.value.unwrap_or_default().as_bytes());
                        break;
                    }
                    _ if Instant::now() < until => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    _ => break,
                }
            }
        }
        lists.push(list);
    }
    lists
}

/// Every acknowledged write must be reflected on every member: a register key holds a value
/// at least as new as its newest acknowledged write (unless a delete was attempted on it), and
/// every acknowledged append is in its list. Appends whose transaction failed must be nowhere.
fn durability(
    regs: &Registers,
    appends: &Appends,
    finals: &Finals,
) -> (Vec<String>, Vec<String>, usize) {
    let mut lost = Vec::new();
    let mut unexpected = Vec::new();
    let acked = crate::register::lock(&regs.acked_puts).clone();
    let deleted = crate::register::lock(&regs.maybe_deleted).clone();
    for (m, seen) in finals.registers.iter().enumerate() {
        for (key, &rev) in &acked {
            match seen.get(key) {
                Some((Some(_), mod_rev)) if *mod_rev >= rev => {}
                Some((None, _)) if deleted.contains(key) => {}
                other => lost.push(format!(
                    "member {}: {key} acknowledged at revision {rev}, final read {other:?}",
                    m + 1
                )),
            }
        }
    }
    let acked_appends = crate::register::lock(&appends.acked).clone();
    let failed_appends = crate::register::lock(&appends.failed).clone();
    for (m, lists) in finals.lists.iter().enumerate() {
        let sets: HashMap<&String, HashSet<u64>> = lists
            .iter()
            .map(|(k, l)| (k, l.iter().copied().collect()))
            .collect();
        let has = |k: &String, e: u64| sets.get(k).is_some_and(|s| s.contains(&e));
        for (k, e) in &acked_appends {
            if !has(k, *e) {
                lost.push(format!(
                    "member {}: acknowledged append {e} to {k} missing",
                    m + 1
                ));
            }
        }
        for (k, e) in &failed_appends {
            if has(k, *e) {
                unexpected.push(format!(
                    "member {}: failed append {e} to {k} present",
                    m + 1
                ));
            }
        }
    }
    (lost, unexpected, acked_appends.len())
}

/// HashKV of every member at one common revision (the highest all have applied).
async fn compare_hashes(eps: &[String]) -> (bool, Vec<String>) {
    let timeouts = Timeouts {
        dial: Duration::from_secs(3),
        call: Duration::from_secs(3),
    };
    let Ok(all) = Client::new(eps, timeouts) else {
        return (false, vec!["bad endpoint".into()]);
    };
    // hash at revision 0 = the member's current revision; converged members share it.
    let mut hashes = Vec::new();
    let mut distinct = HashSet::new();
    for (i, member) in all.each().iter().enumerate() {
        match member.hash_kv(0).await {
            Ok(r) => {
                let (hash, revision) = (r.hash, u64::try_from(r.hash_revision).unwrap_or(0));
                hashes.push(format!(
                    "m{}: hash {hash:08x} at revision {revision}",
                    i + 1
                ));
                distinct.insert((hash, revision));
            }
            Err(e) => {
                hashes.push(format!("m{}: error {:?}: {}", i + 1, e.code(), e.message()));
                distinct.insert((0, u64::MAX - i as u64));
            }
        }
    }
    (distinct.len() == 1, hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workloads() -> (Registers, Appends) {
        let start = Instant::now();
        let ids = Arc::new(ProcessIds::default());
        (
            Registers::new(Arc::new(Recorder::new(start)), ids.clone(), 1),
            Appends::new(Arc::new(Recorder::new(start)), ids, 1),
        )
    }

    #[test]
    fn durability_flags_lost_and_unexpected_writes_only() {
        let (regs, appends) = workloads();
        crate::register::lock(&regs.acked_puts).insert("r0-0".into(), 10);
        crate::register::lock(&appends.acked).push(("a0".into(), 5));
        crate::register::lock(&appends.failed).push(("a0".into(), 6));
        let good = Finals {
            registers: vec![HashMap::from([("r0-0".into(), (Some("v".into()), 12))])],
            lists: vec![HashMap::from([("a0".into(), vec![1, 5])])],
            complete: true,
        };
        let (lost, unexpected, acked) = durability(&regs, &appends, &good);
        assert!(
            lost.is_empty() && unexpected.is_empty(),
            "{lost:?} {unexpected:?}"
        );
        assert_eq!(acked, 1);

        // A member whose register went back to an older write, and whose list lost the
        // acknowledged element but shows the failed one.
        let bad = Finals {
            registers: vec![HashMap::from([("r0-0".into(), (Some("old".into()), 9))])],
            lists: vec![HashMap::from([("a0".into(), vec![1, 6])])],
            complete: true,
        };
        let (lost, unexpected, _) = durability(&regs, &appends, &bad);
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert_eq!(unexpected.len(), 1, "{unexpected:?}");

        // An absent key is only acceptable if a delete was attempted on it.
        let absent = Finals {
            registers: vec![HashMap::from([("r0-0".into(), (None, 0))])],
            lists: vec![HashMap::from([("a0".into(), vec![5])])],
            complete: true,
        };
        assert_eq!(durability(&regs, &appends, &absent).0.len(), 1);
        crate::register::lock(&regs.maybe_deleted).insert("r0-0".into());
        assert!(durability(&regs, &appends, &absent).0.is_empty());
    }
}
