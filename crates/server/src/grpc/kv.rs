//! `etcdserverpb.KV`.

use std::convert::Infallible;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use mvcc::auth::RequestChecker;
use mvcc::{MvccError, Response as Applied};
use prost::Message as _;
use proto::etcdserverpb::kv_server::{Kv, KvServer};
use proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest, RequestAuth};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
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

/// The gRPC service `etcdserverpb.KV`: the generated `KvServer` for every method, except that
/// a Range over more than one key whose answer comes in key order is answered in pieces of
/// about [`RANGE_PIECE`] bytes encoded from a point-in-time view of the store
/// ([`mvcc::RangeStream`]) as HTTP/2 takes them. The generated server would build the whole
/// answer as one buffer first, so 100 concurrent reads of a 1 GiB key space held 100 × 1 GiB
/// (issue 18). The answer's bytes, errors and their order are the generated path's.
#[derive(Clone)]
pub struct KvGrpc {
    inner: KvServer<KvService>,
    ctx: Context,
    /// The largest request accepted (the member's gRPC receive limit).
    max_decoding: usize,
}

/// The size of the pieces a streamed Range answer is encoded in.
pub const RANGE_PIECE: usize = 64 * 1024;

const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

impl KvGrpc {
    pub fn new(ctx: Context, max_decoding: usize) -> KvGrpc {
        KvGrpc {
            inner: KvServer::new(KvService(ctx.clone())).max_decoding_message_size(max_decoding),
            ctx,
            max_decoding,
        }
    }
}

impl NamedService for KvGrpc {
    const NAME: &'static str = "etcdserverpb.KV";
}

impl Service<http::Request<tonic::body::Body>> for KvGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        if req.uri().path() != RANGE_PATH {
            return Box::pin(inner.call(req));
        }
        let ctx = self.ctx.clone();
        let limit = self.max_decoding;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (request, body) = match read_unary(axum::body::Body::new(body), limit).await {
                Read::Message(request) => request,
                Read::Refused(status) => return Ok(status.into_http()),
                Read::Other(body) => {
                    return inner.call(http::Request::from_parts(parts, body)).await;
                }
            };
            let req = match RangeRequest::decode(request.clone()) {
                Ok(r) if !r.range_end.is_empty() && mvcc::range_stream::streamable(&r) => r,
                // Single keys, other orders, filters and undecodable messages: as before.
                _ => {
                    let body = axum::body::Body::from_stream(futures_util::stream::iter(
                        body.into_iter().map(Ok::<_, axum::Error>),
                    ));
                    return inner.call(http::Request::from_parts(parts, body)).await;
                }
            };
            match range_stream(&ctx, http::Request::from_parts(parts, ()), req).await {
                Ok(stream) => Ok(range_answer(stream)),
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// What reading a unary request's body gave.
enum Read {
    /// One uncompressed message, and the body's chunks as read (to hand them on unchanged).
    Message((Bytes, Vec<Bytes>)),
    /// A message over the receive limit: grpc-go's answer, as `ClientEdge` gives it.
    Refused(Status),
    /// Anything else (compressed, malformed, trailing data, a broken body): the body as it
    /// came, for the generated server to answer as it always has.
    Other(axum::body::Body),
}

/// A body made of the `chunks` already read and the `rest`.
fn rebuilt(
    chunks: Vec<Bytes>,
    rest: impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
) -> Read {
    use futures_util::StreamExt as _;
    let head = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
    Read::Other(axum::body::Body::from_stream(head.chain(rest)))
}

/// Reads the body of a unary gRPC request: a 5-byte prefix (compression flag, length) and
/// the message, at most `limit` bytes of it.
async fn read_unary(body: axum::body::Body, limit: usize) -> Read {
    use futures_util::StreamExt as _;
    let mut data = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut have = 0usize;
    let mut want: Option<usize> = None;
    loop {
        if want.is_none() && have >= 5 {
            let mut prefix = [0u8; 5];
            let mut filled = 0;
            for c in &chunks {
                let n = (5 - filled).min(c.len());
                prefix[filled..filled + n].copy_from_slice(&c[..n]);
                filled += n;
                if filled == 5 {
                    break;
                }
            }
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if prefix[0] != 0 {
                return rebuilt(chunks, data);
            }
            if len > limit {
                return Read::Refused(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({len} vs. {limit})"
                )));
            }
            want = Some(5 + len);
        }
        if let Some(w) = want {
            if have >= w {
                break;
            }
        }
        match data.next().await {
            Some(Ok(chunk)) => {
                have += chunk.len();
                chunks.push(chunk);
            }
            Some(Err(e)) => {
                let err = futures_util::stream::iter([Err(e)]);
                return rebuilt(chunks, err.chain(data));
            }
            None => break,
        }
    }
    // The whole body is read: exactly one message, or the generated server decides.
    match want {
        Some(w) if have == w => {
            let mut all = bytes::BytesMut::with_capacity(have);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            let message = all.freeze().slice(5..);
            Read::Message((message, chunks))
        }
        _ => rebuilt(chunks, futures_util::stream::empty()),
    }
}

/// [`Kv::range`]'s checks in its order, then the answer as a [`mvcc::RangeStream`] over a
/// view of the store taken after them.
async fn range_stream(
    ctx: &Context,
    parts: http::Request<()>,
    req: RangeRequest,
) -> Result<mvcc::RangeStream, Status> {
    let request = Request::from_http(parts);
    ctx.require_leader(request.metadata())?;
    let who = crate::auth::who(ctx, &request).await?;
    mvcc::validate::check_range(&req).map_err(mvcc_status)?;
    if !req.serializable && !ctx.skip_read_index {
        ctx.node.read_barrier().await?;
    } else {
        tokio::task::yield_now().await;
    }
    let view = {
        let sm = ctx.state()?;
        RequestChecker::new(sm.store.auth(), who.as_ref())
            .read(&req.key, &req.range_end)
            .map_err(|e| mvcc_status(MvccError::Auth(e)))?;
        sm.store.view()
    };
    // The first walk over the range (count and length) takes ~0.3 s for 280,000 keys on a
    // loaded machine: off the runtime's workers, which also carry the peer transport (100
    // such walks at once on the workers held up the leader's heartbeat acks until it
    // stepped down).
    let mut stream = tokio::task::spawn_blocking(move || mvcc::RangeStream::new(view, &req))
        .await
        .map_err(|e| Status::internal(format!("range: {e}")))?
        .map_err(mvcc_status)?
        .ok_or_else(|| Status::internal("range: not streamable"))?;
    crate::metrics::metrics().range_total.inc();
    ctx.stamp(&mut stream.header);
    Ok(stream)
}

/// The HTTP response carrying a streamed Range answer: one gRPC message, its bytes encoded
/// a piece at a time as the connection takes them, then `grpc-status: 0`.
fn range_answer(stream: mvcc::RangeStream) -> http::Response<tonic::body::Body> {
    let len = stream.message_len();
    let Ok(len) = u32::try_from(len) else {
        return Status::resource_exhausted(format!(
            "grpc: trying to send message larger than max ({len} vs. {})",
            u32::MAX
        ))
        .into_http();
    };
    let body = RangeBody {
        stream,
        prefix: Some(len),
        done: false,
        trailers_sent: false,
    };
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

struct RangeBody {
    stream: mvcc::RangeStream,
    /// The message length, until the prefix is written.
    prefix: Option<u32>,
    done: bool,
    trailers_sent: bool,
}

impl http_body::Body for RangeBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if !this.done {
            let mut buf = bytes::BytesMut::with_capacity(RANGE_PIECE + 2048);
            if let Some(len) = this.prefix.take() {
                buf.extend_from_slice(&[0]);
                buf.extend_from_slice(&len.to_be_bytes());
            }
            this.done = !this.stream.fill(&mut buf, RANGE_PIECE);
            return Poll::Ready(Some(Ok(http_body::Frame::data(buf.freeze()))));
        }
        if !this.trailers_sent {
            this.trailers_sent = true;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers_sent
    }
}
