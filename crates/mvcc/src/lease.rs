//! Leases, the replicated half: which leases exist, their granted TTL, the remaining TTL the
//! leader last checkpointed, how often they were renewed, and which keys are attached.
//!
//! Time never enters here. *When* a lease runs out is decided by the leader alone, with its
//! clock (`node::lessor`), and reaches every replica as a [`LeaseExpiry`] entry in the log.
//! Two guards make a stale decision harmless, and both are checked at apply, so every
//! replica agrees:
//!
//! * the entry names the term its proposer led in; an entry carried by a log entry of
//!   another term (a deposed leader's decision forwarded to its successor) changes nothing;
//! * each lease is named with the number of keep-alives the leader had seen; a lease
//!   renewed since (the renewal got into the log first) is not revoked.
//!
//! Keep-alives go through the log too ([`LeaseKeepAliveRequest`] entries, or
//! [`LeaseKeepAlives`] for the keep-alives a member took together): every member then knows
//! when each lease was last renewed, so a new leader needs no fresh full TTL (docs/lease.md).

use std::collections::BTreeSet;

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};
use node::lessor::decision_holds;
use proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, ResponseHeader,
};
use proto::raftkvpb::{LeaseCheckpoints, LeaseExpiry, LeaseKeepAlives};

use crate::error::MvccError;
use crate::key_history::State;
use crate::store::{Store, Writer};

/// etcd's largest TTL (`lease.MaxLeaseTTL`), in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// One lease, as the table answers it: a view of what [`Leases`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// What was left at the last checkpoint or renewal, in milliseconds.
    pub remaining_ms: i64,
    /// Keep-alives applied since the grant.
    pub renewals: u64,
    /// Keys whose current value carries this lease.
    pub keys: LeaseKeys<'a>,
}

/// The keys attached to one lease (none for most leases, which then cost nothing here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseKeys<'a>(Option<&'a OrdSet<Bytes>>);

impl<'a> LeaseKeys<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.0.into_iter().flat_map(|keys| keys.iter())
    }

    pub fn len(&self) -> usize {
        self.0.map_or(0, OrdSet::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.0.is_some_and(|keys| keys.contains(key))
    }
}

impl<'a> IntoIterator for &LeaseKeys<'a> {
    type Item = &'a Bytes;
    type IntoIter = Box<dyn Iterator<Item = &'a Bytes> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// What the table keeps for each lease besides its ID (the map's key): 24 bytes, no heap
/// allocation of its own. Issue 14 budgets 128 B per live lease for this table and the
/// lease clock together (crates/mvcc/tests/lease_bytes.rs counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Terms {
    pub(crate) ttl: i64,
    pub(crate) remaining_ms: i64,
    pub(crate) renewals: u64,
}

/// What one apply did to leases: the input of each member's expiry clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// Granted or kept alive: `ttl_ms` from now.
    Renewed { id: i64, renewals: u64, ttl_ms: i64 },
    /// The leader recorded that the lease had at most `remaining_ms` left.
    Checkpointed {
        id: i64,
        renewals: u64,
        remaining_ms: i64,
    },
    /// Revoked or expired.
    Removed { id: i64 },
}

/// Every lease, by ID (persistent maps: see [`Store::view`]). The attached keys live in a
/// second map that holds only the leases with keys, so that a lease without keys (most of
/// them: a session, a lock not yet taken) costs one 32-byte slot in `by_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    by_id: OrdMap<i64, Terms>,
    /// Never holds an empty set (so that equal tables compare equal).
    keys: OrdMap<i64, OrdSet<Bytes>>,
}

impl Leases {
    pub fn get(&self, id: i64) -> Option<Lease<'_>> {
        self.by_id.get(&id).map(|t| self.view(id, t))
    }

    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Every lease, in ascending ID order.
    pub fn iter(&self) -> impl Iterator<Item = Lease<'_>> {
        self.by_id.iter().map(|(id, t)| self.view(*id, t))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn view(&self, id: i64, t: &Terms) -> Lease<'_> {
        Lease {
            id,
            ttl: t.ttl,
            remaining_ms: t.remaining_ms,
            renewals: t.renewals,
            keys: LeaseKeys(self.keys.get(&id)),
        }
    }

    /// Adds a lease without keys; `false` (and nothing changed) if the ID is taken.
    pub(crate) fn insert(&mut self, id: i64, terms: Terms) -> bool {
        if self.by_id.contains_key(&id) {
            return false;
        }
        self.by_id.insert(id, terms);
        true
    }

    pub(crate) fn terms_mut(&mut self, id: i64) -> Option<&mut Terms> {
        self.by_id.get_mut(&id)
    }

    /// Forgets lease `id` and its key set; whether it existed.
    pub(crate) fn remove(&mut self, id: i64) -> bool {
        self.keys.remove(&id);
        self.by_id.remove(&id).is_some()
    }

    /// Attaches `key` to lease `id`, if that lease exists.
    fn attach(&mut self, key: &Bytes, id: i64) {
        if self.by_id.contains_key(&id) {
            self.keys.entry(id).or_default().insert(key.clone());
        }
    }

    /// Moves `key` from lease `from` to lease `to` (0 = none).
    pub(crate) fn reattach(&mut self, key: &Bytes, from: i64, to: i64) {
        if from == to {
            return;
        }
        if let Some(keys) = self.keys.get_mut(&from) {
            keys.remove(key);
            if keys.is_empty() {
                self.keys.remove(&from);
            }
        }
        self.attach(key, to);
    }
}

impl Store {
    /// The leases that exist.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// What the last [`Store::apply`] did to leases.
    pub fn last_lease_changes(&self) -> &[LeaseChange] {
        &self.last_lease_changes
    }

    pub(crate) fn apply_lease_grant(
        &mut self,
        req: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, MvccError> {
        if req.ttl > MAX_LEASE_TTL {
            return Err(MvccError::LeaseTtlTooLarge);
        }
        if req.id == 0 {
            // The proposer picks an ID for 0; one that reaches the log is a bug, answered
            // as etcd's lessor answers it.
            return Err(MvccError::LeaseNotFound);
        }
        if self.leases.contains(req.id) {
            return Err(MvccError::LeaseExists);
        }
        let ttl = req.ttl.max(1);
        let ttl_ms = ttl.saturating_mul(1000);
        self.leases.insert(
            req.id,
            Terms {
                ttl,
                remaining_ms: ttl_ms,
                renewals: 0,
            },
        );
        self.last_lease_changes.push(LeaseChange::Renewed {
            id: req.id,
            renewals: 0,
            ttl_ms,
        });
        Ok(LeaseGrantResponse {
            header: Some(header(self.current)),
            id: req.id,
            ttl,
            error: String::new(),
        })
    }

    pub(crate) fn apply_lease_revoke(
        &mut self,
        req: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        if !self.leases.contains(req.id) {
            return Err(MvccError::LeaseNotFound);
        }
        let rev = self.revoke_leases(&[req.id]);
        Ok(LeaseRevokeResponse {
            header: Some(header(rev)),
        })
    }

    pub(crate) fn apply_lease_keep_alive(
        &mut self,
        req: &LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse, MvccError> {
        let ttl = self.renew(req.id).ok_or(MvccError::LeaseNotFound)?;
        Ok(LeaseKeepAliveResponse {
            header: Some(header(self.current)),
            id: req.id,
            ttl,
        })
    }

    /// Renews each lease of the batch in order, exactly as one keep-alive entry per ID
    /// would. Returns each ID's granted TTL in seconds, or 0 for an unknown lease: one
    /// lease revoked meanwhile must not fail the renewals of the others in the batch.
    pub(crate) fn apply_lease_keep_alives(&mut self, req: &LeaseKeepAlives) -> Vec<i64> {
        req.ids
            .iter()
            .map(|&id| self.renew(id).unwrap_or(0))
            .collect()
    }

    /// One renewal of lease `id`: a full TTL from now and one more renewal counted (so a
    /// leader's decision taken before it no longer holds). The granted TTL, or `None` for
    /// an unknown lease.
    fn renew(&mut self, id: i64) -> Option<i64> {
        let lease = self.leases.terms_mut(id)?;
        lease.renewals += 1;
        lease.remaining_ms = lease.ttl.saturating_mul(1000);
        self.last_lease_changes.push(LeaseChange::Renewed {
            id,
            renewals: lease.renewals,
            ttl_ms: lease.remaining_ms,
        });
        Some(lease.ttl)
    }

    /// Records remaining TTLs; stale ones (another term, or the lease renewed since) are
    /// skipped. Returns how many were recorded.
    pub(crate) fn apply_lease_checkpoints(
        &mut self,
        req: &LeaseCheckpoints,
        entry_term: u64,
    ) -> usize {
        let mut recorded = 0;
        for cp in &req.checkpoints {
            let Some(at) = &cp.lease else { continue };
            let Some(lease) = self.leases.terms_mut(at.id) else {
                continue;
            };
            // No log entry has term 0: `Store::apply` (no term known) never passes this.
            if !decision_holds(req.term, entry_term, at.renewals, lease.renewals) {
                continue;
            }
            let cap = lease.ttl.saturating_mul(1000);
            lease.remaining_ms = cp.remaining_ms.clamp(0, cap);
            self.last_lease_changes.push(LeaseChange::Checkpointed {
                id: at.id,
                renewals: lease.renewals,
                remaining_ms: lease.remaining_ms,
            });
            recorded += 1;
        }
        recorded
    }

    /// Revokes the leases the leader found expired, unless the decision is stale. Returns
    /// the IDs revoked.
    pub(crate) fn apply_lease_expiry(&mut self, req: &LeaseExpiry, entry_term: u64) -> Vec<i64> {
        // No log entry has term 0: `Store::apply` (no term known) never passes the guard.
        let doomed: Vec<i64> = req
            .leases
            .iter()
            .filter(|at| {
                self.leases
                    .get(at.id)
                    .is_some_and(|l| decision_holds(req.term, entry_term, at.renewals, l.renewals))
            })
            .map(|at| at.id)
            .collect();
        self.revoke_leases(&doomed);
        doomed
    }

    /// Deletes every key attached to `ids` in one revision (one DELETE event per key) and
    /// forgets the leases. Returns the revision current afterwards.
    fn revoke_leases(&mut self, ids: &[i64]) -> i64 {
        // The doomed leases' key sets leave the table first: deleting a key would detach it
        // from its lease's set (a copy-on-write edit per key) only for the set to be
        // dropped with the lease below (~5 % of a revoke in the store,
        // `examples/lease_expiry.rs`).
        let mut doomed: BTreeSet<Bytes> = BTreeSet::new();
        for id in ids {
            if let Some(keys) = self.leases.keys.remove(id) {
                doomed.extend(keys);
            }
        }
        let mut writer = Writer::begin(self);
        for key in &doomed {
            writer.delete_key(key);
        }
        let rev = writer.commit();
        for id in ids {
            if self.leases.remove(*id) {
                self.last_lease_changes
                    .push(LeaseChange::Removed { id: *id });
            }
        }
        rev
    }

    /// Rebuilds every lease's key set from the keys' current values (after a restore).
    pub(crate) fn rebuild_lease_keys(&mut self) -> Result<(), &'static str> {
        self.leases.keys = OrdMap::new();
        for (key, history) in &self.keys {
            if let Some(entry) = history.latest() {
                if let State::Live(live) = &entry.state {
                    if live.lease != 0 {
                        if !self.leases.contains(live.lease) {
                            return Err("a key is attached to a lease that does not exist");
                        }
                        self.leases.attach(key, live.lease);
                    }
                }
            }
        }
        Ok(())
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}
