//! `etcdserverpb.Watch`: each call becomes a [`crate::watch::stream::WatchStream`] task;
//! the response stream is its bounded output queue, so a client that stops reading
//! stops that task (and only it) once the queue and the HTTP/2 window are full.
//!
//! The gRPC call is served by [`WatchGrpc`]: requests are decoded by [`WatchCodec`]; the
//! task hands over responses already encoded and framed, many at a time, and
//! [`ResponseBody`] sends each batch as the few runs of bytes it was written in
//! (`crate::watch::encode`). The JSON gateway
//! calls the same stream through the generated [`Watch`] trait and gets messages.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use proto::etcdserverpb::watch_server::Watch;
use proto::etcdserverpb::{WatchRequest, WatchResponse};
use tonic::codec::Codec as _;
use tonic::codegen::{http, BoxFuture, BoxStream, Service, StdError};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use super::Context;
use crate::watch::encode::{Outgoing, ResponseBody, WatchCodec};
use crate::watch::queue::{self, Receiver};
use crate::watch::stream::{OutBatch, WatchStream};
use crate::watch::{StreamConfig, WatchHub};

/// Batches of responses a stream may have ready before its task waits for the client.
const OUT_QUEUE: usize = 4;

pub struct WatchService {
    pub ctx: Context,
    pub hub: Arc<WatchHub>,
    pub progress_interval: Duration,
    pub election_timeout: Duration,
    /// `--max-watches-per-stream` (0: no limit).
    pub max_watches: usize,
}

impl WatchService {
    /// Starts the stream's task; its responses arrive on the returned queue.
    async fn open(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Receiver<OutBatch>, Status> {
        self.ctx.require_leader(request.metadata())?;
        let require_leader = request
            .metadata()
            .get("hasleader")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "true");
        let cfg = StreamConfig {
            // etcd splits at the request limit plus gRPC's overhead allowance.
            fragment_bytes: self.ctx.max_request_bytes + crate::server::GRPC_OVERHEAD_BYTES,
            progress_interval: self.progress_interval,
            require_leader,
            election_timeout: self.election_timeout,
            max_watches: self.max_watches,
        };
        let who = crate::auth::who(&self.ctx, &request).await.map_err(|_| ());
        let (tx, rx) = queue::bounded(OUT_QUEUE);
        let (stream, batches) = WatchStream::new(self.ctx.clone(), self.hub.clone(), cfg, tx);
        let stream = stream.acting_as(who);
        tokio::spawn(stream.run(request.into_inner(), batches));
        Ok(rx)
    }
}

/// The task's batches as one response after the other (an error ends the call). A batch's
/// memory is given back as soon as its last response is taken, not when the next batch
/// comes: an idle stream holds none.
fn responses(rx: Receiver<OutBatch>) -> impl Stream<Item = Result<Outgoing, Status>> {
    futures_util::stream::unfold(
        (rx, None::<std::vec::IntoIter<Outgoing>>),
        |(mut rx, mut batch)| async move {
            loop {
                if let Some(resp) = batch.as_mut().and_then(Iterator::next) {
                    return Some((Ok(resp), (rx, batch)));
                }
                // Give the spent batch's memory back before waiting.
                drop(batch.take());
                match rx.recv().await? {
                    Ok(next) => batch = Some(next.into_iter()),
                    Err(status) => return Some((Err(status), (rx, None))),
                }
            }
        },
    )
}

/// For the JSON gateway.
#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        let rx = self.open(request).await?;
        let out = responses(rx).map(|r| {
            r.and_then(|o| {
                o.decode()
                    .map_err(|e| Status::internal(format!("watch response: {e}")))
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// The gRPC service `etcdserverpb.Watch`, in place of the generated `WatchServer` (which
/// would encode every response from a message).
#[derive(Clone)]
pub struct WatchGrpc {
    inner: Arc<WatchService>,
    /// The largest request accepted (the member's gRPC receive limit).
    max_decoding: usize,
}

impl WatchGrpc {
    pub fn new(service: WatchService, max_decoding: usize) -> WatchGrpc {
        WatchGrpc {
            inner: Arc::new(service),
            max_decoding,
        }
    }
}

impl NamedService for WatchGrpc {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> Service<http::Request<B>> for WatchGrpc
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/etcdserverpb.Watch/Watch" {
            return Box::pin(async {
                Ok(Status::unimplemented("").into_http::<tonic::body::Body>())
            });
        }
        let inner = self.inner.clone();
        let limit = self.max_decoding;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // No compression is offered, as with tonic's server without its compression
            // features (same answer).
            if let Some(enc) = parts.headers.get("grpc-encoding") {
                if enc.as_bytes() != b"identity" {
                    let mut status = Status::unimplemented(format!(
                        "Content is compressed with `{}` which isn't supported",
                        String::from_utf8_lossy(enc.as_bytes())
                    ));
                    status.metadata_mut().insert(
                        "grpc-accept-encoding",
                        tonic::metadata::MetadataValue::from_static("identity"),
                    );
                    return Ok(status.into_http());
                }
            }
            let requests = Streaming::new_request(WatchCodec.decoder(), body, None, Some(limit));
            let request = Request::from_http(http::Request::from_parts(parts, requests));
            let rx = match inner.open(request).await {
                Ok(rx) => rx,
                Err(status) => return Ok(status.into_http()),
            };
            // The responses come encoded and framed (`ResponseBody`), not through tonic's
            // per-message encoder.
            let mut resp = http::Response::new(tonic::body::Body::new(ResponseBody::new(rx)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok(resp)
        })
    }
}
