//! The validated form of [`ServerArgs`]: parsed URLs, the initial membership with its IDs,
//! and the timing in Raft ticks. Everything the flags can get wrong is caught here, with a
//! one-line message naming the flag, before anything is bound or written.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::args::{ClusterState, ServerArgs};
use crate::compat_args::AutoCompaction;
use crate::ids;
use crate::logging::LogSettings;

/// One member of the initial configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub id: u64,
    pub name: String,
    /// Normalised (`scheme://host:port`), sorted peer URLs.
    pub peer_urls: Vec<String>,
}

/// A listen URL reduced to what we bind: host and port (the host may be a DNS name), or,
/// for a `unix://` / `unixs://` client URL, the socket's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    pub url: String,
    /// For a unix socket: "localhost" (the name its certificate is made for under
    /// `--auto-tls`, and what clients of a local socket call the server).
    pub host: String,
    /// For a unix socket: 0.
    pub port: u16,
    /// The socket path of a `unix://` or `unixs://` URL (see [`crate::unix_socket`]).
    pub unix: Option<PathBuf>,
}

impl ListenAddr {
    /// Resolve to socket addresses. `localhost` prefers IPv4 loopback, as most tools dial it.
    pub fn resolve(&self) -> anyhow::Result<Vec<SocketAddr>> {
        if self.unix.is_some() {
            bail!("{} is a unix socket, not a TCP address", self.url);
        }
        let mut addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve listen address {}", self.url))?
            .collect();
        if self.host == "localhost" {
            addrs.retain(|a| a.is_ipv4());
        }
        addrs.dedup();
        if addrs.is_empty() {
            bail!("listen address {} resolves to nothing", self.url);
        }
        Ok(addrs)
    }
}

/// Raft ticks per heartbeat interval (fewer when the interval is under 10 ms, so a tick is
/// never shorter than 1 ms).
pub const TICKS_PER_HEARTBEAT: u64 = 10;

/// Followers draw their election timeout from `[T, T + 30% of T)`, T = `--election-timeout`,
/// instead of etcd's and the Raft paper's `[T, 2T)`. The spread exists to make split votes
/// rare, and for that it only has to be wide compared with one (pre-)vote round trip (Raft
/// paper §9.3: 5 ms of spread over a 150 ms base already removes most split votes); between
/// members a few milliseconds apart, 300 ms is a hundred round trips. Every millisecond of
/// spread beyond that is time the surviving followers may wait for a dead leader: the
/// slowest failover is T + spread, 1.3 s instead of 2 s with the default flags.
/// docs/raft-deviations.md has the argument and the simulator's measurements.
pub const ELECTION_JITTER_PERCENT: u64 = 30;

/// The spread is never narrower than this many ticks. Only tiny timeouts hit the floor
/// (`--heartbeat-interval` under 10 ms); without it a 5-tick timeout would get a 1-tick
/// spread, a single possible timeout, and followers that lost their leader together would
/// campaign together, split the vote, and do it again, round after round.
pub const ELECTION_JITTER_MIN_TICKS: u64 = 3;

/// A member's full, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub member_id: u64,
    pub cluster_id: u64,
    pub token: String,
    pub cluster_state: ClusterState,
    /// All initial members, sorted by name, this member included.
    pub initial_members: Vec<InitialMember>,
    pub listen_client: Vec<ListenAddr>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer: Vec<ListenAddr>,
    pub advertise_peer_urls: Vec<String>,
    pub listen_metrics: Vec<ListenAddr>,
    pub heartbeat: Duration,
    /// One Raft tick: the heartbeat interval split in [`TICKS_PER_HEARTBEAT`] (never under
    /// 1 ms). The core counts timeouts in ticks, so a whole-heartbeat tick would add up to a
    /// heartbeat interval of rounding to every election; a tenth of it adds at most 10 ms.
    pub tick: Duration,
    /// The heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// `--election-timeout` in ticks, rounded up: the least a follower waits for a silent
    /// leader before campaigning, and the leader lease (etcd's meaning of the flag).
    pub election_ticks: u32,
    /// Width of the range a follower's election timeout is drawn from, in ticks:
    /// [`ELECTION_JITTER_PERCENT`] of `election_ticks`, at least [`ELECTION_JITTER_MIN_TICKS`]
    /// (see there for why not 100%).
    pub election_jitter_ticks: u32,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub log: LogSettings,
    /// `--pre-vote` (raftkv's default: on).
    pub pre_vote: bool,
    /// `--strict-reconfig-check` (etcd's default: on): refuse a removal that would leave
    /// too few started or connected voters (`crate::grpc` member changes).
    pub strict_reconfig_check: bool,
    /// `--auto-join` and this member is not named in `--initial-cluster`: it asks the
    /// founders to add it before joining (crate::auto_join).
    pub joins_by_itself: bool,
    /// `--auto-join`: this member answers other members' requests to be added.
    pub auto_join: bool,
    /// `--lease-keepalive-before-log`: the leader answers keep-alives before their renewal
    /// is in the log (`crate::grpc::lease`).
    pub lease_keepalive_before_log: bool,
    /// `--auto-remove-departed-after` (None: off; crate::auto_remove).
    pub auto_remove_departed_after: Option<Duration>,
    /// `--max-concurrent-streams`: HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// `--enable-grpc-gateway` (etcd's default: on): serve the JSON gateway (`/v3/...`) on
    /// the client URLs.
    pub grpc_gateway: bool,
    /// `--grpc-keepalive-interval` (None: no server pings) and `--grpc-keepalive-timeout`.
    pub keepalive: (Option<Duration>, Duration),
    /// `--auto-compaction-mode` / `--auto-compaction-retention`.
    pub auto_compaction: AutoCompaction,
    /// One start-up line per accepted flag that changes nothing here (and where the
    /// configuration came from), logged once the logger is up.
    pub notes: Vec<String>,
    /// The TLS flags as given; checked and loaded by [`crate::tls::TlsSetup::new`].
    pub tls: crate::tls::TlsArgs,
    /// The auth flags, checked (`--auth-token` syntax, `--bcrypt-cost` range).
    pub auth: crate::auth::AuthArgs,
    /// `--watch-progress-notify-interval`.
    pub watch_progress_interval: Duration,
    /// `--max-watches-per-stream` (0: no limit).
    pub max_watches_per_stream: usize,
    /// `--quota-backend-bytes`.
    pub quota: crate::quota::Quota,
    /// `--enable-dashboard`: serve /dashboard on the client URLs (`crate::dashboard`).
    pub dashboard: bool,
    /// `--experimental-initial-corrupt-check` or the InitialCorruptCheck gate
    /// (crate::corrupt_check).
    pub initial_corrupt_check: bool,
    /// `--force-new-cluster` (crate::force_new_cluster).
    pub force_new_cluster: bool,
    /// `--corrupt-check-time` / `--experimental-corrupt-check-time`, or with the
    /// CompactHashCheck gate `--compact-hash-check-time`, the shorter
    /// (crate::corrupt_monitor); `None`: off.
    pub corrupt_check_interval: Option<Duration>,
    /// `--max-learners` (etcd's default 1): checked when a member is added.
    pub max_learners: usize,
}

impl Config {
    /// The other members, with their peer URLs.
    pub fn peers(&self) -> impl Iterator<Item = &InitialMember> {
        self.initial_members
            .iter()
            .filter(move |m| m.id != self.member_id)
    }

    /// How long a client request may wait for commit and apply before "request timed
    /// out": etcd's 5 s plus two election timeouts.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.election_timeout
    }

    /// Parse and check the flags, or, with `--config-file`, the file's contents (and then
    /// nothing else, as etcd does). Reads only the config file: no network, no data dir.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<Config> {
        match args.config_file.as_deref().filter(|p| !p.is_empty()) {
            Some(path) => {
                let from_file = crate::config_file::load(path)?;
                let mut config = Config::from_flags(&from_file)?;
                config.notes.insert(0, format!("loaded server configuration from {path}; other command line flags and environment variables are ignored"));
                Ok(config)
            }
            None => Config::from_flags(args),
        }
    }

    /// [`Config::from_args`] for flags already read (no config file).
    fn from_flags(args: &ServerArgs) -> anyhow::Result<Config> {
        let mut notes = args.compat.notes()?;
        let newer = args
            .compat
            .newer_settings(args.watch_progress_notify_interval.as_deref())?;
        notes.extend(newer.notes.iter().cloned());
        notes.extend(args.tls.notes());
        if args.name.is_empty() {
            bail!("--name must not be empty");
        }
        if args.heartbeat_interval == 0 {
            bail!("--heartbeat-interval must be > 0 ms");
        }
        if args.election_timeout < 5 * args.heartbeat_interval {
            bail!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                args.election_timeout,
                args.heartbeat_interval
            );
        }
        if args.election_timeout > 50_000 {
            bail!(
                "--election-timeout[{}ms] is too long, and should be set less than 50000ms",
                args.election_timeout
            );
        }
        if args.snapshot_count == 0 {
            bail!("--snapshot-count must be > 0");
        }
        if args.max_request_bytes == 0 {
            bail!("--max-request-bytes must be > 0");
        }
        if args.max_txn_ops == 0 {
            bail!("--max-txn-ops must be > 0");
        }

        let watch_flag = if args.watch_progress_notify_interval.is_some() {
            "--watch-progress-notify-interval"
        } else {
            "--experimental-watch-progress-notify-interval"
        };
        let watch_progress_interval = match newer.watch_progress_notify_interval.as_deref() {
            Some(raw) => crate::compat_args::parse_go_duration(watch_flag, raw)?,
            None => crate::watch::DEFAULT_PROGRESS_INTERVAL,
        };
        // Shorter intervals are raised to the minimum rather than refused.
        let watch_progress_interval = watch_progress_interval.max(MIN_PROGRESS_INTERVAL);

        let listen_client = parse_listen_urls(
            "--listen-client-urls",
            &args.listen_client_urls,
            Schemes::TcpOrUnix,
        )?;
        let listen_peer =
            parse_listen_urls("--listen-peer-urls", &args.listen_peer_urls, Schemes::Tcp)?;
        let listen_metrics = match &args.listen_metrics_urls {
            Some(s) if !s.trim().is_empty() => {
                parse_listen_urls("--listen-metrics-urls", s, Schemes::Tcp)?
            }
            _ => Vec::new(),
        };
        let advertise_client_urls = match &args.advertise_client_urls {
            Some(s) => parse_url_list("--advertise-client-urls", s, Schemes::TcpOrUnix)?,
            None => listen_client.iter().map(|l| l.url.clone()).collect(),
        };
        let mut advertise_peer_urls = parse_url_list(
            "--initial-advertise-peer-urls",
            &args.initial_advertise_peer_urls,
            Schemes::Tcp,
        )?;
        advertise_peer_urls.sort();
        advertise_peer_urls.dedup();

        let initial_cluster = match &args.initial_cluster {
            Some(s) => s.clone(),
            None => advertise_peer_urls
                .iter()
                .map(|u| format!("{}={}", args.name, u))
                .collect::<Vec<_>>()
                .join(","),
        };
        let by_name = parse_initial_cluster(&initial_cluster)?;
        // With --auto-join a member that is not a founder is not in --initial-cluster: its
        // id comes from the cluster when it joins (crate::auto_join).
        let joins_by_itself = args.auto_join && !by_name.contains_key(&args.name);
        let own_urls = match by_name.get(&args.name) {
            Some(urls) => urls,
            None if joins_by_itself => &advertise_peer_urls,
            None => bail!(
                "--initial-cluster has no member named {:?} (--name); it lists {}",
                args.name,
                by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        if *own_urls != advertise_peer_urls {
            bail!(
                "--initial-cluster gives {:?} the peer URLs {} but --initial-advertise-peer-urls is {}",
                args.name,
                own_urls.join(","),
                advertise_peer_urls.join(",")
            );
        }

        let token = args.initial_cluster_token.clone();
        let initial_members: Vec<InitialMember> = by_name
            .iter()
            .map(|(name, urls)| InitialMember {
                id: ids::member_id(urls, &token),
                name: name.clone(),
                peer_urls: urls.clone(),
            })
            .collect();
        let member_ids: Vec<u64> = initial_members.iter().map(|m| m.id).collect();
        let member_id = ids::member_id(&advertise_peer_urls, &token);
        let ticks_per_heartbeat = args.heartbeat_interval.min(TICKS_PER_HEARTBEAT);
        let tick = Duration::from_millis(args.heartbeat_interval) / ticks_per_heartbeat as u32;
        // Rounded up, as the flag is a minimum. At most 50 000 ms × 10 ticks: fits a u32.
        let election_ticks =
            (args.election_timeout * ticks_per_heartbeat).div_ceil(args.heartbeat_interval);
        let cluster_id = ids::cluster_id(&member_ids);

        Ok(Config {
            name: args.name.clone(),
            data_dir: PathBuf::from(args.data_dir()),
            member_id,
            cluster_id,
            token,
            cluster_state: args.initial_cluster_state,
            initial_members,
            listen_client,
            advertise_client_urls,
            listen_peer,
            advertise_peer_urls,
            listen_metrics,
            heartbeat: Duration::from_millis(args.heartbeat_interval),
            tick,
            heartbeat_ticks: ticks_per_heartbeat as u32,
            election_ticks: election_ticks as u32,
            election_jitter_ticks: (election_ticks * ELECTION_JITTER_PERCENT / 100)
                .max(ELECTION_JITTER_MIN_TICKS) as u32,
            election_timeout: Duration::from_millis(args.election_timeout),
            snapshot_count: args.snapshot_count,
            max_request_bytes: args.max_request_bytes,
            max_txn_ops: args.max_txn_ops,
            log: LogSettings::from_args(args)?,
            pre_vote: args.compat.cluster.pre_vote.unwrap_or(true),
            strict_reconfig_check: args.compat.cluster.strict_reconfig_check.unwrap_or(true),
            joins_by_itself,
            auto_join: args.auto_join,
            lease_keepalive_before_log: args.lease_keepalive_before_log,
            auto_remove_departed_after: Some(crate::compat_args::parse_go_duration(
                "--auto-remove-departed-after",
                &args.auto_remove_departed_after,
            )?)
            .filter(|d| !d.is_zero()),
            max_concurrent_streams: args.compat.grpc.max_concurrent_streams,
            grpc_gateway: args.compat.http.enable_grpc_gateway.unwrap_or(true),
            keepalive: args.compat.keepalive(),
            auto_compaction: args.compat.auto_compaction()?,
            quota: crate::quota::Quota::from_flag(args.compat.storage.quota_backend_bytes),
            notes,
            tls: args.tls.clone(),
            auth: {
                args.auth.token_spec()?;
                args.auth.clone()
            },
            watch_progress_interval,
            max_watches_per_stream: args.max_watches_per_stream,
            dashboard: args.enable_dashboard,
            initial_corrupt_check: newer.initial_corrupt_check,
            force_new_cluster: args.compat.cluster.force_new_cluster.unwrap_or(false),
            corrupt_check_interval: newer.corrupt_check_interval,
            max_learners: newer.max_learners,
        })
    }

    /// Check that every listen address resolves and can be bound right now (then release
    /// it). Used by the dry run; `run` reports the same errors when it binds for real.
    pub fn check_bindable(&self) -> anyhow::Result<()> {
        let all = self
            .listen_client
            .iter()
            .chain(&self.listen_peer)
            .chain(&self.listen_metrics);
        for l in all {
            if let Some(path) = &l.unix {
                crate::unix_socket::check_bindable(&l.url, path)?;
                continue;
            }
            for addr in l.resolve()? {
                TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {} ({addr})", l.url))?;
            }
        }
        Ok(())
    }
}

/// The shortest progress-notification interval (etcd's floor).
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Which URL schemes a flag takes: every URL flag takes `http` and `https` (TLS, configured
/// by the flags of [`crate::tls::TlsArgs`]); the client URL flags also take `unix` and
/// `unixs`, as etcd's do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schemes {
    Tcp,
    TcpOrUnix,
}

/// A parsed URL: its normalised form, and where it points.
enum ParsedUrl {
    /// `scheme://host:port`, the host without IPv6 brackets.
    Tcp {
        url: String,
        host: String,
        port: u16,
    },
    /// `unix://path` / `unixs://path`.
    Unix { url: String, path: PathBuf },
}

impl ParsedUrl {
    fn url(&self) -> &str {
        match self {
            ParsedUrl::Tcp { url, .. } | ParsedUrl::Unix { url, .. } => url,
        }
    }
}

/// Parse one URL of `flag` into its normalised form and its parts.
fn parse_url(flag: &str, raw: &str, schemes: Schemes) -> anyhow::Result<ParsedUrl> {
    let raw = raw.trim();
    if let Some((scheme, path)) = crate::unix_socket::split_url(raw) {
        if schemes != Schemes::TcpOrUnix {
            bail!("{flag}: {raw:?}: unix sockets are served for client URLs only; use http:// or https://");
        }
        if path.as_os_str().is_empty() {
            bail!("{flag}: {raw:?} names no socket path");
        }
        return Ok(ParsedUrl::Unix {
            url: format!("{scheme}://{}", path.display()),
            path,
        });
    }
    let url =
        url::Url::parse(raw).map_err(|e| anyhow::anyhow!("{flag}: invalid URL {raw:?}: {e}"))?;
    let scheme = match url.scheme() {
        s @ ("http" | "https") => s,
        other => {
            let also = match schemes {
                Schemes::Tcp => "",
                Schemes::TcpOrUnix => ", unix:// or unixs://",
            };
            bail!("{flag}: {raw:?}: unsupported URL scheme {other:?}; use http://, https://{also}")
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{flag}: {raw:?} has no host"))?;
    let port = url
        .port()
        .ok_or_else(|| anyhow::anyhow!("{flag}: {raw:?} has no port"))?;
    if url.path() != "/" && !url.path().is_empty() {
        bail!("{flag}: {raw:?}: a URL here must not have a path");
    }
    // Url keeps IPv6 brackets in host_str for formatting; strip them for resolution.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(ParsedUrl::Tcp {
        url: format!("{scheme}://{host}:{port}"),
        host: bare,
        port,
    })
}

fn parse_url_list(flag: &str, raw: &str, schemes: Schemes) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = raw
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_url(flag, s, schemes).map(|u| u.url().to_string()))
        .collect::<anyhow::Result<_>>()?;
    if urls.is_empty() {
        bail!("{flag} must list at least one URL");
    }
    Ok(urls)
}

fn parse_listen_urls(flag: &str, raw: &str, schemes: Schemes) -> anyhow::Result<Vec<ListenAddr>> {
    let mut out: Vec<ListenAddr> = Vec::new();
    for s in raw.split(',').filter(|s| !s.trim().is_empty()) {
        let addr = match parse_url(flag, s, schemes)? {
            ParsedUrl::Tcp { url, host, port } => ListenAddr {
                url,
                host,
                port,
                unix: None,
            },
            ParsedUrl::Unix { url, path } => ListenAddr {
                url,
                host: "localhost".to_string(),
                port: 0,
                unix: Some(path),
            },
        };
        if out.iter().any(|l| l.url == addr.url) {
            bail!("{flag}: {} is listed twice", addr.url);
        }
        if let Some(other) = out
            .iter()
            .find(|l| addr.unix.is_some() && l.unix == addr.unix)
        {
            bail!(
                "{flag}: {} and {} name one socket; a socket is either unix:// or unixs://",
                other.url,
                addr.url
            );
        }
        out.push(addr);
    }
    if out.is_empty() {
        bail!("{flag} must list at least one URL");
    }
    Ok(out)
}

/// Parse `name=url,name=url,...`. A name may repeat to give a member several URLs; a URL
/// given to two different members is an error.
fn parse_initial_cluster(raw: &str) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for part in raw.split(',').filter(|s| !s.trim().is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            bail!("--initial-cluster: {part:?} is not of the form name=http://host:port");
        };
        let name = name.trim();
        if name.is_empty() {
            bail!("--initial-cluster: {part:?} has an empty member name");
        }
        let url = parse_url("--initial-cluster", url, Schemes::Tcp)?
            .url()
            .to_string();
        if let Some(prev) = owner.get(&url) {
            if prev == name {
                bail!("--initial-cluster: duplicate URL {url} for member {name:?}");
            }
            bail!("--initial-cluster: URL {url} is given to both {prev:?} and {name:?}");
        }
        owner.insert(url.clone(), name.to_string());
        by_name.entry(name.to_string()).or_default().push(url);
    }
    if by_name.is_empty() {
        bail!("--initial-cluster must list at least one member");
    }
    for urls in by_name.values_mut() {
        urls.sort();
    }
    Ok(by_name)
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

    fn args(extra: &[&str]) -> ServerArgs {
        let mut v = vec!["raftkv"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().args
    }

    const CLUSTER: &str =
        "a=http://127.0.0.1:12380,b=http://127.0.0.1:22380,c=http://127.0.0.1:32380";

    fn member(name: &str, port: u16) -> ServerArgs {
        let url = format!("http://127.0.0.1:{port}");
        args(&[
            "--name",
            name,
            "--initial-advertise-peer-urls",
            &url,
            "--listen-peer-urls",
            &url,
            "--initial-cluster",
            CLUSTER,
        ])
    }

    #[test]
    fn defaults_form_a_single_member_cluster() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.initial_members.len(), 1);
        assert_eq!(c.initial_members[0].id, c.member_id);
        assert_eq!(
            c.advertise_client_urls,
            vec!["http://localhost:2379".to_string()]
        );
        // etcd's defaults (100 ms heartbeat, 1000 ms election): 10 ms ticks, campaigns
        // after 1.0 to 1.3 s of silence.
        assert_eq!(c.tick, Duration::from_millis(10));
        assert_eq!(c.heartbeat_ticks, 10);
        assert_eq!(c.election_ticks, 100);
        assert_eq!(c.election_jitter_ticks, 30);
    }

    #[test]
    fn election_timeout_is_a_minimum_whatever_the_tick() {
        for (heartbeat, election) in [(100, 1000), (30, 1000), (7, 35), (1, 5), (250, 50_000)] {
            let c = Config::from_args(&args(&[
                "--heartbeat-interval",
                &heartbeat.to_string(),
                "--election-timeout",
                &election.to_string(),
            ]))
            .unwrap();
            let min_wait = c.tick * c.election_ticks;
            assert!(
                min_wait >= Duration::from_millis(election)
                    && min_wait < Duration::from_millis(election) + c.tick,
                "{heartbeat}/{election}: {min_wait:?}"
            );
            assert_eq!(c.tick * c.heartbeat_ticks, Duration::from_millis(heartbeat));
            assert!(
                c.tick >= Duration::from_millis(1),
                "{heartbeat}: {:?}",
                c.tick
            );
            assert!(c.heartbeat_ticks < c.election_ticks);
            // The spread is 30% of the timeout, rounded down to whole ticks, but never
            // under 3 ticks.
            let spread = c.tick * c.election_jitter_ticks;
            let nominal = Duration::from_millis(election * ELECTION_JITTER_PERCENT / 100);
            let floor = c.tick * ELECTION_JITTER_MIN_TICKS as u32;
            assert!(
                spread == floor || (spread <= nominal && spread + c.tick > nominal),
                "{heartbeat}/{election}: spread {spread:?}"
            );
            assert!(spread >= floor, "{heartbeat}/{election}: spread {spread:?}");
        }
    }

    #[test]
    fn every_member_derives_the_same_ids() {
        let a = Config::from_args(&member("a", 12380)).unwrap();
        let b = Config::from_args(&member("b", 22380)).unwrap();
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.initial_members, b.initial_members);
        assert_ne!(a.member_id, b.member_id);
        assert_eq!(a.peers().count(), 2);
        assert!(a.peers().all(|m| m.id != a.member_id));
    }

    #[test]
    fn missing_name_is_rejected() {
        let e = Config::from_args(&member("d", 12380))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no member named \"d\""), "{e}");
    }

    #[test]
    fn advertise_mismatch_is_rejected() {
        let e = Config::from_args(&member("a", 22380))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--initial-advertise-peer-urls"), "{e}");
    }

    #[test]
    fn url_given_to_two_members_is_rejected() {
        let a = args(&[
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:1",
            "--initial-cluster",
            "a=http://127.0.0.1:1,b=http://127.0.0.1:1",
        ]);
        let e = Config::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("given to both"), "{e}");
    }

    #[test]
    fn bad_urls_and_timings_are_rejected() {
        for bad in [
            vec!["--listen-client-urls", "localhost:2379"],
            vec!["--listen-client-urls", "ftp://127.0.0.1:2379"],
            vec!["--listen-client-urls", "unix://"],
            vec!["--listen-peer-urls", "unix:///tmp/peer.sock"],
            vec!["--listen-client-urls", "http://127.0.0.1"],
            vec!["--initial-cluster", "default"],
            vec!["--election-timeout", "200"],
            vec!["--heartbeat-interval", "0"],
            vec!["--snapshot-count", "0"],
        ] {
            assert!(
                Config::from_args(&args(&bad)).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn a_taken_port_is_not_bindable() {
        // Ports below 32768: port 0 would land in the kernel's client-port range.
        let ports = raftkv_client::local_cluster::free_loopback_ports(2).unwrap();
        let _taken = TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
        let url = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let c = Config::from_args(&args(&[
            "--listen-client-urls",
            &url,
            "--listen-peer-urls",
            &peer,
        ]))
        .unwrap();
        let e = c.check_bindable().unwrap_err();
        assert!(format!("{e:#}").contains("cannot listen on"), "{e:#}");
    }
}
