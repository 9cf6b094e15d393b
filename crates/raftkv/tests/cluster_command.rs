//! `raftkv cluster`: the foreground local cluster starts, elects a leader, serves the
//! endpoints it prints, and stops every member cleanly on Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the `raftkv cluster` process if the test fails half-way (its members follow it
/// through their parent-death signal).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_command_serves_and_stops_cleanly_on_ctrl_c() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["cluster", "--free-ports", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start raftkv cluster");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = KillOnDrop(child);
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str, limit: Duration| -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?} within {limit:?}; output so far:\n{}",
                    seen.join("\n")
                ),
            }
        }
    };
    wait_for("leader:", Duration::from_secs(40));
    let hint = wait_for("raftkv --endpoints=", Duration::from_secs(5));
    let endpoints = hint
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--endpoints="))
        .expect("endpoints in the hint")
        .to_string();
    let put = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .arg(format!("--endpoints={endpoints}"))
        .args(["put", "played", "with"])
        .output()
        .expect("raftkv put");
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&put.stdout), "OK\n");

    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(guard.0.id() as libc::pid_t, libc::SIGINT);
    }
    wait_for("all members stopped cleanly", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "raftkv cluster did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "raftkv cluster exited with {status}");
}
