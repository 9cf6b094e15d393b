//! The `docker` command line, each call bounded in time.

use crate::exec::{run, Output};
use std::process::Command;
use std::time::Duration;

/// Generous: `docker stop` alone may take the 10 s grace period.
const DOCKER_CALL_LIMIT: Duration = Duration::from_secs(60);

pub fn docker_output(args: &[&str]) -> Output {
    run(Command::new("docker").args(args), DOCKER_CALL_LIMIT)
}

/// `docker <args>`; `Ok(trimmed stdout)` on success.
pub fn docker(args: &[&str]) -> Result<String, String> {
    docker_output(args)
        .into_result(&format!("docker {}", args.join(" ")))
        .map(|s| s.trim().to_string())
}

/// Like [`docker`] but panics with the error: for steps a test cannot go on without.
pub fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// PID of a running container's main process, as the host sees it (for nsenter).
pub fn container_pid(container: &str) -> Result<u32, String> {
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", container])?;
    match pid.parse::<u32>() {
        Ok(0) => Err(format!("container {container} is not running")),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("container {container}: unexpected pid {pid:?}")),
    }
}

/// `(running, exit_code)` of a container.
pub fn container_state(container: &str) -> Result<(bool, i64), String> {
    let s = docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.State.ExitCode}}",
        container,
    ])?;
    let mut it = s.split_whitespace();
    let running = it.next() == Some("true");
    let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
    Ok((running, code))
}

/// Fails loudly when Docker or root (needed by nsenter) is missing.
pub fn require_environment() {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        panic!("the Docker daemon is not reachable: {e}");
    }
    let uid = run(Command::new("id").arg("-u"), Duration::from_secs(5)).stdout;
    assert_eq!(
        uid.trim(),
        "0",
        "these tests reach members through their network namespace with nsenter: run as root"
    );
}
