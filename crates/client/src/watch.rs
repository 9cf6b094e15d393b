//! etcd's Watch stream from the client side: open it on the first endpoint that accepts
//! it, send create / cancel / progress requests, read responses one at a time.
//!
//! Deliberately thin: reconnecting and re-watching from `last revision + 1` is the
//! caller's policy (the CLI gives up on error, a checker re-watches), so it is not hidden
//! here.

use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::client::{CallError, Client};

/// The largest watch response accepted: etcd's Go client accepts up to `math.MaxInt32`,
/// and one revision's events (with their previous values) may exceed tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// Requests the client may queue before `send` waits for the stream.
const REQUEST_QUEUE: usize = 64;

/// One open Watch stream (it may carry many watches).
pub struct WatchStream {
    endpoint: String,
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

/// Options of [`Client::watch`] beyond the create request itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// Send `hasleader: true` (etcd's `WithRequireLeader`): the member refuses the stream,
    /// or closes it, when it has no leader.
    pub require_leader: bool,
}

impl Client {
    /// Open a Watch stream and send `create` on it. The first response is normally the
    /// `created` one; read it with [`WatchStream::next`].
    pub async fn watch(
        &self,
        create: WatchCreateRequest,
        options: WatchOptions,
    ) -> Result<WatchStream, CallError> {
        let endpoints = self.endpoints();
        let mut last = None;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let channel = self.channel(i);
            let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
            let first = WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create.clone())),
            };
            // Cannot fail: the receiver is alive and the queue empty.
            let _ = tx.try_send(first);
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            if options.require_leader {
                request.metadata_mut().insert(
                    "hasleader",
                    tonic::metadata::MetadataValue::from_static("true"),
                );
            }
            let opened = tokio::time::timeout(
                self.timeouts().call,
                WatchClient::new(channel)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .watch(request),
            )
            .await;
            let status = match opened {
                Ok(Ok(resp)) => {
                    return Ok(WatchStream {
                        endpoint: endpoint.clone(),
                        requests: tx,
                        responses: resp.into_inner(),
                    })
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("context deadline exceeded"),
            };
            let error = CallError {
                endpoint: endpoint.clone(),
                status,
            };
            if !crate::retry::try_next_endpoint(error.code()) {
                return Err(error);
            }
            last = Some(error);
        }
        Err(last.expect("at least one endpoint"))
    }
}

impl WatchStream {
    /// The endpoint serving this stream.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next response; `Ok(None)` when the server ended the stream cleanly.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, CallError> {
        self.responses.message().await.map_err(|status| CallError {
            endpoint: self.endpoint.clone(),
            status,
        })
    }

    async fn send(&self, request: RequestUnion) -> Result<(), CallError> {
        self.requests
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .map_err(|_| CallError {
                endpoint: self.endpoint.clone(),
                status: Status::cancelled("watch stream closed"),
            })
    }

    /// Add a watch to this stream.
    pub async fn create(&self, create: WatchCreateRequest) -> Result<(), CallError> {
        self.send(RequestUnion::CreateRequest(create)).await
    }

    pub async fn cancel(&self, watch_id: i64) -> Result<(), CallError> {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }))
            .await
    }

    /// Ask for a progress notification (`watch_id = -1`, the revision up to which every
    /// watch of the stream has been served).
    pub async fn request_progress(&self) -> Result<(), CallError> {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await
    }
}
