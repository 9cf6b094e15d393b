//! Assembling a member: bind the listeners, recover the data dir, start the transport, the
//! node thread and the client servers, and take everything down again in order.

use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use raft::{ConfState, RaftNode};
use storage::{Storage, StorageOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ListenAddr};
use crate::grpc::{
    ClusterService, Context, LeaseService, MaintenanceService, Membership, WatchService,
};
use crate::hooks::Hooks;
use crate::kv::MvccMachine;
use crate::node::{self, NodeParams, StateMachine};
use crate::tls::TlsSetup;
use crate::transport::{
    own_incarnation, Acceptor, Incarnations, LocalIdentity, PeerListen, Transport,
};

/// File in the data dir holding this member's incarnation (see `transport::incarnations`).
const INCARNATION_FILE: &str = "raftkv.incarnation";
/// File in the data dir recording the incarnations of peers we accepted.
const PEERS_FILE: &str = "raftkv.peers";

/// gRPC accepts this much more than --max-request-bytes on the wire, so that a request just
/// over the limit gets etcd's "request is too large" rather than a transport error.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long a shutdown waits for client connections to close by themselves.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Bind every listen address. URLs that differ only in scheme (`http://h:p` and
/// `https://h:p`) share one listener, returned once with the URLs it serves.
async fn bind_all(addrs: &[ListenAddr]) -> anyhow::Result<Vec<(Vec<String>, TcpListener)>> {
    let mut groups: Vec<(&str, u16, Vec<String>)> = Vec::new();
    // Unix sockets are bound by `bind_unix`.
    for l in addrs.iter().filter(|l| l.unix.is_none()) {
        match groups
            .iter_mut()
            .find(|(h, p, _)| *h == l.host && *p == l.port)
        {
            Some(g) => g.2.push(l.url.clone()),
            None => groups.push((&l.host, l.port, vec![l.url.clone()])),
        }
    }
    let mut out = Vec::new();
    for (host, port, urls) in groups {
        let l = addrs
            .iter()
            .find(|l| l.unix.is_none() && l.host == host && l.port == port)
            .expect("group of a listen address");
        for a in l.resolve()? {
            let listener = TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {} ({a})", urls.join(",")))?;
            out.push((urls.clone(), listener));
        }
    }
    Ok(out)
}

/// Bind every client listen address: TCP ports and unix sockets.
async fn bind_clients(config: &Config) -> anyhow::Result<Vec<(Vec<String>, ClientSocket)>> {
    let mut out: Vec<(Vec<String>, ClientSocket)> = bind_all(&config.listen_client)
        .await?
        .into_iter()
        .map(|(urls, l)| (urls, ClientSocket::Tcp(l)))
        .collect();
    out.extend(bind_unix(&config.listen_client)?);
    Ok(out)
}

/// `--experimental-initial-corrupt-check` (crate::corrupt_check): once the member has
/// replayed its own log up to the commit index it recovered (`None`: a new data dir, not
/// checked), compare its hash with the peers'. The peers are the replicated member list's,
/// asked over the peer connection (their published client URLs serve a peer of an older
/// build, and the log lines), so the check first waits, bounded, for the transport to have
/// reached each of them.
async fn initial_corrupt_check(
    config: &Config,
    handle: &node::NodeHandle<MvccMachine>,
    transport: &Transport,
    recovered_commit: Option<u64>,
) -> anyhow::Result<()> {
    use crate::corrupt_check::{LocalHash, Peer};
    let Some(commit) = recovered_commit else {
        info!("skipping the initial corruption check: a new member has no history to compare");
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + config.request_timeout();
    while handle.status.applied() < commit && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (local, peers) = {
        let sm = handle
            .state
            .read()
            .map_err(|_| anyhow::anyhow!("state machine lock poisoned"))?;
        let h = sm
            .store
            .hash_kv(0)
            .map_err(|e| anyhow::anyhow!("{:x} failed to fetch hash ({e})", config.member_id))?;
        let local = LocalHash {
            hash: h.hash,
            revision: h.hash_revision,
            compact_revision: h.compact_revision,
        };
        let peers: Vec<Peer> = sm
            .members
            .members()
            .filter(|m| m.id != config.member_id)
            .map(|m| Peer {
                id: m.id,
                client_urls: m.client_urls.clone(),
            })
            .collect();
        (local, peers)
    };
    // A peer that is down is never reached: it is skipped once the wait is over.
    let reached = |peers: &[Peer]| peers.iter().all(|p| transport.is_connected(p.id));
    while !reached(&peers) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    crate::corrupt_check::check(
        config.member_id,
        local,
        peers,
        config.request_timeout(),
        Some(transport.clone()),
    )
    .await
}

/// This member's answer to a peer's HashKV question (`crate::transport::hash_kv`): the
/// store's hash at a revision, or etcd's error text.
fn hash_source(
    member_id: u64,
    state: Arc<RwLock<MvccMachine>>,
) -> crate::transport::hash_kv::HashSource {
    Arc::new(move |revision| {
        // An O(1) view under the lock; the hash walks the whole store, outside it.
        let store = state
            .read()
            .map_err(|_| "state machine lock poisoned".to_string())?
            .store
            .view();
        let h = store.hash_kv(revision).map_err(|e| e.to_string())?;
        Ok(crate::transport::codec::PeerHashKv {
            member_id,
            hash: h.hash,
            hash_revision: h.hash_revision,
            compact_revision: h.compact_revision,
            current_revision: store.current_revision(),
        })
    })
}

/// Bind the unix sockets among the client listen addresses (`crate::unix_socket`), each
/// with the guard that removes its file when the member stops.
fn bind_unix(addrs: &[ListenAddr]) -> anyhow::Result<Vec<(Vec<String>, ClientSocket)>> {
    let mut out = Vec::new();
    for l in addrs {
        if let Some(path) = &l.unix {
            let (listener, file) = crate::unix_socket::bind(&l.url, path)?;
            out.push((vec![l.url.clone()], ClientSocket::Unix(listener, file)));
        }
    }
    Ok(out)
}

/// Whether any of the URLs of a listener is TLS (`https://`, `unixs://`) / plain
/// (`http://`, `unix://`).
fn schemes(urls: &[String]) -> (bool, bool) {
    (
        urls.iter()
            .any(|u| u.starts_with("https://") || u.starts_with("unixs://")),
        urls.iter()
            .any(|u| u.starts_with("http://") || u.starts_with("unix://")),
    )
}

/// Serve one member until `shutdown` is cancelled or the node fails. `hooks` is
/// [`Hooks::default`] except in the Jepsen harness's member. The peer transport shares the
/// caller's runtime ([`serve_with_peer_runtime`] gives it one of its own).
pub async fn serve(
    config: Config,
    hooks: Hooks,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_peer_runtime(config, hooks, shutdown, None).await
}

/// [`serve`], with the peer transport (diallers, the peer listeners and every peer
/// connection) on `peer_runtime` when given, instead of the runtime that serves clients.
///
/// Why a runtime of its own: heartbeats, their acknowledgements and appends must not wait
/// in the same run queue as client work. With one runtime, 100 readers of a 280 MB range
/// kept both workers busy encoding answers while the followers' acks waited behind them,
/// and the leader stepped down for load alone (issue 18). `crate::run` gives the peer
/// runtime one thread at the node thread's raised priority.
pub async fn serve_with_peer_runtime(
    mut config: Config,
    hooks: Hooks,
    shutdown: CancellationToken,
    peer_runtime: Option<tokio::runtime::Handle>,
) -> anyhow::Result<()> {
    let peer_runtime = peer_runtime.unwrap_or_else(tokio::runtime::Handle::current);
    info!(
        name = %config.name,
        member_id = format_args!("{:x}", config.member_id),
        cluster_id = format_args!("{:x}", config.cluster_id),
        data_dir = %config.data_dir.display(),
        "starting raftkv member"
    );
    for note in &config.notes {
        warn!("{note}");
    }
    // Certificates first: a bad file is a one-line error before anything is bound.
    let tls = crate::tls::setup_for(&config, true)?;
    let peer_listeners = bind_all(&config.listen_peer).await?;
    // With the initial corruption check, the client port is bound only once the check has
    // passed: a peer checking at the same time then finds it refused at once, rather than
    // bound and silent until its request times out (crate::corrupt_check).
    let early_clients = if config.initial_corrupt_check {
        None
    } else {
        Some(bind_clients(&config).await?)
    };
    let metrics_listeners = bind_all(&config.listen_metrics).await?;

    // One filesystem for the storage and the incarnation files, so both get the same
    // durability code (and the same fault injection in tests).
    let fs = hooks.file_system.clone();
    // A member that joined a running cluster (or is joining it now) is who the cluster
    // says, not who its flags would make it (crate::join).
    let joining = crate::join::prepare(&mut config, &*fs, tls.peer_client.clone()).await?;
    let joined = joining.joined();
    // Recover the data dir.
    let opts = StorageOptions::new(config.member_id, config.cluster_id);
    let (storage, recovered) = Storage::open(fs.clone(), &config.data_dir, &opts)
        .map_err(|e| anyhow::anyhow!("cannot open data dir {}: {e}", config.data_dir.display()))?;
    if let crate::join::Joining::Joining(j) = &joining {
        j.save(&*fs, &config.data_dir)?;
    }
    let bootstrap = ConfState {
        voters: config.initial_members.iter().map(|m| m.id).collect(),
        learners: vec![],
    };
    let (storage, mut recovered) = match (config.force_new_cluster, recovered.created) {
        (true, false) => crate::force_new_cluster::force(
            storage,
            recovered,
            config.member_id,
            config.cluster_id,
            &bootstrap,
        )?,
        (true, true) => {
            // etcd ignores the flag without a WAL, too: there is nothing to recover.
            warn!("--force-new-cluster has no effect on a new data dir: starting the cluster --initial-cluster describes");
            (storage, recovered)
        }
        (false, _) => (storage, recovered),
    };
    let incarnation = own_incarnation(&*fs, &config.data_dir.join(INCARNATION_FILE))?;
    let incarnations = Arc::new(Incarnations::load(
        fs.clone(),
        &config.data_dir.join(PEERS_FILE),
    )?);
    if recovered.created {
        // The incarnation authenticates this member to its peers on a plain peer port, so it
        // is never logged (issue 16's peer hardening).
        info!("initialised a new data dir");
    }
    let mut machine = MvccMachine::default();
    machine.incarnations = Some(incarnations.clone());
    machine.max_learners = config.max_learners;
    machine.seed_members(crate::members::MemberList::from_initial(
        &config.initial_members,
    ));
    machine.tokens = Arc::new(crate::auth::tokens::SimpleTokens::new(
        std::time::Duration::from_secs(config.auth.auth_token_ttl),
    ));
    let auth = Arc::new(crate::auth::Auth::new(
        &config.auth,
        machine.tokens.clone(),
        config.tls.client_cert_auth,
    )?);
    let (applied, applied_term) = match &recovered.snapshot {
        Some(s) => {
            machine.restore(&s.data)?;
            (s.meta.index, s.meta.term)
        }
        None => (0, 0),
    };
    if !recovered.created {
        info!(
            term = recovered.hard_state.term,
            commit = recovered.hard_state.commit,
            snapshot_index = applied,
            entries = recovered.entries.len(),
            "recovered from the data dir"
        );
    }
    // Members added by changes in the log after the snapshot: the node thread dials a member
    // when its addition is appended, which these entries are not again (crate::node).
    let added_in_log = crate::node::members_added_in(&recovered.entries);
    let initial = recovered.initial_state(bootstrap);
    // None for a new data dir: nothing of its own to check (etcd checks only members that
    // were initialised before this start).
    let recovered_commit = (!recovered.created).then_some(recovered.hard_state.commit);
    let mut raft_cfg = raft::Config::new(config.member_id);
    raft_cfg.election_tick = config.election_ticks;
    raft_cfg.election_jitter_tick = Some(config.election_jitter_ticks);
    raft_cfg.heartbeat_tick = config.heartbeat_ticks;
    raft_cfg.seed = config.member_id ^ incarnation;
    raft_cfg.pre_vote = config.pre_vote;
    let mut raft = RaftNode::new(raft_cfg, initial)
        .map_err(|e| anyhow::anyhow!("cannot start the raft core: {e:?}"))?;
    // The core's contract (`raft::RaftNode`'s docs): a member restarted from a snapshot
    // hands it to the core, which sends it to followers behind the log's start. Without it
    // a restarted leader could send them nothing until it took a snapshot of its own, never
    // on a quiet cluster (`tests/restart_snapshot.rs`). Mapped from the file, so the image
    // costs no heap; the copy read at open (checked, and restored from above) goes with
    // `recovered`, which would otherwise live, with the WAL tail, as long as this function:
    // the member's whole life.
    let image = match storage.map_snapshot() {
        Ok(Some(mapped)) => Some(mapped),
        Ok(None) => recovered.snapshot.take(),
        Err(e) => {
            warn!(error = %e, "cannot map the recovered snapshot; keeping the copy read at open");
            recovered.snapshot.take()
        }
    };
    if let Some(snapshot) = image {
        raft.compact(snapshot)
            .map_err(|e| anyhow::anyhow!("the raft core refused the recovered snapshot: {e:?}"))?;
    }
    drop(recovered);

    let watch_hub = machine.watch.clone();
    let lease_clock = machine.lessor.clone();
    let state = Arc::new(RwLock::new(machine));
    let (handle, inbox) = node::channel(
        config.member_id,
        config.cluster_id,
        state.clone(),
        config.request_timeout(),
    );
    let local = LocalIdentity {
        cluster_id: config.cluster_id,
        member_id: config.member_id,
        incarnation,
        name: config.name.clone(),
        client_urls: config.advertise_client_urls.clone(),
    };
    // The replicated list as of the recovered snapshot; changes after it reach the
    // transport as the node thread replays them.
    let (peers, removed): (Vec<(u64, Vec<String>)>, Vec<u64>) = {
        let sm = state
            .read()
            .map_err(|_| anyhow::anyhow!("state machine lock poisoned"))?;
        let list = &sm.members;
        // A joining member dials the members there were when it joined, at the URLs they
        // had then: its own list starts from the cluster's bootstrap members (whose URLs
        // may have changed since) until the log or a snapshot brings it up to date. Once it
        // holds a snapshot, that snapshot's list is newer than the join record: its URLs
        // win (a member update made before the snapshot is in no log entry replayed here).
        let joined_list = joined.map(|j| &j.current);
        let lists: Vec<&crate::members::MemberList> = if applied > 0 {
            std::iter::once(list).chain(joined_list).collect()
        } else {
            joined_list
                .into_iter()
                .chain(std::iter::once(list))
                .collect()
        };
        let mut peers: Vec<(u64, Vec<String>)> = Vec::new();
        let mut removed: Vec<u64> = Vec::new();
        for l in lists {
            for m in l.members().filter(|m| m.id != config.member_id) {
                if !peers.iter().any(|(id, _)| *id == m.id) {
                    peers.push((m.id, m.peer_urls.clone()));
                }
            }
            removed.extend(l.removed());
        }
        for (id, urls) in added_in_log {
            if id != config.member_id && !peers.iter().any(|(p, _)| *p == id) {
                peers.push((id, urls));
            }
        }
        (peers, removed)
    };
    // The transport spawns its diallers on the runtime current at its start.
    let transport = {
        let _on_peer_runtime = peer_runtime.enter();
        Transport::start_with_tls(
            local.clone(),
            &peers,
            handle.peer_sink(),
            shutdown.clone(),
            tls.peer_client.clone(),
        )
    };
    for id in removed {
        transport.remove_peer(id);
    }
    // Filled once the client services exist: a member asking to be added is added through
    // them (crate::auto_join).
    let cluster = Arc::new(std::sync::OnceLock::new());
    let acceptor = Arc::new(Acceptor {
        local,
        members: transport.peer_set(),
        incarnations,
        sink: handle.peer_sink(),
        commit: handle.status.commit.clone(),
        probes: Some(transport.clone()),
        join: Some(crate::join::lookup(
            config.cluster_id,
            crate::members::MemberList::from_initial(&config.initial_members),
            state.clone(),
        )),
        hash_kv: Some(hash_source(config.member_id, state.clone())),
        add_me: config
            .auto_join
            .then(|| crate::auto_join::handler(config.initial_members.clone(), cluster.clone())),
        applies: hooks.applies,
    });
    for (urls, l) in peer_listeners {
        let url = urls.join(",");
        let mode = match (schemes(&urls), &tls.peer_server) {
            ((true, false), Some(config)) => PeerListen::Tls(config.clone()),
            ((false, true), _) => PeerListen::Plain,
            ((true, true), _) => {
                anyhow::bail!(
                    "--listen-peer-urls: {url}: a peer port is either http:// or https://"
                )
            }
            _ => {
                anyhow::bail!("--listen-peer-urls: {url} is https:// but no peer TLS is configured")
            }
        };
        match &mode {
            PeerListen::Plain => {
                warn!(%url, "the peer port is plain TCP: anyone who can reach it can speak the peer protocol (use https:// peer URLs with --peer-client-cert-auth)")
            }
            PeerListen::Tls(_) if !config.tls.peer_client_cert_auth => {
                warn!(%url, "the peer port is TLS without --peer-client-cert-auth: any TLS client that can reach it can speak the peer protocol")
            }
            PeerListen::Tls(_) => {}
        }
        info!(%url, "listening for peers");
        // Registered again with the peer runtime's reactor, so that accepting and every
        // accepted connection run there alone.
        let l = {
            let _on_peer_runtime = peer_runtime.enter();
            TcpListener::from_std(l.into_std()?)?
        };
        peer_runtime.spawn(acceptor.clone().serve_with(l, mode, shutdown.clone()));
    }

    let params = NodeParams {
        id: config.member_id,
        cluster_id: config.cluster_id,
        raft,
        storage,
        state,
        applied,
        applied_term,
        tick: config.tick,
        election_timeout: config.election_timeout,
        request_timeout: config.request_timeout(),
        snapshot_count: config.snapshot_count,
        tick_interval: hooks.tick_interval.clone(),
    };
    let node_thread = node::spawn(params, &handle, inbox, transport.clone())?;
    let client_listeners = match early_clients {
        Some(l) => l,
        None => {
            let check = initial_corrupt_check(&config, &handle, &transport, recovered_commit);
            if let Err(e) = check.await {
                shutdown.cancel();
                handle.shutdown();
                return Err(e);
            }
            bind_clients(&config).await?
        }
    };
    let (node_done_tx, node_done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = node_thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("node thread panicked")));
        let _ = node_done_tx.send(r);
    });

    let ctx = Context {
        node: handle.clone(),
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        membership: Arc::new(Membership {
            members: config.initial_members.clone(),
            self_id: config.member_id,
            self_name: config.name.clone(),
            strict_reconfig_check: config.strict_reconfig_check,
            max_learners: config.max_learners,
        }),
        transport,
        quota: config.quota,
        auth,
        skip_read_index: hooks.skip_read_index,
        watch_sabotage: hooks.watch_sabotage,
        min_lease_ttl: crate::grpc::min_lease_ttl(config.election_timeout),
        lease_clock,
        election_timeout: config.election_timeout,
        keepalive_before_log: config.lease_keepalive_before_log,
        keep_alives: Arc::default(),
    };
    let _ = cluster.set(ClusterService(ctx.clone()));
    if let Some(after) = config.auto_remove_departed_after {
        tokio::spawn(crate::auto_remove::run(
            ClusterService(ctx.clone()),
            config.initial_members.iter().map(|m| m.id).collect(),
            after,
            shutdown.clone(),
        ));
    }
    let mut servers = Vec::new();
    for (urls, l) in client_listeners {
        let url = urls.join(",");
        let mode = client_mode(&urls, &tls)?;
        info!(%url, "serving client requests (gRPC and HTTP)");
        let watch = WatchService {
            ctx: ctx.clone(),
            hub: watch_hub.clone(),
            progress_interval: config.watch_progress_interval,
            election_timeout: config.election_timeout,
            max_watches: config.max_watches_per_stream,
        };
        servers.push(tokio::spawn(serve_client(
            ctx.clone(),
            watch,
            l,
            mode,
            ClientLimits::from(&config),
            shutdown.clone(),
        )));
    }
    let (published, on_published) = tokio::sync::oneshot::channel();
    tokio::spawn(crate::publish::run(
        handle.clone(),
        crate::publish::Attributes::new(config.name.clone(), config.advertise_client_urls.clone()),
        published,
        shutdown.clone(),
    ));
    tokio::spawn(crate::ready::announce(
        handle.clone(),
        config.name.clone(),
        config.advertise_client_urls.clone(),
        on_published,
        shutdown.clone(),
    ));
    tokio::spawn(crate::compactor::run(
        handle.clone(),
        config.auto_compaction,
        shutdown.clone(),
    ));
    if let Some(interval) = config.corrupt_check_interval {
        tokio::spawn(crate::corrupt_monitor::run(
            handle.clone(),
            ctx.transport.clone(),
            interval,
            config.request_timeout(),
            shutdown.clone(),
        ));
    }
    for (urls, l) in metrics_listeners {
        let url = urls.join(",");
        if schemes(&urls).0 {
            warn!(%url, "--listen-metrics-urls is served as plain HTTP (https:// is not served there)");
        }
        info!(%url, "serving HTTP health endpoints");
        let router = crate::http::router(ctx.clone());
        let stop = shutdown.clone();
        servers.push(tokio::spawn(async move {
            axum::serve(l, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(anyhow::Error::from)
        }));
    }

    let result = tokio::select! {
        _ = shutdown.cancelled() => {
            info!("shutting down");
            handle.shutdown();
            None
        }
        r = node_done => Some(r.unwrap_or_else(|_| Err(anyhow::anyhow!("node thread vanished")))),
    };
    shutdown.cancel();
    handle.shutdown();
    // Graceful close waits for clients to hang up; an idle HTTP/2 client never does.
    // Give in-flight calls a moment, then drop the connections.
    let drain = async {
        for s in &mut servers {
            let _ = s.await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        info!("closing remaining client connections");
        for s in &servers {
            s.abort();
        }
    }
    info!("member stopped");
    match result {
        Some(r) => r,
        None => Ok(()),
    }
}

/// gRPC and HTTP/1 on one listener, split as etcd's cmux splits them: HTTP/1.x requests
/// reach only the plain HTTP endpoints, HTTP/2 requests the gRPC services (and, when they
/// are not gRPC, the HTTP endpoints too). `ClientEdge` makes the split and answers unknown
/// methods and oversized messages as grpc-go does.
/// The client port's per-connection limits, from the configuration.
#[derive(Clone, Copy, Debug)]
struct ClientLimits {
    max_request_bytes: usize,
    max_concurrent_streams: u32,
    keepalive: (Option<std::time::Duration>, std::time::Duration),
    grpc_gateway: bool,
    /// `--enable-dashboard`.
    dashboard: bool,
}

impl From<&Config> for ClientLimits {
    fn from(c: &Config) -> ClientLimits {
        ClientLimits {
            max_request_bytes: c.max_request_bytes,
            max_concurrent_streams: c.max_concurrent_streams,
            keepalive: c.keepalive,
            grpc_gateway: c.grpc_gateway,
            dashboard: c.dashboard,
        }
    }
}

/// A bound client listener: a TCP port, or a unix socket with the guard that removes its
/// file when serving ends.
enum ClientSocket {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener, crate::unix_socket::SocketFile),
}

async fn serve_client(
    ctx: Context,
    watch: WatchService,
    listener: ClientSocket,
    mode: ClientListen,
    limits: ClientLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let max_request_bytes = limits.max_request_bytes;
    let (keepalive_interval, keepalive_timeout) = limits.keepalive;
    use proto::etcdserverpb::{
        auth_server::AuthServer, cluster_server::ClusterServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer,
    };
    let limit = max_request_bytes + GRPC_OVERHEAD_BYTES;
    let concurrency = crate::grpc::Concurrency {
        ctx: ctx.clone(),
        hub: watch.hub.clone(),
    };
    // etcd serves its JSON gateway (/v3/...) on the client port only, not the metrics URLs.
    let gateway_watch = WatchService {
        ctx: ctx.clone(),
        hub: watch.hub.clone(),
        progress_interval: watch.progress_interval,
        election_timeout: watch.election_timeout,
        max_watches: watch.max_watches,
    };
    let mut http = crate::http::router(ctx.clone());
    if limits.grpc_gateway {
        http = http.merge(crate::gateway::router(crate::gateway::Gateway::new(
            ctx.clone(),
            gateway_watch,
            concurrency.clone(),
            limit,
            limits.max_concurrent_streams,
        )));
    }
    // The dashboard is for people with a browser pointed at a client URL; like the gateway
    // it stays off the metrics URLs. Its key browser and watch tail call the gateway.
    if limits.dashboard {
        http = http.merge(crate::dashboard::router(ctx.clone()));
    }
    let routes = tonic::service::Routes::from(http.clone())
        .add_service(crate::grpc::KvGrpc::new(ctx.clone(), limit))
        .add_service(
            MaintenanceServer::new(MaintenanceService(ctx.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            ClusterServer::new(ClusterService(ctx.clone())).max_decoding_message_size(limit),
        )
        // Same receive limit everywhere, as grpc-go's is per server.
        .add_service(crate::grpc::WatchGrpc::new(watch, limit))
        .add_service(LeaseServer::new(LeaseService(ctx.clone())).max_decoding_message_size(limit))
        .add_service(
            AuthServer::new(crate::auth::AuthService(ctx.clone())).max_decoding_message_size(limit),
        )
        .add_service(
            proto::raftkvpb::peers_server::PeersServer::new(crate::grpc::PeersService(ctx.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            proto::v3lockpb::lock_server::LockServer::new(concurrency.clone())
                .max_decoding_message_size(limit),
        )
        .add_service(
            proto::v3electionpb::election_server::ElectionServer::new(concurrency)
                .max_decoding_message_size(limit),
        );
    use futures_util::StreamExt;
    let edge = crate::grpc::ClientEdge::new(routes, http);
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_keepalive_interval(keepalive_interval)
        .http2_keepalive_timeout(Some(keepalive_timeout));
    use crate::authority_fix::AuthorityFix;
    match (listener, mode) {
        (ClientSocket::Tcp(listener), ClientListen::Plain) => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(|conn| conn.map(AuthorityFix::new));
            server
                .serve_with_incoming_shutdown(edge, incoming, shutdown.cancelled_owned())
                .await?;
        }
        (ClientSocket::Tcp(listener), ClientListen::Tls { config, also_plain }) => {
            let incoming =
                crate::tls::client_port::incoming(listener, config, also_plain, shutdown.clone())
                    .map(|conn| conn.map(AuthorityFix::new));
            server
                .serve_with_incoming_shutdown(edge, incoming, shutdown.cancelled_owned())
                .await?;
        }
        (ClientSocket::Unix(listener, _file), ClientListen::Plain) => {
            let incoming =
                crate::unix_socket::incoming(&listener).map(|conn| conn.map(AuthorityFix::new));
            server
                .serve_with_incoming_shutdown(edge, incoming, shutdown.cancelled_owned())
                .await?;
        }
        (ClientSocket::Unix(listener, _file), ClientListen::Tls { config, .. }) => {
            let incoming =
                crate::tls::client_port::incoming_unix(listener, config, shutdown.clone())
                    .map(|conn| conn.map(AuthorityFix::new));
            server
                .serve_with_incoming_shutdown(edge, incoming, shutdown.cancelled_owned())
                .await?;
        }
    }
    Ok(())
}

/// How a client listener serves its connections.
enum ClientListen {
    Plain,
    /// TLS; with `also_plain`, plain connections too (told apart by their first byte).
    Tls {
        config: Arc<rustls::ServerConfig>,
        also_plain: bool,
    },
}

fn client_mode(urls: &[String], tls: &TlsSetup) -> anyhow::Result<ClientListen> {
    Ok(match (schemes(urls), &tls.client) {
        ((false, _), _) => ClientListen::Plain,
        ((true, also_plain), Some(config)) => ClientListen::Tls {
            config: config.clone(),
            also_plain,
        },
        ((true, _), None) => anyhow::bail!(
            "--listen-client-urls: {} is https:// or unixs:// but no client TLS is configured",
            urls.join(",")
        ),
    })
}
