//! `raftkvpb.Peers/AdmitPeer` (`raftkv peer admit`): an operator tells every member which
//! incarnation a peer has, undoing an outsider's pre-claim of a member that had not started
//! yet (docs/security.md, "A pre-claimed member"). Not part of etcd's API.
//!
//! The call becomes a log entry (`InternalRequest` field 41), so every member, including one
//! that is down now, records the same incarnation at the same point of the log; applying it
//! rewrites the member's local record and closes connections admitted under another
//! incarnation (`crate::kv`, `transport::Incarnations::admit`).

use proto::raftkvpb::internal_request::Request as Internal;
use proto::raftkvpb::peers_server::Peers;
use proto::raftkvpb::{AdmitPeerResponse, PeerIncarnation};
use tonic::{Request, Response, Status};

use super::kv::propose_as;
use super::Context;

pub struct PeersService(pub Context);

#[tonic::async_trait]
impl Peers for PeersService {
    async fn admit_peer(
        &self,
        r: Request<PeerIncarnation>,
    ) -> Result<Response<AdmitPeerResponse>, Status> {
        // Checked here for a prompt answer, and again when applied, by every member alike:
        // the administrator (mvcc::auth::check) and the member (crate::admissions::check).
        crate::auth::require_admin(&self.0, &r).await?;
        let req = *r.get_ref();
        crate::admissions::check(&self.0.state()?.members, &req)?;
        if req.member_id == self.0.node.id {
            // Admitting oneself would change nothing: nobody checks its own incarnation.
            return Err(Status::not_found(
                "raftkv: a member cannot be admitted by itself; ask another member",
            ));
        }
        match propose_as(&self.0, &r, Internal::AdmitPeer(req)).await? {
            mvcc::Response::AdmitPeer { .. } => Ok(Response::new(AdmitPeerResponse {
                header: Some(self.0.header(0)),
            })),
            // Refused at apply: the member was removed in between.
            mvcc::Response::External(Err((code, message))) => {
                Err(Status::new(tonic::Code::from_i32(code), message))
            }
            _ => Err(Status::internal(
                "raftkv: unexpected apply result for a peer admission",
            )),
        }
    }
}
