//! `Cluster/MemberRemove` on a real 3-member cluster: a follower removed through another
//! follower (the change travels to the leader), etcd's errors for unknown and removed ids,
//! the removed member stopping with etcd's words and exit status 0 (and again when it is
//! started once more), then the leader removing itself, while the others keep committing.
//! `RAFTKV_TEST_BACKEND=etcd` runs the same test against etcd 3.4.
//!
//! Ports 24201-24206 (this test's range).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{grpc_error, statuses};
use etcd_client::Client;
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster};

/// A write through every endpoint, then the same value read back (linearizably) from each.
async fn writes_commit_everywhere(endpoints: &[String], key: &str) {
    for (i, ep) in endpoints.iter().enumerate() {
        let mut c = Client::connect([ep], None).await.expect("connect");
        let value = format!("v{i}");
        c.put(key, value.clone(), None).await.expect("put commits");
        for other in endpoints {
            let mut r = Client::connect([other], None).await.expect("connect");
            let got = r.get(key, None).await.expect("get");
            assert_eq!(got.kvs()[0].value_str().unwrap(), value, "read at {other}");
        }
    }
}

async fn member_ids(ep: &str) -> Vec<u64> {
    let mut c = Client::connect([ep], None).await.expect("connect");
    let list = c.member_list().await.expect("member list");
    list.members().iter().map(|m| m.id()).collect()
}

fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(common::etcdctl_binary());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    common::run_with_timeout(cmd, None, Duration::from_secs(30))
}

fn log_of(cluster: &LocalCluster, idx: usize) -> String {
    std::fs::read_to_string(&cluster.member(idx).log_path).unwrap_or_default()
}

#[test]
fn remove_members_through_followers_and_the_leader() {
    let mut spec = ClusterSpec::new(common::backend_program(), "rm", 3);
    spec.ports = Some(vec![(24201, 24202), (24203, 24204), (24205, 24206)]);
    let mut cluster = LocalCluster::start(spec).expect("cluster starts");
    let endpoints = cluster.endpoints();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let st = runtime.block_on(statuses(&endpoints));
    let leader = st[0].1;
    let leader_idx = st.iter().position(|(id, _)| *id == leader).unwrap();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader_idx).collect();
    let (asked, victim) = (followers[0], followers[1]);
    let victim_id = st[victim].0;

    // Unknown id: etcd's NotFound, nothing changes.
    runtime.block_on(async {
        let mut c = Client::connect([&endpoints[asked]], None).await.unwrap();
        let e = c.member_remove(0xdead_beef).await.unwrap_err();
        assert_eq!(
            grpc_error(e),
            (tonic::Code::NotFound, "etcdserver: member not found".into())
        );
    });

    // Remove a follower through the other follower, with etcdctl's own words.
    let cluster_id = runtime.block_on(async {
        let mut c = Client::connect([&endpoints[asked]], None).await.unwrap();
        c.member_list()
            .await
            .unwrap()
            .header()
            .unwrap()
            .cluster_id()
    });
    // etcd's strict reconfiguration check counts only peers connected for 5 s: right after
    // the start the removal is refused as an unhealthy cluster, then it goes through.
    let out = common::poll_until("a healthy cluster", Duration::from_secs(30), || {
        let out = etcdctl(
            &endpoints[asked],
            &["member", "remove", &format!("{victim_id:x}")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() {
            Ok(out)
        } else {
            assert!(stderr.contains("etcdserver: unhealthy cluster"), "{stderr}");
            Err(stderr)
        }
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    // etcdctl prints both ids with %16x: space-padded when they have leading zeros.
    assert_eq!(
        stdout.trim_end(),
        format!("Member {victim_id:16x} removed from cluster {cluster_id:16x}")
    );

    // The removed member stops by itself, with status 0 and etcd's words.
    let status = cluster
        .wait_for_exit(victim, Duration::from_secs(10))
        .expect("the removed member stops");
    assert!(status.success(), "{status}");
    let log = log_of(&cluster, victim);
    assert!(
        log.contains("the member has been permanently removed from the cluster"),
        "{log}"
    );

    let rest: Vec<String> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| endpoints[i].clone())
        .collect();
    runtime.block_on(async {
        for ep in &rest {
            let ids = member_ids(ep).await;
            assert_eq!(ids.len(), 2, "{ep}: {ids:x?}");
            assert!(!ids.contains(&victim_id));
        }
        writes_commit_everywhere(&rest, "after-first-removal").await;
        // A second removal of the same id: etcd answers "member not found".
        let mut c = Client::connect([&rest[0]], None).await.unwrap();
        let e = c.member_remove(victim_id).await.unwrap_err();
        assert_eq!(
            grpc_error(e),
            (tonic::Code::NotFound, "etcdserver: member not found".into())
        );
    });

    // Started again from its data dir, the removed member stops again at once.
    cluster.start_member(victim).expect("restart");
    let status = cluster
        .wait_for_exit(victim, Duration::from_secs(15))
        .expect("the removed member stops again");
    assert!(status.success(), "{status}");

    // The leader removes itself: it hands over, stops, and the last member commits alone.
    runtime.block_on(async {
        let mut c = Client::connect([&endpoints[leader_idx]], None)
            .await
            .unwrap();
        let resp = c
            .member_remove(leader)
            .await
            .expect("leader removes itself");
        let ids: Vec<u64> = resp.members().iter().map(|m| m.id()).collect();
        assert_eq!(ids, vec![st[asked].0]);
    });
    let status = cluster
        .wait_for_exit(leader_idx, Duration::from_secs(10))
        .expect("the removed leader stops");
    assert!(status.success(), "{status}");
    let last = vec![endpoints[asked].clone()];
    runtime.block_on(async {
        // It leads once it heard of the handover or its election timeout passed.
        let deadline = Instant::now() + Duration::from_secs(15);
        let st = loop {
            let st = statuses(&last).await;
            if st[0].1 == st[0].0 {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "the last member never led: {st:x?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        writes_commit_everywhere(&last, "after-leader-removal").await;
        assert_eq!(member_ids(&last[0]).await, vec![st[0].0]);
    });
    cluster.check_alive().expect("the remaining member runs");
}
