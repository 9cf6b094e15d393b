//! `Cluster/MemberUpdate` on a real 3-member cluster, through etcdctl: a member's peer URL
//! moves to a new port (etcdctl's `updated in cluster` line, every member lists the new URL),
//! etcd's errors for an unknown member and for a URL another member has; then the member is
//! restarted listening on its new URL only and takes part again: with another member
//! stopped, writes through it commit and linearizable reads on the others see them.
//! `RAFTKV_TEST_BACKEND=etcd` runs the same test against etcd 3.4. Free loopback ports.
//!
//! The restart keeps the member's `--initial-*` flags: they describe the cluster at
//! bootstrap (raftkv checks its data dir against the identity they give; etcd ignores them
//! once its data dir exists), and only `--listen-peer-urls` says where it listens now.

mod common;

use std::process::Command;
use std::time::Duration;

use raftkv_client::local_cluster::{free_loopback_ports, ClusterSpec, LocalCluster};

fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(common::etcdctl_binary());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args);
    let out = common::run_with_timeout(cmd, None, Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// etcdctl's simple `member list` lines.
fn member_lines(ep: &str) -> Result<Vec<String>, String> {
    let (ok, out, err) = etcdctl(ep, &["member", "list"]);
    if !ok {
        return Err(err);
    }
    Ok(out.lines().map(str::to_string).collect())
}

/// The member id (hex) on the line whose peer URL is `url`.
fn id_of(ep: &str, url: &str) -> String {
    member_lines(ep)
        .expect("member list")
        .into_iter()
        .find(|l| l.contains(url))
        .and_then(|l| l.split(',').next().map(str::to_string))
        .unwrap_or_else(|| panic!("no member with {url}"))
}

fn is_raftkv() -> bool {
    common::backend_program().label() == "raftkv"
}

#[test]
fn a_member_moves_to_a_new_peer_url_and_keeps_serving() {
    let spare = free_loopback_ports(1).expect("a free port")[0];
    let mut cluster = LocalCluster::start(ClusterSpec::new(common::backend_program(), "upd", 3))
        .expect("cluster starts");
    let ep0 = cluster.member(0).endpoint();
    common::poll_until("a writable cluster", Duration::from_secs(30), || {
        let (ok, _, err) = etcdctl(&ep0, &["put", "k", "v"]);
        ok.then_some(()).ok_or(err)
    });
    let moved = 2;
    let old_url = cluster.member(moved).peer_url();
    let new_url = format!("http://127.0.0.1:{spare}");
    let id = id_of(&ep0, &old_url);

    // etcd's errors: an id that is no member, a URL another member has.
    let (ok, _, err) = etcdctl(
        &ep0,
        &["member", "update", "1234", "--peer-urls=http://a:1"],
    );
    assert!(!ok && err.contains("etcdserver: member not found"), "{err}");
    let taken = format!("--peer-urls={}", cluster.member(0).peer_url());
    let (ok, _, err) = etcdctl(&ep0, &["member", "update", &id, &taken]);
    assert!(
        !ok && err.contains("etcdserver: Peer URLs already exists"),
        "{err}"
    );
    // etcdctl refuses a bad URL itself; `raftkv member update` sends it, and the server
    // refuses it (etcd 3.4's server would take any string here).
    let (ok, _, err) = etcdctl(&ep0, &["member", "update", &id, "--peer-urls=bogus"]);
    assert!(!ok && err.contains("URL scheme must be http"), "{err}");
    if is_raftkv() {
        let (ok, _, err) = raftkv(&ep0, &["member", "update", &id, "--peer-urls=bogus"]);
        assert!(
            !ok && err.contains("etcdserver: given member URLs are invalid"),
            "{err}"
        );
    }
    // Its own URL again is no conflict.
    let (ok, _, err) = etcdctl(
        &ep0,
        &["member", "update", &id, &format!("--peer-urls={old_url}")],
    );
    assert!(ok, "{err}");

    // The move, asked of a member other than the one moving (through `raftkv member
    // update` against raftkv: the same line as etcdctl's, checked against etcd).
    let update = ["member", "update", &id, &format!("--peer-urls={new_url}")];
    let (ok, out, err) = if is_raftkv() {
        raftkv(&ep0, &update)
    } else {
        etcdctl(&ep0, &update)
    };
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("Member {id:>16} updated in cluster ")),
        "{out}"
    );
    // The others list the new URL. (The moved member may not hear of it before its restart:
    // raftkv's members reach it only by dialling it, now at a URL nobody listens on yet;
    // etcd's still reach it over the connections it dialled.)
    let lists_new_url = |ep: &str| {
        let ep = ep.to_string();
        let (id, new_url, old_url) = (id.clone(), new_url.clone(), old_url.clone());
        move || {
            let lines = member_lines(&ep)?;
            let line = lines.iter().find(|l| l.starts_with(&format!("{id},")));
            match line {
                Some(l) if l.contains(&format!(", {new_url}, ")) && !l.contains(&old_url) => Ok(()),
                _ => Err(format!("{lines:?}")),
            }
        }
    };
    for i in 0..2 {
        let ep = cluster.member(i).endpoint();
        common::poll_until(
            "the new URL listed",
            Duration::from_secs(20),
            lists_new_url(&ep),
        );
    }

    // Restart it listening on the new URL only.
    cluster
        .stop_member(moved, Duration::from_secs(10))
        .expect("stop");
    let old_listen = format!("--listen-peer-urls={old_url}");
    let args: Vec<String> = cluster
        .member_args(moved)
        .into_iter()
        .map(|a| {
            if a == old_listen {
                format!("--listen-peer-urls={new_url}")
            } else {
                a
            }
        })
        .collect();
    assert!(args.contains(&format!("--listen-peer-urls={new_url}")));
    cluster
        .start_member_with_args(moved, args)
        .expect("restart on the new URL");

    // Without member 0 the quorum needs the moved member: reached at its new URL.
    cluster
        .stop_member(0, Duration::from_secs(10))
        .expect("stop member 0");
    let ep_moved = cluster.member(moved).endpoint();
    let ep1 = cluster.member(1).endpoint();
    for n in 0..5 {
        let key = format!("after-move-{n}");
        let value = format!("v{n}");
        common::poll_until(
            "a write through the moved member",
            Duration::from_secs(30),
            || {
                let (ok, out, err) = etcdctl(&ep_moved, &["put", &key, &value]);
                (ok && out.trim() == "OK").then_some(()).ok_or(err)
            },
        );
        for ep in [&ep1, &ep_moved] {
            let (ok, out, err) =
                etcdctl(ep, &["get", &key, "--print-value-only", "--consistency=l"]);
            assert!(ok && out.trim() == value, "{ep}: {out} {err}");
        }
    }
    // The moved member lists itself at its new URL (its writes committed, so it has the
    // update before them).
    lists_new_url(&ep_moved)().expect("the moved member lists its new URL");
    cluster.check_alive().expect("members 1 and 2 running");
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
