//! End-to-end tests on real member processes: election, writes and reads through any
//! member (forwarding), a follower killed and restarted from its data dir, the leader
//! killed, and etcd's error strings on the wire.

mod common;

use std::time::Duration;

use common::*;
use proto::etcdserverpb::{DeleteRangeRequest, RangeRequest, StatusRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_replicate_forward_and_recover() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;

    // Writes through the leader and through a follower (forwarded), read back everywhere.
    let r1 = put_retrying(&c, leader, "a", "1").await;
    let r2 = put_retrying(&c, follower, "b", "2").await;
    assert_eq!(
        (r1, r2),
        (2, 3),
        "the first write is revision 2, then +1 per write"
    );
    for i in 0..3 {
        assert_eq!(value(&c, i, "a", false).await.as_deref(), Some("1"));
        assert_eq!(value(&c, i, "b", false).await.as_deref(), Some("2"));
    }

    // Headers carry this member's identity and the term.
    let st = c.status(follower).await.unwrap();
    let hdr = st.header.unwrap();
    assert_ne!(hdr.cluster_id, 0);
    assert_ne!(hdr.member_id, st.leader);
    assert!(hdr.raft_term >= 1 && st.db_size > 0 && st.raft_applied_index >= 3);

    // Kill a follower: writes still commit with two members.
    c.kill(follower);
    for i in 0..5 {
        put_retrying(&c, leader, &format!("k{i}"), "x").await;
    }
    // Restart it from its own data dir: it catches up to the same state.
    c.spawn(follower);
    let leader_hash = poll("leader hash", Duration::from_secs(10), || c.hash(leader)).await;
    poll(
        "restarted follower converges",
        Duration::from_secs(30),
        || async { (c.hash(follower).await? == leader_hash).then_some(()) },
    )
    .await;
    assert!(
        c.log(follower).contains("recovered from the data dir"),
        "{}",
        c.log(follower)
    );
    assert_eq!(value(&c, follower, "k4", true).await.as_deref(), Some("x"));

    // Kill the leader: a new one is elected and nothing acknowledged is lost.
    c.kill(leader);
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    put_retrying(&c, new_leader, "after", "leader-kill").await;
    let other = (0..3).find(|&i| i != leader && i != new_leader).unwrap();
    for key in ["a", "b", "k0", "k4"] {
        assert!(
            value(&c, other, key, false)
                .await
                .is_some_and(|v| !v.is_empty()),
            "{key} lost"
        );
    }
    assert_eq!(
        value(&c, other, "after", false).await.as_deref(),
        Some("leader-kill")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_etcds_codes_and_messages() {
    let c = Cluster::start(3, &["--max-request-bytes", "1024"]);
    let leader = c.leader().await;
    let mut kv = c.kv(leader).await;

    let e = kv.put(put("", "v")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided"
        )
    );

    let big = "x".repeat(2000);
    let e = kv.put(put("big", &big)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large"
        )
    );

    put_retrying(&c, leader, "k", "v").await;
    let e = kv
        .range(RangeRequest {
            key: "k".into(),
            revision: 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );
    // Deleting what does not exist is not an error and does not bump the revision.
    let d = kv
        .delete_range(DeleteRangeRequest {
            key: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.get_ref().deleted, 0);

    // A member update for an id that is no member answers etcd's error, and the member
    // survives all of the above.
    let mut cluster =
        proto::etcdserverpb::cluster_client::ClusterClient::connect(c.endpoint(leader))
            .await
            .unwrap();
    let e = cluster
        .member_update(proto::etcdserverpb::MemberUpdateRequest {
            id: 1,
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::NotFound, "etcdserver: member not found")
    );
    let mut m = c.maintenance(leader).await;
    assert!(m.status(StatusRequest {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_majority_means_no_leader_then_recovery() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    put_retrying(&c, leader, "before", "1").await;
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            c.kill(i);
        }
    }
    let mut kv = c.kv(survivor).await;
    // Without a majority nothing commits; the answer is etcd's UNAVAILABLE "no leader" (or a
    // time-out), never success.
    let started = std::time::Instant::now();
    let e = kv.put(put("during", "x")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message() == "etcdserver: no leader" || e.message() == "etcdserver: request timed out",
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // With hasleader set, a member that knows no leader refuses at once.
    poll(
        "survivor sees no leader",
        Duration::from_secs(10),
        || async { (c.status(survivor).await?.leader == 0).then_some(()) },
    )
    .await;
    let mut req = tonic::Request::new(put("during", "y"));
    req.metadata_mut()
        .insert("hasleader", "true".parse().unwrap());
    let e = kv.put(req).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );

    // Bring one member back: a majority again, writes commit, earlier data intact.
    let back = (survivor + 1) % 3;
    c.spawn(back);
    put_retrying(&c, survivor, "after", "2").await;
    assert_eq!(value(&c, back, "before", false).await.as_deref(), Some("1"));
    assert_eq!(
        value(&c, survivor, "during", false).await.as_deref(),
        Some("")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_every_member_get_distinct_revisions() {
    let c = Cluster::start(3, &[]);
    c.leader().await;
    let clients = [c.kv(0).await, c.kv(1).await, c.kv(2).await];
    let mut tasks = Vec::new();
    for t in 0..30usize {
        let mut kv = clients[t % 3].clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..10 {
                let r = kv
                    .put(put(&format!("c/{t}/{i}"), &format!("{t}-{i}")))
                    .await
                    .expect("put failed");
                revs.push(r.into_inner().header.unwrap().revision);
            }
            revs
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.extend(t.await.unwrap());
    }
    revs.sort_unstable();
    // Every acknowledged write got its own revision: 2..=301, none twice, none missing.
    assert_eq!(revs, (2..=301).collect::<Vec<i64>>());
    let mut kv = c.kv(1).await;
    let all = kv
        .range(RangeRequest {
            key: "c/".into(),
            range_end: "c0".into(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.get_ref().count, 300);
    for i in 0..3 {
        assert_eq!(value(&c, i, "c/29/9", false).await.as_deref(), Some("29-9"));
    }
}

/// A txn that cannot write is served from the member's own store after a read barrier, as
/// etcd serves it: it sees every write acknowledged before it (even through a follower), it
/// answers exactly as applying it would, and it adds nothing to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_txns_are_linearizable_and_stay_out_of_the_log() {
    use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use proto::etcdserverpb::request_op::Request as Op;
    use proto::etcdserverpb::response_op::Response as OpResponse;
    use proto::etcdserverpb::{Compare, RequestOp, TxnRequest};

    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let read_txn = |expected: &str, serializable: bool| TxnRequest {
        compare: vec![Compare {
            key: "k".into(),
            target: CompareTarget::Value as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::Value(expected.as_bytes().to_vec().into())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                serializable,
                ..get("k")
            })),
        }],
        failure: vec![],
    };

    for round in 0..5 {
        let value = format!("v{round}");
        let rev = put_retrying(&c, leader, "k", &value).await;
        let index_before = c.status(leader).await.unwrap().raft_index;
        for member in [follower, leader] {
            // Linearizable: the write acknowledged just before is visible at once, through
            // the follower too, with no polling.
            let resp = c
                .kv(member)
                .await
                .txn(read_txn(&value, false))
                .await
                .unwrap()
                .into_inner();
            assert!(resp.succeeded, "round {round}, member {member}: {resp:?}");
            assert!(resp.header.as_ref().unwrap().revision >= rev);
            let Some(OpResponse::ResponseRange(range)) = &resp.responses[0].response else {
                panic!("not a range response: {resp:?}");
            };
            assert_eq!(range.kvs[0].value, value.as_bytes());
            assert_eq!(range.kvs[0].mod_revision, rev);
            // A compare that fails takes the (empty) failure branch, as applying would.
            let miss = c
                .kv(member)
                .await
                .txn(read_txn("no such value", true))
                .await
                .unwrap()
                .into_inner();
            assert!(!miss.succeeded && miss.responses.is_empty(), "{miss:?}");
        }
        let index_after = c.status(leader).await.unwrap().raft_index;
        assert_eq!(
            index_before, index_after,
            "read-only txns must not be proposed through the log"
        );
    }
}
