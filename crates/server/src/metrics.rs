//! Prometheus metrics with etcd's names and labels, served at `/metrics` on the client URLs
//! and on `--listen-metrics-urls` (`crate::http`).
//!
//! Why etcd's names: the alert rules, Grafana dashboards and `etcdctl check datascale`
//! written for etcd read exactly these series. Only what raftkv can mean the same way is
//! exported; docs/operations.md lists each metric, where it is measured, and what is left
//! out and why.
//!
//! There is one registry per process (as etcd's default registry): the counters are bumped
//! from the node thread, the transport and the gRPC edge, which all run in the one member a
//! process hosts. Gauges that mirror state the node already publishes (leader, indexes,
//! sizes) are read at scrape time rather than kept up to date on every change.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::grpc::Context;

/// An entry whose apply takes longer than this counts in `etcd_server_slow_apply_total`
/// (etcd's `warnApplyDuration`).
pub const SLOW_APPLY: Duration = Duration::from_millis(100);

/// Every metric of the member.
pub struct Metrics {
    registry: Registry,
    // etcd_server_*
    has_leader: IntGauge,
    is_leader: IntGauge,
    pub leader_changes: IntCounter,
    proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub slow_apply: IntCounter,
    quota_backend_bytes: IntGauge,
    // etcd_disk_*
    pub wal_fsync: Histogram,
    pub backend_snapshot: Histogram,
    // etcd_network_*
    peer_sent_bytes: IntCounterVec,
    peer_received_bytes: IntCounterVec,
    peer_round_trip: HistogramVec,
    // etcd_mvcc_* / etcd_debugging_mvcc_*
    db_total_size: IntGauge,
    keys_total: IntGauge,
    pub put_total: IntCounter,
    pub delete_total: IntCounter,
    pub txn_total: IntCounter,
    pub range_total: IntCounter,
    watch_streams: IntGauge,
    // grpc_server_* (go-grpc-prometheus names, as etcd registers them)
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    /// Unary RPCs only: a stream's duration is how long the client kept it open, which says
    /// nothing about the member's speed.
    grpc_handling: HistogramVec,
    // etcd_server_version / etcd_cluster_version: constant 1, the version in the label (etcd
    // 3.4 registers both; its e2e suite and version-gated tools read them).
    server_version: IntGauge,
    cluster_version: IntGauge,
    build_info: Gauge,
    // raftkv's own: rounds of the periodic corruption check (crate::corrupt_monitor).
    corruption_checks: IntCounterVec,
}

/// `3.4` of `3.4.0`: etcd labels its cluster version metric with major.minor only.
fn major_minor(version: &str) -> String {
    version.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            slow_apply: counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            quota_backend_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            wal_fsync: Histogram::with_opts(
                HistogramOpts::new(
                    "etcd_disk_wal_fsync_duration_seconds",
                    "The latency distributions of fsync called by WAL.",
                )
                .buckets(exponential_buckets(0.001, 2.0, 14).expect("buckets")),
            )
            .expect("valid metric"),
            backend_snapshot: Histogram::with_opts(
                HistogramOpts::new(
                    "etcd_disk_backend_snapshot_duration_seconds",
                    "The latency distribution of backend snapshots.",
                )
                .buckets(exponential_buckets(0.01, 2.0, 16).expect("buckets")),
            )
            .expect("valid metric"),
            peer_sent_bytes: IntCounterVec::new(
                Opts::new(
                    "etcd_network_peer_sent_bytes_total",
                    "The total number of bytes sent to peers.",
                ),
                &["To"],
            )
            .expect("valid metric"),
            peer_received_bytes: IntCounterVec::new(
                Opts::new(
                    "etcd_network_peer_received_bytes_total",
                    "The total number of bytes received from peers.",
                ),
                &["From"],
            )
            .expect("valid metric"),
            // etcd's buckets: 0.1 ms doubling 16 times (to about 3.3 s).
            peer_round_trip: HistogramVec::new(
                HistogramOpts::new(
                    "etcd_network_peer_round_trip_time_seconds",
                    "Round-Trip-Time histogram between peers",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
                &["To"],
            )
            .expect("valid metric"),
            db_total_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            keys_total: gauge(
                "etcd_debugging_mvcc_keys_total",
                "Total number of keys.",
            ),
            put_total: counter("etcd_mvcc_put_total", "Total number of puts seen by this member."),
            delete_total: counter(
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            ),
            txn_total: counter("etcd_mvcc_txn_total", "Total number of txns seen by this member."),
            range_total: counter(
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            ),
            watch_streams: gauge(
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
            ),
            grpc_started: IntCounterVec::new(
                Opts::new(
                    "grpc_server_started_total",
                    "Total number of RPCs started on the server.",
                ),
                &["grpc_type", "grpc_service", "grpc_method"],
            )
            .expect("valid metric"),
            grpc_handled: IntCounterVec::new(
                Opts::new(
                    "grpc_server_handled_total",
                    "Total number of RPCs completed on the server, regardless of success or failure.",
                ),
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            )
            .expect("valid metric"),
            server_version: IntGauge::with_opts(
                Opts::new(
                    "etcd_server_version",
                    "Which version is running. 1 for 'server_version' label with current version.",
                )
                .const_label("server_version", crate::grpc::ETCD_VERSION),
            )
            .expect("valid metric"),
            cluster_version: IntGauge::with_opts(
                Opts::new(
                    "etcd_cluster_version",
                    "Which version is running. 1 for 'cluster_version' label with current cluster version",
                )
                .const_label("cluster_version", major_minor(crate::grpc::CLUSTER_VERSION)),
            )
            .expect("valid metric"),
            grpc_handling: HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of unary gRPC calls handled by the server.",
                )
                // 0.5 ms .. ~16 s: a local read is well under a millisecond, a write one
                // fsync and a round trip; go-grpc-prometheus's default starts at 5 ms.
                .buckets(exponential_buckets(0.0005, 2.0, 16).expect("buckets")),
                &["grpc_type", "grpc_service", "grpc_method"],
            )
            .expect("valid metric"),
            build_info: Gauge::with_opts(
                Opts::new(
                    "raftkv_build_info",
                    "Always 1; the labels say which raftkv build and which etcd API level it serves.",
                )
                .const_label("version", env!("CARGO_PKG_VERSION"))
                .const_label("etcd_api", crate::grpc::ETCD_VERSION),
            )
            .expect("valid metric"),
            corruption_checks: IntCounterVec::new(
                Opts::new(
                    "raftkv_corruption_checks_total",
                    "Rounds of the periodic corruption check this member ran as leader, by result (passed, incomplete, mismatch).",
                ),
                &["result"],
            )
            .expect("valid metric"),
        };
        m.build_info.set(1.0);
        m.server_version.set(1);
        m.cluster_version.set(1);
        let r = &m.registry;
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.has_leader.clone()),
            Box::new(m.is_leader.clone()),
            Box::new(m.leader_changes.clone()),
            Box::new(m.proposals_committed.clone()),
            Box::new(m.proposals_applied.clone()),
            Box::new(m.proposals_pending.clone()),
            Box::new(m.proposals_failed.clone()),
            Box::new(m.slow_apply.clone()),
            Box::new(m.quota_backend_bytes.clone()),
            Box::new(m.wal_fsync.clone()),
            Box::new(m.backend_snapshot.clone()),
            Box::new(m.peer_sent_bytes.clone()),
            Box::new(m.peer_received_bytes.clone()),
            Box::new(m.peer_round_trip.clone()),
            Box::new(m.db_total_size.clone()),
            Box::new(m.keys_total.clone()),
            Box::new(m.put_total.clone()),
            Box::new(m.delete_total.clone()),
            Box::new(m.txn_total.clone()),
            Box::new(m.range_total.clone()),
            Box::new(m.watch_streams.clone()),
            Box::new(m.grpc_started.clone()),
            Box::new(m.grpc_handled.clone()),
            Box::new(m.server_version.clone()),
            Box::new(m.cluster_version.clone()),
            Box::new(m.grpc_handling.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.corruption_checks.clone()),
            // process_cpu_seconds_total, process_open_fds, process_max_fds,
            // process_resident_memory_bytes, process_virtual_memory_bytes,
            // process_start_time_seconds: the same collector Go's client registers.
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in all {
            r.register(c).expect("metric registered once");
        }
        m
    }

    /// One round-trip probe to `peer` came back after `seconds`.
    pub fn peer_round_trip(&self, peer: u64, seconds: f64) {
        self.peer_round_trip
            .with_label_values(&[&format!("{peer:x}")])
            .observe(seconds);
    }

    /// Bytes handed to the socket of `peer`'s connection.
    /// One round of the periodic corruption check ended with `result`.
    pub fn corruption_check(&self, result: &str) {
        self.corruption_checks.with_label_values(&[result]).inc();
    }

    pub fn peer_sent(&self, peer: u64, bytes: usize) {
        self.peer_sent_bytes
            .with_label_values(&[&format!("{peer:x}")])
            .inc_by(bytes as u64);
    }

    /// Bytes read from `peer`'s connection.
    pub fn peer_received(&self, peer: u64, bytes: usize) {
        self.peer_received_bytes
            .with_label_values(&[&format!("{peer:x}")])
            .inc_by(bytes as u64);
    }

    /// An RPC of a known method started.
    pub fn grpc_started(&self, rpc: &GrpcLabels) {
        self.grpc_started
            .with_label_values(&[rpc.kind, rpc.service, rpc.method])
            .inc();
    }

    /// An RPC ended with the gRPC status `code` (numeric, as on the wire).
    pub fn grpc_handled(&self, rpc: &GrpcLabels, code: i32) {
        self.grpc_handled
            .with_label_values(&[rpc.kind, rpc.service, rpc.method, code_name(code)])
            .inc();
    }

    /// A unary RPC took `seconds` from its request to its status.
    pub fn grpc_latency(&self, rpc: &GrpcLabels, seconds: f64) {
        if rpc.kind == "unary" {
            self.grpc_handling
                .with_label_values(&[rpc.kind, rpc.service, rpc.method])
                .observe(seconds);
        }
    }

    /// How many RPCs of each method started (`grpc_server_started_total`), by method name.
    pub fn started_by_method(&self) -> Vec<(String, u64)> {
        use prometheus::core::Collector as _;
        let mut out = Vec::new();
        for family in self.grpc_started.collect() {
            for m in family.get_metric() {
                let method = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "grpc_method")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                out.push((method, m.get_counter().get_value() as u64));
            }
        }
        out
    }

    /// The unary latency histogram of every method added together: (upper bound in
    /// seconds, cumulative count) per bucket, the `+Inf` bucket last, and the sum.
    pub fn unary_latency(&self) -> LatencyBuckets {
        use prometheus::core::Collector as _;
        let mut merged = LatencyBuckets::default();
        for family in self.grpc_handling.collect() {
            for m in family.get_metric() {
                let h = m.get_histogram();
                merged.sum += h.get_sample_sum();
                merged.count += h.get_sample_count();
                for (i, b) in h.get_bucket().iter().enumerate() {
                    match merged.buckets.get_mut(i) {
                        Some(slot) => slot.1 += b.cumulative_count(),
                        None => merged.buckets.push((b.upper_bound(), b.cumulative_count())),
                    }
                }
            }
        }
        if merged.buckets.is_empty() {
            // No unary call yet: the empty buckets, so that a reader sees the bounds.
            merged.buckets = exponential_buckets(0.0005, 2.0, 16)
                .expect("buckets")
                .into_iter()
                .map(|le| (le, 0))
                .collect();
        }
        merged.buckets.push((f64::INFINITY, merged.count));
        merged
    }

    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.get()
    }

    /// The text exposition of every metric, with the scrape-time gauges read from `ctx`.
    pub fn render(&self, ctx: &Context) -> String {
        let st = &ctx.node.status;
        self.has_leader.set(i64::from(st.leader().is_some()));
        self.is_leader
            .set(i64::from(st.leader() == Some(ctx.node.id)));
        self.proposals_committed.set(st.commit() as i64);
        self.proposals_applied.set(st.applied() as i64);
        self.quota_backend_bytes.set(ctx.quota.bytes() as i64);
        if let Ok(sm) = ctx.node.state.read() {
            self.db_total_size.set(sm.store.approximate_size() as i64);
            self.keys_total.set(sm.store.key_count() as i64);
            self.watch_streams.set(sm.watch.streams() as i64);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A latency histogram's cumulative buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyBuckets {
    /// (upper bound in seconds, calls at most that long), ascending; `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl LatencyBuckets {
    /// The `q` quantile (0..1), interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; `None` without observations. A quantile in the `+Inf`
    /// bucket is reported as the highest finite bound (the histogram knows no more).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let mut lower = (0.0, 0u64);
        for &(le, cumulative) in &self.buckets {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let inside = (cumulative - lower.1) as f64;
                if inside == 0.0 {
                    return Some(le);
                }
                return Some(lower.0 + (le - lower.0) * (rank - lower.1 as f64) / inside);
            }
            lower = (le, cumulative);
        }
        Some(lower.0)
    }
}

/// The member's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The labels go-grpc-prometheus gives one method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcLabels {
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub kind: &'static str,
    pub service: &'static str,
    pub method: &'static str,
}

/// grpc-go's names of the status codes, as go-grpc-prometheus prints them.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_grpc_gos() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(8), "ResourceExhausted");
        assert_eq!(code_name(14), "Unavailable");
        assert_eq!(code_name(99), "Unknown");
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = LatencyBuckets {
            buckets: vec![(0.001, 50), (0.002, 90), (0.004, 100), (f64::INFINITY, 100)],
            count: 100,
            sum: 0.1,
        };
        assert_eq!(h.quantile(0.5), Some(0.001));
        let p90 = h.quantile(0.9).unwrap();
        assert!((p90 - 0.002).abs() < 1e-12, "{p90}");
        let p95 = h.quantile(0.95).unwrap();
        assert!((p95 - 0.003).abs() < 1e-12, "{p95}");
        assert_eq!(LatencyBuckets::default().quantile(0.5), None);
        let slow = LatencyBuckets {
            buckets: vec![(0.001, 0), (f64::INFINITY, 3)],
            count: 3,
            sum: 30.0,
        };
        assert_eq!(slow.quantile(0.99), Some(0.001));
    }

    #[test]
    fn the_registry_holds_etcds_names() {
        let m = metrics();
        m.wal_fsync.observe(0.002);
        m.peer_sent(0xabc, 10);
        m.peer_round_trip(0xabc, 0.0003);
        let rpc = GrpcLabels {
            kind: "unary",
            service: "etcdserverpb.KV",
            method: "Put",
        };
        m.grpc_started(&rpc);
        m.grpc_handled(&rpc, 8);
        m.grpc_latency(&rpc, 0.002);
        // A stream's lifetime is not a latency: not recorded.
        let watch = GrpcLabels {
            kind: "bidi_stream",
            service: "etcdserverpb.Watch",
            method: "Watch",
        };
        m.grpc_latency(&watch, 30.0);
        let merged = m.unary_latency();
        assert!(merged.count >= 1);
        assert_eq!(merged.buckets.last().unwrap().0, f64::INFINITY);
        assert!(merged.quantile(0.5).unwrap() < 1.0);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for needle in [
            "etcd_server_has_leader ",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"}",
            "etcd_network_peer_sent_bytes_total{To=\"abc\"} 10",
            "etcd_network_peer_round_trip_time_seconds_bucket{To=\"abc\",le=\"0.0004\"} 1",
            "grpc_server_handled_total{grpc_code=\"ResourceExhausted\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1",
            "grpc_server_handling_seconds_bucket{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\",le=\"0.002\"}",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            format!("etcd_server_version{{server_version=\"{}\"}} 1", crate::grpc::ETCD_VERSION).as_str(),
            "etcd_cluster_version{cluster_version=\"3.4\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\",le="), "{text}");
    }
}
