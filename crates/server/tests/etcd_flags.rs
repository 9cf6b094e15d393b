//! etcd's command line, the parts issue 12 left: `unix://` client URLs, etcd's wording
//! for a bad flag (checked against the real etcd binary),
//! `--experimental-initial-corrupt-check`, and 3.5/3.6's `--max-learners`.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::member::Member;

const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Run etcdctl (v3 API) against one endpoint.
fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--dial-timeout",
            "5s",
            "--command-timeout",
            "10s",
        ])
        .args(args)
        .output()
        .expect("cannot run etcdctl")
}

fn stdout_ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP/1.1 request over a unix socket; returns the whole response (status line,
/// headers, body). `Connection: close` makes the server end it.
fn http_over_socket(path: &Path, method: &str, target: &str, body: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect to the socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The flags of a single-member cluster on `{client}` / `{peer}`, plus `extra`.
fn single_member<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--name",
        "u",
        "--data-dir",
        "{dir}/data",
        "--listen-peer-urls",
        "{peer}",
        "--initial-advertise-peer-urls",
        "{peer}",
        "--initial-cluster",
        "u={peer}",
        "--heartbeat-interval",
        "20",
        "--election-timeout",
        "200",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn a_unix_socket_serves_etcdctl_http_and_the_gateway_like_the_tcp_port() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    // A socket file left by a killed process: bound, then closed without removing it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut m = Member::start_in(
        dir,
        &single_member(&[
            "--listen-client-urls",
            "{client},unix://{dir}/c.sock",
            "--advertise-client-urls",
            "{client},unix://{dir}/c.sock",
        ]),
        &[],
        None,
    );
    let log = m.wait_ready();
    assert!(log.contains("removed a stale unix socket"), "{log}");
    let endpoint = format!("unix://{}", sock.display());

    // etcdctl over the socket, and the same data seen over TCP.
    stdout_ok("put", &etcdctl(&endpoint, &["put", "k", "over-unix"]));
    let got = stdout_ok("get", &etcdctl(&endpoint, &["get", "k"]));
    assert_eq!(got, "k\nover-unix\n");
    let got = stdout_ok("get via tcp", &etcdctl(&m.client_url, &["get", "k"]));
    assert_eq!(got, "k\nover-unix\n");
    // The advertised unix URL is in the member list.
    let list = stdout_ok("member list", &etcdctl(&endpoint, &["member", "list"]));
    assert!(list.contains(&endpoint), "{list}");

    // The HTTP endpoints and the JSON gateway.
    let health = http_over_socket(&sock, "GET", "/health", "");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""health":"true""#),
        "{health}"
    );
    // {"key": base64("k")} -> the value base64("over-unix").
    let range = http_over_socket(&sock, "POST", "/v3/kv/range", r#"{"key":"aw=="}"#);
    assert!(
        range.starts_with("HTTP/1.1 200") && range.contains("b3Zlci11bml4"),
        "{range}"
    );

    // A clean stop removes the socket file, as etcd's listener does.
    assert!(m.terminate().success(), "{}", m.log());
    assert!(!sock.exists(), "the socket file outlived the member");
}

/// `--max-learners` (and 3.5's `--experimental-max-learners`) bounds the learners
/// `member add --learner` may add, with etcd's error past it; the default is etcd's 1.
#[test]
fn max_learners_bounds_learner_additions() {
    for (flag, limit) in [
        (None, 1),
        (Some("--max-learners=2"), 2),
        (Some("--experimental-max-learners=0"), 0),
    ] {
        let mut extra = vec![
            "--listen-client-urls",
            "{client}",
            "--advertise-client-urls",
            "{client}",
        ];
        extra.extend(flag);
        let mut m = Member::start(&single_member(&extra), &[], None);
        m.wait_ready();
        let add = |i: usize| {
            etcdctl(
                &m.client_url,
                &[
                    "member",
                    "add",
                    &format!("learner-{i}"),
                    "--learner",
                    &format!("--peer-urls=http://127.0.0.1:{}", 1000 + i),
                ],
            )
        };
        for i in 0..limit {
            stdout_ok(&format!("{flag:?}: learner {i}"), &add(i));
        }
        let refused = add(limit);
        assert!(
            !refused.status.success(),
            "{flag:?}: learner {limit} was added"
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("etcdserver: too many learner members in cluster"),
            "{flag:?}: {stderr}"
        );
    }
}

#[test]
fn a_socket_that_cannot_be_created_stops_start_up_with_its_url() {
    let mut m = Member::start(
        &single_member(&[
            "--listen-client-urls",
            "{client},unix://{dir}/no-such-dir/c.sock",
        ]),
        &[],
        None,
    );
    let status = m.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let log = m.log();
    assert!(
        log.contains("cannot listen on unix://") && log.contains("no-such-dir/c.sock"),
        "{log}"
    );
    assert!(!log.contains("ready to serve"), "{log}");
}

// ---- etcd's wording for a bad command line ----

const ETCD: &str = "/usr/bin/etcd";

/// (first line of stderr, exit code) of `program args`, run in a scratch dir so a command
/// line that unexpectedly parsed cannot leave a data dir behind.
fn first_line_and_status(program: &str, args: &[&str]) -> (String, Option<i32>) {
    first_line_and_status_with(program, args, &[])
}

/// [`first_line_and_status`] with `env` set for the process.
fn first_line_and_status_with(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir.path())
        .env_remove("ETCD_NAME")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        stderr.lines().next().unwrap_or_default().to_string(),
        out.status.code(),
    )
}

#[test]
fn a_bad_flag_gets_the_real_etcds_first_line_and_exit_status() {
    for args in [
        &["--foo"][..],
        &["--foo=bar"],
        &["--heartbeat-interval=x"],
        &["--heartbeat-interval", "99999999999999999999999"],
        &["--snapshot-count=1.5"],
        &["--pre-vote=maybe"],
        &["--name"],
        &["--initial-cluster-state=bogus"],
        // Go's single-dash spellings (server::go_flags).
        &["-foo"],
        &["-heartbeat-interval", "x"],
        &["-snapshot-count", "1.5"],
        &["-pre-vote=maybe"],
        &["-name"],
    ] {
        let etcd = first_line_and_status(ETCD, args);
        let ours = first_line_and_status(common::BIN, args);
        // A line that says nothing would make the comparison vacuous.
        assert!(!etcd.0.is_empty(), "{args:?}: etcd printed nothing");
        assert_eq!(ours, etcd, "{args:?}");
        assert_eq!(etcd.1, Some(2), "{args:?}");
    }
    // etcd's usage text follows; ours names our program.
    let out = Command::new(common::BIN).arg("--foo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Usage:") && text.contains("raftkv-member [flags]"),
        "{text}"
    );
}

#[test]
fn a_malformed_etcd_variable_gets_the_real_etcds_words_and_status() {
    for (var, value) in [
        ("ETCD_HEARTBEAT_INTERVAL", "x"),
        ("ETCD_PRE_VOTE", "maybe"),
        ("ETCD_INITIAL_CLUSTER_STATE", "bogus"),
        ("ETCD_SNAPSHOT_COUNT", "99999999999999999999999"),
    ] {
        let (etcd_line, etcd_status) = first_line_and_status_with(ETCD, &[], &[(var, value)]);
        // etcd logs it through capnslog: "<date> <time> E | etcdmain: <message>".
        let etcd_msg = etcd_line
            .split_once("etcdmain: ")
            .map(|(_, m)| m.replace("'etcd --help'", "'raftkv-member --help'"))
            .unwrap_or_else(|| panic!("{var}: etcd said {etcd_line:?}"));
        let ours = first_line_and_status_with(common::BIN, &[], &[(var, value)]);
        assert_eq!(ours, (etcd_msg, etcd_status), "{var}={value}");
        assert_eq!(etcd_status, Some(1), "{var}");
    }
    // raftkv's own variable is named as written.
    let (line, status) =
        first_line_and_status_with(common::BIN, &[], &[("RAFTKV_HEARTBEAT_INTERVAL", "x")]);
    assert_eq!(
        (line.as_str(), status),
        (
            r#"error verifying flags, invalid value "x" for RAFTKV_HEARTBEAT_INTERVAL: parse error. See 'raftkv-member --help'."#,
            Some(1)
        )
    );
    // The command line wins over the variable, whose value is then not looked at.
    let out = Command::new(common::BIN)
        .args(["--heartbeat-interval", "100", "--version"])
        .env("ETCD_HEARTBEAT_INTERVAL", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_command_line_in_gos_single_dash_syntax_starts_a_member() {
    let mut m = Member::start(
        &[
            "-name",
            "dash",
            "-data-dir={dir}/data",
            "-listen-client-urls",
            "{client}",
            "--advertise-client-urls",
            "{client}",
            "-listen-peer-urls={peer}",
            "-initial-advertise-peer-urls",
            "{peer}",
            "-initial-cluster",
            "dash={peer}",
            "-quota-backend-bytes",
            "-1",
            "-pre-vote=false",
            "-experimental-initial-corrupt-check",
            "-heartbeat-interval",
            "20",
            "-election-timeout=200",
        ],
        &[],
        None,
    );
    m.wait_ready();
    assert!(m.dir().join("data").is_dir());
    let list = stdout_ok("member list", &etcdctl(&m.client_url, &["member", "list"]));
    assert!(list.contains(", dash, "), "{list}");
    stdout_ok("put", &etcdctl(&m.client_url, &["put", "k", "v"]));
}

// ---- --experimental-initial-corrupt-check ----

/// CRC-32 (IEEE), the checksum that closes an mvcc store image (mvcc::snapshot's format),
/// written out here so the test depends on the documented format, not on the code.
fn crc32_ieee(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrite the member's newest snapshot so that one stored value reads differently while
/// every file stays valid (the store image's checksum and the snapshot file's are
/// recomputed): the kind of damage only a comparison with the peers can find.
fn corrupt_a_stored_value(
    data_dir: &Path,
    member_id: u64,
    cluster_id: u64,
    from: &[u8],
    to: &[u8],
) {
    use std::sync::Arc;
    assert_eq!(from.len(), to.len());
    let opts = storage::StorageOptions::new(member_id, cluster_id);
    let (store, recovered) = storage::Storage::open(Arc::new(storage::RealFs), data_dir, &opts)
        .expect("open the stopped member's data dir");
    let snapshot = recovered
        .snapshot
        .expect("the member has a snapshot (--snapshot-count is small)");
    let mut data = snapshot.data.to_vec();
    // The envelope (server::kv::envelope): magic, u64 LE store length, store image, members.
    assert_eq!(&data[..8], server::kv::envelope::MAGIC);
    let len = u64::from_le_bytes(data[8..16].try_into().unwrap()) as usize;
    let image = &mut data[16..16 + len];
    let at = image
        .windows(from.len())
        .position(|w| w == from)
        .expect("the value is in the snapshot");
    image[at..at + to.len()].copy_from_slice(to);
    let crc = crc32_ieee(&image[..len - 4]);
    image[len - 4..].copy_from_slice(&crc.to_be_bytes());
    mvcc::Store::restore(image).expect("the damaged image is still a valid store image");
    store
        .snapshot_writer()
        .write_bytes(&snapshot.meta, &data)
        .expect("rewrite the snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_history_differs_from_its_peers_refuses_to_start() {
    let mut c = common::Cluster::start(
        3,
        &[
            "--experimental-initial-corrupt-check",
            "--snapshot-count",
            "10",
        ],
    );
    c.leader().await;
    for i in 0..30 {
        common::put_retrying(
            &c,
            0,
            &format!("k{i:02}"),
            &format!("value-{i:02}-original"),
        )
        .await;
    }
    // Every member has applied everything: their hashes agree.
    common::poll("equal hashes", Duration::from_secs(20), || async {
        let (a, b, d) = (c.hash(0).await?, c.hash(1).await?, c.hash(2).await?);
        (a == b && b == d).then_some(())
    })
    .await;
    let header = c.status(2).await.unwrap().header.unwrap();
    let victim = 2;
    let count = |c: &common::Cluster, needle: &str| c.log(victim).matches(needle).count();

    // A healthy restart passes the check and serves.
    c.terminate(victim);
    c.spawn(victim);
    common::poll("the check to pass", Duration::from_secs(30), || async {
        (count(&c, "initial corruption checking passed; no corruption") == 1).then_some(())
    })
    .await;
    common::poll("serving again", Duration::from_secs(20), || {
        c.status(victim)
    })
    .await;
    // Both peers were compared, none skipped: a check that compared nothing would pass too.
    let log = c.log(victim);
    assert!(log.contains("starting initial corruption check"), "{log}");
    assert_eq!(count(&c, "skipped the corruption check"), 0, "{log}");

    // The same member with one value changed on disk refuses to start.
    c.terminate(victim);
    corrupt_a_stored_value(
        &c.data_dir(victim),
        header.member_id,
        header.cluster_id,
        b"value-03-original",
        b"value-03-CORRUPT!",
    );
    c.spawn(victim);
    let status = c
        .local
        .wait_for_exit(victim, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}:\n{}", c.log(victim)));
    let log = c.log(victim);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "{:x} found data inconsistency with peers",
            header.member_id
        )),
        "{log}"
    );
    assert_eq!(
        count(&c, "found different hash values from remote peer"),
        2,
        "{log}"
    );
    // It never served: the healthy peers still agree, and still serve.
    assert_eq!(c.hash(0).await, c.hash(1).await);
}

// ---- --experimental-corrupt-check-time ----

/// `raftkv_corruption_checks_total{result}` on member `i`'s `/metrics` (0 when absent).
fn corruption_checks(c: &common::Cluster, i: usize, result: &str) -> u64 {
    use std::net::TcpStream;
    let Ok(mut s) = TcpStream::connect(c.local.member(i).endpoint()) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    if sent.is_err() || s.read_to_string(&mut text).is_err() {
        return 0;
    }
    let series = format!("raftkv_corruption_checks_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The active alarms as `(member id, alarm type)`, read through member `i`.
async fn alarms(c: &common::Cluster, i: usize) -> Option<Vec<(u64, i32)>> {
    use proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest};
    let r = c
        .maintenance(i)
        .await
        .alarm(AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: 0,
        })
        .await
        .ok()?
        .into_inner();
    Some(r.alarms.iter().map(|a| (a.member_id, a.alarm)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_raises_the_corrupt_alarm_for_a_member_whose_store_differs() {
    use proto::etcdserverpb::AlarmType;
    let mut c = common::Cluster::start(
        3,
        &[
            "--experimental-corrupt-check-time",
            "300ms",
            "--snapshot-count",
            "10",
        ],
    );
    let leader = c.leader().await;
    for i in 0..30 {
        common::put_retrying(
            &c,
            leader,
            &format!("k{i:02}"),
            &format!("value-{i:02}-original"),
        )
        .await;
    }
    // A clean cluster: the leader completes rounds that compared every peer, and raises
    // nothing.
    common::poll("three clean rounds", Duration::from_secs(30), || async {
        (corruption_checks(&c, leader, "passed") >= 3).then_some(())
    })
    .await;
    assert_eq!(corruption_checks(&c, leader, "mismatch"), 0);
    assert_eq!(alarms(&c, leader).await, Some(vec![]));
    assert!(c.log(leader).contains("enabled corruption checking"));

    // A follower restarts with one value changed on disk (no start-up check here).
    let victim = (leader + 1) % 3;
    common::poll("equal hashes", Duration::from_secs(20), || async {
        let (a, b) = (c.hash(leader).await?, c.hash(victim).await?);
        (a == b).then_some(())
    })
    .await;
    let header = c.status(victim).await.unwrap().header.unwrap();
    c.terminate(victim);
    corrupt_a_stored_value(
        &c.data_dir(victim),
        header.member_id,
        header.cluster_id,
        b"value-03-original",
        b"value-03-CORRUPT!",
    );
    c.spawn(victim);
    let raised = common::poll("the CORRUPT alarm", Duration::from_secs(30), || async {
        let a = alarms(&c, leader).await?;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(
        raised,
        vec![(header.member_id, AlarmType::Corrupt as i32)],
        "{}",
        c.log(leader)
    );
    assert!(
        c.log(leader)
            .contains("same compact revision then hashes must match"),
        "{}",
        c.log(leader)
    );
    assert!(corruption_checks(&c, leader, "mismatch") >= 1);
    // etcd's alarm handling: every request but alarms is refused.
    let err = c
        .kv(leader)
        .await
        .put(common::put("after", "alarm"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::DataLoss, "etcdserver: corrupt cluster")
    );
}
