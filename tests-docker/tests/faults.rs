//! Issue 5's fault tests 2–7 on a 3-member cluster of real containers (`docker run`), plus a
//! check of the image itself. Each test owns its cluster (unique names) and removes it on
//! drop, also on failure. Run through tests-docker/run.sh, which builds the image.

use raftkv_docker_tests::cluster::Cluster;
use raftkv_docker_tests::docker::{docker, require_environment};
use raftkv_docker_tests::report::{measure, measure_duration};
use raftkv_docker_tests::wait::{poll, wait_converged, wait_for_leader, wait_ready, Leader};
use raftkv_docker_tests::{etcd, image_under_test, netns};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const ALL: [usize; 3] = [0, 1, 2];
const FIRST_LEADER_LIMIT: Duration = Duration::from_secs(30);
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);

fn others(of: usize) -> Vec<usize> {
    ALL.iter().copied().filter(|&i| i != of).collect()
}

fn first_leader(c: &Cluster) -> Leader {
    let (leader, took) =
        wait_for_leader(c, &ALL, None, FIRST_LEADER_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "leader raftkv-{} (term {}) after {took:?}",
        leader.index, leader.term
    );
    leader
}

fn put_all(c: &Cluster, via: usize, keys: &[String]) {
    for k in keys {
        c.put(via, k, &format!("value-of-{k}"))
            .unwrap_or_else(|e| panic!("write through raftkv-{via}: {e}"));
    }
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

/// The image is small, runs as uid 65532 and starts `/raftkv`.
#[test]
fn t0_image_is_small_non_root_and_runs() {
    require_environment();
    let image = image_under_test();
    let size: f64 = docker(&["image", "inspect", "--format", "{{.Size}}", &image])
        .unwrap()
        .parse()
        .unwrap();
    measure("image_size", size / 1e6, "MB");
    let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", &image]).unwrap();
    assert_eq!(
        user, "65532:65532",
        "the image must run as the unprivileged user"
    );
    let entry = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        &image,
    ])
    .unwrap();
    assert_eq!(entry, r#"["/raftkv"]"#);
    let help = docker(&[
        "run",
        "--rm",
        "--label",
        &raftkv_docker_tests::run_label(),
        &image,
        "--help",
    ]);
    let help = help.unwrap_or_else(|e| panic!("the binary does not run in the image: {e}"));
    assert!(
        help.contains("server"),
        "`raftkv --help` should list the server subcommand: {help}"
    );
    assert!(
        size < 30e6,
        "image is {:.1} MB, over the 30 MB target",
        size / 1e6
    );
}

/// Test 2: `docker kill` the leader. A new leader within 3 s, writes continue, the killed
/// member restarts from its own volume and catches up; all members end identical (HashKV).
#[test]
fn t2_kill_leader() {
    let c = Cluster::start("kill", 3);
    let old = first_leader(&c);
    let before = keys("t2/before/", 5);
    put_all(&c, old.index, &before);

    let t = Instant::now();
    c.kill(old.index);
    let (new, _) = wait_for_leader(
        &c,
        &others(old.index),
        Some(old.id),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("no new leader after killing the leader: {e}"));
    let failover = t.elapsed();
    measure_duration("kill_leader_failover", failover);
    assert!(
        new.term > old.term,
        "the new leader must be in a later term"
    );

    let after = keys("t2/after/", 5);
    put_all(&c, new.index, &after);

    let t = Instant::now();
    c.restart(old.index);
    let data = wait_converged(&c, &ALL, "t2/", CONVERGE_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    measure_duration("killed_member_restart_to_converged", t.elapsed());
    for k in before.iter().chain(&after) {
        assert_eq!(
            data.get(k),
            Some(&format!("value-of-{k}")),
            "acknowledged write {k} lost"
        );
    }
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?}, over 3 s"
    );
}

/// Test 3: `docker stop` (SIGTERM) a follower, then the leader: each exits 0 well within the
/// grace period (no SIGKILL), restarts and is ready quickly, with its data.
#[test]
fn t3_sigterm_stop_is_clean_and_restart_fast() {
    let c = Cluster::start("stop", 3);
    first_leader(&c);
    for round in ["follower", "leader"] {
        let current = first_leader(&c);
        let victim = if round == "leader" {
            current.index
        } else {
            others(current.index)[0]
        };
        put_all(&c, current.index, &keys(&format!("t3/{round}/"), 5));

        let (took, code) = c.stop(victim);
        measure_duration(&format!("sigterm_stop_{round}"), took);
        assert_eq!(
            code,
            0,
            "raftkv-{victim} ({round}) did not exit cleanly on SIGTERM: exit {code}\n{}",
            c.logs(victim, 20)
        );
        assert!(
            took < Duration::from_secs(5),
            "stopping the {round} took {took:?}"
        );

        let t = Instant::now();
        c.restart(victim);
        let ready = wait_ready(&c, victim, Duration::from_secs(30)).map(|_| t.elapsed());
        let ready = ready.unwrap_or_else(|e| panic!("{e}"));
        measure_duration(&format!("restart_to_ready_{round}"), ready);
        assert!(
            ready < Duration::from_secs(5),
            "restart of the {round} took {ready:?} to be ready"
        );
    }
    let data = wait_converged(&c, &ALL, "t3/", CONVERGE_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        data.len(),
        10,
        "writes lost across clean restarts: {data:?}"
    );
}

/// Test 4: the leader is cut off with `docker network disconnect`. It cannot commit; the
/// majority elects a leader and keeps committing; after reconnecting, the old leader follows,
/// its uncommitted write is gone, and all members converge.
#[test]
fn t4_partitioned_leader() {
    let c = Cluster::start("part", 3);
    let old = first_leader(&c);
    put_all(&c, old.index, &keys("t4/before/", 3));
    let majority = others(old.index);

    let t = Instant::now();
    c.disconnect(old.index);
    let (isolated_write, elected) = thread::scope(|s| {
        let w = s.spawn(|| c.put(old.index, "t4/isolated", "must-not-survive"));
        let e = wait_for_leader(&c, &majority, Some(old.id), Duration::from_secs(15))
            .map(|(l, _)| (l, t.elapsed()));
        (w.join().unwrap(), e)
    });
    let (new, failover) = elected.unwrap_or_else(|e| panic!("majority elected no leader: {e}"));
    measure_duration("partition_leader_failover", failover);
    assert!(
        isolated_write.is_err(),
        "the isolated old leader acknowledged a write it cannot have committed"
    );

    let during = keys("t4/majority/", 5);
    put_all(&c, new.index, &during);
    let view = c.status(old.index);
    println!("isolated old leader's own view: {view:?}");

    c.reconnect(old.index);
    let (after, _) =
        wait_for_leader(&c, &ALL, None, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        after.index, old.index,
        "the stale old leader must not lead again after reconnecting"
    );
    let data = wait_converged(&c, &ALL, "t4/", CONVERGE_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !data.contains_key("t4/isolated"),
        "an unacknowledged write of the isolated leader survived"
    );
    for k in &during {
        assert!(
            data.contains_key(k),
            "write {k} committed by the majority is missing"
        );
    }
    assert_eq!(data.len(), 3 + during.len());
}

/// Test 5: the leader is paused longer than the election timeout. A read sent to it while
/// paused is answered after unpause: it must not return the value overwritten meanwhile by the
/// new leader (no stale read), and no acknowledged write is lost.
#[test]
fn t5_paused_leader_serves_no_stale_read() {
    let c = Cluster::start("pause", 3);
    let old = first_leader(&c);
    c.put(old.index, "t5/k", "old").unwrap();
    let old_pid = c.pid(old.index).unwrap();

    let t = Instant::now();
    c.pause(old.index);
    let (new, _) = wait_for_leader(
        &c,
        &others(old.index),
        Some(old.id),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("no new leader while the old one is paused: {e}"));
    measure_duration("pause_leader_failover", t.elapsed());
    c.put(new.index, "t5/k", "new").unwrap();
    let during = keys("t5/during/", 3);
    put_all(&c, new.index, &during);

    // Queue a linearizable read in the paused member's socket, then let it run again.
    let baseline = netns::established_on_port(old_pid, 2379).unwrap();
    let reader = etcd::spawn_get(old_pid, "t5/k", Duration::from_secs(8)).unwrap();
    poll(
        "read connected to the paused member",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match netns::established_on_port(old_pid, 2379)? {
            n if n > baseline => Ok(()),
            n => Err(format!("{n} connections")),
        },
    )
    .unwrap();
    c.unpause(old.index);
    let read = etcd::finish_get(reader, Duration::from_secs(15));
    println!("read from the old leader right after unpause: {read:?}");
    match &read {
        Ok(Some(v)) => assert_eq!(
            v, "new",
            "STALE READ: the old leader returned {v:?} after a newer write was acknowledged"
        ),
        Ok(None) => panic!("the old leader returned no value for a key that exists"),
        Err(e) => println!("(refusing is correct too: {e})"),
    }

    let data = wait_converged(&c, &ALL, "t5/", CONVERGE_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.get("t5/k").map(String::as_str), Some("new"));
    for k in &during {
        assert!(data.contains_key(k), "acknowledged write {k} lost");
    }
}

/// Test 6: a member whose volume was wiped is started again with its old name: it must not
/// rejoin silently under its old identity; it must stop with a clear message.
#[test]
fn t6_wiped_member_is_refused() {
    let c = Cluster::start("wipe", 3);
    let leader = first_leader(&c);
    put_all(&c, leader.index, &keys("t6/", 5));
    let victim = others(leader.index)[0];

    c.wipe_and_rerun(victim);
    let exit = poll(
        "the wiped member to stop",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match c.state(victim) {
            (false, code) => Ok(code),
            (true, _) => Err("still running".into()),
        },
    );
    let logs = c.logs(victim, 10);
    println!("wiped member's last log lines:\n{logs}");
    let code = exit.unwrap_or_else(|e| {
        panic!("{e}: a wiped member kept running under its old identity\n{logs}")
    });
    assert_ne!(code, 0, "the wiped member stopped, but with exit code 0");
    assert!(
        !logs.trim().is_empty(),
        "the wiped member stopped without saying why"
    );

    // The other two are unaffected.
    let (l, _) = wait_for_leader(&c, &others(victim), None, Duration::from_secs(15)).unwrap();
    c.put(l.index, "t6/after", "ok").unwrap();
}

/// What the writer in test 7 saw.
#[derive(Default, Debug)]
struct LoadOutcome {
    acked: Vec<String>,
    transient_errors: u32,
    failed: Vec<String>,
    slowest: Duration,
}

/// Test 7: rolling restart (SIGTERM, start, wait ready) of all three members, one at a time,
/// under a steady write load. Every write is acknowledged (after client retries of transient
/// errors) and every acknowledged write is on every member at the end.
#[test]
fn t7_rolling_restart_under_load() {
    let c = Cluster::start("roll", 3);
    first_leader(&c);
    let ids: HashMap<u64, usize> = ALL
        .iter()
        .map(|&i| (c.status(i).unwrap().member_id, i))
        .collect();
    let stop = AtomicBool::new(false);
    let outcome = Mutex::new(LoadOutcome::default());

    thread::scope(|s| {
        s.spawn(|| write_load(&c, &ids, &stop, &outcome));
        let acked_now = || outcome.lock().unwrap().acked.len();
        for i in ALL {
            let base = acked_now();
            let (took, code) = c.stop(i);
            println!("raftkv-{i}: stopped in {took:?} with exit {code}");
            c.restart(i);
            let ready = wait_ready(&c, i, Duration::from_secs(30));
            // Let the load make progress with the member back before the next one goes.
            let progress = poll(
                "writes progressing",
                Duration::from_secs(30),
                Duration::from_millis(50),
                || {
                    if acked_now() >= base + 10 {
                        Ok(())
                    } else {
                        Err(format!("{} acked", acked_now()))
                    }
                },
            );
            if ready.is_err() || progress.is_err() || code != 0 {
                stop.store(true, Ordering::SeqCst);
                panic!("rolling restart of raftkv-{i}: exit {code}, ready {ready:?}, progress {progress:?}");
            }
        }
        stop.store(true, Ordering::SeqCst);
    });

    let out = outcome.into_inner().unwrap();
    measure(
        "rolling_restart_writes_acked",
        out.acked.len() as f64,
        "writes",
    );
    measure(
        "rolling_restart_transient_errors",
        out.transient_errors as f64,
        "errors",
    );
    measure_duration("rolling_restart_slowest_write_with_retries", out.slowest);
    assert!(
        out.failed.is_empty(),
        "writes failed beyond retries: {:?}",
        out.failed
    );
    let data = wait_converged(&c, &ALL, "t7/", CONVERGE_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    for k in &out.acked {
        assert_eq!(
            data.get(k),
            Some(&format!("value-of-{k}")),
            "acknowledged write {k} lost"
        );
    }
}

/// Writes t7/NNNNN keys one after another until `stop`, each retried (through whichever
/// member is leader) for up to 15 s; a write still failing then counts as failed.
fn write_load(
    c: &Cluster,
    ids: &HashMap<u64, usize>,
    stop: &AtomicBool,
    outcome: &Mutex<LoadOutcome>,
) {
    let mut target = 0usize;
    let mut seq = 0u32;
    while !stop.load(Ordering::SeqCst) && seq < 5000 {
        let key = format!("t7/{seq:05}");
        let started = Instant::now();
        let acked = loop {
            match c.put(target, &key, &format!("value-of-{key}")) {
                Ok(()) => break true,
                Err(_) if started.elapsed() > Duration::from_secs(15) => break false,
                Err(_) => {
                    outcome.lock().unwrap().transient_errors += 1;
                    // Ask the members who leads now; try the next member if nobody knows.
                    target = ALL
                        .iter()
                        .find_map(|&i| c.status(i).ok().and_then(|s| ids.get(&s.leader).copied()))
                        .unwrap_or((target + 1) % ALL.len());
                }
            }
        };
        let mut o = outcome.lock().unwrap();
        o.slowest = o.slowest.max(started.elapsed());
        if acked {
            o.acked.push(key)
        } else {
            o.failed.push(key)
        }
        seq += 1;
    }
}
