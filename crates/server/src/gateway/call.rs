//! Calling a gRPC service method with a JSON request and answering in JSON, the way etcd
//! 3.4's grpc-gateway does for the three shapes of method it serves: unary, server stream
//! (Snapshot, Observe) and bidirectional stream (Watch, LeaseKeepAlive).

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use prost_reflect::{MessageDescriptor, MethodDescriptor};
use serde::Serialize;
use tonic::codegen::BoxStream;
use tonic::{Code, Status};

use super::json;

/// grpc-gateway's mapping of a gRPC code to an HTTP status (`runtime.HTTPStatusFromCode`).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A response with the headers etcd's client port puts on every gateway answer (its CORS
/// defaults allow any origin).
pub fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Go's `http.Error`: a plain-text line (the gateway's 404 and 405 answers).
pub fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = response(
        status,
        "text/plain; charset=utf-8",
        Body::from(format!("{text}\n")),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn json_ok(out: Vec<u8>) -> Response {
    let mut r = response(StatusCode::OK, "application/json", Body::from(out));
    // grpc-gateway forwards the gRPC response headers with this prefix.
    r.headers_mut().insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    r
}

/// grpc-gateway's error object for a unary call: `{"error":..,"message":..,"code":..}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    code: i32,
}

pub fn error(status: &Status) -> Response {
    let mut out = Vec::new();
    json::write_value(
        &mut out,
        &ErrorBody {
            error: status.message(),
            message: status.message(),
            code: status.code() as i32,
        },
    );
    response(
        http_status(status.code()),
        "application/json",
        Body::from(out),
    )
}

/// The error chunk that ends a stream: `{"error":{"grpc_code":..,"http_code":..,..}}`.
#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    http_status: &'a str,
}

#[derive(Serialize)]
struct StreamErrorChunk<'a> {
    error: StreamError<'a>,
}

fn stream_error(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let mut out = Vec::new();
    json::write_value(
        &mut out,
        &StreamErrorChunk {
            error: StreamError {
                grpc_code: status.code() as i32,
                http_code: http.as_u16(),
                message: status.message(),
                http_status: http.canonical_reason().unwrap_or(""),
            },
        },
    );
    out
}

fn result_chunk<M: prost::Message>(desc: &MessageDescriptor, msg: &M) -> Vec<u8> {
    let mut out = b"{\"result\":".to_vec();
    json::write_message(&mut out, desc, msg);
    out.extend_from_slice(b"}\n");
    out
}

/// A gRPC request carrying the caller's `Authorization` header as the `token` metadata the
/// auth layer reads (as etcd's gateway forwards it).
pub fn grpc_request<T>(message: T, headers: &HeaderMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_bytes()).ok())
    {
        request.metadata_mut().insert("token", token);
    }
    request
}

/// Decode a whole-body request; an empty body is the default request, as in etcd.
fn decode<Req: prost::Message + Default>(
    desc: &MessageDescriptor,
    body: &[u8],
    limit: usize,
) -> Result<Req, Status> {
    let req = match json::first_value(body).map_err(Status::invalid_argument)? {
        None => Req::default(),
        Some(v) => json::from_value(desc, v)?,
    };
    check_size(&req, limit)?;
    Ok(req)
}

/// The receive limit the gRPC server applies to what etcd's gateway forwards to it.
fn check_size<M: prost::Message>(msg: &M, limit: usize) -> Result<(), Status> {
    let len = msg.encoded_len();
    if len > limit {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {limit})"
        )));
    }
    Ok(())
}

/// A unary method: one JSON request object in, one JSON response object out.
pub async fn unary<Req, Resp, F, Fut>(
    method: MethodDescriptor,
    headers: &HeaderMap,
    body: &[u8],
    limit: usize,
    call: F,
) -> Response
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req: Req = match decode(&method.input(), body, limit) {
        Ok(r) => r,
        Err(s) => return error(&s),
    };
    match call(grpc_request(req, headers)).await {
        Ok(resp) => {
            let mut out = Vec::new();
            json::write_message(&mut out, &method.output(), resp.get_ref());
            json_ok(out)
        }
        Err(s) => error(&s),
    }
}

/// A server-streaming method: one JSON request in, a stream of `{"result":..}` lines out.
pub async fn server_stream<Req, Resp, F, Fut>(
    method: MethodDescriptor,
    headers: &HeaderMap,
    body: &[u8],
    limit: usize,
    call: F,
) -> Response
where
    Req: prost::Message + Default,
    Resp: prost::Message + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<BoxStream<Resp>>, Status>>,
{
    let req: Req = match decode(&method.input(), body, limit) {
        Ok(r) => r,
        Err(s) => return error(&s),
    };
    let answer = call(grpc_request(req, headers)).await;
    streamed(method.output(), answer).await
}

/// The answer of a streaming method as etcd's gateway writes it: each message a line
/// `{"result":..}`, flushed as it comes; an error ends the stream with an error chunk, and
/// sets the HTTP status when it comes before any message.
pub async fn streamed<Resp: prost::Message + 'static>(
    desc: MessageDescriptor,
    answer: Result<tonic::Response<BoxStream<Resp>>, Status>,
) -> Response {
    let mut stream = match answer {
        Ok(r) => r.into_inner(),
        Err(s) => return stream_failure(&s),
    };
    // The status line waits for the first message, as Go's ResponseWriter does.
    let first = match stream.next().await {
        None => return chunked(StatusCode::OK, futures_util::stream::empty()),
        Some(Err(s)) => return stream_failure(&s),
        Some(Ok(m)) => result_chunk(&desc, &m),
    };
    let rest = futures_util::stream::unfold(Some(stream), move |state| {
        let desc = desc.clone();
        async move {
            let mut stream = state?;
            match stream.next().await {
                None => None,
                Some(Ok(m)) => Some((result_chunk(&desc, &m), Some(stream))),
                Some(Err(s)) => Some((stream_error(&s), None)),
            }
        }
    });
    chunked(
        StatusCode::OK,
        futures_util::stream::once(async move { first }).chain(rest),
    )
}

fn stream_failure(status: &Status) -> Response {
    let chunk = stream_error(status);
    chunked(
        http_status(status.code()),
        futures_util::stream::once(async move { chunk }),
    )
}

fn chunked(status: StatusCode, chunks: impl Stream<Item = Vec<u8>> + Send + 'static) -> Response {
    let body = Body::from_stream(chunks.map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))));
    let mut r = response(status, "application/json", body);
    r.headers_mut().insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    r
}

/// A bidirectional method (Watch, LeaseKeepAlive): the request body is a sequence of JSON
/// request objects, each passed to the service as it arrives; the body's end closes the
/// sending side. As in etcd's gateway, a first request that does not decode is answered
/// with a plain error (code Unknown, HTTP 500); a later one just ends the sending side.
pub async fn bidi<Req, Resp, F, Fut>(
    method: MethodDescriptor,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    call: F,
) -> Response
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + 'static,
    F: FnOnce(tonic::Request<tonic::Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<BoxStream<Resp>>, Status>>,
{
    let input = method.input();
    let mut frames = body.into_data_stream();
    let mut splitter = json::ValueSplitter::default();
    // The first request, read before the call so its errors get the plain error object.
    let first: Option<Req> = loop {
        match splitter.next_value() {
            Err(e) => return error(&Status::unknown(e)),
            Ok(Some(v)) => match json::from_value(&input, v) {
                Ok(r) => break Some(r),
                Err(s) => return error(&Status::unknown(s.message())),
            },
            Ok(None) => {}
        }
        match frames.next().await {
            Some(Ok(chunk)) => splitter.push(&chunk),
            Some(Err(_)) => return error(&Status::cancelled("context canceled")),
            None if splitter.has_partial() => {
                return error(&Status::unknown("unexpected EOF"));
            }
            None => break None,
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut next = first;
        loop {
            if let Some(req) = next.take() {
                if tx.send(grpc_frame(&req)).await.is_err() {
                    return;
                }
            }
            match splitter.next_value() {
                Ok(Some(v)) => match json::from_value::<Req>(&input, v) {
                    Ok(r) => {
                        next = Some(r);
                        continue;
                    }
                    Err(_) => return,
                },
                Ok(None) => {}
                Err(_) => return,
            }
            tokio::select! {
                _ = tx.closed() => return,
                chunk = frames.next() => match chunk {
                    Some(Ok(chunk)) => splitter.push(&chunk),
                    _ => return,
                },
            }
        }
    });
    let requests = Body::from_stream(tokio_stream_of(rx).map(Ok::<_, std::convert::Infallible>));
    let streaming = tonic::Streaming::new_request(
        tonic_prost::ProstDecoder::<Req>::default(),
        requests,
        None,
        Some(limit),
    );
    let answer = call(grpc_request(streaming, headers)).await;
    streamed(method.output(), answer).await
}

/// A receiver as a stream.
fn tokio_stream_of(rx: tokio::sync::mpsc::Receiver<Bytes>) -> impl Stream<Item = Bytes> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// One message in gRPC's length-prefixed framing (uncompressed), for `tonic::Streaming`.
fn grpc_frame<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out).expect("a Vec grows as needed");
    Bytes::from(out)
}

/// A response body holding one of the gateway's streams until it is finished or dropped.
pub struct Holding {
    inner: Body,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Holding {
    pub fn new(inner: Body, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Holding {
            inner,
            _permit: permit,
        }
    }
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_carry_both_codes() {
        let chunk = stream_error(&Status::out_of_range("too <old>"));
        assert_eq!(
            String::from_utf8(chunk).unwrap(),
            r#"{"error":{"grpc_code":11,"http_code":400,"message":"too \u003cold\u003e","http_status":"Bad Request"}}"#
        );
    }

    #[test]
    fn codes_map_as_grpc_gateway_maps_them() {
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(http_status(Code::Cancelled), StatusCode::REQUEST_TIMEOUT);
    }
}
