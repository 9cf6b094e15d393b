//! The course assignment's integration suite (T1–T5c), end to end, with real member
//! processes on loopback killed with SIGKILL and restarted from their data directories.
//!
//! The original tests asked each Raft node for (id, term, is-leader, leader-id) and submitted
//! `escribir` operations; here the same questions go through etcd's API: `Status` on every
//! member gives id, term and leader, `Put` is the write, linearizable and serializable
//! `Range` are the reads, and `HashKV` at one revision proves two replicas hold the same
//! history. Every wait polls a condition with a deadline; every test has an overall limit.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raftkv_client::client::{Client, Timeouts};
use raftkv_client::converge::wait_for_equal_hashes;
use raftkv_client::leader::{poll_states, wait_for_leader, AgreedLeader, TermLedger};
use raftkv_client::local_cluster::LocalCluster;

/// One cluster at a time: the machine is small and elections are timing-sensitive.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

const LEADER_LIMIT: Duration = Duration::from_secs(30);
const TEST_LIMIT: Duration = Duration::from_secs(150);

/// Runs `body` under the global lock and an overall time limit.
fn bounded<F: Future<Output = ()>>(name: &str, body: impl FnOnce() -> F) {
    let _guard = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if tokio::time::timeout(TEST_LIMIT, body()).await.is_err() {
            panic!("{name} did not finish within {TEST_LIMIT:?}");
        }
    });
}

fn client(cluster: &LocalCluster, members: &[usize]) -> Client {
    let endpoints: Vec<String> = members
        .iter()
        .map(|&i| cluster.member(i).endpoint())
        .collect();
    Client::new(&endpoints, Timeouts::default()).expect("client")
}

fn all_client(cluster: &LocalCluster) -> Client {
    Client::new(&cluster.endpoints(), Timeouts::default()).expect("client")
}

async fn leader_of(
    cluster: &LocalCluster,
    client: &Client,
    ledger: &mut TermLedger,
) -> AgreedLeader {
    match wait_for_leader(client, ledger, LEADER_LIMIT, |_| true).await {
        Ok(leader) => leader,
        Err(e) => panic!("{e}\n{}", cluster.log_tails(20)),
    }
}

/// Puts and returns the write's revision, retrying transient unavailability (elections).
async fn put(client: &Client, key: &str, value: &str) -> i64 {
    match client
        .put_retrying(key, value, Duration::from_secs(20))
        .await
    {
        Ok(r) => r.header.expect("header").revision,
        Err(e) => panic!("put {key}={value} failed: {e}"),
    }
}

/// Polls until every member in `members` reports the same HashKV as the first one at the
/// first one's current revision.
async fn wait_converged(cluster: &LocalCluster, members: &[usize]) -> (i64, u32) {
    let each: Vec<(String, Client)> = members
        .iter()
        .map(|&m| (cluster.member(m).name.clone(), client(cluster, &[m])))
        .collect();
    match wait_for_equal_hashes(&each, Duration::from_secs(30)).await {
        Ok(converged) => (converged.revision, converged.hash),
        Err(e) => panic!(
            "members {members:?} did not converge: {e}\n{}",
            cluster.log_tails(20)
        ),
    }
}

/// Serializable (local) read on one member; polls until it shows `value`.
async fn wait_local_value(cluster: &LocalCluster, member: usize, key: &str, value: &str) {
    let one = client(cluster, &[member]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = one.get_str(key, true).await;
        if matches!(&got, Ok(Some(v)) if v == value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {key}={value} locally (last: {got:?})",
            cluster.member(member).name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The member id a member reports in its Status header.
async fn member_id(cluster: &LocalCluster, member: usize) -> u64 {
    let status = client(cluster, &[member]).status().await.expect("status");
    status.header.expect("header").member_id
}

/// T1: members start, answer, and stop cleanly when asked (SIGTERM).
#[test]
fn t1_start_and_stop() {
    bounded("t1", || async {
        let mut cluster = common::start_cluster("t1");
        let all = all_client(&cluster);
        let mut ledger = TermLedger::default();
        leader_of(&cluster, &all, &mut ledger).await;
        let states = poll_states(&all).await;
        let ids: BTreeSet<u64> = states
            .iter()
            .map(|s| s.as_ref().expect("status").member_id)
            .collect();
        assert_eq!(ids.len(), 3, "three distinct member ids: {states:?}");
        let clusters: BTreeSet<u64> = {
            let mut set = BTreeSet::new();
            for one in all.each() {
                set.insert(
                    one.status()
                        .await
                        .expect("status")
                        .header
                        .expect("header")
                        .cluster_id,
                );
            }
            set
        };
        assert_eq!(clusters.len(), 1, "one cluster id");
        let killed = cluster.stop_all(Duration::from_secs(15)).expect("stop");
        assert!(
            killed.is_empty(),
            "members ignored SIGTERM and had to be killed: {killed:?}"
        );
    });
}

/// T2: a first leader is elected, exactly one per term, and it stays leader while nothing fails.
#[test]
fn t2_first_leader() {
    bounded("t2", || async {
        let cluster = common::start_cluster("t2");
        let all = all_client(&cluster);
        let mut ledger = TermLedger::default();
        let first = leader_of(&cluster, &all, &mut ledger).await;
        // Stability: 20 more observations (about a second) show the same leader and term.
        for _ in 0..20 {
            let again = leader_of(&cluster, &all, &mut ledger).await;
            assert_eq!(again, first, "leadership changed without a failure");
        }
        assert_eq!(ledger.leaders().len(), 1, "{:?}", ledger.leaders());
    });
}

/// T3: after the leader is killed, one of the two others takes over in a later term.
#[test]
fn t3_leader_failure_elects_new_leader() {
    bounded("t3", || async {
        let mut cluster = common::start_cluster("t3");
        let all = all_client(&cluster);
        let mut ledger = TermLedger::default();
        let old = leader_of(&cluster, &all, &mut ledger).await;
        cluster.kill_member(old.endpoint_index).expect("kill");
        let rest: Vec<usize> = (0..3).filter(|&i| i != old.endpoint_index).collect();
        let survivors = client(&cluster, &rest);
        let new = wait_for_leader(&survivors, &mut ledger, LEADER_LIMIT, |l| {
            l.member_id != old.member_id && l.term > old.term
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(20)));
        assert_ne!(new.member_id, old.member_id);
        // And the new leader accepts writes.
        put(&survivors, "t3/after", "ok").await;
    });
}

/// T4: three operations commit in three consecutive revisions with a stable leader, and every
/// member ends with the same state.
#[test]
fn t4_three_operations_committed() {
    bounded("t4", || async {
        let cluster = common::start_cluster("t4");
        let all = all_client(&cluster);
        let mut ledger = TermLedger::default();
        let leader = leader_of(&cluster, &all, &mut ledger).await;
        let via_leader = client(&cluster, &[leader.endpoint_index]);
        let mut revisions = Vec::new();
        for (k, v) in [("t4/a", "1"), ("t4/b", "2"), ("t4/c", "3")] {
            revisions.push(put(&via_leader, k, v).await);
        }
        assert_eq!(
            revisions,
            vec![revisions[0], revisions[0] + 1, revisions[0] + 2]
        );
        assert_eq!(
            revisions[0], 2,
            "a fresh store is at revision 1, so the first write is 2"
        );
        for m in 0..3 {
            for (k, v) in [("t4/a", "1"), ("t4/b", "2"), ("t4/c", "3")] {
                wait_local_value(&cluster, m, k, v).await;
            }
        }
        wait_converged(&cluster, &[0, 1, 2]).await;
        let again = leader_of(&cluster, &all, &mut ledger).await;
        assert_eq!(again, leader, "the leader stayed stable");
    });
}

/// T5a: agreement despite a failed follower, and the follower's catch-up after restart.
#[test]
fn t5a_agreement_despite_failed_follower() {
    bounded("t5a", || async {
        let mut cluster = common::start_cluster("t5a");
        let all = all_client(&cluster);
        let mut ledger = TermLedger::default();
        let leader = leader_of(&cluster, &all, &mut ledger).await;
        put(&all, "t5a/0", "before").await;
        let follower = (0..3)
            .find(|&i| i != leader.endpoint_index)
            .expect("a follower");
        let id_before = member_id(&cluster, follower).await;
        cluster.kill_member(follower).expect("kill");
        let rest: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
        let two = client(&cluster, &rest);
        for i in 1..=3 {
            put(&two, &format!("t5a/{i}"), "with-two").await;
        }
        cluster.start_member(follower).expect("restart");
        wait_local_value(&cluster, follower, "t5a/3", "with-two").await;
        assert_eq!(
            member_id(&cluster, follower).await,
            id_before,
            "a member restarted from its data dir keeps its id"
        );
        wait_converged(&cluster, &[leader.endpoint_index, follower]).await;
        // More agreements with all three back.
        for i in 4..=5 {
            put(&all, &format!("t5a/{i}"), "all-back").await;
        }
        wait_converged(&cluster, &[0, 1, 2]).await;
    });
}

/// T5b: no agreement without a majority, then recovery once the followers return.
#[test]
fn t5b_no_agreement_without_majority() {
    bounded("t5b", || async {
        let mut cluster = common::start_cluster("t5b");
        let all = all_client(&cluster);
        let mut ledger = TermLedger::default();
        let leader = leader_of(&cluster, &all, &mut ledger).await;
        put(&all, "t5b/0", "committed").await;
        let followers: Vec<usize> = (0..3).filter(|&i| i != leader.endpoint_index).collect();
        for &f in &followers {
            cluster.kill_member(f).expect("kill");
        }
        // The lone member must not acknowledge a write or serve a linearizable read.
        let lone = Client::new(
            &[cluster.member(leader.endpoint_index).endpoint()],
            Timeouts {
                dial: Duration::from_secs(2),
                call: Duration::from_secs(4),
            },
        )
        .expect("client");
        for i in 1..=3 {
            let outcome = lone
                .put_str(&format!("t5b/minority-{i}"), "must-not-commit")
                .await;
            assert!(
                outcome.is_err(),
                "a write was acknowledged by a minority: {outcome:?}"
            );
        }
        let read = lone.get_str("t5b/0", false).await;
        assert!(
            read.is_err(),
            "a linearizable read was served by a minority: {read:?}"
        );
        // Recovery.
        for &f in &followers {
            cluster.start_member(f).expect("restart");
        }
        leader_of(&cluster, &all, &mut ledger).await;
        put(&all, "t5b/after", "recovered").await;
        assert_eq!(
            all.get_str("t5b/0", false).await.expect("read"),
            Some("committed".to_string())
        );
        wait_converged(&cluster, &[0, 1, 2]).await;
    });
}

/// T5c: five concurrent submissions all commit, at distinct consecutive revisions, and every
/// member ends with the same state and log position.
#[test]
fn t5c_concurrent_submissions() {
    bounded("t5c", || async {
        let cluster = common::start_cluster("t5c");
        let all = all_client(&cluster);
        let mut ledger = TermLedger::default();
        leader_of(&cluster, &all, &mut ledger).await;
        let first = put(&all, "t5c/first", "x").await;
        // Each submission through a different member (and its own connection).
        let submissions = (0..5).map(|i| {
            let one = client(&cluster, &[i % 3]);
            async move { put(&one, &format!("t5c/{i}"), &format!("v{i}")).await }
        });
        let revisions: BTreeSet<i64> = futures_join_all(submissions).await.into_iter().collect();
        assert_eq!(revisions.len(), 5, "five distinct revisions: {revisions:?}");
        let expected: BTreeSet<i64> = (first + 1..=first + 5).collect();
        assert_eq!(
            revisions, expected,
            "the five writes take the next five revisions"
        );
        wait_converged(&cluster, &[0, 1, 2]).await;
        // Same applied index everywhere once converged.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let states = poll_states(&all).await;
            let applied: BTreeSet<u64> = states
                .iter()
                .filter_map(|s| s.as_ref().ok())
                .map(|s| s.applied_index)
                .collect();
            if applied.len() == 1 && states.iter().all(|s| s.is_ok()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "applied indexes differ: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Runs the futures as concurrent tasks (all requests in flight at once) and collects their
/// outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("submission task panicked"));
    }
    out
}
