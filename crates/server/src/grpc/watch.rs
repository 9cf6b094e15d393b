//! `etcdserverpb.Watch`: each call becomes a [`crate::watch::stream::WatchStream`] task;
//! the response stream is its bounded output queue, so a client that stops reading
//! stops that task (and only it) once the queue and the HTTP/2 window are full.

use std::sync::Arc;
use std::time::Duration;

use proto::etcdserverpb::watch_server::Watch;
use proto::etcdserverpb::{WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Context;
use crate::watch::stream::WatchStream;
use crate::watch::{StreamConfig, WatchHub};

/// Responses a stream may have ready before its task waits for the client.
const OUT_QUEUE: usize = 16;

pub struct WatchService {
    pub ctx: Context,
    pub hub: Arc<WatchHub>,
    pub progress_interval: Duration,
    pub election_timeout: Duration,
    /// `--max-watches-per-stream` (0: no limit).
    pub max_watches: usize,
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
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
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let (stream, batches) = WatchStream::new(self.ctx.clone(), self.hub.clone(), cfg, tx);
        let stream = stream.acting_as(who);
        tokio::spawn(stream.run(request.into_inner(), batches));
        let out = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(out)))
    }
}
