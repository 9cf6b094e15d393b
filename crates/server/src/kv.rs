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
    /// Every admission applied (replicated, in the snapshot): what a member that catches up
    /// from a snapshot hands its transport's record (`crate::admissions`).
    pub admissions: crate::admissions::Admissions,
    /// The list a snapshot without one restores to: the `--initial-cluster` members (such
    /// snapshots were written before the list was replicated, when the membership was
    /// fixed at bootstrap).
    members_seed: MemberList,
    /// Members whose peer URLs changed since the node thread last asked
    /// ([`StateMachine::take_peer_url_changes`]): its transport must redial them.
    peer_url_changes: Vec<(u64, Vec<String>)>,
    /// `--max-learners`: checked by the leader before it places a member addition (each
    /// member's own setting; the check is not part of applying the entry).
    pub max_learners: usize,
}

impl Default for MvccMachine {
    fn default() -> Self {
        MvccMachine {
            store: Store::default(),
            watch: Arc::default(),
            tokens: Arc::default(),
            lessor: LeaseClock::default(),
            members: MemberList::default(),
            incarnations: None,
            admissions: Default::default(),
            members_seed: MemberList::default(),
            peer_url_changes: Vec::new(),
            max_learners: crate::members::DEFAULT_MAX_LEARNERS,
        }
    }
}

/// The state machine's snapshot: the store's image, the member list and the operators'
/// peer admissions side by side.
///
/// ```text
/// magic       8 bytes  "RKVSM01\0" (no admissions) or "RKVSM02\0"
/// store       u64 LE length, then the store's image (mvcc::snapshot, which checksums itself)
/// RKVSM01\0:  members, the rest: MemberList::encode
/// RKVSM02\0:  members, u64 LE length then MemberList::encode; admissions, the rest:
///             crate::admissions::Admissions::encode
/// ```
///
/// Why an envelope rather than a section of the store's format: the member list and the
/// admissions are the server's state, not the store's, and `Maintenance/Snapshot` backups
/// carry the store's image alone (etcd's restore makes a new membership from flags, and so
/// does raftkv's; and an admission names a member's secret incarnation). A bare store image
/// (every snapshot written before the list was replicated) still restores: the store's own
/// magic tells it apart, and the list is the seed. A snapshot without admissions is written
/// as `RKVSM01\0`, byte for byte what a build without admissions writes and reads.
pub mod envelope {
    use std::io::{self, Write};

    use crate::admissions::Admissions;
    use crate::members::MemberList;

    pub const MAGIC: &[u8; 8] = b"RKVSM01\0";
    /// The envelope that also carries admissions.
    pub const MAGIC_WITH_ADMISSIONS: &[u8; 8] = b"RKVSM02\0";

    /// What an envelope holds besides the store's image.
    pub struct Decoded<'a> {
        pub store: &'a [u8],
        /// `None` for a bare store image.
        pub members: Option<MemberList>,
        pub admissions: Admissions,
    }

    /// Writes the envelope: magic, the store image's length, the image, the member list
    /// and the admissions. `write_store` streams the store's image, of exactly `store_len`
    /// bytes (the envelope puts its length first); a different length is an error, never
    /// an envelope that would decode wrongly.
    pub fn encode_to(
        out: &mut dyn Write,
        store_len: u64,
        write_store: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
        members: &MemberList,
        admissions: &Admissions,
    ) -> io::Result<()> {
        let list = members.encode();
        let with_admissions = !admissions.is_empty();
        out.write_all(if with_admissions {
            MAGIC_WITH_ADMISSIONS
        } else {
            MAGIC
        })?;
        out.write_all(&store_len.to_le_bytes())?;
        let mut counted = Counted { out, bytes: 0 };
        write_store(&mut counted)?;
        if counted.bytes != store_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the store image was {} bytes, not the {store_len} announced",
                    counted.bytes
                ),
            ));
        }
        if with_admissions {
            out.write_all(&(list.len() as u64).to_le_bytes())?;
        }
        out.write_all(&list)?;
        if with_admissions {
            out.write_all(&admissions.encode())?;
        }
        Ok(())
    }

    /// A writer that counts what passes through it.
    struct Counted<'a> {
        out: &'a mut dyn Write,
        bytes: u64,
    }

    impl Write for Counted<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.out.write(buf)?;
            self.bytes += n as u64;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.out.flush()
        }
    }

    /// Splits `rest` after a u64 LE length and that many bytes.
    fn length_prefixed<'a>(rest: &'a [u8], what: &str) -> anyhow::Result<(&'a [u8], &'a [u8])> {
        if rest.len() < 8 {
            anyhow::bail!("state machine snapshot: truncated {what} length");
        }
        let (len, rest) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        if len > rest.len() as u64 {
            anyhow::bail!("state machine snapshot: truncated {what}");
        }
        Ok(rest.split_at(len as usize))
    }

    /// The parts of an envelope, or a bare store image as it is. Bad bytes are an error,
    /// never a panic.
    pub fn decode(data: &[u8]) -> anyhow::Result<Decoded<'_>> {
        let (rest, with_admissions) = if let Some(rest) = data.strip_prefix(MAGIC.as_slice()) {
            (rest, false)
        } else if let Some(rest) = data.strip_prefix(MAGIC_WITH_ADMISSIONS.as_slice()) {
            (rest, true)
        } else {
            return Ok(Decoded {
                store: data,
                members: None,
                admissions: Admissions::default(),
            });
        };
        let (store, rest) = length_prefixed(rest, "store image")?;
        let (list, admissions) = if with_admissions {
            let (list, rest) = length_prefixed(rest, "member list")?;
            (list, Admissions::decode(rest)?)
        } else {
            (rest, Admissions::default())
        };
        let list = MemberList::decode(list).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Decoded {
            store,
            members: Some(list),
            admissions,
        })
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

    /// A committed `member_attributes` entry: a member's published name and client URLs.
    /// An id the list does not hold (removed since the member proposed, or never added) is
    /// ignored alike everywhere; the proposer hears etcd's `member not found` and stops.
    fn apply_member_attributes(
        &mut self,
        attrs: &proto::raftkvpb::MemberAttributes,
    ) -> Result<(), (i32, String)> {
        if self
            .members
            .set_attributes(attrs.member_id, &attrs.name, &attrs.client_urls)
        {
            return Ok(());
        }
        let st = crate::members::MemberError::NotFound.to_status();
        Err((st.code() as i32, st.message().to_string()))
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
    /// An applied `raftkv peer admit` (the store checked the caller is an administrator):
    /// checked again against the member list at this index, so every member takes the same
    /// decision whatever the proposer saw (`crate::admissions::check`); then recorded in the
    /// replicated admissions and in this member's peer record. The incarnation is a secret
    /// of the peer's and is never logged.
    fn apply_admission(
        &mut self,
        out: Result<Response, MvccError>,
        index: u64,
    ) -> Result<Response, MvccError> {
        let Ok(Response::AdmitPeer {
            member_id,
            incarnation,
        }) = out
        else {
            return out;
        };
        let req = proto::raftkvpb::PeerIncarnation {
            member_id,
            incarnation,
        };
        if let Err(st) = crate::admissions::check(&self.members, &req) {
            return Ok(Response::External(Err((
                st.code() as i32,
                st.message().to_string(),
            ))));
        }
        self.admissions.record(
            member_id,
            crate::admissions::Admission {
                incarnation,
                at: index,
            },
        );
        self.record_admission(member_id, incarnation, index);
        Ok(Response::AdmitPeer {
            member_id,
            incarnation,
        })
    }

    /// Hand one admission (applied at log index `at`) to the transport's record, which
    /// keeps a later one it already has.
    fn record_admission(&self, member_id: u64, incarnation: u64, at: u64) {
        let Some(incarnations) = &self.incarnations else {
            return;
        };
        match incarnations.admit(member_id, incarnation, at) {
            Ok(true) => tracing::warn!(
                member = format_args!("{member_id:x}"),
                index = at,
                "an operator admitted this member with a new incarnation; connections under \
                 any other incarnation are closed"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(
                member = format_args!("{member_id:x}"),
                error = %e,
                "could not record an operator's admission on disk; it holds until this \
                 member restarts"
            ),
        }
    }

    /// A committed `MemberUpdate`, proposed with the caller's identity: checked at apply
    /// like every administrator's call (etcd's `authApplierV3` and `IsAdminPermitted`), so
    /// a caller who lost the `root` role, or was deleted, between the proposal and this
    /// index changes nothing; then applied to the member list.
    fn apply_member_update_as(
        &mut self,
        req: &InternalRequest,
        update: &proto::etcdserverpb::MemberUpdateRequest,
    ) -> Result<Response, MvccError> {
        self.store
            .auth()
            .check_admin(req.auth.as_ref())
            .map_err(MvccError::Auth)?;
        Ok(Response::External(self.apply_member_update(update)))
    }
}

/// What a snapshot of [`MvccMachine`] holds, taken in O(1) under the state lock
/// ([`Store::view`] shares the store's persistent maps; the member list and admissions are
/// a few entries) and encoded by the snapshot writer's thread.
pub struct MvccView {
    store: Store,
    members: MemberList,
    admissions: crate::admissions::Admissions,
}

impl StateMachine for MvccMachine {
    type Output = Result<Response, MvccError>;

    fn lease_clock(&self) -> Option<LeaseClock> {
        Some(self.lessor.clone())
    }

    fn lease_entry(decision: &node::LeaseDecision) -> Bytes {
        crate::lease_expiry::entry(decision)
    }

    fn hold_reader_wakes(&self) -> Option<Box<dyn Send>> {
        Some(Box::new(self.watch.hold_wakes()))
    }

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
        //
        // Only an entry the store applied has events and lease changes of its own: the
        // store's `last_events` / `last_lease_changes` still describe the entry before a
        // member update or a published member's attributes, and handing them on again
        // would deliver that revision's events twice to every watcher.
        let mut through_store = false;
        let out = match InternalRequest::decode(entry.data.as_ref()) {
            Ok(
                ref req @ InternalRequest {
                    request: Some(Internal::MemberUpdate(ref update)),
                    ..
                },
            ) => self.apply_member_update_as(req, update),
            Ok(InternalRequest {
                request: Some(Internal::MemberAttributes(ref attrs)),
                ..
            }) => Ok(Response::External(self.apply_member_attributes(attrs))),
            Ok(req) => {
                through_store = true;
                let out = self.store.apply_entry(&req, entry.term);
                let out = self.apply_admission(out, entry.index);
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
        if through_store && !self.store.last_lease_changes().is_empty() {
            self.follow_lease_changes();
        }
        self.lessor.set_revision(self.store.current_revision());
        if through_store && out.is_ok() {
            let events = self.store.last_events();
            if !events.is_empty() {
                self.watch.publish(self.store.current_revision(), events);
            }
        }
        Some(out)
    }

    type View = MvccView;

    fn view(&self) -> MvccView {
        MvccView {
            store: self.store.view(),
            members: self.members.clone(),
            admissions: self.admissions.clone(),
        }
    }

    fn encode_to(view: &MvccView, sink: &mut dyn std::io::Write) -> std::io::Result<()> {
        envelope::encode_to(
            sink,
            view.store.snapshot_len(),
            &mut |out| view.store.snapshot_to(out),
            &view.members,
            &view.admissions,
        )
    }

    fn restore(&mut self, image: &Bytes) -> anyhow::Result<()> {
        let unpublished = self.store.current_revision() + 1;
        let decoded = envelope::decode(image)?;
        self.store = Store::restore(decoded.store)
            .map_err(|e| anyhow::anyhow!("cannot restore the store from a snapshot: {e:?}"))?;
        self.members = decoded.members.unwrap_or_else(|| self.members_seed.clone());
        // Admissions this member may have missed (it was down, and the leader compacted the
        // entries away): its record takes each one unless it holds a later one already.
        self.admissions = decoded.admissions;
        for (member, a) in self.admissions.iter() {
            self.record_admission(member, a.incarnation, a.at);
        }
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
                    Ok(m) => {
                        list.check_add(cc.node, &m.peer_ur_ls, m.is_learner, self.max_learners)
                    }
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

    fn promotion_candidates(&self) -> std::collections::BTreeSet<u64> {
        self.members
            .members()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect()
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

    /// An entry the store does not apply (a member's published attributes, a member update)
    /// publishes nothing to watchers: the store's last events belong to the entry before
    /// it, which watchers already got (found by the Jepsen membership history: an event
    /// delivered twice after a replaced member published its attributes).
    #[test]
    fn member_entries_do_not_publish_the_previous_entrys_events_again() {
        use proto::etcdserverpb::PutRequest;
        use proto::raftkvpb::MemberAttributes;
        let mut m = seeded();
        let mut stream = m.watch.register();
        m.watch
            .add_range(stream.id, crate::watch::hub::WatchRange::new(b"k", b""));
        m.apply(&entry(
            1,
            1,
            Request::Put(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            }),
        ));
        let first = stream.rx.try_recv().expect("the put's events");
        m.apply(&entry(
            2,
            1,
            Request::MemberAttributes(MemberAttributes {
                member_id: 2,
                name: "b".into(),
                client_urls: vec!["http://127.0.0.1:2479".into()],
            }),
        ));
        assert!(
            stream.rx.try_recv().is_err(),
            "revision {} was published again after a member entry",
            first.rev
        );
    }

    /// A member's published attributes reach every member's list (an id it does not hold
    /// is ignored, with etcd's answer), leave the store alone, and travel in the snapshot.
    #[test]
    fn published_attributes_reach_the_list_and_its_snapshot() {
        use proto::raftkvpb::MemberAttributes;
        use raft::{ConfChange, ConfChangeKind};
        let publish = |id, name: &str, url: &str| {
            Request::MemberAttributes(MemberAttributes {
                member_id: id,
                name: name.to_string(),
                client_urls: vec![url.to_string()],
            })
        };
        let mut m = seeded();
        let revision = m.store.current_revision();
        assert!(m.members.get(2).unwrap().client_urls.is_empty());
        let out = m.apply(&entry(1, 1, publish(2, "b", "http://127.0.0.1:2479")));
        assert!(
            matches!(out, Some(Ok(Response::External(Ok(()))))),
            "{out:?}"
        );
        let b = m.members.get(2).unwrap();
        assert_eq!(b.name, "b");
        assert_eq!(b.client_urls, vec!["http://127.0.0.1:2479".to_string()]);
        assert_eq!(m.store.current_revision(), revision);

        m.apply(&conf_entry(
            2,
            ConfChange {
                kind: ConfChangeKind::Remove,
                node: 1,
                context: Bytes::new(),
            },
        ));
        let before = m.members.clone();
        for (index, id) in [(3, 1), (4, 9)] {
            let Some(Ok(Response::External(Err((code, message))))) =
                m.apply(&entry(index, 1, publish(id, "x", "http://127.0.0.1:2579")))
            else {
                panic!("attributes of member {id} were applied");
            };
            assert_eq!(
                (code, message.as_str()),
                (tonic::Code::NotFound as i32, "etcdserver: member not found")
            );
        }
        assert_eq!(m.members, before);

        let mut other = seeded();
        other.restore(&m.snapshot()).unwrap();
        assert_eq!(other.members, m.members);
        assert_eq!(other.members.get(2).unwrap().name, "b");
    }

    /// An entry applied as `who` (user, auth revision).
    fn entry_as(index: u64, who: Option<(&str, u64)>, request: Request) -> Entry {
        let req = InternalRequest {
            auth: who.map(|(u, rev)| proto::raftkvpb::RequestAuth {
                username: u.to_string(),
                auth_revision: rev,
            }),
            request: Some(request),
        };
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(req.encode_to_vec()),
        }
    }

    /// The seeded machine with auth enabled: `root`, and `admin` holding the root role.
    /// Returns the next free log index.
    fn secured(m: &mut MvccMachine) -> u64 {
        use proto::etcdserverpb::{
            AuthRoleAddRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
        };
        let user = |name: &str| {
            Request::UserAdd(AuthUserAddRequest {
                name: name.into(),
                hashed_password: format!("hash-of-{name}"),
                ..Default::default()
            })
        };
        let grant = |user: &str| {
            Request::UserGrantRole(AuthUserGrantRoleRequest {
                user: user.into(),
                role: "root".into(),
            })
        };
        let steps = [
            Request::RoleAdd(AuthRoleAddRequest {
                name: "root".into(),
            }),
            user("root"),
            grant("root"),
            user("admin"),
            grant("admin"),
            Request::AuthEnable(Default::default()),
        ];
        let mut index = 1;
        for r in steps {
            assert!(matches!(m.apply(&entry(index, 1, r)), Some(Ok(_))));
            index += 1;
        }
        index
    }

    /// A `MemberUpdate` carries its caller and is checked again at apply, as etcd checks an
    /// administrator's request: one whose caller lost the root role (or was deleted, or is
    /// nobody) after the proposer checked it changes nothing, with etcd's error.
    #[test]
    fn a_member_update_whose_caller_lost_root_is_refused_at_apply() {
        use proto::etcdserverpb::{
            AuthUserDeleteRequest, AuthUserRevokeRoleRequest, MemberUpdateRequest,
        };
        let update = |url: &str| {
            Request::MemberUpdate(MemberUpdateRequest {
                id: 2,
                peer_ur_ls: vec![url.to_string()],
            })
        };
        let mut m = seeded();
        let mut index = secured(&mut m);
        // Checked by the proposer at this revision: admin was an administrator then.
        let rev = m.store.auth().revision();
        let mut next = || {
            index += 1;
            index - 1
        };
        let out = m.apply(&entry_as(
            next(),
            Some(("admin", rev)),
            update("http://127.0.0.1:2481"),
        ));
        assert!(
            matches!(out, Some(Ok(Response::External(Ok(()))))),
            "{out:?}"
        );
        m.take_peer_url_changes();

        // Auth management needs an administrator too: root does it.
        let as_root = |m: &mut MvccMachine, index, r| {
            let rev = m.store.auth().revision();
            let out = m.apply(&entry_as(index, Some(("root", rev)), r));
            assert!(matches!(out, Some(Ok(_))), "{out:?}");
        };
        as_root(
            &mut m,
            next(),
            Request::UserRevokeRole(AuthUserRevokeRoleRequest {
                name: "admin".into(),
                role: "root".into(),
            }),
        );
        let before = m.members.clone();
        let refused = |out: Option<Result<Response, MvccError>>| match out {
            Some(Err(MvccError::Auth(e))) => e,
            other => panic!("applied despite the caller's lost rights: {other:?}"),
        };
        let late = m.apply(&entry_as(
            next(),
            Some(("admin", rev)),
            update("http://127.0.0.1:2482"),
        ));
        assert_eq!(refused(late), mvcc::auth::AuthError::PermissionDenied);
        assert_eq!(
            tonic::Status::from(MvccError::Auth(mvcc::auth::AuthError::PermissionDenied)).message(),
            "etcdserver: permission denied"
        );
        let nobody = m.apply(&entry_as(next(), None, update("http://127.0.0.1:2483")));
        assert_eq!(refused(nobody), mvcc::auth::AuthError::UserEmpty);
        as_root(
            &mut m,
            next(),
            Request::UserDelete(AuthUserDeleteRequest {
                name: "admin".into(),
            }),
        );
        let deleted = m.apply(&entry_as(
            next(),
            Some(("admin", rev)),
            update("http://127.0.0.1:2484"),
        ));
        assert_eq!(refused(deleted), mvcc::auth::AuthError::UserNotFound);
        assert_eq!(m.members, before);
        assert!(m.take_peer_url_changes().is_empty());
        // root still may.
        let rev = m.store.auth().revision();
        let out = m.apply(&entry_as(
            next(),
            Some(("root", rev)),
            update("http://127.0.0.1:2485"),
        ));
        assert!(
            matches!(out, Some(Ok(Response::External(Ok(()))))),
            "{out:?}"
        );
    }

    /// An admission is checked again at apply against the member list there (every member
    /// applies the same decision): a member removed after the proposer checked, an unknown
    /// one, or incarnation 0 is refused and recorded nowhere; a valid one is recorded in the
    /// replicated admissions, in the peer record, and survives a snapshot, which hands it to
    /// the record of a member that missed the entry (never undoing a later admission).
    #[test]
    fn admissions_are_checked_at_apply_and_travel_in_the_snapshot() {
        use proto::raftkvpb::PeerIncarnation;
        use raft::{ConfChange, ConfChangeKind};
        let admit = |member_id, incarnation| {
            Request::AdmitPeer(PeerIncarnation {
                member_id,
                incarnation,
            })
        };
        let record = || Arc::new(crate::transport::Incarnations::in_memory());
        let mut m = seeded();
        let peers = record();
        m.incarnations = Some(peers.clone());
        assert!(peers.check(2, 0xbad).is_ok(), "an outsider's pre-claim");

        let refused = |out: Option<Result<Response, MvccError>>| match out {
            Some(Ok(Response::External(Err((code, message))))) => (code, message),
            other => panic!("admission applied: {other:?}"),
        };
        let (code, message) = refused(m.apply(&entry(1, 1, admit(2, 0))));
        assert_eq!(code, tonic::Code::InvalidArgument as i32, "{message}");
        let (code, message) = refused(m.apply(&entry(2, 1, admit(9, 0x600d))));
        assert_eq!(
            (code, message.as_str()),
            (tonic::Code::NotFound as i32, "etcdserver: member not found")
        );
        assert!(m.admissions.is_empty());
        assert!(peers.is_recorded(2, 0xbad));

        let out = m.apply(&entry(3, 1, admit(2, 0x600d)));
        assert!(
            matches!(out, Some(Ok(Response::AdmitPeer { .. }))),
            "{out:?}"
        );
        assert!(peers.is_recorded(2, 0x600d));
        let image = m.snapshot();
        assert_eq!(&image[..8], envelope::MAGIC_WITH_ADMISSIONS);

        // Member 1 was removed, then an admission checked before the removal is applied.
        m.apply(&conf_entry(
            4,
            ConfChange {
                kind: ConfChangeKind::Remove,
                node: 1,
                context: Bytes::new(),
            },
        ));
        let (code, _) = refused(m.apply(&entry(5, 1, admit(1, 0x11))));
        assert_eq!(code, tonic::Code::NotFound as i32);

        // A member that missed entry 3 (its record still has the pre-claim) installs the
        // snapshot taken after it.
        let mut behind = seeded();
        let its_peers = record();
        assert!(its_peers.check(2, 0xbad).is_ok());
        behind.incarnations = Some(its_peers.clone());
        behind.restore(&image).unwrap();
        assert_eq!(behind.admissions, m.admissions);
        assert!(its_peers.is_recorded(2, 0x600d));
        // A later admission it applied is not undone by restoring the older snapshot.
        behind.apply(&entry(6, 1, admit(2, 0x700d)));
        behind.restore(&image).unwrap();
        assert!(its_peers.is_recorded(2, 0x700d));

        // Without admissions the envelope is the first version's, which still restores.
        let plain = seeded().snapshot();
        assert_eq!(&plain[..8], envelope::MAGIC);
        let mut again = seeded();
        again.restore(&plain).unwrap();
        assert!(again.admissions.is_empty());
        // A damaged envelope with admissions is refused.
        for cut in [8, 20, image.len() - 1] {
            assert!(seeded().restore(&image.slice(..cut)).is_err(), "cut {cut}");
        }
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

    #[test]
    fn an_envelope_refuses_a_store_image_of_another_length_than_announced() {
        let m = MvccMachine::default();
        let store = m.store.snapshot();
        for announced in [store.len() as u64 - 1, store.len() as u64 + 1] {
            let mut out = Vec::new();
            let err = envelope::encode_to(
                &mut out,
                announced,
                &mut |sink| sink.write_all(&store),
                &m.members,
                &m.admissions,
            )
            .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        }
    }
}
