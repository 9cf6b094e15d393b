//! The store: every key's history, the revision counter, and the apply entry point.

use bytes::Bytes;
use imbl::OrdMap;
use proto::etcdserverpb::{
    AlarmResponse, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseRevokeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnResponse,
};
use proto::mvccpb::{event::EventType, Event, KeyValue};
use proto::raftkvpb::{internal_request, InternalRequest};

use crate::alarm::Alarms;
use crate::auth::{self, AuthApplied, AuthStore};
use crate::error::MvccError;
use crate::key_history::{Entry, KeyHistory, Live, State};
use crate::key_range::KeyRange;
use crate::lease::{LeaseChange, Leases};
use crate::revision::Revision;
use crate::validate;

/// The result of applying one Raft entry. Header fields other than `revision` are left at
/// zero for the server to fill in.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    Alarm(AlarmResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    /// Each ID's granted TTL in seconds, in the entry's order; 0 for an unknown lease.
    LeaseKeepAlives(Vec<i64>),
    /// How many checkpoints were recorded (0 for a stale entry).
    LeaseCheckpoints(usize),
    /// The leases revoked (none for a stale entry).
    LeaseExpiry(Vec<i64>),
    /// A change of users, roles, permissions or the enabled flag, or a replicated
    /// `Authenticate`; the server builds etcd's response from it.
    Auth(AuthApplied),
    /// An entry the store does not hold, applied by the server around it (a member's new
    /// peer URLs, applied to the replicated member list): the store did not change. `Err`
    /// carries etcd's gRPC code and message for a refusal.
    External(Result<(), (i32, String)>),
    /// An operator admitted `member_id` with `incarnation` (`InternalRequest` field 41):
    /// nothing in the store changes; the server records it for its peer transport.
    AdmitPeer {
        member_id: u64,
        incarnation: u64,
    },
}

/// The replicated key-value state machine with etcd's MVCC semantics.
///
/// Deterministic: the same sequence of `apply` calls on two stores yields identical
/// responses, events, hashes and snapshots. It does no I/O and keeps everything in memory;
/// durability comes from the Raft log and [`Store::snapshot`].
///
/// The big maps (keys, the revision index, leases) are persistent B-trees (`imbl::OrdMap`):
/// [`Store::view`] shares them instead of copying, so a point-in-time copy of a store of any
/// size costs a few reference counts, and a write after it copies only the nodes on its own
/// path. That is what lets a snapshot be serialised on another thread while the store goes
/// on applying (docs/storage.md).
#[derive(Debug, Clone)]
pub struct Store {
    /// The revision of the latest change; 1 for an empty store, so the first write is 2.
    pub(crate) current: i64,
    /// The revision of the last compaction, -1 before the first one (as etcd reports it).
    pub(crate) compacted: i64,
    pub(crate) keys: OrdMap<Bytes, KeyHistory>,
    /// Every entry of every history, by revision: the order watchers and the hash see.
    pub(crate) by_revision: OrdMap<Revision, Bytes>,
    /// Rough bytes held, for the server's `dbSize` figure.
    pub(crate) stored_bytes: u64,
    /// Events produced by the last `apply`.
    pub(crate) last_events: Vec<Event>,
    /// Active alarms (NOSPACE, CORRUPT): replicated, in snapshots, not in the hash.
    pub(crate) alarms: Alarms,
    pub(crate) leases: Leases,
    /// Lease changes made by the last `apply`.
    pub(crate) last_lease_changes: Vec<LeaseChange>,
    /// Users, roles and permissions (crate::auth); replicated and snapshotted with the keys.
    pub(crate) auth: AuthStore,
    /// History below the compaction point still to be dropped ([`Store::compact_step`]).
    pub(crate) compacting: Option<Compacting>,
}

/// A compaction whose history is being dropped a step at a time: every apply compacts the
/// keys changed at the next revisions at or below `rev` from `cursor` on, about
/// [`COMPACTION_STEP`] changes' worth.
/// Logically the store is compacted at `rev` from the moment the compaction is applied
/// (reads, watches and HashKV below it fail, and nothing left below it is visible: see
/// [`KeyHistory::survives_compaction`]); the steps only give the memory back. Tied to applies,
/// so every member holds the same history at the same applied index, and snapshotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compacting {
    pub rev: i64,
    pub cursor: Revision,
}

/// The changes of history each apply looks at while a compaction is in progress: bounds
/// what a compaction adds to one apply (~0.1 ms) instead of dropping all of a large history
/// at once on the node thread (issue 18: 200,000 revisions held it for 1.6 s). Small on
/// purpose: under a write load the steps come with the writes, so a larger step only moves
/// the stall to the writes that follow (1,024 did: the same 1.6 s, spread over 0.5 s of
/// puts); at 128, 200,000 revisions take ~1,800 applies.
pub const COMPACTION_STEP: usize = 128;

/// Two stores are equal when they hold the same replicated state; the events of the last
/// apply are an output, not state.
impl PartialEq for Store {
    fn eq(&self, other: &Self) -> bool {
        self.current == other.current
            && self.compacted == other.compacted
            && self.keys == other.keys
            && self.by_revision == other.by_revision
            && self.alarms == other.alarms
            && self.leases == other.leases
            && self.auth == other.auth
            && self.compacting == other.compacting
    }
}

impl Eq for Store {}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// Fixed per-entry overhead counted in [`Store::approximate_size`].
const ENTRY_OVERHEAD: u64 = 64;

impl Store {
    pub fn new() -> Self {
        Store {
            current: 1,
            compacted: -1,
            keys: OrdMap::new(),
            by_revision: OrdMap::new(),
            stored_bytes: 0,
            last_events: Vec::new(),
            alarms: Alarms::default(),
            leases: Leases::default(),
            last_lease_changes: Vec::new(),
            auth: AuthStore::new(),
            compacting: None,
        }
    }

    /// A copy of the replicated state as it is now, in O(1) for the keys, their history and
    /// the leases (the maps are shared, not copied; the auth store and alarms, small, are
    /// copied). Later applies to `self` do not show in it: serialise it ([`Store::snapshot`])
    /// or hash it on another thread while `self` goes on. The events and lease changes of
    /// the last apply are outputs, not state, and are left out.
    pub fn view(&self) -> Store {
        Store {
            current: self.current,
            compacted: self.compacted,
            keys: self.keys.clone(),
            by_revision: self.by_revision.clone(),
            stored_bytes: self.stored_bytes,
            last_events: Vec::new(),
            alarms: self.alarms.clone(),
            leases: self.leases.clone(),
            last_lease_changes: Vec::new(),
            auth: self.auth.clone(),
            compacting: self.compacting,
        }
    }

    /// The auth state (users, roles, permissions, enabled flag) at the applied index.
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// The active alarms.
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    /// Forget every alarm: for a store restored into a new cluster, whose alarms named
    /// members that are not in it.
    pub fn clear_alarms(&mut self) {
        self.alarms = Alarms::default();
    }

    /// For a store restored into a new cluster (etcd 3.6's `--bump-revision` and
    /// `--mark-compacted`): move the current revision forward by `bump`, so every revision
    /// the new cluster hands out is above any the old one did, and with `mark_compacted`
    /// compact at the new revision, so a watcher resuming from an old revision is told
    /// its history was compacted rather than silently missing or repeating events. Keys
    /// keep their create and mod revisions.
    pub fn bump_revision(&mut self, bump: i64, mark_compacted: bool) -> Result<(), MvccError> {
        if bump < 0 {
            return Err(MvccError::Internal("negative revision bump".into()));
        }
        self.current = self
            .current
            .checked_add(bump)
            .ok_or_else(|| MvccError::Internal("revision bump overflows".into()))?;
        if mark_compacted && self.compacted < self.current {
            self.compact(&CompactionRequest {
                revision: self.current,
                physical: true,
            })?;
            self.finish_compaction();
        }
        Ok(())
    }

    /// The revision of the latest change (1 when nothing was ever written).
    pub fn current_revision(&self) -> i64 {
        self.current
    }

    /// The revision of the last compaction, or -1 if the store was never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    /// Number of keys that currently exist.
    pub fn key_count(&self) -> usize {
        self.keys
            .values()
            .filter(|h| h.live_at(self.current).is_some())
            .count()
    }

    /// Approximate bytes of keys, values and bookkeeping held, history included. Never 0,
    /// since etcdctl divides by the `dbSize` the server derives from it.
    pub fn approximate_size(&self) -> u64 {
        self.stored_bytes.max(1)
    }

    /// The watch events produced by the most recent [`Store::apply`], in revision order
    /// (empty if it changed nothing or failed). Put events carry `prev_kv` when the key
    /// existed before; a watcher that did not ask for it should clear it.
    pub fn last_events(&self) -> &[Event] {
        &self.last_events
    }

    /// Applies one committed Raft entry. Errors are results too: every replica returns the
    /// same error for the same entry, and a failed request changes nothing.
    ///
    /// Lease checkpoints and expiries are applied only through [`Store::apply_entry`], which
    /// knows the term of the log entry; here they change nothing.
    pub fn apply(&mut self, req: &InternalRequest) -> Result<Response, MvccError> {
        self.apply_entry(req, 0)
    }

    /// Applies one committed Raft entry of term `entry_term`; while a compaction is in
    /// progress, drops the next step of the history below it too (whatever the entry's
    /// outcome, so every member does the same steps at the same entries).
    pub fn apply_entry(
        &mut self,
        req: &InternalRequest,
        entry_term: u64,
    ) -> Result<Response, MvccError> {
        let result = self.apply_request(req, entry_term);
        self.compact_step(COMPACTION_STEP);
        result
    }

    fn apply_request(
        &mut self,
        req: &InternalRequest,
        entry_term: u64,
    ) -> Result<Response, MvccError> {
        self.last_events.clear();
        self.last_lease_changes.clear();
        let Some(request) = &req.request else {
            return Err(MvccError::EmptyRequest);
        };
        if let Some(refused) = self.alarms.refusal(request) {
            return Err(refused);
        }
        // Checked here, against the auth state at this index, so every member refuses the
        // same entries and nothing acts on rights revoked after the proposer checked them.
        auth::check_request(&self.auth, req.auth.as_ref(), request).map_err(MvccError::Auth)?;
        // etcd: revoking deletes the lease's keys, so it needs write access to each; and a
        // put (alone or in a txn) may attach a lease only if the writer could revoke it, i.e.
        // write every key already attached (etcd's `checkLeasePuts`).
        for lease_id in leases_needing_write_access(request) {
            if let Some(lease) = self.leases.get(lease_id) {
                for key in &lease.keys {
                    let delete = internal_request::Request::DeleteRange(DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    });
                    auth::check_request(&self.auth, req.auth.as_ref(), &delete)
                        .map_err(MvccError::Auth)?;
                }
            }
        }
        use internal_request::Request as R;
        let auth = &mut self.auth;
        let applied = match request {
            R::AuthEnable(_) => auth.enable(),
            R::AuthDisable(_) => Ok(auth.disable()),
            R::UserAdd(r) => auth.user_add(r),
            R::UserDelete(r) => auth.user_delete(&r.name),
            R::UserChangePassword(r) => auth.user_change_password(r),
            R::UserGrantRole(r) => auth.user_grant_role(r),
            R::UserRevokeRole(r) => auth.user_revoke_role(r),
            R::RoleAdd(r) => auth.role_add(&r.name),
            R::RoleDelete(r) => auth.role_delete(&r.role),
            R::RoleGrantPermission(r) => auth.role_grant_permission(r),
            R::RoleRevokePermission(r) => auth.role_revoke_permission(r),
            R::Authenticate(r) => auth.authenticate(r),
            _ => return self.apply_data(request, entry_term),
        };
        applied.map(Response::Auth).map_err(MvccError::Auth)
    }

    /// Applies a request that is not an auth change: keys, compaction, alarms, leases.
    fn apply_data(
        &mut self,
        request: &internal_request::Request,
        entry_term: u64,
    ) -> Result<Response, MvccError> {
        match request {
            internal_request::Request::Put(put) => self.apply_put(put).map(Response::Put),
            internal_request::Request::DeleteRange(del) => {
                self.apply_delete_range(del).map(Response::DeleteRange)
            }
            internal_request::Request::Txn(txn) => self.apply_txn(txn).map(Response::Txn),
            internal_request::Request::Compaction(c) => self.compact(c).map(Response::Compaction),
            internal_request::Request::Alarm(a) => {
                let mut resp = self.alarms.apply(a);
                set_revision(&mut resp.header, self.current);
                Ok(Response::Alarm(resp))
            }
            internal_request::Request::LeaseGrant(g) => {
                self.apply_lease_grant(g).map(Response::LeaseGrant)
            }
            internal_request::Request::LeaseRevoke(r) => {
                self.apply_lease_revoke(r).map(Response::LeaseRevoke)
            }
            internal_request::Request::LeaseKeepAlive(k) => {
                self.apply_lease_keep_alive(k).map(Response::LeaseKeepAlive)
            }
            internal_request::Request::LeaseKeepAlives(k) => {
                Ok(Response::LeaseKeepAlives(self.apply_lease_keep_alives(k)))
            }
            internal_request::Request::LeaseCheckpoints(c) => Ok(Response::LeaseCheckpoints(
                self.apply_lease_checkpoints(c, entry_term),
            )),
            internal_request::Request::LeaseExpiry(e) => Ok(Response::LeaseExpiry(
                self.apply_lease_expiry(e, entry_term),
            )),
            internal_request::Request::AdmitPeer(a) => Ok(Response::AdmitPeer {
                member_id: a.member_id,
                incarnation: a.incarnation,
            }),
            // Auth changes are applied by `apply_entry`.
            _ => Err(MvccError::EmptyRequest),
        }
    }

    /// Serves a read at the current revision (or at `req.revision`). The `serializable`
    /// flag is the server's business and ignored here.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        validate::check_range(req)?;
        self.range_at_view(req, self.current)
    }

    fn apply_put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        validate::check_put(req)?;
        // Plain puts check the lease before the key; txns the other way round (etcd 3.4).
        if req.lease != 0 && !self.leases.contains(req.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        let mut writer = Writer::begin(self);
        match writer.put(req) {
            Ok(mut resp) => {
                let rev = writer.commit();
                set_revision(&mut resp.header, rev);
                Ok(resp)
            }
            Err(err) => {
                writer.roll_back();
                Err(err)
            }
        }
    }

    fn apply_delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        validate::check_delete_range(req)?;
        let mut writer = Writer::begin(self);
        let mut resp = writer.delete_range(req);
        let rev = writer.commit();
        set_revision(&mut resp.header, rev);
        Ok(resp)
    }

    /// Compacts at `req.revision`: from now on the store answers as compacted there, and the
    /// history below it is dropped over the following applies ([`Store::compact_step`], the
    /// first step in this apply). `physical` makes no difference to an in-memory store.
    fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, MvccError> {
        let rev = req.revision;
        if rev <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if rev > self.current {
            return Err(MvccError::FutureRevision);
        }
        self.compacted = rev;
        // A compaction still in progress is taken over: the new one drops all it would have.
        self.compacting = Some(Compacting {
            rev,
            cursor: Revision::new(i64::MIN, i64::MIN),
        });
        Ok(CompactionResponse {
            header: Some(ResponseHeader {
                revision: self.current,
                ..Default::default()
            }),
        })
    }

    /// Drops the history the compaction in progress no longer needs: the keys changed at
    /// the next revisions at or below its revision, until about `budget` changes were looked
    /// at (a key's history is compacted whole, so one key with a long history can take a
    /// step alone). Returns whether a compaction is still in progress.
    pub fn compact_step(&mut self, budget: usize) -> bool {
        let Some(Compacting { rev, cursor }) = self.compacting else {
            return false;
        };
        let upper = Revision::start_of(rev.saturating_add(1));
        // The keys changed from the cursor on, until their histories hold `budget` changes:
        // each is compacted whole.
        let mut touched: Vec<Bytes> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut spent = 0usize;
        let mut next = None;
        for (at, key) in self.by_revision.range(cursor..upper) {
            if spent >= budget.max(1) {
                next = Some(*at);
                break;
            }
            spent += 1;
            if seen.insert(key.clone()) {
                spent += self.keys.get(key).map_or(0, |h| h.entries.len());
                touched.push(key.clone());
            }
        }
        for key in touched {
            let Some(history) = self.keys.get_mut(&key) else {
                continue;
            };
            for dropped in history.compact(rev) {
                self.stored_bytes = self
                    .stored_bytes
                    .saturating_sub(entry_size(&dropped) + key.len() as u64);
                self.by_revision.remove(&dropped.rev);
            }
            if history.is_empty() {
                self.keys.remove(&key);
            }
        }
        self.compacting = next.map(|cursor| Compacting { rev, cursor });
        self.compacting.is_some()
    }

    /// Finishes the compaction in progress, if any.
    pub fn finish_compaction(&mut self) {
        while self.compact_step(usize::MAX) {}
    }

    /// Whether history below the compaction revision is still being dropped.
    pub fn compaction_in_progress(&self) -> bool {
        self.compacting.is_some()
    }

    /// Events for every change with main revision in `[from_rev, to_rev]`, in order, with
    /// `prev_kv` filled where the previous state is still known. For a watcher catching up
    /// from history. Fails with `Compacted` when `from_rev` is below the compaction point.
    pub fn events_between(&self, from_rev: i64, to_rev: i64) -> Result<Vec<Event>, MvccError> {
        if from_rev < self.compacted {
            return Err(MvccError::Compacted);
        }
        if from_rev > to_rev {
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        let upper = Revision::start_of(to_rev.saturating_add(1));
        for (rev, key) in self.by_revision.range(Revision::start_of(from_rev)..upper) {
            let Some(history) = self.keys.get(key) else {
                continue;
            };
            let Some(entry) = history.entry_exactly_at(*rev) else {
                continue;
            };
            // What a compaction in progress has yet to drop is not shown (nor as a prev_kv).
            if !history.survives_compaction(*rev, self.compacted) {
                continue;
            }
            let prev = match history.entry_before(*rev) {
                Some(Entry {
                    rev: prev_rev,
                    state: State::Live(live),
                }) if history.survives_compaction(*prev_rev, self.compacted) => {
                    Some(key_value(key, *prev_rev, live))
                }
                _ => None,
            };
            events.push(event_for(key, entry, prev));
        }
        Ok(events)
    }
}

fn set_revision(header: &mut Option<ResponseHeader>, rev: i64) {
    header.get_or_insert_with(ResponseHeader::default).revision = rev;
}

pub(crate) fn entry_size(entry: &Entry) -> u64 {
    ENTRY_OVERHEAD
        + match &entry.state {
            State::Live(live) => live.value.len() as u64,
            State::Tombstone => 0,
        }
}

/// The client-visible record of `key` as set at revision `at`.
pub(crate) fn key_value(key: &Bytes, at: Revision, live: &Live) -> KeyValue {
    KeyValue {
        key: key.clone(),
        create_revision: live.create_revision,
        mod_revision: at.main,
        version: live.version,
        value: live.value.clone(),
        lease: live.lease,
    }
}

pub(crate) fn event_for(key: &Bytes, entry: &Entry, prev_kv: Option<KeyValue>) -> Event {
    match &entry.state {
        State::Live(live) => Event {
            r#type: EventType::Put as i32,
            kv: Some(key_value(key, entry.rev, live)),
            prev_kv,
        },
        State::Tombstone => Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.clone(),
                mod_revision: entry.rev.main,
                ..Default::default()
            }),
            prev_kv,
        },
    }
}

/// One mutating request in progress. All its writes get main revision `current + 1` and
/// increasing sub-revisions; reads made through it see those writes. `commit` makes the new
/// revision current if anything changed, `roll_back` removes every trace of the request.
pub(crate) struct Writer<'s> {
    pub(crate) store: &'s mut Store,
    pub(crate) main: i64,
    next_sub: i64,
    events: Vec<Event>,
    touched: Vec<Bytes>,
    /// Keys whose lease changes when the request commits: (key, old lease, new lease).
    lease_moves: Vec<(Bytes, i64, i64)>,
}

impl<'s> Writer<'s> {
    pub(crate) fn begin(store: &'s mut Store) -> Self {
        let main = store.current + 1;
        Writer {
            store,
            main,
            next_sub: 0,
            events: Vec::new(),
            touched: Vec::new(),
            lease_moves: Vec::new(),
        }
    }

    pub(crate) fn changed(&self) -> bool {
        self.next_sub > 0
    }

    /// The revision reads inside this request see: the pending one once something changed.
    pub(crate) fn view_rev(&self) -> i64 {
        if self.changed() {
            self.main
        } else {
            self.store.current
        }
    }

    fn record(&mut self, key: &Bytes, state: State, prev_kv: Option<KeyValue>) -> Revision {
        let rev = Revision::new(self.main, self.next_sub);
        self.next_sub += 1;
        let old_lease = prev_kv.as_ref().map_or(0, |p| p.lease);
        let new_lease = match &state {
            State::Live(live) => live.lease,
            State::Tombstone => 0,
        };
        if old_lease != new_lease {
            self.lease_moves.push((key.clone(), old_lease, new_lease));
        }
        let entry = Entry { rev, state };
        self.events.push(event_for(key, &entry, prev_kv));
        self.store.stored_bytes += entry_size(&entry) + key.len() as u64;
        self.store.keys.entry(key.clone()).or_default().push(entry);
        self.store.by_revision.insert(rev, key.clone());
        self.touched.push(key.clone());
        rev
    }

    /// The key's current value as this request sees it.
    fn visible(&self, key: &[u8]) -> Option<KeyValue> {
        let (stored_key, history) = self.store.keys.get_key_value(key)?;
        let (at, live) = history.live_at(self.view_rev())?;
        Some(key_value(stored_key, at, live))
    }

    pub(crate) fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        let prev = self.visible(&req.key);
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if req.lease != 0 && !self.store.leases.contains(req.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        let live = Live {
            create_revision: prev.as_ref().map_or(self.main, |p| p.create_revision),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: match (&prev, req.ignore_lease) {
                (Some(p), true) => p.lease,
                _ => req.lease,
            },
            // Copied so the store does not pin the (possibly large) buffer the request was
            // decoded from.
            value: match (&prev, req.ignore_value) {
                (Some(p), true) => p.value.clone(),
                _ => Bytes::copy_from_slice(&req.value),
            },
        };
        let key = match &prev {
            Some(p) => p.key.clone(),
            None => self
                .store
                .keys
                .get_key_value(req.key.as_ref())
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| Bytes::copy_from_slice(&req.key)),
        };
        self.record(&key, State::Live(live), prev.clone());
        Ok(PutResponse {
            header: Some(ResponseHeader {
                revision: self.main,
                ..Default::default()
            }),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    pub(crate) fn delete_range(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let range = KeyRange::new(&req.key, &req.range_end);
        let (doomed, _) = self
            .store
            .collect(range, self.view_rev(), usize::MAX, false);
        for prev in &doomed {
            self.record(&prev.key, State::Tombstone, Some(prev.clone()));
        }
        DeleteRangeResponse {
            header: Some(ResponseHeader {
                revision: self.view_rev(),
                ..Default::default()
            }),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        }
    }

    /// Deletes one key if it exists (a lease's revocation).
    pub(crate) fn delete_key(&mut self, key: &Bytes) {
        if let Some(prev) = self.visible(key) {
            self.record(&prev.key.clone(), State::Tombstone, Some(prev));
        }
    }

    /// Makes the request's changes current and publishes its events. Returns the revision
    /// the request's response header carries.
    pub(crate) fn commit(self) -> i64 {
        if self.changed() {
            self.store.current = self.main;
        }
        for (key, from, to) in &self.lease_moves {
            self.store.leases.reattach(key, *from, *to);
        }
        self.store.last_events = self.events;
        self.store.current
    }

    /// Removes everything this request wrote.
    pub(crate) fn roll_back(self) {
        let main = self.main;
        for key in &self.touched {
            if let Some(history) = self.store.keys.get_mut(key) {
                while history.latest().is_some_and(|e| e.rev.main == main) {
                    if let Some(entry) = history.entries.pop() {
                        self.store.stored_bytes = self
                            .store
                            .stored_bytes
                            .saturating_sub(entry_size(&entry) + key.len() as u64);
                    }
                }
                if history.is_empty() {
                    self.store.keys.remove(key);
                }
            }
        }
        // The request wrote a handful of revisions at most: remove them one by one (a
        // persistent map has no cheap `split_off`).
        let written: Vec<Revision> = self
            .store
            .by_revision
            .range(Revision::start_of(main)..)
            .map(|(rev, _)| *rev)
            .collect();
        for rev in written {
            self.store.by_revision.remove(&rev);
        }
        self.store.last_events.clear();
    }
}

/// The leases whose attached keys the writer of `request` must be able to write: the one
/// revoked, or every non-zero lease a put attaches (in a txn: every put of both branches,
/// nested txns included, since the branch that runs is decided at apply).
fn leases_needing_write_access(request: &internal_request::Request) -> Vec<i64> {
    fn txn(t: &proto::etcdserverpb::TxnRequest, out: &mut Vec<i64>) {
        use proto::etcdserverpb::request_op::Request as Op;
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Op::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
                Some(Op::RequestTxn(inner)) => txn(inner, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match request {
        internal_request::Request::LeaseRevoke(r) => out.push(r.id),
        internal_request::Request::Put(p) if p.lease != 0 => out.push(p.lease),
        internal_request::Request::Txn(t) => txn(t, &mut out),
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    out
}
