//! The etcd v3 gRPC services on the client URL.
//!
//! * `KV`: writes become `InternalRequest` log entries and are answered from the local
//!   apply of that entry (on whichever member received them: followers forward the
//!   proposal to the leader and wait for their own apply); reads are served from the local
//!   store, after a ReadIndex round unless `serializable`.
//! * `Maintenance`: Status, Alarm GET, HashKV, MoveLeader (`move_leader.rs`). `Cluster`:
//!   MemberList from the replicated list, MemberRemove (`member_change.rs`).
//! * `Watch`: every member serves watches from its own applied state (`crate::watch`).
//! * `Lease`: grants, revocations and keep-alives through the log; docs/lease.md.
//! * `Auth`: `crate::auth::AuthService`; every service checks permissions (crate::auth).
//! * `v3lockpb.Lock`, `v3electionpb.Election`: etcd's recipes run on the server.
//! * `raftkvpb.Peers`: raftkv's own operator call, `raftkv peer admit` (`peers.rs`).
//! * Everything else (the rest of Maintenance and Cluster) answers
//!   `UNIMPLEMENTED` through the generated traits' defaults.
//! * [`ClientEdge`] sits in front of them all: HTTP/1.x only reaches the HTTP endpoints, and
//!   unknown methods and oversized messages get grpc-go's answers (`edge.rs`).

mod concurrency;
mod edge;
mod keep_alive_batch;
mod keep_alive_stream;
mod kv;
mod lease;
mod maintenance;
mod member_change;
mod methods;
mod move_leader;
mod peers;
mod watch;

use std::sync::Arc;

use proto::etcdserverpb::ResponseHeader;

use crate::kv::MvccMachine;
use crate::node::NodeHandle;
use crate::transport::Transport;

pub use concurrency::Concurrency;
pub use edge::ClientEdge;
pub use kv::{propose, KvGrpc, KvService};
pub use lease::LeaseService;
pub use maintenance::{ClusterService, MaintenanceService, Membership, UnimplementedService};
pub(crate) use member_change::{add_member, make_change};
pub use peers::PeersService;
pub use watch::{WatchGrpc, WatchService};

/// The version Status, /version and `etcd_server_version` report: etcd 3.4's API (the proto
/// raftkv serves), at 3.4.31, the first 3.4 patch release whose watch progress requests
/// Kubernetes trusts (it turns on consistent reads from its watch cache and WatchList only from
/// there). raftkv claims that level because its own Jepsen watch checker demands the
/// progress-request properties those releases fixed (docs/operations.md, "Reported version").
pub const ETCD_VERSION: &str = "3.4.31";
pub const CLUSTER_VERSION: &str = "3.4.0";

/// What every service needs.
#[derive(Clone)]
pub struct Context {
    pub node: NodeHandle<MvccMachine>,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub membership: Arc<Membership>,
    pub transport: Transport,
    /// `--quota-backend-bytes`, checked before a put or txn is proposed.
    pub quota: crate::quota::Quota,
    /// Users, tokens and the checks of every service (crate::auth).
    pub auth: Arc<crate::auth::Auth>,
    /// Linearizable reads without ReadIndex: the Jepsen harness's negative control only
    /// (`crate::hooks::Hooks::skip_read_index`); false in every shipped binary.
    pub skip_read_index: bool,
    /// Broken watch responses: the harness's negative control only
    /// (`crate::hooks::Hooks::watch_sabotage`); `None` in every shipped binary.
    pub watch_sabotage: crate::hooks::WatchSabotage,
    /// The shortest lease TTL granted, in seconds: etcd's ceil(1.5 × election timeout).
    pub min_lease_ttl: i64,
    /// This member's lease clock, shared with the state machine (`crate::lease_clock`):
    /// the leader answers keep-alives from it without waiting for the node thread.
    pub lease_clock: crate::lease_clock::LeaseClock,
    /// `--election-timeout`: how recently the node thread must have found this member
    /// leading for it to answer a keep-alive from its own clock (half of it).
    pub election_timeout: std::time::Duration,
    /// `--lease-keepalive-before-log`: answer keep-alives from the lease clock (off: every
    /// keep-alive is answered once its renewal is applied).
    pub keepalive_before_log: bool,
    /// Keep-alives waiting to share a log entry (`keep_alive_batch`).
    pub keep_alives: Arc<keep_alive_batch::KeepAliveQueue>,
}

impl Context {
    /// The state machine under its read lock (the local store, leases, auth, alarms); a
    /// poisoned lock (a panic while applying) is an internal error, not a second panic.
    pub fn state(&self) -> Result<std::sync::RwLockReadGuard<'_, MvccMachine>, tonic::Status> {
        self.node
            .state
            .read()
            .map_err(|_| tonic::Status::internal("state lock poisoned"))
    }
}

/// etcd's minimum lease TTL for an election timeout: ceil(1.5 × the timeout) in seconds, so
/// that a lease outlives the election that follows its leader's loss.
pub fn min_lease_ttl(election_timeout: std::time::Duration) -> i64 {
    let ms = election_timeout.as_millis() as i64;
    ((3 * ms + 1999) / 2000).max(1)
}

impl Context {
    /// A header stamped with this member's identity, the term and `revision` (the store's
    /// current revision when 0, as etcd's header filler does).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let revision = if revision == 0 {
            self.node
                .state
                .read()
                .map(|s| s.store.current_revision())
                .unwrap_or(0)
        } else {
            revision
        };
        ResponseHeader {
            cluster_id: self.node.cluster_id,
            member_id: self.node.id,
            revision,
            raft_term: self.node.status.term(),
        }
    }

    /// etcd's `hasleader` metadata: a client that set it (`WithRequireLeader`) wants an
    /// immediate "no leader" rather than a wait when this member knows of no leader.
    pub fn require_leader(&self, md: &tonic::metadata::MetadataMap) -> Result<(), tonic::Status> {
        let wants = md
            .get("hasleader")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "true");
        if wants && self.node.status.leader().is_none() {
            return Err(crate::errors::ServerError::NoLeader.into());
        }
        Ok(())
    }

    /// Fill in the identity parts of a header the store produced (it sets the revision).
    pub fn stamp(&self, header: &mut Option<ResponseHeader>) {
        let rev = header.as_ref().map(|h| h.revision).unwrap_or(0);
        *header = Some(self.header(rev));
    }
}
