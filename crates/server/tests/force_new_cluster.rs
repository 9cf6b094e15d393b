//! `--force-new-cluster` with real processes: a three-member cluster is stopped, one member
//! comes back alone from its data dir with the flag, and is then a working cluster of one
//! that keeps its data and identity, stays one without the flag, and turns its old peers
//! away (`crate::force_new_cluster`, docs/operations.md "Disaster recovery").

mod common;

use std::process::Command;
use std::time::Duration;

use common::{poll, put_retrying, value, Cluster};

const ETCDCTL: &str = "/usr/bin/etcdctl";
const KEYS: usize = 40;

/// `etcdctl member list` through `endpoint`: one `(id, name)` per line.
fn etcdctl_members(endpoint: &str) -> Vec<(String, String)> {
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "10s"])
        .args(["member", "list"])
        .output()
        .expect("cannot run etcdctl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "member list: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| {
            let cols: Vec<&str> = l.split(", ").collect();
            (cols[0].to_string(), cols[2].to_string())
        })
        .collect()
}

/// Wait until member `i` leads a cluster by itself: its status names itself the leader.
async fn leads_alone(c: &Cluster, i: usize) -> (u64, u64) {
    poll("the member to lead", Duration::from_secs(30), || async {
        let st = c.status(i).await?;
        let id = st.header.as_ref()?.member_id;
        (st.leader == id).then_some((id, st.raft_term))
    })
    .await
}

/// Every key written before the disaster, read linearizably through member `i`.
async fn assert_every_key(c: &Cluster, i: usize) {
    for k in 0..KEYS {
        let got = value(c, i, &format!("k{k:02}"), false).await;
        assert_eq!(got.as_deref(), Some(format!("v{k:02}").as_str()), "k{k:02}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_restarts_as_a_cluster_of_one_and_its_old_peers_are_refused() {
    // A small --snapshot-count so the member restarts from a snapshot plus a log.
    let mut c = Cluster::start(3, &["--snapshot-count", "15"]);
    c.leader().await;
    for k in 0..KEYS {
        put_retrying(&c, 0, &format!("k{k:02}"), &format!("v{k:02}")).await;
    }
    let survivor = 1;
    // The survivor has applied every write, so each is committed in its own log.
    poll(
        "the survivor to apply every write",
        Duration::from_secs(20),
        || async {
            let last = format!("k{:02}", KEYS - 1);
            let v = value(&c, survivor, &last, true).await?;
            (v == format!("v{:02}", KEYS - 1)).then_some(())
        },
    )
    .await;
    let before = c.status(survivor).await.expect("status").header.unwrap();
    assert_eq!(
        etcdctl_members(&c.local.member(survivor).endpoint()).len(),
        3
    );
    for i in 0..3 {
        assert!(c.terminate(i).success(), "{}", c.log(i));
    }

    // The disaster: only the survivor's data dir is left to start from.
    c.local
        .start_member_with(survivor, &["--force-new-cluster"])
        .unwrap();
    let (id, _) = leads_alone(&c, survivor).await;
    assert_eq!(id, before.member_id);
    let log = c.log(survivor);
    assert_eq!(log.matches("forcing restart member").count(), 1, "{log}");
    assert_eq!(
        log.matches("--force-new-cluster: removing member").count(),
        2,
        "{log}"
    );
    let endpoint = c.local.member(survivor).endpoint();
    let members = etcdctl_members(&endpoint);
    assert_eq!(
        members,
        vec![(format!("{id:x}"), c.local.member(survivor).name.clone())]
    );
    let st = c.status(survivor).await.unwrap();
    assert_eq!(st.header.unwrap().cluster_id, before.cluster_id);
    assert_every_key(&c, survivor).await;
    put_retrying(&c, survivor, "after", "disaster").await;

    // Without the flag it stays a cluster of one: the removals are in its log.
    assert!(c.terminate(survivor).success(), "{}", c.log(survivor));
    c.spawn(survivor);
    let (_, term) = leads_alone(&c, survivor).await;
    assert_eq!(etcdctl_members(&endpoint).len(), 1);
    assert_every_key(&c, survivor).await;
    assert_eq!(
        value(&c, survivor, "after", false).await.as_deref(),
        Some("disaster")
    );
    assert_eq!(
        c.log(survivor).matches("forcing restart member").count(),
        1,
        "the restart without the flag forced nothing"
    );

    // The old peers come back with their data: the survivor refuses them as removed
    // members, they stop by themselves, and it keeps leading in the same term.
    for old in [0, 2] {
        c.spawn(old);
    }
    for old in [0, 2] {
        c.wait_for_exit(old, Duration::from_secs(30));
        let log = c.log(old);
        assert!(
            log.contains("the member has been permanently removed from the cluster"),
            "{log}"
        );
    }
    let st = c.status(survivor).await.unwrap();
    assert_eq!(st.leader, id);
    assert_eq!(st.raft_term, term);
    assert_eq!(etcdctl_members(&endpoint).len(), 1);
    put_retrying(&c, survivor, "still", "alone").await;
}
