//! Waiting for conditions by polling with a deadline (never a bare sleep as synchronisation).

use crate::etcd;
use raftkv_client::leader::{self, MemberState};
use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

/// Anything whose members the host can reach by PID: a [`crate::cluster::Cluster`] or a
/// [`crate::compose::ComposeProject`]. Member `i` is raftkv-i.
pub trait Members {
    fn pid(&self, i: usize) -> Result<u32, String>;

    /// The client certificate to reach the members with, when they serve mutual TLS.
    fn client_tls(&self) -> Option<&etcd::ClientTls> {
        None
    }
}

impl Members for crate::cluster::Cluster {
    fn pid(&self, i: usize) -> Result<u32, String> {
        crate::cluster::Cluster::pid(self, i)
    }
}

impl Members for crate::compose::ComposeProject {
    fn pid(&self, i: usize) -> Result<u32, String> {
        self.service_pid(&format!("raftkv-{i}"))
    }

    fn client_tls(&self) -> Option<&etcd::ClientTls> {
        self.client_tls.as_ref()
    }
}

/// Polls `probe` every `every` until it returns `Some`, or fails after `limit` with the last
/// reason it gave.
pub fn poll<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {limit:?}; last: {last}"));
        }
        thread::sleep(every);
    }
}

/// Who leads, as agreed by a set of members.
#[derive(Debug, Clone, Copy)]
pub struct Leader {
    /// Index of the leading member in `Cluster::members`.
    pub index: usize,
    pub id: u64,
    pub term: u64,
}

/// One round: every member in `among` answers and they agree on a leader, as
/// `raftkv_client::leader::agreed_leader` defines it (the rule the demo and the other test
/// suites use), that leader is in `among`, and it is not `exclude`.
pub fn agreed_leader(
    cluster: &impl Members,
    among: &[usize],
    exclude: Option<u64>,
) -> Result<Leader, String> {
    let mut views: Vec<(usize, MemberState)> = Vec::new();
    for &i in among {
        views.push((
            i,
            cluster
                .pid(i)
                .and_then(|pid| etcd::status_tls(pid, cluster.client_tls()))
                .map(|state| MemberState {
                    // Every member answers on its own 127.0.0.1: name it for the messages.
                    endpoint: format!("raftkv-{i}"),
                    ..state
                })
                .map_err(|e| format!("raftkv-{i}: {e}"))?,
        ));
    }
    agreement(&views, exclude)
}

/// The leader that all `views` (member index, its status) agree on, if they do.
pub fn agreement(views: &[(usize, MemberState)], exclude: Option<u64>) -> Result<Leader, String> {
    let states: Vec<_> = views.iter().map(|(_, s)| Ok(s.clone())).collect();
    let agreed = leader::agreed_leader(&states)?;
    if exclude == Some(agreed.member_id) {
        return Err(format!(
            "still led by the old leader {:x}",
            agreed.member_id
        ));
    }
    Ok(Leader {
        index: views[agreed.endpoint_index].0,
        id: agreed.member_id,
        term: agreed.term,
    })
}

/// Waits until `among` agree on a leader (other than `exclude`); returns it and how long it took.
pub fn wait_for_leader(
    cluster: &impl Members,
    among: &[usize],
    exclude: Option<u64>,
    limit: Duration,
) -> Result<(Leader, Duration), String> {
    let t = Instant::now();
    let leader = poll("an agreed leader", limit, Duration::from_millis(50), || {
        agreed_leader(cluster, among, exclude)
    })?;
    Ok((leader, t.elapsed()))
}

/// The readiness path: raftkv's /readyz, or `RAFTKV_DOCKER_READY_PATH` (e.g. /health when
/// the harness runs against an etcd image for a baseline).
fn ready_path() -> String {
    std::env::var("RAFTKV_DOCKER_READY_PATH").unwrap_or_else(|_| "/readyz".into())
}

/// Waits until GET /readyz answers 200 on member `i`; returns how long that took.
pub fn wait_ready(cluster: &impl Members, i: usize, limit: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let path = ready_path();
    poll(
        &format!("raftkv-{i} ready"),
        limit,
        Duration::from_millis(50),
        || match etcd::http_status(cluster.pid(i)?, &path)? {
            200 => Ok(()),
            code => Err(format!("{path} answered {code}")),
        },
    )?;
    Ok(t.elapsed())
}

/// Waits until all `members` hold the same keys and values under `prefix` (read locally on
/// each) and, where HashKV answers, the same hash at the same revision. Returns the contents.
pub fn wait_converged(
    cluster: &impl Members,
    members: &[usize],
    prefix: &str,
    limit: Duration,
) -> Result<BTreeMap<String, String>, String> {
    poll(
        "members converged",
        limit,
        Duration::from_millis(200),
        || {
            let mut dumps = Vec::new();
            for &i in members {
                dumps.push((
                    i,
                    etcd::dump_tls(cluster.pid(i)?, cluster.client_tls(), prefix)?,
                ));
            }
            same_contents(&dumps, prefix)?;
            let mut hashes = Vec::new();
            for &i in members {
                hashes.push((i, etcd::hashkv_tls(cluster.pid(i)?, cluster.client_tls())?));
            }
            if hashes.iter().any(|(_, h)| *h != hashes[0].1) {
                return Err(format!("HashKV (hash, revision) differ: {hashes:?}"));
            }
            Ok(dumps.swap_remove(0).1)
        },
    )
}

/// Ok if every member's dump (member index, contents) is the same.
pub fn same_contents(
    dumps: &[(usize, BTreeMap<String, String>)],
    prefix: &str,
) -> Result<(), String> {
    let Some((first_index, first)) = dumps.first() else {
        return Ok(());
    };
    for (i, d) in &dumps[1..] {
        if d != first {
            let differing = first
                .keys()
                .chain(d.keys())
                .find(|k| first.get(*k) != d.get(*k))
                .cloned()
                .unwrap_or_default();
            return Err(format!(
                "raftkv-{first_index} has {} keys under {prefix}, raftkv-{i} has {}; first difference at {differing:?}",
                first.len(),
                d.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(member_id: u64, leader: u64, term: u64) -> MemberState {
        MemberState {
            endpoint: format!("m{member_id}"),
            member_id,
            leader,
            term,
            raft_index: 0,
            applied_index: 0,
            revision: 0,
        }
    }

    #[test]
    fn agreement_finds_the_common_leader() {
        let views = [(0, st(10, 11, 2)), (1, st(11, 11, 2)), (2, st(12, 11, 2))];
        let l = agreement(&views, None).unwrap();
        assert_eq!((l.index, l.id, l.term), (1, 11, 2));
    }

    #[test]
    fn agreement_rejects_split_views_no_leader_an_excluded_or_an_absent_leader() {
        // The named leader is a term behind a follower: it is not (yet) that term's leader.
        let stale_leader = [(0, st(10, 11, 3)), (1, st(11, 11, 2))];
        assert!(agreement(&stale_leader, None).is_err());
        let split_leader = [(0, st(10, 10, 2)), (1, st(11, 11, 2))];
        assert!(
            agreement(&split_leader, None).is_err(),
            "two self-proclaimed leaders"
        );
        assert!(agreement(&[(0, st(10, 0, 2)), (1, st(11, 0, 2))], None).is_err());
        let led_by_11 = [(0, st(10, 11, 2)), (1, st(11, 11, 2))];
        assert!(agreement(&led_by_11, Some(11)).is_err());
        // Both followers name 12, but 12 was not asked (e.g. it is partitioned away).
        assert!(agreement(&[(0, st(10, 12, 2)), (1, st(11, 12, 2))], None).is_err());
        assert!(agreement(&[], None).is_err());
    }

    #[test]
    fn same_contents_catches_a_missing_or_different_key() {
        let a: BTreeMap<String, String> = [("k".to_string(), "1".to_string())].into();
        let mut b = a.clone();
        assert!(same_contents(&[(0, a.clone()), (1, b.clone())], "").is_ok());
        b.insert("k".into(), "2".into());
        assert!(same_contents(&[(0, a.clone()), (1, b)], "").is_err());
        assert!(same_contents(&[(0, a), (1, BTreeMap::new())], "").is_err());
    }
}
