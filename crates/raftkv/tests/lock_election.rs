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
    let rt = common::multi_thread_runtime();
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

/// What a Lock or Campaign that names no lease (lease 0) leaves behind, checked the same way
/// on raftkv and on etcd 3.4: a fresh 60 s lease per call (etcd's servers open a session with
/// the default TTL), carrying the contender's key `<name>/<lease in hex>`, not kept alive.
async fn check_session_lease_for_lease_zero(label: &str, endpoint: &str) {
    let kv = common::client(&[endpoint.to_string()]);
    kv.put_retrying("ready", "1", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{label}: cluster ready: {e:?}"));
    let session = |key: Bytes, prefix: &str| {
        let hex = std::str::from_utf8(&key)
            .unwrap()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{label}: {key:?} is not under {prefix}"))
            .to_string();
        i64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("{label}: {key:?}: lease hex"))
    };
    let ttl_of = |id: i64| {
        let kv = kv.clone();
        async move { kv.lease_time_to_live(id, true).await.unwrap() }
    };

    let mut lock = LockClient::new(channel(endpoint).await);
    let first = lock
        .lock(LockRequest {
            name: b("nolease"),
            lease: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("{label}: lock with lease 0: {e}"))
        .into_inner();
    let first_lease = session(first.key.clone(), "nolease/");
    assert_ne!(first_lease, 0, "{label}");
    let t = ttl_of(first_lease).await;
    assert_eq!(t.granted_ttl, 60, "{label}: session TTL");
    assert!((55..=60).contains(&t.ttl), "{label}: remaining {}", t.ttl);
    assert_eq!(t.keys, vec![first.key.clone()], "{label}: the lock key");

    // A second caller without a lease gets a lease of its own and waits in line.
    let mut l2 = lock.clone();
    let mut second = tokio::spawn(async move {
        l2.lock(LockRequest {
            name: b("nolease"),
            lease: 0,
        })
        .await
    });
    assert!(
        still_waiting(&mut second, Duration::from_millis(500)).await,
        "{label}: second lock not queued"
    );
    lock.unlock(UnlockRequest {
        key: first.key.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{label}: unlock: {e}"));
    let second = tokio::time::timeout(LIMIT, second)
        .await
        .unwrap_or_else(|_| panic!("{label}: second lock after unlock"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{label}: second lock: {e}"))
        .into_inner();
    let second_lease = session(second.key.clone(), "nolease/");
    assert_ne!(second_lease, first_lease, "{label}: one session per call");
    assert_eq!(ttl_of(second_lease).await.granted_ttl, 60, "{label}");
    // Unlocking deletes the key, not the session lease.
    assert_eq!(ttl_of(first_lease).await.granted_ttl, 60, "{label}");

    // Campaign: the leader key names the session lease it was put with.
    let mut election = ElectionClient::new(channel(endpoint).await);
    let leader = election
        .campaign(CampaignRequest {
            name: b("nolease-e"),
            lease: 0,
            value: b("v"),
        })
        .await
        .unwrap_or_else(|e| panic!("{label}: campaign with lease 0: {e}"))
        .into_inner()
        .leader
        .unwrap();
    assert_ne!(leader.lease, 0, "{label}: the leader key names its lease");
    assert_eq!(
        session(leader.key.clone(), "nolease-e/"),
        leader.lease,
        "{label}"
    );
    let t = ttl_of(leader.lease).await;
    assert_eq!(t.granted_ttl, 60, "{label}: campaign session TTL");
    assert_eq!(t.keys, vec![leader.key.clone()], "{label}");

    // Nobody keeps the session alive: its remaining time runs down.
    let started = std::time::Instant::now();
    loop {
        let left = ttl_of(second_lease).await.ttl;
        if left <= 57 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{label}: the session lease is renewed (still {left} s left)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn lock_and_campaign_without_a_lease_grant_a_60s_session_lease_as_etcd_does() {
    use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};
    for (label, program) in [
        ("etcd", MemberProgram::Etcd(common::etcd_binary())),
        ("raftkv", common::raftkv_program()),
    ] {
        let cluster = LocalCluster::start(ClusterSpec::new(program, &format!("l0-{label}"), 1))
            .expect("start");
        let endpoint = cluster.endpoints()[0].clone();
        common::runtime().block_on(check_session_lease_for_lease_zero(label, &endpoint));
    }
}
