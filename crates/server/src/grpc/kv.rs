//! `etcdserverpb.KV`.

use bytes::Bytes;
use mvcc::auth::RequestChecker;
use mvcc::{MvccError, Response as Applied};
use prost::Message as _;
use proto::etcdserverpb::kv_server::Kv;
use proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest, RequestAuth};
use tonic::{Request, Response, Status};

use super::Context;
use crate::errors::ServerError;

pub struct KvService(pub Context);

fn mvcc_status(e: MvccError) -> Status {
    Status::from(e)
}

/// Validate, encode, size-check and replicate one request made as `who` (its permissions
/// are checked when it is applied); return what applying it gave.
pub async fn propose(
    ctx: &Context,
    request: Internal,
    who: Option<RequestAuth>,
) -> Result<Applied, Status> {
    let limits = mvcc::Limits {
        max_txn_ops: ctx.max_txn_ops,
    };
    mvcc::validate::check_request(&request, &limits).map_err(mvcc_status)?;
    check_quota(ctx, &request).await?;
    let entry = InternalRequest {
        auth: who,
        request: Some(request),
    };
    let data = entry.encode_to_vec();
    if data.len() > ctx.max_request_bytes {
        return Err(ServerError::TooLarge.into());
    }
    match ctx.node.propose(Bytes::from(data)).await {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(e)) => Err(mvcc_status(e)),
        Err(e) => Err(e.into()),
    }
}

/// etcd's quota check before proposing: a write that would take the store to its quota
/// raises the NOSPACE alarm (through the log, for this member) and is refused.
async fn check_quota(ctx: &Context, request: &Internal) -> Result<(), Status> {
    if mvcc::quota_cost(request) == 0 {
        return Ok(());
    }
    let size = ctx.state()?.store.approximate_size();
    if ctx.quota.admits(size, request) {
        return Ok(());
    }
    let alarm = proto::etcdserverpb::AlarmRequest {
        action: proto::etcdserverpb::alarm_request::AlarmAction::Activate as i32,
        member_id: ctx.node.id,
        alarm: proto::etcdserverpb::AlarmType::Nospace as i32,
    };
    let entry = InternalRequest {
        auth: None,
        request: Some(Internal::Alarm(alarm)),
    };
    if let Err(e) = ctx.node.propose(Bytes::from(entry.encode_to_vec())).await {
        tracing::warn!(error = %e, "cannot raise the NOSPACE alarm");
    }
    Err(mvcc_status(MvccError::NoSpace))
}

/// [`propose`] as the sender of `request`, with etcd's `raftRequest` loop: a write whose auth
/// revision is older than the auth store's when it is applied (a permission or user changed
/// while it was in flight, or this member had not applied the change yet) is proposed again
/// at the revision this member has now, so the client gets the verdict of the current rights
/// and never `revision of auth store is old` for a simple token. A request whose revision
/// cannot move (a JWT carries the one it was issued at) gets that error.
pub async fn propose_as<T>(
    ctx: &Context,
    request: &Request<T>,
    write: Internal,
) -> Result<Applied, Status> {
    let mut who = crate::auth::who(ctx, request).await?;
    loop {
        match propose(ctx, write.clone(), who.clone()).await {
            Err(s) if s.message() == mvcc::auth::AuthError::AuthOldRevision.to_string() => {
                ctx.node.read_barrier().await?;
                let again = crate::auth::who(ctx, request).await?;
                let revision = |w: &Option<RequestAuth>| w.as_ref().map(|a| a.auth_revision);
                if revision(&again) <= revision(&who) {
                    return Err(s);
                }
                who = again;
            }
            other => return other,
        }
    }
}

impl KvService {
    /// Replicate one write made by the sender of `request`.
    async fn write<T>(&self, request: &Request<T>, write: Internal) -> Result<Applied, Status> {
        propose_as(&self.0, request, write).await
    }

    /// The read check of a range or read-only txn, on this member's auth state.
    fn check_read(
        &self,
        who: Option<&RequestAuth>,
        check: impl FnOnce(&RequestChecker<'_>) -> Result<(), mvcc::auth::AuthError>,
    ) -> Result<(), Status> {
        self.read_store(|store| {
            check(&RequestChecker::new(store.auth(), who)).map_err(MvccError::Auth)
        })
    }

    /// A txn that cannot write is served from the local store, as etcd serves it: after a
    /// read barrier, unless every top-level operation is a serializable range (etcd's
    /// `isTxnSerializable`), and with the same validation and answers as the log would give.
    async fn read_only_txn(
        &self,
        req: TxnRequest,
        who: Option<RequestAuth>,
    ) -> Result<Response<TxnResponse>, Status> {
        let limits = mvcc::Limits {
            max_txn_ops: self.0.max_txn_ops,
        };
        mvcc::validate::check_txn(&req, &limits).map_err(mvcc_status)?;
        if !is_txn_serializable(&req) && !self.0.skip_read_index {
            self.0.node.read_barrier().await?;
        }
        self.check_read(who.as_ref(), |c| c.txn(&req))?;
        let mut resp = self.read_store(|store| store.read_txn(&req))?;
        stamp_txn(&self.0, &mut resp);
        Ok(Response::new(resp))
    }

    /// Run a read on the local store under the state machine's read lock.
    fn read_store<T>(
        &self,
        read: impl FnOnce(&mvcc::Store) -> Result<T, MvccError>,
    ) -> Result<T, Status> {
        let sm = self.0.state()?;
        read(&sm.store).map_err(mvcc_status)
    }

    fn unexpected(what: &str) -> Status {
        Status::internal(format!("etcdserver: unexpected apply result for {what}"))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        let who = crate::auth::who(&self.0, &request).await?;
        let req = request.into_inner();
        mvcc::validate::check_range(&req).map_err(mvcc_status)?;
        if !req.serializable && !self.0.skip_read_index {
            self.0.node.read_barrier().await?;
        } else {
            // Let the other requests that arrived with this one run first, so their
            // responses leave in one write instead of one syscall each.
            tokio::task::yield_now().await;
        }
        self.check_read(who.as_ref(), |c| c.read(&req.key, &req.range_end))?;
        let mut resp = self.read_store(|store| store.range(&req))?;
        crate::metrics::metrics().range_total.inc();
        self.0.stamp(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        let put = Internal::Put(request.get_ref().clone());
        match self.write(&request, put).await? {
            Applied::Put(mut r) => {
                self.0.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(Self::unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        let delete = Internal::DeleteRange(request.get_ref().clone());
        match self.write(&request, delete).await? {
            Applied::DeleteRange(mut r) => {
                self.0.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(Self::unexpected("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        if mvcc::txn::is_read_only(request.get_ref()) {
            let who = crate::auth::who(&self.0, &request).await?;
            return self.read_only_txn(request.into_inner(), who).await;
        }
        let txn = Internal::Txn(request.get_ref().clone());
        match self.write(&request, txn).await? {
            Applied::Txn(mut r) => {
                stamp_txn(&self.0, &mut r);
                Ok(Response::new(r))
            }
            _ => Err(Self::unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        let compaction = Internal::Compaction(*request.get_ref());
        match self.write(&request, compaction).await? {
            Applied::Compaction(mut r) => {
                self.0.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(Self::unexpected("compaction")),
        }
    }
}

/// etcd's rule for skipping the read barrier of a read-only txn: every top-level operation
/// of both branches is a range marked serializable (a nested txn never is).
fn is_txn_serializable(req: &TxnRequest) -> bool {
    use proto::etcdserverpb::request_op::Request as Op;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(&op.request, Some(Op::RequestRange(r)) if r.serializable))
}

/// etcd fills in the full header (cluster, member, term) on a txn's own response only; its
/// inner responses carry just their revision (a nested txn's: none at all). etcd 3.4.23's
/// JSON gateway shows it (`{"response_put":{"header":{"revision":"2"}}}`, which etcd's
/// TestV3CurlTxn checks), and the gateway is a plain gRPC client of etcd's server.
fn stamp_txn(ctx: &Context, r: &mut TxnResponse) {
    ctx.stamp(&mut r.header);
    stamp_txn_ops(ctx, r);
}

fn stamp_txn_ops(ctx: &Context, r: &mut TxnResponse) {
    use proto::etcdserverpb::response_op::Response as Op;
    let revision_only = |header: &mut Option<ResponseHeader>| {
        let rev = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(ResponseHeader {
            revision: ctx.header(rev).revision,
            ..Default::default()
        });
    };
    for op in &mut r.responses {
        match &mut op.response {
            Some(Op::ResponseRange(x)) => revision_only(&mut x.header),
            Some(Op::ResponsePut(x)) => revision_only(&mut x.header),
            Some(Op::ResponseDeleteRange(x)) => revision_only(&mut x.header),
            Some(Op::ResponseTxn(x)) => {
                // A nested txn's own header stays empty (revision 0), as etcd leaves it.
                x.header = Some(ResponseHeader::default());
                stamp_txn_ops(ctx, x);
            }
            None => {}
        }
    }
}
