//! Scaling down without member commands (`--auto-remove-departed-after`, docs/membership.md
//! "Scaling by itself").
//!
//! When a StatefulSet scales down, its highest ordinals' pods are deleted and their DNS
//! records vanish with them; a compose container that is removed loses its record too. The
//! leader removes a member only when, for the whole grace time, its peer URLs' host names
//! answered "no such host" (NXDOMAIN: not a DNS server that is down or slow) **and** the
//! member was unreachable. A member that is only restarting keeps its record (Kubernetes:
//! the headless Service publishes not-ready addresses; compose: a restarting container
//! keeps its name) or is back within the grace time. Founders (the `--initial-cluster`
//! members) are never removed this way, a removal must leave a quorum of the voters left
//! reachable, and one removal is made at a time.
//!
//! The rule is [`Departures`] plus [`choose_removal`], pure (the clock and the DNS answers
//! are their inputs); [`run`] feeds them from DNS and the transport on the leader.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{ConfChange, ConfChangeKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::grpc::ClusterService;

/// How often the leader looks.
const PERIOD: Duration = Duration::from_secs(1);

/// A DNS question slower than this is no answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the resolver said about a member's peer host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// It has an address.
    Resolves,
    /// NXDOMAIN or no address: the name is gone.
    NoSuchHost,
    /// No answer that says either (a server failure, a timeout): says nothing.
    Unknown,
}

/// `Resolution` of a failed lookup from the resolver's words (the C library's `gai_strerror`
/// of `EAI_NONAME`/`EAI_NODATA` in glibc and musl; everything else, `EAI_AGAIN` included,
/// is no answer).
pub fn classify_lookup_error(message: &str) -> Resolution {
    const GONE: [&str; 4] = [
        "Name or service not known",
        "No address associated with hostname",
        "Name does not resolve",
        "Name has no usable address",
    ];
    if GONE.iter().any(|g| message.contains(g)) {
        Resolution::NoSuchHost
    } else {
        Resolution::Unknown
    }
}

/// One look at a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub resolution: Resolution,
    /// The leader's connection to it is up.
    pub connected: bool,
}

/// Since when each member has looked departed (no such host and unreachable), without a
/// single look in between that said otherwise.
#[derive(Default, Debug)]
pub struct Departures {
    since: HashMap<u64, Instant>,
}

impl Departures {
    /// Record a look at `id` taken at `now`. Anything but "no such host and unreachable"
    /// (including no DNS answer) restarts its clock.
    pub fn observe(&mut self, id: u64, obs: Observation, now: Instant) {
        if obs.resolution == Resolution::NoSuchHost && !obs.connected {
            self.since.entry(id).or_insert(now);
        } else {
            self.since.remove(&id);
        }
    }

    /// Forget members no longer in the list, and everything when this member stops leading
    /// (a new leader counts afresh).
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.since.retain(|id, _| keep(*id));
    }

    pub fn since(&self, id: u64) -> Option<Instant> {
        self.since.get(&id).copied()
    }
}

/// The cluster as the leader sees it when it decides.
#[derive(Clone, Debug)]
pub struct View {
    pub me: u64,
    /// Voters (members the list shows as voters, promoted or not: counting one that is not
    /// yet only makes the quorum check stricter).
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The `--initial-cluster` members: never removed this way.
    pub founders: Vec<u64>,
    /// Members the leader is connected to now.
    pub connected: Vec<u64>,
}

/// The member to remove now, if any: departed for at least `grace`, no founder, not this
/// member, and (for a voter) the voters left keep a reachable quorum. Learners first, then
/// the one departed longest. At most one per call; the caller waits for it to be made.
pub fn choose_removal(
    view: &View,
    departures: &Departures,
    now: Instant,
    grace: Duration,
) -> Option<u64> {
    let reachable = |id: u64| id == view.me || view.connected.contains(&id);
    let quorum_kept = |id: u64| {
        if !view.voters.contains(&id) {
            return true;
        }
        let left: Vec<u64> = view.voters.iter().copied().filter(|v| *v != id).collect();
        let up = left.iter().filter(|v| reachable(**v)).count();
        !left.is_empty() && up > left.len() / 2
    };
    view.learners
        .iter()
        .chain(view.voters.iter())
        .copied()
        .filter(|id| *id != view.me && !view.founders.contains(id))
        .filter_map(|id| Some((id, departures.since(id)?)))
        .filter(|(_, since)| now.saturating_duration_since(*since) >= grace)
        .filter(|(id, _)| quorum_kept(*id))
        .min_by_key(|(id, since)| (view.voters.contains(id), *since, *id))
        .map(|(id, _)| id)
}

/// What DNS says about the hosts of `peer_urls`: resolves if any does, no such host if all
/// are gone.
async fn resolve(peer_urls: &[String]) -> Resolution {
    let mut answers = Vec::new();
    for url in peer_urls {
        let Some((host, port)) = crate::auto_join::host_port(url) else {
            answers.push(Resolution::Unknown);
            continue;
        };
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        answers.push(match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(_) => Resolution::Resolves,
                None => Resolution::NoSuchHost,
            },
            Ok(Err(e)) => classify_lookup_error(&e.to_string()),
            Err(_) => Resolution::Unknown,
        });
    }
    if answers.contains(&Resolution::Resolves) {
        Resolution::Resolves
    } else if !answers.is_empty() && answers.iter().all(|r| *r == Resolution::NoSuchHost) {
        Resolution::NoSuchHost
    } else {
        Resolution::Unknown
    }
}

/// On every member; acts while it leads: looks at every member each [`PERIOD`] and removes
/// the one [`choose_removal`] names, through the path of `MemberRemove`.
pub async fn run(
    svc: ClusterService,
    founders: Vec<u64>,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let ctx = &svc.0;
    let me = ctx.node.id;
    let mut departures = Departures::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = shutdown.cancelled() => return,
        }
        if ctx.node.status.leader() != Some(me) {
            departures.retain(|_| false);
            continue;
        }
        let members: Vec<(u64, Vec<String>, bool)> = match ctx.state() {
            Ok(sm) => sm
                .members
                .members()
                .map(|m| (m.id, m.peer_urls.clone(), m.is_learner))
                .collect(),
            Err(_) => continue,
        };
        departures.retain(|id| members.iter().any(|(m, _, _)| *m == id));
        let mut view = View {
            me,
            voters: Vec::new(),
            learners: Vec::new(),
            founders: founders.clone(),
            connected: Vec::new(),
        };
        for (id, urls, learner) in &members {
            if *learner {
                view.learners.push(*id);
            } else {
                view.voters.push(*id);
            }
            if *id == me {
                continue;
            }
            let connected = ctx.transport.is_connected(*id);
            if connected {
                view.connected.push(*id);
            }
            if founders.contains(id) {
                continue;
            }
            let resolution = resolve(urls).await;
            departures.observe(
                *id,
                Observation {
                    resolution,
                    connected,
                },
                Instant::now(),
            );
        }
        let Some(id) = choose_removal(&view, &departures, Instant::now(), grace) else {
            continue;
        };
        info!(
            member = format_args!("{id:x}"),
            after = ?grace,
            "removing a departed member: its host name is gone and it has been unreachable"
        );
        let cc = ConfChange {
            kind: ConfChangeKind::Remove,
            node: id,
            context: Bytes::new(),
        };
        match crate::grpc::make_change(&svc, cc).await {
            Ok(()) => {
                info!(
                    member = format_args!("{id:x}"),
                    "removed the departed member"
                );
                departures.retain(|m| m != id);
            }
            Err(e) => {
                warn!(member = format_args!("{id:x}"), error = %e.message(), "removing a departed member failed; trying again")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);
    const GONE: Observation = Observation {
        resolution: Resolution::NoSuchHost,
        connected: false,
    };

    /// Founders 1, 2, 3 (1 leads), added members 4 and 5; `connected` as given.
    fn view(connected: &[u64]) -> View {
        View {
            me: 1,
            voters: vec![1, 2, 3, 4, 5],
            learners: vec![],
            founders: vec![1, 2, 3],
            connected: connected.to_vec(),
        }
    }

    fn departed(ids: &[u64], at: Instant) -> Departures {
        let mut d = Departures::default();
        for id in ids {
            d.observe(*id, GONE, at);
        }
        d
    }

    #[test]
    fn a_member_gone_from_dns_and_unreachable_for_the_grace_time_is_removed() {
        let t0 = Instant::now();
        let d = departed(&[5], t0);
        let v = view(&[2, 3, 4]);
        assert_eq!(
            choose_removal(&v, &d, t0 + GRACE - Duration::from_millis(1), GRACE),
            None
        );
        assert_eq!(choose_removal(&v, &d, t0 + GRACE, GRACE), Some(5));
    }

    #[test]
    fn any_look_that_is_not_departed_restarts_the_clock() {
        let t0 = Instant::now();
        for interruption in [
            Observation {
                resolution: Resolution::Resolves,
                connected: false,
            },
            Observation {
                resolution: Resolution::NoSuchHost,
                connected: true,
            },
            Observation {
                resolution: Resolution::Unknown,
                connected: false,
            },
        ] {
            let mut d = departed(&[5], t0);
            d.observe(5, interruption, t0 + GRACE / 2);
            assert_eq!(
                choose_removal(&view(&[2, 3, 4]), &d, t0 + GRACE, GRACE),
                None,
                "{interruption:?}"
            );
            d.observe(5, GONE, t0 + GRACE);
            assert_eq!(
                choose_removal(
                    &view(&[2, 3, 4]),
                    &d,
                    t0 + 2 * GRACE - Duration::from_millis(1),
                    GRACE
                ),
                None
            );
            assert_eq!(
                choose_removal(&view(&[2, 3, 4]), &d, t0 + 2 * GRACE, GRACE),
                Some(5)
            );
        }
    }

    #[test]
    fn founders_and_the_leader_itself_are_never_removed() {
        let t0 = Instant::now();
        let d = departed(&[1, 2], t0);
        assert_eq!(
            choose_removal(&view(&[3, 4, 5]), &d, t0 + 10 * GRACE, GRACE),
            None
        );
    }

    #[test]
    fn a_removal_that_would_leave_no_reachable_quorum_waits() {
        let t0 = Instant::now();
        let d = departed(&[4, 5], t0);
        // Voters 1..5, only 1 and 5's neighbour 2 reachable: removing 4 leaves {1,2,3,5}
        // with 2 reachable, not a quorum of 4.
        assert_eq!(choose_removal(&view(&[2]), &d, t0 + GRACE, GRACE), None);
        // With 3 reachable too, 3 of 4 are up: one may go.
        assert_eq!(
            choose_removal(&view(&[2, 3]), &d, t0 + GRACE, GRACE),
            Some(4)
        );
    }

    #[test]
    fn one_at_a_time_learners_first_then_the_longest_departed() {
        let t0 = Instant::now();
        let mut d = departed(&[5], t0);
        d.observe(4, GONE, t0 + Duration::from_secs(1));
        let v = view(&[2, 3]);
        assert_eq!(choose_removal(&v, &d, t0 + 2 * GRACE, GRACE), Some(5));
        let mut with_learner = v.clone();
        with_learner.voters.retain(|id| *id != 4);
        with_learner.learners.push(4);
        assert_eq!(
            choose_removal(&with_learner, &d, t0 + 2 * GRACE, GRACE),
            Some(4)
        );
    }

    #[test]
    fn forgotten_members_and_a_lost_leadership_restart_every_clock() {
        let t0 = Instant::now();
        let mut d = departed(&[4, 5], t0);
        d.retain(|id| id != 4);
        assert_eq!(d.since(4), None);
        assert_eq!(d.since(5), Some(t0));
        d.retain(|_| false);
        assert_eq!(choose_removal(&view(&[2, 3]), &d, t0 + GRACE, GRACE), None);
    }

    #[test]
    fn only_a_resolver_saying_no_such_name_counts_as_gone() {
        for gone in [
            "failed to lookup address information: Name or service not known",
            "failed to lookup address information: No address associated with hostname",
            "failed to lookup address information: Name does not resolve",
        ] {
            assert_eq!(
                classify_lookup_error(gone),
                Resolution::NoSuchHost,
                "{gone}"
            );
        }
        for unknown in [
            "failed to lookup address information: Temporary failure in name resolution",
            "failed to lookup address information: Non-recoverable failure in name resolution",
            "something else",
        ] {
            assert_eq!(
                classify_lookup_error(unknown),
                Resolution::Unknown,
                "{unknown}"
            );
        }
    }
}
