//! Durability and identity on real processes: snapshots and log compaction, a follower that
//! must be repaired with a snapshot, restart from a snapshot, a wiped data dir refused, and
//! a clean SIGTERM shutdown.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_is_repaired_by_snapshot_and_restarts_from_one() {
    let mut c = Cluster::start(3, &["--snapshot-count", "20"]);
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    c.kill(follower);
    for i in 0..100 {
        put_retrying(&c, leader, &format!("key{i:03}"), &format!("v{i}")).await;
    }
    assert!(
        c.log(leader).contains("snapshot saved and log compacted"),
        "{}",
        c.log(leader)
    );

    // The follower missed entries the leader no longer has in its log.
    c.spawn(follower);
    let leader_hash = poll("leader hash", Duration::from_secs(10), || c.hash(leader)).await;
    poll("follower repaired", Duration::from_secs(30), || async {
        (c.hash(follower).await? == leader_hash).then_some(())
    })
    .await;
    assert!(
        c.log(follower)
            .contains("installing snapshot from the leader"),
        "{}",
        c.log(follower)
    );

    // Restart the leader too: it recovers from its own snapshot plus the log after it.
    c.kill(leader);
    c.spawn(leader);
    poll(
        "restarted leader converges",
        Duration::from_secs(30),
        || async { (c.hash(leader).await? == leader_hash).then_some(()) },
    )
    .await;
    assert_eq!(
        value(&c, leader, "key099", true).await.as_deref(),
        Some("v99")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_wiped_data_dir_is_refused() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    put_retrying(&c, leader, "k", "v").await;
    let victim = (leader + 1) % 3;
    // Let the victim acknowledge something, so the peers have seen its incarnation.
    poll(
        "victim applied the write",
        Duration::from_secs(10),
        || async { (value(&c, victim, "k", true).await? == "v").then_some(()) },
    )
    .await;
    c.kill(victim);
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();
    c.spawn(victim);
    let status = c.wait_for_exit(victim, Duration::from_secs(30));
    assert!(!status.success(), "a wiped member must not keep running");
    let log = c.log(victim);
    assert!(log.contains("lost its data dir"), "{log}");
    // The cluster is unaffected.
    put_retrying(&c, leader, "k2", "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_cleanly() {
    let mut c = Cluster::start(1, &[]);
    c.leader().await;
    put_retrying(&c, 0, "k", "v").await;
    // An idle client connection stays open across the SIGTERM (Kubernetes does this):
    // shutdown must not wait for it to hang up.
    let open_client = c.kv(0).await;
    let started = std::time::Instant::now();
    let st = c.terminate(0);
    assert!(st.success(), "exit status {st:?}; log:\n{}", c.log(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop(open_client);
    assert!(c.log(0).contains("member stopped"));
    // And it comes back with its data.
    c.spawn(0);
    c.leader().await;
    assert_eq!(value(&c, 0, "k", false).await.as_deref(), Some("v"));
}
