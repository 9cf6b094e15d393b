//! A member restarted from its own snapshot can hand that snapshot to a follower that fell
//! behind the log's start, without waiting for a snapshot of its own.
//!
//! The Raft core sends followers behind its compacted log the snapshot it was given with
//! `compact`; after a restart it knows only the recovered snapshot's metadata until the
//! shell hands it the image (the core's contract, `crates/raft/src/node.rs`, which the
//! simulator keeps). If the shell does not, a follower that missed entries the restarted leader compacted away cannot catch
//! up until the leader takes its next snapshot, which on a quiet cluster is never.

mod common;

use std::time::Duration;

use common::{connect_answering, poll_until_async, raftkv_program, runtime, start_cluster_of};
use etcd_client::GetOptions;

const PUTS: usize = 300;

#[test]
fn a_follower_behind_a_restarted_leaders_snapshot_catches_up_without_new_writes() {
    let mut cluster = start_cluster_of(
        raftkv_program(),
        "rsnap",
        vec!["--snapshot-count=50".to_string()],
    );
    let rt = runtime();
    let endpoints = cluster.endpoints();
    let (lagging, others) = rt.block_on(async {
        let st = common::statuses(&endpoints).await;
        let leader = st[0].1;
        let lagging = st
            .iter()
            .position(|(id, _)| *id != leader)
            .expect("a follower");
        let others: Vec<usize> = (0..3).filter(|&i| i != lagging).collect();
        (lagging, others)
    });
    cluster.kill_member(lagging).expect("kill the follower");

    // Enough entries that both remaining members snapshot (every 50 entries) and drop the
    // log the stopped member still needs. Then a Defragment on each (raftkv: a snapshot of
    // everything applied now), so that the few entries written after the restart (a new
    // term's no-op) cannot make either take a snapshot of its own before the stopped member
    // is back: the only image either can send is the one it recovered.
    rt.block_on(async {
        let mut c = connect_answering(&endpoints[others[0]]).await;
        for i in 0..PUTS {
            c.put(format!("k{i}"), format!("v{i}"), None)
                .await
                .unwrap_or_else(|e| panic!("put {i}: {e}"));
        }
        for &i in &others {
            let mut m = connect_answering(&endpoints[i]).await;
            m.defragment()
                .await
                .unwrap_or_else(|e| panic!("defragment {}: {e}", endpoints[i]));
        }
    });
    // Both restart from their snapshots, so whichever leads next knows its snapshot only
    // from its data dir.
    for &i in &others {
        cluster.kill_member(i).expect("kill");
    }
    for &i in &others {
        cluster.start_member(i).expect("restart");
    }
    let survivors: Vec<String> = others.iter().map(|&i| endpoints[i].clone()).collect();
    rt.block_on(common::statuses(&survivors));
    cluster
        .start_member(lagging)
        .expect("start the follower again");

    let last = format!("k{}", PUTS - 1);
    let lagging_ep = endpoints[lagging].clone();
    rt.block_on(poll_until_async(
        "the follower to catch up from the restarted leader's snapshot",
        Duration::from_secs(30),
        || {
            let (ep, key) = (lagging_ep.clone(), last.clone());
            async move {
                let mut c = etcd_client::Client::connect([&ep], None)
                    .await
                    .map_err(|e| e.to_string())?;
                let r = c
                    .get(key, Some(GetOptions::new().with_serializable()))
                    .await
                    .map_err(|e| e.to_string())?;
                match r.kvs().first() {
                    Some(kv) if kv.value() == format!("v{}", PUTS - 1).as_bytes() => Ok(()),
                    _ => Err("the last key is not there yet".to_string()),
                }
            }
        },
    ));
    let log = std::fs::read_to_string(&cluster.member(lagging).log_path).expect("its log");
    assert!(
        log.contains("installing snapshot from the leader"),
        "the follower caught up by a snapshot, not by entries the leader kept:\n{}",
        cluster.log_tails(60)
    );
}
