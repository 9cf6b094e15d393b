//! Issue 15's operator membership changes on real containers (`docker run`), with etcdctl
//! as an operator would type it: replacing a member whose volume was destroyed (t11) and
//! moving the leader to a chosen member (t12). docs/membership.md describes the mechanisms.

use raftkv_docker_tests::cluster::Cluster;
use raftkv_docker_tests::etcd;
use raftkv_docker_tests::report::{measure, measure_duration};
use raftkv_docker_tests::wait::{agreed_leader, poll, wait_converged, wait_for_leader, Leader};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ALL: [usize; 3] = [0, 1, 2];
const LOCAL: &str = "http://127.0.0.1:2379";
/// The members snapshot (and compact their logs) every this many applied entries in t11,
/// so that a member joining later cannot be sent the log from its start.
const SNAPSHOT_COUNT: usize = 20;
/// Enough to read a member's whole log in these short tests.
const ALL_LOG_LINES: usize = 100_000;
/// What a member logs when it replaces its state with a snapshot the leader sent
/// (crates/server/src/node/runtime.rs, `install_snapshot`).
const INSTALLED_SNAPSHOT: &str = "installing snapshot from the leader";
/// What a member logs when it compacted its log up to a snapshot of its own.
const COMPACTED: &str = "snapshot saved and log compacted";

fn first_leader(c: &Cluster) -> Leader {
    let (leader, took) =
        wait_for_leader(c, &ALL, None, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "leader raftkv-{} (term {}) after {took:?}",
        leader.index, leader.term
    );
    leader
}

/// A writer putting one key after another through one member, recording each acknowledged
/// key, and counting failures per phase.
struct Writer {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    acked: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<[usize; 4]>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(pid: u32, prefix: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new([0usize; 4]));
        let thread = {
            let (stop, phase, acked, failures) =
                (stop.clone(), phase.clone(), acked.clone(), failures.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}{n:06}");
                    match etcd::put(pid, &key, &format!("v{n}"), Duration::from_secs(3)) {
                        Ok(()) => acked.lock().unwrap().push(key),
                        Err(_) => failures.lock().unwrap()[phase.load(Ordering::Relaxed)] += 1,
                    }
                    n += 1;
                }
            })
        };
        Writer {
            stop,
            phase,
            acked,
            failures,
            thread: Some(thread),
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` further writes were acknowledged: the cluster takes writes now.
    fn wait_progress(&self, what: &str, more: usize, limit: Duration) {
        let from = self.acked_count();
        poll(what, limit, Duration::from_millis(100), || {
            let now = self.acked_count();
            (now >= from + more)
                .then_some(())
                .ok_or_else(|| format!("{} of {more} more writes acknowledged", now - from))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Stops the writer; returns the acknowledged keys and the failures per phase.
    fn finish(mut self) -> (Vec<String>, [usize; 4]) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let failures = *self.failures.lock().unwrap();
        (acked, failures)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of `NAME="value"` in `member add`'s output.
fn printed_variable(out: &str, name: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('"').to_string())
}

/// Test 11: a follower's container and volume are destroyed; the operator removes it,
/// adds a member for it (`raftkv-3`, a new name and peer URL, as for a new machine) and
/// starts that on an empty volume with `--initial-cluster-state existing` and the
/// `ETCD_INITIAL_CLUSTER` that `member add` printed. The logs were compacted, so it can
/// only catch up from a snapshot (its log says it installed one). A writer runs throughout:
/// the cluster keeps taking writes, the new member becomes a voter, every member ends with
/// the same HashKV and no acknowledged write is lost.
#[test]
fn t11_replace_a_wiped_member_which_catches_up_by_snapshot() {
    let snapshot_count = format!("--snapshot-count={SNAPSHOT_COUNT}");
    let mut c = Cluster::start_with_server_args("replace", 3, &[&snapshot_count]);
    let leader = first_leader(&c);
    let victim = (leader.index + 1) % 3;
    let survivor = (leader.index + 2) % 3;
    let victim_id = c.status(victim).unwrap().member_id;

    // Phase 0: writes until the leader compacted its log at least once.
    let writer = Writer::start(c.pid(leader.index).unwrap(), "t11/");
    writer.wait_progress(
        "writes before the loss",
        2 * SNAPSHOT_COUNT,
        Duration::from_secs(60),
    );
    poll(
        "the leader to compact its log",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            c.logs(leader.index, ALL_LOG_LINES)
                .contains(COMPACTED)
                .then_some(())
                .ok_or_else(|| format!("no {COMPACTED:?} in its log yet"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // Phase 1: the machine is lost with its disk; the cluster still takes writes.
    writer.set_phase(1);
    c.destroy(victim);
    writer.wait_progress("writes with a member lost", 10, Duration::from_secs(30));
    let leader_pid = c.pid(leader.index).unwrap();
    let victim_hex = format!("{victim_id:x}");
    poll(
        "member remove of the lost member",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let out = etcd::etcdctl_raw(leader_pid, LOCAL, &["member", "remove", &victim_hex]);
            // "member not found" after a try whose answer we missed: it did take effect.
            if out.success() || out.stderr.contains("member not found") {
                Ok(out.stdout)
            } else {
                Err(out.into_result("member remove").unwrap_err())
            }
        },
    )
    .map(|out| println!("member remove: {}", out.trim()))
    .unwrap_or_else(|e| panic!("{e}"));

    // Phase 2: a member is added for it and started on an empty volume.
    writer.set_phase(2);
    let new_name = format!("raftkv-{}", c.members.len());
    let new_peer_url = format!("http://{new_name}:2380");
    let peer_urls_flag = format!("--peer-urls={new_peer_url}");
    let added = poll(
        "member add of the replacement",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let out = etcd::etcdctl_raw(
                leader_pid,
                LOCAL,
                &["member", "add", &new_name, &peer_urls_flag],
            );
            assert!(
                !out.stderr.contains("already exists"),
                "an earlier member add whose answer was lost took effect: {}",
                out.stderr
            );
            out.into_result("member add")
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!("member add printed:\n{added}");
    assert_eq!(
        printed_variable(&added, "ETCD_NAME").as_deref(),
        Some(new_name.as_str())
    );
    assert_eq!(
        printed_variable(&added, "ETCD_INITIAL_CLUSTER_STATE").as_deref(),
        Some("existing")
    );
    let initial_cluster = printed_variable(&added, "ETCD_INITIAL_CLUSTER")
        .unwrap_or_else(|| panic!("member add printed no ETCD_INITIAL_CLUSTER:\n{added}"));
    let t = Instant::now();
    let new = c.add_joining_member(&initial_cluster);
    assert_eq!(c.members[new].name, new_name);
    poll(
        "the new member to install a snapshot from the leader",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            c.logs(new, ALL_LOG_LINES)
                .contains(INSTALLED_SNAPSHOT)
                .then_some(())
                .ok_or_else(|| format!("no {INSTALLED_SNAPSHOT:?} in its log yet"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs(new, 30)));
    measure_duration("replace_start_until_snapshot_installed", t.elapsed());
    poll(
        "the new member a voter",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || match etcd::is_learner(c.pid(new)?)? {
            false => Ok(()),
            true => Err("still a learner".into()),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    measure_duration("replace_start_until_voter", t.elapsed());

    // Phase 3: the replaced cluster takes writes; then everything is compared.
    writer.set_phase(3);
    writer.wait_progress(
        "writes with the replacement a voter",
        10,
        Duration::from_secs(30),
    );
    let (acked, failures) = writer.finish();
    let members = [leader.index, survivor, new];
    let mut expected_urls: Vec<String> = members.iter().map(|&i| c.peer_url(i)).collect();
    expected_urls.sort();
    for &i in &members {
        assert_eq!(
            etcd::listed_peer_urls(c.pid(i).unwrap()).unwrap(),
            expected_urls,
            "member list through {}",
            c.members[i].name
        );
    }
    wait_for_leader(&c, &members, None, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}"));
    let contents = wait_converged(&c, &members, "t11/", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !contents.contains_key(*k))
        .collect();
    println!("failed (unacknowledged) writes per phase: {failures:?}");
    measure("replace_acknowledged_writes", acked.len() as f64, "writes");
    measure(
        "replace_failed_writes",
        failures.iter().sum::<usize>() as f64,
        "writes",
    );
    measure("replace_lost_writes", lost.len() as f64, "writes");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// Test 12: `etcdctl move-leader <hex id>` against the leader hands leadership to a chosen
/// follower: every member's status then names it, in a later term, and it takes a write.
#[test]
fn t12_move_leader_to_a_chosen_member() {
    let c = Cluster::start("moveleader", 3);
    let leader = first_leader(&c);
    // A write first, so the target has the leader's log and the move is not a first step.
    c.put(leader.index, "t12/before", "1").unwrap();
    let target = (leader.index + 1) % 3;
    let target_id = c.status(target).unwrap().member_id;
    let leader_pid = c.pid(leader.index).unwrap();

    let t = Instant::now();
    let out = etcd::etcdctl_raw(
        leader_pid,
        LOCAL,
        &["move-leader", &format!("{target_id:x}")],
    )
    .into_result("move-leader")
    .unwrap_or_else(|e| panic!("{e}"));
    println!("move-leader: {}", out.trim());
    assert!(
        out.contains(&format!(
            "Leadership transferred from {:x} to {target_id:x}",
            leader.id
        )),
        "move-leader printed: {out}"
    );
    let moved = poll(
        "every member to name the chosen member leader",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            let l = agreed_leader(&c, &ALL, None)?;
            (l.index == target)
                .then_some(l)
                .ok_or_else(|| format!("led by raftkv-{}", l.index))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    measure_duration("move_leader_until_all_agree", t.elapsed());
    assert_eq!(moved.id, target_id);
    assert!(
        moved.term > leader.term,
        "the move took no new term: {} then {}",
        leader.term,
        moved.term
    );

    c.put(target, "t12/after", "2")
        .unwrap_or_else(|e| panic!("write through the new leader: {e}"));
    let other = (leader.index + 2) % 3;
    assert_eq!(
        etcd::get(c.pid(other).unwrap(), "t12/after", false).unwrap(),
        Some("2".to_string()),
        "a linearizable read through another member"
    );
}
