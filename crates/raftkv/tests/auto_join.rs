//! `--auto-join` on real processes (docs/membership.md, "Scaling by itself"): three founders
//! `aj-0..2` (the only names in `--initial-cluster`), then `aj-3` started with the same flags
//! and an empty data dir, as a StatefulSet's new ordinal would be, with no member command:
//!
//! * it asks a founder to add it, joins, catches up, is promoted to voter by the leader and
//!   serves linearizable reads of what was written before it came;
//! * it counts for the quorum: with a founder stopped, writes still commit;
//! * restarted (SIGKILL, then the same command line) it keeps its id and asks nobody again;
//! * a process whose name is not of the set (`intruder-9`) is refused and not added;
//! * a member that joined, restarted after a snapshot that recorded another member's
//!   `member update`, dials that member at its new URL, not at the URL of its join record.
//!
//! Free loopback ports; raftkv only (etcd has no such flag).

mod common;

use common::{etcdctl_at as etcdctl, is_voter, member_id_of as id_of, member_lines};

use std::time::{Duration, Instant};

use raftkv_client::local_cluster::{free_loopback_ports, ClusterSpec, LocalCluster};

/// `args` with its `--initial-cluster=` replaced by `initial`.
fn with_initial_cluster(args: Vec<String>, initial: &str) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            if a.starts_with("--initial-cluster=") {
                format!("--initial-cluster={initial}")
            } else {
                a
            }
        })
        .collect()
}

fn put(ep: &str, key: &str, value: &str) {
    common::poll_until("a write", Duration::from_secs(30), || {
        let (ok, out, err) = etcdctl(ep, &["put", key, value]);
        (ok && out.trim() == "OK").then_some(()).ok_or(err)
    });
}

fn linearizable_get(ep: &str, key: &str) -> Result<String, String> {
    let (ok, out, err) = etcdctl(ep, &["get", key, "--print-value-only", "--consistency=l"]);
    if ok {
        Ok(out.trim().to_string())
    } else {
        Err(err)
    }
}

/// Member `i`'s log, without the colour escapes a log written to stderr carries (so that
/// `key=value` fields can be matched).
fn log_of(cluster: &LocalCluster, i: usize) -> String {
    let raw = std::fs::read_to_string(&cluster.member(i).log_path).unwrap_or_default();
    let mut plain = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ending with a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn a_new_ordinal_adds_itself_is_promoted_and_keeps_its_id_on_restart() {
    let mut spec = ClusterSpec::new(common::raftkv_program(), "aj", 5);
    spec.names[4] = "intruder-9".into();
    let (mut cluster, founders) = start_founders(spec);
    let args = |c: &LocalCluster, i: usize| with_initial_cluster(c.member_args(i), &founders);
    let ep0 = cluster.member(0).endpoint();
    let keys: Vec<String> = (0..20).map(|i| format!("before-{i:02}")).collect();
    for k in &keys {
        put(&ep0, k, &format!("v-{k}"));
    }
    assert_eq!(member_lines(&ep0).len(), 3);

    // An outsider with a name of another set asks too: refused, never listed.
    let a = args(&cluster, 4);
    cluster
        .start_member_with_args(4, a)
        .expect("start the intruder");
    common::poll_until("the intruder refused", Duration::from_secs(30), || {
        (0..3)
            .any(|i| log_of(&cluster, i).contains("is not a member of the set aj-<ordinal>"))
            .then_some(())
            .ok_or_else(|| cluster.log_tails(10))
    });
    cluster.kill_member(4).expect("kill the intruder");
    let intruder_url = cluster.member(4).peer_url();
    assert!(
        !member_lines(&ep0).iter().any(|l| l.contains(&intruder_url)),
        "{:?}",
        member_lines(&ep0)
    );

    // The new ordinal: same flags as the founders, an empty data dir, no member command.
    let started = Instant::now();
    let a = args(&cluster, 3);
    cluster
        .start_member_with_args(3, a.clone())
        .expect("start aj-3");
    let ep3 = cluster.member(3).endpoint();
    let url3 = cluster.member(3).peer_url();
    let id3 = common::poll_until("aj-3 listed", Duration::from_secs(60), || {
        member_lines(&ep0)
            .into_iter()
            .find(|l| l.contains(&url3))
            .and_then(|l| l.split(',').next().map(str::to_string))
            .ok_or_else(|| cluster.log_tails(15))
    });
    // The leader promotes it (a joiner that has not yet seen its own addition also says it
    // is no learner, so its Status alone proves nothing).
    let promoted = format!("member={id3}");
    common::poll_until(
        "aj-3 promoted by the leader",
        Duration::from_secs(60),
        || {
            (0..3)
                .any(|i| {
                    log_of(&cluster, i).lines().any(|l| {
                        l.contains("promoting a member added as a voter") && l.contains(&promoted)
                    })
                })
                .then_some(())
                .ok_or_else(|| cluster.log_tails(15))
        },
    );
    eprintln!(
        "auto-join: aj-3 started → promoted voter in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    common::poll_until("aj-3 says it is a voter", Duration::from_secs(30), || {
        is_voter(&ep3)
    });
    let line = member_lines(&ep0)
        .into_iter()
        .find(|l| l.starts_with(&format!("{id3},")))
        .unwrap();
    assert_eq!(
        line,
        format!(
            "{id3}, started, aj-3, {url3}, {}, false",
            cluster.member(3).client_url()
        )
    );
    for k in &keys {
        common::poll_until("aj-3 reads every key", Duration::from_secs(30), || {
            match linearizable_get(&ep3, k)? {
                v if v == format!("v-{k}") => Ok(()),
                v => Err(format!("{k} = {v:?}")),
            }
        });
    }

    // A voter: four voters need three, so with aj-1 stopped aj-3 is part of every quorum.
    cluster
        .stop_member(1, Duration::from_secs(10))
        .expect("stop aj-1");
    put(&ep3, "after", "aj-1 stopped");
    assert_eq!(
        linearizable_get(&ep0, "after").as_deref(),
        Ok("aj-1 stopped")
    );
    let a1 = args(&cluster, 1);
    cluster.start_member_with_args(1, a1).expect("restart aj-1");

    // Restarted on its data dir: the same member, which asks to be added no more.
    cluster.kill_member(3).expect("kill aj-3");
    cluster.start_member_with_args(3, a).expect("restart aj-3");
    common::poll_until("aj-3 back as a voter", Duration::from_secs(60), || {
        is_voter(&ep3).map_err(|e| format!("{e}\n{}", cluster.log_tails(15)))
    });
    assert_eq!(id_of(&ep0, &url3), id3);
    assert_eq!(member_lines(&ep0).len(), 4, "{:?}", member_lines(&ep0));
    put(&ep0, "restarted", "yes");
    common::poll_until(
        "aj-3 reads after its restart",
        Duration::from_secs(30),
        || match linearizable_get(&ep3, "restarted")? {
            v if v == "yes" => Ok(()),
            v => Err(v),
        },
    );
    let log3 = log_of(&cluster, 3);
    assert_eq!(
        log3.matches("added to the running cluster").count(),
        1,
        "{log3}"
    );
    cluster.check_alive().expect("every member still running");
}

/// The cluster of `spec` with `--auto-join` for all, its first three members (the founders)
/// started with an `--initial-cluster` naming only them, which is returned too; the test
/// starts the others with [`with_initial_cluster`] of it.
fn start_founders(mut spec: ClusterSpec) -> (LocalCluster, String) {
    spec.extra_args.insert(0, "--auto-join".into());
    let mut cluster = LocalCluster::create(spec).expect("cluster");
    let founders: String = (0..3)
        .map(|i| {
            format!(
                "{}={}",
                cluster.member(i).name,
                cluster.member(i).peer_url()
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..3 {
        let a = with_initial_cluster(cluster.member_args(i), &founders);
        cluster
            .start_member_with_args(i, a)
            .expect("start a founder");
    }
    (cluster, founders)
}

fn snapshots_saved(cluster: &LocalCluster, i: usize) -> usize {
    log_of(cluster, i)
        .matches("snapshot saved and log compacted")
        .count()
}

#[test]
fn a_joined_member_restarts_with_the_peer_urls_of_its_snapshot_not_of_its_join_record() {
    let mut spec = ClusterSpec::new(common::raftkv_program(), "ju", 4);
    spec.extra_args = vec!["--snapshot-count=10".into()];
    let (mut cluster, founders) = start_founders(spec);
    let ep0 = cluster.member(0).endpoint();
    put(&ep0, "start", "1");
    let a3 = with_initial_cluster(cluster.member_args(3), &founders);
    cluster
        .start_member_with_args(3, a3.clone())
        .expect("start ju-3");
    let ep3 = cluster.member(3).endpoint();
    common::poll_until("ju-3 is a voter", Duration::from_secs(60), || {
        is_voter(&ep3).map_err(|e| format!("{e}\n{}", cluster.log_tails(15)))
    });

    // ju-2 moves to another peer port (member update, then a restart listening there).
    let old_url = cluster.member(2).peer_url();
    let new_url = format!("http://127.0.0.1:{}", free_loopback_ports(1).unwrap()[0]);
    let id2 = id_of(&ep0, &old_url);
    let (ok, out, err) = etcdctl(
        &ep0,
        &["member", "update", &id2, &format!("--peer-urls={new_url}")],
    );
    assert!(ok, "{out}{err}");
    cluster
        .stop_member(2, Duration::from_secs(10))
        .expect("stop ju-2");
    let a2: Vec<String> = with_initial_cluster(cluster.member_args(2), &founders)
        .into_iter()
        .map(|a| {
            if a.starts_with("--listen-peer-urls=") {
                format!("--listen-peer-urls={new_url}")
            } else {
                a
            }
        })
        .collect();
    cluster.start_member_with_args(2, a2).expect("restart ju-2");

    // ju-3 takes snapshots that record the update (every 10 entries: two after it surely do).
    let before = snapshots_saved(&cluster, 3);
    let mut n = 0;
    common::poll_until("two snapshots on ju-3", Duration::from_secs(60), || {
        put(&ep0, &format!("fill-{n:03}"), "x");
        n += 1;
        (snapshots_saved(&cluster, 3) >= before + 2)
            .then_some(())
            .ok_or_else(|| format!("{n} writes"))
    });

    // Restarted, ju-3 dials ju-2 where its snapshot says, not where its join record does.
    cluster.kill_member(3).expect("kill ju-3");
    let offset = log_of(&cluster, 3).len();
    cluster.start_member_with_args(3, a3).expect("restart ju-3");
    let connected = format!("url={new_url}");
    common::poll_until(
        "ju-3 connected to ju-2 at its new URL",
        Duration::from_secs(30),
        || {
            let log = log_of(&cluster, 3);
            let since = log.get(offset..).unwrap_or("");
            since
                .lines()
                .any(|l| l.contains("connected to peer") && l.contains(&connected))
                .then_some(())
                .ok_or_else(|| since.lines().rev().take(10).collect::<Vec<_>>().join("\n"))
        },
    );
    let log = log_of(&cluster, 3);
    let since = log.get(offset..).unwrap_or("");
    let stale = format!("url={old_url}");
    assert!(
        !since.lines().any(|l| l.contains(&stale)),
        "ju-3 dialled ju-2's old URL after its restart:\n{since}"
    );
    put(&ep3, "after", "restart");
}
