//! Shared harness for the multi-process integration tests.
//!
//! The tests run against `raftkv server` members by default. Setting
//! `RAFTKV_TEST_BACKEND=etcd` runs the very same tests against a real etcd cluster started with
//! the same flags, which is how the tests themselves were checked before the server existed,
//! and how anyone can confirm that a failure is ours and not the test's.
//!
//! External programs (etcd, etcdctl) are required, never optional: a missing binary is a test
//! failure with a message saying how to install it.

#![allow(dead_code)] // each test file uses a different subset

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};

/// The etcd binary (`$ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on `$PATH`).
pub fn etcd_binary() -> PathBuf {
    find_binary("ETCD_BIN", "etcd")
}

/// The etcdctl binary (`$ETCDCTL_BIN`, else `/usr/bin/etcdctl`, else `etcdctl` on `$PATH`).
pub fn etcdctl_binary() -> PathBuf {
    find_binary("ETCDCTL_BIN", "etcdctl")
}

fn find_binary(env: &str, name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${env} points to {} which does not exist",
            path.display()
        );
        return path;
    }
    let candidates = std::iter::once(PathBuf::from(format!("/usr/bin/{name}"))).chain(
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is required by this test but was not found (looked at ${env}, /usr/bin/{name} \
         and $PATH). Install it: apt-get install -y etcd-server etcd-client"
    );
}

/// The program under test: `raftkv server` unless `RAFTKV_TEST_BACKEND=etcd`.
pub fn backend_program() -> MemberProgram {
    match std::env::var("RAFTKV_TEST_BACKEND").as_deref() {
        Ok("etcd") => MemberProgram::Etcd(etcd_binary()),
        Ok("raftkv") | Err(_) => raftkv_program(),
        Ok(other) => panic!("RAFTKV_TEST_BACKEND must be `raftkv` or `etcd`, not `{other}`"),
    }
}

/// The `raftkv` binary built for these tests.
pub fn raftkv_program() -> MemberProgram {
    MemberProgram::Raftkv(PathBuf::from(env!("CARGO_BIN_EXE_raftkv")))
}

/// A 3-member cluster of the program under test, with names `<prefix>-0..2`.
pub fn start_cluster(prefix: &str) -> LocalCluster {
    start_cluster_of(backend_program(), prefix, Vec::new())
}

pub fn start_cluster_of(program: MemberProgram, prefix: &str, extra: Vec<String>) -> LocalCluster {
    let mut spec = ClusterSpec::new(program, prefix, 3);
    spec.extra_args = extra;
    LocalCluster::start(spec).expect("cannot start the local cluster")
}

/// Runs a command with a hard time limit, feeding `stdin`. Never hangs a test.
pub fn run_with_timeout(mut command: Command, stdin: Option<&str>, limit: Duration) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .expect("cannot write stdin");
    }
    let deadline = Instant::now() + limit;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).ok();
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).ok();
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Polls `check` every 50 ms until it returns `Ok`, or panics with the last error after
/// `limit`. This is the only way tests wait: on a condition, with a deadline.
pub fn poll_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {limit:?} waiting for {what}; last error: {last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A gRPC error from the `etcd-client` crate as (code, message); anything else fails the test.
pub fn grpc_error(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other:?}"),
    }
}

/// Each endpoint's (member id, leader id), once every one answers and all name one leader
/// (30 s at most).
pub async fn statuses(endpoints: &[String]) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut out = Vec::new();
        for ep in endpoints {
            let Ok(mut c) = etcd_client::Client::connect([ep], None).await else {
                break;
            };
            match c.status().await {
                Ok(s) if s.leader() != 0 => {
                    out.push((s.header().expect("header").member_id(), s.leader()))
                }
                _ => break,
            }
        }
        if out.len() == endpoints.len() && out.iter().all(|(_, l)| *l == out[0].1) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "members never agreed on a leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An `etcd-client` connection to `endpoint` once a read goes through (the member may still be
/// starting); panics after 30 s.
pub async fn connect_answering(endpoint: &str) -> etcd_client::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut c = etcd_client::Client::connect([endpoint], None).await?;
            c.get("probe", None).await?;
            Ok::<_, etcd_client::Error>(c)
        };
        match attempt.await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "{endpoint} never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One key as a read returns it: key, value, create and mod revision, version, lease.
pub type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

/// Every key at `revision`, as the cluster behind `client` answers.
pub async fn rows_at(client: &etcd_client::Client, revision: i64) -> Vec<Row> {
    let mut c = client.clone();
    let all = etcd_client::GetOptions::new()
        .with_all_keys()
        .with_revision(revision);
    let r = c
        .get("", Some(all))
        .await
        .unwrap_or_else(|e| panic!("range at {revision}: {e}"));
    r.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect()
}

/// The seed of a randomised test: `$var` if set (to replay a failure), else the clock. Printed
/// either way, so every failure names the seed that replays it.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{var}={seed}");
    seed
}

/// etcdctl (API 3, default 5 s command timeout) against `endpoint`: (success, stdout, stderr).
pub fn etcdctl_at(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(etcdctl_binary());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    let out = run_with_timeout(cmd, None, Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// etcdctl's `endpoint status` says `ep` is a voter (its "is learner" column is false).
pub fn is_voter(ep: &str) -> Result<(), String> {
    let (ok, out, err) = etcdctl_at(ep, &["endpoint", "status"]);
    if !ok {
        return Err(err);
    }
    // endpoint, ID, version, db size, is leader, is learner, term, index, applied, errors
    let cols: Vec<&str> = out.trim().split(", ").collect();
    match cols.get(5) {
        Some(&"false") => Ok(()),
        _ => Err(out),
    }
}

/// etcdctl's simple `member list` lines at `endpoint`.
pub fn member_lines(endpoint: &str) -> Vec<String> {
    let (ok, out, err) = etcdctl_at(endpoint, &["member", "list"]);
    assert!(ok, "{err}");
    out.lines().map(str::to_string).collect()
}

/// The member id (hex) on the `member list` line whose peer URL is `url`.
pub fn member_id_of(endpoint: &str, url: &str) -> String {
    member_lines(endpoint)
        .into_iter()
        .find(|l| l.contains(url))
        .and_then(|l| l.split(',').next().map(str::to_string))
        .unwrap_or_else(|| panic!("no member with {url}"))
}

/// A current-thread runtime for one test's async part.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A runtime with two worker threads, for tests whose tasks must run while the test's own
/// task waits (spawned writers, many streams).
pub fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A raftkv client with its own connection, 2 s to dial and 10 s per call (create it inside
/// a runtime: its channels connect lazily on it).
pub fn client(endpoints: &[String]) -> raftkv_client::Client {
    raftkv_client::Client::new(
        endpoints,
        raftkv_client::client::Timeouts {
            dial: Duration::from_secs(2),
            call: Duration::from_secs(10),
        },
    )
    .expect("client")
}

/// `s` as protobuf bytes.
pub fn b(s: &str) -> proto::prost::bytes::Bytes {
    proto::prost::bytes::Bytes::from(s.as_bytes().to_vec())
}

/// [`poll_until`] for an async check: polls every 50 ms until `check` returns `Ok`, or
/// panics with the last error after `limit`.
pub async fn poll_until_async<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {limit:?} waiting for {what}; last error: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A virtualenv under the test target dir holding `packages` (pip requirement strings),
/// made once: reused while `import` imports in it. Needs `python3` with `venv` and PyPI; a
/// missing one fails the test.
pub fn python_venv(name: &str, packages: &[&str], import: &str) -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin/python");
    let installed = python.is_file()
        && Command::new(&python)
            .args(["-c", &format!("import {import}")])
            .status()
            .is_ok_and(|s| s.success());
    if installed {
        return python;
    }
    let mut c = Command::new("python3");
    c.args(["-m", "venv"]).arg(&venv);
    let made = run_with_timeout(c, None, Duration::from_secs(120));
    assert!(
        made.status.success(),
        "python3 -m venv failed (python3 with venv is required by this test): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut c = Command::new(&python);
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(packages);
    let pip = run_with_timeout(c, None, Duration::from_secs(300));
    assert!(
        pip.status.success(),
        "pip install {packages:?} failed (PyPI must be reachable): {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    python
}

/// Runs `tests/python/<script> HOST PORT` against one member and returns its transcript
/// lines (one JSON object per step).
pub fn python_session(python: &std::path::Path, script: &str, endpoint: &str) -> Vec<String> {
    let (host, port) = endpoint.rsplit_once(':').expect("host:port endpoint");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut c = Command::new(python);
    c.arg(&script).args([host, port]);
    let out = run_with_timeout(c, None, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{} against {endpoint} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 transcript")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of step `name` in a Python session's transcript.
pub fn python_step(transcript: &[String], name: &str) -> serde_json::Value {
    let line = transcript
        .iter()
        .find(|l| l.contains(&format!("\"step\": \"{name}\"")))
        .unwrap_or_else(|| panic!("no step {name} in the transcript"));
    serde_json::from_str::<serde_json::Value>(line).expect("JSON line")["value"].clone()
}

/// Two Python sessions' transcripts, line by line (left raftkv, right etcd).
pub fn assert_same_transcripts(ours: &[String], theirs: &[String]) {
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert_eq!(a, b, "step {i} differs (left raftkv, right etcd)");
    }
    assert_eq!(
        ours.len(),
        theirs.len(),
        "transcript lengths differ:\nraftkv: {ours:#?}\netcd: {theirs:#?}"
    );
}

/// Prints the tail of every member's log if the test panics while this is held: a member
/// that died or closed a client connection says why in its log, which the temporary data
/// directory takes with it once the test ends.
pub struct LogsOnPanic<'a>(pub &'a LocalCluster);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("member logs at the failure:\n{}", self.0.log_tails(60));
        }
    }
}
