//! The replicated member list: who is in the cluster, with the attributes etcd's `MemberList`
//! shows (id, name, peer URLs, client URLs, learner or not), and the ids removed for good.
//!
//! Every member applies the same `ConfChange` entries to it, so every member answers
//! `MemberList` the same way. The member's attributes travel in the change's `context` as an
//! encoded `etcdserverpb.Member` (etcd's own message for exactly these fields). A member
//! added but not started yet has an empty name and no client URLs, which is how etcdctl
//! knows to print `unstarted`; once started, the member publishes its name and client URLs
//! through the log itself (`member_attributes` entries, `crate::publish`), as etcd does, and
//! every member records them ([`MemberList::set_attributes`]).
//!
//! This module is pure: checks a request against the list ([`MemberList::check_add`] and
//! friends, with etcd's error texts) and applies committed changes ([`MemberList::apply`]).
//! The state machine holds the list (`crate::kv::MvccMachine::members`, kept in its
//! snapshot), the leader checks changes against it before placing them (`crate::node`),
//! and `MemberList`/`MemberRemove` answer from it (`crate::grpc::member_change`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use prost::Message;
use proto::etcdserverpb::Member;
use raft::{ConfChange, ConfChangeKind};

use crate::config::InitialMember;

/// etcd's default `--max-learners`.
pub const DEFAULT_MAX_LEARNERS: usize = 1;

/// A request refused before it reaches the log, or a committed change that does not fit the
/// list. The `Display` texts are etcd's (`api/v3rpc/rpctypes/error.go`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: member ID already exist")]
    IdExists,
    /// An id removed for good; etcd answers it like an unknown one (checked against 3.4).
    #[error("etcdserver: member not found")]
    IdRemoved,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("membership change context is not a Member: {0}")]
    BadContext(String),
}

impl MemberError {
    /// The gRPC status etcd answers with for this error.
    pub fn to_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            MemberError::NotFound | MemberError::IdRemoved => tonic::Status::not_found(msg),
            MemberError::BadUrls => tonic::Status::invalid_argument(msg),
            MemberError::BadContext(_) => tonic::Status::internal(msg),
            _ => tonic::Status::failed_precondition(msg),
        }
    }
}

/// One member as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: u64,
    /// Empty until the member has started and published its name.
    pub name: String,
    /// Sorted.
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl MemberRecord {
    pub fn to_proto(&self) -> Member {
        Member {
            id: self.id,
            name: self.name.clone(),
            peer_ur_ls: self.peer_urls.clone(),
            client_ur_ls: self.client_urls.clone(),
            is_learner: self.is_learner,
        }
    }

    fn from_proto(m: Member) -> Self {
        let mut peer_urls = m.peer_ur_ls;
        peer_urls.sort();
        MemberRecord {
            id: m.id,
            name: m.name,
            peer_urls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

/// The members and the removed ids, as applied from the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberList {
    members: BTreeMap<u64, MemberRecord>,
    removed: BTreeSet<u64>,
}

/// Format version of [`MemberList::encode`].
const SNAPSHOT_VERSION: u8 = 1;

/// The `context` of a change that adds `record` (or promotes it): the encoded `Member`.
pub fn encode_context(record: &MemberRecord) -> Bytes {
    Bytes::from(record.to_proto().encode_to_vec())
}

fn valid_peer_url(u: &str) -> bool {
    match url::Url::parse(u) {
        Ok(p) => matches!(p.scheme(), "http" | "https") && p.host().is_some(),
        Err(_) => false,
    }
}

impl MemberList {
    /// The list of a cluster that has applied no change yet: the `--initial-cluster` members,
    /// all voters. Also the list of a data dir written before the list was replicated.
    pub fn from_initial(initial: &[InitialMember]) -> Self {
        let members = initial
            .iter()
            .map(|m| {
                let mut peer_urls = m.peer_urls.clone();
                peer_urls.sort();
                (
                    m.id,
                    MemberRecord {
                        id: m.id,
                        name: m.name.clone(),
                        peer_urls,
                        client_urls: Vec::new(),
                        is_learner: false,
                    },
                )
            })
            .collect();
        MemberList {
            members,
            removed: BTreeSet::new(),
        }
    }

    pub fn get(&self, id: u64) -> Option<&MemberRecord> {
        self.members.get(&id)
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The ids removed for good, ascending.
    pub fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    /// Members in id order, as `MemberList` answers them.
    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values()
    }

    pub fn to_proto(&self) -> Vec<Member> {
        self.members.values().map(MemberRecord::to_proto).collect()
    }

    /// Checks a `MemberAdd` of `id` with `peer_urls` before it is proposed.
    pub fn check_add(
        &self,
        id: u64,
        peer_urls: &[String],
        is_learner: bool,
        max_learners: usize,
    ) -> Result<(), MemberError> {
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_peer_url(u)) {
            return Err(MemberError::BadUrls);
        }
        if self.removed.contains(&id) {
            return Err(MemberError::IdRemoved);
        }
        if self.members.contains_key(&id) {
            return Err(MemberError::IdExists);
        }
        let taken = self
            .members
            .values()
            .flat_map(|m| m.peer_urls.iter())
            .any(|u| peer_urls.contains(u));
        if taken {
            return Err(MemberError::PeerUrlExists);
        }
        if is_learner && self.members.values().filter(|m| m.is_learner).count() >= max_learners {
            return Err(MemberError::TooManyLearners);
        }
        Ok(())
    }

    /// Checks a `MemberRemove` of `id`.
    pub fn check_remove(&self, id: u64) -> Result<(), MemberError> {
        if self.removed.contains(&id) {
            return Err(MemberError::IdRemoved);
        }
        if !self.members.contains_key(&id) {
            return Err(MemberError::NotFound);
        }
        Ok(())
    }

    /// Checks a `MemberPromote` of `id` (whether the learner is in sync is the leader's
    /// question, not the list's).
    pub fn check_promote(&self, id: u64) -> Result<(), MemberError> {
        match self.members.get(&id) {
            None if self.removed.contains(&id) => Err(MemberError::IdRemoved),
            None => Err(MemberError::NotFound),
            Some(m) if !m.is_learner => Err(MemberError::NotLearner),
            Some(_) => Ok(()),
        }
    }

    /// Checks a `MemberUpdate` of `id` to `peer_urls`: the URLs may not be another member's.
    pub fn check_update(&self, id: u64, peer_urls: &[String]) -> Result<(), MemberError> {
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_peer_url(u)) {
            return Err(MemberError::BadUrls);
        }
        if !self.members.contains_key(&id) {
            return Err(if self.removed.contains(&id) {
                MemberError::IdRemoved
            } else {
                MemberError::NotFound
            });
        }
        let taken = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.peer_urls.iter())
            .any(|u| peer_urls.contains(u));
        if taken {
            return Err(MemberError::PeerUrlExists);
        }
        Ok(())
    }

    /// Applies a committed change. Every member applies the same changes in the same order,
    /// so a change the list cannot take is refused the same way everywhere and leaves the
    /// list unchanged (the core has already changed its configuration; the list only holds
    /// the attributes).
    pub fn apply(&mut self, cc: &ConfChange) -> Result<(), MemberError> {
        match cc.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                let is_learner = cc.kind == ConfChangeKind::AddLearner;
                if self.removed.contains(&cc.node) {
                    return Err(MemberError::IdRemoved);
                }
                if let Some(existing) = self.members.get_mut(&cc.node) {
                    // The automatic promotion of a member added as a voter (it joined the
                    // configuration as a learner; the list already shows it as a voter).
                    if !is_learner && !existing.is_learner && cc.context.is_empty() {
                        return Ok(());
                    }
                    // A promotion: the learner becomes a voter, its attributes stay.
                    if is_learner || !existing.is_learner {
                        return Err(MemberError::IdExists);
                    }
                    existing.is_learner = false;
                    return Ok(());
                }
                let member = Member::decode(cc.context.as_ref())
                    .map_err(|e| MemberError::BadContext(e.to_string()))?;
                if member.id != cc.node {
                    return Err(MemberError::BadContext(format!(
                        "context is member {:x}, the change is for {:x}",
                        member.id, cc.node
                    )));
                }
                // A voter is added to the configuration as a learner first and promoted
                // once it caught up (the node driver, `node::promotion`); its context says
                // it is no learner.
                let context_learner = member.is_learner;
                let mut record = MemberRecord::from_proto(member);
                record.is_learner = is_learner && context_learner;
                self.members.insert(cc.node, record);
                Ok(())
            }
            ConfChangeKind::Remove => {
                if self.members.remove(&cc.node).is_none() {
                    return Err(MemberError::NotFound);
                }
                self.removed.insert(cc.node);
                Ok(())
            }
        }
    }

    /// The list as bytes for the state machine's snapshot: a version byte, the members as a
    /// length-prefixed `MemberListResponse` (etcd's message, header left empty), then the
    /// removed ids as little-endian u64s.
    pub fn encode(&self) -> Bytes {
        let members = proto::etcdserverpb::MemberListResponse {
            header: None,
            members: self.to_proto(),
        }
        .encode_to_vec();
        let mut out = Vec::with_capacity(9 + members.len() + 8 * self.removed.len());
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&(members.len() as u64).to_le_bytes());
        out.extend_from_slice(&members);
        for id in &self.removed {
            out.extend_from_slice(&id.to_le_bytes());
        }
        Bytes::from(out)
    }

    /// Reads what [`MemberList::encode`] wrote; anything else is an error, never a panic.
    pub fn decode(data: &[u8]) -> Result<Self, MemberError> {
        let bad = |why: &str| MemberError::BadContext(format!("member list snapshot: {why}"));
        let (&version, rest) = data.split_first().ok_or_else(|| bad("empty"))?;
        if version != SNAPSHOT_VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        if rest.len() < 8 {
            return Err(bad("truncated length"));
        }
        let (len, rest) = rest.split_at(8);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        if len > rest.len() as u64 {
            return Err(bad("truncated members"));
        }
        let (members, removed) = rest.split_at(len as usize);
        if removed.len() % 8 != 0 {
            return Err(bad("truncated removed ids"));
        }
        let members = proto::etcdserverpb::MemberListResponse::decode(members)
            .map_err(|e| bad(&e.to_string()))?
            .members
            .into_iter()
            .map(|m| (m.id, MemberRecord::from_proto(m)))
            .collect();
        let removed = removed
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(MemberList { members, removed })
    }

    /// Records a started member's name and client URLs (an applied `member_attributes`
    /// entry, which the member proposes itself: `crate::publish`). Returns false, changing
    /// nothing, for an id the list does not hold (never added, or removed): every member
    /// applies the same entries to the same list, so all ignore the same ones.
    pub fn set_attributes(&mut self, id: u64, name: &str, client_urls: &[String]) -> bool {
        match self.members.get_mut(&id) {
            Some(m) => {
                m.name = name.to_string();
                m.client_urls = client_urls.to_vec();
                true
            }
            None => false,
        }
    }

    /// Whether member `id` is listed with exactly this name and these client URLs (in this
    /// order: they are listed as published).
    pub fn has_attributes(&self, id: u64, name: &str, client_urls: &[String]) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.name == name && m.client_urls == client_urls)
    }

    /// Replaces a member's peer URLs (`MemberUpdate`, once committed), after the same checks
    /// as [`MemberList::check_update`]: the proposer checked against the list it had, but
    /// another change may have been applied in between, so every member checks again at
    /// apply, alike.
    pub fn update_peer_urls(&mut self, id: u64, peer_urls: &[String]) -> Result<(), MemberError> {
        self.check_update(id, peer_urls)?;
        let m = self.members.get_mut(&id).ok_or(MemberError::NotFound)?;
        let mut urls = peer_urls.to_vec();
        urls.sort();
        m.peer_urls = urls;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial() -> MemberList {
        MemberList::from_initial(&[
            InitialMember {
                id: 1,
                name: "a".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
            },
            InitialMember {
                id: 2,
                name: "b".into(),
                peer_urls: vec!["http://127.0.0.1:2381".into()],
            },
        ])
    }

    fn add(node: u64, url: &str, learner: bool) -> ConfChange {
        let rec = MemberRecord {
            id: node,
            name: String::new(),
            peer_urls: vec![url.to_string()],
            client_urls: vec![],
            is_learner: learner,
        };
        ConfChange {
            kind: if learner {
                ConfChangeKind::AddLearner
            } else {
                ConfChangeKind::AddVoter
            },
            node,
            context: encode_context(&rec),
        }
    }

    fn remove(node: u64) -> ConfChange {
        ConfChange {
            kind: ConfChangeKind::Remove,
            node,
            context: Bytes::new(),
        }
    }

    #[test]
    fn an_added_member_is_listed_unstarted_until_it_publishes() {
        let mut l = initial();
        l.apply(&add(3, "http://127.0.0.1:2382", false)).unwrap();
        let m = l.get(3).unwrap();
        assert_eq!(m.name, "");
        assert!(m.client_urls.is_empty());
        assert!(!m.is_learner);
        assert!(l.set_attributes(3, "c", &["http://127.0.0.1:2379".into()]));
        assert_eq!(l.get(3).unwrap().name, "c");
        assert_eq!(
            l.to_proto().iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_learner_is_promoted_by_add_voter_and_keeps_its_urls() {
        let mut l = initial();
        l.apply(&add(3, "http://127.0.0.1:2382", true)).unwrap();
        assert!(l.get(3).unwrap().is_learner);
        assert_eq!(l.check_promote(3), Ok(()));
        l.apply(&ConfChange {
            kind: ConfChangeKind::AddVoter,
            node: 3,
            context: Bytes::new(),
        })
        .unwrap();
        let m = l.get(3).unwrap();
        assert!(!m.is_learner);
        assert_eq!(m.peer_urls, vec!["http://127.0.0.1:2382".to_string()]);
        assert_eq!(l.check_promote(3), Err(MemberError::NotLearner));
    }

    #[test]
    fn a_removed_id_stays_removed() {
        let mut l = initial();
        l.apply(&remove(2)).unwrap();
        assert!(l.get(2).is_none());
        assert!(l.is_removed(2));
        assert_eq!(l.check_remove(2), Err(MemberError::IdRemoved));
        // etcd 3.4 answers a second removal like an unknown id.
        let st = MemberError::IdRemoved.to_status();
        assert_eq!(
            (st.code(), st.message()),
            (tonic::Code::NotFound, "etcdserver: member not found")
        );
        assert_eq!(
            l.check_add(2, &["http://127.0.0.1:2390".into()], false, 1),
            Err(MemberError::IdRemoved)
        );
        assert_eq!(
            l.apply(&add(2, "http://127.0.0.1:2390", false)),
            Err(MemberError::IdRemoved)
        );
        // The removed member's peer URL is free again.
        assert_eq!(
            l.check_add(9, &["http://127.0.0.1:2381".into()], false, 1),
            Ok(())
        );
    }

    #[test]
    fn requests_are_refused_with_etcds_errors() {
        let mut l = initial();
        assert_eq!(
            l.check_add(3, &["http://127.0.0.1:2381".into()], false, 1),
            Err(MemberError::PeerUrlExists)
        );
        assert_eq!(
            l.check_add(1, &["http://127.0.0.1:2399".into()], false, 1),
            Err(MemberError::IdExists)
        );
        assert_eq!(
            l.check_add(3, &["bogus".into()], false, 1),
            Err(MemberError::BadUrls)
        );
        assert_eq!(l.check_add(3, &[], false, 1), Err(MemberError::BadUrls));
        assert_eq!(l.check_remove(7), Err(MemberError::NotFound));
        assert_eq!(l.check_promote(7), Err(MemberError::NotFound));
        assert_eq!(l.check_promote(1), Err(MemberError::NotLearner));
        assert_eq!(
            l.check_update(1, &["http://127.0.0.1:2381".into()]),
            Err(MemberError::PeerUrlExists)
        );
        assert_eq!(l.check_update(1, &["http://127.0.0.1:2380".into()]), Ok(()));
        l.apply(&add(3, "http://127.0.0.1:2382", true)).unwrap();
        assert_eq!(
            l.check_add(
                4,
                &["http://127.0.0.1:2383".into()],
                true,
                DEFAULT_MAX_LEARNERS
            ),
            Err(MemberError::TooManyLearners)
        );
        assert_eq!(
            l.check_add(
                4,
                &["http://127.0.0.1:2383".into()],
                false,
                DEFAULT_MAX_LEARNERS
            ),
            Ok(())
        );
        assert_eq!(
            MemberError::PeerUrlExists.to_status().message(),
            "etcdserver: Peer URLs already exists"
        );
        assert_eq!(
            MemberError::NotFound.to_status().code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn a_change_that_does_not_fit_leaves_the_list_unchanged() {
        let mut l = initial();
        let before = l.clone();
        assert_eq!(
            l.apply(&add(1, "http://127.0.0.1:2399", false)),
            Err(MemberError::IdExists)
        );
        assert_eq!(l.apply(&remove(42)), Err(MemberError::NotFound));
        let garbage = ConfChange {
            kind: ConfChangeKind::AddVoter,
            node: 5,
            context: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert!(matches!(l.apply(&garbage), Err(MemberError::BadContext(_))));
        let mut wrong_id = add(6, "http://127.0.0.1:2396", false);
        wrong_id.node = 7;
        assert!(matches!(
            l.apply(&wrong_id),
            Err(MemberError::BadContext(_))
        ));
        assert_eq!(l, before);
    }

    #[test]
    fn the_list_survives_a_snapshot_and_bad_bytes_are_an_error() {
        let mut l = initial();
        l.apply(&add(3, "http://127.0.0.1:2382", true)).unwrap();
        l.set_attributes(3, "c", &["http://127.0.0.1:2379".into()]);
        l.apply(&remove(1)).unwrap();
        let bytes = l.encode();
        assert_eq!(MemberList::decode(&bytes), Ok(l.clone()));
        assert_eq!(
            MemberList::decode(&MemberList::default().encode()),
            Ok(MemberList::default())
        );
        for cut in 0..bytes.len() {
            // No prefix panics (some prefixes are valid lists: the cut falls between ids).
            let _ = MemberList::decode(&bytes[..cut]);
        }
        assert!(MemberList::decode(&[]).is_err());
        assert!(MemberList::decode(&bytes[..bytes.len() - 3]).is_err());
        let mut wrong_version = bytes.to_vec();
        wrong_version[0] = 9;
        assert!(MemberList::decode(&wrong_version).is_err());
    }

    /// Published attributes replace the listed ones; an id the list does not hold (never
    /// added, or removed) changes nothing.
    #[test]
    fn attributes_are_set_for_listed_members_only() {
        let mut l = initial();
        assert!(!l.has_attributes(1, "a", &["http://127.0.0.1:2379".into()]));
        assert!(l.set_attributes(1, "a", &["http://127.0.0.1:2379".into()]));
        assert!(l.has_attributes(1, "a", &["http://127.0.0.1:2379".into()]));
        // A restarted member with other flags publishes again: the new values replace.
        assert!(l.set_attributes(1, "a2", &[]));
        assert_eq!(l.get(1).unwrap().name, "a2");
        assert!(l.get(1).unwrap().client_urls.is_empty());
        l.apply(&remove(2)).unwrap();
        let before = l.clone();
        assert!(!l.set_attributes(2, "b", &["http://127.0.0.1:2479".into()]));
        assert!(!l.set_attributes(42, "x", &["http://127.0.0.1:2579".into()]));
        assert_eq!(l, before);
        assert!(!l.has_attributes(42, "x", &["http://127.0.0.1:2579".into()]));
    }

    /// An image written before members published their attributes (founders named from
    /// `--initial-cluster`, nobody's client URLs) still loads, and takes attributes.
    #[test]
    fn an_image_from_before_publishing_still_loads() {
        // `initial()` plus an added, unstarted member 3 and removed member 9, as the build
        // before `member_attributes` encoded it (bytes written out by hand from the format:
        // version 1, u64 LE length, `MemberListResponse`, removed ids).
        let members = [
            (1u8, "a", "http://127.0.0.1:2380"),
            (2, "b", "http://127.0.0.1:2381"),
            (3, "", "http://127.0.0.1:2382"),
        ];
        let mut list = Vec::new();
        for (id, name, url) in members {
            let mut m = vec![0x08, id]; // ID
            if !name.is_empty() {
                m.extend_from_slice(&[0x12, name.len() as u8]);
                m.extend_from_slice(name.as_bytes());
            }
            m.extend_from_slice(&[0x1a, url.len() as u8]);
            m.extend_from_slice(url.as_bytes());
            list.extend_from_slice(&[0x12, m.len() as u8]); // members = 2
            list.extend_from_slice(&m);
        }
        let mut image = vec![1u8];
        image.extend_from_slice(&(list.len() as u64).to_le_bytes());
        image.extend_from_slice(&list);
        image.extend_from_slice(&9u64.to_le_bytes());

        let mut l = MemberList::decode(&image).unwrap();
        let mut want = initial();
        want.apply(&add(3, "http://127.0.0.1:2382", false)).unwrap();
        want.removed.insert(9);
        assert_eq!(l, want);
        assert_eq!(l.get(1).unwrap().name, "a");
        assert!(l.get(1).unwrap().client_urls.is_empty());
        assert_eq!(l.get(3).unwrap().name, "");
        assert!(l.set_attributes(3, "c", &["http://127.0.0.1:2379".into()]));
        assert_eq!(MemberList::decode(&l.encode()), Ok(l));
    }

    #[test]
    fn update_replaces_peer_urls() {
        let mut l = initial();
        l.update_peer_urls(2, &["http://127.0.0.1:2480".into()])
            .unwrap();
        assert_eq!(
            l.get(2).unwrap().peer_urls,
            vec!["http://127.0.0.1:2480".to_string()]
        );
        assert_eq!(
            l.update_peer_urls(9, &["http://127.0.0.1:2481".into()]),
            Err(MemberError::NotFound)
        );
        // Checked again at apply: a URL another member took meanwhile, bad URLs.
        let before = l.clone();
        assert_eq!(
            l.update_peer_urls(2, &["http://127.0.0.1:2380".into()]),
            Err(MemberError::PeerUrlExists)
        );
        assert_eq!(
            l.update_peer_urls(2, &["not a url".into()]),
            Err(MemberError::BadUrls)
        );
        l.apply(&remove(1)).unwrap();
        assert_eq!(
            l.update_peer_urls(1, &["http://127.0.0.1:2499".into()]),
            Err(MemberError::IdRemoved)
        );
        assert_eq!(l.get(2), before.get(2));
        // Its own URLs again (in another order) are no conflict.
        l.update_peer_urls(2, &["http://127.0.0.1:2480".into(), "http://a:1".into()])
            .unwrap();
        l.update_peer_urls(2, &["http://a:1".into(), "http://127.0.0.1:2480".into()])
            .unwrap();
        assert_eq!(
            l.get(2).unwrap().peer_urls,
            vec![
                "http://127.0.0.1:2480".to_string(),
                "http://a:1".to_string()
            ]
        );
    }
}
