//! `etcdserverpb.Maintenance` (Status, Alarm, HashKV, Defragment, Snapshot),
//! `etcdserverpb.Cluster` (MemberList), and the services that only answer `UNIMPLEMENTED`
//! for now. Hash (a hash of etcd's whole bbolt file) has no raftkv meaning and answers
//! `UNIMPLEMENTED`; HashKV is the comparison raftkv supports.

use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest};

use proto::etcdserverpb::cluster_server::Cluster;
use proto::etcdserverpb::maintenance_server::Maintenance;
use proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest,
    DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, Member,
    MemberListRequest, MemberListResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{Context, ETCD_VERSION};
use crate::config::InitialMember;
use crate::node::StateMachine;

/// This member's identity and its membership settings (the member list itself is
/// replicated: `MvccMachine::members`). `members` is the `--initial-cluster` list.
pub struct Membership {
    pub members: Vec<InitialMember>,
    pub self_id: u64,
    pub self_name: String,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
    /// `--max-learners`.
    pub max_learners: usize,
}

pub struct MaintenanceService(pub Context);

/// Bytes per `SnapshotResponse` blob (etcd's 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// etcd prints an alarm in Status's `errors` as the proto text of the `AlarmMember`.
fn alarm_text(member_id: u64, alarm: i32) -> String {
    let name = AlarmType::try_from(alarm)
        .map(|a| a.as_str_name())
        .unwrap_or("NONE");
    format!("memberID:{member_id} alarm:{name} ")
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let st = &self.0.node.status;
        let db_size = self
            .0
            .node
            .state
            .read()
            .map(|s| s.size())
            .unwrap_or(1)
            .max(1) as i64;
        let leader = st.leader().unwrap_or(0);
        let mut errors: Vec<String> = self
            .0
            .node
            .state
            .read()
            .map(|s| {
                s.store
                    .alarms()
                    .list()
                    .iter()
                    .map(|a| alarm_text(a.member_id, a.alarm))
                    .collect()
            })
            .unwrap_or_default();
        if leader == 0 {
            errors.push("etcdserver: no leader".to_string());
        }
        Ok(Response::new(StatusResponse {
            header: Some(self.0.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size,
            leader,
            raft_index: st.commit(),
            raft_term: st.term(),
            raft_applied_index: st.applied(),
            errors,
            db_size_in_use: db_size,
            is_learner: st.is_learner(),
            storage_version: String::new(),
            db_size_quota: self.0.quota.bytes() as i64,
            downgrade_info: None,
        }))
    }

    /// GET lists this member's view of the alarms; ACTIVATE and DEACTIVATE go through the
    /// log, so every member changes at the same position (`mvcc::alarm`).
    async fn alarm(&self, r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = r.into_inner();
        if let Ok(AlarmAction::Get) = AlarmAction::try_from(req.action) {
            let alarms = {
                let sm = self.0.state()?;
                sm.store
                    .alarms()
                    .list()
                    .into_iter()
                    .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                    .collect()
            };
            return Ok(Response::new(AlarmResponse {
                header: Some(self.0.header(0)),
                alarms,
            }));
        }
        let entry = InternalRequest {
            auth: None,
            request: Some(Internal::Alarm(req)),
        };
        match self
            .0
            .node
            .propose(Bytes::from(entry.encode_to_vec()))
            .await
        {
            Ok(Ok(mvcc::Response::Alarm(mut resp))) => {
                self.0.stamp(&mut resp.header);
                Ok(Response::new(resp))
            }
            Ok(Ok(_)) => Err(Status::internal(
                "etcdserver: unexpected apply result for alarm",
            )),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// raftkv's store lives in memory and compaction frees its space at once, so there is
    /// no file to rewrite. What can be made smaller is the member's disk: Defragment takes
    /// a snapshot of everything applied and drops the WAL segments it covers, and answers
    /// once that is durable. Only this member, as etcd's.
    async fn defragment(
        &self,
        r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        crate::auth::admin_for_maintenance(&self.0, &r).await?;
        self.0.node.compact_storage().await?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.0.header(0)),
        }))
    }

    /// A point-in-time copy of this member's applied state as an etcd backend
    /// (`crate::backup`: a bbolt file etcdctl's `snapshot status|restore` read, carrying
    /// raftkv's own image too), in 32 KiB chunks counting down `remaining_bytes`, then the
    /// SHA-256 of all of it, as etcd sends.
    async fn snapshot(
        &self,
        r: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        // The whole key space, users and password hashes included: an administrator's.
        crate::auth::admin_for_maintenance(&self.0, &r).await?;
        let started = Instant::now();
        // An O(1) view under the lock (`Store::view`), encoded outside it.
        let (store, applied) = {
            let sm = self.0.state()?;
            (sm.store.view(), self.0.node.status.applied())
        };
        let payload = tokio::task::spawn_blocking(move || crate::backup::payload(&store, applied))
            .await
            .map_err(|e| Status::internal(format!("snapshot encoding failed: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let payload = Bytes::from(payload);
        let sha = crate::backup::trailer(&payload);
        let header = self.0.header(0);
        let total = payload.len();
        let mut messages = Vec::with_capacity(total / SNAPSHOT_CHUNK + 2);
        let mut sent = 0;
        while sent < total {
            let n = SNAPSHOT_CHUNK.min(total - sent);
            messages.push(Ok(SnapshotResponse {
                header: Some(header),
                remaining_bytes: (total - sent - n) as u64,
                blob: payload.slice(sent..sent + n),
                version: String::new(),
            }));
            sent += n;
        }
        messages.push(Ok(SnapshotResponse {
            header: Some(header),
            remaining_bytes: 0,
            blob: Bytes::copy_from_slice(&sha),
            version: String::new(),
        }));
        use futures_util::StreamExt;
        let done = futures_util::stream::once(async move {
            crate::metrics::metrics()
                .backend_snapshot
                .observe(started.elapsed().as_secs_f64());
            None
        });
        let stream = futures_util::stream::iter(messages.into_iter().map(Some))
            .chain(done)
            .filter_map(|m| async move { m });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        r: Request<proto::etcdserverpb::MoveLeaderRequest>,
    ) -> Result<Response<proto::etcdserverpb::MoveLeaderResponse>, Status> {
        super::move_leader::move_leader(&self.0, r.into_inner()).await
    }

    /// etcd's testing aid: a checksum of this member's whole store (`Store::hash_all`),
    /// root only when auth is on, as etcd's.
    async fn hash(&self, r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        crate::auth::admin_for_maintenance(&self.0, &r).await?;
        // An O(1) view under the lock; the whole store is serialised outside it.
        let store = self.0.state()?.store.view();
        let header = self.0.header(store.current_revision());
        let hash = tokio::task::spawn_blocking(move || store.hash_all())
            .await
            .map_err(|e| Status::internal(format!("hash failed: {e}")))?;
        Ok(Response::new(HashResponse {
            header: Some(header),
            hash,
        }))
    }

    async fn hash_kv(&self, r: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        crate::auth::admin_for_maintenance(&self.0, &r).await?;
        let rev = r.into_inner().revision;
        // An O(1) view under the lock; the hash walks the whole store outside it.
        let store = self.0.state()?.store.view();
        let h = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(|e| Status::internal(format!("hash failed: {e}")))?
            .map_err(Status::from)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.0.header(0)),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }
}

pub struct ClusterService(pub Context);

impl ClusterService {
    /// The replicated member list as etcd shows it, the same on every member: a member's
    /// name and client URLs are the ones it last published through the log
    /// (`crate::publish`), also while it is down; a founder that never published shows the
    /// name `--initial-cluster` gave it and no client URLs, a member added at runtime that
    /// never started shows neither (etcdctl's `unstarted`).
    pub(crate) fn members(&self) -> Result<Vec<Member>, Status> {
        Ok(self.0.state()?.members.to_proto())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.0.header(0)),
            members: self.members()?,
        }))
    }

    async fn member_remove(
        &self,
        r: Request<proto::etcdserverpb::MemberRemoveRequest>,
    ) -> Result<Response<proto::etcdserverpb::MemberRemoveResponse>, Status> {
        super::member_change::member_remove(self, r).await
    }

    async fn member_add(
        &self,
        r: Request<proto::etcdserverpb::MemberAddRequest>,
    ) -> Result<Response<proto::etcdserverpb::MemberAddResponse>, Status> {
        super::member_change::member_add(self, r).await
    }

    async fn member_promote(
        &self,
        r: Request<proto::etcdserverpb::MemberPromoteRequest>,
    ) -> Result<Response<proto::etcdserverpb::MemberPromoteResponse>, Status> {
        super::member_change::member_promote(self, r).await
    }

    async fn member_update(
        &self,
        r: Request<proto::etcdserverpb::MemberUpdateRequest>,
    ) -> Result<Response<proto::etcdserverpb::MemberUpdateResponse>, Status> {
        super::member_change::member_update(self, r).await
    }
}

/// Implements the services we do not support yet; every method answers UNIMPLEMENTED.
pub struct UnimplementedService;

#[tonic::async_trait]
impl proto::etcdserverpb::watch_server::Watch for UnimplementedService {}
#[tonic::async_trait]
impl proto::etcdserverpb::lease_server::Lease for UnimplementedService {}
#[tonic::async_trait]
impl proto::etcdserverpb::auth_server::Auth for UnimplementedService {}
