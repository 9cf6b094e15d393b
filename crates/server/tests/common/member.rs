//! One `raftkv-member` process started with a hand-written command line (not through
//! `LocalCluster`), for the tests of etcd's flags: its stderr goes to a file the test can
//! read, and it is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_client::local_cluster::free_loopback_ports;

use super::BIN;

/// A member process whose stderr goes to a file; killed on drop.
pub struct Member {
    pub child: Child,
    pub log: PathBuf,
    pub client_url: String,
    pub _dir: tempfile::TempDir,
}

impl Member {
    /// Start `raftkv-member` with `args`; `{client}`, `{peer}` and `{dir}` in them (and in
    /// `file`, written to `{dir}/conf.yml` when given) are replaced by free URLs and the
    /// temporary dir.
    pub fn start(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Member {
        Member::start_in(tempfile::tempdir().unwrap(), args, env, file)
    }

    /// [`Member::start`] in a temporary dir the caller prepared.
    pub fn start_in(
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Member {
        let ports = free_loopback_ports(2).unwrap();
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let fill = |s: &str| {
            s.replace("{client}", &client)
                .replace("{peer}", &peer)
                .replace("{dir}", dir.path().to_str().unwrap())
        };
        if let Some(f) = file {
            std::fs::write(dir.path().join("conf.yml"), fill(f)).unwrap();
        }
        let log = dir.path().join("member.log");
        let mut cmd = Command::new(BIN);
        cmd.args(args.iter().map(|a| fill(a)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, fill(v));
        }
        Member {
            child: cmd.spawn().unwrap(),
            log,
            client_url: client,
            _dir: dir,
        }
    }

    /// The member's temporary dir (`{dir}`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Whether the process has exited (and its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Wait (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "member still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM the member and wait (bounded) for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        self.wait_exit(Duration::from_secs(20))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) for the line etcd's harnesses wait for; panics with the log if the
    /// member exits or never gets there.
    pub fn wait_ready(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log.contains("ready to serve client requests") {
                return log;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("member exited ({st}) before it was ready:\n{log}");
            }
            assert!(Instant::now() < deadline, "member never ready:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
