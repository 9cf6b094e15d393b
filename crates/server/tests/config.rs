//! A bad configuration is a one-line error and a non-zero exit, before anything is served.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_raftkv-member");

fn run(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(args)
        .args(["--data-dir", dir.path().join("d").to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inconsistent_initial_cluster_fails_with_one_line() {
    let (ok, err) = run(&[
        "--name",
        "x",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:1",
        "--initial-cluster",
        "a=http://127.0.0.1:1",
        "--listen-client-urls",
        "http://127.0.0.1:0",
        "--listen-peer-urls",
        "http://127.0.0.1:0",
    ]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no member named \"x\""), "{err}");
}

#[test]
fn unbindable_address_fails() {
    // Ports below 32768: port 0 would land in the kernel's client-port range.
    let ports = raftkv_client::local_cluster::free_loopback_ports(2).unwrap();
    let taken = std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    let url = format!("http://{}", taken.local_addr().unwrap());
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let (ok, err) = run(&["--listen-client-urls", &url, "--listen-peer-urls", &peer]);
    assert!(!ok);
    assert!(err.contains("cannot listen on"), "{err}");
}

#[test]
fn dry_run_accepts_a_good_configuration_and_rejects_a_bad_flag() {
    let (ok, err) = run(&[
        "--dry-run",
        "--listen-client-urls",
        "http://127.0.0.1:0",
        "--listen-peer-urls",
        "http://127.0.0.1:0",
    ]);
    assert!(ok, "{err}");
    let (ok, err) = run(&["--dry-run", "--heartbeat-interval", "abc"]);
    assert!(!ok && err.contains("heartbeat-interval"), "{err}");
}

// ---- etcd compatibility: config file, ignored and refused flags, milestones, IDs ----

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::member::Member;

use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::{MemberListRequest, RangeRequest};
use raftkv_client::endpoint::connect;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A serializable MemberList from the member at `url`.
fn member_list(url: &str) -> proto::etcdserverpb::MemberListResponse {
    runtime().block_on(async {
        let ch = connect(url, Duration::from_secs(5)).await.unwrap();
        ClusterClient::new(ch)
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await
            .unwrap()
            .into_inner()
    })
}

/// The member IDs etcd gives these peer URLs and token: sha1 of the sorted URLs and the
/// token, first 8 bytes (computed independently of the server's code, from the formula).
fn etcd_member_id(peer: &str, token: &str) -> u64 {
    // etcd 3.4.23 itself printed these for `--initial-advertise-peer-urls
    // http://localhost:20991 --initial-cluster-token new`; server::ids reproduces them and
    // is unit-tested against them, so here the member's answer is checked against it.
    server::ids::member_id(&[peer.to_string()], token)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn config_file_configures_the_member_and_other_flags_are_ignored() {
    let file = "\
# etcd YAML
name: 'from-file'
data-dir: {dir}/data
listen-client-urls: {client}
advertise-client-urls: {client}
listen-peer-urls: {peer}
initial-advertise-peer-urls: {peer}
initial-cluster: from-file={peer}
initial-cluster-token: file-token
heartbeat-interval: 20
election-timeout: 200
enable-v2: true
max-wals: 3
";
    let mut m = Member::start(
        &["--config-file", "{dir}/conf.yml", "--name", "from-flags"],
        &[
            ("ETCD_NAME", "from-env"),
            ("RAFTKV_SNAPSHOT_COUNT", "not-a-number"),
        ],
        Some(file),
    );
    let log = m.wait_ready();
    // etcd's milestones, each once, in etcd's order.
    for line in [
        "published local member to cluster through raft",
        "enabled capabilities for version 3.4",
        "ready to serve client requests",
    ] {
        assert_eq!(count(&log, line), 1, "{line}:\n{log}");
    }
    assert!(log.find("published").unwrap() < log.find("enabled capabilities").unwrap());
    // One line per ignored flag, and where the configuration came from.
    assert_eq!(count(&log, "--enable-v2 is ignored"), 1, "{log}");
    assert_eq!(count(&log, "--max-wals is ignored"), 1, "{log}");
    assert_eq!(count(&log, "loaded server configuration from"), 1, "{log}");

    let members = member_list(&m.client_url);
    assert_eq!(members.members.len(), 1);
    let me = &members.members[0];
    // The file's name and token, not the flag's or the environment's.
    assert_eq!(me.name, "from-file");
    let peer_url = me.peer_ur_ls[0].clone();
    assert_eq!(me.id, etcd_member_id(&peer_url, "file-token"));
    assert_eq!(
        members.header.unwrap().cluster_id,
        server::ids::cluster_id(&[me.id])
    );
}

#[test]
fn etcd_environment_and_repeated_flags_work_like_etcd() {
    let mut m = Member::start(
        &[
            "--name",
            "first",
            "--name",
            "env-member",
            "--listen-client-urls",
            "{client}",
            "--listen-peer-urls",
            "{peer}",
            "--initial-advertise-peer-urls",
            "{peer}",
            "--initial-cluster",
            "env-member={peer}",
            "--experimental-initial-corrupt-check",
            "--strict-reconfig-check=false",
            "--quota-backend-bytes",
            "65536",
        ],
        &[
            ("ETCD_DATA_DIR", "{dir}/env-data"),
            ("ETCD_INITIAL_CLUSTER_TOKEN", "env-token"),
            ("ETCD_ELECTION_TIMEOUT", "300"),
            ("ETCD_HEARTBEAT_INTERVAL", "30"),
            ("ETCD_ENABLE_PPROF", "true"),
        ],
        None,
    );
    let log = m.wait_ready();
    assert!(Path::new(&m._dir.path().join("env-data")).is_dir(), "{log}");
    assert_eq!(count(&log, "--enable-pprof is ignored"), 1, "{log}");
    // Implemented (crate::corrupt_check); a new data dir has nothing to compare.
    assert_eq!(
        count(&log, "skipping the initial corruption check"),
        1,
        "{log}"
    );
    // Implemented since membership changes exist (crate::grpc::member_change).
    assert_eq!(count(&log, "--strict-reconfig-check"), 0, "{log}");
    // The quota is enforced (crate::quota), so it is not among the ignored flags.
    assert_eq!(count(&log, "--quota-backend-bytes"), 0, "{log}");
    let members = member_list(&m.client_url);
    let me = &members.members[0];
    assert_eq!(me.name, "env-member");
    assert_eq!(me.id, etcd_member_id(&me.peer_ur_ls[0], "env-token"));
}

#[test]
fn unsafe_or_unsupported_flags_are_refused() {
    for (flag, says) in [
        ("--unsafe-no-fsync", "--unsafe-no-fsync is not supported"),
        ("--proxy=on", "--proxy=on is not supported"),
        (
            "--discovery=http://127.0.0.1:1/x",
            "--discovery is not supported",
        ),
    ] {
        let (ok, err) = run(&[
            flag,
            "--listen-client-urls",
            "http://127.0.0.1:0",
            "--listen-peer-urls",
            "http://127.0.0.1:0",
        ]);
        assert!(!ok, "{flag} accepted");
        assert!(err.contains(says), "{flag}: {err}");
    }
    // etcd's wording (tests/etcd_flags.rs compares it with the real etcd's).
    let (ok, err) = run(&["--dry-run", "--no-such-flag"]);
    assert!(
        !ok && err.contains("flag provided but not defined: -no-such-flag"),
        "{err}"
    );
}

#[test]
fn a_malformed_config_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yml");
    std::fs::write(
        &path,
        "name: a\nsnapshot-count: 10\nlisten-client-url: http://x:1\n",
    )
    .unwrap();
    let (ok, err) = run(&["--dry-run", "--config-file", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("listen-client-url"),
        "{err}"
    );
}

#[test]
fn periodic_auto_compaction_compacts_old_history() {
    let mut m = Member::start(
        &[
            "--name",
            "c",
            "--data-dir",
            "{dir}/data",
            "--listen-client-urls",
            "{client}",
            "--listen-peer-urls",
            "{peer}",
            "--initial-advertise-peer-urls",
            "{peer}",
            "--initial-cluster",
            "c={peer}",
            "--heartbeat-interval",
            "20",
            "--election-timeout",
            "200",
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
        &[],
        None,
    );
    m.wait_ready();
    let url = m.client_url.clone();
    runtime().block_on(async {
        let ch = connect(&url, Duration::from_secs(5)).await.unwrap();
        let mut kv = proto::etcdserverpb::kv_client::KvClient::new(ch);
        let first = kv
            .put(common::put("k", "v1"))
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
        kv.put(common::put("k", "v2")).await.unwrap();
        // Within a few retention periods, the leader compacts past `first`.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = kv
                .range(RangeRequest {
                    key: b"k".to_vec().into(),
                    revision: first,
                    ..Default::default()
                })
                .await;
            match r {
                Err(s) if s.message().contains("required revision has been compacted") => break,
                Ok(_) => {}
                Err(s) => panic!("unexpected error {s:?}"),
            }
            // Writes keep the history moving, as in a live cluster.
            kv.put(common::put("k", "v")).await.unwrap();
            assert!(Instant::now() < deadline, "never compacted:\n{}", m.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(m.log().contains("completed auto compaction"));
}

#[test]
fn version_prints_and_exits() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("API Version: 3.4"), "{text}");
}
