//! `etcdserverpb.Lease`.
//!
//! Grant, revoke and keep-alive are log entries (any member takes them; a follower's go to
//! the leader through the ordinary proposal forwarding), so every member learns each
//! renewal and a new leader needs no fresh full TTL (docs/lease.md). The keep-alives a
//! member takes together share one entry (`keep_alive_batch.rs`). With
//! `--lease-keepalive-before-log` the leader answers a keep-alive from its lease clock at
//! once and logs the renewal behind the answer ([`RenewalLog`]), so a keep-alive never
//! waits behind a slow apply (etcd#18100).
//! Time-to-live and the list are linearizable reads of the local store and lease clock.

use std::time::Duration;

use bytes::Bytes;
use mvcc::{MvccError, Response as Applied};
use prost::Message as _;
use proto::etcdserverpb::lease_server::Lease;
use proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::keep_alive_stream::{KeepAliveStream, Renewed};
use super::{keep_alive_batch, Context};

/// Tries at a fresh random ID when the one picked for a grant with ID 0 is taken.
const ID_TRIES: usize = 3;

#[derive(Clone)]
pub struct LeaseService(pub Context);

/// The renewals the leader answered before logging them, one log entry in flight per
/// lease: a keep-alive answered while one is in flight asks for one more after it (so the
/// log's last renewal of a lease is never older than the last answer).
#[derive(Default)]
struct RenewalLog {
    /// (member, lease) → another entry is wanted once the one in flight is done. The
    /// member (its node's shared status, by address) keeps apart members that share a
    /// process, as in tests.
    in_flight: std::sync::Mutex<std::collections::HashMap<(usize, i64), bool>>,
}

impl RenewalLog {
    fn global() -> &'static RenewalLog {
        static LOG: std::sync::OnceLock<RenewalLog> = std::sync::OnceLock::new();
        LOG.get_or_init(RenewalLog::default)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(usize, i64), bool>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Log a renewal of `id` that was already answered.
    fn log(&'static self, ctx: &Context, id: i64) {
        let key = (std::sync::Arc::as_ptr(&ctx.node.status) as usize, id);
        match self.pending().entry(key) {
            std::collections::hash_map::Entry::Occupied(mut again) => {
                *again.get_mut() = true;
                return;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(false);
            }
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                // A failure (leader change, lease revoked meanwhile, overload) drops the
                // entry: the answer was the leader's own promise (docs/lease.md).
                let _ = keep_alive_batch::renew(&ctx, id).await;
                let mut pending = self.pending();
                match pending.get_mut(&key) {
                    Some(again) if *again => *again = false,
                    _ => {
                        pending.remove(&key);
                        return;
                    }
                }
            }
        });
    }
}

/// The leader's renewal of `id` without the log: the granted TTL, if
/// `--lease-keepalive-before-log` is on, this member leads (its node thread said so within
/// half an election timeout) and its clock knows the lease as live. `None`: renew through
/// the log.
fn renew_as_leader(ctx: &Context, id: i64) -> Option<Duration> {
    if !ctx.keepalive_before_log || !ctx.node.status.leads_within(ctx.election_timeout / 2) {
        return None;
    }
    let ttl = ctx.lease_clock.renew_unlogged(id)?;
    RenewalLog::global().log(ctx, id);
    Some(ttl)
}

/// A keep-alive of `id` through the log: the granted TTL once this member applied the
/// renewal (zero for an unknown or expired lease: etcd answers TTL 0, not an error), with
/// when this member took the keep-alive.
///
/// The answer may not simply promise the granted TTL: this member answers once it applied
/// the renewal, which may be long after the leader did (a member catching up after a
/// restart), and the leader's deadline counts from its own apply, which came after this
/// member proposed the renewal. So the answer may promise the TTL less how long ago the
/// renewal was proposed, plus the leader's expiry grace (`node::promised_ttl`), worked out
/// when the answer leaves (`keep_alive_stream`).
async fn renew_through_log(ctx: &Context, id: i64) -> Result<(Duration, Duration), Status> {
    let took = ctx.lease_clock.now();
    let granted = keep_alive_batch::renew(ctx, id).await?;
    Ok((Duration::from_secs(granted.max(0) as u64), took))
}

/// One keep-alive of `id`: from the leader's clock if it may answer so
/// ([`renew_as_leader`]), else through the log.
async fn keep_alive(ctx: &Context, id: i64) -> Result<Renewed, Status> {
    // etcd fills the header before the renewal. The revision as of the last apply: reading
    // the store's would take the state machine's lock, which an apply holds for a whole
    // batch, and block this worker thread meanwhile.
    let header = Some(ctx.header(ctx.lease_clock.revision()));
    let (granted, since) = match renew_as_leader(ctx, id) {
        Some(ttl) => (ttl, ctx.lease_clock.now()),
        None => renew_through_log(ctx, id).await?,
    };
    Ok(Renewed {
        header,
        granted,
        since,
    })
}

impl LeaseService {
    pub(super) fn unexpected(what: &str) -> Status {
        Status::internal(format!("etcdserver: unexpected apply result for {what}"))
    }

    async fn linearizable(&self) -> Result<(), Status> {
        if !self.0.skip_read_index {
            self.0.node.read_barrier().await?;
        }
        Ok(())
    }
}

/// Grants, keep-alives and revocations need no identity except a revocation under auth
/// (it deletes the lease's keys): `who` is the sender as `crate::auth` found it.
pub(super) async fn propose(
    ctx: &Context,
    request: Internal,
    who: Option<proto::raftkvpb::RequestAuth>,
) -> Result<Applied, Status> {
    answer(ctx.node.propose(entry(request, who)).await)
}

/// A keep-alive entry (no identity needed): proposed ahead of the writes waiting for
/// room (`NodeHandle::propose_ahead`), so a burst of big writes does not hold back the
/// renewals that keep leases alive.
pub(super) async fn propose_renewals(ctx: &Context, request: Internal) -> Result<Applied, Status> {
    answer(ctx.node.propose_ahead(entry(request, None)).await)
}

/// The log entry of a lease request sent by `who`.
fn entry(request: Internal, who: Option<proto::raftkvpb::RequestAuth>) -> Bytes {
    let data = InternalRequest {
        auth: who,
        request: Some(request),
    };
    Bytes::from(data.encode_to_vec())
}

/// A proposal's outcome as the gRPC answer.
fn answer(
    proposed: crate::node::ProposeResult<Result<Applied, MvccError>>,
) -> Result<Applied, Status> {
    match proposed {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(e)) => Err(Status::from(e)),
        Err(e) => Err(e.into()),
    }
}

/// A random positive ID (etcd never hands out 0 or a negative one), from the standard
/// library's randomly keyed hasher: unpredictable enough to make collisions (retried
/// anyway) vanishingly rare.
fn random_lease_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let id = (h.finish() >> 1) as i64;
        if id != 0 {
            return id;
        }
    }
}

/// A grant as `LeaseGrant` makes it: the TTL checked and raised to the minimum, a random ID
/// picked when the request has 0 (retried if taken). Also the session lease the Lock and
/// Election services grant for a call without a lease.
pub(super) async fn grant(
    ctx: &Context,
    mut req: LeaseGrantRequest,
) -> Result<LeaseGrantResponse, Status> {
    if req.ttl > mvcc::MAX_LEASE_TTL {
        return Err(MvccError::LeaseTtlTooLarge.into());
    }
    // etcd raises short TTLs to what survives a leader election.
    req.ttl = req.ttl.max(ctx.min_lease_ttl);
    let pick = req.id == 0;
    for _ in 0..ID_TRIES {
        if pick {
            req.id = random_lease_id();
        }
        match propose(ctx, Internal::LeaseGrant(req), None).await {
            Ok(Applied::LeaseGrant(mut r)) => {
                ctx.stamp(&mut r.header);
                return Ok(r);
            }
            Ok(_) => return Err(LeaseService::unexpected("lease grant")),
            Err(e) if pick && e.message() == "etcdserver: lease already exists" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(MvccError::LeaseExists.into())
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        grant(&self.0, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        let revoke = Internal::LeaseRevoke(*request.get_ref());
        match super::kv::propose_as(&self.0, &request, revoke).await? {
            Applied::LeaseRevoke(mut r) => {
                self.0.stamp(&mut r.header);
                Ok(Response::new(r))
            }
            _ => Err(Self::unexpected("lease revoke")),
        }
    }

    /// Each stream renews the leases asked for, each through the log (or from the
    /// leader's clock with `--lease-keepalive-before-log`), and answers in request order.
    /// An unknown or expired lease answers TTL 0; any other failure ends the stream with its
    /// error, as etcd's does.
    ///
    /// The requests a client sends without waiting for answers (etcd's Go client sends all
    /// of its leases' keep-alives on one stream so) are renewed together, up to a window
    /// (`keep_alive_stream`). The renewals run inside the response stream itself, as the
    /// transport reads it: no task or queue of its own. The stream ends when the client
    /// closes its side; a client that stops reading stops it (the transport no longer
    /// polls it once the stream's flow-control window is full), and a closed connection
    /// drops it, with whatever renewals it was waiting for.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        self.0.require_leader(request.metadata())?;
        let ctx = std::sync::Arc::new(self.0.clone());
        let clock = self.0.lease_clock.clone();
        let out = KeepAliveStream::new(
            request.into_inner(),
            move |id| {
                let ctx = ctx.clone();
                Box::pin(async move { keep_alive(&ctx, id).await })
            },
            move || clock.now(),
        );
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        let req = request.into_inner();
        self.linearizable().await?;
        let resp = {
            let sm = self.0.state()?;
            match (
                sm.store.leases().get(req.id),
                sm.lease_remaining_secs(req.id),
            ) {
                (Some(lease), Some(ttl)) => LeaseTimeToLiveResponse {
                    header: None,
                    id: req.id,
                    ttl,
                    granted_ttl: lease.ttl,
                    keys: if req.keys {
                        lease.keys.iter().cloned().collect()
                    } else {
                        Vec::new()
                    },
                },
                // etcd answers an unknown lease with TTL -1, not an error.
                _ => LeaseTimeToLiveResponse {
                    header: None,
                    id: req.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                },
            }
        };
        let mut resp = resp;
        self.0.stamp(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.0.require_leader(request.metadata())?;
        self.linearizable().await?;
        let leases = {
            let sm = self.0.state()?;
            sm.store
                .leases()
                .iter()
                .map(|l| LeaseStatus { id: l.id })
                .collect()
        };
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.0.header(0)),
            leases,
        }))
    }
}
