//! One `Watch` gRPC stream: its watchers, their catch-up from history, and everything it
//! sends, from a single task so that responses keep etcd's order (a watch's `created`
//! before its events, events in revision order, a progress answer after every event it
//! covers).
//!
//! Each watcher is *synced* (fed by the hub's live batches) or *unsynced* (behind: it
//! started in the past, or the stream was set aside as a victim). Unsynced watchers read
//! the MVCC history in steps of at most [`CATCH_UP_REVS`] revisions under the state
//! machine's read lock, which is released before anything is sent; a watcher becomes
//! synced when a step reaches the current revision while the hub is feeding the stream.
//! `next_rev` (the next revision a watcher may see) makes a revision read from history and
//! later offered live count once.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use proto::etcdserverpb::{
    watch_request::RequestUnion, ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use proto::mvccpb::{event::EventType, Event};
use proto::raftkvpb::RequestAuth;
use tokio::time::{Instant, Interval, Sleep};
use tonic::Status;

use super::encode::{Outgoing, SharedEvents};
use super::hub::{RevBatch, StreamId, VictimMark, WatchHub};
use super::queue::{Receiver, Sender};
use super::response::{Header, Reply, Selection};
use super::watchers::IdTable;
use crate::errors::ServerError;
use crate::grpc::Context;
use crate::hooks::WatchSabotage;
use crate::kv::MvccMachine;
use crate::node::SharedStatus;

/// Revisions one catch-up step reads from history (etcd sends at most 1000 per batch).
pub const CATCH_UP_REVS: i64 = 256;

/// Bytes of events one catch-up step takes at most (beyond its first revision, which it
/// always takes whole): keeps each catch-up response well under clients' receive limits
/// (4 MiB by default in tonic and grpc-go's server-side defaults).
pub const CATCH_UP_BYTES: usize = 1024 * 1024;

/// Live revisions one step hands to the watchers together (each watcher gets its events of
/// all of them in one response, as etcd's catch-up does): only what is already queued when
/// the stream task wakes, so coalescing never waits.
const COALESCE_REVS: usize = 64;

/// Key and value bytes of the live revisions coalesced in one step (beyond the first
/// revision): keeps a coalesced response well under clients' receive limits.
const COALESCE_BYTES: usize = 1024 * 1024;

/// Responses, and their bytes, the task collects before it hands them to the gRPC
/// response stream in one go (one hand-off for many responses; tonic then coalesces
/// their frames). Whatever is collected is handed over before the task waits again.
const FLUSH_RESPONSES: usize = 256;
const FLUSH_BYTES: usize = 64 * 1024;

/// What the stream task hands to the gRPC response stream: responses, or the error that
/// ends the call.
pub type OutBatch = Result<Vec<Outgoing>, Status>;

/// Checks without a leader after which a `hasleader` stream is closed (etcd's
/// `maxNoLeaderCnt`), one check per election timeout.
const NO_LEADER_CHECKS: u32 = 3;

/// How often a parked progress request looks again whether the member reached the start of
/// every future watch (revisions outside the stream's ranges wake nothing).
const PARKED_RECHECK: Duration = Duration::from_millis(10);

/// `cancel_reason` texts of etcd 3.4.
pub const REASON_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
pub const REASON_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// raftkv's reason for a create beyond `--max-watches-per-stream` (etcd has no such limit);
/// the limit follows.
pub const REASON_TOO_MANY_WATCHES: &str = "raftkv: too many watches on this stream, limit";
/// etcd 3.4 puts the whole gRPC error text of `ErrGRPCPermissionDenied` in the reason.
pub const REASON_PERMISSION_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// Per-stream settings from the member's configuration and the call's metadata.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Responses of watchers that set `fragment` are split at this size
    /// (`--max-request-bytes` + 512 KiB, as etcd).
    pub fragment_bytes: usize,
    /// `--watch-progress-notify-interval`.
    pub progress_interval: Duration,
    /// The client sent `hasleader: true`: close the stream when the member loses its leader.
    pub require_leader: bool,
    pub election_timeout: Duration,
    /// `--max-watches-per-stream` (0: no limit): watches the stream may hold, counting
    /// those canceled for compaction whose id the client has not released.
    pub max_watches: usize,
}

struct Watcher {
    sel: Selection,
    /// The next revision this watcher may be sent.
    next_rev: i64,
    synced: bool,
    progress_notify: bool,
    fragment: bool,
    /// Events went out since the last progress tick (etcd then skips the notification).
    sent_since_tick: bool,
}

/// What a stream needs of its member: the call's [`Context`] is not kept whole, as the
/// task holds its state for as long as the stream lives.
struct Member {
    id: u64,
    cluster_id: u64,
    status: Arc<SharedStatus>,
    state: Arc<RwLock<MvccMachine>>,
    /// The member issues JWT tokens (`--auth-token jwt`).
    jwt: bool,
    sabotage: WatchSabotage,
}

/// The task's state.
pub struct WatchStream {
    member: Member,
    hub: Arc<WatchHub>,
    cfg: StreamConfig,
    stream: StreamId,
    victim: Arc<VictimMark>,
    out: Sender<OutBatch>,
    /// Responses not yet handed to `out`, and their encoded size.
    pending: Vec<Outgoing>,
    pending_bytes: usize,
    watchers: IdTable<Watcher>,
    /// Ids of watches the server canceled for compaction: still taken until the client
    /// cancels them, as in etcd. A `BTreeSet` is half a `HashSet`'s size while empty,
    /// which it almost always is.
    dead: BTreeSet<i64>,
    unsynced: usize,
    next_auto_id: i64,
    progress_requests: usize,
    /// Progress requests answered so far (the test-only sabotage counts them).
    progress_answered: u64,
    /// Progress requests wait for the member to reach a future watch's start (see
    /// `delivered_through`); rechecked every [`PARKED_RECHECK`] instead of spinning.
    progress_parked: bool,
    /// Who opened the stream (crate::auth), checked for read permission on every watch
    /// it creates; `Err` when its token was invalid (every watch is then refused).
    who: Result<Option<RequestAuth>, ()>,
    /// A watcher asked for progress notifications: the stream's ticker must run.
    wants_progress: bool,
    /// Leader checks in a row that found no leader (`hasleader` streams).
    no_leader: u32,
}

/// What woke the stream task (see [`WatchStream::run`]).
enum Wake {
    Request(Option<Result<WatchRequest, Status>>),
    Batch(Arc<RevBatch>),
    ProgressTick,
    LeaderCheck,
    /// Only [`WatchStream::step`] has something to do.
    Step,
}

/// The stream is gone (the client hung up or an error ended it).
struct Closed;

/// The last revision to take from `events` (in revision order) so that what is taken stays
/// within `budget` bytes, never splitting a revision and always taking the first one; `None`
/// when everything fits.
fn byte_bounded_end(events: &[Event], budget: usize) -> Option<i64> {
    use prost::Message as _;
    let rev = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let mut total = 0usize;
    let mut taken_through = None;
    for (i, e) in events.iter().enumerate() {
        total += e.encoded_len();
        let last_of_revision = events.get(i + 1).is_none_or(|next| rev(next) != rev(e));
        if total > budget && taken_through.is_some() {
            return taken_through;
        }
        if last_of_revision {
            taken_through = Some(rev(e));
        }
    }
    None
}

/// `first` and the live revisions queued behind it, up to [`COALESCE_REVS`] revisions and
/// [`COALESCE_BYTES`] of keys and values beyond the first.
fn coalesce(first: Arc<RevBatch>, rx: &mut Receiver<Arc<RevBatch>>) -> Vec<Arc<RevBatch>> {
    let size = |b: &RevBatch| -> usize {
        b.events
            .events()
            .iter()
            .filter_map(|e| e.kv.as_ref())
            .map(|kv| kv.key.len() + kv.value.len())
            .sum()
    };
    let mut bytes = 0;
    let mut batches = vec![first];
    while batches.len() < COALESCE_REVS && bytes < COALESCE_BYTES {
        match rx.try_recv() {
            Ok(b) => {
                bytes += size(&b);
                batches.push(b);
            }
            Err(_) => break,
        }
    }
    batches
}

/// Read-lock the state machine. A poisoned lock means the node thread died while applying;
/// the stream ends rather than serve a half-applied state.
fn read(state: &RwLock<MvccMachine>) -> Result<RwLockReadGuard<'_, MvccMachine>, Closed> {
    state.read().map_err(|_| Closed)
}

/// The progress ticker, started when the first watcher asks for notifications but ticking
/// in step with the stream's start (etcd's ticker runs from the stream's start).
fn progress_ticker(start: Instant, every: Duration) -> Interval {
    let now = Instant::now();
    let into_period = now.duration_since(start).as_nanos() % every.as_nanos().max(1);
    let to_next = every.saturating_sub(Duration::from_nanos(into_period as u64));
    tokio::time::interval_at(now + to_next, every)
}

/// The next tick of `timer`; never, without one.
async fn tick(timer: Option<&mut Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// `timer`'s deadline; never, without one.
async fn deadline(timer: Option<&mut Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

impl WatchStream {
    pub fn new(
        ctx: Context,
        hub: Arc<WatchHub>,
        cfg: StreamConfig,
        out: Sender<OutBatch>,
    ) -> (WatchStream, Receiver<Arc<RevBatch>>) {
        let reg = hub.register();
        let member = Member {
            id: ctx.node.id,
            cluster_id: ctx.node.cluster_id,
            status: ctx.node.status.clone(),
            state: ctx.node.state.clone(),
            jwt: ctx.auth.jwt.is_some(),
            sabotage: ctx.watch_sabotage,
        };
        let s = WatchStream {
            member,
            hub,
            cfg,
            stream: reg.id,
            victim: reg.victim,
            out,
            pending: Vec::new(),
            pending_bytes: 0,
            watchers: IdTable::default(),
            dead: BTreeSet::new(),
            unsynced: 0,
            next_auto_id: 0,
            progress_requests: 0,
            progress_answered: 0,
            progress_parked: false,
            who: Ok(None),
            wants_progress: false,
            no_leader: 0,
        };
        (s, reg.rx)
    }

    /// Sets who the stream acts as (crate::auth::who at the call's start).
    pub fn acting_as(mut self, who: Result<Option<RequestAuth>, ()>) -> Self {
        self.who = who;
        self
    }

    /// etcd's `isWatchPermitted`: read permission on the watched range. A simple token
    /// or a certificate name is judged with today's rights (the current auth revision); a
    /// JWT keeps the revision it was issued at.
    fn watch_permitted(&self, st: &MvccMachine, req: &WatchCreateRequest) -> bool {
        let Ok(who) = &self.who else {
            return false;
        };
        let auth = st.store.auth();
        let who = who.clone().map(|mut w| {
            if !self.member.jwt {
                w.auth_revision = auth.revision();
            }
            w
        });
        mvcc::auth::RequestChecker::new(auth, who.as_ref())
            .read(&req.key, &req.range_end)
            .is_ok()
    }

    /// Serve the stream until the client goes away or the member loses its leader (for a
    /// `hasleader` stream). A client that half-closes keeps receiving, as with etcd.
    ///
    /// The task's future is what an idle stream costs, so it holds little while it waits:
    /// the stream's state and a `select!` over small futures. Handling what woke it is a
    /// separate future, boxed for the time it runs. Timers exist only when needed: the
    /// progress ticker once a watcher asks for notifications, the leader check on a
    /// `hasleader` stream, the recheck while a progress request is parked.
    ///
    /// Not an `async fn`: its future would hold the arguments twice, as passed and moved
    /// into the body (rust-lang/rust#62958), ~0.6 KB per stream; the `async move` block
    /// uses them where they were captured.
    #[allow(clippy::manual_async_fn)]
    pub fn run<S>(
        mut self,
        mut inbound: S,
        mut rx: Receiver<Arc<RevBatch>>,
    ) -> impl std::future::Future<Output = ()>
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Unpin,
    {
        async move {
            let victim = self.victim.clone();
            let mut inbound_open = true;
            let start = Instant::now();
            let mut progress: Option<Interval> = None;
            let mut leader_check = self.cfg.require_leader.then(|| {
                let every = self.cfg.election_timeout.max(Duration::from_millis(10));
                tokio::time::interval_at(start + every, every)
            });
            loop {
                if progress.is_none() && self.wants_progress {
                    progress = Some(progress_ticker(start, self.cfg.progress_interval));
                }
                let busy = self.has_work();
                let mut recheck: Option<Pin<Box<Sleep>>> = self
                    .progress_parked
                    .then(|| Box::pin(tokio::time::sleep(PARKED_RECHECK)));
                let wake = tokio::select! {
                    _ = self.out.closed() => break,
                    msg = inbound.next(), if inbound_open => Wake::Request(msg),
                    Some(batch) = rx.recv() => Wake::Batch(batch),
                    // Handled by `step`.
                    _ = victim.marked() => Wake::Step,
                    _ = tick(progress.as_mut()) => Wake::ProgressTick,
                    _ = tick(leader_check.as_mut()) => Wake::LeaderCheck,
                    _ = std::future::ready(()), if busy => Wake::Step,
                    _ = deadline(recheck.as_mut()) => {
                        self.progress_parked = false;
                        Wake::Step
                    }
                };
                drop(recheck);
                if let Wake::Request(None) = wake {
                    inbound_open = false;
                }
                if Box::pin(self.handle(wake, &mut rx)).await.is_err() {
                    break;
                }
            }
            self.hub.unregister(self.stream);
        }
    }

    /// What `wake` asks for, then the work that does not wait for input, then hand over
    /// what is ready.
    async fn handle(&mut self, wake: Wake, rx: &mut Receiver<Arc<RevBatch>>) -> Result<(), Closed> {
        match wake {
            Wake::Request(Some(Ok(req))) => self.on_request(req).await?,
            Wake::Request(Some(Err(_))) => return Err(Closed),
            Wake::Request(None) | Wake::Step => {}
            Wake::Batch(batch) => {
                let batches = coalesce(batch, rx);
                self.on_batches(&batches).await?;
            }
            Wake::ProgressTick => self.on_progress_tick(rx).await?,
            Wake::LeaderCheck => self.on_leader_check().await?,
        }
        self.step(rx).await?;
        self.flush().await
    }

    /// One leader check of a `hasleader` stream: after [`NO_LEADER_CHECKS`] in a row without
    /// a leader, the stream ends with etcd's error.
    async fn on_leader_check(&mut self) -> Result<(), Closed> {
        if self.member.status.leader().is_some() {
            self.no_leader = 0;
            return Ok(());
        }
        self.no_leader += 1;
        if self.no_leader < NO_LEADER_CHECKS {
            return Ok(());
        }
        if self.flush().await.is_ok() {
            let _ = self.out.send(Err(ServerError::NoLeader.into())).await;
        }
        Err(Closed)
    }

    fn has_work(&self) -> bool {
        self.unsynced > 0
            || (self.progress_requests > 0 && !self.progress_parked)
            || self.victim.missed_from().is_some()
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.member.cluster_id,
            member_id: self.member.id,
            revision,
            raft_term: self.member.status.term(),
        }
    }

    /// The state machine (read-lock it with [`read`]).
    fn state(&self) -> Arc<RwLock<MvccMachine>> {
        self.member.state.clone()
    }

    async fn send(&mut self, resp: WatchResponse) -> Result<(), Closed> {
        self.queue(vec![Outgoing::message(&resp)]).await
    }

    /// Adds responses to what goes out next; hands everything over once enough is pending.
    async fn queue(&mut self, responses: Vec<Outgoing>) -> Result<(), Closed> {
        for r in responses {
            self.pending_bytes += r.encoded_len();
            self.pending.push(r);
            if self.pending.len() >= FLUSH_RESPONSES || self.pending_bytes >= FLUSH_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Hands the pending responses to the gRPC response stream (waits while its queue is
    /// full: a client that does not read holds up only its own stream).
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.out.send(Ok(batch)).await.map_err(|_| Closed)
    }

    async fn on_request(&mut self, req: WatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                let resp = self.create(&c)?;
                self.send(resp).await
            }
            Some(RequestUnion::CancelRequest(c)) => match self.cancel(c.watch_id)? {
                Some(resp) => self.send(resp).await,
                // etcd answers nothing to a cancel of an id it does not know.
                None => Ok(()),
            },
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requests += 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn create(&mut self, req: &WatchCreateRequest) -> Result<WatchResponse, Closed> {
        let mut sel = Selection::from_request(req);
        let state = self.state();
        let st = read(&state)?;
        let current = st.store.current_revision();
        let refused = |reason: &str| WatchResponse {
            header: Some(self.header(current)),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        if sel.is_empty_range() {
            return Ok(refused(REASON_EMPTY_RANGE));
        }
        if !self.watch_permitted(&st, req) {
            return Ok(WatchResponse {
                watch_id: req.watch_id,
                ..refused(REASON_PERMISSION_DENIED)
            });
        }
        let limit = self.cfg.max_watches;
        if limit > 0 && self.watchers.len() + self.dead.len() >= limit {
            return Ok(refused(&format!(
                "{REASON_TOO_MANY_WATCHES} {limit} (--max-watches-per-stream)"
            )));
        }
        let taken = |id: &i64| self.watchers.contains_key(*id) || self.dead.contains(id);
        let id = if req.watch_id == 0 {
            let mut id = self.next_auto_id;
            while taken(&id) {
                id += 1;
            }
            id
        } else if taken(&req.watch_id) {
            return Ok(refused(REASON_DUPLICATE_ID));
        } else {
            req.watch_id
        };
        if req.watch_id == 0 {
            self.next_auto_id = id + 1;
        }
        let next_rev = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        // Under the read lock: every revision after `current` will be offered to this
        // stream (or the victim mark will say which was not).
        let synced = next_rev > current && self.victim.missed_from().is_none();
        sel.range = self.hub.add_range(self.stream, sel.range);
        drop(st);
        if !synced {
            self.unsynced += 1;
        }
        self.wants_progress |= req.progress_notify;
        self.watchers.insert(
            id,
            Watcher {
                sel,
                next_rev,
                synced,
                progress_notify: req.progress_notify,
                fragment: req.fragment,
                sent_since_tick: false,
            },
        );
        Ok(WatchResponse {
            header: Some(self.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        })
    }

    fn remove(&mut self, id: i64) -> bool {
        match self.watchers.remove(id) {
            Some(w) => {
                if !w.synced {
                    self.unsynced -= 1;
                }
                self.hub.remove_range(self.stream, &w.sel.range);
                true
            }
            None => false,
        }
    }

    fn cancel(&mut self, id: i64) -> Result<Option<WatchResponse>, Closed> {
        let known = self.remove(id) || self.dead.remove(&id);
        if !known {
            return Ok(None);
        }
        let current = read(&self.state())?.store.current_revision();
        Ok(Some(WatchResponse {
            header: Some(self.header(current)),
            watch_id: id,
            canceled: true,
            ..Default::default()
        }))
    }

    /// Live revisions from the hub (consecutive, in order): to every synced watcher, what it
    /// has not seen of them, in one response per watcher.
    async fn on_batches(&mut self, batches: &[Arc<RevBatch>]) -> Result<(), Closed> {
        let Some(last) = batches.last() else {
            return Ok(());
        };
        let mut header = Header::new(self.header(last.rev));
        let limit = self.cfg.fragment_bytes;
        let mut ready = Vec::new();
        let mut sources = Vec::with_capacity(batches.len());
        for (id, w) in self.watchers.iter_mut() {
            if !w.synced || w.next_rev > last.rev {
                continue;
            }
            sources.clear();
            sources.extend(
                batches
                    .iter()
                    .filter(|b| b.rev >= w.next_rev)
                    .map(|b| (&b.events, i64::MIN)),
            );
            w.next_rev = last.rev + 1;
            let reply = Reply {
                sel: &w.sel,
                watch_id: id,
                fragment: w.fragment,
                limit,
                sabotage: self.member.sabotage,
            };
            if reply.append(&mut header, &sources, &mut ready) {
                w.sent_since_tick = true;
            }
        }
        self.queue(ready).await
    }

    /// Work that does not wait for input: recover from being a victim, advance unsynced
    /// watchers by one step, answer progress requests once everything is delivered.
    async fn step(&mut self, rx: &mut Receiver<Arc<RevBatch>>) -> Result<(), Closed> {
        if self.victim.missed_from().is_some() {
            // The hub offers nothing more until the mark is cleared, so what is queued is
            // everything before the first missed revision.
            while let Ok(batch) = rx.try_recv() {
                let batches = coalesce(batch, rx);
                self.on_batches(&batches).await?;
            }
            let state = self.state();
            let _st = read(&state)?;
            if let Some(missed) = self.victim.take() {
                for w in self.watchers.values_mut() {
                    if w.synced {
                        w.synced = false;
                        w.next_rev = w.next_rev.max(missed);
                        self.unsynced += 1;
                    }
                }
            }
        }
        if self.unsynced > 0 {
            let ready = self.catch_up()?;
            self.queue(ready).await?;
        }
        if self.progress_requests > 0 {
            let through = self.delivered_through(rx)?;
            // Nothing left to deliver, so only a future watch holds the answer back.
            self.progress_parked = through.is_none()
                && self.unsynced == 0
                && self.victim.missed_from().is_none()
                && rx.is_empty();
            if let Some(rev) = through {
                while self.progress_requests > 0 {
                    self.progress_requests -= 1;
                    self.progress_answered += 1;
                    if !self
                        .member
                        .sabotage
                        .answers_progress(self.progress_answered)
                    {
                        continue;
                    }
                    let resp = WatchResponse {
                        header: Some(self.header(rev)),
                        watch_id: -1,
                        ..Default::default()
                    };
                    self.send(resp).await?;
                }
            }
        }
        Ok(())
    }

    /// One catch-up step for the unsynced watchers, under the read lock; returns what to
    /// send once the lock is released.
    fn catch_up(&mut self) -> Result<Vec<Outgoing>, Closed> {
        let state = self.state();
        let st = read(&state)?;
        let store = &st.store;
        let current = store.current_revision();
        let compacted = store.compact_revision();
        let mut ready = Vec::new();
        let doomed: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| !w.synced && w.next_rev < compacted)
            .map(|(id, _)| id)
            .collect();
        for id in doomed {
            self.remove(id);
            self.dead.insert(id);
            // etcd 3.4 sends this one with a zero header revision.
            ready.push(Outgoing::message(&WatchResponse {
                header: Some(self.header(0)),
                watch_id: id,
                canceled: true,
                compact_revision: compacted,
                ..Default::default()
            }));
        }
        let Some(lo) = self
            .watchers
            .values()
            .filter(|w| !w.synced)
            .map(|w| w.next_rev)
            .min()
        else {
            return Ok(ready);
        };
        let mut hi = current.min(lo.saturating_add(CATCH_UP_REVS - 1));
        let mut events = if lo <= hi {
            // `lo >= compacted` here, so this cannot fail; an error would end the stream
            // rather than skip events.
            store.events_between(lo, hi).map_err(|_| Closed)?
        } else {
            Vec::new()
        };
        // etcd's compaction keeps each key's last version at the compaction revision
        // unless it is a deletion: a watch from exactly that revision sees its puts only.
        events.retain(|e| {
            !(e.r#type == EventType::Delete as i32
                && e.kv.as_ref().is_some_and(|kv| kv.mod_revision == compacted))
        });
        if let Some(cut) = byte_bounded_end(&events, CATCH_UP_BYTES) {
            hi = cut;
            events.retain(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= cut));
        }
        let can_sync = self.victim.missed_from().is_none();
        let events = SharedEvents::new(events);
        let mut header = Header::new(self.header(current));
        let limit = self.cfg.fragment_bytes;
        for (id, w) in self.watchers.iter_mut() {
            if w.synced {
                continue;
            }
            if w.next_rev <= hi {
                let reply = Reply {
                    sel: &w.sel,
                    watch_id: id,
                    fragment: w.fragment,
                    limit,
                    sabotage: self.member.sabotage,
                };
                if reply.append(&mut header, &[(&events, w.next_rev)], &mut ready) {
                    w.sent_since_tick = true;
                }
                w.next_rev = hi + 1;
            }
            if w.next_rev > current && can_sync {
                w.synced = true;
                self.unsynced -= 1;
            }
        }
        Ok(ready)
    }

    /// The current revision if every event up to it has been handed to the client: every
    /// watcher synced, the hub feeding the stream and nothing left in its queue. `None`
    /// while the stream is catching up.
    fn delivered_through(&self, rx: &Receiver<Arc<RevBatch>>) -> Result<Option<i64>, Closed> {
        let state = self.state();
        let st = read(&state)?;
        let current = st.store.current_revision();
        // A watch started in the future (on a member that is behind, typically after a
        // re-watch from `last + 1` on a restarted member) waits until the member reaches the
        // revision before its start: answering below it would take a client's progress back.
        let future = self.watchers.values().any(|w| w.next_rev - 1 > current);
        let caught_up =
            self.unsynced == 0 && !future && self.victim.missed_from().is_none() && rx.is_empty();
        Ok(caught_up.then_some(current))
    }

    /// `progress_notify` watchers that saw no events since the last tick get an empty
    /// response at the current revision, if the stream has delivered everything up to it.
    async fn on_progress_tick(&mut self, rx: &Receiver<Arc<RevBatch>>) -> Result<(), Closed> {
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && !w.sent_since_tick)
            .map(|(id, _)| id)
            .collect();
        for w in self.watchers.values_mut() {
            w.sent_since_tick = false;
        }
        if due.is_empty() {
            return Ok(());
        }
        let Some(rev) = self.delivered_through(rx)? else {
            return Ok(());
        };
        for id in due {
            let resp = WatchResponse {
                header: Some(self.header(rev)),
                watch_id: id,
                ..Default::default()
            };
            self.send(resp).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::mvccpb::KeyValue;

    fn ev(rev: i64, size: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: bytes::Bytes::from_static(b"k"),
                mod_revision: rev,
                value: bytes::Bytes::from(vec![0u8; size]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn catch_up_steps_are_bounded_by_bytes_without_splitting_a_revision() {
        // Everything fits.
        assert_eq!(byte_bounded_end(&[ev(2, 10), ev(3, 10)], 1000), None);
        // The budget ends inside revision 3: stop after revision 2.
        let evs = [ev(2, 400), ev(3, 400), ev(3, 400), ev(4, 10)];
        assert_eq!(byte_bounded_end(&evs, 1000), Some(2));
        // A first revision larger than the budget is still taken whole.
        let evs = [ev(2, 800), ev(2, 800), ev(3, 10)];
        assert_eq!(byte_bounded_end(&evs, 1000), Some(2));
    }
}
