//! A real Prometheus server (Debian's `prometheus` package, installed by the test through
//! `scripts/ensure-packages.sh` when missing) scrapes a 3-member cluster every second with
//! raftkv's alert rules loaded. Through its query API: every member reports
//! `etcd_server_has_leader == 1`, the WAL fsync histogram moves under writes, and the rules
//! loaded healthy. Bounded: every wait polls with a deadline; Prometheus is killed on drop.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use raftkv_client::local_cluster::free_loopback_ports;

/// The Prometheus process; killed (and reaped) when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn ensure_prometheus() {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/ensure-packages.sh"))
        .arg("prometheus:prometheus")
        .status()
        .expect("run scripts/ensure-packages.sh");
    assert!(
        status.success(),
        "cannot install Debian's prometheus package"
    );
}

fn start_prometheus(dir: &Path, targets: &[String]) -> Prometheus {
    let rules = repo_root().join("deploy/monitoring/raftkv-alerts.yaml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: raftkv\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_loopback_ports(1).unwrap()[0];
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start prometheus");
    Prometheus { child, port }
}

/// GET on Prometheus's HTTP API; the body, or None while it is not up.
fn api_get(port: u16, path_and_query: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Percent-encode a PromQL expression for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The values of an instant query's vector result (`"value":[ts,"v"]` each).
fn query(port: u16, promql: &str) -> Option<Vec<f64>> {
    let body = api_get(port, &format!("/api/v1/query?query={}", encode(promql)))?;
    if !body.contains("\"status\":\"success\"") {
        return None;
    }
    let mut values = Vec::new();
    for part in body.split("\"value\":[").skip(1) {
        let v = part.split(",\"").nth(1)?.split('"').next()?;
        values.push(v.parse().ok()?);
    }
    Some(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_member() {
    ensure_prometheus();
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", c.local.member(i).client_port))
        .collect();
    let prom = start_prometheus(dir.path(), &targets);
    let port = prom.port;
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // Every member up and reporting a leader, as Prometheus sees it.
    let up = poll(
        "3 members with a leader in Prometheus",
        Duration::from_secs(60),
        || async move {
            let v = query(port, "etcd_server_has_leader == 1")?;
            (v.len() == 3).then_some(v)
        },
    )
    .await;
    assert!(up.iter().all(|&v| v == 1.0), "{up:?}\n{}", log());
    assert_eq!(
        query(port, "sum(etcd_server_is_leader)"),
        Some(vec![1.0]),
        "{}",
        log()
    );

    // The fsync histogram moves under writes, on every member.
    let before = query(port, "sum(etcd_disk_wal_fsync_duration_seconds_count)")
        .and_then(|v| v.first().copied())
        .expect("fsync count");
    for i in 0..30 {
        put_retrying(&c, leader, &format!("p{i}"), "v").await;
    }
    let after = poll(
        "fsync count moves in Prometheus",
        Duration::from_secs(30),
        || async move {
            let v = query(port, "sum(etcd_disk_wal_fsync_duration_seconds_count)")?;
            let now = *v.first()?;
            (now >= before + 30.0).then_some(now)
        },
    )
    .await;
    assert!(after >= before + 30.0);
    let moved = poll(
        "every member's fsyncs",
        Duration::from_secs(30),
        || async move {
            let v = query(
                port,
                "increase(etcd_disk_wal_fsync_duration_seconds_count[1m]) > 0",
            )?;
            (v.len() == 3).then_some(v)
        },
    )
    .await;
    assert_eq!(moved.len(), 3);
    let puts = query(
        port,
        "sum(grpc_server_handled_total{grpc_method=\"Put\",grpc_code=\"OK\"})",
    )
    .unwrap();
    assert!(puts[0] >= 30.0, "{puts:?}");

    // Every member measures its round trip to each of its two peers (the probe runs on
    // each connection from the moment it is up).
    let probed = poll(
        "every peer round trip",
        Duration::from_secs(30),
        || async move {
            let v = query(port, "etcd_network_peer_round_trip_time_seconds_count > 0")?;
            (v.len() == 6).then_some(v)
        },
    )
    .await;
    assert_eq!(probed.len(), 6);
    let slowest = query(
        port,
        "max(etcd_network_peer_round_trip_time_seconds_sum / etcd_network_peer_round_trip_time_seconds_count)",
    )
    .unwrap();
    assert!(
        slowest[0] > 0.0 && slowest[0] < 1.0,
        "mean loopback round trip {slowest:?} s"
    );

    // The alert rules loaded, evaluate without errors, and none fires on a healthy cluster.
    let rules = poll("rules evaluated", Duration::from_secs(30), || async move {
        let body = api_get(port, "/api/v1/rules")?;
        (body.matches("\"health\":\"ok\"").count() >= 6).then_some(body)
    })
    .await;
    assert!(!rules.contains("\"health\":\"err\""), "{rules}");
    let firing = api_get(port, "/api/v1/alerts").unwrap();
    assert!(!firing.contains("\"state\":\"firing\""), "{firing}");
}
