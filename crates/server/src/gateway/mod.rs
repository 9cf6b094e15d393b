//! etcd 3.4's grpc-gateway on the client port: `POST /v3/<service>/<method>` (and
//! `/v3beta/...`, which etcd rewrites to `/v3/`) with a JSON request body, answered in JSON.
//!
//! Each path calls the same service implementation the gRPC server uses, through its tonic
//! trait, with the `Authorization` header as the `token` metadata; only the encoding
//! differs (`json.rs`). The paths are those of etcd 3.4's generated gateway (`rpc.pb.gw.go`,
//! `v3lock.pb.gw.go`, `v3election.pb.gw.go`), including its quirks: `/v3/maintenance/hash`
//! is `Hash` (the first of the two methods registered on it), and the lease methods are
//! also under `/v3/kv/lease/`. docs/gateway.md lists what differs from etcd.

mod call;
pub mod json;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use tokio::sync::Semaphore;

use proto::etcdserverpb::auth_server::Auth;
use proto::etcdserverpb::cluster_server::Cluster;
use proto::etcdserverpb::kv_server::Kv;
use proto::etcdserverpb::lease_server::Lease;
use proto::etcdserverpb::maintenance_server::Maintenance;
use proto::etcdserverpb::watch_server::Watch;
use proto::v3electionpb::election_server::Election;
use proto::v3lockpb::lock_server::Lock;

use crate::auth::AuthService;
use crate::grpc::{
    ClusterService, Concurrency, Context, KvService, LeaseService, MaintenanceService, WatchService,
};

/// The services the gateway calls: the gRPC server's own implementations.
pub struct Gateway {
    kv: KvService,
    lease: LeaseService,
    maintenance: MaintenanceService,
    cluster: ClusterService,
    auth: AuthService,
    concurrency: Concurrency,
    watch: WatchService,
    /// The gRPC server's receive limit, applied to the decoded request.
    limit: usize,
    /// `--max-concurrent-streams` for the gateway's calls together. etcd's gateway is one
    /// gRPC client connection to its own server, so its calls in progress (open watches
    /// included) share that connection's stream limit, and a call over it waits for a
    /// stream to end; etcd's e2e tests check exactly that.
    streams: Arc<Semaphore>,
}

impl Gateway {
    pub fn new(
        ctx: Context,
        watch: WatchService,
        concurrency: Concurrency,
        limit: usize,
        max_concurrent_streams: u32,
    ) -> Self {
        Gateway {
            kv: KvService(ctx.clone()),
            lease: LeaseService(ctx.clone()),
            maintenance: MaintenanceService(ctx.clone()),
            cluster: ClusterService(ctx.clone()),
            auth: AuthService(ctx),
            concurrency,
            watch,
            limit,
            streams: Arc::new(Semaphore::new(max_concurrent_streams.max(1) as usize)),
        }
    }
}

/// The gateway's routes, to merge into the client port's HTTP router.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v3/{*path}", any(serve))
        .route("/v3beta/{*path}", any(serve))
        .with_state(Arc::new(gateway))
}

/// What kind of call a path is.
#[derive(Clone, Copy)]
enum Shape {
    Unary,
    ServerStream,
    Bidi,
}

/// etcd 3.4's gateway paths (after `/v3/`): the gRPC service and method each calls.
const ROUTES: &[(&str, &str, &str, Shape)] = {
    use Shape::*;
    const KV: &str = "etcdserverpb.KV";
    const LEASE: &str = "etcdserverpb.Lease";
    const CLUSTER: &str = "etcdserverpb.Cluster";
    const MAINT: &str = "etcdserverpb.Maintenance";
    const AUTH: &str = "etcdserverpb.Auth";
    const LOCK: &str = "v3lockpb.Lock";
    const ELECTION: &str = "v3electionpb.Election";
    &[
        ("kv/range", KV, "Range", Unary),
        ("kv/put", KV, "Put", Unary),
        ("kv/deleterange", KV, "DeleteRange", Unary),
        ("kv/txn", KV, "Txn", Unary),
        ("kv/compaction", KV, "Compact", Unary),
        ("watch", "etcdserverpb.Watch", "Watch", Bidi),
        ("lease/grant", LEASE, "LeaseGrant", Unary),
        ("lease/revoke", LEASE, "LeaseRevoke", Unary),
        ("kv/lease/revoke", LEASE, "LeaseRevoke", Unary),
        ("lease/keepalive", LEASE, "LeaseKeepAlive", Bidi),
        ("lease/timetolive", LEASE, "LeaseTimeToLive", Unary),
        ("kv/lease/timetolive", LEASE, "LeaseTimeToLive", Unary),
        ("lease/leases", LEASE, "LeaseLeases", Unary),
        ("kv/lease/leases", LEASE, "LeaseLeases", Unary),
        ("cluster/member/add", CLUSTER, "MemberAdd", Unary),
        ("cluster/member/remove", CLUSTER, "MemberRemove", Unary),
        ("cluster/member/update", CLUSTER, "MemberUpdate", Unary),
        ("cluster/member/list", CLUSTER, "MemberList", Unary),
        ("cluster/member/promote", CLUSTER, "MemberPromote", Unary),
        ("maintenance/alarm", MAINT, "Alarm", Unary),
        ("maintenance/status", MAINT, "Status", Unary),
        ("maintenance/defragment", MAINT, "Defragment", Unary),
        ("maintenance/hash", MAINT, "Hash", Unary),
        ("maintenance/snapshot", MAINT, "Snapshot", ServerStream),
        (
            "maintenance/transfer-leadership",
            MAINT,
            "MoveLeader",
            Unary,
        ),
        ("auth/enable", AUTH, "AuthEnable", Unary),
        ("auth/disable", AUTH, "AuthDisable", Unary),
        ("auth/authenticate", AUTH, "Authenticate", Unary),
        ("auth/user/add", AUTH, "UserAdd", Unary),
        ("auth/user/get", AUTH, "UserGet", Unary),
        ("auth/user/list", AUTH, "UserList", Unary),
        ("auth/user/delete", AUTH, "UserDelete", Unary),
        ("auth/user/changepw", AUTH, "UserChangePassword", Unary),
        ("auth/user/grant", AUTH, "UserGrantRole", Unary),
        ("auth/user/revoke", AUTH, "UserRevokeRole", Unary),
        ("auth/role/add", AUTH, "RoleAdd", Unary),
        ("auth/role/get", AUTH, "RoleGet", Unary),
        ("auth/role/list", AUTH, "RoleList", Unary),
        ("auth/role/delete", AUTH, "RoleDelete", Unary),
        ("auth/role/grant", AUTH, "RoleGrantPermission", Unary),
        ("auth/role/revoke", AUTH, "RoleRevokePermission", Unary),
        ("lock", LOCK, "Lock", Unary),
        ("lock/unlock", LOCK, "Unlock", Unary),
        ("election/campaign", ELECTION, "Campaign", Unary),
        ("election/proclaim", ELECTION, "Proclaim", Unary),
        ("election/leader", ELECTION, "Leader", Unary),
        ("election/observe", ELECTION, "Observe", ServerStream),
        ("election/resign", ELECTION, "Resign", Unary),
    ]
};

/// The route of a request path, `None` when the gateway has no such path.
fn route(path: &str) -> Option<&'static (&'static str, &'static str, &'static str, Shape)> {
    let rest = path
        .strip_prefix("/v3/")
        .or_else(|| path.strip_prefix("/v3beta/"))?;
    ROUTES.iter().find(|r| r.0 == rest)
}

async fn serve(State(gw): State<Arc<Gateway>>, request: Request) -> Response {
    // etcd's client port answers any OPTIONS (a CORS preflight) with an empty 200.
    if request.method() == Method::OPTIONS {
        return call::response(StatusCode::OK, "text/plain; charset=utf-8", Body::empty());
    }
    let Some(&(path, service, method, shape)) = route(request.uri().path()) else {
        return call::plain(StatusCode::NOT_FOUND, "Not Found");
    };
    if request.method() != Method::POST {
        return call::plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let desc = json::method(service, method);
    let Ok(stream) = gw.streams.clone().acquire_owned().await else {
        return call::error(&tonic::Status::unavailable("the gateway is closed"));
    };
    let response = call_method(&gw, path, shape, desc, request).await;
    // The stream is in use until the answer's body is done (a watch: until the client leaves).
    response.map(|body| Body::new(call::Holding::new(body, stream)))
}

async fn call_method(
    gw: &Gateway,
    path: &str,
    shape: Shape,
    desc: prost_reflect::MethodDescriptor,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    if let Shape::Bidi = shape {
        return bidi(gw, path, desc, &headers, body).await;
    }
    // Unary and server-stream requests are one object: read the body whole, within a bound
    // generous enough for any request the gRPC limit admits once base64 and JSON inflate it.
    let body = match axum::body::to_bytes(body, gw.limit.saturating_mul(4)).await {
        Ok(b) => b,
        Err(_) => {
            return call::error(&tonic::Status::resource_exhausted(
                "grpc: received message larger than max",
            ))
        }
    };
    match shape {
        Shape::ServerStream => server_stream(gw, path, desc, &headers, &body).await,
        _ => unary(gw, path, desc, &headers, &body).await,
    }
}

/// Calls a unary method of the service the path names.
async fn unary(
    gw: &Gateway,
    path: &str,
    desc: prost_reflect::MethodDescriptor,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let lim = gw.limit;
    macro_rules! go {
        ($svc:expr, $m:ident) => {
            call::unary(desc, headers, body, lim, |r| async { $svc.$m(r).await }).await
        };
    }
    match path {
        "kv/range" => go!(gw.kv, range),
        "kv/put" => go!(gw.kv, put),
        "kv/deleterange" => go!(gw.kv, delete_range),
        "kv/txn" => go!(gw.kv, txn),
        "kv/compaction" => go!(gw.kv, compact),
        "lease/grant" => go!(gw.lease, lease_grant),
        "lease/revoke" | "kv/lease/revoke" => go!(gw.lease, lease_revoke),
        "lease/timetolive" | "kv/lease/timetolive" => go!(gw.lease, lease_time_to_live),
        "lease/leases" | "kv/lease/leases" => go!(gw.lease, lease_leases),
        "cluster/member/add" => go!(gw.cluster, member_add),
        "cluster/member/remove" => go!(gw.cluster, member_remove),
        "cluster/member/update" => go!(gw.cluster, member_update),
        "cluster/member/list" => go!(gw.cluster, member_list),
        "cluster/member/promote" => go!(gw.cluster, member_promote),
        "maintenance/alarm" => go!(gw.maintenance, alarm),
        "maintenance/status" => go!(gw.maintenance, status),
        "maintenance/defragment" => go!(gw.maintenance, defragment),
        "maintenance/hash" => go!(gw.maintenance, hash),
        "maintenance/transfer-leadership" => go!(gw.maintenance, move_leader),
        "auth/enable" => go!(gw.auth, auth_enable),
        "auth/disable" => go!(gw.auth, auth_disable),
        "auth/authenticate" => go!(gw.auth, authenticate),
        "auth/user/add" => go!(gw.auth, user_add),
        "auth/user/get" => go!(gw.auth, user_get),
        "auth/user/list" => go!(gw.auth, user_list),
        "auth/user/delete" => go!(gw.auth, user_delete),
        "auth/user/changepw" => go!(gw.auth, user_change_password),
        "auth/user/grant" => go!(gw.auth, user_grant_role),
        "auth/user/revoke" => go!(gw.auth, user_revoke_role),
        "auth/role/add" => go!(gw.auth, role_add),
        "auth/role/get" => go!(gw.auth, role_get),
        "auth/role/list" => go!(gw.auth, role_list),
        "auth/role/delete" => go!(gw.auth, role_delete),
        "auth/role/grant" => go!(gw.auth, role_grant_permission),
        "auth/role/revoke" => go!(gw.auth, role_revoke_permission),
        "lock" => go!(gw.concurrency, lock),
        "lock/unlock" => go!(gw.concurrency, unlock),
        "election/campaign" => go!(gw.concurrency, campaign),
        "election/proclaim" => go!(gw.concurrency, proclaim),
        "election/leader" => go!(gw.concurrency, leader),
        "election/resign" => go!(gw.concurrency, resign),
        other => unreachable!("unary gateway path {other} has no call"),
    }
}

async fn server_stream(
    gw: &Gateway,
    path: &str,
    desc: prost_reflect::MethodDescriptor,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let lim = gw.limit;
    match path {
        "maintenance/snapshot" => {
            call::server_stream(desc, headers, body, lim, |r| async {
                gw.maintenance.snapshot(r).await
            })
            .await
        }
        "election/observe" => {
            call::server_stream(desc, headers, body, lim, |r| async {
                gw.concurrency.observe(r).await
            })
            .await
        }
        other => unreachable!("server-stream gateway path {other} has no call"),
    }
}

async fn bidi(
    gw: &Gateway,
    path: &str,
    desc: prost_reflect::MethodDescriptor,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let lim = gw.limit;
    match path {
        "watch" => {
            call::bidi(desc, headers, body, lim, |r| async {
                gw.watch.watch(r).await
            })
            .await
        }
        "lease/keepalive" => {
            call::bidi(desc, headers, body, lim, |r| async {
                gw.lease.lease_keep_alive(r).await
            })
            .await
        }
        other => unreachable!("streaming gateway path {other} has no call"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_a_method_of_the_descriptor_set() {
        for (path, service, method, _) in ROUTES {
            let m = json::method(service, method);
            assert_eq!(m.name(), *method, "{path}");
        }
        assert_eq!(route("/v3beta/kv/range").unwrap().2, "Range");
        assert_eq!(route("/v3/lock").unwrap().2, "Lock");
        assert!(route("/v3/kv/nope").is_none());
        assert!(route("/v2/keys").is_none());
    }
}
