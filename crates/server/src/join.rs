//! Joining a running cluster: `--initial-cluster-state existing` with an empty data dir.
//!
//! `member add` gave the new member a random id, and the cluster's id is the hash of its
//! founders' ids, so neither follows from the new member's flags. Before it creates its
//! data dir the new member asks the members listed in `--initial-cluster`
//! ([`crate::transport::ask_join`], a [`Frame::JoinQuery`] instead of a handshake) which of
//! them has its `--initial-advertise-peer-urls`, as etcd fetches `/members` from its peers.
//! The answer ([`JoinFound`]) names its id, the cluster's id, the members now, and the
//! cluster's *bootstrap* members: the configuration the cluster's log starts from (the
//! founders' `--initial-cluster`, which no log entry records). The joiner starts its Raft
//! core and its member list from that base, exactly as the founders did, so whatever the
//! leader sends it (the log from its first entry, or a snapshot) rebuilds the same
//! configuration; it dials the members there are now. A member the cluster does not list
//! is refused, and nothing in this path ever bootstraps a cluster.
//!
//! The answer is kept in the data dir ([`JOIN_FILE`]): restarted, the member takes its
//! identity and base from there rather than from its flags.
//!
//! [`Frame::JoinQuery`]: crate::transport::Frame::JoinQuery

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::FileSystem;
use tracing::{info, warn};

use crate::config::{Config, InitialMember};
use crate::kv::MvccMachine;
use crate::members::MemberList;
use crate::transport::{JoinFound, JoinLookup};

/// The file in the data dir that records how this member joined.
pub const JOIN_FILE: &str = "raftkv.join";

const MAGIC: &[u8; 8] = b"RKVJOIN1";

/// How long a joining member keeps asking the listed members before it gives up (they may
/// be starting, or the leader busy).
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(15);

/// Pause between two rounds over the listed members.
const DISCOVERY_RETRY: Duration = Duration::from_millis(250);

/// Who this member is in the cluster it joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The cluster's bootstrap members (its log's starting configuration).
    pub base: MemberList,
    /// The members when it joined.
    pub current: MemberList,
}

impl Joined {
    fn from_found(found: &JoinFound) -> anyhow::Result<Joined> {
        let list = |b: &Bytes| MemberList::decode(b).map_err(|e| anyhow::anyhow!("{e}"));
        Ok(Joined {
            cluster_id: found.cluster_id,
            member_id: found.member_id,
            base: list(&found.base)?,
            current: list(&found.current)?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.member_id.to_le_bytes());
        for list in [&self.base, &self.current] {
            let bytes = list.encode();
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    fn decode(data: &[u8]) -> anyhow::Result<Joined> {
        let rest = data
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| anyhow::anyhow!("not a join record"))?;
        let mut r = rest;
        let u64_le = |r: &mut &[u8]| -> anyhow::Result<u64> {
            if r.len() < 8 {
                anyhow::bail!("truncated join record");
            }
            let (head, tail) = r.split_at(8);
            *r = tail;
            Ok(u64::from_le_bytes(head.try_into().expect("8 bytes")))
        };
        let cluster_id = u64_le(&mut r)?;
        let member_id = u64_le(&mut r)?;
        let mut lists = Vec::new();
        for _ in 0..2 {
            let len = u64_le(&mut r)?;
            if len > r.len() as u64 {
                anyhow::bail!("truncated join record");
            }
            let (list, tail) = r.split_at(len as usize);
            r = tail;
            lists.push(MemberList::decode(list).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        let current = lists.pop().expect("two lists");
        let base = lists.pop().expect("two lists");
        Ok(Joined {
            cluster_id,
            member_id,
            base,
            current,
        })
    }

    /// The join record of the data dir `dir`, if this member joined a running cluster.
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> anyhow::Result<Option<Joined>> {
        let path = dir.join(JOIN_FILE);
        if !fs.exists(&path)? {
            return Ok(None);
        }
        let data = fs.read(&path)?;
        Joined::decode(&data)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Record it in the data dir, durably, right after the storage was made there (a
    /// crash in between leaves a data dir whose identity does not match the flags: the
    /// member then refuses to start rather than guess).
    pub fn save(&self, fs: &dyn FileSystem, dir: &Path) -> anyhow::Result<()> {
        storage::write_file_atomically(fs, &dir.join(JOIN_FILE), &self.encode())
            .map_err(|e| anyhow::anyhow!("cannot record the join in {}: {e}", dir.display()))
    }

    /// Make `config` this member's: its id, the cluster's, and the bootstrap members (which
    /// seed the Raft configuration and the member list, as the founders' flags do theirs).
    pub fn apply_to(&self, config: &mut Config) {
        config.member_id = self.member_id;
        config.cluster_id = self.cluster_id;
        config.initial_members = self
            .base
            .members()
            .map(|m| InitialMember {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
            })
            .collect();
    }
}

/// How this member came to be in its cluster, as far as its start-up cares.
pub enum Joining {
    /// It bootstrapped the cluster (`--initial-cluster` says who it is).
    Founder,
    /// It joined earlier: its join record says who it is.
    Joined(Joined),
    /// It is joining now: the cluster said who it is; [`Joined::save`] must record it
    /// once the storage exists (the storage refuses a data dir it did not make).
    Joining(Joined),
}

impl Joining {
    pub fn joined(&self) -> Option<&Joined> {
        match self {
            Joining::Founder => None,
            Joining::Joined(j) | Joining::Joining(j) => Some(j),
        }
    }
}

/// Before the data dir is opened: the identity of a member that joined a running cluster
/// (its join record), or of one joining now (`--initial-cluster-state existing` and no
/// storage in the data dir yet: asked of the cluster). `config` becomes that member's.
pub async fn prepare(
    config: &mut Config,
    fs: &dyn FileSystem,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Joining> {
    let dir = config.data_dir.clone();
    if let Some(joined) = Joined::load(fs, &dir)? {
        joined.apply_to(config);
        return Ok(Joining::Joined(joined));
    }
    let initialised = fs.exists(&dir.join(storage::META_FILE))?;
    if config.joins_by_itself {
        if initialised {
            anyhow::bail!(
                "--auto-join: the data dir {} holds storage but no join record ({JOIN_FILE});                  this member cannot tell who it is: remove it from the cluster and empty the                  data dir",
                dir.display()
            );
        }
        crate::auto_join::ask_to_be_added(config, tls.clone()).await?;
        let joined = discover(config, tls).await?;
        joined.apply_to(config);
        return Ok(Joining::Joining(joined));
    }
    if config.cluster_state != crate::args::ClusterState::Existing || initialised {
        return Ok(Joining::Founder);
    }
    let joined = discover(config, tls).await?;
    joined.apply_to(config);
    Ok(Joining::Joining(joined))
}

/// Peer URLs compared as sets, without trailing slashes.
pub(crate) fn normalised(urls: &[String]) -> Vec<String> {
    let mut v: Vec<String> = urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Ask the members listed in `--initial-cluster` (all but this one) who this member is.
/// Fails with etcd's words when none can be reached, and at once when one answers that the
/// cluster has no member with this member's peer URLs.
pub async fn discover(
    config: &Config,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Joined> {
    let own = normalised(&config.advertise_peer_urls);
    let urls: Vec<String> = config
        .initial_members
        .iter()
        .filter(|m| normalised(&m.peer_urls) != own)
        .flat_map(|m| m.peer_urls.iter().cloned())
        .collect();
    if urls.is_empty() {
        anyhow::bail!(
            "--initial-cluster-state=existing: --initial-cluster lists no member but this one, \
             so there is no running cluster to join"
        );
    }
    let deadline = Instant::now() + DISCOVERY_DEADLINE;
    let mut last_errors = Vec::new();
    // Rounds in which every member that answered refused: a member that has not applied the
    // `member add` yet refuses too, so a refusal is believed only when it comes again.
    let mut refused_rounds = 0;
    loop {
        last_errors.clear();
        let mut refusal = None;
        for url in &urls {
            match crate::transport::ask_join(url, &config.advertise_peer_urls, tls.clone()).await {
                Ok(Ok(found)) => {
                    let joined = Joined::from_found(&found)?;
                    info!(
                        from = %url,
                        member_id = format_args!("{:x}", joined.member_id),
                        cluster_id = format_args!("{:x}", joined.cluster_id),
                        "joining the running cluster"
                    );
                    return Ok(joined);
                }
                Ok(Err(reason)) => {
                    refusal = Some(format!("error validating peerURLs (asked {url}): {reason}"))
                }
                Err(e) => last_errors.push(format!("{url}: {e:#}")),
            }
        }
        if let Some(refusal) = refusal {
            refused_rounds += 1;
            if refused_rounds >= 2 {
                anyhow::bail!("{refusal}");
            }
        }
        if Instant::now() + DISCOVERY_RETRY >= deadline {
            break;
        }
        warn!(errors = %last_errors.join("; "), "cannot reach the cluster to join yet; retrying");
        tokio::time::sleep(DISCOVERY_RETRY).await;
    }
    anyhow::bail!(
        "cannot fetch cluster info from peer urls: could not retrieve cluster information from \
         the given URLs ({})",
        last_errors.join("; ")
    )
}

/// The answer a member gives a joining one: the member of its applied list with exactly
/// these peer URLs, the cluster's id, its list and the bootstrap members (`base`). With
/// `only_added` (an asker without a peer certificate, `transport::join_gate`), only a
/// member added with `member add` and never started qualifies: one the list holds without
/// a name (founders have theirs from `--initial-cluster`, and a started member published
/// its own: `crate::publish`). The refusal's text is for this member's log; the
/// asker is told nothing of the members.
pub fn lookup(cluster_id: u64, base: MemberList, state: Arc<RwLock<MvccMachine>>) -> JoinLookup {
    let base = base.encode();
    Arc::new(move |peer_urls: &[String], only_added: bool| {
        let wanted = normalised(peer_urls);
        let sm = state
            .read()
            .map_err(|_| "state machine unavailable".to_string())?;
        let list = &sm.members;
        let found = list
            .members()
            .find(|m| normalised(&m.peer_urls) == wanted)
            .filter(|m| !only_added || m.name.is_empty())
            .map(|m| m.id);
        let answer = match found {
            Some(member_id) => Ok(JoinFound {
                cluster_id,
                member_id,
                base: base.clone(),
                current: list.encode(),
            }),
            None => Err(format!(
                "no member of cluster {cluster_id:x}{} has the peer URLs {} (members: {}); add \
                 it with `member add` first",
                if only_added {
                    " added with `member add`"
                } else {
                    ""
                },
                wanted.join(","),
                list.members()
                    .map(|m| format!("{:x}={}", m.id, m.peer_urls.join(",")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        answer
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[u64]) -> MemberList {
        MemberList::from_initial(
            &ids.iter()
                .map(|&id| InitialMember {
                    id,
                    name: format!("m{id}"),
                    peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
                })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_join_record_round_trips_and_bad_bytes_are_an_error() {
        let joined = Joined {
            cluster_id: 7,
            member_id: 9,
            base: list(&[1, 2, 3]),
            current: list(&[1, 3, 9]),
        };
        let bytes = joined.encode();
        assert_eq!(Joined::decode(&bytes).unwrap(), joined);
        for cut in 0..bytes.len() {
            assert!(Joined::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        assert!(Joined::decode(b"RKVJOIN2").is_err());
    }

    #[test]
    fn a_member_is_found_by_its_peer_urls_and_a_stranger_is_refused() {
        let mut sm = MvccMachine::default();
        sm.seed_members(list(&[1, 2, 3]));
        let lookup = lookup(0xc1, list(&[1, 2]), Arc::new(RwLock::new(sm)));
        let found = lookup(&["http://127.0.0.1:2383/".to_string()], false).unwrap();
        assert_eq!((found.cluster_id, found.member_id), (0xc1, 3));
        let joined = Joined::from_found(&found).unwrap();
        assert_eq!(joined.base, list(&[1, 2]));
        assert_eq!(joined.current, list(&[1, 2, 3]));
        let err = lookup(&["http://127.0.0.1:2399".to_string()], false).unwrap_err();
        assert!(
            err.contains("no member of cluster c1 has the peer URLs"),
            "{err}"
        );
        // Without a peer certificate, only a member added with `member add` (no name yet)
        // is answered: member 3 was a founder here.
        assert!(lookup(&["http://127.0.0.1:2383".to_string()], true).is_err());
    }
}
