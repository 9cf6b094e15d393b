//! The leader keeps its leadership while its client runtime cannot run anything, because
//! the peer transport runs on a runtime of its own (`server::serve_with_peer_runtime`).
//!
//! Why: issue 18 requires that load alone never changes the leader. 100 readers of a 280 MB
//! range kept a leader's runtime workers busy encoding answers; its followers' acks and its
//! heartbeats waited in the same run queue, and it stepped down. Here the leader's client
//! runtime (one worker) is blocked outright for three election timeouts, the harshest form
//! of that load. With the transport on its own runtime the term does not move; the negative
//! control runs the same cluster with the transport on the client runtime and must see an
//! election, so the test can fail.

mod common;

use std::time::{Duration, Instant};

use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::StatusRequest;
use server::Hooks;
use tokio_util::sync::CancellationToken;

const ELECTION: Duration = Duration::from_millis(1000);

/// One member on runtimes of its own: a client runtime of one worker, and a peer runtime
/// unless `shared` puts the transport on the client runtime.
struct Member {
    client_url: String,
    client_rt: tokio::runtime::Runtime,
    _peer_rt: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn start_cluster(dir: &std::path::Path, shared: bool) -> Vec<Member> {
    let (client_urls, configs) =
        common::in_process::three_members(dir, 100, ELECTION.as_millis() as u64);
    client_urls
        .into_iter()
        .zip(configs)
        .enumerate()
        .map(|(i, (client_url, config))| {
            let client_rt = runtime(&format!("client-{i}"));
            let peer_rt = (!shared).then(|| runtime(&format!("peer-{i}")));
            let peer_handle = peer_rt.as_ref().map(|rt| rt.handle().clone());
            let shutdown = CancellationToken::new();
            client_rt.spawn(server::server::serve_with_peer_runtime(
                config,
                Hooks::default(),
                shutdown.clone(),
                peer_handle,
            ));
            Member {
                client_url,
                client_rt,
                _peer_rt: peer_rt,
                shutdown,
            }
        })
        .collect()
}

/// What member `url` reports, if it answers: (its own id, its leader's id or 0, term).
async fn status(url: &str) -> Option<(u64, u64, u64)> {
    let mut m = MaintenanceClient::connect(url.to_string()).await.ok()?;
    let s = tokio::time::timeout(Duration::from_secs(1), m.status(StatusRequest {}))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let header = s.header?;
    Some((header.member_id, s.leader, header.raft_term))
}

/// Blocks the leader's client runtime for three election timeouts and returns the term
/// before and the highest term the other members reported during it and one election
/// timeout after.
fn block_the_leaders_client_runtime(shared: bool) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let members = start_cluster(dir.path(), shared);
    let urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let observer = runtime("observer");
    // The leader, once all three agree on it and its term.
    let (leader, term) = observer.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no settled leader within 30 s");
            let mut seen = Vec::new();
            for url in &urls {
                seen.push(status(url).await);
            }
            let agreed = seen
                .iter()
                .flatten()
                .map(|s| (s.1, s.2))
                .collect::<Vec<_>>();
            if agreed.len() == 3 && agreed[0].0 != 0 && agreed.iter().all(|a| *a == agreed[0]) {
                let leader = seen
                    .iter()
                    .position(|s| s.map(|s| s.0) == Some(agreed[0].0))
                    .expect("the leader is one of the members");
                break (leader, agreed[0].1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Block the leader's only client worker: nothing on that runtime runs meanwhile.
    let blocked_for = ELECTION * 3;
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    members[leader].client_rt.spawn(async move {
        started_tx.send(()).unwrap();
        std::thread::sleep(blocked_for);
    });
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocking task started");
    let until = Instant::now() + blocked_for + ELECTION;
    let others: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| urls[i].clone())
        .collect();
    let highest = observer.block_on(async {
        let mut highest = term;
        while Instant::now() < until {
            for url in &others {
                if let Some((_, _, t)) = status(url).await {
                    highest = highest.max(t);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        highest
    });
    for m in &members {
        m.shutdown.cancel();
    }
    for m in members {
        m.client_rt.shutdown_timeout(Duration::from_secs(2));
    }
    (term, highest)
}

#[test]
fn the_leader_keeps_its_term_while_its_client_runtime_is_blocked() {
    let (before, highest) = block_the_leaders_client_runtime(false);
    assert_eq!(
        highest, before,
        "an election happened while only the leader's client runtime was blocked"
    );
}

/// Negative control: the transport on the blocked runtime stops the leader's heartbeats.
#[test]
fn negative_control_with_the_transport_on_the_client_runtime_the_leader_is_deposed() {
    let (before, highest) = block_the_leaders_client_runtime(true);
    assert!(
        highest > before,
        "no election although the leader's transport could not run for three election timeouts"
    );
}
