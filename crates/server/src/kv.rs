//! The etcd MVCC store as the node's state machine: entries carry encoded
//! `raftkvpb::InternalRequest`s; applying one yields the etcd response (or etcd error)
//! that the proposing client receives.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mvcc::auth::AuthApplied;
use mvcc::{LeaseChange, MvccError, Response, Store};
use node::lessor::LeaseAt;
use prost::Message as _;
use proto::raftkvpb::internal_request::Request as Internal;
use proto::raftkvpb::InternalRequest;
use raft::{Entry, EntryKind};

use crate::auth::tokens::SimpleTokens;
use crate::lease_clock::LeaseClock;
use crate::members::MemberList;
use crate::node::{ChangeRefusal, StateMachine};
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
///
/// And it holds the replicated member list (`crate::members`): `ConfChange` entries change
/// it, so every member answers `MemberList` alike, and it travels in the snapshot next to
/// the store's image (see [`envelope`]).
#[derive(Default)]
pub struct MvccMachine {
    pub store: Store,
    pub watch: Arc<WatchHub>,
    pub tokens: Arc<SimpleTokens>,
    /// Shared with the keep-alive fast path (`crate::lease_clock`).
    pub lessor: LeaseClock,
    pub members: MemberList,
    /// The peer transport's record of peers' incarnations, which an applied
    /// `raftkv peer admit` (field 41) overwrites; `None` where no transport runs (tests).
    pub incarnations: Option<Arc<crate::transport::Incarnations>>,
    /// The list a snapshot without one restores to: the `--initial-cluster` members (such
    /// snapshots were written before the list was replicated, when the membership was
    /// fixed at bootstrap).
    members_seed: MemberList,
    /// Members whose peer URLs changed since the node thread last asked
    /// ([`StateMachine::take_peer_url_changes`]): its transport must redial them.
    peer_url_changes: Vec<(u64, Vec<String>)>,
}

/// The state machine's snapshot: the store's image and the member list side by side.
///
/// ```text
/// magic    8 bytes  "RKVSM01\0"
/// store    u64 LE length, then the store's image (mvcc::snapshot, which checksums itself)
/// members  the rest: MemberList::encode
/// ```
///
/// Why an envelope rather than a section of the store's format: the member list is the
/// server's state, not the store's, and `Maintenance/Snapshot` backups carry the store's
/// image alone (etcd's restore makes a new membership from flags, and so does raftkv's).
/// A bare store image (every snapshot written before the list was replicated) still
/// restores: the store's own magic tells it apart, and the list is the seed.
pub mod envelope {
    use crate::members::MemberList;

    pub const MAGIC: &[u8; 8] = b"RKVSM01\0";

    pub fn encode(store: &[u8], members: &MemberList) -> Vec<u8> {
        let list = members.encode();
        let mut out = Vec::with_capacity(16 + store.len() + list.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(store.len() as u64).to_le_bytes());
        out.extend_from_slice(store);
        out.extend_from_slice(&list);
        out
    }

    /// The store's image and the list, or `None` for a bare store image. Bad bytes are an
    /// error, never a panic.
    pub fn decode(data: &[u8]) -> anyhow::Result<(&[u8], Option<MemberList>)> {
        let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
            return Ok((data, None));
        };
        if rest.len() < 8 {
            anyhow::bail!("state machine snapshot: truncated store length");
        }
        let (len, rest) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        if len > rest.len() as u64 {
            anyhow::bail!("state machine snapshot: truncated store image");
        }
        let (store, list) = rest.split_at(len as usize);
        let list = MemberList::decode(list).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((store, Some(list)))
    }
}

impl MvccMachine {
    /// Start from the `--initial-cluster` member list (also what a snapshot without a list
    /// restores to).
    pub fn seed_members(&mut self, list: MemberList) {
        self.members = list.clone();
        self.members_seed = list;
    }

    /// A committed membership change: every member applies the same ones in the same
    /// order, so a change the list refuses is refused everywhere alike (the core has
    /// changed its configuration regardless; the list only holds attributes).
    fn apply_conf_change(&mut self, entry: &Entry) {
        let applied = raft::ConfChange::decode(&entry.data)
            .map_err(|e| e.to_string())
            .and_then(|cc| self.members.apply(&cc).map_err(|e| e.to_string()));
        if let Err(e) = applied {
            tracing::warn!(
                index = entry.index,
                error = %e,
                "membership change left the member list unchanged"
            );
        }
    }

    /// A committed `MemberUpdate`: the member's new peer URLs, checked again against the
    /// list as applied so far (so every member refuses the same updates alike). The answer
    /// is etcd's code and text for a refusal.
    fn apply_member_update(
        &mut self,
        req: &proto::etcdserverpb::MemberUpdateRequest,
    ) -> Result<(), (i32, String)> {
        match self.members.update_peer_urls(req.id, &req.peer_ur_ls) {
            Ok(()) => {
                let urls = self.peer_urls(req.id);
                self.peer_url_changes.push((req.id, urls));
                Ok(())
            }
            Err(e) => {
                let st = e.to_status();
                Err((st.code() as i32, st.message().to_string()))
            }
        }
    }

    /// The lease clock's time: since this machine was made.
    pub fn now(&self) -> Duration {
        self.lessor.now()
    }

    /// Seconds left on lease `id` by this member's clock, never above its granted TTL;
    /// `None` for an unknown lease.
    pub fn lease_remaining_secs(&self, id: i64) -> Option<i64> {
        let lease = self.store.leases().get(id)?;
        let left = self
            .lessor
            .lessor()
            .remaining(id, self.now())
            .unwrap_or(Duration::from_millis(lease.remaining_ms.max(0) as u64));
        Some((left.as_secs() as i64).min(lease.ttl))
    }

    fn follow_lease_changes(&mut self) {
        let now = self.now();
        let mut lessor = self.lessor.lessor();
        for change in self.store.last_lease_changes() {
            match *change {
                LeaseChange::Renewed {
                    id,
                    renewals,
                    ttl_ms,
                } => lessor.renewed(id, renewals, millis(ttl_ms), now),
                LeaseChange::Checkpointed {
                    id,
                    renewals,
                    remaining_ms,
                } => lessor.checkpointed(id, renewals, millis(remaining_ms), now),
                LeaseChange::Removed { id } => lessor.removed(id),
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
                Duration::from_secs(l.ttl.max(0) as u64),
            )
        });
        self.lessor.lessor().reset(leases, now);
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

impl MvccMachine {
    /// An applied `raftkv peer admit`: every member records the operator's incarnation for
    /// that peer (the record is local, so this is the only place it changes by the log). The
    /// incarnation is a secret of the peer's and is never logged.
    fn follow_admission(&self, out: &Result<Response, MvccError>) {
        let Ok(Response::AdmitPeer {
            member_id,
            incarnation,
        }) = out
        else {
            return;
        };
        let Some(incarnations) = &self.incarnations else {
            return;
        };
        match incarnations.admit(*member_id, *incarnation) {
            Ok(()) => tracing::warn!(
                member = format_args!("{member_id:x}"),
                "an operator admitted this member with a new incarnation; connections under \
                 any other incarnation are closed"
            ),
            Err(e) => tracing::error!(
                member = format_args!("{member_id:x}"),
                error = %e,
                "could not record an operator's admission on disk; it holds until this \
                 member restarts"
            ),
        }
    }
}

impl StateMachine for MvccMachine {
    type Output = Result<Response, MvccError>;

    fn apply(&mut self, entry: &Entry) -> Option<Self::Output> {
        if entry.kind == EntryKind::ConfChange {
            // The proposer is answered by the node thread, which knows it waits for a
            // change (crate::node), so there is no output here.
            self.apply_conf_change(entry);
            return None;
        }
        if entry.kind != EntryKind::Normal {
            return None;
        }
        // Every member decodes the same bytes, so a malformed entry fails identically
        // everywhere and changes nothing.
        let out = match InternalRequest::decode(entry.data.as_ref()) {
            Ok(InternalRequest {
                request: Some(Internal::MemberUpdate(update)),
                ..
            }) => Ok(Response::External(self.apply_member_update(&update))),
            Ok(req) => {
                let out = self.store.apply_entry(&req, entry.term);
                self.follow_admission(&out);
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
        self.lessor.set_revision(self.store.current_revision());
        if out.is_ok() {
            let events = self.store.last_events();
            if !events.is_empty() {
                self.watch.publish(self.store.current_revision(), events);
            }
        }
        Some(out)
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(envelope::encode(&self.store.snapshot(), &self.members))
    }

    fn restore(&mut self, image: &Bytes) -> anyhow::Result<()> {
        let unpublished = self.store.current_revision() + 1;
        let (store, members) = envelope::decode(image)?;
        self.store = Store::restore(store)
            .map_err(|e| anyhow::anyhow!("cannot restore the store from a snapshot: {e:?}"))?;
        self.members = members.unwrap_or_else(|| self.members_seed.clone());
        // The transport takes every member's URLs from the new list (the node thread's
        // `install_snapshot`); changes recorded before it are moot.
        self.peer_url_changes.clear();
        self.reset_lessor();
        self.lessor.set_revision(self.store.current_revision());
        // Revisions the snapshot skipped were never published: watchers catch up from the
        // restored history (or learn it was compacted).
        self.watch.restored(unpublished);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.store.approximate_size()
    }

    /// The member list's checks, with etcd's errors: removing or promoting an unknown
    /// member, adding one whose id or peer URLs are taken, too many learners.
    fn check_conf_change(&self, cc: &raft::ConfChange) -> Result<(), ChangeRefusal> {
        use raft::ConfChangeKind as K;
        let list = &self.members;
        let checked = match cc.kind {
            K::Remove => list.check_remove(cc.node),
            K::AddVoter if list.get(cc.node).is_some() || cc.context.is_empty() => {
                list.check_promote(cc.node)
            }
            K::AddVoter | K::AddLearner => {
                match proto::etcdserverpb::Member::decode(cc.context.as_ref()) {
                    // A voter joins as a learner first: the context says which it is.
                    Ok(m) => list.check_add(
                        cc.node,
                        &m.peer_ur_ls,
                        m.is_learner,
                        crate::members::DEFAULT_MAX_LEARNERS,
                    ),
                    Err(e) => Err(crate::members::MemberError::BadContext(e.to_string())),
                }
            }
        };
        checked.map_err(|e| {
            let st = e.to_status();
            ChangeRefusal {
                retry: false,
                code: st.code() as i32,
                message: st.message().to_string(),
            }
        })
    }

    fn awaits_promotion(&self, id: u64) -> bool {
        self.members.get(id).is_some_and(|m| !m.is_learner)
    }

    fn peer_urls(&self, id: u64) -> Vec<String> {
        self.members
            .get(id)
            .map(|m| m.peer_urls.clone())
            .unwrap_or_default()
    }

    fn is_removed(&self, id: u64) -> bool {
        self.members.is_removed(id)
    }

    fn take_peer_url_changes(&mut self) -> Vec<(u64, Vec<String>)> {
        std::mem::take(&mut self.peer_url_changes)
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
        assert_eq!(other.lessor.lessor().len(), 1);
        assert_eq!(m.lease_remaining_secs(8), None);
    }

    fn seeded() -> MvccMachine {
        let mut m = MvccMachine::default();
        m.seed_members(MemberList::from_initial(&[
            crate::config::InitialMember {
                id: 1,
                name: "a".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
            },
            crate::config::InitialMember {
                id: 2,
                name: "b".into(),
                peer_urls: vec!["http://127.0.0.1:2381".into()],
            },
        ]));
        m
    }

    fn conf_entry(index: u64, cc: raft::ConfChange) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::ConfChange,
            data: cc.encode(),
        }
    }

    /// Membership changes reach the list (and only valid ones change it); the list travels
    /// in the snapshot; a bare store image, as written before the list was replicated,
    /// restores with the seed list.
    #[test]
    fn conf_changes_change_the_member_list_which_survives_a_snapshot() {
        use crate::members::{encode_context, MemberRecord};
        use raft::{ConfChange, ConfChangeKind};
        let mut m = seeded();
        let seed = m.members.clone();
        m.apply(&put_entry(1, b"k"));
        let rec = MemberRecord {
            id: 3,
            name: String::new(),
            peer_urls: vec!["http://127.0.0.1:2382".into()],
            client_urls: vec![],
            is_learner: true,
        };
        let add = ConfChange {
            kind: ConfChangeKind::AddLearner,
            node: 3,
            context: encode_context(&rec),
        };
        assert!(m.apply(&conf_entry(2, add)).is_none());
        let remove = |node| ConfChange {
            kind: ConfChangeKind::Remove,
            node,
            context: Bytes::new(),
        };
        m.apply(&conf_entry(3, remove(1)));
        // Not a member: refused alike everywhere, nothing changes.
        m.apply(&conf_entry(4, remove(9)));
        let undecodable = Entry {
            data: Bytes::from_static(b"x"),
            ..conf_entry(5, remove(2))
        };
        m.apply(&undecodable);
        let ids: Vec<u64> = m.members.members().map(|r| r.id).collect();
        assert_eq!(ids, vec![2, 3]);
        assert!(m.members.get(3).unwrap().is_learner);
        assert!(m.members.is_removed(1));

        let mut other = seeded();
        other.restore(&m.snapshot()).unwrap();
        assert_eq!(other.members, m.members);
        assert!(other.store == m.store);

        let mut old = seeded();
        old.members = MemberList::default();
        old.restore(&Bytes::from(m.store.snapshot())).unwrap();
        assert_eq!(old.members, seed);
        assert!(old.store == m.store);

        // A damaged envelope is refused and changes nothing.
        let image = m.snapshot();
        for cut in [8, 12, image.len() - 1] {
            let mut fresh = seeded();
            assert!(fresh.restore(&image.slice(..cut)).is_err(), "cut {cut}");
            assert_eq!(fresh.members, seed);
        }
    }

    /// A `MemberUpdate` entry changes the list (checked again at apply, with etcd's
    /// answers), tells the transport whom to redial, leaves the store alone, and its result
    /// survives a snapshot.
    #[test]
    fn member_updates_change_peer_urls_through_the_log() {
        use proto::etcdserverpb::MemberUpdateRequest;
        let update = |id, url: &str| {
            Request::MemberUpdate(MemberUpdateRequest {
                id,
                peer_ur_ls: vec![url.to_string()],
            })
        };
        let mut m = seeded();
        let revision = m.store.current_revision();
        let out = m.apply(&entry(1, 1, update(2, "http://127.0.0.1:2481")));
        assert!(matches!(out, Some(Ok(Response::External(Ok(()))))));
        assert_eq!(
            m.members.get(2).unwrap().peer_urls,
            vec!["http://127.0.0.1:2481".to_string()]
        );
        assert_eq!(
            m.take_peer_url_changes(),
            vec![(2, vec!["http://127.0.0.1:2481".to_string()])]
        );
        assert!(m.take_peer_url_changes().is_empty());
        assert_eq!(m.store.current_revision(), revision);

        // Member 1's URL, an unknown member: refused alike everywhere, nothing changes.
        let before = m.members.clone();
        let Some(Ok(Response::External(Err((code, message))))) =
            m.apply(&entry(2, 1, update(2, "http://127.0.0.1:2380")))
        else {
            panic!("a taken URL was applied");
        };
        assert_eq!(code, tonic::Code::FailedPrecondition as i32);
        assert_eq!(message, "etcdserver: Peer URLs already exists");
        let Some(Ok(Response::External(Err((code, message))))) =
            m.apply(&entry(3, 1, update(9, "http://127.0.0.1:2499")))
        else {
            panic!("an unknown member was updated");
        };
        assert_eq!(
            (code, message.as_str()),
            (tonic::Code::NotFound as i32, "etcdserver: member not found")
        );
        assert_eq!(m.members, before);
        assert!(m.take_peer_url_changes().is_empty());

        let mut other = seeded();
        other.restore(&m.snapshot()).unwrap();
        assert_eq!(other.members, m.members);
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
