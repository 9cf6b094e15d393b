//! Issue 15's scaling on the real compose file, with no member command: 3 → 5 → 3 with
//! `scripts/docker-scale.sh` while a writer runs (docs/membership.md, "Scaling by itself").
//!
//! raftkv-3 and raftkv-4 start on empty volumes, ask the founders to add them
//! (`--auto-join`), and are promoted by the leader; then their containers and volumes are
//! removed and the leader removes the members once their names stop resolving
//! (`--auto-remove-departed-after`, 30 s in compose.yaml). Checked: the members listed after
//! each step, the new members are voters, every acknowledged write is on the three that
//! remain and their HashKV agrees. Measured: start → promoted voter per new member, the
//! scale-down's duration, and the writer's failed writes during each change.

use raftkv_docker_tests::compose::ComposeProject;
use raftkv_docker_tests::etcd;
use raftkv_docker_tests::report::{measure, measure_duration};
use raftkv_docker_tests::wait::{poll, wait_converged, wait_for_leader, Members};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOCAL: &str = "http://127.0.0.1:2379";

fn peer_urls(members: &[usize]) -> Vec<String> {
    members
        .iter()
        .map(|i| format!("http://raftkv-{i}:2380"))
        .collect()
}

/// Member `i` says it is a voter (`endpoint status`'s "is learner" column is false).
fn is_voter(p: &ComposeProject, i: usize) -> Result<(), String> {
    let out = etcd::etcdctl_raw(p.pid(i)?, LOCAL, &["endpoint", "status"])
        .into_result("endpoint status")?;
    match out.trim().split(", ").nth(5) {
        Some("false") => Ok(()),
        _ => Err(format!("raftkv-{i}: {out}")),
    }
}

/// `scripts/docker-scale.sh n` against this test's compose project.
fn scale_to(p: &ComposeProject, n: usize) {
    let script = raftkv_docker_tests::repo_root().join("scripts/docker-scale.sh");
    let out = raftkv_docker_tests::exec::run(
        Command::new(script)
            .arg(n.to_string())
            .env("RAFTKV_COMPOSE_PROJECT", &p.project)
            .env("RAFTKV_IMAGE", &p.image)
            .env("RAFTKV_CLUSTER_TOKEN", &p.project)
            .env("RAFTKV_SCALE_TIMEOUT", "150"),
        Duration::from_secs(330),
    );
    println!(
        "---- docker-scale.sh {n} ----\n{}{}",
        out.stdout, out.stderr
    );
    assert!(out.success(), "docker-scale.sh {n} failed");
}

#[test]
fn t10_scale_3_5_3_under_writes_without_member_commands() {
    etcd::require_etcdctl();
    let p = ComposeProject::new("scale");
    p.run(
        &["up", "-d", "raftkv-0", "raftkv-1", "raftkv-2"],
        Duration::from_secs(120),
    )
    .into_result("compose up")
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for_leader(&p, &[0, 1, 2], None, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));

    // The writer: one key after another through raftkv-0 (a founder, which stays), each
    // recorded once acknowledged; failures counted per phase (0 before, 1 scale-up, 2
    // between, 3 scale-down).
    let pid0 = p.pid(0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new([0usize; 4]));
    let writer = {
        let (stop, phase, acked, failures) =
            (stop.clone(), phase.clone(), acked.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("scale/{n:06}");
                match etcd::put(pid0, &key, &format!("v{n}"), Duration::from_secs(3)) {
                    Ok(()) => acked.lock().unwrap().push(key),
                    Err(_) => failures.lock().unwrap()[phase.load(Ordering::Relaxed)] += 1,
                }
                n += 1;
            }
        })
    };
    poll(
        "a first acknowledged write",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            (!acked.lock().unwrap().is_empty())
                .then_some(())
                .ok_or_else(|| "none yet".to_string())
        },
    )
    .unwrap();

    // 3 → 5.
    phase.store(1, Ordering::Relaxed);
    let t = Instant::now();
    scale_to(&p, 5);
    for i in [3, 4] {
        poll(
            &format!("raftkv-{i} a voter"),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || is_voter(&p, i),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        measure_duration(
            &format!("scale_up_start_until_raftkv_{i}_voter"),
            t.elapsed(),
        );
    }
    measure_duration("scale_up_3_to_5", t.elapsed());
    for i in 0..5 {
        assert_eq!(
            etcd::listed_peer_urls(p.pid(i).unwrap()).unwrap(),
            peer_urls(&[0, 1, 2, 3, 4]),
            "member list through raftkv-{i}"
        );
    }
    phase.store(2, Ordering::Relaxed);
    let before_down = acked.lock().unwrap().len();
    poll(
        "writes with five members",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            (acked.lock().unwrap().len() >= before_down + 5)
                .then_some(())
                .ok_or_else(|| "waiting".to_string())
        },
    )
    .unwrap();

    // 5 → 3: the containers and volumes go; the cluster removes the members by itself.
    phase.store(3, Ordering::Relaxed);
    let t = Instant::now();
    scale_to(&p, 3);
    measure_duration("scale_down_5_to_3", t.elapsed());
    for i in 0..3 {
        assert_eq!(
            etcd::listed_peer_urls(p.pid(i).unwrap()).unwrap(),
            peer_urls(&[0, 1, 2]),
            "member list through raftkv-{i}"
        );
    }
    let after = acked.lock().unwrap().len();
    poll(
        "writes with three members again",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            (acked.lock().unwrap().len() >= after + 5)
                .then_some(())
                .ok_or_else(|| "waiting".to_string())
        },
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Every acknowledged write is on all three, which agree byte for byte (HashKV).
    let contents = wait_converged(&p, &[0, 1, 2], "scale/", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !contents.contains_key(*k))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let failures = *failures.lock().unwrap();
    measure("scale_acknowledged_writes", acked.len() as f64, "writes");
    measure("scale_up_failed_writes", failures[1] as f64, "writes");
    measure("scale_down_failed_writes", failures[3] as f64, "writes");
    measure("scale_lost_writes", lost.len() as f64, "writes");
}
