//! etcd's command line, the parts issue 12 left: `unix://` client URLs and etcd's wording
//! for a bad flag (checked against the real etcd binary).

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
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir.path())
        .env_remove("ETCD_NAME")
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
