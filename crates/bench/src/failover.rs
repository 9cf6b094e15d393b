//! Leader-failover probe: kills a process (the leader) and measures the time until a write
//! succeeds on any remaining endpoint.
//!
//! The connections are opened before the kill so that dialing is not counted. One prober
//! per endpoint keeps retrying a put with a short deadline; the first success ends the
//! measurement, so whichever member becomes leader (or forwards first) is observed.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use serde::Serialize;

use crate::driver::connect;

/// Deadline of one probe put; short so a put stuck on a dead leader is retried soon.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after a failed probe that returned at once, so a refusing member is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

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
        clients.push((url.clone(), KvClient::new(connect(url).await?)));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant, u64)>();
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    let killed_at = Instant::now();
    if !status.success() {
        bail!("kill -9 {pid} failed ({status})");
    }
    let mut probers = Vec::new();
    for (url, mut kv) in clients {
        let tx = tx.clone();
        probers.push(tokio::spawn(async move {
            let mut failed = 0u64;
            loop {
                let req = PutRequest {
                    key: Bytes::from_static(b"raftkv-bench-failover"),
                    value: Bytes::from(url.clone()),
                    ..Default::default()
                };
                let began = Instant::now();
                match tokio::time::timeout(PROBE_TIMEOUT, kv.put(req)).await {
                    Ok(Ok(_)) => {
                        let _ = tx.send((url, Instant::now(), failed));
                        return;
                    }
                    _ => failed += 1,
                }
                if began.elapsed() < RETRY_PAUSE {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
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
