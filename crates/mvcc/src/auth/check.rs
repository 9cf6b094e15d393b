//! Which keys a request touches and whether its user may touch them (etcd's
//! `isOpPermitted` and `authApplierV3`, plus what etcd 3.5 learned since: a `prev_kv` is a
//! read, also inside a txn, and nested txns are checked operation by operation).
//!
//! The same checks run in two places: on the member that receives a read (ranges,
//! read-only txns, watches), and at apply time for everything in the log, against the
//! auth state at that index and with the revision the request was checked with.

use proto::authpb::permission::Type as PermType;
use proto::etcdserverpb::{request_op, RequestOp, TxnRequest};
use proto::raftkvpb::{internal_request::Request, RequestAuth};

use super::perms::{covered, grants, KeyInterval};
use super::{AuthError, AuthStore, ROOT};

/// Checks the requests of one identity against one state of the auth store.
pub struct RequestChecker<'a> {
    pub store: &'a AuthStore,
    pub who: Option<&'a RequestAuth>,
}

impl<'a> RequestChecker<'a> {
    pub fn new(store: &'a AuthStore, who: Option<&'a RequestAuth>) -> Self {
        RequestChecker { store, who }
    }

    /// etcd's `isOpPermitted`: `want` on the keys `[key, range_end)` (one key when
    /// `range_end` is empty, every key from `key` when it is `"\0"`).
    pub fn permitted(&self, key: &[u8], range_end: &[u8], want: PermType) -> Result<(), AuthError> {
        let store = self.store;
        if !store.enabled {
            return Ok(());
        }
        let who = match self.who {
            Some(w) if w.auth_revision != 0 && !w.username.is_empty() => w,
            _ => return Err(AuthError::UserEmpty),
        };
        if who.auth_revision < store.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = store
            .users
            .get(&who.username)
            .ok_or(AuthError::PermissionDenied)?;
        if user.roles.contains(ROOT) {
            return Ok(());
        }
        let granted: Vec<KeyInterval> = user
            .roles
            .iter()
            .filter_map(|r| store.roles.get(r))
            .flatten()
            .filter(|p| grants(p, want))
            .map(|p| KeyInterval::of(&p.key, &p.range_end))
            .collect();
        if covered(&granted, &KeyInterval::of(key, range_end)) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    pub fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.permitted(key, range_end, PermType::Read)
    }

    pub fn write(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.permitted(key, range_end, PermType::Write)
    }

    /// For the lease service: revoking a lease deletes its keys, so the caller needs write
    /// permission on each of them (etcd's `checkLeasePuts`); an administrator always may.
    pub fn write_keys<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<(), AuthError> {
        if self.store.check_admin(self.who).is_ok() {
            return Ok(());
        }
        keys.into_iter().try_for_each(|k| self.write(k, &[]))
    }

    /// Every compare of a txn is a read; every operation in either branch is checked as if
    /// it were sent alone, nested txns included.
    pub fn txn(&self, txn: &TxnRequest) -> Result<(), AuthError> {
        for c in &txn.compare {
            self.read(&c.key, &c.range_end)?;
        }
        txn.success
            .iter()
            .chain(&txn.failure)
            .try_for_each(|op| self.txn_op(op))
    }

    fn txn_op(&self, op: &RequestOp) -> Result<(), AuthError> {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => self.read(&r.key, &r.range_end),
            Some(request_op::Request::RequestPut(p)) => {
                if p.prev_kv {
                    self.read(&p.key, &[])?;
                }
                self.write(&p.key, &[])
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                if d.prev_kv {
                    self.read(&d.key, &d.range_end)?;
                }
                self.write(&d.key, &d.range_end)
            }
            Some(request_op::Request::RequestTxn(t)) => self.txn(t),
            None => Ok(()),
        }
    }
}

/// The check applied to a log entry before it is applied: key permissions for KV requests,
/// administrator rights for auth management. Compaction is open to everyone and the
/// replicated half of `Authenticate` checks itself, as in etcd 3.4.
pub fn check_request(
    store: &AuthStore,
    who: Option<&RequestAuth>,
    request: &Request,
) -> Result<(), AuthError> {
    let checker = RequestChecker::new(store, who);
    match request {
        Request::Put(p) => {
            if p.prev_kv {
                checker.read(&p.key, &[])?;
            }
            checker.write(&p.key, &[])
        }
        Request::DeleteRange(d) => {
            if d.prev_kv {
                checker.read(&d.key, &d.range_end)?;
            }
            checker.write(&d.key, &d.range_end)
        }
        Request::Txn(t) => checker.txn(t),
        Request::Compaction(_) | Request::Authenticate(_) => Ok(()),
        // As etcd: granting and keeping alive need no permission; a revocation needs write
        // access to every attached key, which only the store knows (`Store::apply_entry`).
        // Checkpoints and expiries are the leader's own entries, and alarms and member
        // attributes are proposed by members themselves (no client can send either).
        Request::LeaseGrant(_)
        | Request::LeaseRevoke(_)
        | Request::LeaseKeepAlive(_)
        | Request::LeaseKeepAlives(_)
        | Request::LeaseCheckpoints(_)
        | Request::LeaseExpiry(_)
        | Request::Alarm(_)
        | Request::MemberAttributes(_) => Ok(()),
        Request::AuthEnable(_)
        | Request::AuthDisable(_)
        | Request::UserAdd(_)
        | Request::UserDelete(_)
        | Request::UserChangePassword(_)
        | Request::UserGrantRole(_)
        | Request::UserRevokeRole(_)
        | Request::RoleAdd(_)
        | Request::RoleDelete(_)
        | Request::RoleGrantPermission(_)
        | Request::RoleRevokePermission(_)
        | Request::MemberUpdate(_) => store.check_admin(who),
        // Which incarnation a peer is admitted with is the cluster's identity, not data:
        // an administrator's call, like auth management.
        Request::AdmitPeer(_) => store.check_admin(who),
    }
}
