//! `Cluster/MemberAdd`, `MemberRemove`, `MemberPromote` (and the shared path of every
//! membership change), and `MemberUpdate`. A change of the voters and learners is checked by the
//! leader against the replicated member list, placed in the log as a `ConfChange`, one at
//! a time, and answered once the leader applied it (docs/membership.md).
//!
//! Any member takes the call: a follower passes the change to the leader over the peer
//! transport and waits for its answer, then for its own apply, so the members it answers
//! with include the change (etcd's member answers after its own apply too).

use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use proto::raftkvpb::internal_request::Request as Internal;
use raft::{ConfChange, ConfChangeKind};
use tonic::{Request, Response, Status};

use super::kv::propose_as;
use super::maintenance::ClusterService;
use crate::errors::ServerError;
use crate::members::{encode_context, MemberError, MemberRecord};

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
    let sm = ctx.state()?;
    let list = &sm.members;
    // Started: published a name (etcd's `IsStarted`), or this member itself.
    if list.get(id).is_none_or(|m| m.is_learner) {
        return Ok(()); // unknown ids get "member not found" from the leader
    }
    let voters: Vec<u64> = list
        .members()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    let started = |v: &u64| *v == me || list.get(*v).is_some_and(|m| !m.name.is_empty());
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

/// etcd's `--strict-reconfig-check` for an add (etcd's `mayAddMember`): a new voter needs a
/// quorum of started voters among the voters it joins, and this member must be connected
/// to every voter. Unlike a removal, "connected" is "connected now", not "for 5 s": etcd's
/// own e2e suite adds a member right after the cluster started.
fn may_add(svc: &ClusterService, is_learner: bool) -> Result<(), Status> {
    let ctx = &svc.0;
    if !ctx.membership.strict_reconfig_check {
        return Ok(());
    }
    let me = ctx.node.id;
    let sm = ctx.state()?;
    let voters: Vec<&MemberRecord> = sm.members.members().filter(|m| !m.is_learner).collect();
    // Started: published a name (etcd's `IsStarted`), or this member itself.
    let started = voters
        .iter()
        .filter(|m| m.id == me || !m.name.is_empty())
        .count();
    // etcd lets a one-member cluster grow to two (its documented way to restore a cluster).
    let one_to_two = voters.len() == 1 && started == 1;
    let voters_after = voters.len() + 1;
    if !is_learner && !one_to_two && started < voters_after / 2 + 1 {
        return Err(Status::failed_precondition(
            "etcdserver: re-configuration failed due to not enough started members",
        ));
    }
    if !voters
        .iter()
        .all(|m| m.id == me || ctx.transport.is_connected(m.id))
    {
        return Err(Status::unavailable("etcdserver: unhealthy cluster"));
    }
    Ok(())
}

/// A fresh member id: random, never 0, never one the list holds or held. (etcd derives it
/// from the peer URLs, the cluster token and the time; only uniqueness matters.)
fn new_member_id(svc: &ClusterService, peer_urls: &[String]) -> Result<u64, Status> {
    use std::hash::{BuildHasher, Hash, Hasher};
    let sm = svc.0.state()?;
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        peer_urls.hash(&mut h);
        std::time::SystemTime::now().hash(&mut h);
        let id = h.finish();
        if id != 0 && sm.members.get(id).is_none() && !sm.members.is_removed(id) {
            return Ok(id);
        }
    }
}

pub(crate) async fn member_add(
    svc: &ClusterService,
    r: Request<MemberAddRequest>,
) -> Result<Response<MemberAddResponse>, Status> {
    crate::auth::require_admin(&svc.0, &r).await?;
    let req = r.into_inner();
    let record = add_member(svc, req.peer_ur_ls, req.is_learner).await?;
    Ok(Response::new(MemberAddResponse {
        header: Some(svc.0.header(0)),
        member: Some(record.to_proto()),
        members: svc.members()?,
    }))
}

/// `MemberAdd` once the caller is allowed to make it: also the path of a member that asks
/// to be added (`crate::auto_join`), which the peer port authenticated instead.
pub(crate) async fn add_member(
    svc: &ClusterService,
    mut peer_urls: Vec<String>,
    is_learner: bool,
) -> Result<MemberRecord, Status> {
    peer_urls.sort();
    let id = new_member_id(svc, &peer_urls)?;
    // etcd's order: bad URLs, then the health check, then the request's other mistakes
    // (taken URLs, too many learners), which the leader checks again before placing it.
    let checked =
        svc.0
            .state()?
            .members
            .check_add(id, &peer_urls, is_learner, svc.0.membership.max_learners);
    // etcd parses the URLs before anything else.
    if let Err(e @ MemberError::BadUrls) = &checked {
        return Err(e.to_status());
    }
    may_add(svc, is_learner)?;
    checked.map_err(|e| e.to_status())?;
    let record = MemberRecord {
        id,
        name: String::new(),
        peer_urls,
        client_urls: Vec::new(),
        is_learner,
    };
    // A voter too joins the configuration as a learner; the leader promotes it once it
    // caught up (crate::node), so one that never starts costs the cluster nothing. The
    // list shows it as a voter from the start, as etcd does.
    let cc = ConfChange {
        kind: ConfChangeKind::AddLearner,
        node: id,
        context: encode_context(&record),
    };
    make_change(svc, cc).await?;
    Ok(record)
}

/// A learner becomes a voter: an `AddVoter` of its id (no context: its attributes stay).
/// Whether it is in sync with the leader is the leader's check (`crate::node`).
pub(crate) async fn member_promote(
    svc: &ClusterService,
    r: Request<MemberPromoteRequest>,
) -> Result<Response<MemberPromoteResponse>, Status> {
    crate::auth::require_admin(&svc.0, &r).await?;
    let id = r.into_inner().id;
    let cc = ConfChange {
        kind: ConfChangeKind::AddVoter,
        node: id,
        context: Bytes::new(),
    };
    make_change(svc, cc).await?;
    Ok(Response::new(MemberPromoteResponse {
        header: Some(svc.0.header(0)),
        members: svc.members()?,
    }))
}

/// A member's new peer URLs. Not a Raft configuration change (nobody joins or leaves): an
/// ordinary entry (`InternalRequest.member_update`), forwarded to the leader like any write,
/// that every member applies to its member list, checking it again there (unknown or removed
/// member, a URL another member has, bad URLs) so that all refuse it alike; every member's
/// transport then dials that member at its new URLs (`crate::kv`, `crate::node`).
///
/// etcd 3.4 takes any string as a URL here and its members then fail to parse it when
/// redialling; raftkv refuses bad URLs up front, with the text `MemberAdd` uses.
pub(crate) async fn member_update(
    svc: &ClusterService,
    r: Request<MemberUpdateRequest>,
) -> Result<Response<MemberUpdateResponse>, Status> {
    crate::auth::require_admin(&svc.0, &r).await?;
    let req = r.get_ref().clone();
    let checked = svc.0.state()?.members.check_update(req.id, &req.peer_ur_ls);
    if let Err(e @ MemberError::BadUrls) = checked {
        return Err(e.to_status());
    }
    // The caller's identity travels with the entry: every member checks it again at apply
    // (`crate::kv`), so a caller who lost `root` in between changes nothing.
    match propose_as(&svc.0, &r, Internal::MemberUpdate(req)).await? {
        mvcc::Response::External(Ok(())) => Ok(Response::new(MemberUpdateResponse {
            header: Some(svc.0.header(0)),
            members: svc.members()?,
        })),
        mvcc::Response::External(Err((code, message))) => {
            Err(Status::new(tonic::Code::from_i32(code), message))
        }
        _ => Err(Status::internal(
            "etcdserver: unexpected apply result for a member update",
        )),
    }
}
