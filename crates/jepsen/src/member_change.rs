//! The member-replacement fault: what an operator does when a member's disk is lost.
//!
//! Remove the member (`MemberRemove`), stop it, wipe its data directory, add a new member at
//! the same peer URL (`MemberAdd`, as a learner or as a voter), start it empty with
//! `--initial-cluster-state existing`, and see it become a voter: promoted explicitly
//! (`MemberPromote`, retried while the cluster says the learner is not in sync) or, when it
//! was added as a voter, by the leader once it has caught up. The workloads keep running
//! throughout; the run's checkers then judge the histories, the durability of acknowledged
//! writes and the members' HashKV as for every other fault.
//!
//! Every step is retried until its own deadline and is not cut short when the run stops: a
//! replacement left half done (removed but never added) would leave a member that cannot
//! come back, which is the harness's fault, not the cluster's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use proto::etcdserverpb::Member;
use raftkv_client::{Client, Timeouts};

use crate::cluster::Cluster;
use crate::nemesis::lock;

/// How long each step may keep retrying.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the new member may take to catch up and become a voter.
const PROMOTION_DEADLINE: Duration = Duration::from_secs(60);
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Per-call limits of the membership calls: a change commits through the log, so allow for
/// an election in between.
const MEMBER_CALL_TIMEOUTS: Timeouts = Timeouts {
    dial: Duration::from_secs(1),
    call: Duration::from_secs(5),
};

/// What a replacement did, for the timeline.
pub struct Replacement {
    pub detail: String,
    pub evidence: String,
}

/// Replaces member `victim` by a fresh one with an empty data directory (see the module doc).
/// `as_learner` chooses `MemberAdd --learner` + `MemberPromote` over a voter add that the
/// leader promotes itself. `note` records the start of the fault in the histories, once the
/// member is about to be removed, and returns its time.
pub async fn replace(
    cluster: &Arc<Mutex<Cluster>>,
    victim: usize,
    as_learner: bool,
    note: impl FnOnce(&str) -> u64,
) -> Result<(Replacement, u64)> {
    let (name, peer_url, others) = {
        let c = lock(cluster);
        let others: Vec<String> = (0..c.len())
            .filter(|&i| i != victim)
            .map(|i| c.endpoint(i))
            .collect();
        (c.name(victim).to_string(), c.peer_url(victim), others)
    };
    let client = Client::new(&others, MEMBER_CALL_TIMEOUTS)?;
    let how = if as_learner { "learner" } else { "voter" };
    let detail = format!("{name} (new member added as {how})");

    let old = retry_until("find the member", STEP_DEADLINE, || async {
        members(&client)
            .await
            .map(|ms| member_at(&ms, &peer_url).map(|m| m.id))
    })
    .await?;
    let start = note(&format!("start member-replace {detail}"));
    let began = Instant::now();
    if let Some(old) = old {
        retry_until("remove the member", STEP_DEADLINE, || async {
            match client.member_remove(old).await {
                Ok(_) => Ok(()),
                // An earlier attempt whose answer was lost took effect.
                Err(e) if e.message().contains("member not found") => Ok(()),
                Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
            }
        })
        .await?;
    }
    // Stopped (and, below, wiped) only once the cluster no longer counts it.
    lock(cluster).kill(victim)?;

    let new = retry_until("add the new member", STEP_DEADLINE, || async {
        match client.member_add(vec![peer_url.clone()], as_learner).await {
            Ok(r) => Ok(r.member.map(|m| m.id).unwrap_or(0)),
            // An earlier attempt whose answer was lost took effect: find what it added.
            Err(e) if e.message().contains("Peer URLs already exists") => {
                match members(&client)
                    .await?
                    .iter()
                    .find(|m| m.peer_ur_ls == [peer_url.clone()])
                {
                    Some(m) => Ok(m.id),
                    None => Err("added, but not in the member list".to_string()),
                }
            }
            Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
        }
    })
    .await?;
    if new == 0 {
        bail!("MemberAdd answered without the new member");
    }
    lock(cluster).start_empty_joining(victim)?;

    if as_learner {
        retry_until("promote the learner", PROMOTION_DEADLINE, || async {
            match client.member_promote(new).await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
            }
        })
        .await?;
    }
    // Either way the member must end up a voter: promoted by us or by the leader.
    let list = retry_until("see the new member vote", PROMOTION_DEADLINE, || async {
        let ms = members(&client).await?;
        match ms.iter().find(|m| m.id == new) {
            Some(m) if !m.is_learner => Ok(ms),
            Some(_) => Err("still a learner".to_string()),
            None => Err("not in the member list".to_string()),
        }
    })
    .await?;
    let evidence = format!(
        "removed {}, added {new:x} as {how}, a voter after {} ms; {} members, {} learners",
        old.map_or("nothing (not a member)".to_string(), |o| format!("{o:x}")),
        began.elapsed().as_millis(),
        list.len(),
        list.iter().filter(|m| m.is_learner).count()
    );
    Ok((Replacement { detail, evidence }, start))
}

async fn members(client: &Client) -> Result<Vec<Member>, String> {
    client
        .member_list(true)
        .await
        .map(|r| r.members)
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
}

fn member_at<'a>(members: &'a [Member], peer_url: &str) -> Option<&'a Member> {
    members
        .iter()
        .find(|m| m.peer_ur_ls.iter().any(|u| u == peer_url))
}

/// Runs `step` until it succeeds or `deadline` passes (then fails with the last error).
async fn retry_until<T, F, Fut>(what: &str, deadline: Duration, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => bail!("{what}: gave up after {deadline:?}: {e}"),
            Err(_) => tokio::time::sleep(RETRY_EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str) -> Member {
        Member {
            id,
            peer_ur_ls: vec![url.to_string()],
            ..Member::default()
        }
    }

    #[test]
    fn a_member_is_found_by_its_peer_url_only() {
        let ms = [
            member(1, "http://10.0.0.1:2380"),
            member(2, "http://10.0.0.2:2380"),
        ];
        assert_eq!(
            member_at(&ms, "http://10.0.0.2:2380").map(|m| m.id),
            Some(2)
        );
        assert!(member_at(&ms, "http://10.0.0.3:2380").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_is_retried_until_it_succeeds_or_its_deadline_passes() {
        let mut calls = 0;
        let v = retry_until("thrice", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(format!("try {n}"))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let err = retry_until("never", Duration::from_secs(1), || async {
            Err::<(), _>("no".to_string())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("never: gave up"), "{err}");
    }
}
