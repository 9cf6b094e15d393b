//! `raftkv endpoint health|status|hashkv [--cluster]`: from one endpoint, `--cluster`
//! reaches every member; a dead member makes `health` fail.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn raftkv(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    command.args(args);
    run_with_timeout(command, None, Duration::from_secs(60))
}

#[test]
fn endpoint_commands_reach_every_member_with_cluster() {
    let mut cluster = start_cluster_of(raftkv_program(), "ep", Vec::new());
    let one = format!("--endpoints={}", cluster.member(0).endpoint());
    let healthy = poll_until("three healthy members", Duration::from_secs(30), || {
        let out = raftkv(&[&one, "endpoint", "health", "--cluster"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.matches(" is healthy: ").count() == 3 {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    for m in cluster.members() {
        assert!(healthy.contains(&m.client_url()), "{healthy}");
    }
    let out = raftkv(&[&one, "endpoint", "health"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(" is healthy")
            .count(),
        1
    );

    let status = raftkv(&[&one, "-w", "json", "endpoint", "status", "--cluster"]);
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status.as_array().map(|a| a.len()), Some(3), "{status}");
    let hashes = raftkv(&[&one, "endpoint", "hashkv", "--cluster"]);
    assert!(hashes.status.success());
    assert_eq!(String::from_utf8_lossy(&hashes.stdout).lines().count(), 3);

    // A dead member: health --cluster names it and fails.
    cluster.kill_member(2).unwrap();
    let out = raftkv(&[
        &one,
        "--dial-timeout",
        "500ms",
        "--command-timeout",
        "2s",
        "endpoint",
        "health",
        "--cluster",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} is unhealthy", cluster.member(2).client_url())),
        "{err}"
    );
    assert!(err.contains("unhealthy cluster"), "{err}");
}
