//! # raftkv-client — the one way our code talks to a cluster
//!
//! The CLI, the course demo, the bench tool, the Jepsen harness and the test suites all need
//! the same few things: dial an endpoint without hanging, find out who leads, decide which
//! errors may be retried (and where), and, for tests and local tools, start a cluster of real
//! member processes on loopback. Each of them used to carry its own copy; the copies drifted
//! (one retried `DEADLINE_EXCEEDED`, another did not; one agreed on a leader by term, another
//! did not). This crate is the single copy.
//!
//! * [`endpoint`]: endpoint strings and gRPC channels (dial timeout, lazy or eager).
//! * [`tls`]: `https://` endpoints with etcdctl's `--cacert`, `--cert`, `--key`,
//!   `--insecure-skip-tls-verify`.
//! * [`retry`]: which errors are retryable, which prove a request was not executed, backoff.
//! * [`client`]: [`Client`], etcd's KV/Maintenance/Cluster calls with endpoint failover.
//! * [`watch`]: etcd's Watch stream ([`Client::watch`]).
//! * [`leader`]: leadership seen through `Status` (agreement, one leader per term).
//! * [`converge`]: waiting until members hold the same data (`HashKV`).
//! * [`local_cluster`]: `raftkv server` (or etcd) member processes on 127.0.0.1.
//!
//! It speaks only the etcd v3 API, so everything here works against a real etcd as well,
//! which is how the differential tests use it.

pub mod client;
pub mod converge;
pub mod endpoint;
pub mod leader;
pub mod local_cluster;
pub mod retry;
pub mod tls;
pub mod watch;

pub use client::{prefix_range_end, CallError, Client, Timeouts};
pub use endpoint::parse_endpoints;
pub use watch::{WatchOptions, WatchStream};
