//! The Kubernetes manifests' container commands on real containers: the StatefulSet's `args`
//! (read from deploy/k8s/statefulset.yaml, `$(POD_NAME)`/`$(POD_NAMESPACE)` expanded as the
//! kubelet would), members reachable under the headless Service's DNS names, the pods'
//! security context (read-only root, no capabilities, uid 65532), the probe paths, and the
//! client Job's `args` (deploy/k8s/job-scenario.yaml) run against them. Kubernetes itself
//! cannot run here; this proves everything inside the pods does.

use raftkv_docker_tests::cluster::{Cluster, PodLike};
use raftkv_docker_tests::etcd;
use raftkv_docker_tests::report::measure_duration;
use raftkv_docker_tests::wait::{wait_for_leader, wait_ready};
use std::time::Duration;

/// The items of the first `args:` list in a manifest (our own files: one `- item` per line).
fn manifest_args(file: &str) -> Vec<String> {
    let path = raftkv_docker_tests::repo_root()
        .join("deploy/k8s")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        match line.trim().strip_prefix("- ") {
            Some(item) => args.push(item.trim().to_string()),
            None => break,
        }
    }
    assert!(!args.is_empty(), "no args list found in {}", path.display());
    args
}

#[test]
fn t8_statefulset_and_job_args_run_as_pods_would() {
    let pod = PodLike {
        args: manifest_args("statefulset.yaml"),
        namespace: "default".into(),
    };
    assert_eq!(
        pod.args[0], "server",
        "the StatefulSet should run `raftkv server`"
    );
    let c = Cluster::start_as_pods("pods", pod.clone());

    let (leader, took) = wait_for_leader(&c, &[0, 1, 2], None, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    measure_duration("pods_start_to_leader", took);
    for i in 0..3 {
        wait_ready(&c, i, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("readinessProbe /readyz: {e}"));
        let live = etcd::http_status(c.pid(i).unwrap(), "/livez").unwrap();
        assert_eq!(live, 200, "livenessProbe /livez on raftkv-{i}");
    }
    println!("leader raftkv-{} (term {})", leader.index, leader.term);

    let job: Vec<String> = manifest_args("job-scenario.yaml")
        .iter()
        .map(|a| pod.expand(a, ""))
        .collect();
    let job: Vec<&str> = job.iter().map(String::as_str).collect();
    let out = c.hardened_client(&job, Duration::from_secs(120));
    println!(
        "---- the client Job's command ----\n{}{}",
        out.stdout, out.stderr
    );
    assert!(
        out.success(),
        "the client Job's command failed (exit {:?})",
        out.code
    );
}
