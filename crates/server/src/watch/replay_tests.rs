//! Deterministic, seeded tests of the whole watch path of one member under restarts,
//! snapshot installs and compactions (issue 13).
//!
//! The real-process tests (`crates/raftkv/tests/watch*.rs`) exercise the same situations
//! through kills and pauses, but their timing is the machine's. Here the real code runs —
//! the state machine (`crate::kv::MvccMachine` over `mvcc::Store`), its watch hub and the
//! real stream task (`super::stream::WatchStream`) — with no node thread and no network:
//! the test applies generated log entries itself, on a current-thread tokio runtime whose
//! clock is paused (and whose scheduler's random choices are seeded when built with
//! `tokio_unstable`, as the workspace is), so a seed replays the same run.
//!
//! A seed generates a log (puts, single-key and range deletes, txns, compactions) together
//! with an independent model of it: the ordered list of every change, each with the `kv` and
//! `prev_kv` etcd gives it. A client then watches member B while B applies the log, with
//! watches of random ranges, filters, `prev_kv` and start revisions (0, past, compacted,
//! current, future), on several streams, some of which stop reading for a while (so that
//! the hub sets them aside as victims). Depending on the test, B is restarted (rebuilt from
//! its last snapshot and the replay of its log, the client re-watching from `last + 1`), or
//! falls behind and installs the snapshot of member A while the streams stay open. At the
//! end every stream has caught up (a progress request answered at B's last revision), and
//! each watch's events, over all its re-watches, are compared with the model.
//!
//! `RAFTKV_WATCH_REPLAY_SEED=<n>` runs one seed; `RAFTKV_WATCH_REPLAY_SEEDS=<count>` changes
//! how many each test runs (default [`DEFAULT_SEEDS`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use proto::etcdserverpb::watch_create_request::FilterType;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use proto::mvccpb::{event::EventType, Event, KeyValue};
use proto::raftkvpb::internal_request::Request;
use proto::raftkvpb::InternalRequest;
use raft::{Entry, EntryKind};
use tokio::sync::mpsc;

use super::stream::{OutBatch, WatchStream};
use super::StreamConfig;
use crate::grpc::{Context, Membership};
use crate::hooks::WatchSabotage;
use crate::kv::MvccMachine;
use crate::node::StateMachine as _;

/// Seeds each test runs by default (the three tests together stay well under a minute in a
/// release build on a loaded machine).
const DEFAULT_SEEDS: u64 = 200;

/// Keys the log writes: few enough that keys are overwritten and deleted often.
const KEYS: u8 = 8;

// ---------------------------------------------------------------------------------------
// Seeded randomness (a SplitMix64: the test must not depend on a crate's stream changing).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    fn key(&mut self) -> Bytes {
        Bytes::from(format!("k{}", self.range(0, u64::from(KEYS) - 1)))
    }
}

// ---------------------------------------------------------------------------------------
// The log and its model.

/// What etcd must report for a log: every change in order, and the compactions.
#[derive(Default)]
struct Model {
    live: BTreeMap<Bytes, KeyValue>,
    /// The store's revision (an empty store is at 1).
    rev: i64,
    /// Every change, in revision order and, within a revision, in the request's order.
    events: Vec<Event>,
    /// Compaction revisions, ascending.
    compactions: Vec<i64>,
}

impl Model {
    fn new() -> Model {
        Model {
            rev: 1,
            ..Default::default()
        }
    }

    fn put(&mut self, key: &Bytes, value: Bytes, rev: i64) {
        let prev = self.live.get(key).cloned();
        let kv = KeyValue {
            key: key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease: 0,
        };
        self.live.insert(key.clone(), kv.clone());
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev,
        });
    }

    /// Deletes `key` if it exists; whether it did.
    fn delete(&mut self, key: &Bytes, rev: i64) -> bool {
        let Some(prev) = self.live.remove(key) else {
            return false;
        };
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.clone(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: Some(prev),
        });
        true
    }

    /// A compaction revision after the last one, at most the current revision, with no
    /// deletion at it (at exactly the compaction revision etcd replays puts but not deletes;
    /// avoiding such revisions keeps this model free of that rule, which
    /// `crates/raftkv/tests/watch.rs` checks against etcd itself).
    fn compaction_target(&self, rng: &mut Rng) -> Option<i64> {
        let floor = self.compactions.last().copied().unwrap_or(1) + 1;
        if self.rev < floor {
            return None;
        }
        let mut c = self.rev - rng.range(0, (self.rev - floor).min(24) as u64) as i64;
        while c >= floor {
            let deletes_at_c = self.events.iter().rev().any(|e| {
                e.r#type == EventType::Delete as i32 && e.kv.as_ref().unwrap().mod_revision == c
            });
            if !deletes_at_c {
                return Some(c);
            }
            c -= 1;
        }
        None
    }
}

fn entry(index: u64, request: Request) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(
            InternalRequest {
                auth: None,
                request: Some(request),
            }
            .encode_to_vec(),
        ),
    }
}

/// A generated log and its model.
struct Log {
    entries: Vec<Entry>,
    model: Model,
}

impl Log {
    /// `len` entries; about one in `compact_every` is a compaction.
    fn generate(rng: &mut Rng, len: usize, compact_every: u64) -> Log {
        let mut model = Model::new();
        let mut entries = Vec::with_capacity(len);
        while entries.len() < len {
            let index = entries.len() as u64 + 1;
            let next = model.rev + 1;
            let value = |n: usize| Bytes::from(format!("v{next}.{n}"));
            let roll = rng.range(0, 99);
            let request = if rng.range(1, compact_every) == 1 {
                let Some(c) = model.compaction_target(rng) else {
                    continue;
                };
                model.compactions.push(c);
                Request::Compaction(CompactionRequest {
                    revision: c,
                    physical: rng.pct(50),
                })
            } else if roll < 50 {
                let key = rng.key();
                model.put(&key, value(0), next);
                Request::Put(PutRequest {
                    key,
                    value: value(0),
                    prev_kv: rng.pct(30),
                    ..Default::default()
                })
            } else if roll < 70 {
                let (key, range_end) = if rng.pct(50) {
                    (rng.key(), Bytes::new())
                } else {
                    let (a, b) = (rng.key(), rng.key());
                    match a.cmp(&b) {
                        std::cmp::Ordering::Less => (a, b),
                        std::cmp::Ordering::Greater => (b, a),
                        std::cmp::Ordering::Equal => (a, Bytes::new()),
                    }
                };
                let doomed: Vec<Bytes> = if range_end.is_empty() {
                    model.live.keys().filter(|k| **k == key).cloned().collect()
                } else {
                    model
                        .live
                        .range(key.clone()..range_end.clone())
                        .map(|(k, _)| k.clone())
                        .collect()
                };
                for k in &doomed {
                    model.delete(k, next);
                }
                Request::DeleteRange(DeleteRangeRequest {
                    key,
                    range_end,
                    prev_kv: rng.pct(30),
                })
            } else {
                // A txn without compares (its success branch runs) writing 1–3 distinct
                // keys: etcd refuses a txn that writes one key twice.
                let mut keys: Vec<Bytes> = Vec::new();
                for _ in 0..rng.range(1, 3) {
                    let k = rng.key();
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                let mut success = Vec::new();
                for (n, k) in keys.iter().enumerate() {
                    let request = if rng.pct(65) {
                        model.put(k, value(n), next);
                        request_op::Request::RequestPut(PutRequest {
                            key: k.clone(),
                            value: value(n),
                            ..Default::default()
                        })
                    } else {
                        model.delete(k, next);
                        request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                            key: k.clone(),
                            ..Default::default()
                        })
                    };
                    success.push(RequestOp {
                        request: Some(request),
                    });
                }
                Request::Txn(TxnRequest {
                    success,
                    ..Default::default()
                })
            };
            // A request that changed nothing takes no revision.
            let changed = model
                .events
                .last()
                .is_some_and(|e| e.kv.as_ref().unwrap().mod_revision == next);
            if changed {
                model.rev = next;
            }
            entries.push(entry(index, request));
        }
        Log { entries, model }
    }

    /// The last revision.
    fn final_rev(&self) -> i64 {
        self.model.rev
    }
}

// ---------------------------------------------------------------------------------------
// Watches as the client sees them, and the checker.

/// What one watch selects.
#[derive(Clone, Debug)]
struct Spec {
    key: Bytes,
    /// etcd's convention: empty is one key, `"\0"` every key from `key`, else `[key, end)`.
    end: Bytes,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

impl Spec {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end[..] {
            [] => k == self.key,
            [0] => k >= &self.key[..],
            end => k >= &self.key[..] && k < end,
        }
    }

    /// What the model says this watch must receive from revision `start` on.
    fn expected(&self, model: &Model, start: i64) -> Vec<Event> {
        model
            .events
            .iter()
            .filter(|e| {
                let kv = e.kv.as_ref().unwrap();
                let put = e.r#type == EventType::Put as i32;
                kv.mod_revision >= start
                    && self.contains(&kv.key)
                    && !(put && self.no_put)
                    && (put || !self.no_delete)
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WatchState {
    /// Created on a stream the client holds, with server id `id` (`None` until the created
    /// response is read).
    Open { id: Option<i64> },
    /// Its stream went away with the member: to be re-watched from `resume_from`.
    Detached,
    /// Canceled by the server with this `compact_revision`.
    Compacted(i64),
}

struct ClientWatch {
    spec: Spec,
    /// The first revision the watch asked for (for a start revision of 0, the created
    /// response's header revision + 1).
    start: Option<i64>,
    /// The next revision the client wants: the start, then the last event's revision + 1.
    resume_from: i64,
    got: Vec<Event>,
    state: WatchState,
    /// Re-watches after a restart.
    rewatches: u32,
}

/// Where a watch's received events first depart from what the model expects, if they do.
/// `compacted`: when the server canceled the watch for compaction, with that revision (the
/// events must then be an unbroken prefix of the expected ones, all below it).
/// `compactions`: every compaction revision of the log (an event at exactly a compaction
/// revision, read back from the compacted history, may lack the `prev_kv` the compaction
/// removed — etcd's behaviour too).
fn check_events(
    expected: &[Event],
    got: &[Event],
    compacted: Option<i64>,
    compactions: &[i64],
) -> Result<(), String> {
    let rev = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    for (i, g) in got.iter().enumerate() {
        let Some(want) = expected.get(i) else {
            return Err(format!(
                "event {i} (revision {}) is more than the model has: {g:?}",
                rev(g)
            ));
        };
        let prev_kv_compacted =
            g.prev_kv.is_none() && compactions.contains(&rev(g)) && want.prev_kv.is_some();
        let same = g.r#type == want.r#type
            && g.kv == want.kv
            && (g.prev_kv == want.prev_kv || prev_kv_compacted);
        if !same {
            return Err(format!(
                "event {i}: got {g:?}, the model says {want:?} (an event lost, repeated, \
                 reordered or changed)"
            ));
        }
    }
    match compacted {
        None if got.len() < expected.len() => Err(format!(
            "{} of {} events received; the first missing: {:?}",
            got.len(),
            expected.len(),
            expected[got.len()]
        )),
        None => Ok(()),
        Some(c) => match got.last() {
            Some(last) if rev(last) >= c => Err(format!(
                "an event at revision {} before a cancel with compact_revision {c}",
                rev(last)
            )),
            _ => Ok(()),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Members and the client.

/// One member's state machine, as the node thread would hold it, and the context its
/// watch streams run with.
struct Member {
    state: Arc<RwLock<MvccMachine>>,
    ctx: Context,
    /// Entries of the log applied.
    applied: usize,
}

impl Member {
    fn new(sabotage: WatchSabotage) -> Member {
        let state = Arc::new(RwLock::new(MvccMachine::default()));
        let (node, _inbox) = crate::node::channel(1, 0xc1, state.clone(), Duration::from_secs(5));
        let (tokens, lease_clock) = {
            let m = state.read().unwrap();
            (m.tokens.clone(), m.lessor.clone())
        };
        let transport = crate::transport::Transport::start(
            crate::transport::LocalIdentity {
                cluster_id: 0xc1,
                member_id: 1,
                incarnation: 1,
                name: "b".into(),
                client_urls: Vec::new(),
            },
            &[],
            node.peer_sink(),
            tokio_util::sync::CancellationToken::new(),
        );
        let auth = crate::auth::Auth::new(&crate::auth::AuthArgs::default(), tokens, false)
            .expect("the default auth settings are valid");
        let election_timeout = Duration::from_secs(1);
        let ctx = Context {
            node,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            membership: Arc::new(Membership {
                members: Vec::new(),
                self_id: 1,
                self_name: "b".into(),
                strict_reconfig_check: true,
                max_learners: 1,
            }),
            transport,
            quota: crate::quota::Quota::from_flag(None),
            auth: Arc::new(auth),
            skip_read_index: false,
            watch_sabotage: sabotage,
            min_lease_ttl: crate::grpc::min_lease_ttl(election_timeout),
            lease_clock,
            election_timeout,
            keepalive_before_log: false,
            keep_alives: Arc::default(),
        };
        Member {
            state,
            ctx,
            applied: 0,
        }
    }

    /// Applies the log's entries up to (not including) `to`, as the node thread does: under
    /// the write lock, which is where the hub is handed each revision's events.
    fn apply_until(&mut self, log: &Log, to: usize) -> Result<(), String> {
        let mut m = self.state.write().unwrap();
        for e in log.entries.iter().take(to).skip(self.applied) {
            if let Some(Err(err)) = m.apply(e) {
                return Err(format!("entry {} refused: {err:?}", e.index));
            }
        }
        self.applied = self.applied.max(to);
        Ok(())
    }

    fn snapshot(&self) -> Bytes {
        self.state.read().unwrap().snapshot()
    }

    fn revision(&self) -> i64 {
        self.state.read().unwrap().store.current_revision()
    }

    fn compacted(&self) -> i64 {
        self.state.read().unwrap().store.compact_revision()
    }
}

/// One client `Watch` stream to member B.
struct ClientStream {
    requests: mpsc::UnboundedSender<WatchRequest>,
    responses: super::queue::Receiver<OutBatch>,
    /// The client does not read until this step (a slow consumer).
    stalled_until: usize,
    /// Watches (indexes) whose created response has not been read yet, in order.
    creating: VecDeque<usize>,
    ids: HashMap<i64, usize>,
    /// Header revisions of the progress answers read.
    progress: Vec<i64>,
    /// The member it went to is gone.
    closed: bool,
}

/// Opens a stream on `member`, served by the real stream task.
fn open_stream(member: &Member) -> ClientStream {
    let (requests, inbound) = mpsc::unbounded_channel::<WatchRequest>();
    // The gRPC layer's output queue (`grpc::watch`) holds 4 batches too.
    let (out, responses) = super::queue::bounded(4);
    let hub = member.state.read().unwrap().watch.clone();
    let cfg = StreamConfig {
        fragment_bytes: member.ctx.max_request_bytes + crate::server::GRPC_OVERHEAD_BYTES,
        progress_interval: Duration::from_secs(3600),
        require_leader: false,
        election_timeout: member.ctx.election_timeout,
        max_watches: super::DEFAULT_MAX_WATCHES_PER_STREAM,
    };
    let (task, batches) = WatchStream::new(member.ctx.clone(), hub, cfg, out);
    let inbound = Box::pin(futures_util::stream::unfold(inbound, |mut rx| async move {
        rx.recv().await.map(|r| (Ok::<_, tonic::Status>(r), rx))
    }));
    tokio::spawn(task.run(inbound, batches));
    ClientStream {
        requests,
        responses,
        stalled_until: 0,
        creating: VecDeque::new(),
        ids: HashMap::new(),
        progress: Vec::new(),
        closed: false,
    }
}

/// Lets every task run until none can go on. The runtime's clock is paused and advances
/// only when every task is idle, so this short sleep ends exactly then: it is a
/// deterministic "run until quiescent", not a guess at how long work takes.
async fn quiesce() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// What a scenario does to member B besides applying the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// B is restarted 1–3 times; the client re-watches from `last + 1`.
    Restart,
    /// B falls behind 1–3 times and installs A's snapshot while its streams stay open.
    SnapshotInstall,
    /// Frequent compactions: watches created below the compaction point and slow streams
    /// that fall behind one.
    Compaction,
}

/// What happened in a run, for the tests to show the situations they name did occur.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    restarts: u64,
    /// Re-watches after a restart that then received an event.
    rewatches_with_events: u64,
    installs: u64,
    /// Watches open on B across an install that received an event after it.
    events_after_install: u64,
    /// Watches canceled at creation (their start revision was compacted).
    canceled_at_create: u64,
    /// Watches canceled after receiving events or being created fine (they fell behind a
    /// compaction, on a slow stream or across an install).
    canceled_later: u64,
    events: u64,
    /// Events delivered at a revision that is a multiple of 7 (what the sabotage hits), and
    /// those of them delivered with a `prev_kv`.
    sevenths: u64,
    sevenths_with_prev_kv: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.restarts += o.restarts;
        self.rewatches_with_events += o.rewatches_with_events;
        self.installs += o.installs;
        self.events_after_install += o.events_after_install;
        self.canceled_at_create += o.canceled_at_create;
        self.canceled_later += o.canceled_later;
        self.events += o.events;
        self.sevenths += o.sevenths;
        self.sevenths_with_prev_kv += o.sevenths_with_prev_kv;
    }
}

struct Run {
    rng: Rng,
    log: Log,
    b: Member,
    /// Member A: ahead of B when B installs a snapshot.
    a: Member,
    sabotage: WatchSabotage,
    /// B's last snapshot of its own and the entries it covers (what a restart restores).
    b_snapshot: Option<(Bytes, usize)>,
    streams: Vec<ClientStream>,
    watches: Vec<ClientWatch>,
    step: usize,
    /// Watches expected to be canceled at creation, with the compaction revision.
    cancel_expected: HashMap<usize, i64>,
    /// Watches open across an install: the number of events they had then.
    open_at_install: Vec<(usize, usize)>,
    tally: Tally,
}

impl Run {
    fn new(seed: u64, scenario: Scenario, sabotage: WatchSabotage) -> Run {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ scenario as u64);
        let len = rng.range(400, 700) as usize;
        let compact_every = match scenario {
            Scenario::Compaction => 25,
            _ => 90,
        };
        let log = Log::generate(&mut rng, len, compact_every);
        Run {
            rng,
            log,
            b: Member::new(sabotage),
            a: Member::new(WatchSabotage::None),
            sabotage,
            b_snapshot: None,
            streams: Vec::new(),
            watches: Vec::new(),
            step: 0,
            cancel_expected: HashMap::new(),
            open_at_install: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// A random watch: one key, a range, a prefix, from a key, or every key; with random
    /// filters and `prev_kv`.
    fn random_spec(&mut self) -> Spec {
        let rng = &mut self.rng;
        let (key, end) = match rng.range(0, 4) {
            0 | 1 => (rng.key(), Bytes::new()),
            2 => {
                let (a, b) = (rng.key(), rng.key());
                let (a, b) = if a < b { (a, b) } else { (b, a) };
                if a == b {
                    (a, Bytes::new())
                } else {
                    (a, b)
                }
            }
            3 => (Bytes::from_static(b"k"), Bytes::from_static(b"l")),
            _ => (rng.key(), Bytes::from_static(b"\0")),
        };
        Spec {
            key,
            end,
            prev_kv: rng.pct(60),
            no_put: rng.pct(8),
            no_delete: rng.pct(8),
        }
    }

    /// A start revision: 0 (from now), in the past (perhaps compacted), the next one, or a
    /// future one the log reaches.
    fn random_start(&mut self, compact_heavy: bool) -> i64 {
        let current = self.b.revision();
        let compacted = self.b.compacted();
        let final_rev = self.log.final_rev();
        match self.rng.range(0, 9) {
            0 | 1 => 0,
            2 | 3 if compact_heavy && compacted > 2 => {
                self.rng.range(1, compacted as u64 - 1) as i64
            }
            2..=5 => self.rng.range(1, current.max(1) as u64) as i64,
            6 => current + 1,
            _ => self.rng.range(current as u64 + 1, final_rev as u64 + 1) as i64,
        }
    }

    fn send(&mut self, stream: usize, union: RequestUnion) {
        let s = &self.streams[stream];
        let _ = s.requests.send(WatchRequest {
            request_union: Some(union),
        });
    }

    /// Creates watch `w` on `stream` from `start`.
    async fn create(&mut self, w: usize, stream: usize, start: i64) -> Result<(), String> {
        let spec = self.watches[w].spec.clone();
        let mut filters = Vec::new();
        if spec.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if spec.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        let compacted = self.b.compacted();
        if start > 0 && start < compacted {
            self.cancel_expected.insert(w, compacted);
        }
        self.streams[stream].creating.push_back(w);
        self.watches[w].state = WatchState::Open { id: None };
        self.send(
            stream,
            RequestUnion::CreateRequest(WatchCreateRequest {
                key: spec.key.clone(),
                range_end: spec.end.clone(),
                start_revision: start,
                prev_kv: spec.prev_kv,
                filters,
                ..Default::default()
            }),
        );
        // Creates go to streams the client reads: the created response (and a compaction
        // cancel due at once, which the stream sends next) is read here.
        loop {
            quiesce().await;
            let read = self.drain(stream)?;
            let state = self.watches[w].state;
            let settled = match self.cancel_expected.get(&w) {
                Some(_) => matches!(state, WatchState::Compacted(_)),
                None => !matches!(state, WatchState::Open { id: None }),
            };
            if settled || read == 0 {
                break;
            }
        }
        if let Some(c) = self.cancel_expected.remove(&w) {
            match self.watches[w].state {
                WatchState::Compacted(got) if got == c => self.tally.canceled_at_create += 1,
                other => {
                    return Err(format!(
                        "watch {w} from compacted revision {start} (compacted at {c}): {other:?}, \
                         not a cancel with compact_revision {c}"
                    ))
                }
            }
        }
        Ok(())
    }

    /// A new watch on a random stream the client reads.
    async fn new_watch(&mut self, compact_heavy: bool) -> Result<(), String> {
        let readable: Vec<usize> = (0..self.streams.len())
            .filter(|&s| !self.streams[s].closed && self.streams[s].stalled_until <= self.step)
            .collect();
        if readable.is_empty() {
            return Ok(());
        }
        let stream = readable[self.rng.range(0, readable.len() as u64 - 1) as usize];
        let spec = self.random_spec();
        let start = self.random_start(compact_heavy);
        let w = self.watches.len();
        self.watches.push(ClientWatch {
            spec,
            start: (start > 0).then_some(start),
            resume_from: start,
            got: Vec::new(),
            state: WatchState::Detached,
            rewatches: 0,
        });
        self.create(w, stream, start).await
    }

    /// Reads everything stream `s` has sent so far and checks it as it arrives.
    /// Returns the number of responses read.
    fn drain(&mut self, s: usize) -> Result<usize, String> {
        let mut read = 0;
        while let Ok(batch) = self.streams[s].responses.try_recv() {
            let batch = batch.map_err(|st| format!("stream {s} ended with {st:?}"))?;
            for out in batch {
                let resp = out
                    .decode()
                    .map_err(|e| format!("undecodable response: {e}"))?;
                self.on_response(s, resp)?;
                read += 1;
            }
        }
        Ok(read)
    }

    fn on_response(&mut self, s: usize, resp: WatchResponse) -> Result<(), String> {
        let header_rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if resp.created {
            let w = self.streams[s]
                .creating
                .pop_front()
                .ok_or("a created response nobody asked for")?;
            if resp.canceled {
                return Err(format!("watch {w} refused: {}", resp.cancel_reason));
            }
            self.streams[s].ids.insert(resp.watch_id, w);
            let cw = &mut self.watches[w];
            cw.state = WatchState::Open {
                id: Some(resp.watch_id),
            };
            if cw.start.is_none() {
                cw.start = Some(header_rev + 1);
                cw.resume_from = header_rev + 1;
            }
            return Ok(());
        }
        if resp.watch_id == -1 && resp.events.is_empty() && !resp.canceled {
            self.streams[s].progress.push(header_rev);
            return Ok(());
        }
        let w = *self.streams[s]
            .ids
            .get(&resp.watch_id)
            .ok_or_else(|| format!("a response for unknown watch id {}", resp.watch_id))?;
        let cw = &mut self.watches[w];
        if !matches!(cw.state, WatchState::Open { .. }) {
            return Err(format!("watch {w} got a response while {:?}", cw.state));
        }
        if resp.canceled {
            let c = resp.compact_revision;
            if c <= 0 {
                return Err(format!(
                    "watch {w} canceled without a compact_revision: {resp:?}"
                ));
            }
            // The server's next revision for the watch is at least the client's; it may
            // cancel only if that is below the compaction.
            if cw.resume_from >= c {
                return Err(format!(
                    "watch {w} canceled with compact_revision {c} though it had everything \
                     before {}",
                    cw.resume_from
                ));
            }
            if !self.log.model.compactions.contains(&c) || c > self.b.compacted() {
                return Err(format!(
                    "watch {w} canceled with compact_revision {c}, not a compaction of B \
                     (B is compacted at {})",
                    self.b.compacted()
                ));
            }
            cw.state = WatchState::Compacted(c);
            self.streams[s].ids.remove(&resp.watch_id);
            if !self.cancel_expected.contains_key(&w) {
                self.tally.canceled_later += 1;
            }
            return Ok(());
        }
        let mut last = cw.resume_from - 1;
        for e in &resp.events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if rev < cw.resume_from || rev < last {
                return Err(format!(
                    "watch {w} got revision {rev} after revision {last} (its next revision was \
                     {}): an event below its start, repeated or out of order",
                    cw.resume_from
                ));
            }
            last = rev;
        }
        if resp.events.is_empty() {
            return Err(format!("watch {w}: an empty response {resp:?}"));
        }
        self.tally.events += resp.events.len() as u64;
        cw.got.extend(resp.events);
        cw.resume_from = last + 1;
        Ok(())
    }

    /// Drains every stream the client reads.
    fn drain_readable(&mut self) -> Result<(), String> {
        for s in 0..self.streams.len() {
            if !self.streams[s].closed && self.streams[s].stalled_until <= self.step {
                self.drain(s)?;
            }
        }
        Ok(())
    }

    /// B applies up to `to`, now and then taking a snapshot of its own.
    fn b_apply(&mut self, to: usize) -> Result<(), String> {
        self.b.apply_until(&self.log, to)?;
        if self.rng.pct(10) {
            self.b_snapshot = Some((self.b.snapshot(), self.b.applied));
        }
        Ok(())
    }

    /// B is killed and restarted: its streams end; it comes back from its last snapshot
    /// plus the replay of the entries it had applied; the client re-watches every watch
    /// that was not canceled from `last + 1` on a new stream.
    async fn restart_b(&mut self) -> Result<(), String> {
        self.tally.restarts += 1;
        for s in &mut self.streams {
            s.closed = true;
        }
        // Dropping the client's ends ends the old stream tasks.
        for s in &mut self.streams {
            s.responses = super::queue::bounded(1).1;
        }
        let applied = self.b.applied;
        let mut b = Member::new(self.sabotage);
        if let Some((image, covers)) = &self.b_snapshot {
            b.state
                .write()
                .unwrap()
                .restore(image)
                .map_err(|e| e.to_string())?;
            b.applied = *covers;
        }
        b.apply_until(&self.log, applied)?;
        self.b = b;
        quiesce().await;
        let stream = self.streams.len();
        self.streams.push(open_stream(&self.b));
        for w in 0..self.watches.len() {
            if matches!(self.watches[w].state, WatchState::Open { .. }) {
                self.watches[w].state = WatchState::Detached;
                self.watches[w].rewatches += 1;
                let from = self.watches[w].resume_from;
                self.create(w, stream, from).await?;
            }
        }
        Ok(())
    }

    /// B stops applying while A applies `lag` more entries, then B installs A's snapshot
    /// with its streams open, and goes on from there.
    async fn install_on_b(&mut self, lag: usize) -> Result<(), String> {
        let to = (self.b.applied + lag).min(self.log.entries.len());
        if to <= self.b.applied {
            return Ok(());
        }
        self.tally.installs += 1;
        self.a.apply_until(&self.log, to)?;
        // The streams go on while B waits (the client reads what it was sent).
        quiesce().await;
        self.drain_readable()?;
        let open: Vec<(usize, usize)> = (0..self.watches.len())
            .filter(|&w| matches!(self.watches[w].state, WatchState::Open { .. }))
            .map(|w| (w, self.watches[w].got.len()))
            .collect();
        self.open_at_install.extend(open);
        let image = self.a.snapshot();
        self.b
            .state
            .write()
            .unwrap()
            .restore(&image)
            .map_err(|e| e.to_string())?;
        self.b.applied = to;
        quiesce().await;
        self.drain_readable()?;
        Ok(())
    }

    async fn drive(&mut self, scenario: Scenario) -> Result<(), String> {
        let len = self.log.entries.len();
        let mut restarts_at: Vec<usize> = Vec::new();
        let mut installs_at: Vec<usize> = Vec::new();
        match scenario {
            Scenario::Restart => {
                for _ in 0..self.rng.range(1, 3) {
                    restarts_at.push(self.rng.range(20, len as u64 - 20) as usize);
                }
            }
            Scenario::SnapshotInstall => {
                for _ in 0..self.rng.range(1, 3) {
                    installs_at.push(self.rng.range(20, len as u64 - 20) as usize);
                }
            }
            Scenario::Compaction => {}
        }
        restarts_at.sort_unstable();
        installs_at.sort_unstable();
        let compact_heavy = scenario == Scenario::Compaction;
        self.streams.push(open_stream(&self.b));
        for _ in 0..3 {
            self.new_watch(compact_heavy).await?;
        }
        while self.b.applied < len {
            self.step += 1;
            let roll = self.rng.range(0, 99);
            if roll < 8 && self.watches.len() < 16 {
                self.new_watch(compact_heavy).await?;
            } else if roll < 10 && self.streams.iter().filter(|s| !s.closed).count() < 4 {
                self.streams.push(open_stream(&self.b));
            } else if roll < 14 {
                // A slow consumer: the client stops reading one stream for a while, long
                // enough (with bursts of writes) for the hub to set it aside.
                let open: Vec<usize> = (0..self.streams.len())
                    .filter(|&s| !self.streams[s].closed)
                    .collect();
                let s = open[self.rng.range(0, open.len() as u64 - 1) as usize];
                let steps = self.rng.range(5, 40) as usize;
                self.streams[s].stalled_until = self.step + steps;
            } else {
                let burst = if self.rng.pct(10) {
                    self.rng.range(40, 200)
                } else {
                    self.rng.range(1, 6)
                } as usize;
                let mut to = (self.b.applied + burst).min(len);
                if let Some(&r) = restarts_at.first() {
                    if r <= to {
                        restarts_at.remove(0);
                        to = r.max(self.b.applied);
                        self.b_apply(to)?;
                        quiesce().await;
                        self.drain_readable()?;
                        self.restart_b().await?;
                        continue;
                    }
                }
                if let Some(&i) = installs_at.first() {
                    if i <= to {
                        installs_at.remove(0);
                        to = i.max(self.b.applied);
                        self.b_apply(to)?;
                        let lag = self.rng.range(1, 400) as usize;
                        self.install_on_b(lag).await?;
                        continue;
                    }
                }
                self.b_apply(to)?;
            }
            quiesce().await;
            self.drain_readable()?;
        }
        self.finish().await
    }

    /// Every stream reads again and must catch up: a progress request on each is answered
    /// at B's last revision (so every event up to it was sent); then every watch is checked
    /// against the model.
    async fn finish(&mut self) -> Result<(), String> {
        let final_rev = self.log.final_rev();
        if self.b.revision() != final_rev {
            return Err(format!(
                "B is at revision {} after the whole log, the model at {final_rev}",
                self.b.revision()
            ));
        }
        for s in 0..self.streams.len() {
            self.streams[s].stalled_until = 0;
        }
        for s in 0..self.streams.len() {
            if self.streams[s].closed {
                continue;
            }
            self.send(s, RequestUnion::ProgressRequest(WatchProgressRequest {}));
        }
        // Each round lets the streams send what they can and the client read it: a stream
        // that was set aside catches up from history, one bounded step at a time.
        for _ in 0..10_000 {
            quiesce().await;
            self.drain_readable()?;
            let answered = self
                .streams
                .iter()
                .all(|s| s.closed || !s.progress.is_empty());
            if answered {
                break;
            }
        }
        for (s, stream) in self.streams.iter().enumerate() {
            if stream.closed {
                continue;
            }
            match stream.progress.last() {
                Some(&rev) if rev == final_rev => {}
                other => {
                    return Err(format!(
                        "stream {s}: progress answered at {other:?}, B is at {final_rev}"
                    ))
                }
            }
        }
        for (w, cw) in self.watches.iter().enumerate() {
            let Some(start) = cw.start else {
                return Err(format!("watch {w} was never created"));
            };
            let expected = cw.spec.expected(&self.log.model, start);
            let compacted = match cw.state {
                WatchState::Compacted(c) => Some(c),
                WatchState::Open { id: Some(_) } => None,
                other => return Err(format!("watch {w} ended {other:?}")),
            };
            check_events(&expected, &cw.got, compacted, &self.log.model.compactions).map_err(
                |e| {
                    format!(
                        "watch {w} ({:?}, from {start}, {} re-watches): {e}",
                        cw.spec, cw.rewatches
                    )
                },
            )?;
            for e in &cw.got {
                if e.kv.as_ref().is_some_and(|kv| kv.mod_revision % 7 == 0) {
                    self.tally.sevenths += 1;
                    self.tally.sevenths_with_prev_kv += u64::from(e.prev_kv.is_some());
                }
            }
            if cw.rewatches > 0 && !cw.got.is_empty() {
                self.tally.rewatches_with_events += 1;
            }
        }
        for &(w, before) in &self.open_at_install {
            if self.watches[w].got.len() > before {
                self.tally.events_after_install += 1;
            }
        }
        Ok(())
    }
}

/// Runs one seed of `scenario` on its own paused current-thread runtime.
fn run_seed(seed: u64, scenario: Scenario, sabotage: WatchSabotage) -> Result<Tally, String> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().start_paused(true);
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let rt = builder.build().expect("a current-thread runtime");
    rt.block_on(async move {
        let mut run = Run::new(seed, scenario, sabotage);
        run.drive(scenario).await?;
        Ok(run.tally)
    })
}

/// The seeds to run: `RAFTKV_WATCH_REPLAY_SEED` alone, or the first
/// `RAFTKV_WATCH_REPLAY_SEEDS` (default [`DEFAULT_SEEDS`]).
fn seeds() -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match var("RAFTKV_WATCH_REPLAY_SEED") {
        Some(seed) => vec![seed],
        None => (0..var("RAFTKV_WATCH_REPLAY_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    }
}

/// Runs every seed; fails naming each failing seed and how to replay it.
fn run_all(scenario: Scenario) -> Tally {
    let mut total = Tally::default();
    let mut failures = Vec::new();
    for seed in seeds() {
        match run_seed(seed, scenario, WatchSabotage::None) {
            Ok(t) => total.add(t),
            Err(e) => failures.push(format!(
                "seed {seed}: {e}\n  replay: RAFTKV_WATCH_REPLAY_SEED={seed} cargo test --release \
                 --workspace --lib -- watch::replay_tests"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{scenario:?}:\n{}",
        failures.join("\n")
    );
    println!("{scenario:?}: {total:?}");
    total
}

fn many_seeds() -> bool {
    seeds().len() > 1
}

#[test]
fn a_watcher_on_a_restarted_member_rewatches_from_last_plus_one_and_misses_nothing() {
    let t = run_all(Scenario::Restart);
    assert!(t.restarts > 0);
    if many_seeds() {
        assert!(
            t.rewatches_with_events > 0,
            "no re-watch received anything: {t:?}"
        );
    }
}

#[test]
fn a_watcher_on_a_member_that_installs_a_snapshot_gets_every_event_or_a_compaction_cancel() {
    let t = run_all(Scenario::SnapshotInstall);
    assert!(t.installs > 0);
    if many_seeds() {
        assert!(
            t.events_after_install > 0,
            "no watch went on after an install: {t:?}"
        );
        assert!(
            t.canceled_later > 0,
            "no install compacted a watch away: {t:?}"
        );
    }
}

#[test]
fn a_watcher_whose_start_revision_is_compacted_is_canceled_with_the_compaction_revision() {
    let t = run_all(Scenario::Compaction);
    if many_seeds() {
        assert!(
            t.canceled_at_create > 0,
            "no create below the compaction: {t:?}"
        );
        assert!(
            t.canceled_later > 0,
            "no watch fell behind a compaction: {t:?}"
        );
    }
}

/// The negative control: a member that drops events (or `prev_kv`s) at every seventh
/// revision fails the check of every seed whose clean run delivers an event the sabotage
/// touches (runs are deterministic, so the sabotaged run is the same up to its first
/// damaged event, which the checker must notice).
#[test]
fn the_checker_catches_a_dropped_event_and_a_dropped_prev_kv() {
    for sabotage in [WatchSabotage::DropEvent, WatchSabotage::DropPrevKv] {
        for scenario in [
            Scenario::Restart,
            Scenario::SnapshotInstall,
            Scenario::Compaction,
        ] {
            let mut exposed = 0;
            for seed in 0..10 {
                let clean = run_seed(seed, scenario, WatchSabotage::None)
                    .unwrap_or_else(|e| panic!("seed {seed} fails without sabotage: {e}"));
                let touched = match sabotage {
                    WatchSabotage::DropEvent => clean.sevenths,
                    _ => clean.sevenths_with_prev_kv,
                };
                if touched == 0 {
                    continue;
                }
                exposed += 1;
                assert!(
                    run_seed(seed, scenario, sabotage).is_err(),
                    "{sabotage:?} went unnoticed in {scenario:?}, seed {seed}"
                );
            }
            assert!(
                exposed >= 8,
                "{sabotage:?}/{scenario:?}: only {exposed} seeds exposed"
            );
        }
    }
}

/// The checker itself, on hand-made histories: a lost, repeated, reordered or altered event,
/// a lost `prev_kv`, and an event at or above the compaction revision of a cancel.
#[test]
fn check_events_catches_each_kind_of_violation() {
    let put = |key: &'static str, rev: i64, prev: Option<i64>| Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            mod_revision: rev,
            ..Default::default()
        }),
        prev_kv: prev.map(|p| KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            mod_revision: p,
            ..Default::default()
        }),
    };
    let model = vec![
        put("a", 2, None),
        put("a", 3, Some(2)),
        put("b", 3, None),
        put("a", 5, Some(3)),
    ];
    assert!(check_events(&model, &model, None, &[]).is_ok());
    // Lost at the end, lost in the middle, repeated, reordered.
    assert!(check_events(&model, &model[..3], None, &[]).is_err());
    let skip = [model[0].clone(), model[2].clone(), model[3].clone()];
    assert!(check_events(&model, &skip, None, &[]).is_err());
    let twice = [
        model[0].clone(),
        model[1].clone(),
        model[1].clone(),
        model[2].clone(),
        model[3].clone(),
    ];
    assert!(check_events(&model, &twice, None, &[]).is_err());
    let swapped = [
        model[0].clone(),
        model[2].clone(),
        model[1].clone(),
        model[3].clone(),
    ];
    assert!(check_events(&model, &swapped, None, &[]).is_err());
    // A lost prev_kv, unless the history before that compaction revision is gone.
    let mut no_prev = model.clone();
    no_prev[1].prev_kv = None;
    assert!(check_events(&model, &no_prev, None, &[]).is_err());
    assert!(check_events(&model, &no_prev, None, &[3]).is_ok());
    // A cancel: an unbroken prefix below the compaction revision is fine, nothing else is.
    assert!(check_events(&model, &model[..1], Some(3), &[3]).is_ok());
    assert!(check_events(&model, &model[..2], Some(3), &[3]).is_err());
    assert!(check_events(&model, &skip[..2], Some(5), &[5]).is_err());
}
