//! A real HTTP-only client library from PyPI against the JSON gateway: OpenStack's
//! `etcd3gw` (pinned below), which speaks only `POST /v3/...` and never gRPC. The same
//! session (`tests/python/etcd3gw_session.py`: version discovery, KV, transactions, leases
//! with keep-alive, the library's lock recipe, streamed watches, errors) runs against a
//! 3-member raftkv cluster and a 3-member etcd 3.4 cluster; the transcripts must be equal.
//!
//! Needs `python3` with `venv` and PyPI; a missing one is a failure, not a skip.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raftkv_client::local_cluster::MemberProgram;

/// The library and the version the session was written against.
const LIBRARY: &str = "etcd3gw==2.7.0";

/// A virtualenv with the library, made once per target dir.
fn python_with_library() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venv-etcd3gw");
    let python = venv.join("bin/python");
    let installed = python.is_file()
        && Command::new(&python)
            .args(["-c", "import etcd3gw"])
            .status()
            .is_ok_and(|s| s.success());
    if installed {
        return python;
    }
    let made = common::run_with_timeout(
        {
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        },
        None,
        Duration::from_secs(120),
    );
    assert!(
        made.status.success(),
        "python3 -m venv failed (python3 with venv is required by this test): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = common::run_with_timeout(
        {
            let mut c = Command::new(&python);
            c.args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                LIBRARY,
            ]);
            c
        },
        None,
        Duration::from_secs(300),
    );
    assert!(
        pip.status.success(),
        "pip install {LIBRARY} failed (PyPI must be reachable): {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    python
}

/// Runs the session against one member and returns its transcript lines.
fn session(python: &Path, endpoint: &str) -> Vec<String> {
    let (host, port) = endpoint.rsplit_once(':').expect("host:port endpoint");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/etcd3gw_session.py");
    let mut c = Command::new(python);
    c.arg(script).args([host, port]);
    let out = common::run_with_timeout(c, None, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "the etcd3gw session against {endpoint} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 transcript")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Polls the member's `/health` until it says `true` (a leader is known and a read round
/// went through).
fn wait_healthy(endpoint: &str) {
    common::poll_until(
        &format!("{endpoint} reports healthy"),
        Duration::from_secs(30),
        || {
            let mut s = TcpStream::connect(endpoint).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .map_err(|e| e.to_string())?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut body = String::new();
            s.read_to_string(&mut body).map_err(|e| e.to_string())?;
            if body.contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
}

fn step(transcript: &[String], name: &str) -> serde_json::Value {
    let line = transcript
        .iter()
        .find(|l| l.contains(&format!("\"step\": \"{name}\"")))
        .unwrap_or_else(|| panic!("no step {name} in the transcript"));
    serde_json::from_str::<serde_json::Value>(line).expect("JSON line")["value"].clone()
}

#[test]
fn etcd3gw_sees_raftkv_as_it_sees_etcd() {
    let python = python_with_library();

    let raftkv = common::start_cluster_of(common::raftkv_program(), "py-raftkv", Vec::new());
    wait_healthy(&raftkv.member(1).endpoint());
    let ours = session(&python, &raftkv.member(1).endpoint());
    drop(raftkv);

    let etcd = common::start_cluster_of(
        MemberProgram::Etcd(common::etcd_binary()),
        "py-etcd",
        Vec::new(),
    );
    wait_healthy(&etcd.member(1).endpoint());
    let theirs = session(&python, &etcd.member(1).endpoint());
    drop(etcd);

    // The library found the 3.4 API path and its recipes worked (so that equal transcripts
    // cannot mean "both failed the same way").
    assert_eq!(step(&ours, "api_path"), "/v3/");
    assert_eq!(step(&ours, "lock_first"), true);
    assert_eq!(step(&ours, "lock_second_while_held"), false);
    assert_eq!(step(&ours, "watch_got_two_events"), true);
    assert_eq!(step(&ours, "lease_key_gone"), serde_json::json!([]));

    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert_eq!(a, b, "step {i} differs (left raftkv, right etcd)");
    }
    assert_eq!(
        ours.len(),
        theirs.len(),
        "transcript lengths differ:\nraftkv: {ours:#?}\netcd: {theirs:#?}"
    );
}
