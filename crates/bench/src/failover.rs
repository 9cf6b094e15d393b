//! Leader-failover probe: kills a process (the leader) and measures the time until a write
//! succeeds on any remaining endpoint.
//!
//! The connections are opened before the kill so that dialing is not counted. The clock
//! starts just before `kill -9` is spawned, so the figure can only err high (by the
//! fork+exec of `kill`, about a millisecond). Each endpoint then gets a fresh put every
//! [`ATTEMPT_INTERVAL`], without waiting for the earlier ones: a put can hang until its
//! deadline (etcd holds a proposal forwarded to a dead leader until the request times out),
//! and retrying only after that deadline would round the result up to it. With overlapping
//! attempts the first success is observed within one interval of the cluster accepting
//! writes again, whichever member becomes leader (or forwards first).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use serde::Serialize;

use raftkv_client::endpoint::connect;

use crate::driver::DIAL_TIMEOUT;

/// A new probe put per endpoint this often: the resolution of the measurement.
const ATTEMPT_INTERVAL: Duration = Duration::from_millis(10);
/// Deadline of one probe put. Long enough that a put merely waiting for the new leader's
/// first commit is not abandoned; the overlapping attempts make its length irrelevant to
/// the result.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many probe puts outstanding per endpoint (`ATTEMPT_TIMEOUT /
/// ATTEMPT_INTERVAL`, so the cap only bites if puts hang for their whole deadline), well
/// under the 200 concurrent streams an HTTP/2 server grants by default.
const MAX_IN_FLIGHT: usize = 100;

/// The outcome of one failover trial.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    pub killed_pid: u32,
    pub failover_ms: f64,
    pub first_success_endpoint: String,
    pub failed_probes: u64,
}

/// Kills `pid` with SIGKILL, then probes `urls` until one put succeeds.
pub async fn run(urls: &[String], pid: u32, give_up_after: Duration) -> Result<FailoverResult> {
    let mut clients = Vec::new();
    for url in urls {
        clients.push((
            url.clone(),
            KvClient::new(connect(url, DIAL_TIMEOUT).await?),
        ));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant, u64)>();
    let killed_at = Instant::now();
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -9 {pid} failed ({status})");
    }
    let mut probers = Vec::new();
    for (url, kv) in clients {
        let tx = tx.clone();
        probers.push(tokio::spawn(async move {
            let failed = Arc::new(AtomicU64::new(0));
            let mut attempts = tokio::task::JoinSet::new();
            let mut every = tokio::time::interval(ATTEMPT_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // Reap finished attempts: what is left in the set is in flight.
                while attempts.try_join_next().is_some() {}
                if attempts.len() >= MAX_IN_FLIGHT {
                    continue;
                }
                let (mut kv, url, tx, failed) =
                    (kv.clone(), url.clone(), tx.clone(), failed.clone());
                attempts.spawn(async move {
                    let req = PutRequest {
                        key: Bytes::from_static(b"raftkv-bench-failover"),
                        value: Bytes::from(url.clone()),
                        ..Default::default()
                    };
                    match tokio::time::timeout(ATTEMPT_TIMEOUT, kv.put(req)).await {
                        Ok(Ok(_)) => {
                            let _ = tx.send((url, Instant::now(), failed.load(Ordering::Relaxed)));
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        }));
    }
    drop(tx);
    let outcome = tokio::time::timeout(give_up_after, rx.recv()).await;
    for p in &probers {
        p.abort();
    }
    match outcome {
        Ok(Some((endpoint, at, failed_probes))) => Ok(FailoverResult {
            killed_pid: pid,
            failover_ms: at.duration_since(killed_at).as_secs_f64() * 1000.0,
            first_success_endpoint: endpoint,
            failed_probes,
        }),
        _ => bail!(
            "no write succeeded within {:?} after killing {pid}",
            give_up_after
        ),
    }
}
