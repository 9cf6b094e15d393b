//! Issue 5's test 1 on the real compose file: `up` to a leader (measured), then the course
//! validation from the client container: 3 writes, 3 reads that confirm them, and the course
//! scenario (`raftkv demo`).

use raftkv_docker_tests::compose::ComposeProject;
use raftkv_docker_tests::report::measure_duration;
use raftkv_docker_tests::wait::wait_for_leader;
use std::time::{Duration, Instant};

const ENDPOINTS: &str = "http://raftkv-0:2379,http://raftkv-1:2379,http://raftkv-2:2379";

#[test]
fn t1_compose_up_and_course_validation_from_client_container() {
    raftkv_docker_tests::etcd::require_etcdctl();
    let p = ComposeProject::new("compose");

    let t = Instant::now();
    p.run(
        &["up", "-d", "raftkv-0", "raftkv-1", "raftkv-2"],
        Duration::from_secs(120),
    )
    .into_result("compose up")
    .unwrap_or_else(|e| panic!("{e}"));
    // `up` itself (network, volumes, containers) is the compose tool's time; what follows is
    // the members' own time to elect a leader.
    let up_returned = Instant::now();
    measure_duration("compose_up_command", t.elapsed());
    let (leader, _) = wait_for_leader(&p, &[0, 1, 2], None, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    measure_duration("compose_up_to_leader", t.elapsed());
    measure_duration("compose_up_returned_to_leader", up_returned.elapsed());
    println!("leader raftkv-{} in term {}", leader.index, leader.term);

    let client = |args: &[&str]| {
        let mut full = vec!["run", "--rm", "-T", "client"];
        full.extend_from_slice(args);
        p.run(&full, Duration::from_secs(60))
    };
    for i in 1..=3 {
        let (k, v) = (format!("course/k{i}"), format!("v{i}"));
        let out = client(&["put", "--endpoints", ENDPOINTS, &k, &v]);
        assert!(
            out.success(),
            "write {k} from the client container failed: {}{}",
            out.stdout,
            out.stderr
        );
    }
    for i in 1..=3 {
        let (k, v) = (format!("course/k{i}"), format!("v{i}"));
        let out = client(&["get", "--endpoints", ENDPOINTS, &k]);
        assert!(
            out.success(),
            "read {k} from the client container failed: {}",
            out.stderr
        );
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim() == v || l.trim().ends_with(&format!(" {v}"))),
            "read {k} did not confirm the write of {v}: {:?}",
            out.stdout
        );
    }

    let demo = p.run(&["run", "--rm", "-T", "client"], Duration::from_secs(240));
    println!(
        "---- raftkv demo from the client container ----\n{}{}",
        demo.stdout, demo.stderr
    );
    assert!(
        demo.success(),
        "the course scenario failed in the client container (exit {:?})",
        demo.code
    );
}
