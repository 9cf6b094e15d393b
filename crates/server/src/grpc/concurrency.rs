//! `v3lockpb.Lock` and `v3electionpb.Election`: etcd's lock and election recipes run on
//! the server, built from the same pieces a client recipe uses — a lease-bound key per
//! contender under `<name>/`, created in a Txn, and a wait (on this member's watch hub)
//! until every contender with an older create revision is gone.
//!
//! Every read and write acts as the caller (`crate::auth::who`), as etcd's server-side
//! recipes run with the caller's credentials: with auth enabled a lock or an election needs
//! READ and WRITE on its `<name>/` prefix.
//!
//! The owner key's create revision is the fencing token: a lock holder must make its
//! writes conditional on it (docs/lease.md), since a lease can expire while a paused
//! holder still believes it holds the lock.

use bytes::Bytes;
use mvcc::Response as Applied;
use proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use proto::mvccpb::KeyValue;
use proto::raftkvpb::internal_request::Request as Internal;
use proto::raftkvpb::RequestAuth;
use proto::v3electionpb::election_server::Election;
use proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use proto::v3lockpb::lock_server::Lock;
use proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::Context;
use crate::watch::hub::WatchRange;
use crate::watch::WatchHub;

/// etcd's election errors are plain errors, so gRPC's UNKNOWN code.
const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
/// etcd's `ErrMissingLeaderKey` (a plain error, so code Unknown) for Proclaim and Resign.
const MISSING_LEADER: &str = "\"leader\" field must be provided";

/// The TTL of the session lease granted for a Lock or Campaign call that names no lease:
/// etcd's servers open a `concurrency` session with its default TTL (60 s), and do not keep
/// it alive (the session is orphaned), so the key goes 60 s later unless unlocked first.
const SESSION_TTL: i64 = 60;

/// Who a call acts as (`None` with auth disabled).
type Who = Option<RequestAuth>;

/// etcd's recipes get the refusal from their own client call and return it as a plain
/// error, which gRPC sends as `UNKNOWN` with the same text (`etcdserver: permission
/// denied`, checked against etcd 3.4 by `tests/lock_election_auth.rs`).
fn recipe_error(s: Status) -> Status {
    if s.code() == tonic::Code::PermissionDenied {
        Status::unknown(s.message().to_string())
    } else {
        s
    }
}

#[derive(Clone)]
pub struct Concurrency {
    pub ctx: Context,
    pub hub: Arc<WatchHub>,
}

fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

fn contender_prefix(name: &[u8]) -> Bytes {
    let mut p = name.to_vec();
    p.push(b'/');
    Bytes::from(p)
}

fn contender_key(prefix: &[u8], lease: i64) -> Bytes {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    Bytes::from(k)
}

fn created_at(key: &Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

fn put_op(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn get_op(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

impl Concurrency {
    /// The lease a contender's key is bound to: the caller's, or a fresh
    /// [`SESSION_TTL`] lease when the call names none (lease 0), as etcd's servers do.
    async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = super::lease::grant(
            &self.ctx,
            proto::etcdserverpb::LeaseGrantRequest {
                ttl: SESSION_TTL,
                id: 0,
            },
        )
        .await?;
        Ok(granted.id)
    }

    async fn txn(&self, who: &Who, txn: TxnRequest) -> Result<TxnResponse, Status> {
        match super::kv::propose(&self.ctx, Internal::Txn(txn), who.clone())
            .await
            .map_err(recipe_error)?
        {
            Applied::Txn(r) => Ok(r),
            _ => Err(Status::internal("etcdserver: unexpected apply result")),
        }
    }

    /// READ on everything under `prefix` (the recipe reads the other contenders' keys).
    fn check_read(&self, who: &Who, prefix: &Bytes) -> Result<(), Status> {
        let sm = self.ctx.state()?;
        mvcc::auth::RequestChecker::new(sm.store.auth(), who.as_ref())
            .read(prefix, &prefix_end(prefix))
            .map_err(|e| recipe_error(Status::from(mvcc::MvccError::Auth(e))))
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        self.ctx.header(revision)
    }

    /// The live key under `prefix` with the smallest create revision (etcd's
    /// `WithFirstCreate`), from the local store.
    fn first_created(&self, prefix: &Bytes) -> Result<Option<KeyValue>, Status> {
        let sm = self.ctx.state()?;
        let r = sm
            .store
            .range(&RangeRequest {
                key: prefix.clone(),
                range_end: prefix_end(prefix),
                limit: 1,
                sort_order: SortOrder::Ascend as i32,
                sort_target: SortTarget::Create as i32,
                ..Default::default()
            })
            .map_err(Status::from)?;
        Ok(r.kvs.into_iter().next())
    }

    /// Whether a live key under `prefix` was created at or before `max_rev`.
    fn older_contender(&self, prefix: &Bytes, max_rev: i64) -> Result<bool, Status> {
        Ok(self
            .first_created(prefix)?
            .is_some_and(|kv| kv.create_revision <= max_rev))
    }

    /// Waits until no key under `prefix` has a create revision ≤ `max_rev`. Watches the
    /// prefix on this member's hub before looking, so no deletion slips between.
    async fn wait_deletes(&self, prefix: &Bytes, max_rev: i64) -> Result<(), Status> {
        let mut reg = self.hub.register();
        let _unregister = Unregister(self.hub.clone(), reg.id);
        self.hub
            .add_range(reg.id, WatchRange::new(prefix, &prefix_end(prefix)));
        if !self.ctx.skip_read_index {
            self.ctx.node.read_barrier().await?;
        }
        loop {
            if !self.older_contender(prefix, max_rev)? {
                return Ok(());
            }
            tokio::select! {
                batch = reg.rx.recv() => {
                    if batch.is_none() {
                        return Err(Status::unavailable("etcdserver: server stopped"));
                    }
                }
                _ = reg.victim.marked() => {
                    reg.victim.take();
                }
            }
        }
    }

    /// Creates (or finds) this contender's key; returns its create revision and current
    /// value, and the header of the txn.
    async fn enter(
        &self,
        who: &Who,
        key: &Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<(i64, Option<KeyValue>, ResponseHeader), Status> {
        let resp = self
            .txn(
                who,
                TxnRequest {
                    compare: vec![created_at(key, 0)],
                    success: vec![put_op(key, value, lease)],
                    failure: vec![get_op(key)],
                },
            )
            .await?;
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if resp.succeeded {
            return Ok((rev, None, self.header(rev)));
        }
        let existing = resp
            .responses
            .into_iter()
            .next()
            .and_then(|r| match r.response {
                Some(response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
                _ => None,
            });
        match existing {
            Some(kv) => Ok((kv.create_revision, Some(kv), self.header(rev))),
            // Deleted between the compare and now (lease expired): as etcd, try again.
            None => Err(Status::unavailable("etcdserver: request timed out")),
        }
    }

    async fn delete(&self, who: &Who, key: &Bytes) -> Result<ResponseHeader, Status> {
        let request = Internal::DeleteRange(DeleteRangeRequest {
            key: key.clone(),
            ..Default::default()
        });
        match super::kv::propose(&self.ctx, request, who.clone())
            .await
            .map_err(recipe_error)?
        {
            Applied::DeleteRange(r) => Ok(self.header(r.header.map_or(0, |h| h.revision))),
            _ => Err(Status::internal("etcdserver: unexpected apply result")),
        }
    }
}

struct Unregister(Arc<WatchHub>, u64);

impl Drop for Unregister {
    fn drop(&mut self) {
        self.0.unregister(self.1);
    }
}

/// Deletes a contender's key if the call that created it is dropped (the client gave up)
/// before it finished, as etcd's recipe removes its key on a failed wait.
struct Withdraw {
    svc: Option<Concurrency>,
    who: Who,
    key: Bytes,
}

impl Withdraw {
    fn done(mut self) {
        self.svc = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(svc) = self.svc.take() {
            let (key, who) = (self.key.clone(), self.who.clone());
            tokio::spawn(async move {
                let _ = svc.delete(&who, &key).await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for Concurrency {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.ctx, &request).await?;
        let req = request.into_inner();
        let prefix = contender_prefix(&req.name);
        self.check_read(&who, &prefix)?;
        let lease = self.session_lease(req.lease).await?;
        let key = contender_key(&prefix, lease);
        let (rev, _, header) = self.enter(&who, &key, Bytes::new(), lease).await?;
        let withdraw = Withdraw {
            svc: Some(self.clone()),
            who,
            key: key.clone(),
        };
        // On an error `withdraw` deletes the key on its way out.
        self.wait_deletes(&prefix, rev - 1).await?;
        withdraw.done();
        Ok(Response::new(LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.ctx, &request).await?;
        let header = self.delete(&who, &request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse {
            header: Some(header),
        }))
    }
}

#[tonic::async_trait]
impl Election for Concurrency {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.ctx, &request).await?;
        let req = request.into_inner();
        let prefix = contender_prefix(&req.name);
        self.check_read(&who, &prefix)?;
        let lease = self.session_lease(req.lease).await?;
        let key = contender_key(&prefix, lease);
        let (rev, existing, mut header) = self.enter(&who, &key, req.value.clone(), lease).await?;
        let withdraw = Withdraw {
            svc: Some(self.clone()),
            who: who.clone(),
            key: key.clone(),
        };
        if existing.is_some_and(|kv| kv.value != req.value) {
            let r = self
                .txn(
                    &who,
                    TxnRequest {
                        compare: vec![created_at(&key, rev)],
                        success: vec![put_op(&key, req.value.clone(), lease)],
                        failure: vec![],
                    },
                )
                .await?;
            if !r.succeeded {
                return Err(Status::unknown(NOT_LEADER));
            }
            header = self.header(r.header.map_or(0, |h| h.revision));
        }
        self.wait_deletes(&prefix, rev - 1).await?;
        withdraw.done();
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.ctx, &request).await?;
        let req = request.into_inner();
        let Some(leader) = req.leader else {
            return Err(Status::unknown(MISSING_LEADER));
        };
        let r = self
            .txn(
                &who,
                TxnRequest {
                    compare: vec![created_at(&leader.key, leader.rev)],
                    success: vec![put_op(&leader.key, req.value, leader.lease)],
                    failure: vec![],
                },
            )
            .await?;
        if !r.succeeded {
            return Err(Status::unknown(NOT_LEADER));
        }
        Ok(Response::new(ProclaimResponse {
            header: Some(self.header(r.header.map_or(0, |h| h.revision))),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.ctx, &request).await?;
        let prefix = contender_prefix(&request.into_inner().name);
        if !self.ctx.skip_read_index {
            self.ctx.node.read_barrier().await?;
        }
        self.check_read(&who, &prefix)?;
        match self.first_created(&prefix)? {
            Some(kv) => Ok(Response::new(LeaderResponse {
                header: Some(self.header(0)),
                kv: Some(kv),
            })),
            None => Err(Status::unknown(NO_LEADER)),
        }
    }

    /// Streams the leader's key-value now (once there is one) and after every change of
    /// leader or of its value, until the client goes away.
    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.ctx, &request).await?;
        let prefix = contender_prefix(&request.into_inner().name);
        self.check_read(&who, &prefix)?;
        let svc = self.clone();
        let (tx, rx) = mpsc::channel::<Result<LeaderResponse, Status>>(16);
        tokio::spawn(async move {
            let mut reg = svc.hub.register();
            let _unregister = Unregister(svc.hub.clone(), reg.id);
            svc.hub
                .add_range(reg.id, WatchRange::new(&prefix, &prefix_end(&prefix)));
            if !svc.ctx.skip_read_index {
                if let Err(e) = svc.ctx.node.read_barrier().await {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
            let mut last: Option<(Bytes, i64)> = None;
            loop {
                match svc.first_created(&prefix) {
                    Ok(Some(kv)) => {
                        let seen = (kv.key.clone(), kv.mod_revision);
                        if last.as_ref() != Some(&seen) {
                            last = Some(seen);
                            let resp = LeaderResponse {
                                header: Some(svc.header(0)),
                                kv: Some(kv),
                            };
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    batch = reg.rx.recv() => if batch.is_none() { return },
                    _ = reg.victim.marked() => { reg.victim.take(); }
                }
            }
        });
        let out = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.ctx, &request).await?;
        let Some(leader) = request.into_inner().leader else {
            return Err(Status::unknown(MISSING_LEADER));
        };
        let r = self
            .txn(
                &who,
                TxnRequest {
                    compare: vec![created_at(&leader.key, leader.rev)],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestDeleteRange(
                            DeleteRangeRequest {
                                key: leader.key.clone(),
                                ..Default::default()
                            },
                        )),
                    }],
                    failure: vec![],
                },
            )
            .await?;
        Ok(Response::new(ResignResponse {
            header: Some(self.header(r.header.map_or(0, |h| h.revision))),
        }))
    }
}
