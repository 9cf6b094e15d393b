//! Leases against real member processes (3 members, etcd's default timings: heartbeat
//! 100 ms, election timeout 1 s, so the shortest TTL is 2 s):
//!
//! * expiry timing: a lease kept alive once, through any member or only through the
//!   followers, is gone no earlier than the TTL the answer promised counted from when the
//!   client received it, and no later than TTL + 1 s after it (the distribution is
//!   printed);
//! * leader changes every 2 s do not renew a lease nobody keeps alive (etcd without
//!   checkpointing would never expire it);
//! * a leader frozen (SIGSTOP) for twice the TTL, while clients keep their leases alive
//!   through the other members, revokes nothing when it wakes;
//! * many keep-alives taken together by one member share log entries, each answered right;
//!   so do the keep-alives one stream sends without waiting, answered in their order;
//! * keep-alives sent to the leader are answered at once while a burst of big writes keeps
//!   its node thread busy (a write sent meanwhile waits over a second; etcd#18100);
//! * 20,000 leases, each with a key, that run out together are all revoked within a few
//!   seconds of the last one's deadline, with the same leader throughout (1,000,000:
//!   `bench/lease-expiry.sh`);
//! * `raftkv lease …` prints as etcdctl does.
//!
//! Every wait polls a condition with a deadline; every test ends by itself.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{poll_until, run_with_timeout, start_cluster_of};
use proto::etcdserverpb::{PutRequest, RangeRequest};
use proto::prost::bytes::Bytes;
use raftkv_client::client::{Client, Timeouts};
use raftkv_client::local_cluster::LocalCluster;
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(endpoints: &[String]) -> Client {
    Client::new(
        endpoints,
        Timeouts {
            dial: Duration::from_secs(1),
            call: Duration::from_secs(3),
        },
    )
    .expect("client")
}

fn start(prefix: &str) -> LocalCluster {
    start_cluster_of(common::raftkv_program(), prefix, Vec::new())
}

async fn ready(c: &Client, cluster: &LocalCluster) {
    if let Err(e) = c.put_retrying("ready", "1", Duration::from_secs(30)).await {
        panic!("cluster not ready: {e}\n{}", cluster.log_tails(20));
    }
}

async fn put_leased(c: &Client, key: &str, lease: i64) {
    c.put(PutRequest {
        key: Bytes::from(key.as_bytes().to_vec()),
        value: Bytes::from_static(b"v"),
        lease,
        ..Default::default()
    })
    .await
    .expect("put with lease");
}

async fn exists(c: &Client, key: &str) -> Result<bool, String> {
    c.range(RangeRequest {
        key: Bytes::from(key.as_bytes().to_vec()),
        ..Default::default()
    })
    .await
    .map(|r| r.count > 0)
    .map_err(|e| e.to_string())
}

/// The index of the member that leads, as the members themselves report it.
async fn leader_index(cluster: &LocalCluster, skip: Option<usize>) -> Option<usize> {
    let c = client(&cluster.endpoints());
    for (i, one) in c.each().iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        if let Ok(s) = one.status().await {
            let me = s.header.map_or(0, |h| h.member_id);
            if s.leader != 0 && s.leader == me {
                return Some(i);
            }
        }
    }
    None
}

fn signal(cluster: &LocalCluster, index: usize, sig: &str) {
    let pid = cluster.member(index).pid().expect("member runs");
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The last keep-alive of one lease: its key, when it was sent, when its answer arrived
/// and the TTL (seconds) that answer promised.
#[derive(Clone, Debug)]
struct LastKeepAlive {
    key: String,
    sent: Instant,
    acked: Instant,
    ttl: i64,
}

/// Per lease, when its key was first seen gone (polled every 10 ms), as (after the send,
/// after the answer); panics if a key outlives `limit`.
async fn wait_until_gone(
    all: &Client,
    leases: Vec<LastKeepAlive>,
    limit: Duration,
) -> Vec<(Duration, Duration, LastKeepAlive)> {
    let mut gone = Vec::new();
    let mut pending = leases;
    let deadline = Instant::now() + limit;
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for l in pending {
            match exists(all, &l.key).await {
                Ok(false) => {
                    let at = Instant::now();
                    gone.push((at - l.sent, at - l.acked, l));
                }
                _ => still.push(l),
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(pending.is_empty(), "leases never expired: {pending:?}");
    gone
}

/// min / p50 / max of `v`, sorted here.
fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "min {:?} p50 {:?} max {:?}",
        v[0],
        percentile(&v, 0.5),
        v[v.len() - 1]
    )
}

/// Checks issue 14's bound on each lease, with a live leader: gone no earlier than the TTL
/// its last answer promised, counted from when the client received that answer, and no
/// later than the granted TTL + 1 s after it.
fn assert_within_the_bound(gone: &[(Duration, Duration, LastKeepAlive)], granted: i64) {
    for (_, after_ack, l) in gone {
        let promised = Duration::from_secs(l.ttl as u64);
        assert!(
            *after_ack >= promised,
            "{} went {after_ack:?} after the answer that promised {promised:?}",
            l.key
        );
        assert!(
            *after_ack <= Duration::from_secs(granted as u64 + 1),
            "{} went late: {after_ack:?} after the answer",
            l.key
        );
    }
}

/// The last keep-alive of `id`, sent through `member`.
async fn keep_alive_once(member: &Client, id: i64, key: String, granted: i64) -> LastKeepAlive {
    let sent = Instant::now();
    let r = member.lease_keep_alive_once(id).await.expect("keep-alive");
    let acked = Instant::now();
    // The full TTL unless the answer came later than the leader's expiry grace
    // (docs/lease.md); never nothing for a live lease.
    assert!(
        (1..=granted).contains(&r.ttl),
        "answered TTL {} for a live lease of {granted}",
        r.ttl
    );
    LastKeepAlive {
        key,
        sent,
        acked,
        ttl: r.ttl,
    }
}

#[test]
fn a_lease_expires_between_its_ttl_and_ttl_plus_one_second_after_its_last_keep_alive() {
    const TTL: i64 = 2;
    const LEASES: usize = 12;
    let cluster = start("lease-timing");
    let rt = runtime();
    rt.block_on(async {
        let all = client(&cluster.endpoints());
        ready(&all, &cluster).await;
        let members = all.each();
        let mut leases = Vec::new();
        for i in 0..LEASES {
            let id = all.lease_grant(TTL, 0).await.expect("grant").id;
            let key = format!("timing/{i}");
            put_leased(&all, &key, id).await;
            // The last keep-alive, through any member.
            let member = &members[i % members.len()];
            leases.push(keep_alive_once(member, id, key, TTL).await);
        }
        let gone = wait_until_gone(&all, leases, Duration::from_secs(TTL as u64 + 5)).await;
        println!(
            "gone after the last keep-alive (TTL {TTL}s, {LEASES} leases, through every member): {} from the send; {} from the answer; answers promised {:?}",
            spread(gone.iter().map(|g| g.0).collect()),
            spread(gone.iter().map(|g| g.1).collect()),
            gone.iter().map(|g| g.2.ttl).collect::<Vec<_>>(),
        );
        let ttl = Duration::from_secs(TTL as u64);
        for (after_send, _, l) in &gone {
            assert!(*after_send >= ttl, "{} went early: {after_send:?}", l.key);
        }
        assert_within_the_bound(&gone, TTL);
    });
}

/// Keep-alives sent only through the followers, which answer once they applied the
/// renewal, after the leader did: counted from the answer the client received, each key
/// is gone no earlier than the TTL that answer promised and no later than TTL + 1 s.
#[test]
fn keep_alives_through_followers_hold_the_ttl_from_their_answer() {
    const TTL: i64 = 2;
    const LEASES: usize = 16;
    const ROUNDS: usize = 3;
    let cluster = start("lease-follower-timing");
    let rt = runtime();
    rt.block_on(async {
        let all = client(&cluster.endpoints());
        ready(&all, &cluster).await;
        let leader = poll_leader(&cluster).await;
        let members = all.each();
        let followers: Vec<&Client> = (0..members.len())
            .filter(|&i| i != leader)
            .map(|i| &members[i])
            .collect();
        let mut leases = Vec::new();
        for i in 0..LEASES {
            let id = all.lease_grant(TTL, 0).await.expect("grant").id;
            let key = format!("follower-timing/{i}");
            put_leased(&all, &key, id).await;
            leases.push((id, key));
        }
        // A few rounds of keep-alives through the followers, the last one kept.
        let mut last = Vec::new();
        for round in 0..ROUNDS {
            last.clear();
            for (i, (id, key)) in leases.iter().enumerate() {
                let member = followers[(i + round) % followers.len()];
                last.push(keep_alive_once(member, *id, key.clone(), TTL).await);
            }
        }
        let gone = wait_until_gone(&all, last, Duration::from_secs(TTL as u64 + 5)).await;
        assert_eq!(
            leader_index(&cluster, None).await,
            Some(leader),
            "the leader changed during the test: the bound holds with a live leader"
        );
        println!(
            "through followers (TTL {TTL}s, {LEASES} leases): answer after the send {}; gone after the answer {}; answers promised {:?}",
            spread(gone.iter().map(|g| g.2.acked - g.2.sent).collect()),
            spread(gone.iter().map(|g| g.1).collect()),
            gone.iter().map(|g| g.2.ttl).collect::<Vec<_>>(),
        );
        assert_within_the_bound(&gone, TTL);
    });
}

#[test]
fn leader_changes_every_two_seconds_do_not_renew_a_lease() {
    const TTL: u64 = 10;
    let mut cluster = start("lease-failover");
    let rt = runtime();
    rt.block_on(async {
        let all = client(&cluster.endpoints());
        ready(&all, &cluster).await;
        let id = all.lease_grant(TTL as i64, 0).await.expect("grant").id;
        let granted = Instant::now();
        put_leased(&all, "failover/k", id).await;
        let mut changes = 0;
        let limit = granted + Duration::from_secs(TTL + 1 + 1);
        let gone_at = loop {
            // Freeze the leader until another member leads, then let it go.
            if let Some(l) = leader_index(&cluster, None).await {
                signal(&cluster, l, "-STOP");
                let frozen = Instant::now();
                while leader_index(&cluster, Some(l)).await.is_none()
                    && frozen.elapsed() < Duration::from_secs(5)
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                signal(&cluster, l, "-CONT");
                changes += 1;
            }
            let others: Vec<String> = cluster.endpoints();
            let round = Instant::now();
            while round.elapsed() < Duration::from_secs(2) {
                if let Ok(false) = exists(&client(&others), "failover/k").await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Ok(false) = exists(&client(&others), "failover/k").await {
                break Instant::now();
            }
            assert!(
                Instant::now() < limit + Duration::from_secs(5),
                "the key outlived {TTL}s + 2s by far across {changes} leader changes\n{}",
                cluster.log_tails(10)
            );
        };
        let lived = gone_at - granted;
        println!(
            "TTL {TTL}s, {changes} leader changes: the key was gone {lived:?} after the grant"
        );
        assert!(lived >= Duration::from_secs(TTL), "gone early: {lived:?}");
        assert!(
            lived <= Duration::from_secs(TTL + 2),
            "gone later than TTL + election timeout + 1 s: {lived:?}"
        );
        assert!(changes >= 3, "only {changes} leader changes");
    });
    cluster.stop_all(Duration::from_secs(5)).ok();
}

#[test]
fn a_frozen_leader_revokes_nothing_when_it_wakes() {
    const TTL: i64 = 4;
    const LEASES: usize = 5;
    let mut cluster = start("lease-frozen");
    let rt = runtime();
    rt.block_on(async {
        let all = client(&cluster.endpoints());
        ready(&all, &cluster).await;
        let leader = poll_leader(&cluster).await;
        let followers: Vec<Client> = all
            .each()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, c)| c)
            .collect();
        let mut ids = Vec::new();
        for i in 0..LEASES {
            let id = followers[0].lease_grant(TTL, 0).await.expect("grant").id;
            put_leased(&followers[0], &format!("frozen/{i}"), id).await;
            ids.push(id);
        }
        signal(&cluster, leader, "-STOP");
        let frozen = Instant::now();
        let freeze = Duration::from_secs(2 * TTL as u64);
        let mut woke = false;
        let end = freeze + Duration::from_secs(TTL as u64 + 1);
        while frozen.elapsed() < end {
            if !woke && frozen.elapsed() >= freeze {
                signal(&cluster, leader, "-CONT");
                woke = true;
            }
            for (n, id) in ids.iter().enumerate() {
                // Through the followers only; a failed attempt (no leader yet) is retried
                // on the next round, 300 ms later.
                let f = &followers[n % followers.len()];
                if let Ok(r) = f.lease_keep_alive_once(*id).await {
                    assert!(r.ttl > 0, "lease {id:x} was lost while kept alive");
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if !woke {
            signal(&cluster, leader, "-CONT");
        }
        let c = client(&cluster.endpoints());
        for (i, id) in ids.iter().enumerate() {
            let r = c.lease_time_to_live(*id, true).await.expect("time to live");
            assert!(r.ttl > 0, "lease {id:x} revoked: {r:?}");
            assert_eq!(r.keys.len(), 1);
            assert!(exists(&c, &format!("frozen/{i}")).await.unwrap());
        }
        println!("a leader frozen for {freeze:?}: 0 of {LEASES} leases revoked");
    });
    cluster.stop_all(Duration::from_secs(5)).ok();
}

async fn poll_leader(cluster: &LocalCluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = leader_index(cluster, None).await {
            return l;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `raftkv lease …` against etcdctl on the same cluster: simple lines as etcdctl's; `-w json`
/// lines with the same keys in the same order and the same values, the header's values aside
/// (a remaining TTL may differ by the second between the calls); `-w table` and the lease
/// errors with etcdctl's message and exit status, the call made all the same.
#[test]
fn raftkv_lease_commands_print_like_etcdctl() {
    // Required, never skipped: the README's test command installs etcd-client.
    let etcdctl_bin = common::etcdctl_binary();
    let raftkv_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_raftkv"));
    let cluster = start("lease-cli");
    let endpoints = cluster.endpoints().join(",");
    let command = |program: &std::path::Path, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args);
        cmd
    };
    // (exit status, stdout, stderr)
    let tool = |program: &std::path::Path, args: &[&str]| {
        let out = run_with_timeout(command(program, args), None, Duration::from_secs(20));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let raftkv = |args: &[&str]| {
        let (code, out, err) = tool(&raftkv_bin, args);
        (code == Some(0), out, err)
    };
    poll_until("the cluster takes writes", Duration::from_secs(30), || {
        let (ok, _, err) = raftkv(&["put", "ready", "1"]);
        if ok {
            Ok(())
        } else {
            Err(err)
        }
    });
    let (ok, out, err) = raftkv(&["lease", "grant", "100"]);
    assert!(ok, "{err}");
    let id = out
        .strip_prefix("lease ")
        .and_then(|r| r.strip_suffix(" granted with TTL(100s)\n"))
        .unwrap_or_else(|| panic!("grant printed {out:?}"))
        .to_string();
    assert_eq!(id.len(), 16);
    assert!(raftkv(&["put", "--lease", &id, "cli/k", "v"]).0);
    let (_, out, _) = raftkv(&["lease", "timetolive", "--keys", &id]);
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(100s), remaining("))
            && out.ends_with("s), attached keys([cli/k])\n"),
        "{out:?}"
    );
    let (_, out, _) = raftkv(&["lease", "list"]);
    assert_eq!(out, format!("found 1 leases\n{id}\n"));
    let (_, out, _) = raftkv(&["lease", "keep-alive", "--once", &id]);
    assert_eq!(out, format!("lease {id} keepalived with TTL(100)\n"));
    let (_, out, _) = raftkv(&["lease", "revoke", &id]);
    assert_eq!(out, format!("lease {id} revoked\n"));
    let (_, out, _) = raftkv(&["lease", "timetolive", &id]);
    assert_eq!(out, format!("lease {id} already expired\n"));
    let (ok, _, err) = raftkv(&["lease", "revoke", &id]);
    assert!(
        !ok && err.contains("etcdserver: requested lease not found"),
        "{err}"
    );
    let (_, out, _) = raftkv(&["get", "cli/k"]);
    assert_eq!(out, "");

    // -w json: one line each; (raw line, parsed) for raftkv and for etcdctl.
    let json_of = |program: &std::path::Path, args: &[&str]| {
        let (code, out, err) = tool(program, &[&["-w", "json"][..], args].concat());
        assert_eq!(code, Some(0), "{program:?} -w json {args:?}: {out}{err}");
        let line = out
            .strip_suffix('\n')
            .filter(|l| !l.contains('\n'))
            .unwrap_or_else(|| panic!("{program:?} -w json {args:?}: not one line: {out:?}"))
            .to_string();
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{program:?} -w json {args:?}: {e}: {line}"));
        (line, value)
    };
    // Both tools' lines, checked to have `keys` in this order at the top level.
    let both = |args: &[&str], keys: &[&str]| {
        let (ours, theirs) = (json_of(&raftkv_bin, args), json_of(&etcdctl_bin, args));
        assert_eq!(
            top_level_keys(&theirs.0),
            keys,
            "etcdctl {args:?}: {}",
            theirs.0
        );
        assert_eq!(
            top_level_keys(&ours.0),
            keys,
            "raftkv {args:?}: {}\netcdctl: {}",
            ours.0,
            theirs.0
        );
        (ours.1, theirs.1)
    };
    const HEADER: [&str; 4] = ["cluster_id", "member_id", "revision", "raft_term"];
    let with_header = |fields: &[&'static str]| [&HEADER[..], fields].concat();
    let hex = |v: &Value| format!("{:016x}", v.as_i64().expect("an integer id"));
    let lease_ids = |v: &Value| {
        let mut ids: Vec<i64> = v["leases"]
            .as_array()
            .expect("leases is an array")
            .iter()
            .map(|l| l["id"].as_i64().expect("an integer id"))
            .collect();
        ids.sort();
        ids
    };

    let grant_keys = with_header(&["ID", "TTL", "Error"]);
    let (ours, theirs) = both(&["lease", "grant", "100"], &grant_keys);
    for v in [&ours, &theirs] {
        assert_eq!((&v["TTL"], &v["Error"]), (&100.into(), &"".into()), "{v}");
    }
    let (our_id, their_id) = (hex(&ours["ID"]), hex(&theirs["ID"]));
    let (ours, theirs) = both(&["lease", "list"], &with_header(&["leases"]));
    let mut granted = vec![id_of_hex(&our_id), id_of_hex(&their_id)];
    granted.sort();
    assert_eq!(
        (lease_ids(&ours), lease_ids(&theirs)),
        (granted.clone(), granted)
    );

    assert!(raftkv(&["put", "--lease", &our_id, "cli/j", "v"]).0);
    let ttl_keys = with_header(&["id", "ttl", "granted-ttl", "keys"]);
    let (ours, theirs) = both(&["lease", "timetolive", "--keys", &our_id], &ttl_keys);
    for v in [&ours, &theirs] {
        assert_eq!(hex(&v["id"]), our_id, "{v}");
        assert_eq!(v["granted-ttl"], 100, "{v}");
        assert_eq!(v["keys"], serde_json::json!(["Y2xpL2o="]), "{v}");
    }
    let remaining = |v: &Value| v["ttl"].as_i64().expect("ttl");
    assert!(
        (remaining(&ours) - remaining(&theirs)).abs() <= 1
            && (98..=100).contains(&remaining(&ours)),
        "{ours} vs {theirs}"
    );
    // Keys not asked for, none attached, or a lease that does not exist: `"keys":null`.
    for args in [
        &["timetolive", &our_id][..],
        &["timetolive", "--keys", &their_id],
    ] {
        let (ours, theirs) = both(&[&["lease"][..], args].concat(), &ttl_keys);
        assert_eq!(
            (&ours["keys"], &theirs["keys"]),
            (&Value::Null, &Value::Null)
        );
    }
    let (ours, theirs) = both(&["lease", "timetolive", "1234"], &ttl_keys);
    assert_eq!(without_header(&ours), without_header(&theirs));
    assert_eq!(
        without_header(&ours),
        serde_json::json!({"id": 0x1234, "ttl": -1, "granted-ttl": 0, "keys": null})
    );

    let keep_alive_keys = with_header(&["ID", "TTL"]);
    let (ours, theirs) = both(
        &["lease", "keep-alive", "--once", &our_id],
        &keep_alive_keys,
    );
    for v in [&ours, &theirs] {
        assert_eq!(hex(&v["ID"]), our_id, "{v}");
        // 100, or 99 for an answer given late (docs/lease.md "What an answer promises").
        assert!(
            v["TTL"].as_i64().is_some_and(|t| (99..=100).contains(&t)),
            "{v}"
        );
    }

    // keep-alive until revoked: a JSON line per answer, then nothing more, and status 0.
    let (ok, out, err) = raftkv(&["lease", "grant", "3"]);
    assert!(ok, "{err}");
    let short = out.split(' ').nth(1).expect("lease id").to_string();
    let keep_alives = [&raftkv_bin, &etcdctl_bin].map(|program| {
        let mut cmd = command(program, &["-w", "json", "lease", "keep-alive", &short]);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        let mut child = KillOnDrop(cmd.spawn().expect("start keep-alive"));
        let stdout = child.0.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{program:?} keep-alive: no answer within 10 s"));
        (program, child, first, lines)
    });
    assert!(raftkv(&["lease", "revoke", &short]).0);
    for (program, mut child, first, lines) in keep_alives {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{program:?} keep-alive ran on after the revoke"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{program:?} keep-alive");
        for line in std::iter::once(first).chain(lines.iter()) {
            assert_eq!(
                top_level_keys(&line),
                keep_alive_keys,
                "{program:?}: {line}"
            );
            let v: Value = serde_json::from_str(&line).expect("JSON");
            assert_eq!(hex(&v["ID"]), short, "{line}");
            // 3, or less for an answer given late (docs/lease.md "What an answer promises").
            assert!(
                v["TTL"].as_i64().is_some_and(|t| (1..=3).contains(&t)),
                "{line}"
            );
        }
    }

    // -w table: no printer for leases in etcdctl 3.4, found out after the call (exit 4).
    let table_one = |program: &std::path::Path, args: &[&str]| {
        let (code, out, err) = tool(program, &[&["-w", "table"][..], args].concat());
        assert_eq!(
            (code, out.as_str(), error_line(&err)),
            (Some(4), "", "Error: table not supported as output format"),
            "{program:?} -w table {args:?}: {err}"
        );
    };
    let table = |args: &[&str]| {
        table_one(&raftkv_bin, args);
        table_one(&etcdctl_bin, args);
    };
    let leases_now = || lease_ids(&json_of(&raftkv_bin, &["lease", "list"]).1);
    let before = leases_now();
    table(&["lease", "grant", "100"]);
    let added: Vec<i64> = leases_now()
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert_eq!(added.len(), 2, "each tool granted its lease before failing");
    table(&["lease", "timetolive", &our_id]);
    table(&["lease", "list"]);
    table(&["lease", "keep-alive", "--once", &our_id]);
    table(&["lease", "keep-alive", &our_id]);
    table_one(
        &raftkv_bin,
        &["lease", "revoke", &format!("{:016x}", added[0])],
    );
    table_one(
        &etcdctl_bin,
        &["lease", "revoke", &format!("{:016x}", added[1])],
    );
    assert_eq!(
        leases_now(),
        before,
        "each tool revoked its lease before failing"
    );

    // revoke prints the protobuf response: the header nested.
    for (program, id) in [(&raftkv_bin, &our_id), (&etcdctl_bin, &their_id)] {
        let (line, _) = json_of(program, &["lease", "revoke", id]);
        let header = line
            .strip_prefix(r#"{"header":"#)
            .and_then(|l| l.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{program:?}: not a nested header: {line}"));
        assert_eq!(top_level_keys(&line), ["header"], "{program:?}: {line}");
        assert_eq!(top_level_keys(header), HEADER, "{program:?}: {line}");
    }
    assert_eq!(
        raftkv(&["get", "cli/j"]).1,
        "",
        "the revoke deleted the lease's key"
    );

    // The errors: etcdctl's message and status with either format.
    for format in ["simple", "json"] {
        for (args, status, message) in [
            (
                &["lease", "revoke", "1234"][..],
                1,
                "Error: failed to revoke lease (etcdserver: requested lease not found)",
            ),
            (
                &["lease", "keep-alive", "--once", "1234"][..],
                2,
                "Error: etcdserver: requested lease not found",
            ),
        ] {
            for program in [&raftkv_bin, &etcdctl_bin] {
                let (code, out, err) = tool(program, &[&["-w", format][..], args].concat());
                assert_eq!(
                    (code, out.as_str(), error_line(&err)),
                    (Some(status), "", message),
                    "{program:?} -w {format} {args:?}: {err}"
                );
            }
        }
    }
    // keep-alive of a lease that does not exist: the JSON stream just ends, status 0.
    for program in [&raftkv_bin, &etcdctl_bin] {
        let (code, out, err) = tool(program, &["-w", "json", "lease", "keep-alive", "1234"]);
        assert_eq!((code, out.as_str()), (Some(0), ""), "{program:?}: {err}");
    }

    // A TTL below the minimum is raised by the server, the same for both.
    let (ours, theirs) = both(&["lease", "grant", "0"], &grant_keys);
    assert_eq!(ours["TTL"], theirs["TTL"]);
    assert!(ours["TTL"].as_i64().is_some_and(|t| t >= 1), "{ours}");
    poll_until(
        "the short leases expire",
        Duration::from_secs(20),
        || match leases_now().len() {
            0 => Ok(()),
            n => Err(format!("{n} leases left")),
        },
    );
    let (ours, theirs) = both(&["lease", "list"], &with_header(&["leases"]));
    assert_eq!(
        (&ours["leases"], &theirs["leases"]),
        (&serde_json::json!([]), &serde_json::json!([]))
    );
}

/// A lease ID printed in hexadecimal, as the number the JSON lines carry.
fn id_of_hex(hex: &str) -> i64 {
    i64::from_str_radix(hex, 16).expect("a hexadecimal lease id")
}

/// `v` without the response header's fields, flattened or nested.
fn without_header(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for name in ["cluster_id", "member_id", "revision", "raft_term", "header"] {
            o.remove(name);
        }
    }
    v
}

/// The last `Error: …` line of a tool's stderr (etcdctl logs a warning line before it).
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rfind(|l| l.starts_with("Error: "))
        .unwrap_or("")
}

/// The keys of a one-line JSON object at its top level, in the order written: part of what
/// etcdctl prints, and lost once parsed (serde_json's `Value` sorts them).
fn top_level_keys(line: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let (mut depth, mut key_next) = (0, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' | '[' => {
                depth += 1;
                key_next = depth == 1;
            }
            '}' | ']' => depth -= 1,
            ',' => key_next = depth == 1,
            '"' => {
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => text.extend(chars.next()),
                        '"' => break,
                        c => text.push(c),
                    }
                }
                if key_next {
                    keys.push(text);
                    key_next = false;
                }
            }
            _ => {}
        }
    }
    keys
}

/// A child process killed when the test lets go of it (also when it fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Streams that keep leases alive at once on one member: how many streams, how many
/// keep-alives each sends (one in flight), and the TTL granted.
const BATCH_STREAMS: usize = 100;
const BATCH_ROUNDS: usize = 20;
const BATCH_TTL: i64 = 60;

/// How far the member at `endpoint` has applied its log.
async fn applied_index(endpoint: &[String]) -> u64 {
    let st = client(endpoint).status().await.expect("status");
    st.raft_applied_index
}

/// Many keep-alives taken together by one member share log entries (the
/// `LeaseKeepAlives` batch), and each stream still gets its own lease's answer: the TTL for
/// a live lease (also for two streams renewing the same one), 0 for an unknown lease.
/// Counted from the member's applied index: one entry per keep-alive (the way before
/// batching) would need at least as many entries as keep-alives; the test asks for half.
#[test]
fn concurrent_keep_alives_on_one_member_share_log_entries() {
    let mut cluster = start("ka-batch");
    common::multi_thread_runtime().block_on(async {
        let c = client(&cluster.endpoints());
        ready(&c, &cluster).await;
        let leader = poll_leader(&cluster).await;
        let at_leader = vec![cluster.endpoints()[leader].clone()];
        let member = client(&at_leader);
        let mut leases = Vec::new();
        for _ in 0..BATCH_STREAMS - 2 {
            leases.push(member.lease_grant(BATCH_TTL, 0).await.expect("grant").id);
        }
        // Two streams renew the same lease; one renews a lease that never existed.
        leases.push(leases[0]);
        let unknown = 0x7e57_0000_0000_0001;
        leases.push(unknown);
        let before = applied_index(&at_leader).await;
        let mut streams = Vec::new();
        for (n, &id) in leases.iter().enumerate() {
            // Each stream on its own connection, as separate clients would.
            let conn = client(&at_leader);
            streams.push(tokio::spawn(async move {
                let (tx, mut rx) = conn.lease_keep_alive().await.expect("stream");
                let mut answers = Vec::new();
                for _ in 0..BATCH_ROUNDS {
                    let sent = Instant::now();
                    tx.send(proto::etcdserverpb::LeaseKeepAliveRequest { id })
                        .await
                        .expect("send keep-alive");
                    let answer = tokio::time::timeout(Duration::from_secs(10), rx.message())
                        .await
                        .unwrap_or_else(|_| panic!("stream {n}: no answer within 10 s"))
                        .expect("keep-alive stream")
                        .expect("stream open");
                    answers.push((answer.id, answer.ttl, sent.elapsed()));
                }
                (id, answers)
            }));
        }
        for s in streams {
            let (id, answers) = s.await.expect("stream task");
            let known = id != unknown;
            assert!(
                answers.iter().all(
                    |&(got, ttl, rtt)| got == id && promised_ttl_ok(known, BATCH_TTL, ttl, rtt)
                ),
                "lease {id:x}: answers (id, ttl, round trip) {answers:?}"
            );
        }
        let keep_alives = (BATCH_STREAMS * BATCH_ROUNDS) as u64;
        // Other entries may land meanwhile (the leader's checkpoints, once a second at
        // most): they only make the count larger.
        let entries = applied_index(&at_leader).await - before;
        println!(
            "{keep_alives} keep-alives on {BATCH_STREAMS} streams took {entries} log entries \
             ({:.1} keep-alives per entry)",
            keep_alives as f64 / entries.max(1) as f64
        );
        assert!(
            entries > 0 && entries <= keep_alives / 2,
            "{keep_alives} keep-alives took {entries} log entries: not batched"
        );
    });
    cluster.stop_all(Duration::from_secs(5)).ok();
}

/// Keep-alives one stream sends without waiting for answers (etcd's Go client sends all of
/// its leases' keep-alives on one stream so).
const PIPELINED: usize = 2_000;

/// A stream's keep-alives sent without waiting are renewed together and answered in the
/// order they were sent, each with its own lease's answer (the TTL, 0 for an unknown
/// lease). Sent to a follower, so the batches are forwarded to the leader. Renewed one at a
/// time, as before, each keep-alive was its own entry: the test asks for at most a tenth.
#[test]
fn keep_alives_sent_without_waiting_on_one_stream_share_log_entries_and_keep_their_order() {
    let mut cluster = start("ka-pipe");
    common::multi_thread_runtime().block_on(async {
        let c = client(&cluster.endpoints());
        ready(&c, &cluster).await;
        let leader = poll_leader(&cluster).await;
        let follower = vec![cluster.endpoints()[(leader + 1) % 3].clone()];
        let member = client(&follower);
        let mut leases = Vec::new();
        for _ in 0..20 {
            leases.push(member.lease_grant(BATCH_TTL, 0).await.expect("grant").id);
        }
        let unknown = 0x7e57_0000_0000_0002;
        leases.push(unknown);
        let ids: Vec<i64> = (0..PIPELINED).map(|n| leases[n % leases.len()]).collect();
        let before = applied_index(&follower).await;
        let (tx, mut rx) = member.lease_keep_alive().await.expect("stream");
        let sent_at = Instant::now();
        let sending = ids.clone();
        let sender = tokio::spawn(async move {
            for id in sending {
                tx.send(proto::etcdserverpb::LeaseKeepAliveRequest { id })
                    .await
                    .expect("send keep-alive");
            }
            tx
        });
        let mut answers = Vec::with_capacity(PIPELINED);
        while answers.len() < PIPELINED {
            let answer = tokio::time::timeout(Duration::from_secs(10), rx.message())
                .await
                .unwrap_or_else(|_| panic!("no answer {} within 10 s", answers.len()))
                .expect("keep-alive stream")
                .expect("stream open");
            answers.push((answer.id, answer.ttl));
        }
        let took = sent_at.elapsed();
        drop(sender.await.expect("sender"));
        for (n, (&id, &(got, ttl))) in ids.iter().zip(&answers).enumerate() {
            assert_eq!(got, id, "answer {n} is for another request: out of order");
            assert!(
                promised_ttl_ok(id != unknown, BATCH_TTL, ttl, took),
                "answer {n} for lease {id:x}: TTL {ttl} after {took:?}"
            );
        }
        let entries = applied_index(&follower).await - before;
        println!(
            "{PIPELINED} keep-alives sent without waiting on one stream: {entries} log \
             entries, answered in {took:?}"
        );
        assert!(
            entries > 0 && entries <= (PIPELINED / 10) as u64,
            "{PIPELINED} keep-alives on one stream took {entries} log entries: renewed one \
             at a time"
        );
    });
    cluster.stop_all(Duration::from_secs(5)).ok();
}

/// Writers that keep the leader's log busy with 1 MiB puts, and how long a small write
/// sent meanwhile waits: the lag the keep-alives must not wait behind.
const BURST_WRITERS: usize = 32;
const BURST_VALUE: usize = 1 << 20;
const BURST: Duration = Duration::from_secs(6);

#[test]
fn keep_alives_do_not_wait_behind_a_burst_of_big_writes() {
    let (round_trips, waits) = keep_alives_beside_a_burst(
        "ka-burst",
        &["--lease-keepalive-before-log"],
        |n, ttl, round_trip| {
            // 29 here means an answer given over 0.5 s after the call: the leader did not
            // answer from its clock, and the keep-alive went through the log behind the
            // writes.
            assert_eq!(
                ttl, 30,
                "keep-alive {n} answered ttl {ttl} after {round_trip:?}: 0 is a lost lease, less \
                 than 30 an answer given late through the log (the leader's fast path not taken)"
            );
        },
    );
    // The lag must be there, or the test proves nothing. How long it gets depends on the
    // machine (over a second while other builds share it, about half a second alone), so
    // the keep-alives are held to a tenth of it rather than to a fixed number.
    let typical_wait = percentile(&waits, 0.5);
    assert_writes_waited(&waits);
    // Waiting behind the writes would put the median near the lag (over a second). The
    // tail is the machine's: three members and this test share two cores, often with
    // builds besides; seen at 74-250 ms under a load average of 9-10, under 1 ms alone.
    // So the tail may grow with the lag on a slower machine, up to half of it.
    let (p50, p99) = (
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99),
    );
    assert!(
        p50 < (typical_wait / 10).min(Duration::from_millis(20))
            && p99 < (typical_wait / 2).max(Duration::from_millis(300)),
        "keep-alives waited behind the writes: p50 {p50:?} p99 {p99:?} (writes waited p50 \
         {typical_wait:?})"
    );
}

/// The default path: every keep-alive goes through the log, but ahead of the writes that
/// wait for room (`NodeHandle::propose_ahead`), so it waits for the log's proposals already
/// admitted, not for every write queued before it. The build before waited as long as the
/// writes (keep-alives p50 160 and 441 ms against the writes' 227 and 441 ms, on an idle
/// machine).
#[test]
fn keep_alives_through_the_log_do_not_wait_for_the_writes_queued_before_them() {
    let (round_trips, waits) = keep_alives_beside_a_burst("ka-burst-log", &[], |n, ttl, took| {
        assert!(
            ttl > 0,
            "keep-alive {n} answered ttl {ttl} after {took:?}: the lease was lost"
        );
    });
    // Held to the writes' worst wait, the steadier figure (463-556 ms in eight runs, where
    // their median ranged 131-467 ms).
    let worst_wait = waits[waits.len() - 1];
    assert!(
        worst_wait > Duration::from_millis(300),
        "the burst did not make writes wait (worst {worst_wait:?}): the test proves nothing"
    );
    let (p50, p99) = (
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99),
    );
    // Seen on an idle machine: keep-alives p50 23-46 ms, p99 66-93 ms (eight runs, four of
    // them beside the other burst test, as the default run has it); the build before
    // waited as long as the writes (p50 160 and 441 ms, p99 477 and 484 ms, against their
    // worst of 471-472 ms).
    assert!(
        p50 < worst_wait / 4 && p99 < worst_wait / 2,
        "keep-alives waited behind the queued writes: p50 {p50:?} p99 {p99:?} (the writes' \
         worst wait {worst_wait:?}; a keep-alive may wait a quarter of it at the median and \
         half of it at p99)"
    );
}

/// The burst made small writes wait, or a test built on it proves nothing.
fn assert_writes_waited(waits: &[Duration]) {
    let typical_wait = percentile(waits, 0.5);
    assert!(
        typical_wait > Duration::from_millis(100),
        "the burst did not make writes wait (p50 {typical_wait:?}, worst {:?}): the test \
         proves nothing",
        waits.last()
    );
}

/// Three members started with `extra_args`; a lease of 30 s kept alive through the leader
/// every 50 ms while [`burst_of_big_writes`] runs at it for [`BURST`]. Each answer goes to
/// `check(n, ttl, round_trip)`. Returns the keep-alives' round trips and the small writes'
/// waits, each sorted.
fn keep_alives_beside_a_burst(
    prefix: &str,
    extra_args: &[&str],
    check: impl Fn(usize, i64, Duration),
) -> (Vec<Duration>, Vec<Duration>) {
    // A 5 s election timeout: the burst stalls the leader's node thread for up to a second
    // or two at a time, which with 1 s would hand leadership round (and a leader that
    // lost it rightly stops answering from its own clock).
    let mut spec =
        raftkv_client::local_cluster::ClusterSpec::new(common::raftkv_program(), prefix, 3);
    spec.heartbeat_ms = 500;
    spec.election_ms = 5000;
    spec.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
    let mut cluster = LocalCluster::start(spec).expect("cluster");
    let (round_trips, waits) = runtime().block_on(async {
        let c = client(&cluster.endpoints());
        ready(&c, &cluster).await;
        let leader = poll_leader(&cluster).await;
        let at_leader = vec![cluster.endpoints()[leader].clone()];
        let lease = c.lease_grant(30, 0).await.expect("grant").id;
        let (ka_tx, mut ka_rx) = client(&at_leader).lease_keep_alive().await.expect("stream");

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The burst runs on its own thread and runtime, so that the keep-alives below are
        // not queued behind the writers in this process.
        let burst = {
            let (stop, at_leader) = (stop.clone(), at_leader.clone());
            std::thread::spawn(move || burst_of_big_writes(&at_leader, &stop))
        };
        let mut round_trips = Vec::new();
        let started = Instant::now();
        while started.elapsed() < BURST {
            let sent = Instant::now();
            ka_tx
                .send(proto::etcdserverpb::LeaseKeepAliveRequest { id: lease })
                .await
                .expect("send keep-alive");
            let answer = tokio::time::timeout(Duration::from_secs(30), ka_rx.message())
                .await
                .expect("keep-alive answered within 30 s")
                .expect("keep-alive stream")
                .expect("stream open");
            let round_trip = sent.elapsed();
            round_trips.push(round_trip);
            check(round_trips.len(), answer.ttl, round_trip);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut waits = burst.join().expect("burst thread");
        round_trips.sort();
        waits.sort();
        println!(
            "{prefix}: burst of {BURST_WRITERS} writers x {BURST_VALUE} B for {BURST:?}: small \
             write waits p50 {:?} max {:?} ({} writes); keep-alive round trips to the leader: \
             p50 {:?} p99 {:?} max {:?} ({} keep-alives)",
            percentile(&waits, 0.5),
            waits.last(),
            waits.len(),
            percentile(&round_trips, 0.5),
            percentile(&round_trips, 0.99),
            round_trips.last(),
            round_trips.len()
        );
        (round_trips, waits)
    });
    cluster.stop_all(Duration::from_secs(5)).ok();
    (round_trips, waits)
}

/// [`BURST_WRITERS`] writers putting [`BURST_VALUE`]-byte values to `at_leader` as fast as
/// it takes them until `stop`, and a small write every 100 ms meanwhile: returns how long
/// each small write took (how far behind the leader's log and apply are).
fn burst_of_big_writes(
    at_leader: &[String],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let rt = common::multi_thread_runtime();
    rt.block_on(async {
        let patient = || {
            Client::new(
                at_leader,
                Timeouts {
                    dial: Duration::from_secs(2),
                    call: Duration::from_secs(60),
                },
            )
            .expect("client")
        };
        let value = Bytes::from(vec![b'x'; BURST_VALUE]);
        let mut writers = Vec::new();
        for w in 0..BURST_WRITERS {
            let (stop, value, kv) = (stop.clone(), value.clone(), patient());
            writers.push(tokio::spawn(async move {
                let key = Bytes::from(format!("burst/{w}"));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = kv
                        .put(PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                            ..Default::default()
                        })
                        .await;
                }
            }));
        }
        let kv = patient();
        let mut waits = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let sent = Instant::now();
            kv.put(PutRequest {
                key: Bytes::from_static(b"probe"),
                value: Bytes::from_static(b"p"),
                ..Default::default()
            })
            .await
            .expect("probe write");
            waits.push(sent.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for w in writers {
            w.await.expect("writer task");
        }
        waits
    })
}

/// Grants in flight at once.
const MASS_CONCURRENCY: usize = 64;

/// `$name` as a number, else `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 20,000 leases by default; the issue's 1,000,000 with
/// `RAFTKV_MASS_LEASES=1000000 RAFTKV_MASS_TTL=420` (`bench/lease-expiry.sh`): the TTL
/// must outlast the grants. Granting takes a while (about 3,000 grants and puts a second),
/// so the deadlines the grants set are spread over that time; every lease is then kept
/// alive once, all in one burst of keep-alives sent without waiting, so that their
/// deadlines fall within that burst and they run out together. All must be gone within
/// 5 s of the last deadline (30 s, the issue's bound, above 20,000 leases).
#[test]
fn leases_running_out_together_are_revoked_within_seconds() {
    let mass_leases: usize = env_or("RAFTKV_MASS_LEASES", 20_000);
    let mass_ttl: i64 = env_or("RAFTKV_MASS_TTL", 15);
    let ttl = Duration::from_secs(mass_ttl as u64);
    let bound = Duration::from_secs(if mass_leases > 20_000 { 30 } else { 5 });
    let mut cluster = start("mass-expiry");
    runtime().block_on(async {
        let c = client(&cluster.endpoints());
        ready(&c, &cluster).await;
        let leader = poll_leader(&cluster).await;
        let at_leader = client(&[cluster.endpoints()[leader].clone()]);
        let before = at_leader.status().await.expect("status");

        let granted = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..MASS_CONCURRENCY {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (t..mass_leases).step_by(MASS_CONCURRENCY) {
                    let id = c.lease_grant(mass_ttl, 0).await.expect("grant").id;
                    put_leased(&c, &format!("mass/{i}"), id).await;
                    ids.push(id);
                }
                ids
            }));
        }
        let mut ids = Vec::with_capacity(mass_leases);
        for t in tasks {
            ids.extend(t.await.expect("grant task"));
        }
        let grants_took = granted.elapsed();
        println!("granted {mass_leases} leases, each with a key, in {grants_took:?}");
        assert!(
            grants_took + Duration::from_secs(3) < ttl,
            "granting {mass_leases} leases took {grants_took:?}, too close to their TTL of \
             {mass_ttl} s for the burst of keep-alives to find them all alive: raise \
             RAFTKV_MASS_TTL"
        );
        let count = |c: Client| async move {
            let leases = c.lease_leases().await.map(|r| r.leases.len());
            let keys = c
                .range(RangeRequest {
                    key: Bytes::from_static(b"mass/"),
                    range_end: Bytes::from_static(b"mass0"),
                    count_only: true,
                    ..Default::default()
                })
                .await
                .map(|r| r.count);
            (leases, keys)
        };
        // Every key is there, so every lease is (the list itself is too big to fetch in one
        // answer at 1,000,000 leases).
        let (_, keys) = count(c.clone()).await;
        assert_eq!(keys.expect("count") as usize, mass_leases, "every key put");

        // Each lease's deadline is set by its renewal's apply: after the burst started and
        // before its answer came back.
        let renewing = Instant::now();
        let last_answer = renew_all_at_once(&at_leader, &ids, mass_ttl).await;
        let burst = last_answer - renewing;
        let first_deadline = renewing + ttl;
        let last_deadline = last_answer + ttl;

        // All gone: no lease listed, no key left. The keys left are printed every 5 s past
        // the first deadline: the rate of revocation, if it is too slow.
        let mut shown = first_deadline;
        let gone_at = loop {
            let (leases, keys) = count(c.clone()).await;
            if let (Ok(0), Ok(0)) = (&leases, &keys) {
                break Instant::now();
            }
            let now = Instant::now();
            if now >= shown {
                let at = now.saturating_duration_since(first_deadline).as_secs_f64();
                println!("{at:.1} s after the first deadline: {keys:?} keys left");
                shown = now + Duration::from_secs(5);
            }
            assert!(
                now < last_deadline + Duration::from_secs(30),
                "leases or keys still there 30 s after the last deadline: {keys:?} keys \
                 left\n{}",
                cluster.log_tails(10)
            );
            // Counting a million keys is work for the member: ask less often at that scale.
            let every = if mass_leases > 20_000 { 500 } else { 100 };
            tokio::time::sleep(Duration::from_millis(every)).await;
        };
        assert!(
            gone_at >= first_deadline,
            "revoked before their renewed TTL ran out"
        );
        let after = at_leader.status().await.expect("status");
        let late = gone_at.saturating_duration_since(last_deadline);
        let since_first = gone_at - first_deadline;
        println!(
            "{mass_leases} leases with a key each, TTL {mass_ttl} s, granted over \
             {grants_took:?}, then all kept alive once within {burst:?}: all revoked \
             {since_first:?} after the first deadline, {late:?} after the last; leader {} \
             term {} -> leader {} term {}",
            before.leader, before.raft_term, after.leader, after.raft_term
        );
        assert_eq!(
            (before.leader, before.raft_term),
            (after.leader, after.raft_term),
            "the leader changed during the mass expiry"
        );
        assert!(
            late < bound,
            "revoking took {late:?} after the last deadline"
        );
    });
    cluster.stop_all(Duration::from_secs(5)).ok();
}

/// Keeps every lease of `ids` alive once, on a few streams that send without waiting for
/// answers; checks each answer (in request order, a full TTL: none had run out) and
/// returns when the last one arrived.
async fn renew_all_at_once(member: &Client, ids: &[i64], ttl: i64) -> Instant {
    const STREAMS: usize = 8;
    let mut streams = Vec::new();
    for part in ids.chunks(ids.len().div_ceil(STREAMS)) {
        let part = part.to_vec();
        let (tx, mut rx) = member.lease_keep_alive().await.expect("keep-alive stream");
        let sending = part.clone();
        let sender = tokio::spawn(async move {
            for id in sending {
                tx.send(proto::etcdserverpb::LeaseKeepAliveRequest { id })
                    .await
                    .expect("send keep-alive");
            }
            tx
        });
        streams.push(tokio::spawn(async move {
            for (n, &id) in part.iter().enumerate() {
                let answer = tokio::time::timeout(Duration::from_secs(30), rx.message())
                    .await
                    .unwrap_or_else(|_| panic!("no keep-alive answer {n} within 30 s"))
                    .expect("keep-alive stream")
                    .expect("stream open");
                assert_eq!(answer.id, id, "keep-alive answer {n} out of order");
                assert!(
                    answer.ttl > 0 && answer.ttl <= ttl,
                    "lease {id:x} answered TTL {} (granted {ttl}): it ran out before the burst",
                    answer.ttl
                );
            }
            drop(sender.await.expect("sender"));
            Instant::now()
        }));
    }
    let mut last = Instant::now();
    for s in streams {
        last = last.max(s.await.expect("keep-alive stream task"));
    }
    last
}

/// Whether a keep-alive answer's TTL is what docs/lease.md ("What an answer promises") allows:
/// 0 for a lease that does not exist; else the granted TTL, less for an answer given more
/// than the expiry grace (0.5 s) after the call, `floor(TTL + 0.5 s - lag)`, where the lag is
/// at most the round trip the client saw.
fn promised_ttl_ok(known: bool, granted: i64, ttl: i64, round_trip: Duration) -> bool {
    if !known {
        return ttl == 0;
    }
    let least = (granted as f64 + 0.5 - round_trip.as_secs_f64()).floor() as i64;
    ttl <= granted && ttl >= least.min(granted)
}
