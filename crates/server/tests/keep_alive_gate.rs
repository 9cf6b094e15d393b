//! Keep-alives in a cluster being upgraded one member at a time.
//!
//! Why: keep-alives that reach a member together share one `LeaseKeepAlives` log entry
//! (`InternalRequest` field 25). A build from before that entry decodes it as an empty
//! request and renews nothing, so its replica of the lease table would drift from the
//! others'. A member proposes the shared entry only once every peer's handshake said it
//! applies it (`transport::codec::FEATURE_LEASE_KEEP_ALIVES`); until then each keep-alive
//! is an entry of its own, which every build applies.
//!
//! Here one member of three stands in for the older build (`Hooks::applies` without the
//! bit). Keep-alives sent to another member must then take at least one log entry each, and
//! still get their answers (the TTL; 0 for an unknown lease). Then the older member is
//! "upgraded" (restarted with the default hooks on its data dir), and the same load must
//! share entries once the peers have reconnected to it: that is also the control that shows
//! the count can tell the two cases apart.

mod common;

use std::time::{Duration, Instant};

use proto::etcdserverpb::LeaseKeepAliveRequest;
use raftkv_client::{Client, Timeouts};
use server::config::Config;
use server::Hooks;
use tokio_util::sync::CancellationToken;

use common::poll;

const STREAMS: usize = 40;
const ROUNDS: usize = 5;
const TTL: i64 = 60;

/// An unknown lease, renewed by one of the streams.
const UNKNOWN: i64 = 0x7e57_0000_0000_0002;

/// A member's runtime, its shutdown switch and its `serve` task.
type Running = (
    tokio::runtime::Runtime,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

struct Members {
    urls: Vec<String>,
    configs: Vec<Config>,
    running: Vec<Option<Running>>,
}

impl Members {
    fn new(dir: &std::path::Path) -> Members {
        let (urls, configs) = common::in_process::three_members(dir, 50, 500);
        Members {
            urls,
            configs,
            running: (0..3).map(|_| None).collect(),
        }
    }

    /// Starts member `i`, advertising `applies` as the entries it applies.
    fn start(&mut self, i: usize, applies: u64) {
        let config = self.configs[i].clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("member-{i}"))
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let hooks = Hooks {
            applies,
            ..Hooks::default()
        };
        let serving = rt.spawn(server::server::serve(config, hooks, shutdown.clone()));
        self.running[i] = Some((rt, shutdown, serving));
    }

    /// Stops member `i` and waits until `serve` returned (its data dir and ports free).
    fn stop(&mut self, i: usize) -> Result<(), String> {
        let Some((rt, shutdown, serving)) = self.running[i].take() else {
            return Ok(());
        };
        shutdown.cancel();
        let ended =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), serving).await });
        rt.shutdown_timeout(Duration::from_secs(5));
        match ended {
            Ok(Ok(Ok(()))) => Ok(()),
            other => Err(format!("member {i} did not stop cleanly: {other:?}")),
        }
    }

    fn client(&self, i: usize) -> Client {
        Client::new(&[self.urls[i].clone()], Timeouts::default()).expect("client")
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for i in 0..3 {
            // Already failing or done: nothing more to report.
            let _ = self.stop(i);
        }
    }
}

/// The member `i`'s applied index, once it answers.
async fn applied(c: &Client) -> u64 {
    poll("a status answer", Duration::from_secs(30), || async {
        c.status().await.ok().map(|s| s.raft_applied_index)
    })
    .await
}

/// Grants the leases at member `at`, then renews them on `STREAMS` streams (one connection
/// each, one of them renewing an unknown lease) `ROUNDS` times; checks every answer and
/// returns how many log entries member `at` applied meanwhile.
async fn keep_alive_load(m: &Members, at: usize) -> (u64, u64) {
    let c = m.client(at);
    let mut leases = Vec::new();
    for _ in 0..STREAMS - 1 {
        let id = poll("a lease grant", Duration::from_secs(30), || async {
            c.lease_grant(TTL, 0).await.ok().map(|r| r.id)
        })
        .await;
        leases.push(id);
    }
    leases.push(UNKNOWN);
    let before = applied(&c).await;
    let mut streams = Vec::new();
    for &id in &leases {
        let conn = m.client(at);
        streams.push(tokio::spawn(async move {
            let (tx, mut rx) = conn.lease_keep_alive().await.expect("stream");
            let mut answers = Vec::new();
            for _ in 0..ROUNDS {
                let sent = Instant::now();
                tx.send(LeaseKeepAliveRequest { id })
                    .await
                    .expect("send keep-alive");
                let answer = tokio::time::timeout(Duration::from_secs(10), rx.message())
                    .await
                    .unwrap_or_else(|_| panic!("lease {id:x}: no answer within 10 s"))
                    .expect("keep-alive stream")
                    .expect("stream open");
                answers.push((answer.id, answer.ttl, sent.elapsed()));
            }
            (id, answers)
        }));
    }
    for s in streams {
        let (id, answers) = s.await.expect("stream task");
        let known = id != UNKNOWN;
        assert!(
            answers
                .iter()
                .all(|&(got, ttl, rtt)| got == id && promised_ttl_ok(known, TTL, ttl, rtt)),
            "lease {id:x}: answers (id, ttl, round trip) {answers:?}"
        );
    }
    let keep_alives = (STREAMS * ROUNDS) as u64;
    // Other entries may land meanwhile (the leader's checkpoints): they only add.
    let entries = applied(&c).await - before;
    println!("{keep_alives} keep-alives took {entries} log entries");
    (keep_alives, entries)
}

/// Until every member answers a status and one of them leads.
async fn settled(m: &Members) {
    poll(
        "a leader known to all three",
        Duration::from_secs(30),
        || async {
            let mut leaders = Vec::new();
            for i in 0..3 {
                leaders.push(m.client(i).status().await.ok()?.leader);
            }
            (leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])).then_some(())
        },
    )
    .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn keep_alives_take_an_entry_each_until_every_member_applies_the_shared_entry() {
    use server::transport::codec::FEATURE_LEASE_KEEP_ALIVES as SHARED;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Members::new(dir.path());
    // Member 2 stands in for a build from before the shared entry.
    m.start(0, SHARED);
    m.start(1, SHARED);
    m.start(2, 0);
    let observer = runtime();
    observer.block_on(async {
        settled(&m).await;
        let (keep_alives, entries) = keep_alive_load(&m, 0).await;
        assert!(
            entries >= keep_alives,
            "{keep_alives} keep-alives took {entries} log entries: some shared an entry \
             while a member could not apply it"
        );
    });
    // The older member is upgraded: restarted on its data dir, advertising the entry.
    m.stop(2).expect("stop the older member");
    m.start(2, SHARED);
    observer.block_on(async {
        settled(&m).await;
        // The peers learn what it applies when they next connect to it; until both did,
        // keep-alives stay one per entry, so poll a short load until entries are shared.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (keep_alives, entries) = keep_alive_load(&m, 0).await;
            if entries < keep_alives {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "keep-alives never shared an entry after every member was upgraded"
            );
        }
    });
}

/// Whether a keep-alive answer's TTL is what docs/lease.md ("What an answer promises") allows:
/// 0 for a lease that does not exist; else the granted TTL, less for an answer given more
/// than the expiry grace (0.5 s) after the call, `floor(TTL + 0.5 s - lag)`, where the lag is
/// at most the round trip the client saw.
fn promised_ttl_ok(known: bool, granted: i64, ttl: i64, round_trip: Duration) -> bool {
    if !known {
        return ttl == 0;
    }
    let least = (granted as f64 + 0.5 - round_trip.as_secs_f64()).floor() as i64;
    ttl <= granted && ttl >= least.min(granted)
}
