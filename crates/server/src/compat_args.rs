//! The rest of etcd 3.4's server flags, so that any etcd command line (or `ETCD_*`
//! environment) starts `raftkv server`. Grouped by what they are about; each flag is one of:
//!
//! - **implemented**: it has its etcd effect (`--max-concurrent-streams`, the gRPC
//!   keepalives, `--auto-compaction-*`, `--pre-vote`, `--strict-reconfig-check`, `--logger`,
//!   `--log-outputs`, `--log-level`, `--debug`, `--experimental-initial-corrupt-check`,
//!   `--experimental-corrupt-check-time`, `--force-new-cluster`);
//! - **ignored, said once**: accepted, and start-up logs exactly one line naming the flag and
//!   why it changes nothing here (see [`CompatArgs::notes`]). Only flags whose absence cannot
//!   cost data or correctness are in this class;
//! - **refused**: accepted by the parser but start-up stops with a clear error, because
//!   pretending would be wrong (`--unsafe-no-fsync`, `--discovery*`,
//!   `--proxy` other than `off`).
//!
//! Flags whose only effect is inside a feature raftkv does not have are `Option`s without a
//! default, so "given" and "not given" differ and only given ones are reported.
//! TLS and authentication flags live elsewhere (`TlsArgs`); the flags etcd 3.5 and 3.6
//! added, and their new spellings of the experimental ones, in `crate::newer_etcd_flags`.

use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

/// `--auto-compaction-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum CompactionMode {
    #[default]
    /// Keep a time window of history (`--auto-compaction-retention` is a duration).
    Periodic,
    /// Keep a number of revisions (`--auto-compaction-retention` is a count).
    Revision,
}

/// `--logger`: etcd 3.4's two loggers. Both name raftkv's single logger; `zap` selects
/// its JSON lines, as etcd's zap logger writes JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Logger {
    Capnslog,
    Zap,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    /// etcd's `panic` and `fatal` levels only log what makes it stop: here, errors.
    Panic,
    Fatal,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => "error",
        }
    }
}

/// etcd's flags beyond the core ones of [`crate::ServerArgs`], flattened into it.
#[derive(Args, Clone, Debug, Default)]
pub struct CompatArgs {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub storage: StorageFlags,
    #[command(flatten)]
    pub grpc: GrpcFlags,
    #[command(flatten)]
    pub http: HttpFlags,
    #[command(flatten)]
    pub logging: LoggingFlags,
    #[command(flatten)]
    pub proxy: ProxyFlags,
    #[command(flatten)]
    pub experimental: ExperimentalFlags,
    #[command(flatten)]
    pub newer: crate::newer_etcd_flags::NewerEtcdFlags,
}

/// Bootstrap and membership behaviour.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Cluster (etcd compatibility)")]
pub struct ClusterFlags {
    /// Reject reconfiguration requests that would cause quorum loss (a removal that leaves
    /// too few started or connected voters). etcd's default: true.
    #[arg(long, env = "RAFTKV_STRICT_RECONFIG_CHECK", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub strict_reconfig_check: Option<bool>,

    /// Pre-vote before campaigning (Raft thesis §9.6). raftkv's default is true (etcd 3.4's
    /// is false); `--pre-vote=false` turns it off.
    #[arg(long, env = "RAFTKV_PRE_VOTE", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub pre_vote: Option<bool>,

    /// Fast-forward the first election by advancing ticks (etcd). Ignored: raftkv's first
    /// election waits one randomised timeout.
    #[arg(long, env = "RAFTKV_INITIAL_ELECTION_TICK_ADVANCE", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub initial_election_tick_advance: Option<bool>,

    /// Restart this member from its data dir as a one-member cluster (disaster recovery):
    /// it keeps its data and ids, drops uncommitted entries and removes every other member
    /// through its own log (`crate::force_new_cluster`).
    #[arg(long, env = "RAFTKV_FORCE_NEW_CLUSTER", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub force_new_cluster: Option<bool>,

    /// Discovery URL used to bootstrap the cluster. Not supported: refused.
    #[arg(long, env = "RAFTKV_DISCOVERY")]
    pub discovery: Option<String>,

    /// Behaviour when discovery fails ("exit" or "proxy"). Only used with --discovery.
    #[arg(long, env = "RAFTKV_DISCOVERY_FALLBACK")]
    pub discovery_fallback: Option<String>,

    /// HTTP proxy to use for traffic to the discovery service. Only used with --discovery.
    #[arg(long, env = "RAFTKV_DISCOVERY_PROXY")]
    pub discovery_proxy: Option<String>,

    /// DNS domain used to bootstrap the cluster (SRV records). Not supported: refused.
    #[arg(long, env = "RAFTKV_DISCOVERY_SRV")]
    pub discovery_srv: Option<String>,

    /// Suffix to the DNS SRV name queried with --discovery-srv.
    #[arg(long, env = "RAFTKV_DISCOVERY_SRV_NAME")]
    pub discovery_srv_name: Option<String>,
}

/// Where and how the member stores its data.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Storage (etcd compatibility)")]
pub struct StorageFlags {
    /// Dedicated WAL directory. Ignored: raftkv keeps its log inside --data-dir.
    #[arg(long, env = "RAFTKV_WAL_DIR")]
    pub wal_dir: Option<String>,

    /// Maximum number of snapshot files to retain. Ignored: raftkv keeps only the latest.
    #[arg(long, env = "RAFTKV_MAX_SNAPSHOTS")]
    pub max_snapshots: Option<u64>,

    /// Maximum number of WAL files to retain. Ignored: raftkv drops log segments a snapshot
    /// covers.
    #[arg(long, env = "RAFTKV_MAX_WALS")]
    pub max_wals: Option<u64>,

    /// Raise a NOSPACE alarm when the store's size would exceed this many bytes (0 = etcd's
    /// default of 2 GiB, negative = no quota); see `crate::quota`.
    #[arg(long, env = "RAFTKV_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: Option<i64>,

    /// Maximum time before committing the backend transaction (bbolt). Ignored.
    #[arg(long, env = "RAFTKV_BACKEND_BATCH_INTERVAL")]
    pub backend_batch_interval: Option<String>,

    /// Maximum operations before committing the backend transaction (bbolt). Ignored.
    #[arg(long, env = "RAFTKV_BACKEND_BATCH_LIMIT")]
    pub backend_batch_limit: Option<u64>,

    /// Disable fsync (etcd: unsafe, loses data on a crash). Refused when true: raftkv always
    /// syncs its log before acknowledging.
    #[arg(long, env = "RAFTKV_UNSAFE_NO_FSYNC", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub unsafe_no_fsync: Option<bool>,

    /// Auto compaction: "periodic" keeps --auto-compaction-retention of time, "revision" that
    /// many revisions.
    #[arg(
        long,
        env = "RAFTKV_AUTO_COMPACTION_MODE",
        value_enum,
        default_value = "periodic"
    )]
    pub auto_compaction_mode: CompactionMode,

    /// Auto compaction retention: a duration ("1h", "30m", or a bare number of hours) in
    /// periodic mode, a revision count in revision mode. 0 disables auto compaction.
    #[arg(long, env = "RAFTKV_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
}

/// The client gRPC server.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "gRPC (etcd compatibility)")]
pub struct GrpcFlags {
    /// Maximum number of concurrent HTTP/2 streams per client connection.
    #[arg(long, env = "RAFTKV_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,

    /// Minimum interval a client should wait before pinging the server (Go duration).
    /// Ignored: the HTTP/2 server here does not police client pings.
    #[arg(long, env = "RAFTKV_GRPC_KEEPALIVE_MIN_TIME")]
    pub grpc_keepalive_min_time: Option<String>,

    /// How often the server pings an idle client connection (Go duration; 0 disables).
    #[arg(long, env = "RAFTKV_GRPC_KEEPALIVE_INTERVAL", default_value = "2h")]
    pub grpc_keepalive_interval: String,

    /// How long the server waits for a ping answer before closing the connection.
    #[arg(long, env = "RAFTKV_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s")]
    pub grpc_keepalive_timeout: String,
}

/// Extra HTTP endpoints etcd can serve.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "HTTP (etcd compatibility)")]
pub struct HttpFlags {
    /// Serve the v2 API. Ignored: raftkv serves only the v3 API.
    #[arg(long, env = "RAFTKV_ENABLE_V2", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_v2: Option<bool>,

    /// v2 emulation on v3 with this prefix. Ignored: no v2 API.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_ENABLE_V2V3")]
    pub experimental_enable_v2v3: Option<String>,

    /// Serve etcd's JSON gateway (/v3/... and /v3beta/...) on the client URLs (default
    /// true, as etcd; `=false` answers those paths 404).
    #[arg(long, env = "RAFTKV_ENABLE_GRPC_GATEWAY", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_grpc_gateway: Option<bool>,

    /// CORS whitelist origins for the HTTP API. Ignored: no browser-facing HTTP API.
    #[arg(long, env = "RAFTKV_CORS")]
    pub cors: Option<String>,

    /// Acceptable hostnames from HTTP client requests. Ignored.
    #[arg(long, env = "RAFTKV_HOST_WHITELIST")]
    pub host_whitelist: Option<String>,

    /// Serve Go's runtime profiler at /debug/pprof. Ignored: not a Go program; see
    /// docs/performance.md for profiling raftkv.
    #[arg(long, env = "RAFTKV_ENABLE_PPROF", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_pprof: Option<bool>,

    /// "basic" or "extensive" Prometheus metrics. Ignored: /metrics always serves one set
    /// (`crate::metrics`; the unary gRPC latency histogram that etcd's "extensive" adds is
    /// always there, its stream histograms are not kept).
    #[arg(long, env = "RAFTKV_METRICS")]
    pub metrics: Option<String>,
}

/// Log output.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Logging (etcd compatibility)")]
pub struct LoggingFlags {
    /// "capnslog" or "zap": both are raftkv's one logger; zap selects JSON lines (as
    /// --log-format json).
    #[arg(long, env = "RAFTKV_LOGGER", value_enum)]
    pub logger: Option<Logger>,

    /// Comma-separated log destinations: "default", "stderr", "stdout", or file paths
    /// (appended to).
    #[arg(
        long,
        visible_alias = "log-output",
        env = "RAFTKV_LOG_OUTPUTS",
        default_value = "default"
    )]
    pub log_outputs: String,

    /// Least severe level logged (RAFTKV_LOG / RUST_LOG, when set, take precedence).
    #[arg(long, env = "RAFTKV_LOG_LEVEL", value_enum)]
    pub log_level: Option<LogLevel>,

    /// Log at debug level (as --log-level debug).
    #[arg(long, env = "RAFTKV_DEBUG", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub debug: Option<bool>,

    /// capnslog per-package levels. Ignored: use RAFTKV_LOG with tracing's filter syntax.
    #[arg(long, env = "RAFTKV_LOG_PACKAGE_LEVELS")]
    pub log_package_levels: Option<String>,
}

/// etcd's v2 proxy mode.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Proxy (etcd compatibility)")]
pub struct ProxyFlags {
    /// "off", "readonly" or "on". raftkv is never a proxy: anything but "off" is refused.
    #[arg(long, env = "RAFTKV_PROXY")]
    pub proxy: Option<String>,
    /// Only used in proxy mode.
    #[arg(long, env = "RAFTKV_PROXY_FAILURE_WAIT")]
    pub proxy_failure_wait: Option<u64>,
    /// Only used in proxy mode.
    #[arg(long, env = "RAFTKV_PROXY_REFRESH_INTERVAL")]
    pub proxy_refresh_interval: Option<u64>,
    /// Only used in proxy mode.
    #[arg(long, env = "RAFTKV_PROXY_DIAL_TIMEOUT")]
    pub proxy_dial_timeout: Option<u64>,
    /// Only used in proxy mode.
    #[arg(long, env = "RAFTKV_PROXY_WRITE_TIMEOUT")]
    pub proxy_write_timeout: Option<u64>,
    /// Only used in proxy mode.
    #[arg(long, env = "RAFTKV_PROXY_READ_TIMEOUT")]
    pub proxy_read_timeout: Option<u64>,
}

/// etcd's experimental flags.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Experimental (etcd compatibility)")]
pub struct ExperimentalFlags {
    /// Before serving clients, compare this member's history with its peers' and refuse to
    /// start on a difference (`crate::corrupt_check`); etcd 3.6's InitialCorruptCheck gate.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_initial_corrupt_check: Option<bool>,

    /// How often the leader compares its store's hash with every follower's (Go duration;
    /// 0, the default, turns the check off; `crate::corrupt_monitor`).
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_CORRUPT_CHECK_TIME")]
    pub experimental_corrupt_check_time: Option<String>,

    /// bbolt freelist type. Ignored: raftkv has no bbolt backend.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE")]
    pub experimental_backend_bbolt_freelist_type: Option<String>,

    /// Lease checkpointing (3.6's LeaseCheckpoint gate). Always on: the leader checkpoints
    /// remaining TTLs through the log (docs/lease.md).
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint: Option<bool>,

    /// Persist lease checkpoints (3.6's LeaseCheckpointPersist gate). Always on: checkpoints
    /// are log entries.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT_PERSIST", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint_persist: Option<bool>,

    /// Keys deleted per compaction batch. Ignored: raftkv compacts in one step.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_COMPACTION_BATCH_LIMIT")]
    pub experimental_compaction_batch_limit: Option<u64>,

    /// Apply duration above which etcd warns. Ignored.
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_WARNING_APPLY_DURATION")]
    pub experimental_warning_apply_duration: Option<String>,
}

/// What `--auto-compaction-*` asks for, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep this much history (etcd's periodic compactor).
    Periodic(Duration),
    /// Keep this many revisions behind the current one.
    Revision(i64),
}

impl CompatArgs {
    /// Refuse what must not be pretended, and return one start-up line for each accepted
    /// flag that changes nothing here (the caller logs them once the logger is up).
    pub fn notes(&self) -> anyhow::Result<Vec<String>> {
        use anyhow::bail;
        let c = &self.cluster;
        if c.discovery.as_deref().is_some_and(|s| !s.is_empty()) {
            bail!("--discovery is not supported: list the members with --initial-cluster");
        }
        if c.discovery_srv.as_deref().is_some_and(|s| !s.is_empty()) {
            bail!("--discovery-srv is not supported: list the members with --initial-cluster");
        }
        if self.storage.unsafe_no_fsync == Some(true) {
            bail!("--unsafe-no-fsync is not supported: raftkv always syncs its log before acknowledging a write");
        }
        if let Some(p) = self.proxy.proxy.as_deref() {
            if p != "off" {
                bail!("--proxy={p} is not supported: raftkv runs only as a cluster member (use --proxy=off)");
            }
        }
        self.auto_compaction()?;
        parse_go_duration(
            "--grpc-keepalive-interval",
            &self.grpc.grpc_keepalive_interval,
        )?;
        parse_go_duration(
            "--grpc-keepalive-timeout",
            &self.grpc.grpc_keepalive_timeout,
        )?;
        if self.grpc.max_concurrent_streams == 0 {
            bail!("--max-concurrent-streams must be > 0");
        }

        let mut notes = Vec::new();
        let mut ignored = |given: bool, flag: &str, why: &str| {
            if given {
                notes.push(format!("{flag} is ignored: {why}"));
            }
        };
        ignored(
            c.initial_election_tick_advance.is_some(),
            "--initial-election-tick-advance",
            "raftkv's first election waits one randomised election timeout",
        );
        ignored(
            c.discovery_fallback.is_some()
                || c.discovery_proxy.is_some()
                || c.discovery_srv_name.is_some(),
            "--discovery-fallback/--discovery-proxy/--discovery-srv-name",
            "discovery is not supported",
        );
        let s = &self.storage;
        ignored(
            s.wal_dir.as_deref().is_some_and(|d| !d.is_empty()),
            "--wal-dir",
            "raftkv keeps its log inside --data-dir",
        );
        ignored(
            s.max_snapshots.is_some(),
            "--max-snapshots",
            "raftkv keeps only its latest snapshot",
        );
        ignored(
            s.max_wals.is_some(),
            "--max-wals",
            "raftkv drops log segments once a snapshot covers them",
        );
        ignored(
            s.backend_batch_interval.is_some() || s.backend_batch_limit.is_some(),
            "--backend-batch-interval/--backend-batch-limit",
            "raftkv has no bbolt backend; its log batches by itself",
        );
        ignored(
            self.grpc.grpc_keepalive_min_time.is_some(),
            "--grpc-keepalive-min-time",
            "the HTTP/2 server does not police client ping rates",
        );
        let h = &self.http;
        ignored(
            h.enable_v2 == Some(true),
            "--enable-v2",
            "raftkv serves only the v3 API",
        );
        ignored(
            h.experimental_enable_v2v3
                .as_deref()
                .is_some_and(|p| !p.is_empty()),
            "--experimental-enable-v2v3",
            "raftkv serves only the v3 API",
        );
        ignored(
            h.cors.is_some(),
            "--cors",
            "raftkv has no browser-facing HTTP API",
        );
        ignored(
            h.host_whitelist.is_some(),
            "--host-whitelist",
            "raftkv has no v2 HTTP API to protect",
        );
        ignored(
            h.enable_pprof == Some(true),
            "--enable-pprof",
            "raftkv is not a Go program (docs/performance.md describes profiling it)",
        );
        ignored(
            h.metrics.is_some(),
            "--metrics",
            "/metrics serves one set of metrics (unary gRPC latency always, no stream histograms)",
        );
        ignored(
            self.logging.log_package_levels.is_some(),
            "--log-package-levels",
            "set per-module levels with RAFTKV_LOG (tracing filter syntax)",
        );
        let p = &self.proxy;
        ignored(
            p.proxy_failure_wait.is_some()
                || p.proxy_refresh_interval.is_some()
                || p.proxy_dial_timeout.is_some()
                || p.proxy_write_timeout.is_some()
                || p.proxy_read_timeout.is_some(),
            "--proxy-*",
            "raftkv has no proxy mode",
        );
        let e = &self.experimental;
        ignored(
            e.experimental_backend_bbolt_freelist_type.is_some(),
            "--experimental-backend-bbolt-freelist-type",
            "raftkv has no bbolt backend",
        );
        ignored(
            e.experimental_compaction_batch_limit.is_some(),
            "--experimental-compaction-batch-limit",
            "raftkv compacts in one step",
        );
        ignored(
            e.experimental_warning_apply_duration.is_some(),
            "--experimental-warning-apply-duration",
            "raftkv does not time individual applies",
        );
        Ok(notes)
    }

    /// `--auto-compaction-mode` and `--auto-compaction-retention`, checked as etcd checks
    /// them: periodic takes a Go duration or a bare number of hours, revision a count.
    pub fn auto_compaction(&self) -> anyhow::Result<AutoCompaction> {
        let raw = self.storage.auto_compaction_retention.trim();
        let flag = "--auto-compaction-retention";
        match self.storage.auto_compaction_mode {
            CompactionMode::Revision => {
                let n: i64 = raw.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{flag}: {raw:?} is not a revision count (--auto-compaction-mode=revision)"
                    )
                })?;
                if n < 0 {
                    anyhow::bail!("{flag} must not be negative");
                }
                Ok(if n == 0 {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Revision(n)
                })
            }
            CompactionMode::Periodic => {
                let d = match raw.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => parse_go_duration(flag, raw)?,
                };
                Ok(if d.is_zero() {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Periodic(d)
                })
            }
        }
    }

    /// The gRPC keepalive interval (None = off) and timeout.
    pub fn keepalive(&self) -> (Option<Duration>, Duration) {
        let interval =
            parse_go_duration("", &self.grpc.grpc_keepalive_interval).unwrap_or_default();
        let timeout = parse_go_duration("", &self.grpc.grpc_keepalive_timeout)
            .unwrap_or(Duration::from_secs(20));
        ((!interval.is_zero()).then_some(interval), timeout)
    }
}

/// Parse a Go duration ("300ms", "1h30m", "2.5s", "0"), as etcd's duration flags take.
pub fn parse_go_duration(flag: &str, raw: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow::anyhow!("{flag}: invalid duration {raw:?} (e.g. 500ms, 20s, 2h)");
    let s = raw.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s.trim_start_matches('+');
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s| parse_go_duration("--x", s).unwrap();
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("5s"), Duration::from_secs(5));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        for bad in ["", "5", "5x", "-1s", "s", "1..2s"] {
            assert!(parse_go_duration("--x", bad).is_err(), "{bad:?} accepted");
        }
    }

    fn with_retention(mode: CompactionMode, r: &str) -> anyhow::Result<AutoCompaction> {
        let mut a = CompatArgs::default();
        a.storage.auto_compaction_mode = mode;
        a.storage.auto_compaction_retention = r.to_string();
        a.auto_compaction()
    }

    #[test]
    fn auto_compaction_retention_as_etcd_reads_it() {
        use CompactionMode::*;
        assert_eq!(with_retention(Periodic, "0").unwrap(), AutoCompaction::Off);
        assert_eq!(
            with_retention(Periodic, "1").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(3600))
        );
        assert_eq!(
            with_retention(Periodic, "30m").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(1800))
        );
        assert_eq!(
            with_retention(Revision, "1000").unwrap(),
            AutoCompaction::Revision(1000)
        );
        assert_eq!(with_retention(Revision, "0").unwrap(), AutoCompaction::Off);
        assert!(with_retention(Revision, "1h").is_err());
        assert!(with_retention(Periodic, "soon").is_err());
    }
}
