//! The built-in web dashboard, served at `/dashboard` on every client URL (off with
//! `--enable-dashboard=false`): the members with role, term, indexes, replication lag,
//! leader changes, request rate and latency; a key browser with a key's revision history;
//! a live watch tail. docs/operations.md, "Dashboard", is the user's guide.
//!
//! Everything the page needs is inside the binary (`include_str!` of the files next to this
//! one) and the page's Content-Security-Policy allows only this origin, so it works on a
//! machine without internet access and cannot pull in anything else by accident.
//!
//! Where the page's data comes from:
//! * `GET /dashboard/api/status`: this member (`status.rs`).
//! * `GET /dashboard/api/cluster`: every member, fetched by this member (`peers.rs`).
//! * Keys, history and the watch tail: the JSON gateway on the same origin
//!   (`POST /v3/kv/range`, `POST /v3/watch`), with the same auth as any gateway client.

mod peers;
mod status;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::grpc::Context;

pub use peers::{cluster_view, ClusterView, MemberView, PEER_TIMEOUT};
pub use status::{member_status, MemberStatus};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// Only this origin: scripts, styles, fetches. `data:` for the empty favicon.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'";

/// The dashboard's routes, to merge into the client port's HTTP router.
pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/style.css", get(style_css))
        .route("/dashboard/api/status", get(status))
        .route("/dashboard/api/cluster", get(cluster))
        .with_state(ctx)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // A new binary may bring new assets; the page is small, so never cache it.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn status(State(ctx): State<Context>) -> Response {
    json(&member_status(&ctx))
}

async fn cluster(State(ctx): State<Context>) -> Response {
    match cluster_view(&ctx).await {
        Ok(view) => json(&view),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.message().to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page must work offline: no asset may point at another origin.
    #[test]
    fn assets_reference_no_other_origin() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} contains {needle:?}");
            }
        }
        assert!(INDEX_HTML.contains("/dashboard/app.js"));
        assert!(INDEX_HTML.contains("/dashboard/style.css"));
    }
}
