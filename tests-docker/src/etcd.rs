//! A member's client API, reached from the host through the member's own network namespace
//! on the container's loopback (127.0.0.1:2379), so it works while the container is cut off
//! from its network.
//!
//! Two etcd v3 clients are used. Key-value calls go through `etcdctl` (etcd's own client, run
//! with `nsenter -t <pid> -n`, so they also check raftkv's API compatibility on real
//! containers). `Status` and `HashKV` go through `raftkv_client`, the client the CLI, the
//! demo and the other test suites use, from a thread inside the namespace
//! ([`crate::netns::in_netns`]): etcdctl 3.4's `endpoint` commands dial with the URL scheme
//! in the HTTP/2 :authority, which the server's HTTP/2 stack rejects (a known server limit).

use crate::exec::{run, wait_with_deadline, Output};
use crate::netns::in_netns;
use raftkv_client::leader::MemberState;
use raftkv_client::tls::TlsOptions;
use raftkv_client::{Client, Timeouts};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where a member serves clients, seen from inside its network namespace.
const MEMBER_ENDPOINT: &str = "127.0.0.1:2379";
/// The same over TLS (member certificates from scripts/gen-certs.sh name IP 127.0.0.1).
const MEMBER_ENDPOINT_TLS: &str = "https://127.0.0.1:2379";

/// The host-side client's files for members that serve mutual TLS on their client port: the
/// CA their certificates chain to, and the client certificate and key to present.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientTls {
    /// The files scripts/gen-certs.sh writes under `<dir>/client`.
    pub fn from_gen_certs_dir(dir: &std::path::Path) -> ClientTls {
        let client = dir.join("client");
        ClientTls {
            ca: client.join("ca.pem"),
            cert: client.join("client.pem"),
            key: client.join("client-key.pem"),
        }
    }

    fn options(&self) -> TlsOptions {
        TlsOptions {
            cacert: Some(self.ca.clone()),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            insecure_skip_verify: false,
        }
    }
}

fn endpoint(tls: Option<&ClientTls>) -> &'static str {
    if tls.is_some() {
        MEMBER_ENDPOINT_TLS
    } else {
        MEMBER_ENDPOINT
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

fn command(pid: u32, tls: Option<&ClientTls>, timeout: Duration, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-n", &etcdctl_bin()])
        .args(["--endpoints", endpoint(tls), "--dial-timeout", "1s"])
        .arg(format!("--command-timeout={}ms", timeout.as_millis()));
    if let Some(tls) = tls {
        cmd.arg("--cacert")
            .arg(&tls.ca)
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key);
    }
    cmd.args(args).env("ETCDCTL_API", "3");
    cmd
}

fn etcdctl(pid: u32, tls: Option<&ClientTls>, timeout: Duration, args: &[&str]) -> Output {
    // Dial + command timeouts bound etcdctl itself; the extra margin bounds a stuck process.
    run(
        &mut command(pid, tls, timeout, args),
        timeout + Duration::from_secs(3),
    )
}

/// etcdctl with `args` and no other flag than the endpoint and the timeouts, against
/// `endpoint` in the member's network namespace: for refusal checks (e.g. no client
/// certificate, or plaintext to a TLS port).
pub fn etcdctl_raw(pid: u32, endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-n", &etcdctl_bin()])
        .args(["--endpoints", endpoint, "--dial-timeout", "1s"])
        .arg("--command-timeout=2s")
        .args(args)
        .env("ETCDCTL_API", "3");
    run(&mut cmd, Duration::from_secs(6))
}

/// The peer URLs `member list` shows through the member whose network namespace is `pid`'s,
/// sorted.
pub fn listed_peer_urls(pid: u32) -> Result<Vec<String>, String> {
    let out = etcdctl_raw(pid, "http://127.0.0.1:2379", &["member", "list"])
        .into_result("member list")?;
    let mut urls: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(", ").nth(3).map(str::to_string))
        .collect();
    urls.sort();
    Ok(urls)
}

/// Whether the member says it is a learner (`endpoint status`'s "is learner" column).
pub fn is_learner(pid: u32) -> Result<bool, String> {
    let out = etcdctl_raw(pid, "http://127.0.0.1:2379", &["endpoint", "status"])
        .into_result("endpoint status")?;
    match out.trim().split(", ").nth(5) {
        Some("false") => Ok(false),
        Some("true") => Ok(true),
        _ => Err(format!("unexpected endpoint status: {out}")),
    }
}

/// Runs `call` with a client for the member in `pid`'s network namespace (dial limit 1 s, as
/// etcdctl's `--dial-timeout` here; `limit` per call).
fn with_member_client<T: Send, Fut: std::future::Future<Output = Result<T, String>>>(
    pid: u32,
    tls: Option<&ClientTls>,
    limit: Duration,
    call: impl FnOnce(Client) -> Fut + Send,
) -> Result<T, String> {
    let options = tls.map(ClientTls::options).unwrap_or_default();
    let endpoint = endpoint(tls).to_string();
    in_netns(pid, || async move {
        let timeouts = Timeouts {
            dial: Duration::from_secs(1),
            call: limit,
        };
        let client =
            Client::with_tls(&[endpoint], timeouts, &options).map_err(|e| e.to_string())?;
        call(client).await
    })?
}

/// Maintenance.Status of the member in `pid`'s network namespace.
pub fn status(pid: u32) -> Result<MemberState, String> {
    status_tls(pid, None)
}

/// [`status`], over mutual TLS when `tls` is given.
pub fn status_tls(pid: u32, tls: Option<&ClientTls>) -> Result<MemberState, String> {
    with_member_client(pid, tls, Duration::from_millis(800), |client| async move {
        let status = client.status().await.map_err(|e| format!("status: {e}"))?;
        Ok(MemberState::from_status(
            MEMBER_ENDPOINT.to_string(),
            status,
        ))
    })
}

/// A put, acknowledged (`Ok`) or not (`Err`, its effect unknown).
pub fn put(pid: u32, key: &str, value: &str, timeout: Duration) -> Result<(), String> {
    put_tls(pid, None, key, value, timeout)
}

/// [`put`], over mutual TLS when `tls` is given.
pub fn put_tls(
    pid: u32,
    tls: Option<&ClientTls>,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), String> {
    etcdctl(pid, tls, timeout, &["put", key, value])
        .into_result(&format!("put {key}"))
        .map(|_| ())
}

/// A linearizable (default) or serializable read of one key.
pub fn get(pid: u32, key: &str, serializable: bool) -> Result<Option<String>, String> {
    let mut args = vec!["get", key, "--print-value-only"];
    if serializable {
        args.push("--consistency=s");
    }
    let out =
        etcdctl(pid, None, Duration::from_secs(3), &args).into_result(&format!("get {key}"))?;
    Ok(out.lines().next().map(str::to_string))
}

/// Starts a linearizable read in the background (used against a paused member: the request
/// waits in the socket until the member runs again). Finish it with [`finish_get`].
pub fn spawn_get(pid: u32, key: &str, timeout: Duration) -> std::io::Result<Child> {
    command(pid, None, timeout, &["get", key, "--print-value-only"])
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
    dump_tls(pid, None, prefix)
}

/// [`dump`], over mutual TLS when `tls` is given.
pub fn dump_tls(
    pid: u32,
    tls: Option<&ClientTls>,
    prefix: &str,
) -> Result<BTreeMap<String, String>, String> {
    let out = etcdctl(
        pid,
        tls,
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
    hashkv_tls(pid, None)
}

/// [`hashkv`], over mutual TLS when `tls` is given.
pub fn hashkv_tls(pid: u32, tls: Option<&ClientTls>) -> Result<(u64, i64), String> {
    with_member_client(pid, tls, Duration::from_secs(5), |client| async move {
        let response = client
            .hash_kv(0)
            .await
            .map_err(|e| format!("hashkv: {e}"))?;
        Ok((
            u64::from(response.hash),
            response.header.map_or(0, |h| h.revision),
        ))
    })
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
    fn listings_pair_keys_with_values_and_reject_a_torn_listing() {
        let m = parse_listing("a\n1\nb\n2\n").unwrap();
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert_eq!(m.len(), 2);
        assert!(parse_listing("a\n1\nb\n").is_err());
    }
}
