//! # raftkv — the executable's library half
//!
//! Everything the `raftkv` binary does apart from serving: the etcdctl-like client commands,
//! the course demo and the foreground local cluster. Talking to a cluster and starting member
//! processes is `raftkv-client`'s job, shared with the bench tool, the Jepsen harness and the
//! tests, so the demo and the tests in `tests/` use exactly the same client code.
//!
//! * [`cli`]: the command line (clap); [`commands`]: the client commands; [`output`]: printing
//!   in etcdctl's formats; [`txn_script`]: etcdctl's txn input format.
//! * [`auth_cmd`]: `user`, `role` and `auth`, etcd's Auth service.
//! * [`demo`] and [`cluster_cmd`]: clusters of member processes started with
//!   `raftkv_client::local_cluster`.
//! * [`member_cmd`]: `member …`, etcd's Cluster service.

/// One call of `$service` (a generated gRPC client) with the client's endpoint failover and its
/// auth token; an error becomes etcd's message, as etcdctl prints it.
macro_rules! rpc {
    ($client:expr, $service:ident, $method:ident, $req:expr) => {{
        let c: &raftkv_client::Client = &$client;
        let req = $req;
        c.with_failover(|ch| {
            let request = c.request(req.clone());
            async move { $service::new(ch).$method(request).await }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
    }};
}

pub mod auth_cmd;
pub mod cli;
pub mod cluster_cmd;
pub mod commands;
pub mod demo;
pub mod endpoint_cmd;
pub mod lease_cmd;
pub mod lock_elect;
pub mod member_cmd;
pub mod output;
pub mod peer_cmd;
#[cfg(feature = "server")]
pub mod snapshot_cmd;
pub mod txn_script;
