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
use std::time::Duration;

use raftkv_client::local_cluster::MemberProgram;

/// The library and the version the session was written against.
const LIBRARY: &str = "etcd3gw==2.7.0";

/// A virtualenv with the library, made once per target dir.
fn python_with_library() -> PathBuf {
    common::python_venv("venv-etcd3gw", &[LIBRARY], "etcd3gw")
}

/// Runs the session against one member and returns its transcript lines.
fn session(python: &Path, endpoint: &str) -> Vec<String> {
    common::python_session(python, "etcd3gw_session.py", endpoint)
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
    assert_eq!(common::python_step(&ours, "api_path"), "/v3/");
    assert_eq!(common::python_step(&ours, "lock_first"), true);
    assert_eq!(common::python_step(&ours, "lock_second_while_held"), false);
    assert_eq!(common::python_step(&ours, "watch_got_two_events"), true);
    assert_eq!(
        common::python_step(&ours, "lease_key_gone"),
        serde_json::json!([])
    );

    common::assert_same_transcripts(&ours, &theirs);
}
