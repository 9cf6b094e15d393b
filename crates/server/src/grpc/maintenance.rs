//! `etcdserverpb.Maintenance` (Status, Alarm GET, HashKV), `etcdserverpb.Cluster`
//! (MemberList), and the services that only answer `UNIMPLEMENTED` for now.

use proto::etcdserverpb::cluster_server::Cluster;
use proto::etcdserverpb::maintenance_server::Maintenance;
use proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmResponse, HashKvRequest, HashKvResponse, Member,
    MemberListRequest, MemberListResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use super::{Context, ETCD_VERSION};
use crate::config::InitialMember;
use crate::node::StateMachine;

/// The static part of the membership (from the initial configuration) plus our own
/// client URLs; peers' client URLs come from the transport's handshakes.
pub struct Membership {
    pub members: Vec<InitialMember>,
    pub self_id: u64,
    pub self_client_urls: Vec<String>,
}

pub struct MaintenanceService(pub Context);

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
        let mut errors = Vec::new();
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
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 2 * 1024 * 1024 * 1024,
            downgrade_info: None,
        }))
    }

    async fn alarm(&self, r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        match AlarmAction::try_from(r.into_inner().action) {
            Ok(AlarmAction::Get) => Ok(Response::new(AlarmResponse {
                header: Some(self.0.header(0)),
                alarms: vec![],
            })),
            _ => Err(Status::unimplemented(
                "alarm activation is not supported yet",
            )),
        }
    }

    async fn move_leader(
        &self,
        r: Request<proto::etcdserverpb::MoveLeaderRequest>,
    ) -> Result<Response<proto::etcdserverpb::MoveLeaderResponse>, Status> {
        super::move_leader::move_leader(&self.0, r.into_inner()).await
    }

    async fn hash_kv(&self, r: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let rev = r.into_inner().revision;
        let h = {
            let sm = self
                .0
                .node
                .state
                .read()
                .map_err(|_| Status::internal("state lock poisoned"))?;
            sm.store.hash_kv(rev).map_err(Status::from)?
        };
        Ok(Response::new(HashKvResponse {
            header: Some(self.0.header(0)),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }
}

pub struct ClusterService(pub Context);

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let m = &self.0.membership;
        let directory = self.0.transport.directory();
        let members = m
            .members
            .iter()
            .map(|im| {
                let client_urls = if im.id == m.self_id {
                    m.self_client_urls.clone()
                } else {
                    directory
                        .get(&im.id)
                        .map(|p| p.client_urls.clone())
                        .unwrap_or_default()
                };
                Member {
                    id: im.id,
                    name: im.name.clone(),
                    peer_ur_ls: im.peer_urls.clone(),
                    client_ur_ls: client_urls,
                    is_learner: false,
                }
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            header: Some(self.0.header(0)),
            members,
        }))
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
