//! The member's command line, with etcd's flag names and defaults so that an etcd command
//! line works with `etcd` replaced by `raftkv server`. Every flag can also come from the
//! environment as `RAFTKV_<FLAG_UPPER_SNAKE>` or, as etcd reads it, `ETCD_<FLAG_UPPER_SNAKE>`
//! (see [`adopt_etcd_env`]); a flag given twice takes its last value, as Go's `flag` package
//! does. The core flags are here; the rest of etcd's are in [`crate::compat_args`], and
//! `--config-file` (etcd's YAML) is read by [`crate::config_file`].

use clap::{Args, CommandFactory as _, ValueEnum};

use crate::compat_args::CompatArgs;

/// `--initial-cluster-state`: bootstrap a brand-new cluster, or join one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

/// `--log-format`: human-readable lines or one JSON object per line. etcd 3.6's
/// `console` (its human-readable encoding) is raftkv's `text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[value(alias = "console")]
    Text,
    Json,
}

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024 + 512 * 1024;

/// The flags of `raftkv server`.
#[derive(Args, Clone, Debug)]
#[command(args_override_self = true)]
pub struct ServerArgs {
    /// Path to an etcd YAML configuration file (keys are the flag names). As in etcd, when a
    /// file is given every other flag and environment variable is ignored.
    #[arg(long, env = "RAFTKV_CONFIG_FILE")]
    pub config_file: Option<String>,

    /// Human-readable name of this member (must appear in --initial-cluster).
    #[arg(long, env = "RAFTKV_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: "<name>.etcd").
    #[arg(long, env = "RAFTKV_DATA_DIR")]
    pub data_dir: Option<String>,

    /// Comma-separated URLs to listen on for client traffic (gRPC and HTTP).
    #[arg(
        long,
        env = "RAFTKV_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,

    /// Comma-separated client URLs advertised to the rest of the cluster
    /// (default: --listen-client-urls).
    #[arg(long, env = "RAFTKV_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,

    /// Comma-separated URLs to listen on for peer (Raft) traffic.
    #[arg(
        long,
        env = "RAFTKV_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,

    /// Comma-separated peer URLs this member advertises (must match its --initial-cluster
    /// entries).
    #[arg(
        long,
        env = "RAFTKV_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,

    /// Initial cluster configuration: "name1=http://host1:2380,name2=http://host2:2380,..."
    /// (default: "<name>=<initial-advertise-peer-urls>").
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// "new" to bootstrap a cluster, "existing" to join one.
    #[arg(
        long,
        env = "RAFTKV_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterState,

    /// Token mixed into the member and cluster IDs; use a unique value per cluster.
    #[arg(
        long,
        env = "RAFTKV_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Scaling a StatefulSet or a compose project without member commands (docs/membership.md,
    /// "Scaling by itself"): a member whose --name is not in --initial-cluster and whose data
    /// dir is empty asks the listed members to add it, then joins as with
    /// `--initial-cluster-state existing`. Founders (named in --initial-cluster) start as
    /// usual. raftkv's own flag.
    #[arg(
        long,
        env = "RAFTKV_AUTO_JOIN",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub auto_join: bool,

    /// The leader removes a member that is neither a founder nor reachable and whose peer
    /// URL's host name has not resolved (NXDOMAIN) for this long (a Go duration such as
    /// "2m"; "0", the default, never removes). raftkv's own flag.
    #[arg(long, env = "RAFTKV_AUTO_REMOVE_DEPARTED_AFTER", default_value = "0")]
    pub auto_remove_departed_after: String,

    /// The leader answers a keep-alive at once from its lease clock and logs the renewal
    /// behind the answer, as etcd does, so keep-alives never wait behind a slow apply. Off
    /// by default: a leader that fails before that renewal commits loses it, and the lease
    /// can then run out before its TTL after the last answered keep-alive (docs/lease.md,
    /// "Keep-alives"). raftkv's own flag.
    #[arg(
        long,
        env = "RAFTKV_LEASE_KEEPALIVE_BEFORE_LOG",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub lease_keepalive_before_log: bool,

    /// Time (in milliseconds) of a heartbeat interval (one Raft tick).
    #[arg(long, env = "RAFTKV_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to time out.
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of applied entries between two snapshots of the state machine.
    #[arg(long, env = "RAFTKV_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "RAFTKV_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Maximum number of operations permitted in one transaction.
    #[arg(long, env = "RAFTKV_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Log output: "text" (human-readable; etcd's "console" is accepted for it) or "json"
    /// (one object per line).
    #[arg(long, env = "RAFTKV_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Interval of the progress notifications sent to watchers that asked for them (a Go
    /// duration such as "10m" or "500ms"; at least 100ms; default 10m). etcd 3.4 and 3.5
    /// spell the flag `--experimental-watch-progress-notify-interval`, accepted too
    /// (`crate::newer_etcd_flags`; not both, as etcd 3.6 refuses both).
    #[arg(long, env = "RAFTKV_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    pub watch_progress_notify_interval: Option<String>,

    /// Watches one Watch stream may hold (0: no limit). A create beyond it is refused with
    /// `created` + `canceled` and a reason, as etcd refuses a bad create. raftkv's own flag.
    #[arg(
        long,
        env = "RAFTKV_MAX_WATCHES_PER_STREAM",
        default_value_t = crate::watch::DEFAULT_MAX_WATCHES_PER_STREAM
    )]
    pub max_watches_per_stream: usize,

    /// Extra comma-separated URLs serving /health, /livez, /readyz, /version (HTTP only).
    #[arg(long, env = "RAFTKV_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,

    /// Serve the web dashboard at /dashboard on the client URLs (docs/operations.md,
    /// "Dashboard"); `--enable-dashboard=false` turns it off (404).
    #[arg(
        long,
        env = "RAFTKV_ENABLE_DASHBOARD",
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub enable_dashboard: bool,

    /// Print the version and exit (etcd's `--version`).
    #[arg(long)]
    pub version: bool,

    /// The rest of etcd's flags, by group.
    #[command(flatten)]
    pub compat: CompatArgs,

    /// TLS on the client and peer ports (crate::tls).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// Authentication tokens and password hashing (crate::auth).
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

/// A stand-alone parser for [`ServerArgs`] (for the config file and the environment).
#[derive(clap::Parser, Debug)]
#[command(name = "raftkv server", no_binary_name = true)]
pub(crate) struct ServerCli {
    #[command(flatten)]
    pub args: ServerArgs,
}

/// Prepare the environment for parsing, as etcd reads it. For every flag `--foo-bar` whose
/// `RAFTKV_FOO_BAR` is unset but `ETCD_FOO_BAR` is set, copy the latter into the former, so
/// an environment written for etcd configures raftkv (a `RAFTKV_*` variable wins over its
/// `ETCD_*` twin). When a config file is named (`--config-file` on the command line, or
/// either variable), remove every other flag variable instead: etcd then ignores the
/// environment entirely, even values that would not parse. Call it first thing in `main`,
/// before any thread exists (it sets process environment variables).
pub fn adopt_etcd_env() {
    let cmd = ServerCli::command();
    let config_file_arg = std::env::args_os()
        .filter_map(|a| a.into_string().ok())
        .any(|a| {
            // Go's syntax: one dash or two (crate::go_flags).
            let a = a.strip_prefix('-').unwrap_or(&a);
            a == "-config-file" || a.starts_with("-config-file=")
        });
    let config_file_env = ["RAFTKV_CONFIG_FILE", "ETCD_CONFIG_FILE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
    let from_file = config_file_arg || config_file_env;
    for arg in cmd.get_arguments() {
        let Some(ours) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        let Some(suffix) = ours.strip_prefix("RAFTKV_") else {
            continue;
        };
        let etcd = format!("ETCD_{suffix}");
        if from_file && suffix != "CONFIG_FILE" {
            std::env::remove_var(ours);
            continue;
        }
        if std::env::var_os(ours).is_some() {
            continue;
        }
        if let Some(v) = std::env::var_os(&etcd) {
            std::env::set_var(ours, v);
            if let Ok(mut copied) = COPIED_FROM_ETCD.lock() {
                copied.push(ours.to_string());
            }
        }
    }
}

/// The `RAFTKV_*` variables [`adopt_etcd_env`] set from their `ETCD_*` twins, so that an
/// error in one names the variable the user wrote.
static COPIED_FROM_ETCD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The environment variable a flag's value was read from, as the user wrote it:
/// `ETCD_FOO` when [`adopt_etcd_env`] copied it into `RAFTKV_FOO`, else `RAFTKV_FOO`.
pub fn env_origin(raftkv_var: &str) -> String {
    let copied = COPIED_FROM_ETCD
        .lock()
        .map(|c| c.iter().any(|v| v == raftkv_var))
        .unwrap_or(false);
    match raftkv_var.strip_prefix("RAFTKV_") {
        Some(suffix) if copied => format!("ETCD_{suffix}"),
        _ => raftkv_var.to_string(),
    }
}

impl ServerArgs {
    /// The data directory, defaulting to "<name>.etcd" as etcd does.
    pub fn data_dir(&self) -> String {
        self.data_dir
            .clone()
            .unwrap_or_else(|| format!("{}.etcd", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServerArgs,
    }

    #[test]
    fn defaults_match_etcd() {
        let cli = Cli::try_parse_from(["raftkv"]).unwrap();
        let a = cli.args;
        assert_eq!(a.name, "default");
        assert_eq!(a.data_dir(), "default.etcd");
        assert_eq!(a.listen_client_urls, "http://localhost:2379");
        assert_eq!(a.listen_peer_urls, "http://localhost:2380");
        assert_eq!(a.heartbeat_interval, 100);
        assert_eq!(a.election_timeout, 1000);
        assert_eq!(a.max_request_bytes, 1_572_864);
        assert_eq!(a.max_txn_ops, 128);
        assert_eq!(a.initial_cluster_state, ClusterState::New);
        assert_eq!(a.initial_cluster_token, "etcd-cluster");
        assert_eq!(a.watch_progress_notify_interval, None);
        let cli = Cli::try_parse_from([
            "raftkv",
            "--experimental-watch-progress-notify-interval",
            "200ms",
        ])
        .unwrap();
        let newer = cli.args.compat.newer_settings(None).unwrap();
        assert_eq!(
            newer.watch_progress_notify_interval.as_deref(),
            Some("200ms")
        );
    }

    #[test]
    fn the_dashboard_is_on_unless_turned_off() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().args.enable_dashboard;
        assert!(parse(&["raftkv"]));
        assert!(parse(&["raftkv", "--enable-dashboard"]));
        assert!(parse(&["raftkv", "--enable-dashboard=true"]));
        assert!(!parse(&["raftkv", "--enable-dashboard=false"]));
        assert!(Cli::try_parse_from(["raftkv", "--enable-dashboard=maybe"]).is_err());
        // The environment variable, in this same test: no other test reads it, and the
        // default checked above must not race with it.
        std::env::set_var("RAFTKV_ENABLE_DASHBOARD", "false");
        let from_env = parse(&["raftkv"]);
        let flag_wins = parse(&["raftkv", "--enable-dashboard=true"]);
        std::env::remove_var("RAFTKV_ENABLE_DASHBOARD");
        assert!(!from_env);
        assert!(flag_wins);
    }

    /// Every flag of `etcd --help` (3.4.23) and the hidden ones (`--config-file`,
    /// `--unsafe-no-fsync`, `--enable-grpc-gateway`, `--log-output`,
    /// `--experimental-enable-lease-checkpoint-persist`), except the TLS and authentication
    /// flags, which `TlsArgs` owns.
    const ETCD_FLAGS: &[&str] = &[
        "--name=n",
        "--data-dir=d",
        "--wal-dir=w",
        "--snapshot-count=100000",
        "--heartbeat-interval=100",
        "--election-timeout=1000",
        "--initial-election-tick-advance=true",
        "--listen-peer-urls=http://localhost:2380",
        "--listen-client-urls=http://localhost:2379",
        "--max-snapshots=5",
        "--max-wals=5",
        "--quota-backend-bytes=0",
        "--backend-batch-interval=10ms",
        "--backend-batch-limit=0",
        "--max-txn-ops=128",
        "--max-request-bytes=1572864",
        "--max-concurrent-streams=100",
        "--grpc-keepalive-min-time=5s",
        "--grpc-keepalive-interval=2h",
        "--grpc-keepalive-timeout=20s",
        "--initial-advertise-peer-urls=http://localhost:2380",
        "--initial-cluster=default=http://localhost:2380",
        "--initial-cluster-state=new",
        "--initial-cluster-token=etcd-cluster",
        "--advertise-client-urls=http://localhost:2379",
        "--discovery=",
        "--discovery-fallback=proxy",
        "--discovery-proxy=",
        "--discovery-srv=",
        "--discovery-srv-name=",
        "--strict-reconfig-check=true",
        "--pre-vote=false",
        "--auto-compaction-retention=0",
        "--auto-compaction-mode=periodic",
        "--enable-v2=false",
        "--cors=*",
        "--host-whitelist=*",
        "--enable-pprof=false",
        "--metrics=basic",
        "--listen-metrics-urls=",
        "--logger=capnslog",
        "--log-outputs=default",
        "--log-level=info",
        "--proxy=off",
        "--proxy-failure-wait=5000",
        "--proxy-refresh-interval=30000",
        "--proxy-dial-timeout=1000",
        "--proxy-write-timeout=5000",
        "--proxy-read-timeout=0",
        "--experimental-initial-corrupt-check=false",
        "--experimental-corrupt-check-time=0s",
        "--experimental-enable-v2v3=",
        "--experimental-backend-bbolt-freelist-type=array",
        "--experimental-enable-lease-checkpoint=false",
        "--experimental-compaction-batch-limit=1000",
        "--experimental-watch-progress-notify-interval=10m",
        "--experimental-warning-apply-duration=100ms",
        "--force-new-cluster=false",
        "--debug=false",
        "--log-package-levels=",
        "--config-file=",
        "--unsafe-no-fsync=false",
        "--enable-grpc-gateway=true",
        "--log-output=default",
        "--experimental-enable-lease-checkpoint-persist=false",
        "--version",
    ];

    #[test]
    fn every_etcd_flag_is_accepted() {
        for flag in ETCD_FLAGS {
            if let Err(e) = Cli::try_parse_from(["raftkv", flag]) {
                panic!("{flag}: {e}");
            }
        }
        let mut all = vec!["raftkv"];
        all.extend_from_slice(ETCD_FLAGS);
        Cli::try_parse_from(all).unwrap();
    }

    #[test]
    fn boolean_flags_take_an_optional_value() {
        let a = Cli::try_parse_from(["raftkv", "--enable-v2"]).unwrap().args;
        assert_eq!(a.compat.http.enable_v2, Some(true));
        let a = Cli::try_parse_from(["raftkv", "--strict-reconfig-check=false"])
            .unwrap()
            .args;
        assert_eq!(a.compat.cluster.strict_reconfig_check, Some(false));
    }

    #[test]
    fn the_last_of_a_repeated_flag_wins() {
        let a = Cli::try_parse_from([
            "raftkv",
            "--name",
            "a",
            "--name",
            "b",
            "--snapshot-count=1",
            "--snapshot-count=2",
        ])
        .unwrap()
        .args;
        assert_eq!(a.name, "b");
        assert_eq!(a.snapshot_count, 2);
    }

    #[test]
    fn unknown_flags_are_errors() {
        let e = Cli::try_parse_from(["raftkv", "--no-such-flag"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
    }

    #[test]
    fn bad_cluster_state_is_rejected() {
        assert!(Cli::try_parse_from(["raftkv", "--initial-cluster-state", "bogus"]).is_err());
    }
}
