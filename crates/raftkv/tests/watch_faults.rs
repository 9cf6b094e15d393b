//! Watchers under faults, as fixed sequences of steps against real member processes:
//!
//! * a watcher on a member that is killed and restarted re-watches from `last + 1` and
//!   gets exactly the events it missed;
//! * watchers on a member that is paused (SIGSTOP) while the others write far enough that
//!   it can only catch up by installing a snapshot: every event once, in order, with the
//!   right `prev_kv`; and when the history such a watcher needs was compacted meanwhile, a
//!   cancel carrying `compact_revision` (etcd's answer: its restored watchers are unsynced,
//!   and an unsynced watcher below the compaction revision is canceled), while a watcher
//!   whose start revision lies beyond the compaction still gets every event from there;
//! * a slow consumer (a stream that is not read) whose next revision is compacted while it
//!   lags is canceled with `compact_revision`, after an unbroken prefix of its events.
//!
//! What each watcher should receive is computed by [`Model`] from the writes the test made
//! (their revisions come from the write responses), never written down by hand. The
//! operations are drawn from a seeded generator; `RAFTKV_WATCH_FAULTS_SEED=<n>` replays one.
//! Faults are steps in a fixed order and every wait polls a condition with a deadline.

mod common;

use common::{b, client, runtime};

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proto::etcdserverpb::{
    request_op, watch_create_request::FilterType, CompactionRequest, DeleteRangeRequest,
    PutRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchResponse,
};
use proto::mvccpb::{event::EventType, Event, KeyValue};
use proto::prost::bytes::Bytes;
use raftkv_client::client::{prefix_range_end, Client};
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster};
use raftkv_client::{WatchOptions, WatchStream};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn start(prefix: &str, size: usize, extra: &[&str]) -> LocalCluster {
    let mut spec = ClusterSpec::new(common::backend_program(), prefix, size);
    spec.extra_args = extra.iter().map(|s| s.to_string()).collect();
    LocalCluster::start(spec).expect("cannot start the local cluster")
}

// ---------------------------------------------------------------------------------------
// The model: what every watcher should see, from the writes alone
// ---------------------------------------------------------------------------------------

/// The keys the writes touch: all under `f/`.
const PREFIX: &str = "f/";
const KEYS: usize = 8;

fn key(i: usize) -> String {
    format!("{PREFIX}{i}")
}

/// etcd's MVCC history of the test's keys, rebuilt from the writes: the live versions and
/// every event (one revision's in the order the request made them), each with its
/// `prev_kv`.
#[derive(Default)]
struct Model {
    live: BTreeMap<Bytes, KeyValue>,
    events: Vec<Event>,
    revision: i64,
}

impl Model {
    /// A write answered with revision `rev` (always above the last: the test is the only
    /// writer of its keys, and writes one at a time).
    fn advance(&mut self, rev: i64) {
        assert!(
            rev > self.revision,
            "a write's revision {rev} is not after {}",
            self.revision
        );
        self.revision = rev;
    }

    fn put(&mut self, key: &Bytes, value: &Bytes) {
        let prev = self.live.get(key).cloned();
        let kv = KeyValue {
            key: key.clone(),
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: value.clone(),
            lease: 0,
        };
        self.live.insert(key.clone(), kv.clone());
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev,
        });
    }

    /// The live keys in `[key, end)` (`end` empty: the key alone).
    fn keys_in(&self, key: &Bytes, end: &Bytes) -> Vec<Bytes> {
        if end.is_empty() {
            return self
                .live
                .get(key)
                .map(|kv| kv.key.clone())
                .into_iter()
                .collect();
        }
        self.live
            .range(key.clone()..end.clone())
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn delete(&mut self, key: &Bytes) {
        let prev = self.live.remove(key).expect("deleting a live key");
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.clone(),
                mod_revision: self.revision,
                ..Default::default()
            }),
            prev_kv: Some(prev),
        });
    }

    /// What `watch` must receive of revisions `from..=to`.
    fn expected(&self, watch: &WatchCreateRequest, from: i64, to: i64) -> Vec<Event> {
        let (key, end) = (&watch.key, &watch.range_end);
        let has = |f: FilterType| watch.filters.contains(&(f as i32));
        self.events
            .iter()
            .filter(|e| {
                let kv = e.kv.as_ref().expect("kv");
                let in_range = if end.is_empty() {
                    kv.key == *key
                } else {
                    kv.key >= *key && kv.key < *end
                };
                let wanted = if e.r#type == EventType::Put as i32 {
                    !has(FilterType::Noput)
                } else {
                    !has(FilterType::Nodelete)
                };
                in_range && wanted && (from..=to).contains(&kv.mod_revision)
            })
            .map(|e| {
                let mut e = e.clone();
                if !watch.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// Writes seeded operations on the test's keys through one member and keeps the model.
struct Writer {
    client: Client,
    model: Model,
    rng: ChaCha8Rng,
    written: usize,
    /// Bytes of each value (the slow-consumer test writes large ones).
    value_size: usize,
}

impl Writer {
    fn new(client: Client, seed: u64) -> Writer {
        Writer {
            client,
            model: Model::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            written: 0,
            value_size: 0,
        }
    }

    fn value(&mut self) -> Bytes {
        self.written += 1;
        let mut v = format!("v{}:", self.written).into_bytes();
        v.resize(v.len().max(self.value_size), b'.');
        Bytes::from(v)
    }

    async fn put(&mut self, k: &str) {
        let (k, v) = (b(k), self.value());
        let r = self
            .client
            .put(PutRequest {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .await
            .expect("put");
        self.model.advance(r.header.expect("header").revision);
        self.model.put(&k, &v);
    }

    /// Delete `[k, end)`; a delete that removes nothing makes no revision.
    async fn delete(&mut self, k: &str, end: Bytes) {
        let k = b(k);
        let doomed = self.model.keys_in(&k, &end);
        let r = self
            .client
            .delete_range(DeleteRangeRequest {
                key: k,
                range_end: end,
                prev_kv: false,
            })
            .await
            .expect("delete");
        assert_eq!(r.deleted, doomed.len() as i64, "the model lost track");
        if doomed.is_empty() {
            return;
        }
        self.model.advance(r.header.expect("header").revision);
        for k in &doomed {
            self.model.delete(k);
        }
    }

    /// One Txn: puts on some keys and a delete of another, all at one revision.
    async fn txn(&mut self, puts: &[usize], delete: Option<usize>) {
        let puts: Vec<(Bytes, Bytes)> = puts.iter().map(|i| (b(&key(*i)), self.value())).collect();
        let mut ops: Vec<RequestOp> = puts
            .iter()
            .map(|(k, v)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        let delete = delete.map(|i| b(&key(i)));
        if let Some(k) = &delete {
            ops.push(RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: k.clone(),
                        ..Default::default()
                    },
                )),
            });
        }
        let r = self
            .client
            .txn(TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await
            .expect("txn");
        assert!(r.succeeded);
        self.model.advance(r.header.expect("header").revision);
        for (k, v) in &puts {
            self.model.put(k, v);
        }
        if let Some(k) = delete {
            if self.model.live.contains_key(&k) {
                self.model.delete(&k);
            }
        }
    }

    /// One operation drawn from the seeded generator: mostly puts, some deletes (single
    /// keys, and now and then a range), some Txns of distinct keys.
    async fn step(&mut self) {
        let k = self.rng.gen_range(0..KEYS);
        match self.rng.gen_range(0..20) {
            0..=10 => self.put(&key(k)).await,
            11..=13 => self.delete(&key(k), Bytes::new()).await,
            14 => {
                let hi = (k + 3).min(KEYS);
                self.delete(&key(k), b(&key(hi))).await
            }
            _ => {
                let mut keys: Vec<usize> = (0..KEYS).collect();
                let n = self.rng.gen_range(2..=4);
                let mut picked = Vec::new();
                for _ in 0..n {
                    picked.push(keys.swap_remove(self.rng.gen_range(0..keys.len())));
                }
                let delete = (picked.len() > 2).then(|| picked.pop().expect("picked"));
                self.txn(&picked, delete).await
            }
        }
    }

    /// Operations until the model's revision has moved `revisions` on (a delete of a missing
    /// key makes none).
    async fn advance_by(&mut self, revisions: i64) {
        let target = self.model.revision + revisions;
        while self.model.revision < target {
            self.step().await;
        }
    }

    async fn compact(&self, revision: i64) {
        self.client
            .compact(CompactionRequest {
                revision,
                physical: false,
            })
            .await
            .expect("compact");
    }
}

// ---------------------------------------------------------------------------------------
// Reading watches
// ---------------------------------------------------------------------------------------

fn prefix_watch() -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(PREFIX),
        range_end: Bytes::from(prefix_range_end(PREFIX.as_bytes())),
        prev_kv: true,
        ..Default::default()
    }
}

/// `[f/2, f/5)`, deletes only, with `prev_kv`.
fn deletes_watch() -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(&key(2)),
        range_end: b(&key(5)),
        prev_kv: true,
        filters: vec![FilterType::Noput as i32],
        ..Default::default()
    }
}

/// `f/3` alone, puts only, without `prev_kv`.
fn one_key_watch() -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(&key(3)),
        filters: vec![FilterType::Nodelete as i32],
        ..Default::default()
    }
}

async fn next_within(s: &mut WatchStream, deadline: Instant) -> WatchResponse {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, s.next())
        .await
        .expect("timed out waiting for a watch response")
        .expect("the watch stream failed")
        .expect("the watch stream ended")
}

/// The watch ids of `creates`, sent one after the other on `stream` (the first was sent
/// when the stream was opened), from their `created` answers. Events that arrive
/// meanwhile (a watch from a past revision starts sending at once) go to `into`.
async fn create_all(
    stream: &mut WatchStream,
    creates: &[WatchCreateRequest],
    into: &mut Received,
) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ids = Vec::new();
    for (i, c) in creates.iter().enumerate() {
        if i > 0 {
            stream.create(c.clone()).await.expect("create");
        }
        loop {
            let r = next_within(stream, deadline).await;
            if r.created {
                assert!(!r.canceled, "create refused: {r:?}");
                ids.push(r.watch_id);
                break;
            }
            into.file(r);
        }
    }
    ids
}

/// What a stream's watches received, by watch id.
#[derive(Default)]
struct Received {
    events: HashMap<i64, Vec<Event>>,
    cancels: HashMap<i64, WatchResponse>,
}

impl Received {
    fn of(&self, id: i64) -> &[Event] {
        self.events.get(&id).map_or(&[], Vec::as_slice)
    }

    fn file(&mut self, r: WatchResponse) {
        if r.canceled {
            assert!(r.events.is_empty(), "{r:?}");
            self.cancels.insert(r.watch_id, r);
        } else {
            self.events.entry(r.watch_id).or_default().extend(r.events);
        }
    }

    /// The last revision watch `id` was sent an event of.
    fn last_rev(&self, id: i64) -> i64 {
        self.of(id)
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(0, |kv| kv.mod_revision)
    }
}

/// Read `stream` until every watch has as many events as `want` says (or was canceled),
/// then ask for progress and read up to its answer: an event that arrives before it is
/// one too many. (raftkv answers a progress request only once everything up to its
/// revision was sent; etcd 3.4 may answer earlier, which makes this last check weaker there.)
async fn read_stream(stream: &mut WatchStream, want: &HashMap<i64, usize>, into: &mut Received) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |r: &Received| {
        want.iter()
            .all(|(id, n)| r.cancels.contains_key(id) || r.of(*id).len() >= *n)
    };
    let mut asked = false;
    loop {
        if done(into) && !asked {
            stream.request_progress().await.expect("progress request");
            asked = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let r = match tokio::time::timeout(left, stream.next()).await {
            Ok(r) => r
                .expect("the watch stream failed")
                .expect("the watch stream ended"),
            Err(_) => {
                let got: Vec<(i64, usize, bool)> = want
                    .keys()
                    .map(|id| (*id, into.of(*id).len(), into.cancels.contains_key(id)))
                    .collect();
                panic!(
                    "timed out: wanted {want:?} events, got (id, events, canceled) {got:?}, \
                     progress asked: {asked}"
                );
            }
        };
        if r.watch_id == -1 && !r.created {
            if asked {
                return;
            }
            continue;
        }
        assert!(!r.created, "unexpected created response: {r:?}");
        into.file(r);
    }
}

/// Compare what watch `id` got with the model's events, saying which differ first.
fn assert_events(what: &str, got: &[Event], want: &[Event]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(g, w)| g != w);
    panic!(
        "{what}: got {} events, want {}; first difference at {first:?}:\n  got  {:?}\n  want {:?}",
        got.len(),
        want.len(),
        first.and_then(|i| got.get(i)).or(got.get(want.len())),
        first.and_then(|i| want.get(i)).or(want.get(got.len())),
    );
}

/// The index of the leader among the members, as member 0 reports it.
async fn leader_index(all: &Client, cluster: &LocalCluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ids = Vec::new();
        let mut leader = 0;
        for c in all.each() {
            match c.status().await {
                Ok(st) => {
                    ids.push(st.header.expect("header").member_id);
                    leader = leader.max(st.leader);
                }
                Err(_) => ids.push(0),
            }
        }
        if let Some(i) = ids.iter().position(|id| *id == leader && leader != 0) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no leader\n{}",
            cluster.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the cluster takes writes.
async fn ready(c: &Client, cluster: &LocalCluster) {
    if let Err(e) = c.put_retrying("ready", "1", Duration::from_secs(30)).await {
        panic!("cluster not ready: {e}\n{}", cluster.log_tails(20));
    }
}

fn signal(cluster: &LocalCluster, member: usize, sig: i32) {
    let pid = cluster.member(member).pid().expect("running") as i32;
    // SAFETY: kill(2) on a child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn is_raftkv() -> bool {
    matches!(
        common::backend_program(),
        raftkv_client::local_cluster::MemberProgram::Raftkv(_)
    )
}

/// How many snapshots member `i` has installed from the leader, by its log.
fn snapshot_installs(cluster: &LocalCluster, i: usize) -> usize {
    std::fs::read_to_string(&cluster.member(i).log_path)
        .unwrap_or_default()
        .matches("installing snapshot from the leader")
        .count()
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[test]
fn a_watcher_on_a_restarted_member_rewatches_from_last_plus_one_and_misses_nothing() {
    let seed = common::seed_from_env("RAFTKV_WATCH_FAULTS_SEED");
    let mut cluster = start("wfrst", 3, &[]);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let all = client(&cluster.endpoints());
    rt.block_on(async {
        ready(&all, &cluster).await;
        let leader = leader_index(&all, &cluster).await;
        let member = (leader + 1) % 3;
        let on_member = all.only(member);
        let mut w = Writer::new(all.only(leader), seed);
        let creates = [prefix_watch(), deletes_watch(), one_key_watch()];
        let open = |from: &[i64]| {
            let creates: Vec<WatchCreateRequest> = creates
                .iter()
                .zip(from)
                .map(|(c, rev)| WatchCreateRequest {
                    start_revision: *rev,
                    ..c.clone()
                })
                .collect();
            let on_member = on_member.clone();
            async move {
                // The member may still be starting: retry opening until it answers.
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut stream = loop {
                    match on_member
                        .watch(creates[0].clone(), WatchOptions::default())
                        .await
                    {
                        Ok(s) => break s,
                        Err(e) => assert!(Instant::now() < deadline, "cannot watch: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let mut early = Received::default();
                let ids = create_all(&mut stream, &creates, &mut early).await;
                (stream, ids, early)
            }
        };
        let (mut stream, ids, mut before) = open(&[1; 3]).await;
        w.advance_by(40).await;
        let want_counts = |w: &Writer, ids: &[i64], from: &[i64]| -> HashMap<i64, usize> {
            ids.iter()
                .zip(&creates)
                .zip(from)
                .map(|((id, c), from)| (*id, w.model.expected(c, *from, i64::MAX).len()))
                .collect()
        };
        read_stream(&mut stream, &want_counts(&w, &ids, &[1; 3]), &mut before).await;
        for (id, c) in ids.iter().zip(&creates) {
            assert_events(
                "before the restart",
                before.of(*id),
                &w.model.expected(c, 1, w.model.revision),
            );
        }
        // The member dies while writes go on; it comes back with whatever its data
        // directory holds and catches up from the leader.
        drop(stream);
        cluster.kill_member(member).expect("kill");
        w.advance_by(40).await;
        cluster.start_member(member).expect("restart");
        let resume: Vec<i64> = ids.iter().map(|id| before.last_rev(*id) + 1).collect();
        let (mut stream, ids, mut after) = open(&resume).await;
        w.advance_by(20).await;
        read_stream(&mut stream, &want_counts(&w, &ids, &resume), &mut after).await;
        assert!(after.cancels.is_empty(), "{:?}", after.cancels);
        for ((id, c), from) in ids.iter().zip(&creates).zip(&resume) {
            let want = w.model.expected(c, *from, w.model.revision);
            assert_events("after the restart", after.of(*id), &want);
        }
    });
}

#[test]
fn watchers_on_a_member_that_installs_snapshots_get_every_event_or_a_compaction_cancel() {
    let seed = common::seed_from_env("RAFTKV_WATCH_FAULTS_SEED");
    let cluster = start("wfsnap", 3, &["--snapshot-count=50"]);
    let _logs = common::LogsOnPanic(&cluster);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let all = client(&cluster.endpoints());
    rt.block_on(async {
        ready(&all, &cluster).await;
        let leader = leader_index(&all, &cluster).await;
        let member = (leader + 1) % 3;
        let mut w = Writer::new(all.only(leader), seed);
        let creates = [prefix_watch(), deletes_watch(), one_key_watch()];
        let mut stream = all
            .only(member)
            .watch(creates[0].clone(), WatchOptions::default())
            .await
            .expect("watch");
        let mut got = Received::default();
        let ids = create_all(&mut stream, &creates, &mut got).await;
        // Entries written past the paused member so that it can only catch up from a
        // snapshot. raftkv's leader keeps sending appends to it (into socket buffers) until
        // 256 are unacknowledged (one write is one append here), then stops; it keeps no log
        // behind its snapshots (taken every 50 entries here), so once ~100 more entries are
        // written, those the member needs next are gone. etcd 3.4 keeps 5,000 entries
        // behind a snapshot (for `RAFTKV_TEST_BACKEND=etcd`).
        let past_snapshots = if is_raftkv() { 450 } else { 5_100 };
        // More entries than the leader sends a paused member unacknowledged (raftkv: 256
        // appends; etcd 3.4: 512).
        let past_inflight: i64 = if is_raftkv() { 300 } else { 600 };
        let first = w.model.revision + 1;
        let counts = |w: &Writer| -> HashMap<i64, usize> {
            ids.iter()
                .zip(&creates)
                .map(|(id, c)| (*id, w.model.expected(c, first, i64::MAX).len()))
                .collect()
        };

        // 1. Synced watchers, then a pause long enough that the member must install a
        //    snapshot: every event once, in order, with the right prev_kv.
        w.advance_by(20).await;
        read_stream(&mut stream, &counts(&w), &mut got).await;
        let installs = snapshot_installs(&cluster, member);
        signal(&cluster, member, libc::SIGSTOP);
        w.advance_by(past_snapshots).await;
        signal(&cluster, member, libc::SIGCONT);
        read_stream(&mut stream, &counts(&w), &mut got).await;
        if is_raftkv() {
            assert!(
                snapshot_installs(&cluster, member) > installs,
                "the member never installed a snapshot, so this step proved nothing"
            );
        }
        assert!(got.cancels.is_empty(), "{:?}", got.cancels);
        for (id, c) in ids.iter().zip(&creates) {
            assert_events(
                "across a snapshot install",
                got.of(*id),
                &w.model.expected(c, first, w.model.revision),
            );
        }

        // 2. A watcher that starts in the future, then another pause during which the
        //    history the first three still need is compacted away (below the future
        //    start). The compaction comes after the appends the leader sends the paused
        //    member before waiting for its acknowledgements, so the member only learns of
        //    it from a snapshot, by which time its watchers are below it.
        let paused_at = w.model.revision;
        let future = WatchCreateRequest {
            start_revision: paused_at + past_inflight + 20,
            ..prefix_watch()
        };
        stream.create(future.clone()).await.expect("create");
        let r = next_within(&mut stream, Instant::now() + Duration::from_secs(10)).await;
        assert!(r.created && !r.canceled, "{r:?}");
        let future_id = r.watch_id;
        let installs = snapshot_installs(&cluster, member);
        signal(&cluster, member, libc::SIGSTOP);
        w.advance_by(past_inflight).await;
        let compacted = w.model.revision;
        w.compact(compacted).await;
        w.advance_by(past_snapshots).await;
        signal(&cluster, member, libc::SIGCONT);
        let mut want: HashMap<i64, usize> = ids.iter().map(|id| (*id, usize::MAX)).collect();
        want.insert(
            future_id,
            w.model
                .expected(&future, future.start_revision, i64::MAX)
                .len(),
        );
        let mut after = Received::default();
        read_stream(&mut stream, &want, &mut after).await;
        if is_raftkv() {
            assert!(
                snapshot_installs(&cluster, member) > installs,
                "the member never installed a snapshot, so this step proved nothing"
            );
        }
        for (id, c) in ids.iter().zip(&creates) {
            // What arrived live before the snapshot, in order, then the cancel.
            let got = after.of(*id);
            let below = w.model.expected(c, paused_at + 1, compacted - 1);
            assert!(
                got.len() <= below.len(),
                "watch {id} got events past the compaction"
            );
            assert_events("before the compaction cancel", got, &below[..got.len()]);
            let cancel = after.cancels.get(id).expect("canceled");
            assert_eq!(cancel.compact_revision, compacted, "{cancel:?}");
        }
        assert!(!after.cancels.contains_key(&future_id));
        assert_events(
            "a future watch across a compaction and a snapshot install",
            after.of(future_id),
            &w.model
                .expected(&future, future.start_revision, w.model.revision),
        );
    });
}

#[test]
fn a_slow_consumer_whose_next_revision_is_compacted_is_canceled() {
    let seed = common::seed_from_env("RAFTKV_WATCH_FAULTS_SEED");
    let cluster = start("wfslow", 1, &[]);
    let _logs = common::LogsOnPanic(&cluster);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let endpoints = cluster.endpoints();
    rt.block_on(async {
        let writer = client(&endpoints);
        ready(&writer, &cluster).await;
        let mut w = Writer::new(writer, seed);
        // Its own client: its own connection, whose HTTP/2 window the test leaves full.
        let create = prefix_watch();
        let mut slow = client(&endpoints)
            .watch(create.clone(), WatchOptions::default())
            .await
            .expect("watch");
        let mut got = Received::default();
        let id = create_all(&mut slow, std::slice::from_ref(&create), &mut got).await[0];
        let first = w.model.revision + 1;
        // Nothing is read while 384 revisions of 128 KiB values are written. What the
        // stream can take before it stops is bounded: 128 revisions queued at the hub (then
        // it is set aside as a victim and offered nothing more), 16 responses in its output
        // queue and one in hand (one revision each), and what fits in the HTTP/2 stream
        // window (2 MiB in the client) and the server's send buffer (400 KiB): about 165
        // revisions. So the compaction at the last revision overtakes the watcher whatever
        // the scheduling, and it learns so when it catches up from history.
        w.value_size = 128 * 1024;
        w.advance_by(384).await;
        let compacted = w.model.revision;
        w.compact(compacted).await;
        read_stream(&mut slow, &HashMap::from([(id, usize::MAX)]), &mut got).await;
        let cancel = got
            .cancels
            .get(&id)
            .expect("the slow watcher was not canceled");
        assert_eq!(cancel.compact_revision, compacted, "{cancel:?}");
        // Until then, an unbroken prefix of its events, each as written.
        let received = got.of(id);
        let want = w.model.expected(&create, first, compacted);
        assert!(
            received.len() < want.len(),
            "canceled although it had every event"
        );
        assert_events(
            "the slow watcher before its cancel",
            received,
            &want[..received.len()],
        );
        let next = got.last_rev(id) + 1;
        assert!(
            next < compacted,
            "canceled at next revision {next}, not below the compaction {compacted}"
        );
        eprintln!(
            "slow consumer: {} of {} events before the cancel at compaction {compacted}",
            received.len(),
            want.len()
        );
    });
}
