//! Joining a running cluster with `--initial-cluster-state existing`, on real processes,
//! through etcdctl: the new member is started with exactly the `ETCD_NAME`,
//! `ETCD_INITIAL_CLUSTER` and `ETCD_INITIAL_CLUSTER_STATE` lines `member add` printed, and an
//! empty data dir.
//!
//! * replacing a failed member: one of three is killed and its data dir wiped, removed,
//!   a new member added and started; it catches up (every key, from a snapshot: the
//!   cluster snapshots every 10 entries), becomes a voter, and the cluster survives
//!   stopping another original member;
//! * a member started for an id the cluster does not know fails with a clear error;
//! * growing 3 → 5 → 3 (two members added, two original ones removed) while a writer
//!   runs: no acknowledged write is lost (the new members catch up from the log).
//!
//! `RAFTKV_TEST_BACKEND=etcd` runs the same against etcd 3.4. Free loopback ports.

mod common;

use common::{etcdctl_at as etcdctl, is_voter, member_id_of as id_of, member_lines};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv_client::local_cluster::{free_loopback_ports, ClusterSpec, LocalCluster, MemberProgram};

/// A member started outside the [`LocalCluster`], stopped (SIGKILL) when dropped.
struct Extra {
    child: Child,
    client_url: String,
    peer_url: String,
    log: PathBuf,
}

impl Drop for Extra {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Extra {
    fn log_tail(&self) -> String {
        raftkv_client::local_cluster::log_tail(&self.log, 30)
    }
}

/// The value of `KEY="value"` in etcdctl's `member add` answer.
fn env_line(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=\"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .to_string()
}

/// `member add NAME` through `ep` (retried while etcd's health check says the cluster is
/// unhealthy), then start the member with the lines it printed and an empty data dir.
/// Until it starts (and publishes its name), every member lists it `unstarted`.
fn add_and_start(cluster: &LocalCluster, ep: &str, name: &str, dir: &Path) -> Extra {
    let ports = free_loopback_ports(2).expect("ports");
    let client_url = format!("http://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let out = common::poll_until("member add", Duration::from_secs(30), || {
        let (ok, out, err) = etcdctl(
            ep,
            &["member", "add", name, &format!("--peer-urls={peer_url}")],
        );
        if ok {
            Ok(out)
        } else {
            assert!(err.contains("unhealthy cluster"), "{err}");
            Err(err)
        }
    });
    assert_eq!(env_line(&out, "ETCD_NAME"), name);
    assert_eq!(env_line(&out, "ETCD_INITIAL_CLUSTER_STATE"), "existing");
    let initial_cluster = env_line(&out, "ETCD_INITIAL_CLUSTER");
    let id = id_of(ep, &peer_url);
    assert!(
        member_lines(ep).contains(&format!("{id}, unstarted, , {peer_url}, , false")),
        "{:?}",
        member_lines(ep)
    );
    start_extra(
        cluster,
        name,
        dir,
        &client_url,
        &peer_url,
        &initial_cluster,
        "existing",
    )
}

fn start_extra(
    cluster: &LocalCluster,
    name: &str,
    dir: &Path,
    client_url: &str,
    peer_url: &str,
    initial_cluster: &str,
    state: &str,
) -> Extra {
    let data_dir = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    let mut cmd = match cluster.program() {
        MemberProgram::Raftkv(p) => {
            let mut c = Command::new(p);
            c.arg("server");
            c
        }
        MemberProgram::Etcd(p) | MemberProgram::BareMember(p) => Command::new(p),
    };
    // The flags every member of the cluster has (token, timing), then the new member's own.
    let own = [
        "--name",
        "--data-dir",
        "--listen-client-urls",
        "--advertise-client-urls",
        "--listen-peer-urls",
        "--initial-advertise-peer-urls",
        "--initial-cluster=",
        "--initial-cluster-state",
    ];
    let shared: Vec<String> = cluster
        .member_args(0)
        .into_iter()
        .filter(|a| !own.iter().any(|o| a.starts_with(o)))
        .collect();
    let file = std::fs::File::create(&log).expect("log file");
    cmd.args(shared)
        .arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster={initial_cluster}"))
        .arg(format!("--initial-cluster-state={state}"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    Extra {
        child: cmd.spawn().expect("start the new member"),
        client_url: client_url.to_string(),
        peer_url: peer_url.to_string(),
        log,
    }
}

/// `member remove ID` through `ep`, asked again while it cannot be made yet: etcd's health
/// check (`unhealthy cluster`), or an election under way (`leader changed` may or may not
/// have removed it, and asking again then answers `member not found`).
fn remove_member(ep: &str, id: &str) {
    let mut transient = false;
    common::poll_until("member remove", Duration::from_secs(30), || {
        let (ok, out, err) = etcdctl(ep, &["member", "remove", id]);
        if ok {
            assert!(out.contains("removed from cluster"), "{out}");
            return Ok(());
        }
        if transient && err.contains("member not found") {
            return Ok(());
        }
        assert!(
            [
                "unhealthy cluster",
                "leader changed",
                "no leader",
                "timed out",
                "deadline exceeded"
            ]
            .iter()
            .any(|t| err.contains(t)),
            "{err}"
        );
        transient = true;
        Err(err)
    });
}

/// Linearizable reads of `keys` through `ep` give `value_of(key)`.
fn has_all(ep: &str, keys: &[String], value_of: impl Fn(&str) -> String) -> Result<(), String> {
    for k in keys {
        let (ok, out, err) = etcdctl(ep, &["get", k, "--print-value-only", "--consistency=l"]);
        if !ok {
            return Err(err);
        }
        if out.trim() != value_of(k) {
            return Err(format!("{k}: {out:?}"));
        }
    }
    Ok(())
}

#[test]
fn a_failed_member_is_replaced_by_a_new_one_that_joins() {
    // Snapshots every 10 entries: the leader has compacted its log by the time the new
    // member asks for it, so the new member catches up from a snapshot.
    let mut spec = ClusterSpec::new(common::backend_program(), "rep", 3);
    spec.extra_args = vec!["--snapshot-count=10".into()];
    let mut cluster = LocalCluster::start(spec).expect("cluster starts");
    let ep0 = cluster.member(0).endpoint();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    for k in &keys {
        common::poll_until("a write", Duration::from_secs(30), || {
            let (ok, _, err) = etcdctl(&ep0, &["put", k, &format!("v-{k}")]);
            ok.then_some(()).ok_or(err)
        });
    }

    // Member 2's disk is lost: killed, data dir wiped, removed.
    let failed_url = cluster.member(2).peer_url();
    let failed = id_of(&ep0, &failed_url);
    cluster.kill_member(2).expect("kill");
    std::fs::remove_dir_all(&cluster.member(2).data_dir).expect("wipe");
    remove_member(&ep0, &failed);
    assert!(!member_lines(&ep0).iter().any(|l| l.contains(&failed)));

    // A member started with `existing` for an id the cluster does not know fails, clearly.
    let dir = cluster.data_root().join("extra");
    std::fs::create_dir_all(&dir).unwrap();
    let ports = free_loopback_ports(2).expect("ports");
    let stranger_url = format!("http://127.0.0.1:{}", ports[1]);
    let initial = format!(
        "{}={},{}={},stranger={stranger_url}",
        cluster.member(0).name,
        cluster.member(0).peer_url(),
        cluster.member(1).name,
        cluster.member(1).peer_url()
    );
    let mut stranger = start_extra(
        &cluster,
        "stranger",
        &dir,
        &format!("http://127.0.0.1:{}", ports[0]),
        &stranger_url,
        &initial,
        "existing",
    );
    let status = common::poll_until("the stranger to stop", Duration::from_secs(30), || {
        stranger
            .child
            .try_wait()
            .unwrap()
            .ok_or("still running".to_string())
    });
    assert!(!status.success(), "{}", stranger.log_tail());
    let said = stranger.log_tail();
    assert!(said.contains("error validating peerURLs"), "{said}");
    drop(stranger);

    // Its replacement joins as the member `member add` made.
    let mut new = add_and_start(&cluster, &ep0, "replacement", &dir);
    let ep_new = new.client_url.clone();
    common::poll_until(
        "the new member has every key",
        Duration::from_secs(60),
        || {
            has_all(&ep_new, &keys, |k| format!("v-{k}"))
                .map_err(|e| format!("{e}\nits log:\n{}", new.log_tail()))
        },
    );
    if common::backend_program().label() == "raftkv" {
        let log = std::fs::read_to_string(&new.log).unwrap();
        assert!(log.contains("installing snapshot from the leader"), "{log}");
    }
    // Every member lists it with the name and client URL it published.
    let new_id = id_of(&ep0, &new.peer_url);
    let started = format!(
        "{new_id}, started, replacement, {}, {}, false",
        new.peer_url, new.client_url
    );
    for ep in [&ep0, &cluster.member(1).endpoint(), &ep_new] {
        common::poll_until(
            "the new member listed started",
            Duration::from_secs(30),
            || {
                let lines = member_lines(ep);
                lines
                    .contains(&started)
                    .then_some(())
                    .ok_or(format!("{lines:?}"))
            },
        );
    }
    assert!(!member_lines(&ep0).iter().any(|l| l.contains(&failed)));
    common::poll_until("the new member is a voter", Duration::from_secs(30), || {
        is_voter(&ep_new)
    });

    // Without member 1 the quorum is member 0 and the new member.
    cluster
        .stop_member(1, Duration::from_secs(10))
        .expect("stop member 1");
    common::poll_until("a write without member 1", Duration::from_secs(30), || {
        let (ok, out, err) = etcdctl(&ep_new, &["put", "after", "replacement"]);
        (ok && out.trim() == "OK").then_some(()).ok_or(err)
    });
    has_all(&ep0, &["after".to_string()], |_| "replacement".into()).expect("read on member 0");
    assert!(
        new.child_running(),
        "the new member stopped: {}",
        new.log_tail()
    );
}

impl Extra {
    fn child_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

#[test]
fn the_cluster_grows_to_five_and_shrinks_to_three_under_writes() {
    let mut cluster = LocalCluster::start(ClusterSpec::new(common::backend_program(), "grow", 3))
        .expect("cluster starts");
    let ep2 = cluster.member(2).endpoint();
    common::poll_until("a writable cluster", Duration::from_secs(30), || {
        let (ok, _, err) = etcdctl(&ep2, &["put", "start", "1"]);
        ok.then_some(()).ok_or(err)
    });

    // The writer: one key after another through member 2 (which stays), each recorded
    // once acknowledged; it stops by itself after 3 minutes at the latest.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, acked, ep) = (stop.clone(), acked.clone(), ep2.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
                let key = format!("w{n:05}");
                let (ok, out, _) = etcdctl(&ep, &["put", &key, &key]);
                if ok && out.trim() == "OK" {
                    acked.lock().unwrap().push(key);
                }
                n += 1;
            }
        })
    };
    let acked_so_far = || acked.lock().unwrap().len();

    let dir = cluster.data_root().join("extra");
    std::fs::create_dir_all(&dir).unwrap();
    let mut extras = Vec::new();
    for name in ["grow-3", "grow-4"] {
        let before = acked_so_far();
        let m = add_and_start(&cluster, &ep2, name, &dir);
        let ep = m.client_url.clone();
        common::poll_until("the new member is a voter", Duration::from_secs(60), || {
            is_voter(&ep)
        });
        extras.push(m);
        common::poll_until("writes go on", Duration::from_secs(30), || {
            (acked_so_far() > before + 3)
                .then_some(())
                .ok_or("no new write".to_string())
        });
    }
    assert_eq!(member_lines(&ep2).len(), 5);

    // Back to three: the two other founders go (a leader among them hands over).
    for i in [0, 1] {
        let before = acked_so_far();
        let id = id_of(&ep2, &cluster.member(i).peer_url());
        remove_member(&ep2, &id);
        // A removed member stops by itself (status 0, as etcd).
        let status = cluster
            .wait_for_exit(i, Duration::from_secs(30))
            .expect("the removed member stops");
        assert!(status.success(), "{status:?}");
        common::poll_until("writes go on", Duration::from_secs(30), || {
            (acked_so_far() > before + 3)
                .then_some(())
                .ok_or("no new write".to_string())
        });
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(member_lines(&ep2).len(), 3);

    // Every acknowledged write is there, on each of the three.
    let keys = acked.lock().unwrap().clone();
    assert!(keys.len() > 20, "only {} writes acknowledged", keys.len());
    for ep in [
        ep2.clone(),
        extras[0].client_url.clone(),
        extras[1].client_url.clone(),
    ] {
        let (ok, out, err) = etcdctl(
            &ep,
            &["get", "w", "--prefix", "--keys-only", "--consistency=l"],
        );
        assert!(ok, "{err}");
        let present: std::collections::BTreeSet<&str> =
            out.lines().filter(|l| !l.is_empty()).collect();
        let lost: Vec<&String> = keys
            .iter()
            .filter(|k| !present.contains(k.as_str()))
            .collect();
        assert!(lost.is_empty(), "{ep} lost acknowledged writes: {lost:?}");
    }
    for m in &mut extras {
        assert!(
            m.child_running(),
            "{} stopped: {}",
            m.peer_url,
            m.log_tail()
        );
    }
}
