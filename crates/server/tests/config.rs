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
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", taken.local_addr().unwrap());
    let (ok, err) = run(&[
        "--listen-client-urls",
        &url,
        "--listen-peer-urls",
        "http://127.0.0.1:0",
    ]);
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
