//! etcd's Watch service, served by every member from its own applied state.
//!
//! * [`hub`]: the non-blocking hand-off from the node thread (every apply publishes its
//!   revision's events) to the streams, with etcd's victim scheme for slow consumers.
//! * [`stream`]: one gRPC stream — its watchers, catch-up from the MVCC history, progress
//!   notifications and requests, `hasleader`.
//! * [`response`]: per-watcher selection (range, filters, `prev_kv`) and fragmentation.
//! * [`encode`]: responses assembled from events encoded once per revision, and the gRPC
//!   codec that writes them.
//! * [`queue`]: the small bounded queues into and out of a stream's task.
//! * [`watchers`]: a stream's watchers by id (one inline, a map for more).
//! * [`span_index`]: the hub's interval tree of watched ranges.
//!
//! docs/watch.md describes the design and the etcd behaviours reproduced.

pub mod encode;
pub mod hub;
pub mod queue;
#[cfg(test)]
mod replay_tests;
mod response;
mod span_index;
pub mod stream;
mod watchers;

pub use hub::WatchHub;
pub use stream::StreamConfig;

/// etcd's default `--watch-progress-notify-interval`.
pub const DEFAULT_PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// `--max-watches-per-stream`'s default: far above what a client multiplexes on one stream
/// (Kubernetes' API server holds one watch per resource type and namespace filter), low
/// enough that one stream cannot hold an unbounded share of the member's memory.
pub const DEFAULT_MAX_WATCHES_PER_STREAM: usize = 100_000;
