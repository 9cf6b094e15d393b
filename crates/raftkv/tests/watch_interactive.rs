//! etcdctl 3.4's interactive watch (`etcdctl watch -i`) with its `progress` command, against a
//! 1-member etcd 3.4 and a 1-member raftkv: the same session on both must print the same
//! lines, each with its own side's revisions.
//!
//! In interactive mode etcdctl reads commands from stdin (`watch [flags] KEY`, `progress`)
//! and runs every watch on one gRPC stream; `progress` sends a progress request on that
//! stream, and clientv3 hands the answer to every watch on it, so etcdctl prints
//! `progress notify: REV` once per watch. Each step waits for the lines it must produce
//! before the next is sent, so the transcript does not depend on timing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::runtime;
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};

/// How long one step may take to print its lines.
const STEP_LIMIT: Duration = Duration::from_secs(20);

/// A running `etcdctl watch -i`: commands go to its stdin, lines come from its stdout.
struct Interactive {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    transcript: Vec<String>,
}

impl Interactive {
    fn start(endpoint: &str) -> Interactive {
        let mut child = Command::new(common::etcdctl_binary())
            .env("ETCDCTL_API", "3")
            .args([&format!("--endpoints={endpoint}"), "watch", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run etcdctl");
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Interactive {
            child,
            stdin,
            lines,
            transcript: Vec::new(),
        }
    }

    /// Sends one command line.
    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("etcdctl's stdin");
        self.stdin.flush().expect("etcdctl's stdin");
    }

    /// The next `n` lines etcdctl prints (fails the test if they do not come in time).
    fn expect_lines(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + STEP_LIMIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => panic!(
                    "etcdctl printed {got:?}, expected {n} lines; before: {:?}",
                    self.transcript
                ),
            }
        }
        self.transcript.extend(got.iter().cloned());
        got
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        // etcdctl's interactive mode only ends on a read error; it is stopped here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One interactive session against `cluster`; returns etcdctl's transcript, checked step
/// by step against what etcd 3.4's etcdctl prints.
fn session(label: &str, cluster: &LocalCluster) -> Vec<String> {
    let endpoint = cluster.member(0).endpoint();
    let rt = runtime();
    let _in_runtime = rt.enter();
    let c = common::client(std::slice::from_ref(&endpoint));
    let put = |k: &str, v: &str| -> i64 {
        rt.block_on(async {
            c.put_retrying(k, v, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{label}: put {k}: {e}\n{}", cluster.log_tails(20)))
                .header
                .expect("header")
                .revision
        })
    };
    let foo1 = put("foo", "v1");
    let bar1 = put("bar", "b1");
    let mut etcdctl = Interactive::start(&endpoint);

    // Two watches on the one stream, each replaying its first put from history.
    etcdctl.command(&format!("watch --rev={foo1} foo"));
    assert_eq!(
        etcdctl.expect_lines(3),
        lines(&["PUT", "foo", "v1"]),
        "{label}"
    );
    etcdctl.command(&format!("watch --rev={bar1} --prev-kv bar"));
    assert_eq!(
        etcdctl.expect_lines(3),
        lines(&["PUT", "bar", "b1"]),
        "{label}"
    );

    // A progress request: both watches are told the current revision.
    etcdctl.command("progress");
    let notify = |rev: i64| format!("progress notify: {rev}");
    assert_eq!(
        etcdctl.expect_lines(2),
        vec![notify(bar1), notify(bar1)],
        "{label}"
    );

    // Live events, one watch at a time, then progress again at the new revision.
    put("foo", "v2");
    assert_eq!(
        etcdctl.expect_lines(3),
        lines(&["PUT", "foo", "v2"]),
        "{label}"
    );
    let bar2 = put("bar", "b2");
    assert_eq!(
        etcdctl.expect_lines(5),
        lines(&["PUT", "bar", "b1", "bar", "b2"]),
        "{label}: the --prev-kv watch prints the previous value"
    );
    etcdctl.command("progress");
    assert_eq!(
        etcdctl.expect_lines(2),
        vec![notify(bar2), notify(bar2)],
        "{label}"
    );

    // A write to a key no watch covers moves the revision; progress reports it.
    let other = put("unwatched", "x");
    etcdctl.command("progress");
    assert_eq!(
        etcdctl.expect_lines(2),
        vec![notify(other), notify(other)],
        "{label}"
    );
    // Revisions relative to the session's first put, so the two sides compare.
    etcdctl
        .transcript
        .iter()
        .map(|l| match l.strip_prefix("progress notify: ") {
            Some(rev) => format!("progress notify: +{}", rev.parse::<i64>().unwrap() - foo1),
            None => l.clone(),
        })
        .collect()
}

#[test]
fn etcdctl_interactive_watch_with_progress_matches_etcd() {
    let sides = [
        ("etcd", MemberProgram::Etcd(common::etcd_binary())),
        ("raftkv", common::raftkv_program()),
    ];
    let mut transcripts = Vec::new();
    for (label, program) in sides {
        let cluster = LocalCluster::start(ClusterSpec::new(program, &format!("wi-{label}"), 1))
            .expect("cannot start the local cluster");
        transcripts.push(session(label, &cluster));
    }
    assert_eq!(
        transcripts[0], transcripts[1],
        "etcd (left) and raftkv (right) differ"
    );
}
