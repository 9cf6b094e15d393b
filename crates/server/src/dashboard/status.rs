//! One member's status as the dashboard shows it (`GET /dashboard/api/status`): the node's
//! published state, the leader's view of replication, and the member's own metrics.
//!
//! Member ids are hex strings (as etcdctl prints them): a JSON number would lose the low
//! bits of a 64-bit id in a browser. Indexes and counters stay numbers; they are far below
//! 2^53 for any cluster's lifetime.

use serde::Serialize;

use crate::grpc::Context;
use crate::metrics::{metrics, LatencyBuckets};

/// What `/dashboard/api/status` answers.
#[derive(Serialize, Debug, Clone)]
pub struct MemberStatus {
    pub id: String,
    pub name: String,
    pub cluster_id: String,
    /// "follower", "pre-candidate", "candidate" or "leader".
    pub role: &'static str,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    /// The leader this member knows of, if any.
    pub leader: Option<String>,
    /// `etcd_server_leader_changes_seen_total`.
    pub leader_changes: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub keys: usize,
    pub db_size: u64,
    /// Leader only: every other member's replication, with its lag behind our last index.
    pub progress: Vec<Replication>,
    pub requests: Requests,
    pub latency: Latency,
    pub version: &'static str,
}

/// How far one member's log is from the leader's, as the leader sees it.
#[derive(Serialize, Debug, Clone)]
pub struct Replication {
    pub id: String,
    pub match_index: u64,
    pub next_index: u64,
    /// Entries the leader has that this member has not acknowledged yet.
    pub lag: u64,
    pub state: &'static str,
    pub recent_active: bool,
}

/// RPCs started on this member (`grpc_server_started_total`); the page turns two samples
/// into a rate.
#[derive(Serialize, Debug, Clone)]
pub struct Requests {
    pub total: u64,
    pub by_method: std::collections::BTreeMap<String, u64>,
}

/// Unary RPC latency (`grpc_server_handling_seconds`, every method together): percentiles
/// since the member started, and the cumulative buckets so the page can compute them over
/// its own refresh window.
#[derive(Serialize, Debug, Clone)]
pub struct Latency {
    pub count: u64,
    pub sum_seconds: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// (upper bound in seconds, cumulative count); the last bound is `null` (+Inf).
    pub buckets: Vec<(Option<f64>, u64)>,
}

impl Latency {
    fn from_buckets(h: &LatencyBuckets) -> Latency {
        let ms = |q| h.quantile(q).map(|s| s * 1000.0);
        Latency {
            count: h.count,
            sum_seconds: h.sum,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            buckets: h
                .buckets
                .iter()
                .map(|&(le, n)| (le.is_finite().then_some(le), n))
                .collect(),
        }
    }
}

fn role_name(role: u8) -> &'static str {
    match role {
        3 => "leader",
        2 => "candidate",
        1 => "pre-candidate",
        _ => "follower",
    }
}

/// This member's status now.
pub fn member_status(ctx: &Context) -> MemberStatus {
    let st = &ctx.node.status;
    let last_index = st.last_index();
    let (revision, compact_revision, keys, db_size) = match ctx.node.state.read() {
        Ok(sm) => (
            sm.store.current_revision(),
            sm.store.compact_revision(),
            sm.store.key_count(),
            sm.store.approximate_size(),
        ),
        Err(_) => (0, 0, 0, 0),
    };
    let progress = st
        .progress()
        .into_iter()
        .map(|p| Replication {
            id: format!("{:x}", p.id),
            match_index: p.match_index,
            next_index: p.next_index,
            lag: last_index.saturating_sub(p.match_index),
            state: p.state,
            recent_active: p.recent_active,
        })
        .collect();
    let by_method: std::collections::BTreeMap<String, u64> = metrics()
        .started_by_method()
        .into_iter()
        .fold(Default::default(), |mut all, (method, n)| {
            *all.entry(method).or_default() += n;
            all
        });
    MemberStatus {
        id: format!("{:x}", ctx.node.id),
        name: ctx.membership.self_name.clone(),
        cluster_id: format!("{:x}", ctx.node.cluster_id),
        role: role_name(st.role.load(std::sync::atomic::Ordering::Relaxed)),
        term: st.term(),
        commit: st.commit(),
        applied: st.applied(),
        last_index,
        leader: st.leader().map(|l| format!("{l:x}")),
        leader_changes: metrics().leader_changes(),
        revision,
        compact_revision,
        keys,
        db_size,
        progress,
        requests: Requests {
            total: by_method.values().sum(),
            by_method,
        },
        latency: Latency::from_buckets(&metrics().unary_latency()),
        version: env!("CARGO_PKG_VERSION"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_json_has_millisecond_percentiles_and_an_open_last_bucket() {
        let h = LatencyBuckets {
            buckets: vec![(0.001, 10), (0.002, 20), (f64::INFINITY, 20)],
            count: 20,
            sum: 0.025,
        };
        let json = serde_json::to_value(Latency::from_buckets(&h)).unwrap();
        assert_eq!(json["p50_ms"], 1.0);
        assert_eq!(json["count"], 20);
        assert_eq!(json["buckets"][2][0], serde_json::Value::Null);
        assert_eq!(json["buckets"][1][1], 20);
        let none = serde_json::to_value(Latency::from_buckets(&LatencyBuckets::default())).unwrap();
        assert_eq!(none["p99_ms"], serde_json::Value::Null);
    }

    #[test]
    fn roles_are_named() {
        assert_eq!(role_name(0), "follower");
        assert_eq!(role_name(1), "pre-candidate");
        assert_eq!(role_name(3), "leader");
    }
}
