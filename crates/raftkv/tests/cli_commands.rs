//! The `raftkv` client commands as a user runs them: the binary against a live cluster,
//! checked on stdout, stderr and exit status — including endpoint failover and errors.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Cli {
    endpoints: String,
}

impl Cli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
        command
            .arg(format!("--endpoints={}", self.endpoints))
            .args(args);
        run_with_timeout(command, stdin, Duration::from_secs(30))
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "raftkv {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("invalid JSON from {args:?} ({e}): {text}"))
    }
}

#[test]
fn client_commands_against_a_cluster() {
    let cluster = start_cluster("cli");
    // A dead endpoint first: every command must fail over to the live ones.
    let dead = raftkv_client::local_cluster::free_loopback_ports(1).expect("port")[0];
    let cli = Cli {
        endpoints: format!("127.0.0.1:{dead},{}", cluster.endpoints().join(",")),
    };
    poll_until(
        "the cluster to serve reads",
        Duration::from_secs(30),
        || {
            let out = cli.run(&["get", "probe"], None);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );

    assert_eq!(cli.ok(&["put", "cli/a", "1"]), "OK\n");
    assert_eq!(cli.ok(&["put", "cli/b", "two words"]), "OK\n");
    assert_eq!(
        cli.ok(&["put", "cli/a", "3", "--prev-kv"]),
        "OK\ncli/a\n1\n"
    );
    assert_eq!(cli.ok(&["get", "cli/a"]), "cli/a\n3\n");
    assert_eq!(
        cli.ok(&["get", "cli/", "--prefix"]),
        "cli/a\n3\ncli/b\ntwo words\n"
    );
    assert_eq!(
        cli.ok(&["get", "cli/", "--prefix", "--keys-only"]),
        "cli/a\ncli/b\n"
    );
    assert_eq!(cli.ok(&["get", "cli/", "--prefix", "--count-only"]), "2\n");
    assert_eq!(cli.ok(&["get", "cli/a", "--print-value-only"]), "3\n");
    assert_eq!(
        cli.ok(&["get", "cli/a", "--consistency", "s"])
            .lines()
            .count(),
        2
    );

    let limited = cli.json(&["get", "cli/", "--prefix", "--limit", "1"]);
    assert_eq!(limited["count"], 2);
    assert_eq!(limited["more"], true);
    assert_eq!(limited["kvs"].as_array().map(Vec::len), Some(1));

    let a = cli.json(&["get", "cli/a"]);
    let mod_rev = a["kvs"][0]["mod_revision"].as_i64().expect("mod_revision");
    let create_rev = a["kvs"][0]["create_revision"]
        .as_i64()
        .expect("create_revision");
    assert_eq!(a["kvs"][0]["version"], 2);
    assert_eq!(
        cli.ok(&["get", "cli/a", &format!("--rev={create_rev}")]),
        "cli/a\n1\n"
    );
    let descending = cli.ok(&[
        "get",
        "cli/",
        "--prefix",
        "--keys-only",
        "--sort-by=KEY",
        "--order=DESCEND",
    ]);
    assert_eq!(descending, "cli/b\ncli/a\n");

    // Transactions from stdin, etcdctl's format.
    // The first run changes cli/a's mod revision, so the same script then fails.
    let script = format!(
        "mod(\"cli/a\") = \"{mod_rev}\"\n\nput cli/a \"from txn\"\nget cli/b\n\nput cli/c lost\n\n"
    );
    assert_eq!(
        cli.ok_stdin(&["txn"], Some(&script)),
        "SUCCESS\n\nOK\n\ncli/b\ntwo words\n"
    );
    assert_eq!(cli.ok_stdin(&["txn"], Some(&script)), "FAILURE\n\nOK\n");
    assert_eq!(cli.ok(&["get", "cli/a"]), "cli/a\nfrom txn\n");
    assert_eq!(cli.ok(&["get", "cli/c"]), "cli/c\nlost\n");

    assert_eq!(cli.ok(&["del", "cli/c", "--prev-kv"]), "1\ncli/c\nlost\n");
    assert_eq!(cli.ok(&["del", "cli/", "--prefix"]), "2\n");
    assert_eq!(cli.ok(&["get", "cli/", "--prefix"]), "");

    let rev = cli.json(&["get", "probe"])["header"]["revision"]
        .as_i64()
        .expect("revision");
    assert_eq!(
        cli.ok(&["compact", &rev.to_string()]),
        format!("compacted revision {rev}\n")
    );

    // Errors: etcd's message on stderr, exit status 1, nothing on stdout.
    let out = cli.run(&["get", "cli/a", &format!("--rev={}", rev - 1)], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("etcdserver: mvcc: required revision has been compacted"),
        "{stderr}"
    );
    let out = cli.run(&["put", "", "v"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: key is not provided"));
    let out = cli.run(&["txn"], Some("size(\"k\") = \"1\"\n\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown compare target"));

    // Cluster information: the dead endpoint is reported, the live ones are printed.
    let out = cli.run(&["status", "-w", "json"], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreachable endpoint makes status fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{dead}")));
    let rows: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    let leaders: Vec<bool> = rows
        .iter()
        .map(|r| r["Status"]["leader"] == r["Status"]["header"]["member_id"])
        .collect();
    assert_eq!(
        leaders.iter().filter(|l| **l).count(),
        1,
        "one leader: {rows:?}"
    );

    let members = cli.json(&["members"]);
    let names: Vec<&str> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or(""))
        .collect();
    for m in cluster.members() {
        assert!(
            names.contains(&m.name.as_str()),
            "{} missing from {names:?}",
            m.name
        );
    }
    assert!(cli.ok(&["members", "-w", "table"]).contains("PEER ADDRS"));

    // Only dead endpoints: a clear error, exit 1.
    let nowhere = Cli {
        endpoints: format!("127.0.0.1:{dead}"),
    };
    let out = nowhere.run(&["get", "k"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error: "));
}
