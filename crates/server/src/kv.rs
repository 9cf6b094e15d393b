//! The etcd MVCC store as the node's state machine: entries carry encoded
//! `raftkvpb::InternalRequest`s; applying one yields the etcd response (or etcd error)
//! that the proposing client receives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mvcc::auth::AuthApplied;
use mvcc::{LeaseChange, MvccError, Response, Store};
use node::lessor::{LeaseAt, Lessor};
use prost::Message as _;
use proto::raftkvpb::InternalRequest;
use raft::{Entry, EntryKind};

use crate::auth::tokens::SimpleTokens;
use crate::node::StateMachine;
use crate::watch::WatchHub;

/// The replicated store. Entries that are not client requests (no-ops, membership)
/// produce no output. Every apply that changed the store hands its events to the watch
/// hub, still under the state machine's write lock (the hub never blocks; `crate::watch`).
/// Every lease change it applies sets this member's lease clock (`lessor`, read with
/// [`MvccMachine::now`]); the leader acts on it (`crate::lease_expiry`).
///
/// It also keeps this member's simple auth tokens current: applying a replicated
/// `Authenticate` teaches it the token `<prefix>.<entry index>` (and the apply output
/// carries that full token back to the proposer); deleting a user or changing its
/// password forgets its tokens; disabling auth forgets them all (crate::auth::tokens).
pub struct MvccMachine {
    pub store: Store,
    pub watch: Arc<WatchHub>,
    pub tokens: Arc<SimpleTokens>,
    pub lessor: Lessor,
    epoch: Instant,
}

impl Default for MvccMachine {
    fn default() -> Self {
        MvccMachine {
            store: Store::default(),
            watch: Arc::default(),
            tokens: Arc::default(),
            lessor: Lessor::new(),
            epoch: Instant::now(),
        }
    }
}

impl MvccMachine {
    /// The lease clock's time: since this machine was made.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Seconds left on lease `id` by this member's clock, never above its granted TTL;
    /// `None` for an unknown lease.
    pub fn lease_remaining_secs(&self, id: i64) -> Option<i64> {
        let lease = self.store.leases().get(id)?;
        let left = self
            .lessor
            .remaining(id, self.now())
            .unwrap_or(Duration::from_millis(lease.remaining_ms.max(0) as u64));
        Some((left.as_secs() as i64).min(lease.ttl))
    }

    fn follow_lease_changes(&mut self) {
        let now = self.now();
        for change in self.store.last_lease_changes() {
            match *change {
                LeaseChange::Renewed {
                    id,
                    renewals,
                    ttl_ms,
                } => self.lessor.renewed(id, renewals, millis(ttl_ms), now),
                LeaseChange::Checkpointed {
                    id,
                    renewals,
                    remaining_ms,
                } => self
                    .lessor
                    .checkpointed(id, renewals, millis(remaining_ms), now),
                LeaseChange::Removed { id } => self.lessor.removed(id),
            }
        }
    }

    fn reset_lessor(&mut self) {
        let now = self.now();
        let leases = self.store.leases().iter().map(|l| {
            (
                LeaseAt {
                    id: l.id,
                    renewals: l.renewals,
                },
                millis(l.remaining_ms),
            )
        });
        let mut lessor = Lessor::new();
        lessor.reset(leases, now);
        self.lessor = lessor;
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

impl MvccMachine {
    /// Token bookkeeping after an auth change was applied (see the type's doc).
    fn follow_auth_change(
        &self,
        req: &InternalRequest,
        out: Result<Response, MvccError>,
        index: u64,
    ) -> Result<Response, MvccError> {
        use proto::raftkvpb::internal_request::Request as R;
        match (out, &req.request) {
            (Ok(Response::Auth(AuthApplied::Authenticated { name, token })), _) => {
                let token = format!("{token}.{index}");
                self.tokens
                    .assign(token.clone(), name.clone(), std::time::Instant::now());
                Ok(Response::Auth(AuthApplied::Authenticated { name, token }))
            }
            (Ok(out), Some(R::UserDelete(r))) => {
                self.tokens.invalidate_user(&r.name);
                Ok(out)
            }
            (Ok(out), Some(R::UserChangePassword(r))) => {
                self.tokens.invalidate_user(&r.name);
                Ok(out)
            }
            (Ok(out), Some(R::AuthDisable(_))) => {
                self.tokens.clear();
                Ok(out)
            }
            (out, _) => out,
        }
    }
}

impl StateMachine for MvccMachine {
    type Output = Result<Response, MvccError>;

    fn apply(&mut self, entry: &Entry) -> Option<Self::Output> {
        if entry.kind != EntryKind::Normal {
            return None;
        }
        // Every member decodes the same bytes, so a malformed entry fails identically
        // everywhere and changes nothing.
        let out = match InternalRequest::decode(entry.data.as_ref()) {
            Ok(req) => {
                let out = self.store.apply_entry(&req, entry.term);
                self.follow_auth_change(&req, out, entry.index)
            }
            Err(e) => Err(MvccError::Internal(format!(
                "undecodable log entry {}: {e}",
                entry.index
            ))),
        };
        if let Ok(applied) = &out {
            count(applied);
        }
        if !self.store.last_lease_changes().is_empty() {
            self.follow_lease_changes();
        }
        if out.is_ok() {
            let events = self.store.last_events();
            if !events.is_empty() {
                self.watch.publish(self.store.current_revision(), events);
            }
        }
        Some(out)
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(self.store.snapshot())
    }

    fn restore(&mut self, image: &Bytes) -> anyhow::Result<()> {
        let unpublished = self.store.current_revision() + 1;
        self.store = Store::restore(image)
            .map_err(|e| anyhow::anyhow!("cannot restore the store from a snapshot: {e:?}"))?;
        self.reset_lessor();
        // Revisions the snapshot skipped were never published: watchers catch up from the
        // restored history (or learn it was compacted).
        self.watch.restored(unpublished);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.store.approximate_size()
    }
}

/// etcd's `etcd_mvcc_{put,delete,txn}_total`: writes this member applied, by request
/// (a put inside a txn counts as the txn).
fn count(applied: &Response) {
    let m = crate::metrics::metrics();
    match applied {
        Response::Put(_) => m.put_total.inc(),
        Response::DeleteRange(_) => m.delete_total.inc(),
        Response::Txn(_) => m.txn_total.inc(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::PutRequest;
    use proto::raftkvpb::internal_request::Request;

    fn put_entry(index: u64, key: &'static [u8]) -> Entry {
        let req = InternalRequest {
            auth: None,
            request: Some(Request::Put(PutRequest {
                key: Bytes::from_static(key),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        };
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(req.encode_to_vec()),
        }
    }

    #[test]
    fn applies_requests_skips_noops_and_survives_garbage() {
        let mut m = MvccMachine::default();
        assert!(m
            .apply(&Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Noop,
                data: Bytes::new()
            })
            .is_none());
        match m.apply(&put_entry(2, b"k")) {
            Some(Ok(Response::Put(r))) => assert_eq!(r.header.unwrap().revision, 2),
            other => panic!("unexpected {other:?}"),
        }
        let garbage = Entry {
            term: 1,
            index: 3,
            kind: EntryKind::Normal,
            data: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert!(matches!(
            m.apply(&garbage),
            Some(Err(MvccError::Internal(_)))
        ));
        assert_eq!(m.store.current_revision(), 2);
    }

    fn entry(index: u64, term: u64, request: Request) -> Entry {
        Entry {
            term,
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

    /// Applied lease changes reach the member's lease clock; a restored snapshot starts it
    /// from each lease's recorded remaining time, never from a fresh full TTL.
    #[test]
    fn applies_set_the_lease_clock_and_a_restore_keeps_the_checkpointed_time() {
        use proto::etcdserverpb::LeaseGrantRequest;
        use proto::raftkvpb::{LeaseAt, LeaseCheckpointAt, LeaseCheckpoints};
        let mut m = MvccMachine::default();
        m.apply(&entry(
            1,
            1,
            Request::LeaseGrant(LeaseGrantRequest { ttl: 600, id: 7 }),
        ));
        assert!(m.lease_remaining_secs(7).unwrap() >= 599);
        m.apply(&entry(
            2,
            1,
            Request::LeaseCheckpoints(LeaseCheckpoints {
                term: 1,
                checkpoints: vec![LeaseCheckpointAt {
                    lease: Some(LeaseAt { id: 7, renewals: 0 }),
                    remaining_ms: 30_000,
                }],
            }),
        ));
        let left = m.lease_remaining_secs(7).unwrap();
        assert!((29..=30).contains(&left), "{left}");
        let mut other = MvccMachine::default();
        other.restore(&m.snapshot()).unwrap();
        let left = other.lease_remaining_secs(7).unwrap();
        assert!((29..=30).contains(&left), "{left}");
        assert_eq!(other.lessor.len(), 1);
        assert_eq!(m.lease_remaining_secs(8), None);
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let mut m = MvccMachine::default();
        m.apply(&put_entry(1, b"a"));
        m.apply(&put_entry(2, b"b"));
        let image = m.snapshot();
        let mut other = MvccMachine::default();
        other.restore(&image).unwrap();
        assert!(other.store == m.store);
        assert!(other.restore(&Bytes::from_static(b"nonsense")).is_err());
    }
}
