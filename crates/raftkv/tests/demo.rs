//! `raftkv demo` itself: the README's main command must run the whole course scenario on
//! real `raftkv server` processes and exit 0, and must leave no member behind.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn demo_runs_the_course_scenario_and_exits_zero() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    command.arg("demo").arg("--data-dir").arg(data.path());
    if let Ok("etcd") = std::env::var("RAFTKV_TEST_BACKEND").as_deref() {
        command.arg("--with-etcd").arg(common::etcd_binary());
    }
    let out = common::run_with_timeout(command, None, Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "raftkv demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("result: 10 of 10 checks held"), "{stdout}");
    // The demo stopped its members: no process still runs with the data directory on its
    // command line.
    let leftover = Command::new("pgrep")
        .arg("-f")
        .arg(data.path().to_string_lossy().as_ref())
        .output()
        .expect("pgrep");
    assert!(
        leftover.stdout.is_empty(),
        "member processes outlived the demo: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

#[test]
fn demo_against_existing_cluster_is_non_destructive() {
    let cluster = common::start_cluster("demo-remote");
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    command
        .arg(format!("--endpoints={}", cluster.endpoints().join(",")))
        .arg("demo");
    let out = common::run_with_timeout(command, None, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "raftkv demo --endpoints failed:\n{stdout}\n{}",
        cluster.log_tails(20)
    );
    assert!(stdout.contains("result: 5 of 5 checks held"), "{stdout}");
    for m in cluster.members() {
        assert!(m.is_running(), "{} must still run", m.name);
    }
}
