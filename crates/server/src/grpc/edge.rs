//! The front of the client port: answers the requests tonic's router would answer unlike etcd.
//!
//! etcd 3.4 puts `cmux` in front of its client port: HTTP/1.x goes to its HTTP mux, HTTP/2 to
//! grpc-go. Clients and tools (the Go client's error handling, operators reading messages)
//! see grpc-go's answers, so where tonic answers differently this service answers first:
//!
//! * HTTP/1.x requests reach only the plain HTTP endpoints (`crate::http`). etcd answers an
//!   HTTP/1.1 POST to `/etcdserverpb.KV/Range` with `404 page not found`, not with gRPC.
//! * A gRPC request for a method no service has gets grpc-go's `UNIMPLEMENTED` message
//!   (`unknown service S` / `unknown method M for service S`) instead of tonic's empty one,
//!   and a path without a method gets grpc-go's `malformed method name` (see [`methods`]).
//! * A request message over the receive limit gets grpc-go's `RESOURCE_EXHAUSTED
//!   "grpc: received message larger than max (N vs. M)"` instead of tonic's `OUT_OF_RANGE`.
//!   `OUT_OF_RANGE` is what etcd uses for compacted and future revisions, so a client could
//!   take tonic's answer for one of those.
//!
//! Everything else goes to tonic's router untouched; the only per-request work on that path
//! is a version compare, one header lookup and a table lookup of the method, plus the
//! go-grpc-prometheus counters (`grpc_server_started_total` when a known method starts,
//! `grpc_server_handled_total` with its status code when the answer's trailers pass, or
//! `Canceled` when the client goes away first), and for unary calls the time from the
//! request to that status (`grpc_server_handling_seconds`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, Version};
use axum::routing::future::RouteFuture;
use tonic::{Code, Status};

use super::methods::{self, MethodLookup};
use crate::metrics::{metrics, GrpcLabels};

/// The router of every client connection: gRPC services plus the plain HTTP endpoints.
#[derive(Clone)]
pub struct ClientEdge {
    /// tonic's routes (which fall back to the HTTP endpoints for non-gRPC HTTP/2 requests).
    grpc: axum::Router,
    /// The plain HTTP endpoints, the only thing HTTP/1.x requests reach.
    http: axum::Router,
}

impl ClientEdge {
    pub fn new(grpc: tonic::service::Routes, http: axum::Router) -> Self {
        ClientEdge {
            grpc: grpc.prepare().into_axum_router(),
            http,
        }
    }
}

impl<B> tower_service::Service<Request<B>> for ClientEdge
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both routers are always ready (axum's `Router::poll_ready` is `Ready(Ok)`), and
        // `call` below goes through `Router::call`, which does not need a prior poll_ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> EdgeFuture {
        if request.version() < Version::HTTP_2 {
            return EdgeFuture::Http(self.http.call(request));
        }
        let mut rpc = None;
        if is_grpc(request.headers()) {
            let path = request.uri().path();
            if let Some(status) = refusal(methods::lookup(path), path) {
                return EdgeFuture::Ready(Some(status.into_http()));
            }
            rpc = methods::labels(path);
            if let Some(rpc) = &rpc {
                metrics().grpc_started(rpc);
            }
        }
        let rpc = rpc.map(|labels| Timed {
            labels,
            started: Instant::now(),
        });
        EdgeFuture::Grpc(self.grpc.call(request), rpc)
    }
}

/// grpc-go looks only at the content type to decide a request is gRPC.
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// What grpc-go answers for a method it has no handler for; `None` when we route it.
fn refusal(lookup: MethodLookup<'_>, path: &str) -> Option<Status> {
    match lookup {
        MethodLookup::Known => None,
        MethodLookup::Malformed => Some(Status::resource_exhausted(format!(
            "malformed method name: {path:?}"
        ))),
        MethodLookup::UnknownService { service } => {
            Some(Status::unimplemented(format!("unknown service {service}")))
        }
        MethodLookup::UnknownMethod { service, method } => Some(Status::unimplemented(format!(
            "unknown method {method} for service {service}"
        ))),
    }
}

/// The start of the status tonic's decoder gives a message over the limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// grpc-go's status for tonic's "message too large" status; `None` for any other status.
/// tonic says `found N bytes, the limit is: M bytes`, N and M being what grpc-go reports too
/// (the message's length prefix and the configured limit).
pub(crate) fn too_large(status: &Status) -> Option<Status> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let rest = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    let found: u64 = found.parse().ok()?;
    let limit: u64 = limit.parse().ok()?;
    Some(Status::resource_exhausted(format!(
        "grpc: received message larger than max ({found} vs. {limit})"
    )))
}

/// Rewrites a trailers-only answer (status in the headers, as tonic sends every error that
/// happens before a handler runs, decoding included) carrying tonic's "too large" status.
/// That covers every method whose request is one message. In a client stream (Watch and
/// LeaseKeepAlive, once built) a later oversized message reaches the handler as an error
/// instead; such a handler should end the stream with [`too_large`]'s status.
fn rewrite_too_large(response: &mut Response<Body>) {
    // Fast path: only OUT_OF_RANGE (11) can need a rewrite.
    if response.headers().get("grpc-status") != Some(&HeaderValue::from_static("11")) {
        return;
    }
    let Some(replacement) = Status::from_header_map(response.headers())
        .as_ref()
        .and_then(too_large)
    else {
        return;
    };
    let headers = response.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if replacement.add_header(headers).is_err() {
        // Our own ASCII message always encodes; keep tonic's answer if it ever did not.
        tracing::warn!("cannot encode the message-too-large status");
    }
}

/// An RPC being metered: its labels and when its request arrived.
pub struct Timed {
    labels: GrpcLabels,
    started: Instant,
}

impl Timed {
    /// Count the RPC as handled with `code`, and its latency when unary.
    fn handled(&self, code: i32) {
        metrics().grpc_handled(&self.labels, code);
        metrics().grpc_latency(&self.labels, self.started.elapsed().as_secs_f64());
    }
}

/// The future of [`ClientEdge::call`].
pub enum EdgeFuture {
    Ready(Option<Response<Body>>),
    Http(RouteFuture<Infallible>),
    Grpc(RouteFuture<Infallible>, Option<Timed>),
}

impl Future for EdgeFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            EdgeFuture::Ready(response) => Poll::Ready(Ok(response
                .take()
                .expect("EdgeFuture polled after completion"))),
            EdgeFuture::Http(f) => Pin::new(f).poll(cx),
            EdgeFuture::Grpc(f, rpc) => Pin::new(f).poll(cx).map_ok(|mut response| {
                rewrite_too_large(&mut response);
                match rpc.take() {
                    Some(rpc) => metered(response, rpc),
                    None => response,
                }
            }),
        }
    }
}

/// The numeric `grpc-status` of a header or trailer map.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Count the RPC as handled now if the answer is trailers-only, else when its trailers pass.
fn metered(response: Response<Body>, rpc: Timed) -> Response<Body> {
    if let Some(code) = grpc_status(response.headers()) {
        rpc.handled(code);
        return response;
    }
    response.map(|inner| {
        Body::new(MeteredBody {
            inner,
            rpc,
            counted: false,
        })
    })
}

/// A response body that counts its RPC in `grpc_server_handled_total` once.
struct MeteredBody {
    inner: Body,
    rpc: Timed,
    counted: bool,
}

impl MeteredBody {
    fn count(&mut self, code: i32) {
        if !self.counted {
            self.counted = true;
            self.rpc.handled(code);
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.count(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.count(Code::Unknown as i32),
            // Ended without trailers: grpc-go would not; count it as unknown.
            Poll::Ready(None) => this.count(Code::Unknown as i32),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    /// The connection or stream went away before the answer ended: the client cancelled.
    fn drop(&mut self) {
        self.count(Code::Cancelled as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonics_too_large_status_becomes_grpc_gos() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 2200010 bytes, the limit is: \
             2097152 bytes",
        );
        let go = too_large(&tonic).expect("recognised");
        assert_eq!(go.code(), Code::ResourceExhausted);
        assert_eq!(
            go.message(),
            "grpc: received message larger than max (2200010 vs. 2097152)"
        );
        // etcd's own OUT_OF_RANGE answers are left alone.
        let compacted =
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert!(too_large(&compacted).is_none());
        let other_code = Status::internal(tonic.message().to_string());
        assert!(too_large(&other_code).is_none());
    }

    #[test]
    fn the_rewrite_touches_only_the_status_headers() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 10 bytes, the limit is: 4 bytes",
        );
        let mut response: Response<Body> = tonic.into_http();
        response
            .headers_mut()
            .insert("x-kept", HeaderValue::from_static("yes"));
        rewrite_too_large(&mut response);
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (10 vs. 4)"
        );
        assert_eq!(response.headers()["x-kept"], "yes");
        assert_eq!(response.headers().get_all("grpc-status").iter().count(), 1);
    }

    #[test]
    fn refusals_carry_grpc_gos_codes_and_messages() {
        let s = refusal(
            MethodLookup::UnknownMethod {
                service: "etcdserverpb.KV",
                method: "Nope",
            },
            "/etcdserverpb.KV/Nope",
        )
        .unwrap();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::Unimplemented,
                "unknown method Nope for service etcdserverpb.KV"
            )
        );
        let s = refusal(
            MethodLookup::UnknownService { service: "foo.Bar" },
            "/foo.Bar/Baz",
        )
        .unwrap();
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unimplemented, "unknown service foo.Bar")
        );
        let s = refusal(MethodLookup::Malformed, "/etcdserverpb.KV").unwrap();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::ResourceExhausted,
                "malformed method name: \"/etcdserverpb.KV\""
            )
        );
        assert!(refusal(MethodLookup::Known, "/etcdserverpb.KV/Range").is_none());
    }
}
