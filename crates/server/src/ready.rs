//! etcd's start-up milestones, logged in etcd's words so that tools and test harnesses
//! written for etcd (its own e2e suite waits for "enabled capabilities for version" and
//! "published") know when the member is usable.
//!
//! etcd logs them once the member has published its attributes through Raft, the cluster
//! version is settled and the client listeners are up. raftkv publishes its name and client
//! URLs the same way (`crate::publish`) and has one cluster version, so the lines are
//! printed, in etcd's order, once the member list this member applied holds its attributes:
//! a leader was known, and this member's publication (now or at an earlier start) is
//! committed and applied here.

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::kv::MvccMachine;
use crate::node::NodeHandle;

/// The cluster version raftkv reports (etcd 3.4's API).
pub const CLUSTER_VERSION: &str = "3.4";

/// Wait for the member to be published (`published`, from `crate::publish::run`), then log
/// the milestones. Returns early (printing nothing) if `shutdown` fires first, or if the
/// member never publishes (it was removed).
pub async fn announce(
    node: NodeHandle<MvccMachine>,
    name: String,
    client_urls: Vec<String>,
    published: oneshot::Receiver<()>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        r = published => if r.is_err() { return },
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
