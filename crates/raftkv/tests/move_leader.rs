//! `Maintenance/MoveLeader` on a real 3-member cluster, through the `etcd-client` crate:
//! etcd's errors for a call to a follower and for a target that is not a member, then a
//! transfer that every member sees.

mod common;

use std::time::{Duration, Instant};

use common::{grpc_error, statuses};
use etcd_client::Client;

#[test]
fn move_leader_checks_and_transfers() {
    let cluster = common::start_cluster("mvl");
    let endpoints = cluster.endpoints();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let st = statuses(&endpoints).await;
        let leader = st[0].1;
        let leader_idx = st.iter().position(|(id, _)| *id == leader).expect("leader");
        let follower_idx = (leader_idx + 1) % st.len();
        let target = st[follower_idx].0;

        let mut at_follower = Client::connect([&endpoints[follower_idx]], None)
            .await
            .expect("connect");
        let e = at_follower.move_leader(target).await.unwrap_err();
        assert_eq!(
            grpc_error(e),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: not leader".into()
            )
        );

        let mut at_leader = Client::connect([&endpoints[leader_idx]], None)
            .await
            .expect("connect");
        let e = at_leader.move_leader(0xdead_beef).await.unwrap_err();
        assert_eq!(
            grpc_error(e),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: bad leader transferee".into()
            )
        );

        let started = Instant::now();
        at_leader
            .move_leader(target)
            .await
            .unwrap_or_else(|e| panic!("move-leader: {e}\n{}", cluster.log_tails(30)));
        println!("leadership moved in {:?}", started.elapsed());
        let st = statuses(&endpoints).await;
        assert!(
            st.iter().all(|(_, l)| *l == target),
            "members see {st:?}, expected leader {target:x}"
        );

        // The CLI, as etcdctl: it finds the leader among the endpoints and moves it back.
        let cli = |endpoints: &[String]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"));
            cmd.arg("--endpoints")
                .arg(endpoints.join(","))
                .arg("move-leader")
                .arg(format!("{leader:x}"));
            common::run_with_timeout(cmd, None, Duration::from_secs(30))
        };
        let out = cli(&endpoints[leader_idx..=leader_idx]);
        assert!(
            !out.status.success(),
            "the old leader's endpoint alone has no leader"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no leader endpoint given at"),
            "{out:?}"
        );
        let out = cli(&endpoints);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("Leadership transferred from {target:x} to {leader:x}\n")
        );
        let st = statuses(&endpoints).await;
        assert!(st.iter().all(|(_, l)| *l == leader), "{st:?}");
    });
}
