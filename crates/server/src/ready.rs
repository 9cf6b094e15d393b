//! etcd's start-up milestones, logged in etcd's words so that tools and test harnesses
//! written for etcd (its own e2e suite waits for "enabled capabilities for version" and
//! "published") know when the member is usable.
//!
//! etcd logs them once the member has published its attributes through Raft, the cluster
//! version is settled and the client listeners are up. raftkv publishes nothing through the
//! log (its membership is fixed at bootstrap, so every member already knows every other's
//! attributes) and has one cluster version, so the moment that means the same thing is the
//! first successful linearizable read barrier: a leader is known, it has committed an entry
//! of its term, and this member has applied everything committed before. Only then are the
//! lines printed, in etcd's order.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::kv::MvccMachine;
use crate::node::NodeHandle;

/// The cluster version raftkv reports (etcd 3.4's API).
pub const CLUSTER_VERSION: &str = "3.4";

/// How long to wait before asking again after a failed barrier (no leader yet, election
/// in progress). Short: this is on the start-up path of every member.
const RETRY: Duration = Duration::from_millis(50);

/// Wait for the member to be usable, then log the milestones. Returns early (printing
/// nothing) if `shutdown` fires first.
pub async fn announce(
    node: NodeHandle<MvccMachine>,
    name: String,
    client_urls: Vec<String>,
    shutdown: CancellationToken,
) {
    loop {
        let ok = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = node.read_barrier() => r.is_ok(),
        };
        if ok {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
    info!(
        local_member_id = format_args!("{:x}", node.id),
        local_member_name = %name,
        local_member_client_urls = %client_urls.join(","),
        cluster_id = format_args!("{:x}", node.cluster_id),
        "published local member to cluster through raft"
    );
    info!(
        cluster_version = CLUSTER_VERSION,
        "set initial cluster version"
    );
    info!(
        cluster_version = CLUSTER_VERSION,
        "enabled capabilities for version {CLUSTER_VERSION}"
    );
    info!("ready to serve client requests");
}
