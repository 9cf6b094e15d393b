//! Real member processes, one per namespace: start, SIGKILL, restart on the same data
//! directory, SIGSTOP/SIGCONT, and the injected clock rate.
//!
//! A member is started as `ip netns exec <ns> <member binary> <etcd flags>`; `ip netns exec`
//! execs the binary in place, so the child's pid is the member's pid and signals reach it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::faults::FaultArgs;
use crate::netns::Net;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// Timing of the members. Election timeouts are generous: on a loaded 2-core machine,
/// scheduling delays look like network delays.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_ms: 100,
            election_ms: 1000,
        }
    }
}

/// Faults injected inside the members of a run (see [`crate::faults`]). The clock rate is
/// always injectable: every member gets a rate file, at rate 1 until the nemesis skews it.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemberFaults {
    /// Serve linearizable reads locally, without ReadIndex (the negative control).
    pub stale_reads: bool,
    /// Keep written data in memory until fsync, so a SIGKILL loses un-fsynced writes.
    pub lose_unsynced: bool,
    /// Broken watch responses on the first member only (the watch checker's negative
    /// control: watchers on the other members see the real events).
    pub watch: Option<crate::faults::WatchFault>,
}

struct Member {
    name: String,
    data_dir: PathBuf,
    clock_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started empty to join the running cluster (after a member replacement): every start
    /// from then on says `--initial-cluster-state existing`, as an operator's would.
    joined: bool,
}

/// The running members of one run.
pub struct Cluster {
    pub net: Net,
    binary: PathBuf,
    members: Vec<Member>,
    token: String,
    timing: Timing,
    faults: MemberFaults,
}

impl Cluster {
    /// Starts every member of a new cluster, with data and logs under `dir`.
    pub fn start(
        net: Net,
        binary: &Path,
        dir: &Path,
        timing: Timing,
        faults: MemberFaults,
    ) -> Result<Cluster> {
        if !binary.exists() {
            anyhow::bail!("member binary {} does not exist", binary.display());
        }
        let members = (0..net.members())
            .map(|i| Member {
                name: format!("m{}", i + 1),
                data_dir: dir.join(format!("data-m{}", i + 1)),
                clock_file: dir.join(format!("clock-rate-m{}", i + 1)),
                log: dir.join(format!("member-m{}.log", i + 1)),
                child: None,
                paused: false,
                joined: false,
            })
            .collect();
        let mut cluster = Cluster {
            net,
            binary: binary.to_path_buf(),
            members,
            token: format!("jepsen-{}", dir.display()),
            timing,
            faults,
        };
        for i in 0..cluster.len() {
            cluster.set_clock_rate(i, 1.0)?;
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The gRPC endpoint of member `i`, as the harness reaches it.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}:{CLIENT_PORT}", self.net.member_ip(i))
    }

    /// The peer URL of member `i`.
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://{}:{PEER_PORT}", self.net.member_ip(i))
    }

    fn initial_cluster(&self) -> String {
        (0..self.len())
            .map(|i| {
                format!(
                    "{}=http://{}:{PEER_PORT}",
                    self.members[i].name,
                    self.net.member_ip(i)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let ip = self.net.member_ip(i);
        let client = format!("http://{ip}:{CLIENT_PORT}");
        let peer = format!("http://{ip}:{PEER_PORT}");
        let cluster = self.initial_cluster();
        let m = &self.members[i];
        let faults = FaultArgs {
            stale_reads: self.faults.stale_reads,
            lose_unsynced: self.faults.lose_unsynced,
            clock_rate_file: Some(m.clock_file.clone()),
            watch: self.faults.watch.filter(|_| i == 0),
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("opening {}", m.log.display()))?;
        let log2: File = log.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.net.member_ns(i)])
            .arg(&self.binary)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-token", &self.token])
            .args([
                "--initial-cluster-state",
                if m.joined { "existing" } else { "new" },
            ])
            .args([
                "--heartbeat-interval",
                &self.timing.heartbeat_ms.to_string(),
            ])
            .args(["--election-timeout", &self.timing.election_ms.to_string()])
            .args(faults.to_flags())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting member {}", m.name))?;
        let m = &mut self.members[i];
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// Whether member `i`'s process is running (possibly paused).
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(|c| c.id())
    }

    /// SIGKILL member `i` (its data dir stays).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            if m.paused {
                signal(child.id(), libc::SIGCONT);
            }
            let _ = child.kill();
            child.wait().context("reaping a killed member")?;
        }
        m.paused = false;
        Ok(())
    }

    /// Starts member `i` again on its data directory, if it is not running.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        if self.is_running(i) {
            return Ok(());
        }
        self.members[i].child = None;
        self.spawn(i)
    }

    /// Replaces member `i`'s process by a new member with an empty data directory that joins
    /// the running cluster (it must have been removed and its replacement added already).
    /// The name and addresses stay: only the member id is new.
    pub fn start_empty_joining(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        let dir = &self.members[i].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
        }
        self.members[i].joined = true;
        self.members[i].child = None;
        self.spawn(i)
    }

    /// SIGSTOP member `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, libc::SIGSTOP);
            self.members[i].paused = true;
        }
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, libc::SIGCONT);
        }
        self.members[i].paused = false;
    }

    /// Process state letter from /proc (e.g. 'T' when stopped), as proof a pause is in effect.
    pub fn proc_state(&self, i: usize) -> Option<char> {
        let pid = self.pid(i)?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Sets member `i`'s clock rate (1.0 = normal); the member picks it up within 200 ms.
    pub fn set_clock_rate(&self, i: usize, rate: f64) -> Result<()> {
        let path = &self.members[i].clock_file;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{rate}\n"))?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Undoes every fault: resume paused members, normal clocks, no partition, all running.
    pub fn heal_all(&mut self) -> Result<()> {
        self.net.heal()?;
        for i in 0..self.len() {
            if self.members[i].paused {
                self.resume(i);
            }
            self.set_clock_rate(i, 1.0)?;
            self.restart(i)?;
        }
        Ok(())
    }

    /// The last `lines` lines of member `i`'s log (for failure messages).
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Election timeout, for pauses that must outlast it.
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.timing.election_ms)
    }

    fn stop_all(&mut self) {
        for i in 0..self.len() {
            let _ = self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        // `net` is dropped after this, removing the namespaces.
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}
