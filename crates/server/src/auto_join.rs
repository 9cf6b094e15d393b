//! Scaling up without member commands (`--auto-join`, docs/membership.md "Scaling by
//! itself").
//!
//! A StatefulSet (or a compose project) names its members `<set>-<ordinal>`; the founders,
//! `<set>-0..N-1`, are the ones in `--initial-cluster`. A new ordinal started with
//! `--auto-join` and an empty data dir is not among them: before joining it asks the founders
//! over the peer port to add it ([`Frame::AddMe`]), then joins exactly as a member started
//! with `--initial-cluster-state existing` does (`crate::join`). The member that takes the
//! request adds it the way `MemberAdd` adds a voter: a learner in the Raft configuration that
//! the leader's node driver promotes once it caught up (`node::promotion`).
//!
//! Not anyone who reaches the peer port may add itself. The member answering checks that
//! the asked name is `<set>-<ordinal>` with the founders' `<set>-` (and no founder's name),
//! and that every asked peer URL's host resolves to the address the request came from (so a
//! client cannot add a member at somebody else's address). With `https://` peer URLs and
//! `--peer-client-cert-auth` the connection also carries a certificate of the cluster's CA.
//!
//! [`Frame::AddMe`]: crate::transport::Frame::AddMe

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{Config, InitialMember};
use crate::grpc::ClusterService;
use crate::transport::{AddMeHandler, AddMeRequest};

/// How long a new member keeps asking to be added before it gives up (and its supervisor
/// starts it again): the founders may be starting too.
const ASK_DEADLINE: Duration = Duration::from_secs(60);

/// Pause between two rounds over the founders.
const ASK_RETRY: Duration = Duration::from_millis(500);

/// The founders' common `<set>-` when every founder is named `<set>-<ordinal>` (a
/// StatefulSet's pods, compose's `raftkv-N`); `None` otherwise, and then no member can add
/// itself.
pub fn set_prefix(founders: &[InitialMember]) -> Option<String> {
    let mut prefix: Option<&str> = None;
    for m in founders {
        let (p, _) = split_ordinal(&m.name)?;
        match prefix {
            None => prefix = Some(p),
            Some(q) if q == p => {}
            Some(_) => return None,
        }
    }
    prefix.map(str::to_string)
}

/// `("raftkv-", 3)` for `raftkv-3`: a name, a dash, then a decimal ordinal.
fn split_ordinal(name: &str) -> Option<(&str, u64)> {
    let dash = name.rfind('-')?;
    let (prefix, digits) = name.split_at(dash + 1);
    if prefix.len() < 2 || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // No leading zeros: `raftkv-03` is not a pod the StatefulSet makes.
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    Some((prefix, digits.parse().ok()?))
}

/// Why `name` may not add itself to a cluster founded by `founders`, if it may not.
pub fn check_name(founders: &[InitialMember], name: &str) -> Result<(), String> {
    let Some(prefix) = set_prefix(founders) else {
        return Err(
            "this cluster's founders are not named <set>-<ordinal>, so no member adds itself"
                .to_string(),
        );
    };
    match split_ordinal(name) {
        Some((p, _)) if p == prefix => {}
        _ => {
            return Err(format!(
                "{name:?} is not a member of the set {prefix}<ordinal>"
            ))
        }
    }
    if founders.iter().any(|m| m.name == name) {
        return Err(format!(
            "{name:?} is a founder of this cluster: it starts from --initial-cluster, not by asking"
        ));
    }
    Ok(())
}

/// The host and port of a peer URL (`http://raftkv-3.raftkv:2380` → `raftkv-3.raftkv`, 2380).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// One address of `resolved` is the request's `source` (an IPv4 source may arrive as an
/// IPv4-mapped IPv6 address on a dual-stack listener).
pub fn source_matches(source: IpAddr, resolved: &[IpAddr]) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    resolved
        .iter()
        .any(|ip| canonical(*ip) == canonical(source))
}

/// Every peer URL asked for is at the request's source address.
async fn check_urls(peer_urls: &[String], source: IpAddr) -> Result<(), String> {
    if peer_urls.is_empty() {
        return Err("no peer URLs given".to_string());
    }
    for url in peer_urls {
        let (host, port) = host_port(url).ok_or_else(|| format!("bad peer URL {url:?}"))?;
        let resolved: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect();
        if !source_matches(source, &resolved) {
            return Err(format!(
                "the request came from {source}, but {host} resolves to {resolved:?}"
            ));
        }
    }
    Ok(())
}

/// The answering side: checks an [`AddMeRequest`] and adds the member as `MemberAdd` adds a
/// voter. `cluster` is filled once the client services exist (a request before that is
/// refused; the new member asks again). A member whose peer URLs the list already holds is
/// answered `Ok` at once: it asked before and did not get (or keep) the answer.
pub fn handler(
    founders: Vec<InitialMember>,
    cluster: Arc<OnceLock<ClusterService>>,
) -> AddMeHandler {
    let founders = Arc::new(founders);
    Arc::new(move |req: AddMeRequest| {
        let founders = founders.clone();
        let cluster = cluster.clone();
        Box::pin(async move {
            check_name(&founders, &req.name)?;
            check_urls(&req.peer_urls, req.source).await?;
            let Some(svc) = cluster.get() else {
                return Err("this member is still starting".to_string());
            };
            let wanted = crate::join::normalised(&req.peer_urls);
            let known = svc
                .0
                .state()
                .map_err(|e| e.message().to_string())?
                .members
                .members()
                .any(|m| crate::join::normalised(&m.peer_urls) == wanted);
            if known {
                return Ok(());
            }
            crate::grpc::add_member(svc, req.peer_urls.clone(), false)
                .await
                .map(|record| {
                    info!(
                        name = %req.name,
                        member = format_args!("{:x}", record.id),
                        "added a member that asked to join (it is promoted once caught up)"
                    )
                })
                .map_err(|st| st.message().to_string())
        })
    })
}

/// The asking side: have the founders add this member (`config.name` at its advertised peer
/// URLs). Any founder takes the request (a follower passes it to the leader). Refusals are
/// retried too until [`ASK_DEADLINE`]: a founder that is starting, a cluster without a
/// leader or still busy with an earlier change all pass.
pub async fn ask_to_be_added(
    config: &Config,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<()> {
    let urls: Vec<String> = config
        .initial_members
        .iter()
        .flat_map(|m| m.peer_urls.iter().cloned())
        .collect();
    if urls.is_empty() {
        anyhow::bail!("--auto-join: --initial-cluster lists no founder to ask");
    }
    let deadline = Instant::now() + ASK_DEADLINE;
    let mut last = Vec::new();
    loop {
        last.clear();
        for url in &urls {
            match crate::transport::ask_add(
                url,
                &config.name,
                &config.advertise_peer_urls,
                tls.clone(),
            )
            .await
            {
                Ok(Ok(())) => {
                    info!(from = %url, name = %config.name, "added to the running cluster");
                    return Ok(());
                }
                Ok(Err(reason)) => last.push(format!("{url} refused: {reason}")),
                Err(e) => last.push(format!("{url}: {e:#}")),
            }
        }
        if Instant::now() + ASK_RETRY >= deadline {
            break;
        }
        warn!(answers = %last.join("; "), "--auto-join: not added yet; asking again");
        tokio::time::sleep(ASK_RETRY).await;
    }
    anyhow::bail!(
        "--auto-join: no founder added this member within {}s ({})",
        ASK_DEADLINE.as_secs(),
        last.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn founders(names: &[&str]) -> Vec<InitialMember> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| InitialMember {
                id: i as u64 + 1,
                name: n.to_string(),
                peer_urls: vec![format!("http://{n}:2380")],
            })
            .collect()
    }

    #[test]
    fn only_a_new_ordinal_of_the_founders_set_may_add_itself() {
        let f = founders(&["raftkv-0", "raftkv-1", "raftkv-2"]);
        assert_eq!(set_prefix(&f).as_deref(), Some("raftkv-"));
        assert!(check_name(&f, "raftkv-3").is_ok());
        assert!(check_name(&f, "raftkv-17").is_ok());
        for bad in [
            "raftkv-1",
            "raftkv-",
            "raftkv-x",
            "raftkv-03",
            "other-3",
            "raftkv",
            "-3",
            "",
        ] {
            assert!(check_name(&f, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn founders_that_are_no_set_let_nobody_add_itself() {
        assert_eq!(set_prefix(&founders(&["a-0", "b-1"])), None);
        assert_eq!(set_prefix(&founders(&["infra0", "infra1"])), None);
        assert!(check_name(&founders(&["infra0", "infra1"]), "infra2").is_err());
        assert_eq!(
            set_prefix(&founders(&["my-db-0"])).as_deref(),
            Some("my-db-")
        );
    }

    #[test]
    fn peer_urls_give_their_host_and_port() {
        assert_eq!(
            host_port("http://raftkv-3.raftkv.ns.svc.cluster.local:2380"),
            Some(("raftkv-3.raftkv.ns.svc.cluster.local".into(), 2380))
        );
        assert_eq!(host_port("https://[::1]:2380/"), Some(("::1".into(), 2380)));
        assert_eq!(host_port("unix://x"), None);
        assert_eq!(host_port("http://host"), None);
    }

    #[test]
    fn the_source_must_be_one_of_the_resolved_addresses() {
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        assert!(source_matches(v4, &[other, v4]));
        assert!(source_matches(mapped, &[v4]));
        assert!(!source_matches(other, &[v4]));
        assert!(!source_matches(v4, &[]));
    }
}
