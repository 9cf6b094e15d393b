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
#[cfg(feature = "server")]
pub mod snapshot_cmd;
pub mod txn_script;
