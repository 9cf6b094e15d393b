//! Plain HTTP endpoints, served on the client URLs (next to gRPC, same port) and on
//! `--listen-metrics-urls`: `/health` (etcd's JSON shape), `/livez`, `/readyz`, `/version`,
//! `/metrics` (Prometheus text format, `crate::metrics`).
//! On the client URLs these are all an HTTP/1.x request can reach (`grpc/edge.rs`).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::grpc::{Context, CLUSTER_VERSION, ETCD_VERSION};

/// How long /health waits for a linearizable read round.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(ctx)
}

/// Go's `http.NotFound`, which etcd's HTTP mux answers for any other path (including a gRPC
/// method path reached over HTTP/1.1, see `grpc/edge.rs`).
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "404 page not found\n",
    )
        .into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Healthy when no alarm is active (unless excluded with `?exclude=NOSPACE`), a leader is
/// known and (unless `?serializable=true`) a linearizable read round completes, as etcd
/// 3.4 checks. The body is etcd 3.4's (`{"health":"false"}`, no reason); the reason is
/// logged, as etcd logs it.
async fn health(
    State(ctx): State<Context>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let unhealthy = |reason: &str| {
        tracing::warn!(reason, "/health error");
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\"}".to_string(),
        )
    };
    if ctx
        .node
        .status
        .failed
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return unhealthy("raft node stopped");
    }
    let excluded: Vec<&str> = q
        .get("exclude")
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    let alarm = ctx.node.state.read().ok().and_then(|sm| {
        sm.store.alarms().list().into_iter().find(|a| {
            let name = proto::etcdserverpb::AlarmType::try_from(a.alarm)
                .map(|t| t.as_str_name())
                .unwrap_or("UNKNOWN");
            !excluded.contains(&name)
        })
    });
    if let Some(a) = alarm {
        return unhealthy(&format!(
            "alarm {} raised by member {:x}",
            a.alarm, a.member_id
        ));
    }
    if ctx.node.status.leader().is_none() {
        return unhealthy("no leader");
    }
    let serializable = q.get("serializable").map(|v| v == "true").unwrap_or(false);
    if !serializable {
        match tokio::time::timeout(HEALTH_TIMEOUT, ctx.node.read_barrier()).await {
            Ok(Ok(())) => {}
            _ => return unhealthy("QGET failed"),
        }
    }
    json(StatusCode::OK, "{\"health\":\"true\"}".to_string())
}

/// Alive while the node thread runs.
async fn livez(State(ctx): State<Context>) -> Response {
    if ctx
        .node
        .status
        .failed
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]raft node stopped\nlivez check failed\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

/// Ready when alive and a leader is known (this member can serve linearizable requests).
async fn readyz(State(ctx): State<Context>) -> Response {
    if ctx
        .node
        .status
        .failed
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]raft node stopped\nreadyz check failed\n",
        )
            .into_response();
    }
    if ctx.node.status.leader().is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]leader: no leader\nreadyz check failed\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

/// Prometheus text exposition (`crate::metrics`).
async fn metrics(State(ctx): State<Context>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::metrics().render(&ctx),
    )
        .into_response()
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}\"}}"),
    )
}
