//! `--experimental-corrupt-check-time`: while it leads, a member compares its store's hash
//! with every follower's at the same revision once per interval, and raises the CORRUPT
//! alarm through the log when one differs (etcd 3.4's `monitorKVHash` / `checkHashKV`).
//!
//! One round, as etcd does it: hash the local store at its current revision R (hash H,
//! compaction C); ask each peer for HashKV at R (`crate::corrupt_check::ask_peer`, over the
//! peers' client URLs); wait for a linearizable read barrier; hash again (H2 at R2, C2). Then:
//!
//! - H2 ≠ H although R2 = R and C2 = C: the leader's own store changed under it, so the
//!   leader is the suspect;
//! - a peer whose current revision is past R2, or whose compaction is past C2, holds what
//!   the leader never committed: that peer is the suspect;
//! - a peer with compaction C and a hash other than H stores a different history: suspect.
//!
//! A peer that cannot answer at R (behind, compacted past it, unreachable) is skipped, as
//! in etcd. The first suspect of a round gets the alarm (`AlarmRequest { member_id,
//! ACTIVATE, CORRUPT }`, proposed like any write), after which every member refuses every
//! request but alarms with `etcdserver: corrupt cluster` (`mvcc::alarm`). The rules are the
//! pure [`suspects`]; this module's loop only gathers the inputs and proposes the alarm.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::corrupt_check::{ask_peer, LocalHash, Peer, PeerAnswer};
use crate::kv::MvccMachine;
use crate::node::NodeHandle;
use crate::transport::Transport;

/// Why a member is suspected of holding a corrupt store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspicion {
    /// The leader's hash changed between two reads at the same revision.
    LeaderHashChanged,
    /// A follower's current revision is past the leader's.
    FollowerRevisionAhead,
    /// A follower's compaction revision is past the leader's.
    FollowerCompactionAhead,
    /// Same compaction revision as the leader's, different hash.
    HashDiffers,
}

impl Suspicion {
    /// etcd's log message for it.
    pub fn message(self) -> &'static str {
        match self {
            Suspicion::LeaderHashChanged => "found hash mismatch",
            Suspicion::FollowerRevisionAhead => {
                "revision from follower must be less than or equal to leader's"
            }
            Suspicion::FollowerCompactionAhead => {
                "compact revision from follower must be less than or equal to leader's"
            }
            Suspicion::HashDiffers => "same compact revision then hashes must match",
        }
    }
}

/// One peer's answer, reduced to what the rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHash {
    pub member_id: u64,
    pub hash: u32,
    pub compact_revision: i64,
    /// The peer's current revision.
    pub current_revision: i64,
}

/// etcd's rules (see the module doc): the suspects of one round, in the order found. The
/// first one is alarmed.
pub fn suspects(
    leader_id: u64,
    before: &LocalHash,
    after: &LocalHash,
    peers: &[PeerHash],
) -> Vec<(u64, Suspicion)> {
    let mut out = Vec::new();
    if after.hash != before.hash
        && after.revision == before.revision
        && after.compact_revision == before.compact_revision
    {
        out.push((leader_id, Suspicion::LeaderHashChanged));
    }
    for p in peers {
        if p.current_revision > after.revision {
            out.push((p.member_id, Suspicion::FollowerRevisionAhead));
        }
        if p.compact_revision > after.compact_revision {
            out.push((p.member_id, Suspicion::FollowerCompactionAhead));
        }
        if p.compact_revision == before.compact_revision && p.hash != before.hash {
            out.push((p.member_id, Suspicion::HashDiffers));
        }
    }
    out
}

/// The local store's hash at its current revision.
fn local_hash(node: &NodeHandle<MvccMachine>) -> anyhow::Result<LocalHash> {
    // An O(1) view under the lock; the hash walks the whole store, outside it.
    let store = node
        .state
        .read()
        .map_err(|_| anyhow::anyhow!("state machine lock poisoned"))?
        .store
        .view();
    let h = store.hash_kv(0).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(LocalHash {
        hash: h.hash,
        revision: h.hash_revision,
        compact_revision: h.compact_revision,
    })
}

/// The other members of the replicated list, with the client URLs they published.
fn peers(node: &NodeHandle<MvccMachine>) -> anyhow::Result<Vec<Peer>> {
    Ok(node
        .state
        .read()
        .map_err(|_| anyhow::anyhow!("state machine lock poisoned"))?
        .members
        .members()
        .filter(|m| m.id != node.id)
        .map(|m| Peer {
            id: m.id,
            client_urls: m.client_urls.clone(),
        })
        .collect())
}

/// The outcome of one round, for the counter `raftkv_corruption_checks_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Every peer compared, nothing suspect.
    Passed,
    /// Nothing suspect, but some peer could not be compared.
    Incomplete,
    /// A suspect was found and alarmed.
    Mismatch,
}

impl Round {
    pub fn label(self) -> &'static str {
        match self {
            Round::Passed => "passed",
            Round::Incomplete => "incomplete",
            Round::Mismatch => "mismatch",
        }
    }
}

/// One round of the check (the caller leads).
async fn check_once(
    node: &NodeHandle<MvccMachine>,
    transport: &Transport,
    timeout: Duration,
) -> anyhow::Result<Round> {
    let before = local_hash(node)?;
    let asks: Vec<_> = peers(node)?
        .into_iter()
        .map(|p| {
            let (id, transport) = (node.id, transport.clone());
            tokio::spawn(async move {
                ask_peer(id, &p, before.revision, timeout, Some(&transport)).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut skipped = 0;
    for ask in asks {
        match ask.await? {
            PeerAnswer::Hash {
                member_id,
                hash,
                compact_revision,
                current_revision,
                ..
            } => answers.push(PeerHash {
                member_id,
                hash,
                compact_revision,
                current_revision,
            }),
            other => {
                debug!(answer = ?other, "corruption check: a peer could not be compared");
                skipped += 1;
            }
        }
    }
    node.read_barrier()
        .await
        .map_err(|e| anyhow::anyhow!("linearizable read: {e}"))?;
    let after = local_hash(node)?;
    let found = suspects(node.id, &before, &after, &answers);
    for (id, why) in &found {
        let peer = answers.iter().find(|p| p.member_id == *id);
        warn!(
            leader_revision = after.revision,
            leader_compact_revision = before.compact_revision,
            leader_hash = before.hash,
            suspect_member_id = format_args!("{id:x}"),
            follower_revision = peer.map(|p| p.current_revision),
            follower_compact_revision = peer.map(|p| p.compact_revision),
            follower_hash = peer.map(|p| p.hash),
            "{}",
            why.message()
        );
    }
    let Some(&(suspect, _)) = found.first() else {
        return Ok(if skipped == 0 {
            Round::Passed
        } else {
            Round::Incomplete
        });
    };
    let alarm = InternalRequest {
        auth: None,
        request: Some(Internal::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: suspect,
            alarm: AlarmType::Corrupt as i32,
        })),
    };
    match node.propose(Bytes::from(alarm.encode_to_vec())).await {
        Ok(_) => warn!(
            member_id = format_args!("{suspect:x}"),
            "raised the CORRUPT alarm"
        ),
        Err(e) => warn!(error = %e, "cannot raise the CORRUPT alarm"),
    }
    Ok(Round::Mismatch)
}

/// Check every `interval` while this member leads, until `shutdown`.
pub async fn run(
    node: NodeHandle<MvccMachine>,
    transport: Transport,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    info!(
        local_member_id = format_args!("{:x}", node.id),
        interval = ?interval,
        "enabled corruption checking"
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if node.status.leader() != Some(node.id) {
            continue;
        }
        match check_once(&node, &transport, timeout).await {
            Ok(round) => crate::metrics::metrics().corruption_check(round.label()),
            Err(e) => warn!(error = %format!("{e:#}"), "failed to check hash KV"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: u64 = 1;
    const AT_20: LocalHash = LocalHash {
        hash: 7,
        revision: 20,
        compact_revision: 5,
    };

    fn peer(id: u64, hash: u32, compact: i64, current: i64) -> PeerHash {
        PeerHash {
            member_id: id,
            hash,
            compact_revision: compact,
            current_revision: current,
        }
    }

    #[test]
    fn equal_hashes_raise_nothing() {
        let peers = [peer(2, 7, 5, 20), peer(3, 7, 5, 19)];
        assert!(suspects(LEADER, &AT_20, &AT_20, &peers).is_empty());
        // Writes between the two local hashes move the revision: not a leader mismatch.
        let later = LocalHash {
            hash: 9,
            revision: 22,
            compact_revision: 5,
        };
        assert!(suspects(LEADER, &AT_20, &later, &peers).is_empty());
    }

    #[test]
    fn a_follower_with_another_history_is_the_suspect() {
        let peers = [peer(2, 7, 5, 20), peer(3, 8, 5, 20)];
        assert_eq!(
            suspects(LEADER, &AT_20, &AT_20, &peers),
            vec![(3, Suspicion::HashDiffers)]
        );
        // A different compaction makes the hashes incomparable.
        assert!(suspects(LEADER, &AT_20, &AT_20, &[peer(3, 8, 4, 20)]).is_empty());
    }

    #[test]
    fn a_follower_ahead_of_the_leader_is_the_suspect() {
        assert_eq!(
            suspects(LEADER, &AT_20, &AT_20, &[peer(2, 7, 5, 21)]),
            vec![(2, Suspicion::FollowerRevisionAhead)]
        );
        assert_eq!(
            suspects(LEADER, &AT_20, &AT_20, &[peer(2, 3, 6, 20)]),
            vec![(2, Suspicion::FollowerCompactionAhead)]
        );
    }

    #[test]
    fn a_leader_whose_hash_changed_at_the_same_revision_suspects_itself() {
        let changed = LocalHash { hash: 8, ..AT_20 };
        assert_eq!(
            suspects(LEADER, &AT_20, &changed, &[]),
            vec![(LEADER, Suspicion::LeaderHashChanged)]
        );
    }
}
