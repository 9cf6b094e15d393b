//! Lock and Election with auth enabled act as the caller, as etcd's server-side recipes do:
//! a user with READWRITE on the lock's prefix locks, unlocks, campaigns, reads the leader and
//! resigns; a user without it, or on another name, is refused with etcd's permission error
//! (text `etcdserver: permission denied`, code UNKNOWN, as etcd's recipes send it).
//! `RAFTKV_TEST_BACKEND=etcd` runs the same test against etcd 3.4 (how the expected answers
//! were checked).

mod common;

use etcd_client::{Client, ConnectOptions, LockOptions, Permission, ResignOptions};

async fn as_user(endpoint: &str, name: &str, password: &str) -> Client {
    Client::connect(
        [endpoint],
        Some(ConnectOptions::new().with_user(name, password)),
    )
    .await
    .unwrap_or_else(|e| panic!("{name} connects: {e}"))
}

/// etcd's answer to a recipe step the caller may not take: the recipe's own error, sent as a
/// plain error (code UNKNOWN), not the KV service's PERMISSION_DENIED.
fn denied(e: etcd_client::Error) -> Result<(), (tonic::Code, String)> {
    match common::grpc_error(e) {
        (tonic::Code::Unknown, m) if m == "etcdserver: permission denied" => Ok(()),
        other => Err(other),
    }
}

#[test]
fn lock_and_election_act_as_the_caller_under_auth() {
    let cluster = common::start_cluster("lockauth");
    let endpoint = cluster.endpoints()[0].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut admin = common::connect_answering(&endpoint).await;
        admin.user_add("root", "rootpw", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.role_add("locker").await.unwrap();
        admin
            .role_grant_permission("locker", Permission::read_write("locks/").with_prefix())
            .await
            .unwrap();
        for (user, pw) in [("alice", "alicepw"), ("bob", "bobpw")] {
            admin.user_add(user, pw, None).await.unwrap();
        }
        admin.user_grant_role("alice", "locker").await.unwrap();
        admin.auth_enable().await.unwrap();

        let mut alice = as_user(&endpoint, "alice", "alicepw").await;
        let lease = alice.lease_grant(30, None).await.unwrap().id();
        let held = alice
            .lock("locks/a", Some(LockOptions::new().with_lease(lease)))
            .await
            .expect("alice may lock under locks/");
        assert!(held.key().starts_with(b"locks/a/"), "{:?}", held.key());
        alice.unlock(held.key()).await.expect("and unlock");
        let won = alice
            .campaign("locks/e", "alice", lease)
            .await
            .expect("alice may campaign under locks/");
        let leader = alice.leader("locks/e").await.expect("and read the leader");
        assert_eq!(leader.kv().unwrap().value(), b"alice");
        alice
            .resign(Some(
                ResignOptions::new().with_leader(won.leader().unwrap().clone()),
            ))
            .await
            .expect("and resign");

        // Outside her permission, and bob without any: etcd's permission error.
        let e = alice
            .lock("other", Some(LockOptions::new().with_lease(lease)))
            .await
            .unwrap_err();
        denied(e).expect("alice locking outside locks/");
        let mut bob = as_user(&endpoint, "bob", "bobpw").await;
        let bob_lease = bob.lease_grant(30, None).await.unwrap().id();
        let e = bob
            .lock("locks/a", Some(LockOptions::new().with_lease(bob_lease)))
            .await
            .unwrap_err();
        denied(e).expect("bob locking");
        let e = bob.campaign("locks/e", "bob", bob_lease).await.unwrap_err();
        denied(e).expect("bob campaigning");
    });
}
