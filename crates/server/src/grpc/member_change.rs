//! `Cluster/MemberRemove` (and the shared path of every membership change): checked by the
//! leader against the replicated member list, placed in the log as a `ConfChange`, one at
//! a time, and answered once the leader applied it (docs/membership.md).
//!
//! Any member takes the call: a follower passes the change to the leader over the peer
//! transport and waits for its answer, then for its own apply, so the members it answers
//! with include the change (etcd's member answers after its own apply too).

use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::etcdserverpb::{MemberRemoveRequest, MemberRemoveResponse};
use raft::{ConfChange, ConfChangeKind};
use tonic::{Request, Response, Status};

use super::maintenance::ClusterService;
use crate::errors::ServerError;

/// Wait between attempts while an earlier change is still in flight (or a new leader has
/// not committed an entry of its term yet): both pass within a round trip or two.
const RETRY: Duration = Duration::from_millis(20);

/// How long a peer must have been connected to count as active for the strict check
/// (etcd's `HealthInterval`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Have `cc` made, retrying while it must wait its turn, until the request timeout.
pub(crate) async fn make_change(svc: &ClusterService, cc: ConfChange) -> Result<(), Status> {
    let node = &svc.0.node;
    let deadline = Instant::now() + node.request_timeout();
    loop {
        match node.propose_change(cc.clone()).await {
            Ok(()) => break,
            Err(r) if r.retry && Instant::now() + RETRY < deadline => {
                tokio::time::sleep(RETRY).await
            }
            Err(r) if r.retry => return Err(ServerError::Timeout.into()),
            Err(r) => return Err(r.into()),
        }
    }
    // The leader applied it; make our own list show it too. Best effort: a member that
    // removed itself may stop meanwhile, and its answer is still right.
    let _ = node.read_barrier().await;
    Ok(())
}

/// etcd's `--strict-reconfig-check` for a removal, as the member that took the call sees
/// the cluster (etcd's `mayRemoveMember`): removing a learner or a member this one cannot
/// reach is always allowed; otherwise the voters left must include a quorum of started
/// ones, and enough voters connected for [`HEALTH_INTERVAL`] must remain to keep a
/// quorum. As in etcd, a removal right after the cluster (or a connection) came up is
/// refused as an "unhealthy cluster" for those first seconds.
fn may_remove(svc: &ClusterService, id: u64) -> Result<(), Status> {
    let ctx = &svc.0;
    if !ctx.membership.strict_reconfig_check {
        return Ok(());
    }
    let me = ctx.node.id;
    let directory = ctx.transport.directory();
    let sm = ctx
        .node
        .state
        .read()
        .map_err(|_| Status::internal("state lock poisoned"))?;
    let list = &sm.members;
    if list.get(id).is_none_or(|m| m.is_learner) {
        return Ok(()); // unknown ids get "member not found" from the leader
    }
    let voters: Vec<u64> = list
        .members()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    let started = |v: &u64| {
        *v == me
            || list.get(*v).is_some_and(|m| !m.name.is_empty())
            || directory.get(v).is_some_and(|p| !p.name.is_empty())
    };
    let remaining: Vec<u64> = voters.iter().copied().filter(|v| *v != id).collect();
    let started_left = remaining.iter().filter(|v| started(v)).count();
    if started_left < remaining.len() / 2 + 1 {
        return Err(Status::failed_precondition(
            "etcdserver: re-configuration failed due to not enough started members",
        ));
    }
    if id != me && !ctx.transport.is_connected(id) {
        return Ok(()); // a member that is down is not part of the active quorum
    }
    let healthy_since = Instant::now().checked_sub(HEALTH_INTERVAL);
    let active = voters
        .iter()
        .filter(|v| {
            **v == me
                || directory.get(v).is_some_and(|p| {
                    p.connected && p.connected_since.is_some_and(|t| Some(t) <= healthy_since)
                })
        })
        .count();
    if active.saturating_sub(1) < 1 + voters.len().saturating_sub(1) / 2 {
        return Err(Status::unavailable("etcdserver: unhealthy cluster"));
    }
    Ok(())
}

pub(crate) async fn member_remove(
    svc: &ClusterService,
    r: Request<MemberRemoveRequest>,
) -> Result<Response<MemberRemoveResponse>, Status> {
    crate::auth::require_admin(&svc.0, &r).await?;
    let id = r.into_inner().id;
    may_remove(svc, id)?;
    let cc = ConfChange {
        kind: ConfChangeKind::Remove,
        node: id,
        context: Bytes::new(),
    };
    make_change(svc, cc).await?;
    Ok(Response::new(MemberRemoveResponse {
        header: Some(svc.0.header(0)),
        members: svc.members()?,
    }))
}
