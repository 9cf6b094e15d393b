//! Members publish their names and client URLs through the log (etcd's `publish`), so every
//! member lists every started member with them, also one it has not talked to since it
//! restarted and one that is down. On real processes, read with `etcdctl member list -w json`:
//!
//! * every member lists all three with their names and client URLs;
//! * member 2 is stopped, member 0 restarted with one more advertised client URL: member 0
//!   (which cannot have heard from member 2 since) still lists member 2's name and client
//!   URLs, and every running member lists member 0's new client URLs (published again
//!   because they changed).
//!
//! A member added at runtime is listed `unstarted` until it starts, then with its name:
//! `member_join.rs` (`add_and_start`). `RAFTKV_TEST_BACKEND=etcd` runs the same against
//! etcd 3.4. Free loopback ports.

mod common;

use std::time::Duration;

use common::etcdctl_at as etcdctl;
use raftkv_client::local_cluster::{free_loopback_ports, ClusterSpec, LocalCluster};
use serde_json::Value;

/// `(peer URLs, name, client URLs)` of every member `ep` lists.
fn listed(ep: &str) -> Result<Vec<(String, String, Vec<String>)>, String> {
    let (ok, out, err) = etcdctl(ep, &["member", "list", "-w=json"]);
    if !ok {
        return Err(err);
    }
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(v["members"]
        .as_array()
        .ok_or_else(|| format!("no members in {out}"))?
        .iter()
        .map(|m| {
            (
                strings(&m["peerURLs"]).join(","),
                m["name"].as_str().unwrap_or_default().to_string(),
                strings(&m["clientURLs"]),
            )
        })
        .collect())
}

/// `ep` lists exactly `want` (peer URL, name, client URLs), in any order.
fn lists(ep: &str, want: &[(String, String, Vec<String>)]) -> Result<(), String> {
    let mut got = listed(ep)?;
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    if got == want {
        Ok(())
    } else {
        Err(format!("{ep} lists {got:?}, expected {want:?}"))
    }
}

#[test]
fn every_member_lists_published_names_and_client_urls_also_of_a_member_that_is_down() {
    let spare = free_loopback_ports(1).expect("a free port")[0];
    let mut cluster = LocalCluster::start(ClusterSpec::new(common::backend_program(), "pub", 3))
        .expect("cluster starts");
    let ep0 = cluster.member(0).endpoint();
    common::poll_until("a writable cluster", Duration::from_secs(30), || {
        let (ok, _, err) = etcdctl(&ep0, &["put", "k", "v"]);
        ok.then_some(()).ok_or(err)
    });
    let mut want: Vec<(String, String, Vec<String>)> = (0..3)
        .map(|i| {
            let m = cluster.member(i);
            (m.peer_url(), m.name.clone(), vec![m.client_url()])
        })
        .collect();
    for i in 0..3 {
        let ep = cluster.member(i).endpoint();
        common::poll_until(
            "every member listed with its name and client URL",
            Duration::from_secs(30),
            || lists(&ep, &want),
        );
    }

    cluster
        .stop_member(2, Duration::from_secs(10))
        .expect("stop member 2");
    cluster
        .stop_member(0, Duration::from_secs(10))
        .expect("stop member 0");
    // Member 0 comes back advertising one more client URL (advertised only; nobody dials
    // it here), listed before its own: members publish their client URLs sorted, as etcd
    // does.
    let extra_url = format!("http://127.0.0.1:{spare}");
    let mut urls0 = vec![extra_url, cluster.member(0).client_url()];
    let args: Vec<String> = cluster
        .member_args(0)
        .into_iter()
        .map(|a| {
            if a.starts_with("--advertise-client-urls=") {
                format!("--advertise-client-urls={}", urls0.join(","))
            } else {
                a
            }
        })
        .collect();
    cluster
        .start_member_with_args(0, args)
        .expect("restart member 0");
    urls0.sort();
    want[0].2 = urls0;
    for i in 0..2 {
        let ep = cluster.member(i).endpoint();
        common::poll_until(
            "member 2 still listed with its name and client URL, member 0 with its new ones",
            Duration::from_secs(30),
            || lists(&ep, &want),
        );
    }
    // A write through the restarted member: the two running members carry the cluster.
    let (ok, out, err) = etcdctl(&ep0, &["put", "after", "restart"]);
    assert!(ok && out.trim() == "OK", "{err}");
    cluster.check_alive().expect("members 0 and 1 still run");
}
