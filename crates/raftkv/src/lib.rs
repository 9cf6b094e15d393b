//! # raftkv — the executable's library half
//!
//! Everything the `raftkv` binary does apart from serving: the etcdctl-like client commands,
//! the course demo, the foreground local cluster, and the process harness that the demo and
//! the integration tests share. It lives in a library so the tests in `tests/` can start
//! clusters (of raftkv or of a real etcd) and talk to them with exactly the code the demo uses.
//!
//! * [`cli`]: the command line (clap); [`commands`]: the client commands; [`output`]: printing
//!   in etcdctl's formats; [`txn_script`]: etcdctl's txn input format.
//! * [`client`]: the gRPC client with endpoint failover; [`cluster_view`]: leadership seen
//!   through `Status` (one leader per term).
//! * [`local_cluster`]: member processes on loopback; [`demo`] and [`cluster_cmd`] use it.

pub mod cli;
pub mod client;
pub mod cluster_cmd;
pub mod cluster_view;
pub mod commands;
pub mod demo;
pub mod local_cluster;
pub mod output;
pub mod txn_script;
