//! # server — one raftkv member
//!
//! This crate turns the pure Raft core (`raft`), the durable log (`storage`) and the etcd
//! state machine (`mvcc`) into a running member: it owns the command-line configuration
//! (etcd's flag names), the peer transport, the node runtime loop that drives the core's
//! `Ready` contract, and the client-facing etcd v3 gRPC and HTTP services.
//!
//! The binary crate (`raftkv`) only calls three things from here: [`ServerArgs`] (the
//! flags), [`validate`] (a dry run) and [`run`] (serve until SIGINT/SIGTERM).

pub mod args;
pub mod config;
pub mod ids;
pub mod transport;

pub use args::ServerArgs;

/// Check a configuration without serving: flags parse, URLs are well formed, the
/// `--initial-cluster` is consistent with `--name` and the advertised peer URLs, and the
/// listen addresses can be bound. Returns a one-line error on the first problem.
pub fn validate(args: &ServerArgs) -> anyhow::Result<()> {
    let config = config::Config::from_args(args)?;
    config.check_bindable()
}

/// Run a member until SIGINT or SIGTERM, then shut down cleanly. Builds its own tokio
/// runtime, so the caller needs none.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    validate(&args)?;
    anyhow::bail!("the member runtime is not built yet")
}
