//! # raftkv — the executable's library half
//!
//! Everything the `raftkv` binary does apart from serving: the etcdctl-like client commands,
//! the course demo, the foreground local cluster, and the process harness that the demo and
//! the integration tests share. It lives in a library so the tests in `tests/` can start
//! clusters (of raftkv or of a real etcd) with exactly the code the demo uses.

pub mod local_cluster;
