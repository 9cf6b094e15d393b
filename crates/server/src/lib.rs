//! # server — one raftkv member
//!
//! This crate turns the pure Raft core (`raft`), the durable log (`storage`) and the etcd
//! state machine (`mvcc`) into a running member: it owns the command-line configuration
//! (etcd's flag names), the peer transport, the node runtime loop that drives the core's
//! `Ready` contract, and the client-facing etcd v3 gRPC and HTTP services.
//!
//! The binary crate (`raftkv`) only calls three things from here: [`ServerArgs`] (the
//! flags), [`validate`] (a dry run) and [`run`] (serve until SIGINT/SIGTERM). The Jepsen
//! harness's member calls [`run_with_hooks`] instead, with its faults in [`Hooks`].

pub mod admissions;
pub mod args;
pub mod auth;
pub mod authority_fix;
pub mod auto_join;
pub mod auto_remove;
pub mod backup;
pub mod compactor;
pub mod compat_args;
pub mod config;
pub mod config_file;
pub mod corrupt_check;
pub mod corrupt_monitor;
pub mod dashboard;
pub mod errors;
pub mod feature_gates;
pub mod flag_errors;
pub mod force_new_cluster;
pub mod gateway;
pub mod go_flags;
pub mod grpc;
pub mod hooks;
pub mod http;
pub mod ids;
pub mod join;
pub mod kv;
pub mod lease_clock;
pub mod lease_expiry;
pub mod logging;
pub mod members;
pub mod memory;
pub mod metrics;
pub mod newer_etcd_flags;
pub mod node;
pub mod publish;
pub mod quota;
pub mod ready;
pub mod restore;
pub mod server;
pub mod tls;
pub mod transport;
pub mod unix_socket;
pub mod watch;

pub use args::{adopt_etcd_env, ServerArgs};
pub use hooks::{Hooks, WatchSabotage};

/// Check a configuration without serving: flags parse, URLs are well formed, the
/// `--initial-cluster` is consistent with `--name` and the advertised peer URLs, and the
/// listen addresses can be bound. Returns a one-line error on the first problem.
pub fn validate(args: &ServerArgs) -> anyhow::Result<()> {
    if args.version {
        print_version();
        return Ok(());
    }
    let config = config::Config::from_args(args)?;
    tls::setup_for(&config, false)?;
    config.check_bindable()
}

/// Run a member until SIGINT or SIGTERM, then shut down cleanly. Builds its own tokio
/// runtime, so the caller needs none.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    run_with_hooks(args, Hooks::default())
}

/// [`run`], with other behaviour at the injection points of [`Hooks`]. Only a test harness
/// has a reason to call this; every shipped binary calls [`run`].
pub fn run_with_hooks(args: ServerArgs, hooks: Hooks) -> anyhow::Result<()> {
    if args.version {
        print_version();
        return Ok(());
    }
    let config = config::Config::from_args(&args)?;
    logging::init(&config.log)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Without the LIFO slot, a connection task woken by many finishing requests runs after
    // them and writes all their responses at once, instead of one write per response
    // (.cargo/config.toml sets the cfg; docs/performance.md has the figures).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = builder.enable_all().thread_name("raftkv-io").build()?;
    let peers = peer_runtime()?;
    let peer_handle = peers.handle().clone();
    let result = runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            on_signal.cancel();
        });
        server::serve_with_peer_runtime(config, hooks, shutdown, Some(peer_handle)).await
    });
    // Tasks still holding connections are dropped, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    peers.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// The peer transport's runtime: one worker thread, at the node thread's raised priority
/// (`node::priority`), so that Raft's traffic between members is never queued behind
/// client work on the client runtime's workers (`server::serve_with_peer_runtime`).
/// One thread is enough: per request the transport does a small share of a member's
/// work (framing entries, reading acknowledgements), and it is the share that keeps the
/// leader's heartbeats on time.
fn peer_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("raftkv-peer")
        .on_thread_start(|| node::priority::raise_current_thread("peer transport"))
        .enable_all()
        .build()?)
}

/// `--version`, in the shape of etcd's answer (the API version is the one the member speaks).
fn print_version() {
    println!("raftkv Version: {}", env!("CARGO_PKG_VERSION"));
    println!("API Version: {}", ready::CLUSTER_VERSION);
}

/// SIGINT (Ctrl-C) or SIGTERM (docker stop, Kubernetes).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
