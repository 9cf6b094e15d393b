//! The `lease` workload: grant `--leases` leases, keep them alive over `--streams`
//! keep-alive streams for the run's duration (or `--total` keep-alives), then revoke them
//! all. Reports each phase's throughput, latency and errors and, given the members' pids
//! (members on this machine), the CPU each member spent per grant, keep-alive and revoke
//! and its resident memory per live lease.
//!
//! A keep-alive stream is answered in order by both etcd and raftkv (one request at a
//! time per stream), so a stream is a closed loop of `--window` requests in flight; the
//! streams are the concurrency. Answers are matched to requests by lease ID, so an
//! out-of-order answer would still be timed right.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};
use raftkv_client::endpoint::connect;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::args::{BenchArgs, LeaseArgs};
use crate::driver::DIAL_TIMEOUT;
use crate::report::{self, Latency};
use crate::schedule::Schedule;

/// Linux reports process CPU time in /proc in units of USER_HZ, which the kernel ABI fixes
/// at 100 per second whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// One phase's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub ok: u64,
    pub errors: u64,
    /// Failed requests per gRPC code name (`Timeout`: no answer within the deadline).
    pub errors_by_code: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// Successful requests per second of the phase.
    pub throughput: f64,
    pub latency: Latency,
}

impl Phase {
    fn new(
        hist: &Histogram<u64>,
        errors_by_code: BTreeMap<String, u64>,
        elapsed: Duration,
    ) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        Phase {
            ok: hist.len(),
            errors: errors_by_code.values().sum(),
            errors_by_code,
            elapsed_s,
            throughput: if elapsed_s > 0.0 {
                hist.len() as f64 / elapsed_s
            } else {
                0.0
            },
            latency: Latency::from_histogram(hist),
        }
    }
}

/// What one member (`--member-pid`) spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberUsage {
    pub pid: u32,
    /// CPU time (user + system) per successful request of each phase, in µs.
    pub cpu_us_per_grant: f64,
    pub cpu_us_per_keepalive: f64,
    pub cpu_us_per_revoke: f64,
    /// Resident memory before the grants and with every lease granted.
    pub rss_before_kib: u64,
    pub rss_granted_kib: u64,
    /// (granted - before) / leases granted, in bytes.
    pub rss_bytes_per_lease: f64,
}

/// What a lease run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseReport {
    pub workload: String,
    pub endpoints: Vec<String>,
    pub conns: usize,
    /// Concurrent granters and revokers.
    pub clients: usize,
    pub leases: usize,
    pub ttl_s: i64,
    pub streams: usize,
    pub window: usize,
    /// `--rate` of the keep-alives (0: as fast as the streams go).
    pub rate: f64,
    pub grant: Phase,
    pub keepalive: Phase,
    /// Keep-alives answered with TTL <= 0: the lease was gone (never expected here).
    pub keepalive_lost: u64,
    pub revoke: Phase,
    pub members: Vec<MemberUsage>,
    /// CPU time (user + system) this client spent per keep-alive answered, in µs: on a
    /// machine it shares with the members, the client's cost limits the rate too.
    #[serde(default)]
    pub client_cpu_us_per_keepalive: f64,
}

/// CPU ticks (user + system) a process used so far, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))
}

/// utime + stime (fields 14 and 15) of a stat line; the command name (field 2) may hold
/// spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// µs of CPU per request from a tick difference.
fn cpu_us_per(ticks: u64, requests: u64) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    ticks as f64 / USER_HZ * 1e6 / requests as f64
}

fn count_error(errors: &mut BTreeMap<String, u64>, code: String) {
    *errors.entry(code).or_insert(0) += 1;
}

/// Grants `n` leases with `clients` concurrent unary calls; returns the IDs granted.
async fn grant_all(
    channels: &[Channel],
    clients: usize,
    n: usize,
    ttl: i64,
    timeout: Duration,
) -> Result<(Vec<i64>, Phase)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut lease = LeaseClient::new(channels[c % channels.len()].clone());
            let next = next.clone();
            tokio::spawn(async move {
                let (mut ids, mut hist, mut errors) =
                    (Vec::new(), report::new_histogram(), BTreeMap::new());
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let began = Instant::now();
                    let call = lease.lease_grant(LeaseGrantRequest { ttl, id: 0 });
                    match tokio::time::timeout(timeout, call).await {
                        Ok(Ok(r)) => {
                            report::record(&mut hist, began.elapsed());
                            ids.push(r.into_inner().id);
                        }
                        Ok(Err(s)) => count_error(&mut errors, format!("{:?}", s.code())),
                        Err(_) => count_error(&mut errors, "Timeout".into()),
                    }
                }
                (ids, hist, errors)
            })
        })
        .collect();
    let (mut ids, mut hist, mut errors) = (Vec::new(), report::new_histogram(), BTreeMap::new());
    for t in tasks {
        let (i, h, e) = t.await.context("a granter panicked")?;
        ids.extend(i);
        hist.add(&h).context("merging histograms")?;
        for (code, k) in e {
            *errors.entry(code).or_insert(0) += k;
        }
    }
    Ok((ids, Phase::new(&hist, errors, start.elapsed())))
}

/// Revokes `ids` with `clients` concurrent unary calls.
async fn revoke_all(
    channels: &[Channel],
    clients: usize,
    ids: Arc<Vec<i64>>,
    timeout: Duration,
) -> Result<Phase> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut lease = LeaseClient::new(channels[c % channels.len()].clone());
            let (next, ids) = (next.clone(), ids.clone());
            tokio::spawn(async move {
                let (mut hist, mut errors) = (report::new_histogram(), BTreeMap::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&id) = ids.get(i) else { break };
                    let began = Instant::now();
                    let call = lease.lease_revoke(LeaseRevokeRequest { id });
                    match tokio::time::timeout(timeout, call).await {
                        Ok(Ok(_)) => report::record(&mut hist, began.elapsed()),
                        Ok(Err(s)) => count_error(&mut errors, format!("{:?}", s.code())),
                        Err(_) => count_error(&mut errors, "Timeout".into()),
                    }
                }
                (hist, errors)
            })
        })
        .collect();
    let (mut hist, mut errors) = (report::new_histogram(), BTreeMap::new());
    for t in tasks {
        let (h, e) = t.await.context("a revoker panicked")?;
        hist.add(&h).context("merging histograms")?;
        for (code, k) in e {
            *errors.entry(code).or_insert(0) += k;
        }
    }
    Ok(Phase::new(&hist, errors, start.elapsed()))
}

struct StreamResult {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    lost: u64,
}

/// One keep-alive stream: renews its leases round-robin, `window` in flight, on the shared
/// schedule, until the schedule ends and every answer is in (or one is overdue).
///
/// The client shares the cores with the members it measures, so each keep-alive costs it
/// as little as it can while every one is still sent, checked and timed: the requests in
/// flight are a queue in send order (both systems answer a stream in order; an answer out
/// of order is still matched by ID), and one timer per stream, moved forward as requests
/// are answered, watches the oldest one's deadline (a timer made and dropped per request
/// costs two trips through the runtime's timer lock; moving one later costs none).
async fn keep_alive_stream(
    channel: Channel,
    leases: Vec<i64>,
    window: usize,
    schedule: Arc<Schedule>,
    timeout: Duration,
) -> StreamResult {
    let mut result = StreamResult {
        hist: report::new_histogram(),
        errors: BTreeMap::new(),
        lost: 0,
    };
    let (tx, rx) = mpsc::channel(window + 1);
    // (lease, sent at) of each request not answered yet, oldest first.
    let mut in_flight: VecDeque<(i64, Instant)> = VecDeque::with_capacity(window + 1);
    let mut next_lease = 0usize;
    let mut send = |tx: &mpsc::Sender<LeaseKeepAliveRequest>,
                    in_flight: &mut VecDeque<(i64, Instant)>| {
        let id = leases[next_lease % leases.len()];
        next_lease += 1;
        let now = Instant::now();
        in_flight.push_back((id, now));
        (tx.try_send(LeaseKeepAliveRequest { id }).is_ok(), now)
    };
    // The first request goes out with the call: etcd (grpc-go) sends the response headers
    // only with its first response, and the call waits for them.
    let Some(first) = schedule.next_slot() else {
        return result;
    };
    if let Some(at) = first {
        tokio::time::sleep_until(at.into()).await;
    }
    let (_, first_sent) = send(&tx, &mut in_flight);
    let opened = tokio::time::timeout(
        timeout,
        LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(rx)),
    )
    .await;
    let mut responses = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => {
            count_error(&mut result.errors, format!("{:?}", s.code()));
            return result;
        }
        Err(_) => {
            count_error(&mut result.errors, "Timeout".into());
            return result;
        }
    };
    // When the oldest request in flight is overdue.
    let overdue = tokio::time::sleep_until((first_sent + timeout).into());
    tokio::pin!(overdue);
    let mut pending = schedule.next_slot();
    loop {
        if pending.is_none() && in_flight.is_empty() {
            break;
        }
        let can_send = pending.is_some() && in_flight.len() < window;
        // A slot due now (no rate, or behind schedule) needs no timer.
        let send_at = pending.flatten().filter(|at| *at > Instant::now());
        let send_due = async move {
            if let Some(at) = send_at {
                tokio::time::sleep_until(at.into()).await;
            }
        };
        tokio::select! {
            biased;
            answer = responses.message(), if !in_flight.is_empty() => {
                match answer {
                    Ok(Some(r)) => {
                        let asked = match in_flight.front() {
                            Some((id, _)) if *id == r.id => in_flight.pop_front(),
                            _ => in_flight
                                .iter()
                                .position(|(id, _)| *id == r.id)
                                .and_then(|i| in_flight.remove(i)),
                        };
                        match asked {
                            Some((_, at)) if r.ttl > 0 => report::record(&mut result.hist, at.elapsed()),
                            Some(_) => result.lost += 1,
                            None => {
                                // Counted as an answer to the oldest request, so the
                                // stream goes on.
                                in_flight.pop_front();
                                count_error(&mut result.errors, "UnaskedAnswer".into());
                            }
                        }
                        if let Some((_, at)) = in_flight.front() {
                            overdue.as_mut().reset((*at + timeout).into());
                        }
                    }
                    Ok(None) => {
                        count_error(&mut result.errors, "StreamClosed".into());
                        break;
                    }
                    Err(s) => {
                        count_error(&mut result.errors, format!("{:?}", s.code()));
                        break;
                    }
                }
            }
            _ = &mut overdue, if !in_flight.is_empty() => {
                *result.errors.entry("Timeout".into()).or_insert(0) += in_flight.len() as u64;
                break;
            }
            _ = send_due, if can_send => {
                let was_idle = in_flight.is_empty();
                let (sent, at) = send(&tx, &mut in_flight);
                if !sent {
                    count_error(&mut result.errors, "StreamClosed".into());
                    break;
                }
                if was_idle {
                    overdue.as_mut().reset((at + timeout).into());
                }
                pending = schedule.next_slot();
            }
        }
    }
    result
}

/// Keeps `ids` alive over `streams` streams spread over the channels.
async fn keep_alive_all(
    channels: &[Channel],
    ids: &[i64],
    args: &BenchArgs,
    l: &LeaseArgs,
) -> Result<(Phase, u64)> {
    let mut per_stream: Vec<Vec<i64>> = vec![Vec::new(); l.streams];
    for (i, id) in ids.iter().enumerate() {
        per_stream[i % l.streams].push(*id);
    }
    let schedule = Arc::new(Schedule::new(args.stop_at(), args.rate));
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let tasks: Vec<_> = per_stream
        .into_iter()
        .enumerate()
        .filter(|(_, leases)| !leases.is_empty())
        .map(|(i, leases)| {
            let window = l.window.min(leases.len());
            tokio::spawn(keep_alive_stream(
                channels[i % channels.len()].clone(),
                leases,
                window,
                schedule.clone(),
                timeout,
            ))
        })
        .collect();
    let (mut hist, mut errors, mut lost) = (report::new_histogram(), BTreeMap::new(), 0);
    for t in tasks {
        let r = t.await.context("a keep-alive stream panicked")?;
        hist.add(&r.hist).context("merging histograms")?;
        for (code, k) in r.errors {
            *errors.entry(code).or_insert(0) += k;
        }
        lost += r.lost;
    }
    Ok((Phase::new(&hist, errors, schedule.elapsed()), lost))
}

/// Runs the lease workload.
pub async fn run(args: &BenchArgs, l: &LeaseArgs) -> Result<LeaseReport> {
    let urls = args.endpoint_urls();
    let mut channels = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        channels.push(connect(&urls[i % urls.len()], DIAL_TIMEOUT).await?);
    }
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let pids = &l.member_pid;
    let ticks = || {
        pids.iter()
            .map(|&p| cpu_ticks(p))
            .collect::<Result<Vec<_>>>()
    };
    let rss = || pids.iter().map(|&p| rss_kib(p)).collect::<Result<Vec<_>>>();

    let rss_before = rss()?;
    let t0 = ticks()?;
    let (ids, grant) = grant_all(&channels, args.clients, l.leases, l.ttl, timeout).await?;
    let t1 = ticks()?;
    let rss_granted = rss()?;
    let own_before = cpu_ticks(std::process::id())?;
    let (keepalive, keepalive_lost) = keep_alive_all(&channels, &ids, args, l).await?;
    let own_after = cpu_ticks(std::process::id())?;
    let client_cpu_us_per_keepalive = cpu_us_per(own_after - own_before, keepalive.ok);
    let t2 = ticks()?;
    let revoke = revoke_all(&channels, args.clients, Arc::new(ids.clone()), timeout).await?;
    let t3 = ticks()?;

    let members = pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| MemberUsage {
            pid,
            cpu_us_per_grant: cpu_us_per(t1[i] - t0[i], grant.ok),
            cpu_us_per_keepalive: cpu_us_per(t2[i] - t1[i], keepalive.ok),
            cpu_us_per_revoke: cpu_us_per(t3[i] - t2[i], revoke.ok),
            rss_before_kib: rss_before[i],
            rss_granted_kib: rss_granted[i],
            rss_bytes_per_lease: if ids.is_empty() {
                0.0
            } else {
                (rss_granted[i] as f64 - rss_before[i] as f64) * 1024.0 / ids.len() as f64
            },
        })
        .collect();
    Ok(LeaseReport {
        workload: "lease".into(),
        endpoints: urls,
        conns: args.conns,
        clients: args.clients,
        leases: l.leases,
        ttl_s: l.ttl,
        streams: l.streams,
        window: l.window,
        rate: args.rate,
        grant,
        keepalive,
        keepalive_lost,
        revoke,
        members,
        client_cpu_us_per_keepalive,
    })
}

impl LeaseReport {
    pub fn to_text(&self) -> String {
        let line = |name: &str, p: &Phase| {
            let l = &p.latency;
            let mut s = format!(
                "  {name:<11} {} ok, {} errors in {:.3} s: {:.1}/s, p50 {:.3} ms p99 {:.3} ms max {:.3} ms\n",
                p.ok, p.errors, p.elapsed_s, p.throughput, l.p50_ms, l.p99_ms, l.max_ms
            );
            for (code, n) in &p.errors_by_code {
                s.push_str(&format!("    {code}: {n}\n"));
            }
            s
        };
        let mut s = format!(
            "Summary (lease; {} leases, TTL {} s, {} clients and {} keep-alive streams (window {}) over {} conns to {}, rate {}):\n",
            self.leases,
            self.ttl_s,
            self.clients,
            self.streams,
            self.window,
            self.conns,
            self.endpoints.join(","),
            if self.rate > 0.0 {
                format!("{}/s", self.rate)
            } else {
                "unlimited".into()
            },
        );
        s.push_str(&line("Grant:", &self.grant));
        s.push_str(&line("Keep-alive:", &self.keepalive));
        s.push_str(&format!(
            "  Keep-alives answered TTL 0 (lease gone): {}\n",
            self.keepalive_lost
        ));
        s.push_str(&format!(
            "  Client CPU µs per keep-alive: {:.1}\n",
            self.client_cpu_us_per_keepalive
        ));
        s.push_str(&line("Revoke:", &self.revoke));
        for m in &self.members {
            s.push_str(&format!(
                "  Member {}: CPU µs per grant {:.1}, per keep-alive {:.1}, per revoke {:.1}; RSS {} KiB -> {} KiB with the leases: {:.0} B per lease\n",
                m.pid,
                m.cpu_us_per_grant,
                m.cpu_us_per_keepalive,
                m.cpu_us_per_revoke,
                m.rss_before_kib,
                m.rss_granted_kib,
                m.rss_bytes_per_lease
            ));
        }
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(ok_ms: &[u64], errors: &[(&str, u64)]) -> Phase {
        let mut h = report::new_histogram();
        for ms in ok_ms {
            report::record(&mut h, Duration::from_millis(*ms));
        }
        let errors = errors.iter().map(|(c, n)| (c.to_string(), *n)).collect();
        Phase::new(&h, errors, Duration::from_secs(2))
    }

    fn sample() -> LeaseReport {
        LeaseReport {
            workload: "lease".into(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            conns: 2,
            clients: 4,
            leases: 3,
            ttl_s: 60,
            streams: 2,
            window: 1,
            rate: 0.0,
            grant: phase(&[1, 2, 3], &[]),
            keepalive: phase(&[1; 10], &[("Timeout", 2)]),
            keepalive_lost: 1,
            revoke: phase(&[4, 5, 6], &[("NotFound", 1)]),
            members: vec![MemberUsage {
                pid: 7,
                cpu_us_per_grant: 10.0,
                cpu_us_per_keepalive: 2.5,
                cpu_us_per_revoke: 11.0,
                rss_before_kib: 1000,
                rss_granted_kib: 1003,
                rss_bytes_per_lease: 1024.0,
            }],
            client_cpu_us_per_keepalive: 3.5,
        }
    }

    #[test]
    fn a_phase_counts_requests_errors_and_rate() {
        let p = phase(&[1; 10], &[("Timeout", 2), ("Unavailable", 1)]);
        assert_eq!((p.ok, p.errors), (10, 3));
        assert!((p.throughput - 5.0).abs() < 1e-9);
        assert!((p.latency.p99_ms - 1.0).abs() < 0.01);
    }

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let line = "42 (raftkv node 1) S 1 42 42 0 -1 4194560 10 0 0 0 250 50 0 0 20 0";
        assert_eq!(parse_cpu_ticks(line), Some(300));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
        // 300 ticks = 3 s of CPU over 1,000 requests: 3,000 µs each.
        assert!((cpu_us_per(300, 1000) - 3000.0).abs() < 1e-9);
        assert_eq!(cpu_us_per(300, 0), 0.0);
    }

    #[test]
    fn json_has_every_phase_and_member_figure_and_round_trips() {
        let r = sample();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for phase in ["grant", "keepalive", "revoke"] {
            for field in ["ok", "errors", "errors_by_code", "elapsed_s", "throughput"] {
                assert!(v[phase].get(field).is_some(), "missing {phase}.{field}");
            }
            assert!(v[phase]["latency"].get("p99_ms").is_some());
        }
        for field in [
            "cpu_us_per_grant",
            "cpu_us_per_keepalive",
            "cpu_us_per_revoke",
            "rss_bytes_per_lease",
        ] {
            assert!(v["members"][0].get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["keepalive"]["errors_by_code"]["Timeout"], 2);
        let back: LeaseReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn text_names_each_phase_and_the_member_costs() {
        let t = sample().to_text();
        for needle in [
            "Grant:",
            "Keep-alive:",
            "Revoke:",
            "Timeout: 2",
            "NotFound: 1",
            "TTL 0 (lease gone): 1",
            "per keep-alive 2.5",
            "1024 B per lease",
            "Client CPU µs per keep-alive: 3.5",
        ] {
            assert!(t.contains(needle), "missing {needle} in\n{t}");
        }
    }
}
