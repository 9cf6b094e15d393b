//! The member's command line, with etcd's flag names and defaults so that an etcd command
//! line works with `etcd` replaced by `raftkv server`. Every flag can also come from the
//! environment as `RAFTKV_<FLAG_UPPER_SNAKE>` (etcd uses `ETCD_...`).

use clap::{Args, ValueEnum};

/// `--initial-cluster-state`: bootstrap a brand-new cluster, or join one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

/// `--log-format`: human-readable lines or one JSON object per line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024 + 512 * 1024;

/// The flags of `raftkv server`.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
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

    /// Log output: "text" (human-readable) or "json" (one object per line).
    #[arg(long, env = "RAFTKV_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Interval of the progress notifications sent to watchers that asked for them (a Go
    /// duration such as "10m" or "500ms"; at least 100ms). etcd 3.4 spells the flag
    /// `--experimental-watch-progress-notify-interval`, accepted too.
    #[arg(
        long,
        env = "RAFTKV_WATCH_PROGRESS_NOTIFY_INTERVAL",
        alias = "experimental-watch-progress-notify-interval",
        default_value = "10m"
    )]
    pub watch_progress_notify_interval: String,

    /// Extra comma-separated URLs serving /health, /livez, /readyz, /version (HTTP only).
    #[arg(long, env = "RAFTKV_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
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
        assert_eq!(a.watch_progress_notify_interval, "10m");
        let cli = Cli::try_parse_from([
            "raftkv",
            "--experimental-watch-progress-notify-interval",
            "200ms",
        ])
        .unwrap();
        assert_eq!(cli.args.watch_progress_notify_interval, "200ms");
    }

    #[test]
    fn bad_cluster_state_is_rejected() {
        assert!(Cli::try_parse_from(["raftkv", "--initial-cluster-state", "bogus"]).is_err());
    }
}
