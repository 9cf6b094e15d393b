//! Command-line arguments of the bench tool and their validation.
//!
//! The flag names follow etcd's `tools/benchmark` so a command line written for one tool
//! reads naturally for the other; the compare script relies on that.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};

/// Arguments of `raftkv bench` (and of the standalone `raftkv-bench` binary).
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Comma-separated client endpoints (`host:port` or `http://host:port`).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,

    /// Number of gRPC (HTTP/2) connections, spread round-robin over the endpoints.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,

    /// Number of concurrent clients, spread round-robin over the connections.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,

    /// Total number of requests (ignored when --duration is given).
    #[arg(long, global = true, default_value_t = 10_000)]
    pub total: u64,

    /// Run for this many seconds instead of a fixed number of requests.
    #[arg(long, global = true)]
    pub duration: Option<f64>,

    /// Overall request rate limit in requests/s (0 = as fast as possible).
    #[arg(long, global = true, default_value_t = 0.0)]
    pub rate: f64,

    /// Per-request deadline in milliseconds; a request that takes longer counts as an error.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Output format of the report.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub write_out: OutputFormat,

    /// Hide the progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Verify https:// servers with this CA bundle (etcdctl's flag; endpoints without a
    /// scheme are then dialled over TLS).
    #[arg(long, global = true)]
    pub cacert: Option<std::path::PathBuf>,

    /// Present this client certificate (mutual TLS); needs --key.
    #[arg(long, global = true)]
    pub cert: Option<std::path::PathBuf>,

    /// The private key of --cert (its own id: `range` has a positional `key`).
    #[arg(long = "key", id = "tls_key", global = true)]
    pub key: Option<std::path::PathBuf>,

    /// Accept any server certificate.
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,

    /// Authenticate as `name:password` before the run; every request carries the token.
    #[arg(long, global = true)]
    pub user: Option<String>,

    /// Load workloads (put, range, txn-mixed): write one line per finished request to this
    /// file, `<unix time of the answer, seconds> ok` or `<time> err <gRPC code>`, in the
    /// order answers came. For runs whose availability over time matters
    /// (bench/learner-catchup.sh: the longest gap between acknowledged writes).
    #[arg(long, global = true)]
    pub trace: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub workload: Workload,
}

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Read consistency, as etcd's benchmark spells it: `l` (linearizable) or `s` (serializable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    #[value(name = "l")]
    Linearizable,
    #[value(name = "s")]
    Serializable,
}

/// How keys are chosen for write workloads.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Size of each key in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Size of each value in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Walk the key space in order instead of choosing keys at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Fill the key space: the n-th request of the run writes key n (modulo the key
    /// space), whatever the number of clients, so `--total` equal to `--key-space-size`
    /// writes every key exactly once. (`--sequential-keys` walks one sequence per client,
    /// starting at the client's number: the clients' walks overlap.)
    #[arg(long, conflicts_with = "sequential_keys")]
    pub fill: bool,
}

/// The workload to run.
#[derive(Debug, Clone, Subcommand)]
pub enum Workload {
    /// Put requests.
    Put {
        #[command(flatten)]
        keys: KeyArgs,
        /// Every this many seconds, compact the store at its current revision (0 = never).
        #[arg(long, default_value_t = 0.0)]
        compact_interval: f64,
    },
    /// Range requests on one key (or `[key, end)`).
    Range {
        /// The key to read.
        key: String,
        /// Optional range end (exclusive).
        end: Option<String>,
        /// Read consistency: l (linearizable) or s (serializable).
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
    },
    /// One-operation Txn requests, each a Range or a Put chosen at random.
    TxnMixed {
        #[command(flatten)]
        keys: KeyArgs,
        /// Fraction of requests that are reads, between 0 and 1.
        #[arg(long, default_value_t = 0.5)]
        read_ratio: f64,
        /// Consistency of the reads.
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
    },
    /// Watchers on one key or on distinct keys while writers put those keys: put->event
    /// latency, events delivered per second, member memory per idle watcher.
    Watch(WatchArgs),
    /// Leases: grant `--leases` (`--clients` at a time), keep them all alive over keep-alive
    /// streams for the run (`--duration` or `--total` keep-alives, paced by `--rate`), then
    /// revoke them; throughput and latency of each, and with `--member-pid` the members' CPU
    /// per request and memory per live lease.
    Lease(LeaseArgs),
    /// Failover probe: SIGKILL a process, then put until a write succeeds on the remaining
    /// endpoints and report the time from the kill to that success.
    #[command(hide = true)]
    Failover {
        /// The process to kill (the current leader).
        #[arg(long)]
        kill_pid: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        give_up_after: f64,
    },
    /// Build the side-by-side compare report from a directory of results (used by compare.sh).
    #[command(hide = true)]
    CompareReport {
        /// Directory written by bench/compare.sh.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Markdown table output.
        #[arg(long)]
        markdown: std::path::PathBuf,
        /// SVG chart output.
        #[arg(long)]
        svg: std::path::PathBuf,
        /// The command line to record in the report.
        #[arg(long, default_value = "bench/compare.sh")]
        command: String,
    },
}

/// The `watch` workload's own flags (writers are `--clients`, their pace `--rate`).
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Number of watches.
    #[arg(long, default_value_t = 1)]
    pub watchers: usize,
    /// Watch streams the watches are spread over (round-robin; streams over `--conns`).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// One key per watcher (the writers cycle through them) instead of one key for all.
    #[arg(long)]
    pub distinct_keys: bool,
    /// Each watcher watches its key as a prefix (a range watch) instead of the key alone.
    #[arg(long)]
    pub prefix_watches: bool,
    /// Size of each value in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 16)]
    pub val_size: usize,
    /// Prefix of the watched keys.
    #[arg(long, default_value = "bench-watch/")]
    pub key_prefix: String,
    /// The member's pid (a member on this machine): report its resident memory per idle
    /// watcher and per stream.
    #[arg(long)]
    pub member_pid: Option<u32>,
    /// Extra streams, on a connection of their own, each watching every watched key (the
    /// whole `--key-prefix`) and never read: the isolation case. Reported: what they cost
    /// the member's memory and the other watchers' latency.
    #[arg(long, default_value_t = 0)]
    pub stalled_streams: usize,
}

/// The `lease` workload's own flags.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Leases granted, kept alive, then revoked.
    #[arg(long, default_value_t = 10_000)]
    pub leases: usize,
    /// Their TTL in seconds (long enough to outlast granting them all).
    #[arg(long, default_value_t = 300)]
    pub ttl: i64,
    /// Keep-alive streams, spread round-robin over `--conns`; each renews its share of
    /// the leases in turn.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Keep-alives in flight per stream.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Pids of members on this machine (comma-separated): their CPU per request of each
    /// phase and resident memory per lease are reported.
    #[arg(long, value_delimiter = ',')]
    pub member_pid: Vec<u32>,
}

/// When the run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopAt {
    Total(u64),
    Duration(Duration),
}

impl BenchArgs {
    /// Rejects combinations that cannot run, with a message that names the flag.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            bail!("--endpoints must name at least one endpoint");
        }
        if self.conns == 0 {
            bail!("--conns must be at least 1");
        }
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        // The watch workload's connections carry its streams, not its writers.
        if self.conns > self.clients && !matches!(self.workload, Workload::Watch(_)) {
            bail!(
                "--conns ({}) must not exceed --clients ({}): a connection without a client sends nothing",
                self.conns,
                self.clients
            );
        }
        match self.duration {
            Some(d) if !(d.is_finite() && d > 0.0) => {
                bail!("--duration must be a positive number of seconds")
            }
            None if self.total == 0 => bail!("--total must be at least 1"),
            _ => {}
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            bail!("--rate must be 0 (unlimited) or a positive number");
        }
        if self.request_timeout_ms == 0 {
            bail!("--request-timeout-ms must be at least 1");
        }
        if self.user.as_deref().is_some_and(|u| !u.contains(':')) {
            bail!("--user must be name:password");
        }
        match &self.workload {
            Workload::Put {
                keys,
                compact_interval,
            } => {
                keys.validate()?;
                if !(compact_interval.is_finite() && *compact_interval >= 0.0) {
                    bail!("--compact-interval must be 0 (never) or a positive number of seconds");
                }
            }
            Workload::Range { key, .. } => {
                if key.is_empty() {
                    bail!("range needs a non-empty key");
                }
            }
            Workload::TxnMixed {
                keys, read_ratio, ..
            } => {
                keys.validate()?;
                if !(0.0..=1.0).contains(read_ratio) {
                    bail!("--read-ratio must be between 0 and 1, got {read_ratio}");
                }
            }
            Workload::Failover { give_up_after, .. } => {
                if !(give_up_after.is_finite() && *give_up_after > 0.0) {
                    bail!("--give-up-after must be a positive number of seconds");
                }
            }
            Workload::Watch(w) => {
                if w.watchers == 0 || w.streams == 0 || w.streams > w.watchers {
                    bail!("--streams must be between 1 and --watchers");
                }
                if w.val_size > 1536 * 1024 {
                    bail!("--val-size must be at most 1.5 MiB (etcd's request limit)");
                }
            }
            Workload::Lease(l) => {
                // Its connections are dialled plainly and carry no token.
                if self.user.is_some() || self.tls().any() {
                    bail!("the lease workload does not take --user or TLS flags yet");
                }
                if l.leases == 0 {
                    bail!("--leases must be at least 1");
                }
                if l.streams == 0 || l.streams > l.leases {
                    bail!("--streams must be between 1 and --leases");
                }
                if l.window == 0 {
                    bail!("--window must be at least 1");
                }
                if !(1..=mvcc_max_ttl()).contains(&l.ttl) {
                    bail!("--ttl must be between 1 and {} seconds", mvcc_max_ttl());
                }
            }
            Workload::CompareReport { .. } => {}
        }
        Ok(())
    }

    /// The stop condition: --duration wins over --total.
    pub fn stop_at(&self) -> StopAt {
        match self.duration {
            Some(d) => StopAt::Duration(Duration::from_secs_f64(d)),
            None => StopAt::Total(self.total),
        }
    }

    /// The TLS flags as the client layer takes them.
    pub fn tls(&self) -> raftkv_client::tls::TlsOptions {
        raftkv_client::tls::TlsOptions {
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            insecure_skip_verify: self.insecure_skip_tls_verify,
        }
    }

    /// Endpoints as URLs tonic can dial (`http://` added when no scheme is given).
    pub fn endpoint_urls(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(raftkv_client::endpoint::endpoint_url)
            .collect()
    }
}

/// The largest TTL etcd accepts (`etcdserver: too large lease TTL` above it).
const fn mvcc_max_ttl() -> i64 {
    9_000_000_000
}

impl KeyArgs {
    fn validate(&self) -> Result<()> {
        if self.key_size == 0 {
            bail!("--key-size must be at least 1");
        }
        if self.key_space_size == 0 {
            bail!("--key-space-size must be at least 1");
        }
        // A key of n bytes can tell apart at most 256^n keys; refuse a key space that
        // would silently collapse onto fewer keys than asked for.
        if self.key_size < 8 && self.key_space_size > 1u64 << (8 * self.key_size as u32) {
            bail!(
                "--key-space-size {} does not fit in --key-size {} bytes",
                self.key_space_size,
                self.key_size
            );
        }
        if self.val_size > 1536 * 1024 {
            bail!("--val-size must be at most 1.5 MiB (etcd's request limit)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(line: &str) -> Result<BenchArgs> {
        let argv = std::iter::once("bench").chain(line.split_whitespace());
        Ok(Cli::try_parse_from(argv)?.args)
    }

    fn rejects(line: &str, needle: &str) {
        let err = parse(line).and_then(|a| a.validate()).expect_err(line);
        assert!(format!("{err:#}").contains(needle), "{line}: {err:#}");
    }

    #[test]
    fn a_typical_command_line_parses_and_validates() {
        let a = parse("--endpoints 127.0.0.1:1,http://127.0.0.1:2 --conns 2 --clients 10 --duration 3 -w json put --val-size 256 --key-space-size 100").unwrap();
        a.validate().unwrap();
        assert_eq!(
            a.endpoint_urls(),
            vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert_eq!(a.stop_at(), StopAt::Duration(Duration::from_secs(3)));
        assert_eq!(a.write_out, OutputFormat::Json);
        let r = parse("--total 5 range foo --consistency s").unwrap();
        assert_eq!(r.stop_at(), StopAt::Total(5));
        assert!(matches!(
            r.workload,
            Workload::Range {
                consistency: Consistency::Serializable,
                ..
            }
        ));
    }

    #[test]
    fn the_lease_workload_takes_its_flags_and_a_list_of_member_pids() {
        let a = parse("--conns 2 --clients 20 --duration 5 -w json lease --leases 1000 --ttl 60 --streams 10 --window 2 --member-pid 11,12,13").unwrap();
        a.validate().unwrap();
        let Workload::Lease(l) = &a.workload else {
            panic!("not a lease workload: {:?}", a.workload)
        };
        assert_eq!((l.leases, l.ttl, l.streams, l.window), (1000, 60, 10, 2));
        assert_eq!(l.member_pid, vec![11, 12, 13]);
        let d = parse("lease").unwrap();
        d.validate().unwrap();
        let Workload::Lease(l) = &d.workload else {
            panic!("not a lease workload")
        };
        assert_eq!((l.leases, l.streams, l.window), (10_000, 100, 1));
        assert!(l.member_pid.is_empty());
    }

    /// The TLS and auth flags, next to `range`'s positional key (a clash once: both `key`).
    #[test]
    fn tls_and_user_flags_parse_beside_a_range_key() {
        let a = parse("--cacert /ca.pem --cert /c.pem --key /k.pem --user u:p range foo").unwrap();
        a.validate().unwrap();
        let tls = a.tls();
        assert!(tls.any());
        assert_eq!(tls.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(a.user.as_deref(), Some("u:p"));
        assert!(matches!(&a.workload, Workload::Range { key, .. } if key == "foo"));
        rejects("--user nopassword put", "--user");
    }

    #[test]
    fn impossible_combinations_are_rejected_with_the_flag_name() {
        rejects("--clients 0 put", "--clients");
        rejects("--conns 0 put", "--conns");
        rejects(
            "--conns 5 --clients 2 put",
            "--conns (5) must not exceed --clients (2)",
        );
        rejects("--total 0 put", "--total");
        rejects("--duration 0 put", "--duration");
        rejects("--rate NaN put", "--rate");
        rejects("put --key-size 0", "--key-size");
        rejects("put --key-size 1 --key-space-size 300", "does not fit");
        rejects("txn-mixed --read-ratio 1.5", "--read-ratio");
        rejects("--endpoints , put", "--endpoints");
        rejects("range foo --consistency x", "invalid value");
        rejects("watch --watchers 2 --streams 3", "--streams");
        rejects("lease --leases 0", "--leases");
        rejects("lease --leases 10 --streams 11", "--streams");
        rejects("lease --window 0", "--window");
        rejects("lease --ttl 0", "--ttl");
        rejects("lease --member-pid x", "invalid value");
        rejects("--user u:p lease", "does not take --user or TLS");
        rejects("--cacert /ca.pem lease", "does not take --user or TLS");
        parse("--clients 4 --rate 100 --duration 2 watch --watchers 1000 --streams 10 --distinct-keys --member-pid 1")
            .unwrap()
            .validate()
            .unwrap();
    }
}
