//! A 3-member raftkv cluster made of plain `docker run` containers, one private network and
//! one named volume per member, all named after a unique prefix and removed on drop.
//!
//! Members are reachable on the network under the stable aliases raftkv-0..2 (what the
//! compose file and the StatefulSet use as well), and from the host through nsenter.

use crate::docker::{container_pid, container_state, docker, docker_ok, docker_output};
use crate::etcd;
use crate::exec::Output;
use crate::{image_under_test, run_label, unique_prefix};
use raftkv_client::leader::MemberState;
use std::time::{Duration, Instant};

pub struct Member {
    /// Stable name and network alias: raftkv-N.
    pub name: String,
    pub container: String,
    pub volume: String,
}

pub struct Cluster {
    pub prefix: String,
    pub image: String,
    pub network: String,
    pub members: Vec<Member>,
    token: String,
    /// When set, members run as the Kubernetes StatefulSet would run them.
    pod: Option<PodLike>,
    /// Extra `raftkv server` flags every member gets (e.g. a small `--snapshot-count`).
    server_args: Vec<String>,
}

/// Running a member the way the StatefulSet's pod template does: its `args` (with
/// `$(POD_NAME)` and `$(POD_NAMESPACE)` expanded), the headless Service's DNS names, and the
/// pod's security context (read-only root, no capabilities, no privilege escalation, uid
/// 65532, an in-memory /tmp).
#[derive(Clone, Debug)]
pub struct PodLike {
    /// The container's args from the manifest, unexpanded.
    pub args: Vec<String>,
    pub namespace: String,
}

impl PodLike {
    /// `raftkv-N.raftkv.<ns>.svc.cluster.local`, the record the headless Service creates.
    pub fn dns_name(&self, pod: &str) -> String {
        format!("{pod}.raftkv.{}.svc.cluster.local", self.namespace)
    }

    pub fn expand(&self, arg: &str, pod: &str) -> String {
        arg.replace("$(POD_NAME)", pod)
            .replace("$(POD_NAMESPACE)", &self.namespace)
    }

    /// Docker flags matching the pods' securityContext.
    pub const HARDENING: [&'static str; 9] = [
        "--read-only",
        "--tmpfs",
        "/tmp:size=64m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "65532:65532",
    ];
}

impl Cluster {
    /// Creates the network and volumes and starts `size` members.
    pub fn start(test: &str, size: usize) -> Cluster {
        Cluster::start_with(test, size, None, &[])
    }

    /// Like [`Cluster::start`], every member (also one added later) with the extra
    /// `raftkv server` flags `server_args`.
    pub fn start_with_server_args(test: &str, size: usize, server_args: &[&str]) -> Cluster {
        Cluster::start_with(test, size, None, server_args)
    }

    /// Like [`Cluster::start`], with members run as the StatefulSet's pods would be.
    pub fn start_as_pods(test: &str, pod: PodLike) -> Cluster {
        Cluster::start_with(test, 3, Some(pod), &[])
    }

    fn start_with(test: &str, size: usize, pod: Option<PodLike>, server_args: &[&str]) -> Cluster {
        crate::docker::require_environment();
        etcd::require_etcdctl();
        let image = image_under_test();
        let prefix = unique_prefix(test);
        let cluster = Cluster {
            network: format!("{prefix}-net"),
            members: (0..size)
                .map(|i| Member {
                    name: format!("raftkv-{i}"),
                    container: format!("{prefix}-m{i}"),
                    volume: format!("{prefix}-data{i}"),
                })
                .collect(),
            token: prefix.clone(),
            image,
            prefix,
            pod,
            server_args: server_args.iter().map(|a| a.to_string()).collect(),
        };
        let label = run_label();
        let mine = cluster.own_label();
        docker_ok(&[
            "network",
            "create",
            "--label",
            &label,
            "--label",
            &mine,
            &cluster.network,
        ]);
        for m in &cluster.members {
            docker_ok(&[
                "volume", "create", "--label", &label, "--label", &mine, &m.volume,
            ]);
        }
        for i in 0..size {
            cluster.run_member(i);
        }
        cluster
    }

    fn own_label(&self) -> String {
        format!("raftkv-docker-cluster={}", self.prefix)
    }

    /// `--initial-cluster` for all members, with their stable aliases.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{0}=http://{0}:2380", m.name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client URLs of all members as seen from inside the network.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}:2379", m.name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `docker run -d` member `i` with the same flags as the compose file.
    pub fn run_member(&self, i: usize) {
        if let Some(pod) = &self.pod {
            return self.run_member_as_pod(i, pod);
        }
        self.run_server(i, &self.initial_cluster(), "new");
    }

    /// Adds member `raftkv-<members.len()>` on a new empty volume and starts it with
    /// `--initial-cluster-state existing` and `initial_cluster` (what `member add` printed as
    /// `ETCD_INITIAL_CLUSTER`): how an operator starts a member added to a running cluster.
    /// Returns its index.
    pub fn add_joining_member(&mut self, initial_cluster: &str) -> usize {
        assert!(
            self.pod.is_none(),
            "joining members are run with plain flags"
        );
        let i = self.members.len();
        let m = Member {
            name: format!("raftkv-{i}"),
            container: format!("{}-m{i}", self.prefix),
            volume: format!("{}-data{i}", self.prefix),
        };
        let (label, mine) = (run_label(), self.own_label());
        docker_ok(&[
            "volume", "create", "--label", &label, "--label", &mine, &m.volume,
        ]);
        self.members.push(m);
        self.run_server(i, initial_cluster, "existing");
        i
    }

    /// The peer URL member `i` advertises.
    pub fn peer_url(&self, i: usize) -> String {
        format!("http://{}:2380", self.members[i].name)
    }

    fn run_server(&self, i: usize, initial_cluster: &str, state: &str) {
        let m = &self.members[i];
        let label = run_label();
        let mine = self.own_label();
        let volume = format!("{}:/data", m.volume);
        let advertise_client = format!("http://{}:2379", m.name);
        let advertise_peer = format!("http://{}:2380", m.name);
        let mut cmd = vec![
            "run",
            "-d",
            "--name",
            &m.container,
            "--hostname",
            &m.name,
            "--network",
            &self.network,
            "--network-alias",
            &m.name,
            "--label",
            &label,
            "--label",
            &mine,
            "-v",
            &volume,
            "--stop-timeout",
            "10",
            &self.image,
            "server",
            "--name",
            &m.name,
            "--data-dir",
            "/data",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            &advertise_client,
            "--listen-peer-urls",
            "http://0.0.0.0:2380",
            "--initial-advertise-peer-urls",
            &advertise_peer,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            &self.token,
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
        ];
        cmd.extend(self.server_args.iter().map(String::as_str));
        docker_ok(&cmd);
    }

    fn run_member_as_pod(&self, i: usize, pod: &PodLike) {
        let m = &self.members[i];
        let (label, mine) = (run_label(), self.own_label());
        let volume = format!("{}:/data", m.volume);
        let alias = pod.dns_name(&m.name);
        let mut cmd: Vec<String> = [
            "run",
            "-d",
            "--name",
            &m.container,
            "--hostname",
            &m.name,
            "--network",
            &self.network,
            "--network-alias",
            &alias,
            "--label",
            &label,
            "--label",
            &mine,
            "-v",
            &volume,
            "--stop-timeout",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cmd.extend(PodLike::HARDENING.iter().map(|s| s.to_string()));
        cmd.push(self.image.clone());
        cmd.extend(pod.args.iter().map(|a| pod.expand(a, &m.name)));
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        docker_ok(&refs);
    }

    /// Runs a client container with the pods' security context (see [`PodLike::HARDENING`]).
    pub fn hardened_client(&self, args: &[&str], limit: Duration) -> Output {
        let mut full: Vec<&str> = PodLike::HARDENING.to_vec();
        full.push("--");
        full.extend_from_slice(args);
        self.client_with(&full, limit)
    }

    pub fn pid(&self, i: usize) -> Result<u32, String> {
        container_pid(&self.members[i].container)
    }

    pub fn status(&self, i: usize) -> Result<MemberState, String> {
        etcd::status(self.pid(i)?)
    }

    pub fn put(&self, i: usize, key: &str, value: &str) -> Result<(), String> {
        etcd::put(self.pid(i)?, key, value, Duration::from_secs(3))
    }

    /// `docker kill` (SIGKILL): the member dies without any chance to flush.
    pub fn kill(&self, i: usize) {
        docker_ok(&["kill", &self.members[i].container]);
    }

    /// `docker stop` (SIGTERM, then SIGKILL after 10 s): how long it took and the exit code.
    pub fn stop(&self, i: usize) -> (Duration, i64) {
        let t = Instant::now();
        docker_ok(&["stop", "-t", "10", &self.members[i].container]);
        let took = t.elapsed();
        let (_, code) = container_state(&self.members[i].container).unwrap_or((false, -1));
        (took, code)
    }

    /// Starts a stopped or killed member again, on its own volume.
    pub fn restart(&self, i: usize) {
        docker_ok(&["start", &self.members[i].container]);
    }

    pub fn pause(&self, i: usize) {
        docker_ok(&["pause", &self.members[i].container]);
    }

    pub fn unpause(&self, i: usize) {
        docker_ok(&["unpause", &self.members[i].container]);
    }

    /// Cuts member `i` off the cluster network (it keeps running).
    pub fn disconnect(&self, i: usize) {
        docker_ok(&[
            "network",
            "disconnect",
            &self.network,
            &self.members[i].container,
        ]);
    }

    /// Reconnects member `i` under its stable alias (an alias does not survive a disconnect).
    pub fn reconnect(&self, i: usize) {
        let m = &self.members[i];
        docker_ok(&[
            "network",
            "connect",
            "--alias",
            &m.name,
            &self.network,
            &m.container,
        ]);
    }

    /// Removes member `i` and its data, then starts it again on an empty volume with the
    /// same identity flags: what an operator who wiped a disk would do.
    pub fn wipe_and_rerun(&self, i: usize) {
        self.destroy(i);
        let m = &self.members[i];
        let (label, mine) = (run_label(), self.own_label());
        docker_ok(&[
            "volume", "create", "--label", &label, "--label", &mine, &m.volume,
        ]);
        self.run_member(i);
    }

    /// Removes member `i`'s container and its volume: a machine lost with its disk.
    pub fn destroy(&self, i: usize) {
        let m = &self.members[i];
        docker_ok(&["rm", "-f", "-v", &m.container]);
        docker_ok(&["volume", "rm", &m.volume]);
    }

    pub fn state(&self, i: usize) -> (bool, i64) {
        container_state(&self.members[i].container).unwrap_or((false, -1))
    }

    /// Runs the image once as a client container on the cluster network (`--rm`), like the
    /// course's client pod; bounded by `limit`.
    pub fn client(&self, args: &[&str], limit: Duration) -> Output {
        let mut full = vec!["--"];
        full.extend_from_slice(args);
        self.client_with(&full, limit)
    }

    /// `flags -- args`: docker flags before the image, then, after the first `--`, the
    /// client's arguments.
    fn client_with(&self, flags_and_args: &[&str], limit: Duration) -> Output {
        let (flags, args) = match flags_and_args.iter().position(|a| *a == "--") {
            Some(p) => (&flags_and_args[..p], &flags_and_args[p + 1..]),
            None => (&[][..], flags_and_args),
        };
        let name = format!("{}-client-{}", self.prefix, client_seq());
        let (label, mine) = (run_label(), self.own_label());
        let mut full = vec![
            "run",
            "--rm",
            "--name",
            &name,
            "--network",
            &self.network,
            "--label",
            &label,
            "--label",
            &mine,
        ];
        full.extend_from_slice(flags);
        full.push(&self.image);
        full.extend_from_slice(args);
        let out = crate::exec::run(std::process::Command::new("docker").args(&full), limit);
        if out.timed_out {
            let _ = docker(&["rm", "-f", &name]);
        }
        out
    }

    /// The last `tail` lines of member `i`'s log (stdout and stderr).
    pub fn logs(&self, i: usize, tail: usize) -> String {
        let out = docker_output(&[
            "logs",
            "--tail",
            &tail.to_string(),
            &self.members[i].container,
        ]);
        format!("{}{}", out.stdout, out.stderr)
    }
}

fn client_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, m) in self.members.iter().enumerate() {
                eprintln!(
                    "---- last log lines of {} ({}) ----\n{}",
                    m.name,
                    m.container,
                    self.logs(i, 40)
                );
            }
        }
        remove_labelled(&self.own_label());
    }
}

/// Removes every container, network and volume carrying `label` (ours only).
pub fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            // A paused container cannot be removed until unpaused.
            let mut unpause = vec!["unpause"];
            unpause.extend(&ids);
            let _ = docker_output(&unpause);
            let mut rm = vec!["rm", "-f", "-v"];
            rm.extend(&ids);
            let _ = docker(&rm);
        }
    }
    for kind in ["network", "volume"] {
        if let Ok(names) = docker(&[kind, "ls", "-q", "--filter", &filter]) {
            for n in names.split_whitespace() {
                if let Err(e) = docker(&[kind, "rm", n]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }
}
