//! Watch against real member processes:
//!
//! * a differential test against a real etcd 3.4: the same seeded puts, deletes, txns and
//!   compactions on both, then watches at random revisions with random options (ranges,
//!   prefixes, from-key, `prev_kv`, filters, client-chosen and duplicate ids, compacted
//!   and negative starts, bad ranges); every watch's responses are compared field by
//!   field, headers aside;
//! * `etcdctl watch`, `raftkv watch` and the `etcd-client` crate against raftkv;
//! * a stream that never reads does not hold up writes or other watchers, and catches up
//!   from history without a gap once it reads again;
//! * a watch on a follower continues across a leader change, resumes from `last + 1`
//!   after that follower restarts, and a `hasleader` stream is closed with
//!   `etcdserver: no leader` when its member loses the leader.
//!
//! `RAFTKV_WATCH_SEED=<n>` replays a differential sequence.

mod common;

use common::{b, client, runtime};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::etcdserverpb::{
    request_op, watch_create_request::FilterType, CompactionRequest, DeleteRangeRequest,
    PutRequest, RequestOp, StatusResponse, TxnRequest, WatchCreateRequest, WatchResponse,
};
use proto::mvccpb::Event;
use proto::prost::bytes::Bytes;
use raftkv_client::client::{prefix_range_end, Client};
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};
use raftkv_client::{WatchOptions, WatchStream};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn start(program: MemberProgram, prefix: &str, size: usize, extra: &[&str]) -> LocalCluster {
    let mut spec = ClusterSpec::new(program, prefix, size);
    spec.extra_args = extra.iter().map(|s| s.to_string()).collect();
    LocalCluster::start(spec).expect("cannot start the local cluster")
}

/// Wait until the cluster takes writes (the probe write is a revision on every side).
async fn ready(client: &Client, cluster: &LocalCluster) {
    if let Err(e) = client
        .put_retrying("ready", "1", Duration::from_secs(30))
        .await
    {
        panic!("cluster not ready: {e}\n{}", cluster.log_tails(20));
    }
}

// ---------------------------------------------------------------------------------------
// Differential test against etcd 3.4
// ---------------------------------------------------------------------------------------

const KEYS: &[&str] = &["a", "a/1", "a/2", "b", "b/1", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    Put(String, String),
    Delete(String, Bytes),
    Txn(Vec<(String, String)>),
    Compact(i64),
}

struct Side {
    label: &'static str,
    _cluster: LocalCluster,
    client: Client,
}

async fn apply(side: &Side, op: &Op) -> Result<i64, String> {
    let c = &side.client;
    let rev = |h: Option<proto::etcdserverpb::ResponseHeader>| h.map_or(0, |h| h.revision);
    match op.clone() {
        Op::Put(k, v) => c.put_str(&k, &v).await.map(|r| rev(r.header)),
        Op::Delete(k, end) => c
            .delete_range(DeleteRangeRequest {
                key: b(&k),
                range_end: end,
                prev_kv: false,
            })
            .await
            .map(|r| rev(r.header)),
        Op::Txn(puts) => c
            .txn(TxnRequest {
                success: puts
                    .iter()
                    .map(|(k, v)| RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: b(k),
                            value: b(v),
                            ..Default::default()
                        })),
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .map(|r| rev(r.header)),
        Op::Compact(r) => c
            .compact(CompactionRequest {
                revision: r,
                physical: false,
            })
            .await
            .map(|r| rev(r.header)),
    }
    .map_err(|e| format!("{} on {}: {e}", side.label, side.client.endpoints()[0]))
}

fn gen_op(rng: &mut ChaCha8Rng, current: i64, compacted: i64, n: usize) -> Op {
    let key = |rng: &mut ChaCha8Rng| KEYS[rng.gen_range(0..KEYS.len())].to_string();
    match rng.gen_range(0..20) {
        0..=9 => Op::Put(key(rng), format!("v{n}")),
        10..=12 => Op::Delete(key(rng), Bytes::new()),
        13 => Op::Delete("a".into(), Bytes::from(prefix_range_end(b"a"))),
        14..=17 => {
            let mut keys: Vec<String> = (0..rng.gen_range(2..4)).map(|_| key(rng)).collect();
            keys.sort();
            keys.dedup();
            Op::Txn(
                keys.into_iter()
                    .enumerate()
                    .map(|(i, k)| (k, format!("t{n}.{i}")))
                    .collect(),
            )
        }
        _ if current > compacted + 2 => Op::Compact(rng.gen_range(compacted + 1..current)),
        _ => Op::Put(key(rng), format!("v{n}")),
    }
}

fn gen_watch(rng: &mut ChaCha8Rng, current: i64, explicit: &mut Vec<i64>) -> WatchCreateRequest {
    let i = rng.gen_range(0..KEYS.len());
    let (key, end): (Bytes, Bytes) = match rng.gen_range(0..12) {
        0..=3 => (b(KEYS[i]), Bytes::new()),
        4 | 5 => (b("a"), Bytes::from(prefix_range_end(b"a"))),
        6 => (b(KEYS[i]), b("\0")),
        7 | 8 => {
            let j = rng.gen_range(i..KEYS.len());
            let end = if j + 1 < KEYS.len() { KEYS[j + 1] } else { "z" };
            (b(KEYS[i]), b(end))
        }
        9 => (Bytes::new(), b("\0")),
        10 => (b("b"), b("a")),
        _ => (b("c"), b("\0")),
    };
    let start_revision = match rng.gen_range(0..8) {
        0 => 0,
        1 => rng.gen_range(-2..1),
        _ => rng.gen_range(1..current + 3),
    };
    let mut filters = Vec::new();
    if rng.gen_bool(0.2) {
        filters.push(FilterType::Noput as i32);
    }
    if rng.gen_bool(0.2) {
        filters.push(FilterType::Nodelete as i32);
    }
    let watch_id = match rng.gen_range(0..6) {
        0 => {
            let id = 100 + explicit.len() as i64;
            explicit.push(id);
            id
        }
        1 if !explicit.is_empty() => explicit[rng.gen_range(0..explicit.len())],
        // Auto ids start at 0: an explicit 1 collides with the second auto id.
        2 => 1,
        _ => 0,
    };
    WatchCreateRequest {
        key,
        range_end: end,
        start_revision,
        progress_notify: false,
        filters,
        prev_kv: rng.gen_bool(0.5),
        watch_id,
        fragment: false,
    }
}

/// Everything one watch received, headers dropped.
#[derive(Debug, Default, PartialEq)]
struct WatchLog {
    created: Option<WatchResponse>,
    events: Vec<Event>,
    end: Option<WatchResponse>,
    /// Revisions whose events were split over two responses (must stay empty).
    split: Vec<i64>,
    created_rev: i64,
    last_rev: i64,
}

struct Session {
    stream: WatchStream,
    creates: Vec<WatchCreateRequest>,
    logs: Vec<WatchLog>,
    by_id: HashMap<i64, usize>,
    created: usize,
    other: Vec<WatchResponse>,
}

fn strip(mut r: WatchResponse) -> WatchResponse {
    r.header = None;
    r.events.clear();
    r
}

impl Session {
    fn on_response(&mut self, r: WatchResponse) {
        if r.created {
            let idx = self.created;
            self.created += 1;
            if idx >= self.logs.len() {
                self.other.push(strip(r));
                return;
            }
            self.logs[idx].created_rev = r.header.as_ref().map_or(0, |h| h.revision);
            if !r.canceled {
                self.by_id.insert(r.watch_id, idx);
            }
            self.logs[idx].created = Some(strip(r));
            return;
        }
        let Some(&idx) = self.by_id.get(&r.watch_id) else {
            self.other.push(strip(r));
            return;
        };
        let log = &mut self.logs[idx];
        if let Some(first) = r.events.first().and_then(|e| e.kv.as_ref()) {
            if first.mod_revision <= log.last_rev {
                log.split.push(first.mod_revision);
            }
        }
        if let Some(last) = r.events.last().and_then(|e| e.kv.as_ref()) {
            log.last_rev = last.mod_revision;
        }
        log.events.extend(r.events.iter().cloned());
        if r.canceled {
            log.end = Some(strip(r));
        }
    }

    /// Watch `idx` has received all it will, given the two flush revisions and the
    /// compaction point.
    fn finished(&self, idx: usize, f1: i64, f2: i64, compacted: i64) -> bool {
        let log = &self.logs[idx];
        let Some(created) = &log.created else {
            return false;
        };
        if created.canceled || log.end.is_some() {
            return true;
        }
        let req = &self.creates[idx];
        let start = if req.start_revision == 0 {
            log.created_rev + 1
        } else {
            req.start_revision
        };
        if start < compacted {
            // Canceled for compaction (checked above) and nothing else.
            return false;
        }
        let no_put = req.filters.contains(&(FilterType::Noput as i32));
        let no_delete = req.filters.contains(&(FilterType::Nodelete as i32));
        let target = if !no_delete && start <= f2 {
            f2
        } else if !no_put && start <= f1 {
            f1
        } else {
            return true;
        };
        log.last_rev >= target
    }

    async fn pump(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Session) -> bool,
    ) -> Result<(), String> {
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Ok(Some(r))) => self.on_response(r),
                Ok(Ok(None)) => return Err("stream ended".into()),
                Ok(Err(e)) => return Err(format!("stream failed: {e}")),
                Err(_) => return Err("timed out".into()),
            }
        }
        Ok(())
    }
}

async fn open_sessions(side: &Side, groups: &[Vec<WatchCreateRequest>]) -> Vec<Session> {
    let mut sessions = Vec::new();
    for group in groups {
        let stream = side
            .client
            .watch(group[0].clone(), WatchOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: cannot watch: {e}", side.label));
        for c in &group[1..] {
            stream.create(c.clone()).await.expect("create");
        }
        let mut s = Session {
            stream,
            creates: group.clone(),
            logs: group.iter().map(|_| WatchLog::default()).collect(),
            by_id: HashMap::new(),
            created: 0,
            other: Vec::new(),
        };
        let n = group.len();
        s.pump(Instant::now() + Duration::from_secs(20), |s| s.created >= n)
            .await
            .unwrap_or_else(|e| panic!("{}: creates not acknowledged: {e}", side.label));
        sessions.push(s);
    }
    sessions
}

#[test]
fn watch_streams_match_etcd() {
    let seed: u64 = std::env::var("RAFTKV_WATCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0013);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let sides = [
        ("etcd", MemberProgram::Etcd(common::etcd_binary())),
        ("raftkv", common::raftkv_program()),
    ]
    .map(|(label, program)| {
        // A small request limit, so that fragmentation is exercised with small values.
        let cluster = start(
            program,
            &format!("wdiff-{label}"),
            1,
            &[&format!("--max-request-bytes={FRAGMENT_LIMIT}")],
        );
        let client = client(&cluster.endpoints());
        Side {
            label,
            _cluster: cluster,
            client,
        }
    });
    rt.block_on(async {
        for side in &sides {
            ready(&side.client, &side._cluster).await;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut current = 2i64;
        let mut compacted = 0i64;
        let mut n = 0usize;
        for round in 0..4 {
            for _ in 0..60 {
                n += 1;
                let op = gen_op(&mut rng, current, compacted, n);
                let mut revs = Vec::new();
                for side in &sides {
                    revs.push(apply(side, &op).await);
                }
                assert_eq!(revs[0], revs[1], "seed {seed}: {op:?} answered differently");
                if let Ok(r) = revs[0] {
                    current = current.max(r);
                }
                if let Op::Compact(r) = op {
                    compacted = r;
                }
            }
            let mut explicit = Vec::new();
            let groups: Vec<Vec<WatchCreateRequest>> = (0..12)
                .map(|_| {
                    (0..rng.gen_range(1..4))
                        .map(|_| gen_watch(&mut rng, current, &mut explicit))
                        .collect()
                })
                .collect();
            let mut per_side = Vec::new();
            for side in &sides {
                per_side.push(open_sessions(side, &groups).await);
            }
            // Two flush revisions that every generated range sees: a put of every key,
            // then a delete of all of them.
            let flush_put = Op::Txn(
                KEYS.iter()
                    .map(|k| (k.to_string(), format!("f{round}")))
                    .collect(),
            );
            let flush_del = Op::Delete("\0".into(), b("\0"));
            let mut f = Vec::new();
            for op in [&flush_put, &flush_del] {
                let mut revs = Vec::new();
                for side in &sides {
                    revs.push(apply(side, op).await.expect("flush"));
                }
                assert_eq!(revs[0], revs[1]);
                f.push(revs[0]);
            }
            current = f[1];
            for (side, sessions) in sides.iter().zip(per_side.iter_mut()) {
                for (i, s) in sessions.iter_mut().enumerate() {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    let (f1, f2) = (f[0], f[1]);
                    let n = s.logs.len();
                    if let Err(e) = s
                        .pump(deadline, |s| {
                            (0..n).all(|w| s.finished(w, f1, f2, compacted))
                        })
                        .await
                    {
                        panic!(
                            "seed {seed} round {round}: {} stream {i} ({:?}): {e}; got {:#?}",
                            side.label, s.creates, s.logs
                        );
                    }
                }
            }
            let (etcd, raftkv) = (&per_side[0], &per_side[1]);
            for (i, (e, r)) in etcd.iter().zip(raftkv.iter()).enumerate() {
                if (&e.logs, &e.other) != (&r.logs, &r.other) {
                    panic!(
                        "seed {seed} round {round}: stream {i} differs; creates {:#?}\n\
                         etcd: {:#?} {:#?}\nraftkv: {:#?} {:#?}",
                        e.creates, e.logs, e.other, r.logs, r.other
                    );
                }
            }
        }
        let mut answers = Vec::new();
        for side in &sides {
            answers.push(stream_requests(side).await);
        }
        assert_eq!(
            answers[0], answers[1],
            "stream requests (left etcd, right raftkv)"
        );
    });
}

const FRAGMENT_LIMIT: usize = 16 * 1024;
const FRAGMENTED_PUTS: usize = 48;

async fn next_within(s: &mut WatchStream, deadline: Instant) -> WatchResponse {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, s.next())
        .await
        .expect("timed out")
        .expect("stream failed")
        .expect("stream ended")
}

/// What one side answers to cancels (known and unknown), a progress request and a
/// fragmented catch-up: the responses in order with headers, except the progress answer's
/// revision, dropped; fragmented events flattened with each piece's flag.
async fn stream_requests(side: &Side) -> (Vec<WatchResponse>, Vec<bool>, Vec<Event>) {
    let c = &side.client;
    let mut first = 0;
    // etcd fragments at --max-request-bytes + 512 KiB: 48 × 14 KB is over that, and each
    // put is under the 16 KiB request limit.
    for i in 0..FRAGMENTED_PUTS {
        let r = c
            .put_str(&format!("frag/{i:02}"), &"f".repeat(14_000))
            .await
            .expect("put");
        if i == 0 {
            first = r.header.unwrap().revision;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = c
        .watch(
            WatchCreateRequest {
                key: b("k"),
                ..Default::default()
            },
            WatchOptions::default(),
        )
        .await
        .expect("watch");
    let mut seen = vec![next_within(&mut s, deadline).await];
    s.cancel(99).await.expect("cancel unknown");
    s.cancel(0).await.expect("cancel");
    s.request_progress().await.expect("progress");
    seen.push(next_within(&mut s, deadline).await);
    let progress = next_within(&mut s, deadline).await;
    let current = c.status().await.expect("status").header.unwrap().revision;
    assert_eq!(
        progress.header.as_ref().map(|h| h.revision),
        Some(current),
        "{}: progress answer at the wrong revision",
        side.label
    );
    seen.push(progress);
    for r in &mut seen {
        r.header = None;
    }
    s.create(WatchCreateRequest {
        key: b("frag/"),
        range_end: Bytes::from(prefix_range_end(b"frag/")),
        start_revision: first,
        fragment: true,
        watch_id: 7,
        ..Default::default()
    })
    .await
    .expect("create");
    let created = next_within(&mut s, deadline).await;
    assert!(created.created && created.watch_id == 7, "{created:?}");
    let mut flags = Vec::new();
    let mut events = Vec::new();
    while events.len() < FRAGMENTED_PUTS {
        let r = next_within(&mut s, deadline).await;
        flags.push(r.fragment);
        events.extend(r.events);
    }
    (seen, flags, events)
}

// ---------------------------------------------------------------------------------------
// Clients: etcdctl, raftkv watch, the etcd-client crate
// ---------------------------------------------------------------------------------------

/// Start `command` and collect `count` lines of its stdout within `limit`, then kill it.
fn watch_lines(mut command: Command, count: usize, limit: Duration) -> Vec<String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while lines.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        lines.len(),
        count,
        "{command:?} printed {lines:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

#[test]
fn etcdctl_raftkv_cli_and_etcd_client_watch() {
    let cluster = start(
        common::raftkv_program(),
        "wcli",
        3,
        &["--watch-progress-notify-interval=200ms"],
    );
    let endpoints = cluster.endpoints();
    let rt = runtime();
    let _in_runtime = rt.enter();
    let c = client(&endpoints);
    rt.block_on(async {
        ready(&c, &cluster).await;
        c.put_str("a/1", "x").await.unwrap();
        c.put_str("a/2", "y").await.unwrap();
        c.put_str("b", "other").await.unwrap();
        c.put_str("a/1", "z").await.unwrap();
        c.delete_range(DeleteRangeRequest {
            key: b("a/2"),
            ..Default::default()
        })
        .await
        .unwrap();
        c.put_str("a/3", "w").await.unwrap();
    });
    let expected: Vec<String> = [
        "PUT", "a/1", "x", "PUT", "a/2", "y", "PUT", "a/1", "x", "a/1", "z", "DELETE", "a/2", "y",
        "a/2", "", "PUT", "a/3", "w",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let joined = endpoints.join(",");
    let mut etcdctl = Command::new(common::etcdctl_binary());
    etcdctl.env("ETCDCTL_API", "3").args([
        &format!("--endpoints={joined}"),
        "watch",
        "--prefix",
        "a/",
        "--rev=1",
        "--prev-kv",
    ]);
    assert_eq!(
        watch_lines(etcdctl, expected.len(), Duration::from_secs(20)),
        expected
    );

    let raftkv_bin = env!("CARGO_BIN_EXE_raftkv");
    let mut ours = Command::new(raftkv_bin);
    ours.args([
        &format!("--endpoints={joined}"),
        "watch",
        "a/",
        "--prefix",
        "--rev",
        "1",
        "--prev-kv",
    ]);
    assert_eq!(
        watch_lines(ours, expected.len(), Duration::from_secs(20)),
        expected
    );

    let mut json = Command::new(raftkv_bin);
    json.args([
        &format!("--endpoints={joined}"),
        "-w",
        "json",
        "watch",
        "a/1",
        "--rev",
        "1",
    ]);
    let line = &watch_lines(json, 1, Duration::from_secs(20))[0];
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["Events"][0]["kv"]["key"], "YS8x", "{line}");
    assert_eq!(v["Created"], false, "{line}");

    // Progress notifications at the configured interval, printed as etcdctl prints them.
    let mut progress = Command::new(raftkv_bin);
    progress.args([
        &format!("--endpoints={joined}"),
        "watch",
        "idle",
        "--progress-notify",
    ]);
    let lines = watch_lines(progress, 2, Duration::from_secs(20));
    for line in &lines {
        let rev: i64 = line
            .strip_prefix("progress notify: ")
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("not a progress notification: {line:?}"));
        assert!(rev >= 7, "{line}");
    }

    // An etcdctl watch from now sees a later put.
    let mut live = Command::new(common::etcdctl_binary());
    live.env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={joined}"), "watch", "live"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let endpoints = endpoints.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let c = client(&endpoints);
                // Write until the watcher has seen a put (it may start after the first one).
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 400 {
                    c.put_str("live", &format!("l{i}")).await.expect("put");
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
    };
    let lines = watch_lines(live, 3, Duration::from_secs(20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert_eq!(&lines[..2], ["PUT", "live"]);

    rt.block_on(async {
        let mut ec = etcd_client::Client::connect(&endpoints, None)
            .await
            .expect("etcd-client connect");
        let mut stream = ec
            .watch(
                "a/",
                Some(
                    etcd_client::WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(1)
                        .with_prev_key(),
                ),
            )
            .await
            .expect("etcd-client watch");
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < 5 {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, stream.message())
                .await
                .expect("etcd-client watch timed out")
                .expect("etcd-client watch failed")
                .expect("stream ended");
            for e in msg.events() {
                let kv = e.kv().expect("kv");
                seen.push((
                    format!("{:?}", e.event_type()),
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                    e.prev_kv().map(|p| p.value_str().unwrap().to_string()),
                ));
            }
        }
        let want = |t: &str, k: &str, v: &str, p: Option<&str>| {
            (
                t.to_string(),
                k.to_string(),
                v.to_string(),
                p.map(str::to_string),
            )
        };
        assert_eq!(
            seen,
            vec![
                want("Put", "a/1", "x", None),
                want("Put", "a/2", "y", None),
                want("Put", "a/1", "z", Some("x")),
                want("Delete", "a/2", "", Some("y")),
                want("Put", "a/3", "w", None),
            ]
        );
    });
}

// ---------------------------------------------------------------------------------------
// Slow consumers, leader changes, restarts
// ---------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Read until `count` events arrived (or panic at `deadline`).
async fn read_events(stream: &mut WatchStream, count: usize, deadline: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", events.len()))
            .expect("watch failed")
            .expect("watch ended");
        events.extend(r.events);
    }
    events
}

#[test]
fn a_stream_that_never_reads_blocks_nothing_and_catches_up_later() {
    let cluster = start(common::raftkv_program(), "wslow", 1, &[]);
    let endpoints = cluster.endpoints();
    let pid = cluster.member(0).pid().expect("running");
    let rt = runtime();
    rt.block_on(async {
        let writer = client(&endpoints);
        ready(&writer, &cluster).await;
        let create = WatchCreateRequest {
            key: b("s/"),
            range_end: Bytes::from(prefix_range_end(b"s/")),
            ..Default::default()
        };
        // Separate clients: separate connections, so HTTP/2 flow control of the stream
        // that is never read cannot hold up the others.
        let mut slow = client(&endpoints)
            .watch(create.clone(), WatchOptions::default())
            .await
            .expect("slow watch");
        assert!(
            slow.next()
                .await
                .expect("created")
                .expect("created")
                .created
        );
        let mut fast = client(&endpoints)
            .watch(create, WatchOptions::default())
            .await
            .expect("fast watch");
        assert!(
            fast.next()
                .await
                .expect("created")
                .expect("created")
                .created
        );
        let rss_before = rss_kib(pid);
        const PUTS: usize = 400;
        let value = "v".repeat(32 * 1024);
        let mut worst = Duration::ZERO;
        let mut fast_events = Vec::new();
        for i in 0..PUTS {
            let t = Instant::now();
            writer
                .put_str(&format!("s/{:04}", i % 50), &format!("{i}:{value}"))
                .await
                .expect("put");
            worst = worst.max(t.elapsed());
            // The fast watcher keeps up with every put.
            fast_events
                .extend(read_events(&mut fast, 1, Instant::now() + Duration::from_secs(5)).await);
        }
        let grown_mib = rss_kib(pid).saturating_sub(rss_before) / 1024;
        assert!(worst < Duration::from_secs(2), "a put took {worst:?}");
        assert!(
            grown_mib <= 64,
            "the member grew by {grown_mib} MiB with a stalled watcher"
        );
        // ~13 MB of events were written: far more than a stream may hold queued, so the
        // slow stream was set aside and now catches up from history.
        let slow_events =
            read_events(&mut slow, PUTS, Instant::now() + Duration::from_secs(30)).await;
        for events in [&fast_events, &slow_events] {
            assert_eq!(events.len(), PUTS);
            for (i, e) in events.iter().enumerate() {
                let kv = e.kv.as_ref().expect("kv");
                assert!(
                    kv.value.starts_with(format!("{i}:").as_bytes()),
                    "event {i} is out of order or missing"
                );
            }
        }
        eprintln!("slow consumer: worst put {worst:?}, member RSS grew {grown_mib} MiB");
    });
}

/// Put through whichever member answers (members are being killed): unique values, so a
/// put that errs is retried on the next member until one acknowledges it.
async fn put_anywhere(all: &Client, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let members = all.each();
    for i in 0.. {
        match members[i % members.len()].put_str(key, value).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "put {key}={value}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_watch_on_a_follower_that_installs_a_snapshot_misses_nothing() {
    let cluster = start(
        common::raftkv_program(),
        "wsnap",
        3,
        &["--snapshot-count=50"],
    );
    let endpoints = cluster.endpoints();
    let rt = runtime();
    let _in_runtime = rt.enter();
    let all = client(&endpoints);
    rt.block_on(async {
        ready(&all, &cluster).await;
        let leader = leader_index(&all).await;
        let follower = (leader + 1) % 3;
        let create = WatchCreateRequest {
            key: b("n/"),
            range_end: Bytes::from(prefix_range_end(b"n/")),
            ..Default::default()
        };
        let mut stream = all
            .only(follower)
            .watch(create, WatchOptions::default())
            .await
            .expect("watch");
        assert!(stream.next().await.unwrap().unwrap().created);
        let writer = all.only(leader);
        writer.put_str("n/first", "0").await.expect("put");
        let pid = cluster.member(follower).pid().expect("running") as i32;
        // Pause the follower while the leader's log moves past several snapshots, so it
        // can only catch up by installing one.
        // SAFETY: signalling a child process this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        const PUTS: usize = 400;
        for i in 1..=PUTS {
            writer
                .put_str(&format!("n/{}", i % 13), &i.to_string())
                .await
                .expect("put");
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let events = read_events(
            &mut stream,
            PUTS + 1,
            Instant::now() + Duration::from_secs(30),
        )
        .await;
        let values: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.kv.as_ref().unwrap().value).into_owned())
            .collect();
        let want: Vec<String> = (0..=PUTS).map(|i| i.to_string()).collect();
        assert_eq!(
            values, want,
            "events lost, repeated or reordered across the snapshot"
        );
        let log = std::fs::read_to_string(&cluster.member(follower).log_path).unwrap_or_default();
        assert!(
            log.contains("installing snapshot"),
            "the follower never installed a snapshot, so this test proved nothing"
        );
    });
}

#[test]
fn idle_watchers_cost_little_memory() {
    let cluster = start(common::raftkv_program(), "widle", 1, &[]);
    let endpoints = cluster.endpoints();
    let pid = cluster.member(0).pid().expect("running");
    let rt = runtime();
    let _in_runtime = rt.enter();
    let c = client(&endpoints);
    rt.block_on(async {
        ready(&c, &cluster).await;
        const WATCHES: usize = 10_000;
        let watch = |i: usize| WatchCreateRequest {
            key: b(&format!("idle/{i:05}")),
            ..Default::default()
        };
        let mut stream = c
            .watch(watch(0), WatchOptions::default())
            .await
            .expect("watch");
        assert!(stream.next().await.unwrap().unwrap().created);
        let before = rss_kib(pid);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut created = 0;
        for i in 1..=WATCHES {
            stream.create(watch(i)).await.expect("create");
            // Read the answers as they come so neither side's queue fills.
            while created < i.saturating_sub(32) {
                assert!(next_within(&mut stream, deadline).await.created);
                created += 1;
            }
        }
        while created < WATCHES {
            assert!(next_within(&mut stream, deadline).await.created);
            created += 1;
        }
        let per_watch = (rss_kib(pid).saturating_sub(before) * 1024) as usize / WATCHES;
        eprintln!("idle watchers: about {per_watch} bytes of member RSS each");
        assert!(per_watch <= 2048, "{per_watch} bytes per idle watcher");
        // They still work.
        c.put_str("idle/09999", "x").await.expect("put");
        let r = next_within(&mut stream, deadline).await;
        assert_eq!(r.events.len(), 1, "{r:?}");
    });
}

async fn status_of(c: &Client) -> Option<StatusResponse> {
    c.status().await.ok()
}

/// The index of the leader among the three members, as the last member asked reports it.
async fn leader_index(all: &Client) -> usize {
    let mut leader_id = 0;
    let mut ids = Vec::new();
    for i in 0..3 {
        let st = status_of(&all.only(i)).await.expect("status");
        leader_id = st.leader;
        ids.push(st.header.unwrap().member_id);
    }
    ids.iter().position(|id| *id == leader_id).expect("leader")
}

#[test]
fn a_follower_watch_survives_leader_change_restart_and_reports_no_leader() {
    let mut cluster = start(common::raftkv_program(), "wfail", 3, &[]);
    let endpoints = cluster.endpoints();
    let rt = runtime();
    let _in_runtime = rt.enter();
    let all = client(&endpoints);
    rt.block_on(async {
        ready(&all, &cluster).await;
        // A follower and the leader, by index.
        let leader = leader_index(&all).await;
        let follower = (leader + 1) % 3;
        let on_follower = all.only(follower);
        let watch_from = |rev: i64| WatchCreateRequest {
            key: b("l/"),
            range_end: Bytes::from(prefix_range_end(b"l/")),
            start_revision: rev,
            ..Default::default()
        };
        let mut stream = on_follower
            .watch(watch_from(1), WatchOptions::default())
            .await
            .expect("watch");
        let mut events = Vec::new();
        let mut written = 0usize;
        let mut write = |n: usize| {
            let all = all.clone();
            let from = written;
            written += n;
            async move {
                for i in from..from + n {
                    put_anywhere(&all, &format!("l/{}", i % 7), &i.to_string()).await;
                }
            }
        };
        write(20).await;
        events.extend(read_events(&mut stream, 20, Instant::now() + Duration::from_secs(20)).await);
        // The leader dies: the follower's watch goes on.
        cluster.kill_member(leader).expect("kill leader");
        write(20).await;
        events.extend(read_events(&mut stream, 20, Instant::now() + Duration::from_secs(30)).await);
        cluster.start_member(leader).expect("restart old leader");
        // The follower restarts: re-watch from the last revision seen + 1.
        cluster.kill_member(follower).expect("kill follower");
        write(10).await;
        cluster.start_member(follower).expect("restart follower");
        let last = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(0, |kv| kv.mod_revision);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match on_follower
                .watch(watch_from(last + 1), WatchOptions::default())
                .await
            {
                Ok(s) => break s,
                Err(e) => assert!(Instant::now() < deadline, "cannot re-watch: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        write(10).await;
        events.extend(read_events(&mut stream, 20, Instant::now() + Duration::from_secs(30)).await);
        // A put retried after an error may have been applied twice, so the history may
        // hold a value twice: compare with the history itself, read by a fresh watch on
        // another member.
        let revs: Vec<i64> = events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "revisions repeat or go back: {revs:?}"
        );
        let values: std::collections::HashSet<String> = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.kv.as_ref().unwrap().value).into_owned())
            .collect();
        for i in 0..written {
            assert!(
                values.contains(&i.to_string()),
                "the put of {i} was never seen"
            );
        }
        let mut history = all
            .only(leader)
            .watch(watch_from(1), WatchOptions::default())
            .await
            .expect("history watch");
        let full = read_events(
            &mut history,
            events.len(),
            Instant::now() + Duration::from_secs(20),
        )
        .await;
        assert_eq!(
            full, events,
            "the follower's watch differs from the history"
        );

        // A `hasleader` stream on the follower is closed once it has no leader.
        let mut guarded = on_follower
            .watch(
                watch_from(0),
                WatchOptions {
                    require_leader: true,
                },
            )
            .await
            .expect("watch with hasleader");
        assert!(guarded.next().await.unwrap().unwrap().created);
        for i in 0..3 {
            if i != follower {
                cluster.kill_member(i).expect("kill");
            }
        }
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match guarded.next().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the hasleader stream was not closed");
        let err = closed.expect_err("the stream should end with an error");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), "etcdserver: no leader");
    });
}
