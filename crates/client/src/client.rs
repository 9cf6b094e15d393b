//! A small etcd v3 client over the generated tonic stubs, with endpoint failover.
//!
//! Every member accepts every request (followers forward to the leader), so the client does
//! not look for the leader: it tries the endpoints in the order given and moves on only when
//! [`retry::try_next_endpoint`] says so (`UNAVAILABLE`: "connection refused", "no leader",
//! timeouts the server reports as transient). Any other error is the cluster's answer and is
//! returned as is, so callers see etcd's exact code and message. It never retries the same
//! endpoint by itself: whether that is safe depends on the request ([`crate::retry`]).

use std::future::Future;
use std::time::Duration;

use proto::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, AlarmRequest, AlarmResponse,
    AuthenticateRequest, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, HashKvRequest, HashKvResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse, TxnRequest, TxnResponse,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::endpoint::lazy_channel_tls;
use crate::retry::{self, RetryPolicy};
use crate::tls::TlsOptions;

/// Dial and per-call limits, as etcdctl's `--dial-timeout` and `--command-timeout`.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub dial: Duration,
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dial: Duration::from_secs(2),
            call: Duration::from_secs(5),
        }
    }
}

/// An error from the cluster: which endpoint gave it and the gRPC status (code + message).
#[derive(Clone, Debug)]
pub struct CallError {
    pub endpoint: String,
    pub status: Status,
}

impl CallError {
    pub fn code(&self) -> Code {
        self.status.code()
    }

    pub fn message(&self) -> &str {
        self.status.message()
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (code {:?}, endpoint {})",
            self.status.message(),
            self.status.code(),
            self.endpoint
        )
    }
}

impl std::error::Error for CallError {}

/// One endpoint: its address as given and a lazily connected channel.
#[derive(Clone)]
struct Target {
    address: String,
    channel: Channel,
}

/// A client for one or more endpoints of the same cluster.
#[derive(Clone)]
pub struct Client {
    targets: Vec<Target>,
    timeouts: Timeouts,
    /// The auth token every request carries (`token` metadata), once [`Client::authenticate`]
    /// succeeded.
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    /// Builds channels for `endpoints`; nothing is dialled until the first call.
    pub fn new(endpoints: &[String], timeouts: Timeouts) -> anyhow::Result<Self> {
        Self::with_tls(endpoints, timeouts, &TlsOptions::default())
    }

    /// [`Client::new`] with etcdctl's TLS flags: with any of them given, or any endpoint
    /// `https://`, every endpoint is dialled as [`crate::endpoint::lazy_channel_tls`] says.
    pub fn with_tls(
        endpoints: &[String],
        timeouts: Timeouts,
        tls_options: &TlsOptions,
    ) -> anyhow::Result<Self> {
        let wants_tls = tls_options.any() || endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = match wants_tls {
            true => Some(tls_options.client_config()?),
            false => None,
        };
        let tls = tls.as_ref();
        if endpoints.is_empty() {
            anyhow::bail!("no endpoints given");
        }
        let targets = endpoints
            .iter()
            .map(|address| {
                Ok(Target {
                    address: address.clone(),
                    channel: lazy_channel_tls(address, timeouts.dial, tls)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Client {
            targets,
            timeouts,
            token: None,
        })
    }

    /// The channel of endpoint `index`.
    pub(crate) fn channel(&self, index: usize) -> Channel {
        self.targets[index].channel.clone()
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The endpoints, in the order they are tried.
    pub fn endpoints(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.address.clone()).collect()
    }

    /// A client that talks only to endpoint `index` (for per-member calls such as Status).
    pub fn only(&self, index: usize) -> Client {
        Client {
            targets: vec![self.targets[index].clone()],
            timeouts: self.timeouts,
            token: self.token.clone(),
        }
    }

    /// One client per endpoint, in order.
    pub fn each(&self) -> Vec<Client> {
        (0..self.targets.len()).map(|i| self.only(i)).collect()
    }

    /// Runs `call` against each endpoint in turn until one answers with something that is not
    /// a reason to try the next endpoint; the call is bounded by the call timeout (reported as
    /// `DEADLINE_EXCEEDED`, not retried elsewhere because the request may have been applied).
    pub async fn with_failover<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = None;
        for target in &self.targets {
            let outcome =
                tokio::time::timeout(self.timeouts.call, call(target.channel.clone())).await;
            let status = match outcome {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("context deadline exceeded"),
            };
            let error = CallError {
                endpoint: target.address.clone(),
                status,
            };
            if !retry::try_next_endpoint(error.code()) {
                return Err(error);
            }
            last = Some(error);
        }
        Err(last.expect("at least one endpoint"))
    }

    /// `message` as a request carrying this client's auth token, if it has one.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    /// Gets a token for `name` (etcd's `Authenticate`); every later request carries it.
    pub async fn authenticate(&mut self, name: &str, password: &str) -> Result<(), CallError> {
        let request = AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        };
        let response = self
            .with_failover(|ch| {
                let request = request.clone();
                async move { AuthClient::new(ch).authenticate(request).await }
            })
            .await?;
        let token = response.token.parse().map_err(|_| CallError {
            endpoint: self.targets[0].address.clone(),
            status: Status::internal("the server returned a token that is not ASCII"),
        })?;
        self.token = Some(token);
        Ok(())
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(request.clone());
            async move { KvClient::new(ch).range(request).await }
        })
        .await
    }

    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(request.clone());
            async move { KvClient::new(ch).put(request).await }
        })
        .await
    }

    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(request.clone());
            async move { KvClient::new(ch).delete_range(request).await }
        })
        .await
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(request.clone());
            async move { KvClient::new(ch).txn(request).await }
        })
        .await
    }

    pub async fn compact(
        &self,
        request: CompactionRequest,
    ) -> Result<CompactionResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(request);
            async move { KvClient::new(ch).compact(request).await }
        })
        .await
    }

    /// The first endpoint's channel, for calls that may wait without a time limit (a lock,
    /// a campaign) and so cannot go through the call timeout.
    pub fn first_channel(&self) -> Channel {
        self.targets[0].channel.clone()
    }

    /// Grants a lease of `ttl` seconds (`id` 0: the server picks one).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, CallError> {
        self.with_failover(|ch| async move {
            LeaseClient::new(ch)
                .lease_grant(LeaseGrantRequest { ttl, id })
                .await
        })
        .await
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, CallError> {
        self.with_failover(|ch| async move {
            LeaseClient::new(ch)
                .lease_revoke(LeaseRevokeRequest { id })
                .await
        })
        .await
    }

    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, CallError> {
        self.with_failover(|ch| async move {
            LeaseClient::new(ch)
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                .await
        })
        .await
    }

    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, CallError> {
        self.with_failover(|ch| async move {
            LeaseClient::new(ch)
                .lease_leases(LeaseLeasesRequest {})
                .await
        })
        .await
    }

    /// One keep-alive of lease `id` on a fresh stream: the TTL it now has (≤ 0: the lease
    /// is gone).
    pub async fn lease_keep_alive_once(
        &self,
        id: i64,
    ) -> Result<LeaseKeepAliveResponse, CallError> {
        self.with_failover(|ch| async move {
            let requests = tonic::codegen::tokio_stream::iter([LeaseKeepAliveRequest { id }]);
            let mut responses = LeaseClient::new(ch)
                .lease_keep_alive(requests)
                .await?
                .into_inner();
            match responses.message().await? {
                Some(r) => Ok(tonic::Response::new(r)),
                None => Err(Status::unavailable("keep-alive stream closed")),
            }
        })
        .await
    }

    /// A keep-alive stream on the first endpoint that opens one: send a request on the
    /// returned sender, read the answers from the stream.
    pub async fn lease_keep_alive(
        &self,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<LeaseKeepAliveRequest>,
            tonic::Streaming<LeaseKeepAliveResponse>,
        ),
        CallError,
    > {
        self.with_failover(|ch| async move {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let stream = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
            let opened = LeaseClient::new(ch).lease_keep_alive(stream).await?;
            Ok(opened.map(|responses| (tx, responses)))
        })
        .await
    }

    pub async fn status(&self) -> Result<StatusResponse, CallError> {
        self.with_failover(
            |ch| async move { MaintenanceClient::new(ch).status(StatusRequest {}).await },
        )
        .await
    }

    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(HashKvRequest { revision });
            async move { MaintenanceClient::new(ch).hash_kv(request).await }
        })
        .await
    }

    pub async fn alarms(&self) -> Result<AlarmResponse, CallError> {
        self.with_failover(|ch| async move {
            MaintenanceClient::new(ch)
                .alarm(AlarmRequest::default())
                .await
        })
        .await
    }

    /// Maintenance/Snapshot from the first endpoint alone (a backup is one member's
    /// state, as etcdctl insists). The stream is not bounded by the call timeout: a large
    /// store takes as long as it takes; the caller bounds it if it wants.
    pub async fn snapshot(&self) -> Result<tonic::Streaming<SnapshotResponse>, CallError> {
        let target = &self.targets[0];
        let started = tokio::time::timeout(
            self.timeouts.call,
            MaintenanceClient::new(target.channel.clone()).snapshot(SnapshotRequest {}),
        )
        .await;
        let status = match started {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded("context deadline exceeded"),
        };
        Err(CallError {
            endpoint: target.address.clone(),
            status,
        })
    }

    /// `Maintenance/MoveLeader`: must reach the leader (a follower answers `not leader`).
    pub async fn move_leader(
        &self,
        target_id: u64,
    ) -> Result<proto::etcdserverpb::MoveLeaderResponse, CallError> {
        self.with_failover(|ch| async move {
            MaintenanceClient::new(ch)
                .move_leader(proto::etcdserverpb::MoveLeaderRequest { target_id })
                .await
        })
        .await
    }

    pub async fn member_list(&self, linearizable: bool) -> Result<MemberListResponse, CallError> {
        self.with_failover(|ch| async move {
            ClusterClient::new(ch)
                .member_list(MemberListRequest { linearizable })
                .await
        })
        .await
    }

    /// `Cluster/MemberAdd` of a member reached at `peer_urls`.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(MemberAddRequest {
                peer_ur_ls: peer_urls.clone(),
                is_learner,
            });
            async move { ClusterClient::new(ch).member_add(request).await }
        })
        .await
    }

    /// `Cluster/MemberRemove` of member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(MemberRemoveRequest { id });
            async move { ClusterClient::new(ch).member_remove(request).await }
        })
        .await
    }

    /// `Cluster/MemberPromote` of learner `id`.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse, CallError> {
        self.with_failover(|ch| {
            let request = self.request(MemberPromoteRequest { id });
            async move { ClusterClient::new(ch).member_promote(request).await }
        })
        .await
    }

    /// Put a UTF-8 key and value (convenience for the demo and tests).
    pub async fn put_str(&self, key: &str, value: &str) -> Result<PutResponse, CallError> {
        self.put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
    }

    /// Puts `key=value`, retrying while the cluster is transiently unavailable (an election in
    /// progress) for up to `limit`. A write that timed out may have been applied and is then
    /// applied twice, which callers that write fresh values tolerate.
    pub async fn put_retrying(
        &self,
        key: &str,
        value: &str,
        limit: Duration,
    ) -> Result<PutResponse, CallError> {
        RetryPolicy::transient_for(limit)
            .run(
                |e| retry::is_transient(e.code()),
                || self.put_str(key, value),
            )
            .await
    }

    /// Linearizable (or serializable) single-key read; `None` if absent.
    pub async fn get_str(
        &self,
        key: &str,
        serializable: bool,
    ) -> Result<Option<String>, CallError> {
        let response = self
            .range(RangeRequest {
                key: key.as_bytes().to_vec().into(),
                serializable,
                ..Default::default()
            })
            .await?;
        Ok(response
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }
}

/// The `range_end` that makes `[prefix, range_end)` cover every key starting with `prefix`,
/// as etcd's clients compute it: increment the last byte below 0xff, dropping trailing 0xff
/// bytes; an empty prefix (or all 0xff) means "every key", written `"\0"`.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }
}
