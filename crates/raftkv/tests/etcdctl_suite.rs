//! The real `etcdctl` (API v3) against a 3-member cluster of the program under test.
//!
//! etcdctl is the client people will point at raftkv first, so every command here is checked
//! on its exact output (simple format) or on its parsed `-w json` output. One cluster serves
//! all steps, each on its own key prefix, so the file costs one cluster start.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Etcdctl {
    endpoints: String,
}

impl Etcdctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(etcdctl_binary());
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .arg("--dial-timeout=3s")
            .arg("--command-timeout=10s")
            .args(args);
        command
    }

    fn run_raw(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_with_timeout(self.command(args), stdin, Duration::from_secs(30))
    }

    /// Runs etcdctl and returns stdout, failing the test if it exits non-zero.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stdin(args, None)
    }

    fn ok_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run_raw(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs etcdctl expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run_raw(args, None);
        assert!(
            !out.status.success(),
            "etcdctl {args:?} should have failed but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("-w=json");
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("etcdctl {args:?} -w json gave invalid JSON ({e}): {text}"))
    }

    /// Current store revision, from the header of a (serializable-free) read.
    fn revision(&self) -> i64 {
        self.json(&["get", "no-such-key-for-revision"])["header"]["revision"]
            .as_i64()
            .expect("header.revision")
    }
}

/// Non-empty lines of a simple-format output (etcdctl prints an empty value line for
/// `--keys-only`).
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn etcdctl_suite() {
    let cluster = start_cluster("ctl");
    let ctl = Etcdctl {
        endpoints: cluster.endpoints().join(","),
    };
    // Ready = every member answers a linearizable health check.
    poll_until("a healthy cluster", Duration::from_secs(30), || {
        let out = ctl.run_raw(&["endpoint", "health"], None);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });

    put_and_get(&ctl);
    get_prefix_from_key_limit(&ctl);
    keys_only_count_only_serializable(&ctl);
    get_at_old_revision(&ctl);
    delete(&ctl);
    txn_interactive(&ctl);
    compaction(&ctl);
    endpoint_status_and_health(&ctl, &cluster);
    member_list(&ctl, &cluster);
}

fn put_and_get(ctl: &Etcdctl) {
    assert_eq!(ctl.ok(&["put", "basic/foo", "bar"]), "OK\n");
    assert_eq!(ctl.ok(&["get", "basic/foo"]), "basic/foo\nbar\n");
    assert_eq!(ctl.ok(&["get", "basic/missing"]), "");

    let json = ctl.json(&["get", "basic/foo"]);
    let kv = &json["kvs"][0];
    assert_eq!(kv["key"], b64("basic/foo"));
    assert_eq!(kv["value"], b64("bar"));
    assert_eq!(kv["version"], 1);
    assert_eq!(kv["create_revision"], kv["mod_revision"]);
    assert_eq!(json["count"], 1);

    ctl.ok(&["put", "basic/foo", "baz"]);
    let json = ctl.json(&["get", "basic/foo"]);
    assert_eq!(json["kvs"][0]["version"], 2);
    assert_eq!(json["kvs"][0]["value"], b64("baz"));
    assert_eq!(
        json["kvs"][0]["mod_revision"].as_i64().unwrap(),
        json["header"]["revision"].as_i64().unwrap()
    );

    // --prev-kv on put prints the old pair after OK.
    assert_eq!(
        ctl.ok(&["put", "basic/foo", "qux", "--prev-kv"]),
        "OK\nbasic/foo\nbaz\n"
    );
}

fn get_prefix_from_key_limit(ctl: &Etcdctl) {
    for (k, v) in [
        ("range/a", "1"),
        ("range/b", "2"),
        ("range/c", "3"),
        ("rangf", "x"),
    ] {
        ctl.ok(&["put", k, v]);
    }
    assert_eq!(
        lines(&ctl.ok(&["get", "range/", "--prefix"])),
        ["range/a", "1", "range/b", "2", "range/c", "3"]
    );
    // --from-key: everything >= the key, including keys outside the prefix.
    let from_text = ctl.ok(&["get", "range/b", "--from-key", "--keys-only"]);
    let from = lines(&from_text)
        .into_iter()
        .filter(|k| k.starts_with("rang"))
        .collect::<Vec<_>>();
    assert_eq!(from, ["range/b", "range/c", "rangf"]);
    // An explicit [key, end) range.
    assert_eq!(
        lines(&ctl.ok(&["get", "range/a", "range/c", "--keys-only"])),
        ["range/a", "range/b"]
    );

    let limited = ctl.json(&["get", "range/", "--prefix", "--limit=2"]);
    assert_eq!(limited["kvs"].as_array().unwrap().len(), 2);
    assert_eq!(limited["more"], true);
    assert_eq!(limited["count"], 3, "count ignores the limit");
    let exact = ctl.json(&["get", "range/", "--prefix", "--limit=3"]);
    assert!(
        exact["more"].is_null() || exact["more"] == false,
        "no more keys: {exact}"
    );
}

fn keys_only_count_only_serializable(ctl: &Etcdctl) {
    for k in ["ko/1", "ko/2", "ko/3"] {
        ctl.ok(&["put", k, "value"]);
    }
    assert_eq!(
        lines(&ctl.ok(&["get", "ko/", "--prefix", "--keys-only"])),
        ["ko/1", "ko/2", "ko/3"]
    );
    let keys_only = ctl.json(&["get", "ko/", "--prefix", "--keys-only"]);
    for kv in keys_only["kvs"].as_array().unwrap() {
        assert!(kv["value"].is_null(), "keys-only returned a value: {kv}");
    }
    // etcdctl gained `--count-only` in 3.5; Debian's 3.4 lacks it. With an etcdctl that has
    // it, check the flag itself; with 3.4, `count` (which ignores `limit`) is checked through
    // `--limit=1`, and `count_only` on the wire is covered by the differential test.
    let help = ctl.ok(&["get", "--help"]);
    if help.contains("--count-only") {
        let count_only = ctl.json(&["get", "ko/", "--prefix", "--count-only"]);
        assert_eq!(count_only["count"], 3);
        assert!(
            count_only["kvs"].is_null(),
            "count-only returned kvs: {count_only}"
        );
    } else {
        let limited = ctl.json(&["get", "ko/", "--prefix", "--limit=1"]);
        assert_eq!(limited["count"], 3, "{limited}");
        assert_eq!(
            limited["kvs"].as_array().map(Vec::len),
            Some(1),
            "{limited}"
        );
    }

    // A serializable read from each member eventually shows the write (it is served locally).
    for endpoint in ctl.endpoints.split(',') {
        let one = Etcdctl {
            endpoints: endpoint.to_string(),
        };
        poll_until(
            "a serializable read to see ko/3",
            Duration::from_secs(10),
            || {
                let out = one.ok(&["get", "ko/3", "--consistency=s"]);
                if out == "ko/3\nvalue\n" {
                    Ok(())
                } else {
                    Err(out)
                }
            },
        );
    }
}

fn get_at_old_revision(ctl: &Etcdctl) {
    ctl.ok(&["put", "rev/k", "v1"]);
    let first = ctl.revision();
    ctl.ok(&["put", "rev/k", "v2"]);
    let rev = first.to_string();
    assert_eq!(
        ctl.ok(&["get", "rev/k", &format!("--rev={rev}")]),
        "rev/k\nv1\n"
    );
    assert_eq!(ctl.ok(&["get", "rev/k"]), "rev/k\nv2\n");
    let old = ctl.json(&["get", "rev/k", &format!("--rev={rev}")]);
    assert!(
        old["header"]["revision"].as_i64().unwrap() > first,
        "header is the current revision"
    );
    let future = format!("--rev={}", ctl.revision() + 100);
    let err = ctl.fails(&["get", "rev/k", &future]);
    assert!(
        err.contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
}

fn delete(ctl: &Etcdctl) {
    for k in ["del/a", "del/b", "del/c"] {
        ctl.ok(&["put", k, "v"]);
    }
    assert_eq!(ctl.ok(&["del", "del/a"]), "1\n");
    assert_eq!(ctl.ok(&["del", "del/a"]), "0\n");
    assert_eq!(ctl.ok(&["del", "del/b", "--prev-kv"]), "1\ndel/b\nv\n");
    ctl.ok(&["put", "del/d", "v"]);
    assert_eq!(ctl.ok(&["del", "del/", "--prefix"]), "2\n");
    assert_eq!(ctl.ok(&["get", "del/", "--prefix"]), "");
}

fn txn_interactive(ctl: &Etcdctl) {
    ctl.ok(&["put", "txn/flag", "on"]);
    // Compares, blank line, success ops, blank line, failure ops, blank line.
    let script =
        "value(\"txn/flag\") = \"on\"\n\nput txn/result yes\nget txn/flag\n\nput txn/result no\n\n";
    let out = ctl.ok_with_stdin(&["txn", "-i"], Some(script));
    let out_lines = lines(&out);
    let start = out_lines
        .iter()
        .position(|l| *l == "SUCCESS")
        .unwrap_or_else(|| panic!("no SUCCESS in {out}"));
    assert_eq!(&out_lines[start..], ["SUCCESS", "OK", "txn/flag", "on"]);
    assert_eq!(ctl.ok(&["get", "txn/result"]), "txn/result\nyes\n");

    let failing = "mod(\"txn/flag\") = \"0\"\n\nput txn/result yes\n\nput txn/result no\n\n";
    let out = ctl.ok_with_stdin(&["txn", "-i"], Some(failing));
    let out_lines = lines(&out);
    let start = out_lines
        .iter()
        .position(|l| *l == "FAILURE")
        .unwrap_or_else(|| panic!("no FAILURE in {out}"));
    assert_eq!(&out_lines[start..], ["FAILURE", "OK"]);
    assert_eq!(ctl.ok(&["get", "txn/result"]), "txn/result\nno\n");

    // Create-if-absent, the Kubernetes idiom.
    let create = "create(\"txn/new\") = \"0\"\n\nput txn/new first\n\n\n";
    assert!(lines(&ctl.ok_with_stdin(&["txn", "-i"], Some(create))).contains(&"SUCCESS"));
    assert!(lines(&ctl.ok_with_stdin(&["txn", "-i"], Some(create))).contains(&"FAILURE"));
}

fn compaction(ctl: &Etcdctl) {
    ctl.ok(&["put", "compact/k", "old"]);
    let old = ctl.revision();
    ctl.ok(&["put", "compact/k", "new"]);
    let current = ctl.revision();
    assert_eq!(
        ctl.ok(&["compaction", &current.to_string()]),
        format!("compacted revision {current}\n")
    );
    let err = ctl.fails(&["get", "compact/k", &format!("--rev={old}")]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    // Reading exactly at the compaction revision still works.
    assert_eq!(
        ctl.ok(&["get", "compact/k", &format!("--rev={current}")]),
        "compact/k\nnew\n"
    );
    let err = ctl.fails(&["compaction", &current.to_string()]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
}

fn endpoint_status_and_health(ctl: &Etcdctl, cluster: &raftkv_client::local_cluster::LocalCluster) {
    let status = ctl.json(&["endpoint", "status"]);
    let entries = status
        .as_array()
        .expect("endpoint status -w json is an array");
    assert_eq!(entries.len(), cluster.len());
    let mut leaders = std::collections::BTreeSet::new();
    let mut member_ids = std::collections::BTreeSet::new();
    let mut leader_count = 0;
    for entry in entries {
        let s = &entry["Status"];
        let member_id = s["header"]["member_id"].as_u64().expect("member_id");
        let leader = s["leader"].as_u64().expect("leader");
        member_ids.insert(member_id);
        leaders.insert(leader);
        if leader == member_id {
            leader_count += 1;
        }
        assert!(
            s["dbSize"].as_i64().unwrap_or(0) > 0,
            "dbSize must be > 0: {s}"
        );
        assert!(s["raftTerm"].as_u64().unwrap_or(0) >= 1, "raftTerm: {s}");
        assert!(s["raftIndex"].as_u64().unwrap_or(0) >= 1, "raftIndex: {s}");
        assert!(
            s["header"]["revision"].as_i64().unwrap_or(0) > 1,
            "header.revision: {s}"
        );
    }
    assert_eq!(
        member_ids.len(),
        cluster.len(),
        "member ids must be distinct: {status}"
    );
    assert_eq!(
        leaders.len(),
        1,
        "all members must agree on the leader: {status}"
    );
    assert_eq!(leader_count, 1, "exactly one member is leader: {status}");
    assert!(member_ids.is_superset(&leaders));

    // --cluster: etcdctl learns the client URLs from MemberList and dials each one.
    let first = Etcdctl {
        endpoints: cluster.endpoints()[0].clone(),
    };
    let via_cluster = first.json(&["endpoint", "status", "--cluster"]);
    assert_eq!(
        via_cluster.as_array().map(Vec::len),
        Some(cluster.len()),
        "{via_cluster}"
    );

    // Every replica has the same history: equal HashKV at the same revision.
    // (HashKV at exactly the compaction revision is "compacted", so write once more first.)
    ctl.ok(&["put", "hash/after-compaction", "x"]);
    let rev = ctl.revision().to_string();
    poll_until(
        "equal hashes on every member",
        Duration::from_secs(15),
        || {
            let hashes = ctl.json(&["endpoint", "hashkv", &format!("--rev={rev}")]);
            let values: std::collections::BTreeSet<String> = hashes
                .as_array()
                .expect("hashkv -w json is an array")
                .iter()
                .map(|h| h["HashKV"]["hash"].to_string())
                .collect();
            if values.len() == 1 && hashes.as_array().map(Vec::len) == Some(cluster.len()) {
                Ok(())
            } else {
                Err(hashes.to_string())
            }
        },
    );

    let table = ctl.ok(&["endpoint", "status", "-w=table"]);
    assert!(
        table.contains("IS LEADER") && table.contains("true"),
        "{table}"
    );

    let out = ctl.run_raw(&["endpoint", "health"], None);
    assert!(
        out.status.success(),
        "endpoint health failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for endpoint in cluster.endpoints() {
        assert!(
            text.contains(&format!("{endpoint} is healthy")),
            "{endpoint} not healthy: {text}"
        );
    }
}

fn member_list(ctl: &Etcdctl, cluster: &raftkv_client::local_cluster::LocalCluster) {
    let list = ctl.json(&["member", "list"]);
    let members = list["members"].as_array().expect("members");
    assert_eq!(members.len(), cluster.len());
    for m in cluster.members() {
        let found = members
            .iter()
            .find(|j| j["name"] == m.name.as_str())
            .unwrap_or_else(|| panic!("member {} missing from {list}", m.name));
        assert_eq!(found["peerURLs"][0], m.peer_url().as_str());
        assert_eq!(found["clientURLs"][0], m.client_url().as_str());
        assert!(found["ID"].as_u64().unwrap_or(0) != 0);
    }
    let table = ctl.ok(&["member", "list"]);
    assert_eq!(lines(&table).len(), cluster.len(), "{table}");
    for line in lines(&table) {
        assert!(line.contains(", started, "), "{line}");
    }
}
