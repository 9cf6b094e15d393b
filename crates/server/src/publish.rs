//! A member publishes its own name and client URLs through the log, as etcd's `publish`
//! does: once it has a leader, and whenever the member list it applied holds other values
//! for it than its flags (`--name`, `--advertise-client-urls`). Every member applies the
//! entry to its member list (`crate::kv`), so `Cluster/MemberList` shows every started
//! member with its name and client URLs on every member, also while that member is down or
//! has never talked to the one answering.
//!
//! A member proposes only when the list differs from its flags after a read barrier (the
//! barrier says a leader is known and this member applied everything committed before it),
//! so a restart with unchanged flags adds nothing to the log. A refused or lost proposal is
//! tried again with a backoff. Afterwards the member keeps comparing the list it applies
//! with its flags (every [`WATCH`], locally, no traffic) and publishes again if they ever
//! differ. Learners and joiners publish like voters: a proposal made on a member that does
//! not lead is forwarded to the leader (`node::routing`), and a joiner waits until it has
//! applied its own addition (until then the list does not hold it).
//!
//! The first time the list holds this member's attributes, [`run`] tells `crate::ready`,
//! which logs etcd's start-up milestones ("published local member to cluster through
//! raft").

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest, MemberAttributes};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::kv::MvccMachine;
use crate::node::NodeHandle;

/// First wait after a failed attempt; doubled after every further failure up to
/// [`MAX_BACKOFF`]. Short: publishing is on every member's start-up path.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two attempts (no leader for a long time, a partition).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often a published member compares the list it applied with its flags.
const WATCH: Duration = Duration::from_secs(1);

/// What this member publishes about itself.
#[derive(Clone, Debug)]
pub struct Attributes {
    pub name: String,
    /// Sorted, as etcd publishes them (its URL lists are kept sorted), whatever the order
    /// of `--advertise-client-urls`.
    pub client_urls: Vec<String>,
}

impl Attributes {
    pub fn new(name: String, mut client_urls: Vec<String>) -> Attributes {
        client_urls.sort();
        Attributes { name, client_urls }
    }
}

/// Where this member stands against the list it has applied.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    /// The list holds our attributes.
    Published,
    /// The list holds us with other attributes.
    Differs,
    /// The list does not hold us yet (a joiner that has not applied its own addition).
    NotListed,
    /// We were removed: nothing to publish, ever.
    Removed,
}

fn standing(node: &NodeHandle<MvccMachine>, attrs: &Attributes) -> Option<Standing> {
    let sm = node.state.read().ok()?;
    let list = &sm.members;
    Some(if list.is_removed(node.id) {
        Standing::Removed
    } else if list.get(node.id).is_none() {
        Standing::NotListed
    } else if list.has_attributes(node.id, &attrs.name, &attrs.client_urls) {
        Standing::Published
    } else {
        Standing::Differs
    })
}

/// The entry that sets this member's attributes.
pub fn entry(id: u64, attrs: &Attributes) -> Bytes {
    Bytes::from(
        InternalRequest {
            auth: None,
            request: Some(Internal::MemberAttributes(MemberAttributes {
                member_id: id,
                name: attrs.name.clone(),
                client_urls: attrs.client_urls.clone(),
            })),
        }
        .encode_to_vec(),
    )
}

/// One attempt: `Ok(true)` once the list holds our attributes, `Ok(false)` to try again
/// after a backoff, `Err(())` when there is nothing more to do (removed, or stopping).
async fn attempt(node: &NodeHandle<MvccMachine>, attrs: &Attributes) -> Result<bool, ()> {
    if let Err(e) = node.read_barrier().await {
        debug!(error = %e, "cannot publish yet: no leader confirmed");
        return Ok(false);
    }
    match standing(node, attrs).ok_or(())? {
        Standing::Published => return Ok(true),
        Standing::Removed => return Err(()),
        Standing::NotListed => return Ok(false),
        Standing::Differs => {}
    }
    match node.propose(entry(node.id, attrs)).await {
        Ok(Ok(mvcc::Response::External(Ok(())))) => {}
        Ok(other) => debug!(answer = ?other.map(|_| ()), "attributes not applied"),
        Err(e) => debug!(error = %e, "attributes not committed"),
    }
    // Whatever the answer (the entry may have been applied although the answer was lost),
    // the list tells: check it again without waiting.
    Ok(standing(node, attrs).ok_or(())? == Standing::Published)
}

/// Publishes this member's attributes until `shutdown`, telling `published` the first time
/// the list holds them. Ends early if this member is removed.
pub async fn run(
    node: NodeHandle<MvccMachine>,
    attrs: Attributes,
    published: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut published = Some(published);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let done = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = attempt(&node, &attrs) => r,
        };
        let wait = match done {
            Err(()) => return,
            Ok(true) => {
                if let Some(tell) = published.take() {
                    info!(
                        name = %attrs.name,
                        client_urls = %attrs.client_urls.join(","),
                        "the member list holds this member's name and client URLs"
                    );
                    let _ = tell.send(());
                }
                backoff = FIRST_BACKOFF;
                // Published: watch the applied list, locally, until it differs.
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(WATCH) => {}
                    }
                    match standing(&node, &attrs) {
                        Some(Standing::Published) => {}
                        Some(Standing::Removed) | None => return,
                        Some(_) => break,
                    }
                }
                continue;
            }
            Ok(false) => {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry names this member and carries its client URLs sorted, whatever the flag's
    /// order (etcd lists them sorted).
    #[test]
    fn the_entry_carries_this_members_sorted_attributes() {
        let attrs = Attributes::new(
            "m1".into(),
            vec!["http://b:2379".into(), "http://a:2379".into()],
        );
        let decoded = InternalRequest::decode(entry(7, &attrs)).unwrap();
        assert_eq!(decoded.auth, None);
        let Some(Internal::MemberAttributes(a)) = decoded.request else {
            panic!("not a member_attributes entry: {decoded:?}");
        };
        assert_eq!(a.member_id, 7);
        assert_eq!(a.name, "m1");
        assert_eq!(a.client_urls, vec!["http://a:2379", "http://b:2379"]);
    }
}
