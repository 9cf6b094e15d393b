//! Running a child process with a hard deadline: every external command a test issues is
//! bounded in time, so a hung `docker` or client call fails the test instead of hanging it.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or killed) command produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; `None` when killed by a signal or by our deadline.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `Ok(stdout)` on exit 0, otherwise a one-line description for error messages.
    pub fn into_result(self, what: &str) -> Result<String, String> {
        if self.success() {
            Ok(self.stdout)
        } else if self.timed_out {
            Err(format!("{what}: timed out"))
        } else {
            Err(format!(
                "{what}: exit {:?}: {}",
                self.code,
                self.stderr.trim().lines().last().unwrap_or("")
            ))
        }
    }
}

/// Runs `cmd` to completion or until `limit` elapses (then kills it).
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match child {
        Ok(child) => wait_with_deadline(child, limit),
        Err(e) => Output {
            code: None,
            stdout: String::new(),
            stderr: format!("cannot start {:?}: {e}", cmd.get_program()),
            timed_out: false,
        },
    }
}

/// Waits for an already spawned child (stdout/stderr piped) with a deadline.
pub fn wait_with_deadline(mut child: Child, limit: Duration) -> Output {
    // Drain both pipes on their own threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    Output {
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
    }
}
