//! etcd's server-side Lock and Election services against real member processes, called
//! through their gRPC clients as a non-Go client would: waiting in line, handing over on
//! unlock, resign and lease revocation, fencing tokens, proclaim, leader and observe.
//! Every wait is bounded.

mod common;

use std::time::Duration;

use proto::prost::bytes::Bytes;
use proto::v3electionpb::election_client::ElectionClient;
use proto::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use proto::v3lockpb::lock_client::LockClient;
use proto::v3lockpb::{LockRequest, UnlockRequest};
use raftkv_client::client::{Client, Timeouts};
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::from(s.as_bytes().to_vec())
}

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{endpoint}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// The next value the observe stream reports.
async fn next(o: &mut tonic::Streaming<proto::v3electionpb::LeaderResponse>) -> Bytes {
    tokio::time::timeout(LIMIT, o.message())
        .await
        .expect("observe answers")
        .expect("observe stream")
        .expect("not closed")
        .kv
        .unwrap()
        .value
}

/// A request that must still be waiting after `grace` (it is queued behind a holder).
async fn still_waiting<T>(handle: &mut tokio::task::JoinHandle<T>, grace: Duration) -> bool {
    tokio::time::timeout(grace, handle).await.is_err()
}

#[test]
fn lock_and_election_services_queue_hand_over_and_fence() {
    let cluster = common::start_cluster_of(common::raftkv_program(), "lockelect", Vec::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let endpoints = cluster.endpoints();
        let kv = Client::new(
            &endpoints,
            Timeouts {
                dial: Duration::from_secs(2),
                call: Duration::from_secs(10),
            },
        )
        .unwrap();
        kv.put_retrying("ready", "1", Duration::from_secs(30))
            .await
            .expect("cluster ready");
        let l1 = kv.lease_grant(60, 0).await.unwrap().id;
        let l2 = kv.lease_grant(60, 0).await.unwrap().id;
        let l3 = kv.lease_grant(60, 0).await.unwrap().id;
        // Two members, so the hand-over crosses members.
        let mut lock_a = LockClient::new(channel(&endpoints[0]).await);
        let lock_b = LockClient::new(channel(&endpoints[1]).await);

        // --- Lock ---
        let first = lock_a
            .lock(LockRequest {
                name: b("job"),
                lease: l1,
            })
            .await
            .expect("lock")
            .into_inner();
        assert_eq!(first.key, b(&format!("job/{l1:x}")));
        let mut b2 = lock_b.clone();
        let mut second = tokio::spawn(async move {
            b2.lock(LockRequest {
                name: b("job"),
                lease: l2,
            })
            .await
        });
        assert!(
            still_waiting(&mut second, Duration::from_millis(500)).await,
            "second lock not queued"
        );
        lock_a
            .unlock(UnlockRequest {
                key: first.key.clone(),
            })
            .await
            .expect("unlock");
        let second = tokio::time::timeout(LIMIT, second)
            .await
            .expect("second lock granted after unlock")
            .unwrap()
            .expect("lock")
            .into_inner();
        let token = |key: &Bytes| {
            let kv = kv.clone();
            let key = key.clone();
            async move {
                kv.range(proto::etcdserverpb::RangeRequest {
                    key,
                    ..Default::default()
                })
                .await
                .unwrap()
                .kvs[0]
                    .create_revision
            }
        };
        let second_token = token(&second.key).await;
        assert!(
            second_token > first.header.unwrap().revision,
            "fencing tokens grow"
        );

        // A holder whose lease is revoked loses the lock to the next in line.
        let mut b3 = lock_b.clone();
        let mut third = tokio::spawn(async move {
            b3.lock(LockRequest {
                name: b("job"),
                lease: l3,
            })
            .await
        });
        assert!(still_waiting(&mut third, Duration::from_millis(500)).await);
        kv.lease_revoke(l2).await.expect("revoke");
        let third = tokio::time::timeout(LIMIT, third)
            .await
            .expect("third lock granted after the holder's lease went")
            .unwrap()
            .expect("lock")
            .into_inner();
        assert!(token(&third.key).await > second_token);
        // A lock on an unknown lease fails as the put would.
        let err = lock_a
            .lock(LockRequest {
                name: b("job2"),
                lease: 12345,
            })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "etcdserver: requested lease not found");

        // --- Election ---
        let e1 = kv.lease_grant(60, 0).await.unwrap().id;
        let e2 = kv.lease_grant(60, 0).await.unwrap().id;
        let mut el_a = ElectionClient::new(channel(&endpoints[0]).await);
        let el_b = ElectionClient::new(channel(&endpoints[2]).await);
        let err = el_a
            .leader(LeaderRequest { name: b("pres") })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "election: no leader");
        let leader1 = el_a
            .campaign(CampaignRequest {
                name: b("pres"),
                lease: e1,
                value: b("alice"),
            })
            .await
            .expect("campaign")
            .into_inner()
            .leader
            .unwrap();
        let mut observe = el_b
            .clone()
            .observe(LeaderRequest { name: b("pres") })
            .await
            .expect("observe")
            .into_inner();
        assert_eq!(next(&mut observe).await, b("alice"));
        let mut eb = el_b.clone();
        let mut bob = tokio::spawn(async move {
            eb.campaign(CampaignRequest {
                name: b("pres"),
                lease: e2,
                value: b("bob"),
            })
            .await
        });
        assert!(still_waiting(&mut bob, Duration::from_millis(500)).await);
        el_a.proclaim(ProclaimRequest {
            leader: Some(leader1.clone()),
            value: b("alice2"),
        })
        .await
        .expect("proclaim");
        assert_eq!(next(&mut observe).await, b("alice2"));
        let now = el_a
            .leader(LeaderRequest { name: b("pres") })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now.kv.unwrap().value, b("alice2"));
        el_a.resign(ResignRequest {
            leader: Some(leader1.clone()),
        })
        .await
        .expect("resign");
        let leader2 = tokio::time::timeout(LIMIT, bob)
            .await
            .expect("bob elected after alice resigned")
            .unwrap()
            .expect("campaign")
            .into_inner()
            .leader
            .unwrap();
        assert!(leader2.rev > leader1.rev);
        assert_eq!(next(&mut observe).await, b("bob"));
        // The old leader can no longer proclaim.
        let err = el_a
            .proclaim(ProclaimRequest {
                leader: Some(leader1),
                value: b("again"),
            })
            .await
            .unwrap_err();
        assert_eq!(err.message(), "election: not leader");
    });
}

#[test]
fn raftkv_lock_runs_a_command_under_the_lock_with_its_fencing_token() {
    let cluster = common::start_cluster_of(common::raftkv_program(), "lockcli", Vec::new());
    let endpoints = cluster.endpoints().join(",");
    let raftkv = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"));
        cmd.arg("--endpoints").arg(&endpoints).args(args);
        let out = common::run_with_timeout(cmd, None, Duration::from_secs(20));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    common::poll_until(
        "the cluster takes writes",
        Duration::from_secs(30),
        || match raftkv(&["put", "ready", "1"]) {
            (Some(0), _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (code, out) = raftkv(&[
        "lock",
        "mylock",
        "sh",
        "-c",
        "echo \"$ETCD_LOCK_KEY $ETCD_LOCK_REV\"; exit 3",
    ]);
    assert_eq!(code, Some(3), "the command's exit status is passed on");
    let (key, rev) = out.trim().split_once(' ').expect("key and revision");
    assert!(key.starts_with("mylock/"), "{out:?}");
    assert!(rev.parse::<i64>().unwrap() > 1, "{out:?}");
    // Released afterwards: nothing left under the lock's prefix.
    let (_, left) = raftkv(&["get", "--prefix", "mylock/"]);
    assert_eq!(left, "");
}
