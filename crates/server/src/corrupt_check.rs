//! `--experimental-initial-corrupt-check`: before serving clients, a restarted member
//! compares its history with its peers' and refuses to start if one of them holds a
//! different history up to the same revision (etcd's `CheckInitialHashKV`).
//!
//! What is compared: this member's HashKV at its current revision R (after replaying its
//! own log, so R is what it will serve), and each peer's HashKV *at R*. Two members that
//! applied the same committed entries hash alike at every revision they both hold, so a
//! difference means one of them stores something the log never said. As in etcd:
//!
//! - a member with a new data dir is not checked (it has no history of its own);
//! - a peer whose compaction revision differs cannot be compared (the hash covers history
//!   since the compaction) and is skipped with a warning;
//! - a peer that is behind R ("future revision"), has compacted past R, or cannot be
//!   reached is skipped with a warning: the check never stops a member because a peer is
//!   down, so members that start together all pass;
//! - one peer with the same compaction revision and a different hash is enough: start-up
//!   stops with etcd's error, `<member id> found data inconsistency with peers`.
//!
//! How the peers are asked: etcd 3.4.23 asks each peer's peer URL (`POST /members/hashkv`)
//! through its peer transport, so with the peer TLS configuration, and that endpoint needs
//! no authentication. raftkv asks over its peer connection the same way
//! (`crate::transport::hash_kv`): peer TLS protects it and no client credentials are
//! involved, so the check works with `https://` or unix-socket-only client URLs and with
//! authentication enabled. The peers are the members of the replicated member list; the
//! member first waits, up to etcd's request timeout, until its transport has reached every
//! peer. A peer of an older build, which does not answer on the peer connection, is asked
//! with `Maintenance/HashKV` over its `http://` client URLs (the ones it announced in its
//! handshake), and skipped with a warning if it has none or demands authentication. The
//! log says which peers were skipped and why.

use std::time::Duration;

use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::HashKvRequest;
use tracing::{info, warn};

use crate::transport::Transport;

/// This member's side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalHash {
    pub hash: u32,
    pub revision: i64,
    pub compact_revision: i64,
}

/// What one peer answered for HashKV at the local revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAnswer {
    Hash {
        member_id: u64,
        hash: u32,
        revision: i64,
        compact_revision: i64,
        /// The peer's current revision (its answer's header), which the periodic check
        /// compares with the leader's.
        current_revision: i64,
    },
    /// The peer has not reached the revision yet.
    FutureRevision,
    /// The peer compacted past the revision.
    Compacted,
    /// No URL answered (each failure was logged when it happened).
    Unreachable(String),
}

/// The comparison's outcome for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Same,
    /// Same compaction revision, different hash: the histories differ.
    Mismatch,
    /// Different hashes, but over different compacted ranges: not comparable.
    CompactDiffers,
    /// The peer could not hash at the local revision (behind, compacted, unreachable).
    Skipped,
}

/// Judge one peer's answer against the local hash (etcd's rules; see the module doc).
pub fn judge(local: &LocalHash, peer: &PeerAnswer) -> Verdict {
    match peer {
        PeerAnswer::Hash {
            hash,
            compact_revision,
            ..
        } => {
            if *hash == local.hash {
                Verdict::Same
            } else if *compact_revision == local.compact_revision {
                Verdict::Mismatch
            } else {
                Verdict::CompactDiffers
            }
        }
        PeerAnswer::FutureRevision | PeerAnswer::Compacted | PeerAnswer::Unreachable(_) => {
            Verdict::Skipped
        }
    }
}

/// A peer to ask: its id and published client URLs.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: u64,
    pub client_urls: Vec<String>,
}

/// Ask every peer (concurrently) and judge the answers. `Err` with etcd's text when a
/// peer's history differs; every skipped or differing peer is logged in etcd's words.
pub async fn check(
    member_id: u64,
    local: LocalHash,
    peers: Vec<Peer>,
    timeout: Duration,
    transport: Option<Transport>,
) -> anyhow::Result<()> {
    info!(
        local_member_id = format_args!("{member_id:x}"),
        timeout = ?timeout,
        "starting initial corruption check"
    );
    let asks: Vec<_> = peers
        .into_iter()
        .map(|p| {
            let transport = transport.clone();
            tokio::spawn(async move {
                let answer =
                    ask_peer(member_id, &p, local.revision, timeout, transport.as_ref()).await;
                (p, answer)
            })
        })
        .collect();
    let mut mismatches = 0;
    for ask in asks {
        let (peer, answer) = ask.await?;
        let verdict = judge(&local, &answer);
        let endpoints = peer.client_urls.join(",");
        match (&answer, verdict) {
            (_, Verdict::Same) => {}
            (
                PeerAnswer::Hash {
                    member_id: remote,
                    hash,
                    revision,
                    compact_revision,
                    ..
                },
                v,
            ) => {
                let msg = if v == Verdict::Mismatch {
                    mismatches += 1;
                    "found different hash values from remote peer"
                } else {
                    "found different compact revision values from remote peer"
                };
                warn!(
                    local_member_id = format_args!("{member_id:x}"),
                    local_member_revision = local.revision,
                    local_member_compact_revision = local.compact_revision,
                    local_member_hash = local.hash,
                    remote_peer_id = format_args!("{remote:x}"),
                    remote_peer_endpoints = %endpoints,
                    remote_peer_revision = revision,
                    remote_peer_compact_revision = compact_revision,
                    remote_peer_hash = hash,
                    "{msg}"
                );
            }
            (PeerAnswer::FutureRevision, _) => warn!(
                local_member_id = format_args!("{member_id:x}"),
                local_member_revision = local.revision,
                remote_peer_id = format_args!("{:x}", peer.id),
                remote_peer_endpoints = %endpoints,
                "cannot fetch hash from slow remote peer"
            ),
            (PeerAnswer::Compacted, _) => warn!(
                local_member_id = format_args!("{member_id:x}"),
                local_member_revision = local.revision,
                remote_peer_id = format_args!("{:x}", peer.id),
                remote_peer_endpoints = %endpoints,
                "cannot fetch hash from remote peer; local member is behind"
            ),
            (PeerAnswer::Unreachable(why), _) => warn!(
                local_member_id = format_args!("{member_id:x}"),
                remote_peer_id = format_args!("{:x}", peer.id),
                remote_peer_endpoints = %endpoints,
                reason = %why,
                "skipped the corruption check against a peer that did not answer"
            ),
        }
    }
    if mismatches > 0 {
        anyhow::bail!("{member_id:x} found data inconsistency with peers");
    }
    info!(
        local_member_id = format_args!("{member_id:x}"),
        "initial corruption checking passed; no corruption"
    );
    Ok(())
}

/// HashKV at `revision` from the peer: over the peer connection when the peer answers
/// there (`crate::transport::hash_kv`, as etcd asks its peers' peer URLs), else from the
/// first of its `http://` client URLs that answers (a peer of an older build).
pub(crate) async fn ask_peer(
    member_id: u64,
    peer: &Peer,
    revision: i64,
    timeout: Duration,
    transport: Option<&Transport>,
) -> PeerAnswer {
    if let Some(t) = transport {
        if let Some(result) = t.hash_kv(peer.id, revision, timeout).await {
            return match result {
                Ok(h) => PeerAnswer::Hash {
                    member_id: h.member_id,
                    hash: h.hash,
                    revision: h.hash_revision,
                    compact_revision: h.compact_revision,
                    current_revision: h.current_revision,
                },
                Err(e) if e.contains("future revision") => PeerAnswer::FutureRevision,
                Err(e) if e.contains("has been compacted") => PeerAnswer::Compacted,
                Err(e) => {
                    warn!(
                        local_member_id = format_args!("{member_id:x}"),
                        requested_revision = revision,
                        remote_peer_id = format_args!("{:x}", peer.id),
                        error = %e,
                        "failed hash kv request"
                    );
                    PeerAnswer::Unreachable(e)
                }
            };
        }
    }
    let mut last = "the peer has published no client URL".to_string();
    for url in &peer.client_urls {
        if !url.starts_with("http://") {
            last = format!("{url}: only http:// client URLs are dialled for this check");
            continue;
        }
        let call = async {
            let channel = raftkv_client::endpoint::connect(url, timeout)
                .await
                .map_err(|e| format!("{e:#}"))?;
            MaintenanceClient::new(channel)
                .hash_kv(HashKvRequest { revision })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| {
                    if s.message().contains("future revision") {
                        return "future".to_string();
                    }
                    if s.message().contains("has been compacted") {
                        return "compacted".to_string();
                    }
                    s.message().to_string()
                })
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        match result {
            Ok(r) => {
                let header = r.header.unwrap_or_default();
                return PeerAnswer::Hash {
                    member_id: if header.member_id == 0 {
                        peer.id
                    } else {
                        header.member_id
                    },
                    hash: r.hash,
                    revision: r.hash_revision,
                    compact_revision: r.compact_revision,
                    current_revision: header.revision,
                };
            }
            Err(e) if e == "future" => return PeerAnswer::FutureRevision,
            Err(e) if e == "compacted" => return PeerAnswer::Compacted,
            Err(e) => {
                warn!(
                    local_member_id = format_args!("{member_id:x}"),
                    requested_revision = revision,
                    remote_peer_endpoint = %url,
                    error = %e,
                    "failed hash kv request"
                );
                last = e;
            }
        }
    }
    PeerAnswer::Unreachable(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: LocalHash = LocalHash {
        hash: 7,
        revision: 20,
        compact_revision: 5,
    };

    fn answer(hash: u32, compact_revision: i64) -> PeerAnswer {
        PeerAnswer::Hash {
            member_id: 2,
            hash,
            revision: 20,
            compact_revision,
            current_revision: 20,
        }
    }

    #[test]
    fn a_different_hash_over_the_same_compaction_is_a_mismatch() {
        assert_eq!(judge(&LOCAL, &answer(7, 5)), Verdict::Same);
        assert_eq!(judge(&LOCAL, &answer(8, 5)), Verdict::Mismatch);
    }

    #[test]
    fn different_compactions_and_missing_answers_are_skipped_not_failed() {
        assert_eq!(judge(&LOCAL, &answer(8, 6)), Verdict::CompactDiffers);
        // Same hash is the same history, whatever the compaction says.
        assert_eq!(judge(&LOCAL, &answer(7, 6)), Verdict::Same);
        for skipped in [
            PeerAnswer::FutureRevision,
            PeerAnswer::Compacted,
            PeerAnswer::Unreachable("refused".into()),
        ] {
            assert_eq!(judge(&LOCAL, &skipped), Verdict::Skipped);
        }
    }

    #[tokio::test]
    async fn unreachable_peers_never_fail_the_check() {
        // A port nothing listens on (bound, then released) and a peer with no URLs.
        let port = raftkv_client::local_cluster::free_loopback_ports(1).unwrap()[0];
        let peers = vec![
            Peer {
                id: 2,
                client_urls: vec![format!("http://127.0.0.1:{port}")],
            },
            Peer {
                id: 3,
                client_urls: vec![],
            },
        ];
        check(1, LOCAL, peers, Duration::from_secs(2), None)
            .await
            .unwrap();
    }
}
