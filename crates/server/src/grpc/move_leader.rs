//! `Maintenance/MoveLeader`: hand leadership to another voter (the core's leader transfer,
//! thesis §3.10), with etcd's checks and errors (`etcdserver/v3_server.go` `MoveLeader`).
//!
//! Order of the checks is etcd's: a member that does not lead answers *not leader* (etcdctl
//! looks for the leader's endpoint first); a target that is not a voting member answers
//! *bad leader transferee*. Then the transfer starts, and the call returns once this member
//! sees the target lead, or fails with etcd's timeout error after the request timeout. A
//! target that already leads (etcdctl called again after a successful move) succeeds at once.

use std::time::{Duration, Instant};

use proto::etcdserverpb::{MoveLeaderRequest, MoveLeaderResponse};
use tonic::{Response, Status};

use super::Context;
use crate::errors::ServerError;

/// How often the handler looks at the leader while the transfer runs.
const POLL: Duration = Duration::from_millis(10);

pub async fn move_leader(
    ctx: &Context,
    req: MoveLeaderRequest,
) -> Result<Response<MoveLeaderResponse>, Status> {
    let me = ctx.node.id;
    let status = &ctx.node.status;
    if status.leader() != Some(me) {
        return Err(ServerError::NotLeader.into());
    }
    let target = req.target_id;
    let voter = ctx
        .node
        .state
        .read()
        .map(|sm| sm.members.get(target).is_some_and(|m| !m.is_learner))
        .unwrap_or(false);
    if !voter {
        return Err(ServerError::BadLeaderTransferee.into());
    }
    if target != me {
        ctx.node.transfer_leader(target).await?;
        let deadline = Instant::now() + ctx.node.request_timeout();
        while status.leader() != Some(target) {
            if Instant::now() >= deadline {
                return Err(ServerError::LeaderTransferTimeout.into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(Response::new(MoveLeaderResponse {
        header: Some(ctx.header(0)),
    }))
}
