//! The test network: one network namespace per member, a "switch" namespace holding a Linux
//! bridge, and one veth from the harness's (root) namespace into that bridge so the clients
//! reach the members. Addresses are in a private /24 that exists only inside namespaces we
//! create (and on our one root-side veth); no namespace has a default route, and there is no
//! NAT, so nothing can leave the box.
//!
//! Partitions are iptables DROP rules on INPUT inside a member's namespace, matching the source
//! address of another member: the cut is between members only, each client keeps talking to
//! "its" member (as in Jepsen), which is what exposes a deposed leader serving stale reads.
//!
//! Everything is removed by [`Net`]'s `Drop` (deleting a namespace deletes its veths and rules).
//! Namespaces left behind by a harness that was SIGKILLed carry its pid in their name and are
//! removed, with any process still inside, by the next [`Net::create`].

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace this harness creates: `rkj-<pid>-<n>-...`.
const NS_PREFIX: &str = "rkj-";

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails loudly when the host cannot run the harness (not root, no iproute2, no iptables).
pub fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the Jepsen harness needs root (network namespaces, iptables)");
    }
    sh("ip", &["-V"]).context("iproute2 `ip` is required")?;
    sh("iptables", &["--version"]).context("iptables is required (apt-get install iptables)")?;
    Ok(())
}

/// The namespaces, bridge and addresses of one run.
pub struct Net {
    /// Member namespaces, index = member index.
    member_ns: Vec<String>,
    switch_ns: String,
    /// First three octets of the /24, e.g. "10.201.7".
    subnet: String,
    /// Member namespaces currently holding partition rules (to heal quickly).
    created: bool,
}

impl Net {
    /// Creates the topology for `members` members.
    pub fn create(members: usize) -> Result<Net> {
        check_prerequisites()?;
        remove_orphans();
        static RUN: AtomicU32 = AtomicU32::new(0);
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let base = format!("{NS_PREFIX}{pid}-{run}");
        let subnet = format!("10.{}.{}", 100 + pid % 150, 1 + run % 250);
        let mut net = Net {
            member_ns: (0..members).map(|i| format!("{base}-m{}", i + 1)).collect(),
            switch_ns: format!("{base}-sw"),
            subnet,
            created: true,
        };
        // Interface names are at most 15 bytes and must be unique in the root namespace while
        // they are being moved; the host end stays there for the whole run.
        let tag = format!("rkj{}{}", pid % 100_000, run % 100);
        net.build(&tag)?;
        Ok(net)
    }

    fn build(&mut self, tag: &str) -> Result<()> {
        let sw = self.switch_ns.clone();
        sh("ip", &["netns", "add", &sw])?;
        sh("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        for (i, ns) in self.member_ns.clone().iter().enumerate() {
            sh("ip", &["netns", "add", ns])?;
            let (a, b) = (format!("{tag}m{i}"), format!("{tag}s{i}"));
            sh(
                "ip",
                &["link", "add", &a, "type", "veth", "peer", "name", &b],
            )?;
            sh("ip", &["link", "set", &a, "netns", ns])?;
            sh("ip", &["link", "set", &b, "netns", &sw])?;
            sh("ip", &["-n", ns, "link", "set", &a, "name", "eth0"])?;
            let addr = format!("{}/24", self.member_ip(i));
            sh("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            sh("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            sh("ip", &["-n", &sw, "link", "set", &b, "master", "br0"])?;
            sh("ip", &["-n", &sw, "link", "set", &b, "up"])?;
        }
        // The harness's own leg: host end keeps `{tag}h` in the root namespace.
        let (h, hb) = (format!("{tag}h"), format!("{tag}hb"));
        sh(
            "ip",
            &["link", "add", &h, "type", "veth", "peer", "name", &hb],
        )?;
        sh("ip", &["link", "set", &hb, "netns", &sw])?;
        sh("ip", &["-n", &sw, "link", "set", &hb, "master", "br0"])?;
        sh("ip", &["-n", &sw, "link", "set", &hb, "up"])?;
        let addr = format!("{}/24", self.host_ip());
        sh("ip", &["addr", "add", &addr, "dev", &h])?;
        sh("ip", &["link", "set", &h, "up"])?;
        Ok(())
    }

    pub fn members(&self) -> usize {
        self.member_ns.len()
    }

    /// The address of member `i` (0-based).
    pub fn member_ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// The harness's address on the bridge.
    pub fn host_ip(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// The namespace of member `i`.
    pub fn member_ns(&self, i: usize) -> &str {
        &self.member_ns[i]
    }

    /// Member `to` stops receiving anything from member `from` (one direction).
    pub fn drop_from(&self, to: usize, from: usize) -> Result<()> {
        let src = self.member_ip(from);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.member_ns[to],
                "iptables",
                "-w",
                "-A",
                "INPUT",
                "-s",
                &src,
                "-j",
                "DROP",
            ],
        )?;
        Ok(())
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        self.drop_from(a, b)?;
        self.drop_from(b, a)
    }

    /// Number of DROP rules currently installed in member `i`'s namespace (proof a partition
    /// is in effect, for the timeline).
    pub fn rule_count(&self, i: usize) -> Result<usize> {
        let out = sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.member_ns[i],
                "iptables",
                "-w",
                "-S",
                "INPUT",
            ],
        )?;
        Ok(out.lines().filter(|l| l.contains("DROP")).count())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> Result<()> {
        for ns in &self.member_ns {
            sh(
                "ip",
                &["netns", "exec", ns, "iptables", "-w", "-F", "INPUT"],
            )?;
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if !self.created {
            return;
        }
        self.created = false;
        // Deleting the switch namespace deletes the bridge and every veth end in it, which
        // deletes the peers too (including the host end in the root namespace).
        for ns in self
            .member_ns
            .iter()
            .chain(std::iter::once(&self.switch_ns))
        {
            kill_processes_in(ns);
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// SIGKILLs every process still inside namespace `ns` (ours: created by this harness).
fn kill_processes_in(ns: &str) {
    if let Ok(out) = sh("ip", &["netns", "pids", ns]) {
        for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: plain kill(2) on a pid listed inside our own namespace.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Removes namespaces of earlier harness processes that died without cleaning up.
fn remove_orphans() {
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            kill_processes_in(name);
            let _ = sh("ip", &["netns", "del", name]);
        }
    }
}
