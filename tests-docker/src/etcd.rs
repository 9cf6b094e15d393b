//! A member's client API, reached from the host through the member's own network namespace:
//! `nsenter -t <pid> -n <client> --endpoints 127.0.0.1:2379 ...`. Traffic stays on the
//! container's loopback, and it works while the container is cut off from its network.
//!
//! Two etcd v3 clients are used. Key-value calls go through `etcdctl` (etcd's own client, so
//! they also check raftkv's API compatibility on real containers). `Status` and `HashKV` go
//! through the `raftkv` client (same JSON as etcdctl): etcdctl 3.4's `endpoint` commands
//! dial with the URL scheme in the HTTP/2 :authority, which the server's HTTP/2 stack rejects
//! (a known server limit). `RAFTKV_CLIENT_BIN` names that binary (run.sh extracts it from the
//! image under test, so it is always the same build).

use crate::exec::{run, wait_with_deadline, Output};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One member's view of the cluster (etcd's Maintenance.Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub member_id: u64,
    /// Member id of the leader it knows, 0 if none.
    pub leader: u64,
    pub term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub revision: i64,
}

impl Status {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }
}

fn etcdctl_bin() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into())
}

/// Checks that etcdctl is installed; panics with the fix otherwise.
pub fn require_etcdctl() {
    let out = run(
        Command::new(etcdctl_bin()).arg("version"),
        Duration::from_secs(10),
    );
    assert!(
        out.success(),
        "etcdctl is needed by the container tests (Debian package etcd-client): {}",
        out.stderr.trim()
    );
}

fn raftkv_client_bin() -> String {
    std::env::var("RAFTKV_CLIENT_BIN").unwrap_or_else(|_| {
        panic!("RAFTKV_CLIENT_BIN (the raftkv client binary) is not set: run tests-docker/run.sh")
    })
}

/// Checks that the raftkv client binary runs; panics with the fix otherwise.
pub fn require_raftkv_client() {
    let out = run(
        Command::new(raftkv_client_bin()).arg("--version"),
        Duration::from_secs(10),
    );
    assert!(
        out.success(),
        "the raftkv client binary does not run: {}",
        out.stderr.trim()
    );
}

/// `raftkv <args>` against the member in `pid`'s network namespace.
fn raftkv_client(pid: u32, timeout: Duration, args: &[&str]) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-n", &raftkv_client_bin()])
        .args(args)
        .args([
            "-w",
            "json",
            "--endpoints",
            "127.0.0.1:2379",
            "--dial-timeout",
            "1s",
        ])
        .arg(format!("--command-timeout={}ms", timeout.as_millis()));
    run(&mut cmd, timeout + Duration::from_secs(3))
}

fn command(pid: u32, timeout: Duration, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-n", &etcdctl_bin()])
        .args(["--endpoints", "127.0.0.1:2379", "--dial-timeout", "1s"])
        .arg(format!("--command-timeout={}ms", timeout.as_millis()))
        .args(args)
        .env("ETCDCTL_API", "3");
    cmd
}

fn etcdctl(pid: u32, timeout: Duration, args: &[&str]) -> Output {
    // Dial + command timeouts bound etcdctl itself; the extra margin bounds a stuck process.
    run(
        &mut command(pid, timeout, args),
        timeout + Duration::from_secs(3),
    )
}

fn field_u64(v: &serde_json::Value, path: &[&str]) -> Result<u64, String> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| format!("status JSON lacks {}", path.join(".")))?;
    }
    cur.as_u64()
        .or_else(|| cur.as_i64().map(|i| i.max(0) as u64))
        .ok_or_else(|| format!("status JSON field {} is not a number", path.join(".")))
}

/// `etcdctl endpoint status` of the member in `pid`'s network namespace.
pub fn status(pid: u32) -> Result<Status, String> {
    let out = raftkv_client(pid, Duration::from_millis(800), &["status"]).into_result("status")?;
    parse_status(&out)
}

/// Parses `etcdctl endpoint status -w json` output (one endpoint).
pub fn parse_status(out: &str) -> Result<Status, String> {
    let json: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("status is not JSON ({e}): {out}"))?;
    let s = json
        .get(0)
        .and_then(|e| e.get("Status"))
        .ok_or_else(|| format!("unexpected status output: {out}"))?;
    Ok(Status {
        member_id: field_u64(s, &["header", "member_id"])?,
        leader: field_u64(s, &["leader"]).unwrap_or(0),
        term: field_u64(s, &["raftTerm"]).unwrap_or(0),
        raft_index: field_u64(s, &["raftIndex"]).unwrap_or(0),
        applied_index: field_u64(s, &["raftAppliedIndex"]).unwrap_or(0),
        revision: field_u64(s, &["header", "revision"]).unwrap_or(0) as i64,
    })
}

/// A put, acknowledged (`Ok`) or not (`Err`, its effect unknown).
pub fn put(pid: u32, key: &str, value: &str, timeout: Duration) -> Result<(), String> {
    etcdctl(pid, timeout, &["put", key, value])
        .into_result(&format!("put {key}"))
        .map(|_| ())
}

/// A linearizable (default) or serializable read of one key.
pub fn get(pid: u32, key: &str, serializable: bool) -> Result<Option<String>, String> {
    let mut args = vec!["get", key, "--print-value-only"];
    if serializable {
        args.push("--consistency=s");
    }
    let out = etcdctl(pid, Duration::from_secs(3), &args).into_result(&format!("get {key}"))?;
    Ok(out.lines().next().map(str::to_string))
}

/// Starts a linearizable read in the background (used against a paused member: the request
/// waits in the socket until the member runs again). Finish it with [`finish_get`].
pub fn spawn_get(pid: u32, key: &str, timeout: Duration) -> std::io::Result<Child> {
    command(pid, timeout, &["get", key, "--print-value-only"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

pub fn finish_get(child: Child, limit: Duration) -> Result<Option<String>, String> {
    let out = wait_with_deadline(child, limit).into_result("background get")?;
    Ok(out.lines().next().map(str::to_string))
}

/// Every key under `prefix` with its value, read locally (serializable) from one member: the
/// member's own state, used to compare members.
pub fn dump(pid: u32, prefix: &str) -> Result<BTreeMap<String, String>, String> {
    let out = etcdctl(
        pid,
        Duration::from_secs(5),
        &["get", "--prefix", prefix, "--consistency=s"],
    )
    .into_result(&format!("get --prefix {prefix}"))?;
    parse_listing(&out)
}

/// Parses `etcdctl get --prefix` output: key and value on alternate lines.
pub fn parse_listing(out: &str) -> Result<BTreeMap<String, String>, String> {
    let lines: Vec<&str> = out.lines().collect();
    if !lines.len().is_multiple_of(2) {
        return Err(format!("odd number of lines in a key/value listing: {out}"));
    }
    Ok(lines
        .chunks(2)
        .map(|kv| (kv[0].to_string(), kv[1].to_string()))
        .collect())
}

/// `(hash, revision)` of the member's whole key space at its latest revision (etcd's HashKV).
pub fn hashkv(pid: u32) -> Result<(u64, i64), String> {
    let out = raftkv_client(pid, Duration::from_secs(5), &["hashkv"]).into_result("hashkv")?;
    let json: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("hashkv is not JSON ({e}): {out}"))?;
    let h = json
        .get(0)
        .and_then(|e| e.get("HashKV"))
        .ok_or_else(|| format!("unexpected hashkv output: {out}"))?;
    // Zero-valued fields may be left out of the JSON (an empty store has revision 0).
    Ok((
        field_u64(h, &["hash"]).unwrap_or(0),
        field_u64(h, &["header", "revision"]).unwrap_or(0) as i64,
    ))
}

/// HTTP status of GET /readyz (or another path) on the member's client port.
pub fn http_status(pid: u32, path: &str) -> Result<u16, String> {
    let url = format!("http://127.0.0.1:2379{path}");
    let out = run(
        Command::new("nsenter").args([
            "-t",
            &pid.to_string(),
            "-n",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
            &url,
        ]),
        Duration::from_secs(3),
    );
    let code: u16 = out.stdout.trim().parse().unwrap_or(0);
    if code == 0 {
        Err(format!("GET {path}: no HTTP answer"))
    } else {
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_is_read_including_ids_above_2_pow_53() {
        let out = r#"[{"Endpoint":"http://127.0.0.1:2379","Status":{"header":{"cluster_id":1,"member_id":17858266911734186401,"revision":7,"raft_term":3},"version":"3.4.23","dbSize":20480,"leader":17858266911734186401,"raftIndex":12,"raftTerm":3,"raftAppliedIndex":12,"dbSizeInUse":20480}}]"#;
        let s = parse_status(out).unwrap();
        assert_eq!(s.member_id, 17858266911734186401);
        assert!(s.is_leader());
        assert_eq!(
            (s.term, s.raft_index, s.applied_index, s.revision),
            (3, 12, 12, 7)
        );
    }

    #[test]
    fn status_of_a_follower_is_not_leader_and_garbage_is_an_error() {
        let out = r#"[{"Status":{"header":{"member_id":5},"leader":9,"raftTerm":2}}]"#;
        assert!(!parse_status(out).unwrap().is_leader());
        assert!(parse_status("Error: context deadline exceeded").is_err());
        assert!(
            parse_status(r#"[{"Status":{"leader":9}}]"#).is_err(),
            "a status without member id"
        );
    }

    #[test]
    fn listings_pair_keys_with_values_and_reject_a_torn_listing() {
        let m = parse_listing("a\n1\nb\n2\n").unwrap();
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert_eq!(m.len(), 2);
        assert!(parse_listing("a\n1\nb\n").is_err());
    }
}
