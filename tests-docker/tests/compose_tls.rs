//! The TLS deployment on real containers: deploy/compose/compose.yaml with compose.tls.yaml on
//! top, certificates made by scripts/gen-certs.sh. Three members over mutual TLS on both
//! ports run the course scenario: writes from the client container, a non-leader stopped
//! while more writes commit and started again, its data recovered (same keys and HashKV as
//! the others), then `raftkv demo` over TLS. A client without a certificate, and a plaintext
//! client, are refused.

use raftkv_docker_tests::compose::ComposeProject;
use raftkv_docker_tests::etcd;
use raftkv_docker_tests::exec::{run, Output};
use raftkv_docker_tests::report::measure_duration;
use raftkv_docker_tests::wait::{wait_converged, wait_for_leader};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const ENDPOINTS: &str = "https://raftkv-0:2379,https://raftkv-1:2379,https://raftkv-2:2379";
/// What the client service of compose.tls.yaml mounts at /tls.
const CLIENT_TLS: [&str; 6] = [
    "--cacert",
    "/tls/ca.pem",
    "--cert",
    "/tls/client.pem",
    "--key",
    "/tls/client-key.pem",
];

/// A directory of certificates from scripts/gen-certs.sh, removed on drop.
struct CertDir(PathBuf);

impl CertDir {
    fn generate() -> CertDir {
        let dir = std::env::temp_dir().join(raftkv_docker_tests::unique_prefix("tls-certs"));
        let script = raftkv_docker_tests::repo_root().join("scripts/gen-certs.sh");
        // The members and the client container read their keys as the image's uid 65532.
        let out = run(
            Command::new("bash")
                .arg(&script)
                .arg("--out")
                .arg(&dir)
                .args(["--owner", "65532:65532"]),
            Duration::from_secs(120),
        );
        assert!(
            out.success(),
            "scripts/gen-certs.sh failed: {}{}",
            out.stdout,
            out.stderr
        );
        CertDir(dir)
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client(p: &ComposeProject, args: &[&str], limit: Duration) -> Output {
    let mut full = vec!["run", "--rm", "-T", "client"];
    full.extend_from_slice(args);
    p.run(&full, limit)
}

/// `raftkv put` from the client container over mutual TLS, to `endpoints`.
fn put(p: &ComposeProject, endpoints: &str, key: &str, value: &str) {
    let mut args = vec!["put", "--endpoints", endpoints];
    args.extend_from_slice(&CLIENT_TLS);
    args.extend_from_slice(&[key, value]);
    let out = client(p, &args, Duration::from_secs(60));
    assert!(
        out.success(),
        "put {key} from the client container over TLS failed: {}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn t9_compose_tls_course_scenario_over_mutual_tls() {
    raftkv_docker_tests::etcd::require_etcdctl();
    let certs = CertDir::generate();
    let p = ComposeProject::with_tls("composetls", &certs.0);
    let all = [0, 1, 2];

    let t = Instant::now();
    p.run(
        &["up", "-d", "raftkv-0", "raftkv-1", "raftkv-2"],
        Duration::from_secs(120),
    )
    .into_result("compose up (TLS)")
    .unwrap_or_else(|e| panic!("{e}"));
    let (leader, _) =
        wait_for_leader(&p, &all, None, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    measure_duration("compose_tls_up_to_leader", t.elapsed());
    println!("leader raftkv-{} in term {}", leader.index, leader.term);

    let mut expected = BTreeMap::new();
    for i in 1..=3 {
        let (k, v) = (format!("course/k{i}"), format!("v{i}"));
        put(&p, ENDPOINTS, &k, &v);
        expected.insert(k, v);
    }

    // A non-leader stops (SIGTERM, as `docker stop` does); the other two keep committing.
    let stopped = all.iter().copied().find(|&i| i != leader.index).unwrap();
    let service = format!("raftkv-{stopped}");
    p.run(&["stop", "-t", "10", &service], Duration::from_secs(60))
        .into_result("compose stop")
        .unwrap_or_else(|e| panic!("{e}"));
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != stopped).collect();
    let survivor_endpoints = survivors
        .iter()
        .map(|i| format!("https://raftkv-{i}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    for i in 4..=6 {
        let (k, v) = (format!("course/k{i}"), format!("v{i}"));
        put(&p, &survivor_endpoints, &k, &v);
        expected.insert(k, v);
    }

    // It comes back with its volume and catches up over the mutual-TLS peer port.
    let t = Instant::now();
    p.run(&["start", &service], Duration::from_secs(60))
        .into_result("compose start")
        .unwrap_or_else(|e| panic!("{e}"));
    let contents = wait_converged(&p, &all, "course/", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("after {service} restarted: {e}"));
    measure_duration("compose_tls_restarted_member_converged", t.elapsed());
    assert_eq!(
        contents, expected,
        "every member, {service} included, holds exactly the acknowledged writes"
    );

    // Refusals, each next to the same request with the client certificate, which succeeds.
    let pid = p.service_pid("raftkv-0").unwrap_or_else(|e| panic!("{e}"));
    let tls = p
        .client_tls
        .clone()
        .expect("the TLS variant has client files");
    let ca = tls.ca.to_string_lossy().into_owned();
    let cert = tls.cert.to_string_lossy().into_owned();
    let key = tls.key.to_string_lossy().into_owned();
    let with_cert = etcd::etcdctl_raw(
        pid,
        "https://127.0.0.1:2379",
        &[
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "get",
            "course/k1",
            "--print-value-only",
        ],
    );
    assert!(
        with_cert.success() && with_cert.stdout.trim() == "v1",
        "etcdctl with the client certificate: {}{}",
        with_cert.stdout,
        with_cert.stderr
    );
    let no_cert = etcd::etcdctl_raw(
        pid,
        "https://127.0.0.1:2379",
        &["--cacert", &ca, "get", "course/k1"],
    );
    println!(
        "etcdctl without a client certificate: {}",
        no_cert.stderr.trim()
    );
    assert!(
        !no_cert.success() && !no_cert.stdout.contains("v1"),
        "a client without a certificate must be refused: {}{}",
        no_cert.stdout,
        no_cert.stderr
    );
    let plain = etcd::etcdctl_raw(pid, "http://127.0.0.1:2379", &["get", "course/k1"]);
    println!("etcdctl in plaintext: {}", plain.stderr.trim());
    assert!(
        !plain.success() && !plain.stdout.contains("v1"),
        "a plaintext client must be refused: {}{}",
        plain.stdout,
        plain.stderr
    );
    let container_no_cert = client(
        &p,
        &[
            "get",
            "--endpoints",
            "https://raftkv-0:2379",
            "--cacert",
            "/tls/ca.pem",
            "course/k1",
        ],
        Duration::from_secs(60),
    );
    println!(
        "raftkv get without a client certificate: {}",
        container_no_cert.stderr.trim()
    );
    assert!(
        !container_no_cert.success() && !container_no_cert.stdout.contains("v1"),
        "the client container without a certificate must be refused: {}{}",
        container_no_cert.stdout,
        container_no_cert.stderr
    );

    // The course scenario's client: the TLS variant's default command, `raftkv demo`.
    let demo = p.run(&["run", "--rm", "-T", "client"], Duration::from_secs(240));
    println!(
        "---- raftkv demo over mutual TLS from the client container ----\n{}{}",
        demo.stdout, demo.stderr
    );
    assert!(
        demo.success(),
        "the course scenario over TLS failed in the client container (exit {:?})",
        demo.code
    );
}
