//! The command line: `raftkv <command>`, with etcdctl's flag names for the client commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;
use raftkv_client::client::Timeouts;

#[derive(Parser, Debug)]
#[command(
    name = "raftkv",
    version,
    about = "A strongly consistent key-value store on Raft, speaking etcd's v3 API",
    long_about = "A strongly consistent key-value store on Raft, speaking etcd's v3 API.\n\n\
        `raftkv server` runs a member (etcd's flags); the other commands are clients \
        (etcdctl-like), `raftkv demo` runs the course scenario on a local cluster, and \
        `raftkv cluster` runs a local 3-member cluster to play with."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// Client options shared by every client command (etcdctl's global flags).
#[derive(Args, Debug, Clone)]
pub struct GlobalOptions {
    /// Comma-separated client endpoints, tried in order [default: 127.0.0.1:2379].
    #[arg(long, global = true, env = "RAFTKV_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Option<Vec<String>>,

    /// Output format.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_enum,
        default_value = "simple"
    )]
    pub write_out: OutputFormat,

    /// Time allowed to connect to an endpoint (e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,

    /// Time allowed for each request (e.g. 5s).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,

    /// Act as this user: `name[:password]` (the password is read from stdin when absent).
    #[arg(long, global = true, env = "RAFTKV_USER")]
    pub user: Option<String>,

    /// The password of --user (then --user names only the user).
    #[arg(long, global = true)]
    pub password: Option<String>,

    /// Verify https:// servers with this CA bundle.
    #[arg(long = "cacert", id = "tls_cacert", global = true)]
    pub cacert: Option<std::path::PathBuf>,

    /// Present this client certificate (mutual TLS); needs --key.
    #[arg(long = "cert", id = "tls_cert", global = true)]
    pub cert: Option<std::path::PathBuf>,

    /// The private key of --cert.
    #[arg(long = "key", id = "tls_key", global = true)]
    pub key: Option<std::path::PathBuf>,

    /// Accept any server certificate (encrypts, but does not check who answers).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
}

impl GlobalOptions {
    pub fn endpoints_or_default(&self) -> Vec<String> {
        self.endpoints
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| vec!["127.0.0.1:2379".to_string()])
    }

    /// etcdctl's TLS flags as the client layer takes them.
    pub fn tls(&self) -> raftkv_client::tls::TlsOptions {
        raftkv_client::tls::TlsOptions {
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            insecure_skip_verify: self.insecure_skip_tls_verify,
        }
    }

    /// A client for `endpoints` with these options' timeouts and TLS (not authenticated:
    /// `commands::client` adds `--user`).
    pub fn client_for(&self, endpoints: &[String]) -> anyhow::Result<raftkv_client::Client> {
        raftkv_client::Client::with_tls(endpoints, self.timeouts(), &self.tls())
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            dial: self.dial_timeout,
            call: self.command_timeout,
        }
    }
}

/// `2s`, `500ms`, `1m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 5s, 500ms)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use ms, s or m)"
            ))
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a cluster member (takes etcd's flags).
    // Boxed: etcd's full flag set makes it far larger than the other commands.
    Server(Box<ServerCommand>),
    /// Put a key.
    Put(PutCommand),
    /// Get a key or a range of keys.
    Get(GetCommand),
    /// Delete a key or a range of keys.
    #[command(alias = "delete")]
    Del(DelCommand),
    /// Run a transaction read from stdin in etcdctl's format.
    Txn(TxnCommand),
    /// Watch a key or a range of keys and print each event as it happens (Ctrl-C stops).
    Watch(WatchCommand),
    /// Grant, revoke, inspect, list and keep alive leases.
    #[command(subcommand)]
    Lease(crate::lease_cmd::LeaseCommand),
    /// Hold a distributed lock (print its key; run a command while holding it).
    Lock(crate::lock_elect::LockCommand),
    /// Campaign in an election with a proposal, or observe it.
    Elect(crate::lock_elect::ElectCommand),
    /// Compact the key history up to a revision.
    #[command(alias = "compaction")]
    Compact(CompactCommand),
    /// Show each endpoint's status (member id, leader, term, indexes).
    #[command(alias = "endpoint-status")]
    Status,
    /// List the cluster's members.
    #[command(alias = "member-list")]
    Members,
    /// etcdctl's `member list|add|remove|promote|update`.
    #[command(subcommand)]
    Member(crate::member_cmd::MemberCommand),
    /// Hand leadership to the member with this hex id (etcdctl move-leader).
    MoveLeader(MoveLeaderCommand),
    /// Show each endpoint's KV hash at a revision (replicas agree iff hashes match).
    Hashkv(HashKvCommand),
    /// etcdctl's `endpoint health|status|hashkv [--cluster]`.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Check histories for linearizability: --format jepsen-etcd|kv FILE...
    Lincheck(LincheckCommand),
    /// Load-test an etcd-v3 endpoint (raftkv or etcd): put | range | txn-mixed.
    Bench(BenchCommand),
    /// Back up a member (`save FILE`), inspect a backup (`status FILE`), or build a new
    /// member's data dir from one (`restore FILE --name … --initial-cluster … --data-dir …`).
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Run the course scenario (leader election, failures, recovery) and check it.
    Demo(DemoCommand),
    /// Run a local 3-member cluster in the foreground (Ctrl-C stops it).
    Cluster(ClusterCommand),
    /// Users: add, delete, get, list, passwd, grant-role, revoke-role.
    #[command(subcommand)]
    User(UserCommand),
    /// Roles: add, delete, get, list, grant-permission, revoke-permission.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Authentication: enable, disable, status.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Peer identity: `admit` a member that an outsider pre-claimed (docs/security.md).
    #[command(subcommand)]
    Peer(crate::peer_cmd::PeerCommand),
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user: `name[:password]` (password read from stdin when absent).
    Add {
        name: String,
        /// A user without password (it acts through a client certificate's CN).
        #[arg(long)]
        no_password: bool,
        /// Read the password twice and compare (false: one line from stdin).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        interactive: bool,
    },
    Delete {
        name: String,
    },
    Get {
        name: String,
        /// Print the permissions of each role too.
        #[arg(long)]
        detail: bool,
    },
    List,
    /// Change a user's password (read from stdin).
    Passwd {
        name: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        interactive: bool,
    },
    GrantRole {
        name: String,
        role: String,
    },
    RevokeRole {
        name: String,
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    Add {
        name: String,
    },
    Delete {
        name: String,
    },
    Get {
        name: String,
    },
    List,
    /// `<role> <read|write|readwrite> <key> [end]`.
    GrantPermission {
        name: String,
        perm_type: String,
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
    /// `<role> <key> [end]`.
    RevokePermission {
        name: String,
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    Enable,
    Disable,
    Status,
}

#[derive(Args, Debug)]
pub struct MoveLeaderCommand {
    /// The new leader's member id, in hex as `members` prints it.
    pub target: String,
}

#[cfg(feature = "server")]
#[derive(Args, Debug)]
pub struct ServerCommand {
    #[command(flatten)]
    pub args: server::ServerArgs,
    /// Only check the configuration (flags, URLs, bindable addresses) and print "ok".
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(feature = "server")]
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Stream a backup of the (one) endpoint's state into FILE (sha256 verified).
    Save { file: std::path::PathBuf },
    /// Print a backup's hash, revision, key count and size.
    Status { file: std::path::PathBuf },
    /// Build the data dir of one member of a new cluster from FILE (takes the server's
    /// --name, --initial-cluster, --initial-cluster-token, --initial-advertise-peer-urls,
    /// --data-dir).
    Restore {
        file: std::path::PathBuf,
        /// Move the revision forward by this much (etcd 3.6's flag; 0 keeps the backup's).
        #[arg(long, default_value_t = server::restore::DEFAULT_BUMP)]
        bump_revision: i64,
        /// Compact the history at the (bumped) revision, so watchers resuming with an old
        /// revision are told so (`--mark-compacted=false` keeps the history).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        mark_compacted: bool,
        #[command(flatten)]
        args: Box<server::ServerArgs>,
    },
}

/// Without the `server` feature the subcommand exists but only explains itself.
#[cfg(not(feature = "server"))]
#[derive(Args, Debug)]
pub struct ServerCommand {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct PutCommand {
    pub key: String,
    /// The value (omit with --ignore-value).
    pub value: Option<String>,
    /// Print the previous key-value pair.
    #[arg(long)]
    pub prev_kv: bool,
    /// Keep the current value (updates only the lease).
    #[arg(long)]
    pub ignore_value: bool,
    /// Keep the current lease.
    #[arg(long)]
    pub ignore_lease: bool,
    /// Attach a lease (hexadecimal id).
    #[arg(long)]
    pub lease: Option<String>,
}

/// `--consistency`: linearizable (`l`) or serializable (`s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    L,
    S,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum SortBy {
    Key,
    Version,
    Create,
    Modify,
    Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Order {
    Ascend,
    Descend,
}

#[derive(Args, Debug)]
pub struct GetCommand {
    pub key: String,
    /// End of the range [key, range_end).
    pub range_end: Option<String>,
    /// Get every key starting with KEY.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Get every key >= KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
    /// Read at this revision (0 = latest).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Maximum number of keys returned (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Only keys, no values.
    #[arg(long)]
    pub keys_only: bool,
    /// Only the number of keys.
    #[arg(long)]
    pub count_only: bool,
    /// Only values (simple format).
    #[arg(long)]
    pub print_value_only: bool,
    /// Linearizable (l, through the leader) or serializable (s, local, maybe stale).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Sort target.
    #[arg(long, value_enum)]
    pub sort_by: Option<SortBy>,
    /// Sort order.
    #[arg(long, value_enum)]
    pub order: Option<Order>,
}

#[derive(Args, Debug)]
pub struct WatchCommand {
    pub key: String,
    /// End of the range [key, range_end).
    pub range_end: Option<String>,
    /// Watch every key starting with KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub prefix: bool,
    /// Start at this revision (0 = from now); past revisions are replayed from history.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Show each event's previous key-value.
    #[arg(long)]
    pub prev_kv: bool,
    /// Ask the server for periodic progress notifications.
    #[arg(long)]
    pub progress_notify: bool,
}

#[derive(Args, Debug)]
pub struct DelCommand {
    pub key: String,
    /// End of the range [key, range_end).
    pub range_end: Option<String>,
    /// Delete every key starting with KEY.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Delete every key >= KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
    /// Print the deleted key-value pairs.
    #[arg(long)]
    pub prev_kv: bool,
}

#[derive(Args, Debug)]
pub struct TxnCommand {
    /// Prompt for each block (compares, success ops, failure ops) on stderr.
    #[arg(short, long)]
    pub interactive: bool,
}

#[derive(Args, Debug)]
pub struct CompactCommand {
    pub revision: i64,
    /// Wait until the compaction is physically applied.
    #[arg(long)]
    pub physical: bool,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// A linearizable read through each endpoint, and no active alarm.
    Health {
        /// Every member's client URLs (from the member list) instead of --endpoints.
        #[arg(long)]
        cluster: bool,
    },
    /// Each endpoint's status.
    Status {
        #[arg(long)]
        cluster: bool,
    },
    /// Each endpoint's KV hash.
    Hashkv {
        #[arg(long)]
        cluster: bool,
        /// Revision to hash at (0 = latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

#[derive(Args, Debug)]
pub struct HashKvCommand {
    /// Revision to hash at (0 = latest).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
}

#[derive(Args, Debug)]
pub struct LincheckCommand {
    /// Arguments passed to the checker: --format jepsen-etcd|kv [--budget S] [--report DIR] FILE...
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `raftkv bench` hands its arguments to the bench crate's own parser, which has its own
/// `--endpoints` (the global one, if given, is passed on in front).
#[derive(Args, Debug)]
pub struct BenchCommand {
    /// Arguments of the bench tool: [--endpoints ..] [--clients N] ... put|range|txn-mixed
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DemoCommand {
    /// Keep members' data (and logs) here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Heartbeat interval of the local members, in ms.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Election timeout of the local members, in ms.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Run the members with this etcd binary instead of `raftkv server` (checks the demo
    /// itself against the reference implementation).
    #[arg(long, value_name = "ETCD_BINARY")]
    pub with_etcd: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ClusterCommand {
    /// Keep members' data (and logs) here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Pick free ports instead of etcd's usual local ones (2379/22379/32379).
    #[arg(long)]
    pub free_ports: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_like_etcdctl() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn etcdctl_style_flags_parse() {
        let cli = Cli::try_parse_from([
            "raftkv",
            "--endpoints=a:1,b:2",
            "get",
            "k",
            "--prefix",
            "--limit=3",
            "--consistency=s",
            "-w",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.endpoints_or_default(), ["a:1", "b:2"]);
        assert_eq!(cli.global.write_out, OutputFormat::Json);
        let Command::Get(get) = cli.command else {
            panic!("not get")
        };
        assert!(get.prefix);
        assert_eq!(get.limit, 3);
        assert_eq!(get.consistency, Consistency::S);
        assert!(Cli::try_parse_from(["raftkv", "get", "k", "z", "--prefix"]).is_err());
    }

    /// etcdctl's TLS flags, before or after the subcommand, next to a positional `key`.
    #[test]
    fn tls_flags_parse_like_etcdctl() {
        let cli = Cli::try_parse_from([
            "raftkv",
            "--cacert=/ca.pem",
            "get",
            "k",
            "--cert",
            "/c.pem",
            "--key=/k.pem",
            "--insecure-skip-tls-verify",
        ])
        .unwrap();
        let tls = cli.global.tls();
        assert_eq!(tls.cacert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(tls.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(tls.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert!(tls.insecure_skip_verify && tls.any());
        let Command::Get(get) = cli.command else {
            panic!("not get")
        };
        assert_eq!(get.key, "k");
        let plain = Cli::try_parse_from(["raftkv", "get", "k"]).unwrap();
        assert!(!plain.global.tls().any());
    }

    #[test]
    fn lincheck_arguments_pass_through() {
        let cli = Cli::try_parse_from(["raftkv", "lincheck", "--format", "kv", "a.txt"]).unwrap();
        let Command::Lincheck(l) = cli.command else {
            panic!("not lincheck")
        };
        assert_eq!(l.args, ["--format", "kv", "a.txt"]);
    }
}
