//! `Cluster/MemberAdd` and `MemberPromote` on a real 3-member cluster, through etcdctl: a
//! voter added but never started (etcdctl's `ETCD_*` lines, `unstarted` in the list) leaves
//! the cluster writable; etcd's errors for a taken peer URL, for an unhealthy cluster and for
//! promoting a learner that is not in sync. `RAFTKV_TEST_BACKEND=etcd` runs the same test
//! against etcd 3.4. Ports 24211-24216, and 24221-24224 for members that never start. The
//! end repeats list, promote, remove and add through `raftkv member …`.

mod common;

use common::{etcdctl_at as etcdctl, member_id_of as id_of, member_lines};

use std::process::Command;
use std::time::Duration;

use raftkv_client::local_cluster::{ClusterSpec, LocalCluster};

fn put_get(ep: &str, key: &str, value: &str) {
    let (ok, out, err) = etcdctl(ep, &["put", key, value]);
    assert!(ok && out.trim() == "OK", "{out} {err}");
    let (ok, out, err) = etcdctl(ep, &["get", key, "--print-value-only"]);
    assert!(ok && out.trim() == value, "{out} {err}");
}

#[test]
fn add_promote_and_their_errors() {
    let mut spec = ClusterSpec::new(common::backend_program(), "add", 3);
    spec.ports = Some(vec![(24211, 24212), (24213, 24214), (24215, 24216)]);
    let cluster = LocalCluster::start(spec).expect("cluster starts");
    let ep = cluster.member(0).endpoint();
    let initial: Vec<String> = (0..3)
        .map(|i| {
            let m = cluster.member(i);
            format!("{}={}", m.name, m.peer_url())
        })
        .collect();
    common::poll_until("a writable cluster", Duration::from_secs(30), || {
        let (ok, _, err) = etcdctl(&ep, &["put", "k", "v"]);
        ok.then_some(()).ok_or(err)
    });

    // A member's peer URL again. etcd checks the cluster's health first (refusing adds for
    // 5 s after start-up, until every peer was connected that long), then the URL.
    let taken = format!("--peer-urls={}", cluster.member(1).peer_url());
    common::poll_until("a healthy cluster", Duration::from_secs(30), || {
        let (ok, _, err) = etcdctl(&ep, &["member", "add", "again", &taken]);
        assert!(!ok, "a taken peer URL was accepted");
        if err.contains("unhealthy cluster") {
            return Err(err);
        }
        assert!(
            err.contains("etcdserver: Peer URLs already exists"),
            "{err}"
        );
        Ok(())
    });

    // A voter that never starts.
    let new_url = "http://127.0.0.1:24221";
    let (_, out, _) = common::poll_until("the add", Duration::from_secs(30), || {
        let r = etcdctl(
            &ep,
            &["member", "add", "newbie", &format!("--peer-urls={new_url}")],
        );
        if r.0 {
            Ok(r)
        } else {
            assert!(r.2.contains("unhealthy cluster"), "{}", r.2);
            Err(r.2)
        }
    });
    let id = id_of(&ep, new_url);
    let mut lines = out.lines();
    let first = lines.next().unwrap();
    assert!(
        // etcdctl prints the id with %16x: space-padded when it has leading zeros.
        first.starts_with(&format!("Member {id:>16} added to cluster ")),
        "{out}"
    );
    // etcdctl builds ETCD_INITIAL_CLUSTER from the answer's members, in its order (by id).
    let cluster_line = lines
        .find(|l| l.starts_with("ETCD_INITIAL_CLUSTER="))
        .expect("ETCD_INITIAL_CLUSTER");
    for entry in initial.iter().chain([&format!("newbie={new_url}")]) {
        assert!(cluster_line.contains(entry.as_str()), "{cluster_line}");
    }
    assert!(
        out.contains("ETCD_NAME=\"newbie\"\nETCD_INITIAL_CLUSTER="),
        "{out}"
    );
    assert!(out.contains(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{new_url}\"")));
    assert!(out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""));
    let line = member_lines(&ep)
        .into_iter()
        .find(|l| l.contains(new_url))
        .unwrap();
    assert_eq!(line, format!("{id}, unstarted, , {new_url}, , false"));
    // Four voters, three running: still writable (raftkv: it is a learner until it
    // catches up, so the quorum is the three).
    put_get(&ep, "after-add", "1");

    // Not connected to every voter: a strict cluster refuses another add.
    let (ok, _, err) = etcdctl(
        &ep,
        &[
            "member",
            "add",
            "l",
            "--peer-urls=http://127.0.0.1:24222",
            "--learner",
        ],
    );
    assert!(
        !ok && err.contains("etcdserver: unhealthy cluster"),
        "{err}"
    );

    // Remove it, add a learner that never starts: promoting it is refused.
    // (etcd 3.4 may call the cluster unhealthy for a few seconds here too.)
    common::poll_until("the removal", Duration::from_secs(30), || {
        let (ok, _, err) = etcdctl(&ep, &["member", "remove", &id]);
        if ok {
            Ok(())
        } else {
            assert!(err.contains("unhealthy cluster"), "{err}");
            Err(err)
        }
    });
    let learner_url = "http://127.0.0.1:24223";
    let (ok, _, err) = etcdctl(
        &ep,
        &[
            "member",
            "add",
            "l",
            &format!("--peer-urls={learner_url}"),
            "--learner",
        ],
    );
    assert!(ok, "{err}");
    let lid = id_of(&ep, learner_url);
    let line = member_lines(&ep)
        .into_iter()
        .find(|l| l.contains(learner_url))
        .unwrap();
    assert_eq!(line, format!("{lid}, unstarted, , {learner_url}, , true"));
    // Through a follower or the leader alike.
    let other = cluster.member(1).endpoint();
    let (ok, _, err) = etcdctl(&other, &["member", "promote", &lid]);
    assert!(
        !ok && err
            .contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{err}"
    );
    let voter = id_of(&ep, &cluster.member(2).peer_url());
    let (ok, _, err) = etcdctl(&ep, &["member", "promote", &voter]);
    assert!(
        !ok && err.contains("etcdserver: can only promote a learner member"),
        "{err}"
    );
    put_get(&other, "after-learner", "2");
    assert_eq!(member_lines(&ep).len(), 4);

    // The same through `raftkv member …`: etcdctl's lines, etcd's errors.
    let (ok, out, err) = raftkv(&ep, &["member", "list"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), member_lines(&ep));
    let (ok, _, err) = raftkv(&other, &["member", "promote", &lid]);
    assert!(
        !ok && err.contains("can only promote a learner member which is in sync with leader"),
        "{err}"
    );
    let (ok, out, err) = raftkv(&ep, &["member", "remove", &lid]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("Member {lid:>16} removed from cluster ")),
        "{out}"
    );
    assert_eq!(member_lines(&ep).len(), 3);
    let spare_url = "http://127.0.0.1:24224";
    let (ok, out, err) = raftkv(
        &ep,
        &[
            "member",
            "add",
            "spare",
            "--peer-urls",
            spare_url,
            "--learner",
        ],
    );
    assert!(ok, "{err}");
    let sid = id_of(&ep, spare_url);
    assert!(
        out.starts_with(&format!("Member {sid:>16} added to cluster ")),
        "{out}"
    );
    assert!(
        out.contains("ETCD_NAME=\"spare\"\nETCD_INITIAL_CLUSTER="),
        "{out}"
    );
    assert!(out.contains(&format!("spare={spare_url}")), "{out}");
    assert!(out.ends_with(&format!(
        "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{spare_url}\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
    )));
}

/// `raftkv` (this crate's client) with the same arguments as [`etcdctl`].
fn raftkv(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    cmd.arg(format!("--endpoints={endpoint}")).args(args);
    let out = common::run_with_timeout(cmd, None, Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
