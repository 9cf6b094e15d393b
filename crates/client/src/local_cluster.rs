//! A cluster of real member processes on 127.0.0.1, owned by this process.
//!
//! `raftkv demo`, `raftkv cluster`, the `raftkv` integration tests and the server crate's own
//! tests all need the same thing: start N members with etcd's flags on free loopback ports,
//! kill one with SIGKILL, restart it from its own data directory, and be certain that no member
//! outlives us. Because `raftkv server` takes exactly etcd's flags, the same code starts a real
//! etcd cluster too, which is what the differential tests compare against. (The Jepsen harness
//! starts its members inside network namespaces and keeps its own launcher for that.)
//!
//! Children are killed when the [`LocalCluster`] is dropped (so also on panic and on Ctrl-C when
//! the owner is dropped), and additionally ask the kernel to SIGKILL them if the thread that
//! spawned them dies, so a SIGKILLed test runner does not leave members holding ports.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Which server program the members run. Both take the same command line.
#[derive(Clone, Debug)]
pub enum MemberProgram {
    /// A `raftkv` executable, started as `raftkv server <flags>`.
    Raftkv(PathBuf),
    /// An `etcd` executable, started as `etcd <flags>`.
    Etcd(PathBuf),
    /// The server crate's bare member executable (`raftkv-member <flags>`): what that crate's
    /// own tests run, since they cannot depend on the `raftkv` binary crate.
    BareMember(PathBuf),
}

impl MemberProgram {
    /// The program of this very process (`raftkv server ...`).
    pub fn current_raftkv() -> Result<Self> {
        Ok(MemberProgram::Raftkv(
            std::env::current_exe().context("cannot find the path of the running raftkv")?,
        ))
    }

    /// A short name for reports ("raftkv" or "etcd").
    pub fn label(&self) -> &'static str {
        match self {
            MemberProgram::Raftkv(_) | MemberProgram::BareMember(_) => "raftkv",
            MemberProgram::Etcd(_) => "etcd",
        }
    }

    fn command(&self) -> Command {
        match self {
            MemberProgram::Raftkv(path) => {
                let mut command = Command::new(path);
                command.arg("server");
                command
            }
            MemberProgram::Etcd(path) | MemberProgram::BareMember(path) => Command::new(path),
        }
    }
}

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub program: MemberProgram,
    /// Member names, one per member (e.g. `ss-0`, `ss-1`, `ss-2`).
    pub names: Vec<String>,
    /// Parent of the members' data directories; `None` means a fresh temporary directory that
    /// is deleted with the cluster.
    pub data_root: Option<PathBuf>,
    pub token: String,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Extra flags given to every member (e.g. `--max-txn-ops=16`).
    pub extra_args: Vec<String>,
    /// Fixed `(client, peer)` ports per member; `None` picks free ports.
    pub ports: Option<Vec<(u16, u16)>>,
}

impl ClusterSpec {
    /// `size` members named `<prefix>-0 .. <prefix>-(size-1)` with etcd's default timings.
    pub fn new(program: MemberProgram, prefix: &str, size: usize) -> Self {
        ClusterSpec {
            program,
            names: (0..size).map(|i| format!("{prefix}-{i}")).collect(),
            data_root: None,
            token: format!("{prefix}-{}", std::process::id()),
            heartbeat_ms: 100,
            election_ms: 1000,
            extra_args: Vec::new(),
            ports: None,
        }
    }
}

/// One member: its fixed identity (name, ports, data dir) and its current process, if running.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// `127.0.0.1:<client port>`: the form `--endpoints` takes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// A running local cluster. Dropping it SIGKILLs every member still running.
pub struct LocalCluster {
    spec: ClusterSpec,
    members: Vec<Member>,
    data_root: PathBuf,
    /// Keeps the temporary data root alive (and deletes it on drop) when none was given.
    _temp_root: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Picks free ports, creates data directories and starts every member.
    ///
    /// Returns once every process has been spawned; it does not wait for a leader (the caller
    /// decides how to observe that).
    pub fn start(spec: ClusterSpec) -> Result<Self> {
        let mut cluster = Self::create(spec)?;
        for i in 0..cluster.members.len() {
            cluster.start_member(i)?;
        }
        Ok(cluster)
    }

    /// [`LocalCluster::start`] without starting anyone: the caller starts members with
    /// [`LocalCluster::start_member`] (e.g. to have one join later than the others).
    pub fn create(spec: ClusterSpec) -> Result<Self> {
        if spec.names.is_empty() {
            bail!("a cluster needs at least one member");
        }
        let (temp_root, data_root) = match &spec.data_root {
            Some(root) => {
                fs::create_dir_all(root)
                    .with_context(|| format!("cannot create data directory {}", root.display()))?;
                (None, root.clone())
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("raftkv-cluster-")
                    .tempdir()
                    .context("cannot create a temporary data directory")?;
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let ports = match &spec.ports {
            Some(fixed) if fixed.len() == spec.names.len() => fixed
                .iter()
                .flat_map(|&(client, peer)| [client, peer])
                .collect(),
            Some(_) => bail!("give exactly one (client, peer) port pair per member"),
            None => free_loopback_ports(spec.names.len() * 2)?,
        };
        let members = spec
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| Member {
                name: name.clone(),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: data_root.join(format!("{name}.data")),
                log_path: data_root.join(format!("{name}.log")),
                child: None,
            })
            .collect();
        Ok(LocalCluster {
            spec,
            members,
            data_root,
            _temp_root: temp_root,
        })
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, index: usize) -> &Member {
        &self.members[index]
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    pub fn program(&self) -> &MemberProgram {
        &self.spec.program
    }

    /// Client endpoints (`127.0.0.1:port`) of all members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Client endpoints of the members that are currently running.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(Member::endpoint)
            .collect()
    }

    /// The `--initial-cluster` value shared by every member.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The full etcd-style command line of member `index` (without the program).
    pub fn member_args(&self, index: usize) -> Vec<String> {
        let m = &self.members[index];
        let mut args = vec![
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data_dir.display()),
            format!("--listen-client-urls={}", m.client_url()),
            format!("--advertise-client-urls={}", m.client_url()),
            format!("--listen-peer-urls={}", m.peer_url()),
            format!("--initial-advertise-peer-urls={}", m.peer_url()),
            format!("--initial-cluster={}", self.initial_cluster()),
            "--initial-cluster-state=new".to_string(),
            format!("--initial-cluster-token={}", self.spec.token),
            format!("--heartbeat-interval={}", self.spec.heartbeat_ms),
            format!("--election-timeout={}", self.spec.election_ms),
        ];
        args.extend(self.spec.extra_args.iter().cloned());
        args
    }

    /// Starts member `index` (again) with its original flags and data directory. Its output
    /// is appended to its log file so a restart's log follows the crash's.
    pub fn start_member(&mut self, index: usize) -> Result<()> {
        self.start_member_with(index, &[])
    }

    /// [`LocalCluster::start_member`] with `extra` flags after the usual ones, for this
    /// start only (e.g. `--force-new-cluster`).
    pub fn start_member_with(&mut self, index: usize, extra: &[&str]) -> Result<()> {
        let mut args = self.member_args(index);
        args.extend(extra.iter().map(|s| s.to_string()));
        self.start_member_with_args(index, args)
    }

    /// Starts member `index` (again) on its data directory with the full command line
    /// `args` (for example [`LocalCluster::member_args`] with one flag changed), its output
    /// appended to its log file like [`LocalCluster::start_member`].
    pub fn start_member_with_args(&mut self, index: usize, args: Vec<String>) -> Result<()> {
        if self.members[index].child.is_some() {
            bail!("member {} is already running", self.members[index].name);
        }
        let member = &self.members[index];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .with_context(|| format!("cannot open log file {}", member.log_path.display()))?;
        let log_err = log.try_clone()?;
        let mut command = self.spec.program.command();
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // SAFETY: prctl is async-signal-safe and only affects the child being created.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start member {} ({:?})",
                member.name, self.spec.program
            )
        })?;
        self.members[index].child = Some(child);
        Ok(())
    }

    /// SIGKILLs member `index` and reaps it. Its data directory is left as the crash left it.
    pub fn kill_member(&mut self, index: usize) -> Result<()> {
        let member = &mut self.members[index];
        let Some(mut child) = member.child.take() else {
            bail!("member {} is not running", member.name);
        };
        // Child::kill sends SIGKILL on Unix.
        child
            .kill()
            .with_context(|| format!("cannot kill member {}", member.name))?;
        child.wait()?;
        Ok(())
    }

    /// Asks member `index` to stop with SIGTERM and waits up to `grace` for it to exit, then
    /// SIGKILLs it. Returns the exit status if it stopped by itself.
    pub fn stop_member(&mut self, index: usize, grace: Duration) -> Result<Option<ExitStatus>> {
        let member = &mut self.members[index];
        let Some(mut child) = member.child.take() else {
            return Ok(None);
        };
        // SAFETY: plain kill(2) on a pid we own and have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        match reap_within(&mut child, Instant::now() + grace)? {
            Some(status) => Ok(Some(status)),
            None => {
                let _ = child.kill();
                child.wait()?;
                Ok(None)
            }
        }
    }

    /// Waits up to `limit` for member `index` to exit by itself (a member expected to refuse
    /// to run, e.g. after losing its data); fails if it is still running then.
    pub fn wait_for_exit(&mut self, index: usize, limit: Duration) -> Result<ExitStatus> {
        let member = &mut self.members[index];
        let Some(child) = member.child.as_mut() else {
            bail!("member {} is not running", member.name);
        };
        match reap_within(child, Instant::now() + limit)? {
            Some(status) => {
                member.child = None;
                Ok(status)
            }
            None => bail!("member {} still runs after {limit:?}", member.name),
        }
    }

    /// Stops every member (SIGTERM to all, then SIGKILL to those still running after
    /// `grace`). Returns the names of members that had to be killed.
    pub fn stop_all(&mut self, grace: Duration) -> Result<Vec<String>> {
        for member in &self.members {
            if let Some(child) = &member.child {
                // SAFETY: as in stop_member.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        let mut killed = Vec::new();
        for member in &mut self.members {
            let Some(mut child) = member.child.take() else {
                continue;
            };
            if reap_within(&mut child, deadline)?.is_none() {
                let _ = child.kill();
                child.wait()?;
                killed.push(member.name.clone());
            }
        }
        Ok(killed)
    }

    /// Reports a member process that exited on its own (a crash, a bad flag), with the tail of
    /// its log, so callers can fail fast instead of waiting for a deadline.
    pub fn check_alive(&mut self) -> Result<()> {
        for member in &mut self.members {
            if let Some(child) = &mut member.child {
                if let Some(status) = child.try_wait()? {
                    member.child = None;
                    bail!(
                        "member {} exited unexpectedly ({status}); last log lines:\n{}",
                        member.name,
                        log_tail(&member.log_path, 20)
                    );
                }
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every member's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for member in &self.members {
            out.push_str(&format!(
                "--- {} ({}) ---\n",
                member.name,
                member.log_path.display()
            ));
            out.push_str(&log_tail(&member.log_path, lines));
        }
        out
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `child` until it exits (its status) or `deadline` passes (`None`, still running).
fn reap_within(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of a file, or a note saying it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let mut out = all[start..].join("\n");
            out.push('\n');
            out
        }
        Err(err) => format!("(cannot read {}: {err})\n", path.display()),
    }
}

/// `count` distinct loopback ports below 32768 that were free a moment ago.
///
/// Why below 32768: the kernel hands out 32768–60999 to client sockets, so a port taken from
/// there (port 0) can be grabbed by any outgoing connection before the member binds it.
/// Each process starts at its own offset in [20000, 32000) and walks on from where its last
/// call stopped, skipping ports in use. All listeners are held open until every port is
/// chosen; there is still a short window before the members bind them.
pub fn free_loopback_ports(count: usize) -> Result<Vec<u16>> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..SPAN {
        if listeners.len() == count {
            break;
        }
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    if listeners.len() < count {
        bail!("cannot reserve {count} free loopback ports below 32768");
    }
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}
