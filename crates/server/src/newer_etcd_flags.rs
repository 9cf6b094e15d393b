//! The server flags etcd 3.5 and 3.6 added to 3.4's (`crate::compat_args` has 3.4's), so
//! that a command line written for a newer etcd (kubeadm's among them) starts
//! `raftkv server`. etcd 3.6 renamed most `--experimental-*` flags (`--corrupt-check-time`
//! for `--experimental-corrupt-check-time`, ...) and moved the boolean ones behind
//! `--feature-gates` (`crate::feature_gates`); both spellings are accepted, and giving both
//! is refused with etcd 3.6's words. Each flag is, as in `crate::compat_args`:
//!
//! - **implemented**: `--corrupt-check-time`, `--compact-hash-check-time` and
//!   `--experimental-compact-hash-check-*` (the periodic corruption check),
//!   `--max-learners` / `--experimental-max-learners`, `--feature-gates`,
//!   `--peer-skip-client-san-verification` (raftkv never checks a peer's certificate names
//!   against its address, which is what the flag asks for), `--log-format` (in
//!   `crate::args`; 3.6's `console` is raftkv's text);
//! - **ignored, said once** (only what cannot cost data or correctness): tracing, log
//!   rotation, bbolt tuning and defragmentation thresholds, mlock, warning durations,
//!   socket reuse options, the raft connection timeouts, the downgrade check interval,
//!   `--v2-deprecation`, `--snapshot-catchup-entries` (see [`NewerEtcdFlags::notes`]);
//! - **refused**: v3 discovery (`--discovery-endpoints`, `--discovery-token`) and
//!   `--listen-client-http-urls` (raftkv serves HTTP and gRPC on the same client URLs).
//!
//! The TLS flags 3.5 added are in `crate::tls::TlsArgs`.

use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

use crate::compat_args::{parse_go_duration, CompatArgs};
use crate::feature_gates::{FeatureGates, Gate};

/// `--v2-deprecation`'s stages (raftkv has no v2 store: every stage describes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum V2Deprecation {
    NotYet,
    WriteOnly,
    WriteOnlyDropData,
    Gone,
}

/// etcd's default `--compact-hash-check-time`.
pub const DEFAULT_COMPACT_HASH_CHECK_TIME: Duration = Duration::from_secs(60);

/// The flags of etcd 3.5 and 3.6 that 3.4 does not have, flattened into `CompatArgs`.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "etcd 3.5/3.6 compatibility")]
pub struct NewerEtcdFlags {
    /// etcd 3.6's feature gates, `Name=true,Other=false` (InitialCorruptCheck,
    /// CompactHashCheck, LeaseCheckpoint, LeaseCheckpointPersist, StopGRPCServiceOnDefrag,
    /// TxnModeWriteWithSharedBuffer, SetMemberLocalAddr; AllAlpha, AllBeta).
    #[arg(long, env = "RAFTKV_FEATURE_GATES", value_parser = crate::feature_gates::parse_flag)]
    pub feature_gates: Option<FeatureGates>,

    /// How often the leader compares its store's hash with every follower's (3.6's name of
    /// --experimental-corrupt-check-time).
    #[arg(long, env = "RAFTKV_CORRUPT_CHECK_TIME")]
    pub corrupt_check_time: Option<String>,

    /// Period of the CompactHashCheck gate's check (Go duration, > 0; default 1m).
    #[arg(long, env = "RAFTKV_COMPACT_HASH_CHECK_TIME")]
    pub compact_hash_check_time: Option<String>,

    /// 3.5's name of --compact-hash-check-time.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_COMPACT_HASH_CHECK_TIME")]
    pub experimental_compact_hash_check_time: Option<String>,

    /// 3.5's switch for the CompactHashCheck gate.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_compact_hash_check_enabled: Option<bool>,

    /// 3.4/3.5's name of --watch-progress-notify-interval.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    pub experimental_watch_progress_notify_interval: Option<String>,

    /// Learner members the cluster may hold (etcd's default: 1); checked when this member
    /// takes a MemberAdd call or, as leader, places one.
    #[arg(long, env = "RAFTKV_MAX_LEARNERS")]
    pub max_learners: Option<i64>,

    /// 3.5's name of --max-learners.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_MAX_LEARNERS")]
    pub experimental_max_learners: Option<i64>,

    /// Log entries etcd keeps behind a snapshot for slow followers. Ignored: raftkv keeps
    /// none and sends such a follower the snapshot.
    #[arg(long, env = "RAFTKV_SNAPSHOT_CATCHUP_ENTRIES")]
    pub snapshot_catchup_entries: Option<u64>,

    /// 3.5's name of --snapshot-catchup-entries.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES")]
    pub experimental_snapshot_catchup_entries: Option<u64>,

    /// Keys deleted per compaction batch (3.6's name). Ignored: raftkv compacts in one step.
    #[arg(long, env = "RAFTKV_COMPACTION_BATCH_LIMIT")]
    pub compaction_batch_limit: Option<u64>,

    /// Pause between compaction batches. Ignored: raftkv compacts in one step.
    #[arg(long, env = "RAFTKV_COMPACTION_SLEEP_INTERVAL")]
    pub compaction_sleep_interval: Option<String>,

    /// 3.5's name of --compaction-sleep-interval.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_COMPACTION_SLEEP_INTERVAL")]
    pub experimental_compaction_sleep_interval: Option<String>,

    /// Apply duration above which etcd warns (3.6's name). Ignored.
    #[arg(long, env = "RAFTKV_WARNING_APPLY_DURATION")]
    pub warning_apply_duration: Option<String>,

    /// Unary request duration above which etcd warns. Ignored.
    #[arg(long, env = "RAFTKV_WARNING_UNARY_REQUEST_DURATION")]
    pub warning_unary_request_duration: Option<String>,

    /// 3.5's name of --warning-unary-request-duration.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_WARNING_UNARY_REQUEST_DURATION")]
    pub experimental_warning_unary_request_duration: Option<String>,

    /// Defragment bbolt at start when it would free this much. Ignored: no bbolt.
    #[arg(long, env = "RAFTKV_BOOTSTRAP_DEFRAG_THRESHOLD_MEGABYTES")]
    pub bootstrap_defrag_threshold_megabytes: Option<u64>,

    /// 3.5's name of --bootstrap-defrag-threshold-megabytes.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_BOOTSTRAP_DEFRAG_THRESHOLD_MEGABYTES")]
    pub experimental_bootstrap_defrag_threshold_megabytes: Option<u64>,

    /// Lock etcd's memory in RAM. Ignored.
    #[arg(long, env = "RAFTKV_MEMORY_MLOCK", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub memory_mlock: Option<bool>,

    /// 3.5's name of --memory-mlock.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_MEMORY_MLOCK", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_memory_mlock: Option<bool>,

    /// Interval of etcd's downgrade status checks. Ignored: raftkv has no downgrade.
    #[arg(long, env = "RAFTKV_DOWNGRADE_CHECK_TIME")]
    pub downgrade_check_time: Option<String>,

    /// 3.5's name of --downgrade-check-time.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_DOWNGRADE_CHECK_TIME")]
    pub experimental_downgrade_check_time: Option<String>,

    /// bbolt read buffer sharing (the TxnModeWriteWithSharedBuffer gate). Ignored.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_TXN_MODE_WRITE_WITH_SHARED_BUFFER", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_txn_mode_write_with_shared_buffer: Option<bool>,

    /// Stop the gRPC service during a defragmentation (the StopGRPCServiceOnDefrag gate).
    /// Ignored: raftkv serves while it compacts its storage.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_STOP_GRPC_SERVICE_ON_DEFRAG", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_stop_grpc_service_on_defrag: Option<bool>,

    /// Do not check a peer's client certificate names against its address. raftkv never
    /// does that check, so both values behave as `true` here.
    #[arg(long, env = "RAFTKV_PEER_SKIP_CLIENT_SAN_VERIFICATION", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub peer_skip_client_san_verification: Option<bool>,

    /// 3.5's name of --peer-skip-client-san-verification.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_peer_skip_client_san_verification: Option<bool>,

    /// OpenTelemetry tracing. Ignored.
    #[arg(long, env = "RAFTKV_ENABLE_DISTRIBUTED_TRACING", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_distributed_tracing: Option<bool>,
    /// 3.5's name of --enable-distributed-tracing.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_ENABLE_DISTRIBUTED_TRACING", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_enable_distributed_tracing: Option<bool>,
    /// Tracing collector address. Ignored.
    #[arg(long, env = "RAFTKV_DISTRIBUTED_TRACING_ADDRESS")]
    pub distributed_tracing_address: Option<String>,
    /// 3.5's name of --distributed-tracing-address.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_DISTRIBUTED_TRACING_ADDRESS")]
    pub experimental_distributed_tracing_address: Option<String>,
    /// Tracing service name. Ignored.
    #[arg(long, env = "RAFTKV_DISTRIBUTED_TRACING_SERVICE_NAME")]
    pub distributed_tracing_service_name: Option<String>,
    /// 3.5's name of --distributed-tracing-service-name.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_DISTRIBUTED_TRACING_SERVICE_NAME")]
    pub experimental_distributed_tracing_service_name: Option<String>,
    /// Tracing instance id. Ignored.
    #[arg(long, env = "RAFTKV_DISTRIBUTED_TRACING_INSTANCE_ID")]
    pub distributed_tracing_instance_id: Option<String>,
    /// 3.5's name of --distributed-tracing-instance-id.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_DISTRIBUTED_TRACING_INSTANCE_ID")]
    pub experimental_distributed_tracing_instance_id: Option<String>,
    /// Spans sampled per million. Ignored.
    #[arg(long, env = "RAFTKV_DISTRIBUTED_TRACING_SAMPLING_RATE")]
    pub distributed_tracing_sampling_rate: Option<i64>,
    /// 3.5's name of --distributed-tracing-sampling-rate.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_DISTRIBUTED_TRACING_SAMPLING_RATE")]
    pub experimental_distributed_tracing_sampling_rate: Option<i64>,

    /// HTTP-only client URLs. Refused: raftkv serves HTTP and gRPC on --listen-client-urls.
    #[arg(long, env = "RAFTKV_LISTEN_CLIENT_HTTP_URLS")]
    pub listen_client_http_urls: Option<String>,

    /// SO_REUSEPORT on the listeners. Ignored.
    #[arg(long, env = "RAFTKV_SOCKET_REUSE_PORT", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub socket_reuse_port: Option<bool>,
    /// SO_REUSEADDR on the listeners. Ignored.
    #[arg(long, env = "RAFTKV_SOCKET_REUSE_ADDRESS", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub socket_reuse_address: Option<bool>,

    /// Read timeout of etcd's rafthttp connections. Ignored.
    #[arg(long, env = "RAFTKV_RAFT_READ_TIMEOUT")]
    pub raft_read_timeout: Option<String>,
    /// Write timeout of etcd's rafthttp connections. Ignored.
    #[arg(long, env = "RAFTKV_RAFT_WRITE_TIMEOUT")]
    pub raft_write_timeout: Option<String>,

    /// Rotate the log file. Ignored.
    #[arg(long, env = "RAFTKV_ENABLE_LOG_ROTATION", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_log_rotation: Option<bool>,
    /// Log rotation settings. Ignored.
    #[arg(long, env = "RAFTKV_LOG_ROTATION_CONFIG_JSON")]
    pub log_rotation_config_json: Option<String>,

    /// Stage of etcd's v2 store deprecation. Ignored: raftkv has no v2 store.
    #[arg(long, env = "RAFTKV_V2_DEPRECATION", value_enum)]
    pub v2_deprecation: Option<V2Deprecation>,

    /// bbolt freelist type (3.5's name). Ignored: no bbolt.
    #[arg(long, env = "RAFTKV_BACKEND_BBOLT_FREELIST_TYPE")]
    pub backend_bbolt_freelist_type: Option<String>,

    /// V3 discovery service endpoints. Refused: list the members with --initial-cluster.
    #[arg(long, env = "RAFTKV_DISCOVERY_ENDPOINTS")]
    pub discovery_endpoints: Option<String>,
    /// V3 discovery token. Refused.
    #[arg(long, env = "RAFTKV_DISCOVERY_TOKEN")]
    pub discovery_token: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_DIAL_TIMEOUT")]
    pub discovery_dial_timeout: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_REQUEST_TIMEOUT")]
    pub discovery_request_timeout: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_KEEPALIVE_TIME")]
    pub discovery_keepalive_time: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_KEEPALIVE_TIMEOUT")]
    pub discovery_keepalive_timeout: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_INSECURE_TRANSPORT", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub discovery_insecure_transport: Option<bool>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub discovery_insecure_skip_tls_verify: Option<bool>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_CERT")]
    pub discovery_cert: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_KEY")]
    pub discovery_key: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_CACERT")]
    pub discovery_cacert: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_USER")]
    pub discovery_user: Option<String>,
    /// Only used with --discovery-endpoints.
    #[arg(long, env = "RAFTKV_DISCOVERY_PASSWORD")]
    pub discovery_password: Option<String>,
}

/// What the 3.5/3.6 flags (with 3.4's experimental ones) ask for, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewerSettings {
    /// The start-up corruption check (`InitialCorruptCheck`).
    pub initial_corrupt_check: bool,
    /// The periodic corruption check's period: the shorter of `--corrupt-check-time` and,
    /// with `CompactHashCheck`, `--compact-hash-check-time`; `None`: off.
    pub corrupt_check_interval: Option<Duration>,
    /// `--max-learners`.
    pub max_learners: usize,
    /// `--watch-progress-notify-interval` or its experimental spelling, as written.
    pub watch_progress_notify_interval: Option<String>,
    /// One start-up line per flag accepted that changes nothing (or less than etcd's).
    pub notes: Vec<String>,
}

/// The pairs etcd 3.6 refuses to see both spellings of (its `experimentalFlagMigrationMap`
/// and the warning-duration pair), old name first; the values are whether each was given.
fn both_given(c: &CompatArgs, watch_given: bool) -> Vec<(&'static str, &'static str, bool, bool)> {
    let n = &c.newer;
    let e = &c.experimental;
    vec![
        (
            "experimental-compact-hash-check-time",
            "compact-hash-check-time",
            n.experimental_compact_hash_check_time.is_some(),
            n.compact_hash_check_time.is_some(),
        ),
        (
            "experimental-corrupt-check-time",
            "corrupt-check-time",
            e.experimental_corrupt_check_time.is_some(),
            n.corrupt_check_time.is_some(),
        ),
        (
            "experimental-compaction-batch-limit",
            "compaction-batch-limit",
            e.experimental_compaction_batch_limit.is_some(),
            n.compaction_batch_limit.is_some(),
        ),
        (
            "experimental-watch-progress-notify-interval",
            "watch-progress-notify-interval",
            n.experimental_watch_progress_notify_interval.is_some(),
            watch_given,
        ),
        (
            "experimental-warning-apply-duration",
            "warning-apply-duration",
            e.experimental_warning_apply_duration.is_some(),
            n.warning_apply_duration.is_some(),
        ),
        (
            "experimental-bootstrap-defrag-threshold-megabytes",
            "bootstrap-defrag-threshold-megabytes",
            n.experimental_bootstrap_defrag_threshold_megabytes
                .is_some(),
            n.bootstrap_defrag_threshold_megabytes.is_some(),
        ),
        (
            "experimental-memory-mlock",
            "memory-mlock",
            n.experimental_memory_mlock.is_some(),
            n.memory_mlock.is_some(),
        ),
        (
            "experimental-snapshot-catchup-entries",
            "snapshot-catchup-entries",
            n.experimental_snapshot_catchup_entries.is_some(),
            n.snapshot_catchup_entries.is_some(),
        ),
        (
            "experimental-compaction-sleep-interval",
            "compaction-sleep-interval",
            n.experimental_compaction_sleep_interval.is_some(),
            n.compaction_sleep_interval.is_some(),
        ),
        (
            "experimental-downgrade-check-time",
            "downgrade-check-time",
            n.experimental_downgrade_check_time.is_some(),
            n.downgrade_check_time.is_some(),
        ),
        (
            "experimental-peer-skip-client-san-verification",
            "peer-skip-client-san-verification",
            n.experimental_peer_skip_client_san_verification.is_some(),
            n.peer_skip_client_san_verification.is_some(),
        ),
        (
            "experimental-enable-distributed-tracing",
            "enable-distributed-tracing",
            n.experimental_enable_distributed_tracing.is_some(),
            n.enable_distributed_tracing.is_some(),
        ),
        (
            "experimental-distributed-tracing-address",
            "distributed-tracing-address",
            n.experimental_distributed_tracing_address.is_some(),
            n.distributed_tracing_address.is_some(),
        ),
        (
            "experimental-distributed-tracing-service-name",
            "distributed-tracing-service-name",
            n.experimental_distributed_tracing_service_name.is_some(),
            n.distributed_tracing_service_name.is_some(),
        ),
        (
            "experimental-distributed-tracing-instance-id",
            "distributed-tracing-instance-id",
            n.experimental_distributed_tracing_instance_id.is_some(),
            n.distributed_tracing_instance_id.is_some(),
        ),
        (
            "experimental-distributed-tracing-sampling-rate",
            "distributed-tracing-sampling-rate",
            n.experimental_distributed_tracing_sampling_rate.is_some(),
            n.distributed_tracing_sampling_rate.is_some(),
        ),
        // Not in etcd's map (3.6 no longer has the experimental name), but never both.
        (
            "experimental-max-learners",
            "max-learners",
            n.experimental_max_learners.is_some(),
            n.max_learners.is_some(),
        ),
    ]
}

/// The new spelling's value when given, else the old one's.
fn either<T: Clone>(new: &Option<T>, old: &Option<T>) -> Option<T> {
    new.clone().or_else(|| old.clone())
}

impl CompatArgs {
    /// Check the 3.5/3.6 flags and the 3.4 experimental ones they share a meaning with;
    /// `watch` is `--watch-progress-notify-interval` as given (`None`: not given).
    pub fn newer_settings(&self, watch: Option<&str>) -> anyhow::Result<NewerSettings> {
        use anyhow::bail;
        let n = &self.newer;
        let e = &self.experimental;
        for (old, new, old_given, new_given) in both_given(self, watch.is_some()) {
            if old_given && new_given {
                bail!("cannot set --{old} and --{new} at the same time, please use --{new} only");
            }
        }
        let nonzero = |d: &Option<String>| {
            d.as_deref()
                .is_some_and(|s| parse_go_duration("", s).is_ok_and(|d| !d.is_zero()))
        };
        if nonzero(&n.warning_unary_request_duration)
            && nonzero(&n.experimental_warning_unary_request_duration)
        {
            bail!("both --experimental-warning-unary-request-duration and --warning-unary-request-duration flags are set. Use only --warning-unary-request-duration");
        }
        if n.discovery_endpoints
            .as_deref()
            .is_some_and(|s| !s.is_empty())
            || n.discovery_token.as_deref().is_some_and(|s| !s.is_empty())
        {
            bail!("--discovery-endpoints/--discovery-token (v3 discovery) are not supported: list the members with --initial-cluster");
        }
        if n.listen_client_http_urls
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty())
        {
            bail!("--listen-client-http-urls is not supported: raftkv serves its HTTP endpoints and gRPC together on --listen-client-urls");
        }
        // Durations are checked even where they change nothing: a typo is an error in etcd.
        for (flag, value) in [
            ("--compaction-sleep-interval", &n.compaction_sleep_interval),
            (
                "--experimental-compaction-sleep-interval",
                &n.experimental_compaction_sleep_interval,
            ),
            ("--warning-apply-duration", &n.warning_apply_duration),
            (
                "--warning-unary-request-duration",
                &n.warning_unary_request_duration,
            ),
            (
                "--experimental-warning-unary-request-duration",
                &n.experimental_warning_unary_request_duration,
            ),
            ("--downgrade-check-time", &n.downgrade_check_time),
            (
                "--experimental-downgrade-check-time",
                &n.experimental_downgrade_check_time,
            ),
            ("--raft-read-timeout", &n.raft_read_timeout),
            ("--raft-write-timeout", &n.raft_write_timeout),
        ] {
            if let Some(v) = value {
                parse_go_duration(flag, v)?;
            }
        }

        let gates = crate::feature_gates::resolve(n.feature_gates.as_ref(), |flag| match flag {
            "experimental-initial-corrupt-check" => e.experimental_initial_corrupt_check,
            "experimental-compact-hash-check-enabled" => n.experimental_compact_hash_check_enabled,
            "experimental-enable-lease-checkpoint" => e.experimental_enable_lease_checkpoint,
            "experimental-enable-lease-checkpoint-persist" => {
                e.experimental_enable_lease_checkpoint_persist
            }
            "experimental-stop-grpc-service-on-defrag" => {
                n.experimental_stop_grpc_service_on_defrag
            }
            "experimental-txn-mode-write-with-shared-buffer" => {
                n.experimental_txn_mode_write_with_shared_buffer
            }
            _ => None,
        })?;

        let corrupt_raw = either(&n.corrupt_check_time, &e.experimental_corrupt_check_time);
        let corrupt_flag = if n.corrupt_check_time.is_some() {
            "--corrupt-check-time"
        } else {
            "--experimental-corrupt-check-time"
        };
        let corrupt = match corrupt_raw.as_deref() {
            Some(raw) => Some(parse_go_duration(corrupt_flag, raw)?).filter(|d| !d.is_zero()),
            None => None,
        };
        let (hash_flag, hash_raw) = match (
            &n.compact_hash_check_time,
            &n.experimental_compact_hash_check_time,
        ) {
            (Some(v), _) => ("--compact-hash-check-time", Some(v)),
            (None, Some(v)) => ("--experimental-compact-hash-check-time", Some(v)),
            (None, None) => ("--compact-hash-check-time", None),
        };
        let hash_period = match hash_raw {
            Some(raw) => {
                let d = parse_go_duration(hash_flag, raw)?;
                if d.is_zero() {
                    bail!("{hash_flag} must be >0 (set to 0s)");
                }
                d
            }
            None => DEFAULT_COMPACT_HASH_CHECK_TIME,
        };
        let hash_check = gates.enabled(Gate::CompactHashCheck).then_some(hash_period);
        let corrupt_check_interval = match (corrupt, hash_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        let max_learners = match either(&n.max_learners, &n.experimental_max_learners) {
            Some(m) if m < 0 => bail!("--max-learners must not be negative (set to {m})"),
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
            None => crate::members::DEFAULT_MAX_LEARNERS,
        };

        let mut notes = Vec::new();
        if let Some(d) = hash_check {
            notes.push(format!(
                "CompactHashCheck: raftkv's periodic corruption check runs every {}: it compares every member's hash at the leader's current revision, not hashes at compaction revisions (docs/operations.md)",
                short_duration(d)
            ));
        }
        let mut note = |given: bool, flag: &str, why: &str| {
            if given {
                notes.push(format!("{flag} is ignored: {why}"));
            }
        };
        note(
            n.snapshot_catchup_entries.is_some() || n.experimental_snapshot_catchup_entries.is_some(),
            "--snapshot-catchup-entries",
            "raftkv keeps no log entries behind its latest snapshot; a follower that lags behind it is sent the snapshot",
        );
        note(
            n.compaction_batch_limit.is_some()
                || n.compaction_sleep_interval.is_some()
                || n.experimental_compaction_sleep_interval.is_some(),
            "--compaction-batch-limit/--compaction-sleep-interval",
            "raftkv compacts in one step",
        );
        note(
            n.warning_apply_duration.is_some()
                || n.warning_unary_request_duration.is_some()
                || n.experimental_warning_unary_request_duration.is_some(),
            "--warning-apply-duration/--warning-unary-request-duration",
            "raftkv does not time individual requests for warnings",
        );
        note(
            n.bootstrap_defrag_threshold_megabytes.is_some()
                || n.experimental_bootstrap_defrag_threshold_megabytes
                    .is_some(),
            "--bootstrap-defrag-threshold-megabytes",
            "raftkv has no bbolt file to defragment",
        );
        note(
            n.memory_mlock == Some(true) || n.experimental_memory_mlock == Some(true),
            "--memory-mlock",
            "raftkv does not lock its memory (a latency tuning, not a durability one)",
        );
        note(
            n.downgrade_check_time.is_some() || n.experimental_downgrade_check_time.is_some(),
            "--downgrade-check-time",
            "raftkv has no cluster downgrade",
        );
        let tracing = n.enable_distributed_tracing == Some(true)
            || n.experimental_enable_distributed_tracing == Some(true)
            || n.distributed_tracing_address.is_some()
            || n.experimental_distributed_tracing_address.is_some()
            || n.distributed_tracing_service_name.is_some()
            || n.experimental_distributed_tracing_service_name.is_some()
            || n.distributed_tracing_instance_id.is_some()
            || n.experimental_distributed_tracing_instance_id.is_some()
            || n.distributed_tracing_sampling_rate.is_some()
            || n.experimental_distributed_tracing_sampling_rate.is_some();
        note(
            tracing,
            "--enable-distributed-tracing/--distributed-tracing-*",
            "raftkv exports no OpenTelemetry traces",
        );
        note(
            n.socket_reuse_port == Some(true) || n.socket_reuse_address == Some(true),
            "--socket-reuse-port/--socket-reuse-address",
            "raftkv's listeners keep the default socket options",
        );
        note(
            n.raft_read_timeout.is_some() || n.raft_write_timeout.is_some(),
            "--raft-read-timeout/--raft-write-timeout",
            "raftkv's peer connections have their own timeouts (docs/raft-deviations.md)",
        );
        note(
            n.enable_log_rotation == Some(true) || n.log_rotation_config_json.is_some(),
            "--enable-log-rotation/--log-rotation-config-json",
            "rotate raftkv's log files with logrotate (copytruncate)",
        );
        note(
            n.v2_deprecation.is_some(),
            "--v2-deprecation",
            "raftkv has no v2 store",
        );
        note(
            n.backend_bbolt_freelist_type.is_some(),
            "--backend-bbolt-freelist-type",
            "raftkv has no bbolt backend",
        );
        let discovery_options = n.discovery_dial_timeout.is_some()
            || n.discovery_request_timeout.is_some()
            || n.discovery_keepalive_time.is_some()
            || n.discovery_keepalive_timeout.is_some()
            || n.discovery_insecure_transport.is_some()
            || n.discovery_insecure_skip_tls_verify.is_some()
            || n.discovery_cert.is_some()
            || n.discovery_key.is_some()
            || n.discovery_cacert.is_some()
            || n.discovery_user.is_some()
            || n.discovery_password.is_some();
        note(
            discovery_options,
            "--discovery-* (v3 discovery options)",
            "discovery is not supported",
        );
        // A gate named by --feature-gates (AllAlpha/AllBeta included) or by its flag.
        let given = |g: Gate| gates.is_set(g);
        note(
            given(Gate::LeaseCheckpoint) || given(Gate::LeaseCheckpointPersist),
            "LeaseCheckpoint/LeaseCheckpointPersist (--experimental-enable-lease-checkpoint*)",
            "raftkv always checkpoints remaining lease TTLs through its log (docs/lease.md)",
        );
        note(
            given(Gate::StopGrpcServiceOnDefrag),
            "StopGRPCServiceOnDefrag (--experimental-stop-grpc-service-on-defrag)",
            "raftkv keeps serving while it compacts its storage",
        );
        note(
            given(Gate::TxnModeWriteWithSharedBuffer),
            "TxnModeWriteWithSharedBuffer (--experimental-txn-mode-write-with-shared-buffer)",
            "a bbolt read-buffer detail raftkv does not have",
        );
        note(
            given(Gate::SetMemberLocalAddr),
            "SetMemberLocalAddr",
            "raftkv's peer connections use the system's choice of source address",
        );

        Ok(NewerSettings {
            initial_corrupt_check: gates.enabled(Gate::InitialCorruptCheck),
            corrupt_check_interval,
            max_learners,
            watch_progress_notify_interval: watch
                .map(str::to_string)
                .or_else(|| n.experimental_watch_progress_notify_interval.clone()),
            notes,
        })
    }
}

/// A duration as a short Go-style string ("1m0s" is written "60s").
fn short_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
#[path = "newer_etcd_flags_tests.rs"]
mod tests;
