//! `raftkv snapshot save|status|restore` as an operator runs them, and what etcdctl 3.4 does
//! with the same backup: `etcdctl snapshot save` gets a file `raftkv snapshot status` reads
//! and etcdctl's own `snapshot status` checks (it is a bbolt file in etcd's layout),
//! `etcdctl snapshot restore` takes it, and refuses a damaged one with its `expected
//! sha256` check. A backup in raftkv's earlier `RKVBAK01` format still reads.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// A member process started by the test, killed when the test ends (or fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn raftkv(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    command.args(args);
    run_with_timeout(command, None, Duration::from_secs(60))
}

fn ok(args: &[&str]) -> String {
    let out = raftkv(args);
    assert!(
        out.status.success(),
        "raftkv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn save_status_restore_and_etcdctls_view_of_the_file() {
    let cluster = start_cluster_of(raftkv_program(), "snap", Vec::new());
    let endpoint = cluster.member(1).endpoint();
    let ep_flag = format!("--endpoints={endpoint}");
    poll_until(
        "the cluster to take writes",
        Duration::from_secs(30),
        || {
            let out = raftkv(&[&ep_flag, "put", "probe", "1"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    for i in 0..10 {
        ok(&[&ep_flag, "put", &format!("k{i}"), &format!("v{i}")]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let file_s = file.to_str().unwrap();

    // save: one endpoint only; the file is there with etcdctl's length rule.
    let two = format!("--endpoints={endpoint},{}", cluster.member(0).endpoint());
    let refused = raftkv(&[&two, "snapshot", "save", file_s]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("one selected node"));
    let out = raftkv(&[&ep_flag, "snapshot", "save", file_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("Snapshot saved at {file_s}")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("(100%)"));
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32);

    // status: the revision and the keys (probe + k0..k9).
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["-w", "json", "snapshot", "status", file_s])).unwrap();
    assert_eq!(status["revision"], 12, "{status}");
    assert_eq!(status["totalKey"], 11, "{status}");
    let hashkv = ok(&[&ep_flag, "-w", "json", "hashkv", "--rev", "12"]);
    assert!(
        hashkv.contains(&format!("\"hash\":{}", status["hash"])),
        "status {status} vs hashkv {hashkv}"
    );

    // etcdctl's save of the same member gives a file raftkv reads.
    let etcdctl_file = dir.path().join("by-etcdctl.db");
    let mut save = Command::new(etcdctl_binary());
    save.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["snapshot", "save", etcdctl_file.to_str().unwrap()]);
    let saved = run_with_timeout(save, None, Duration::from_secs(30));
    assert!(saved.status.success(), "{saved:?}");
    let by_etcdctl: serde_json::Value = serde_json::from_str(&ok(&[
        "-w",
        "json",
        "snapshot",
        "status",
        etcdctl_file.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(by_etcdctl["revision"], 12);

    // etcdctl's own status: bbolt's integrity check passes; the revision is ours; the keys
    // are every bbolt key: 11 revisions, meta's consistent_index, auth's 2, cluster's 1,
    // raftkv's image.
    let mut status = Command::new(etcdctl_binary());
    status.env("ETCDCTL_API", "3").args([
        "snapshot",
        "status",
        "-w",
        "json",
        etcdctl_file.to_str().unwrap(),
    ]);
    let out = run_with_timeout(status, None, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let theirs: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(theirs["revision"], 12, "{theirs}");
    assert_eq!(theirs["totalKey"], 11 + 1 + 2 + 1 + 1, "{theirs}");

    // etcdctl's restore takes the same file.
    let mut restore = Command::new(etcdctl_binary());
    restore.env("ETCDCTL_API", "3").args([
        "snapshot",
        "restore",
        "--data-dir",
        dir.path().join("etcd-restore-good").to_str().unwrap(),
        etcdctl_file.to_str().unwrap(),
    ]);
    let out = run_with_timeout(restore, None, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("added member"));

    // A backup in raftkv's earlier format (RKVBAK01 envelope) reads as before.
    let store = server::restore::read_backup(&file).unwrap();
    let mut legacy = server::backup::legacy_payload(&store.snapshot());
    let sha = server::backup::trailer(&legacy);
    legacy.extend_from_slice(&sha);
    let legacy_file = dir.path().join("legacy.db");
    std::fs::write(&legacy_file, &legacy).unwrap();
    let old: serde_json::Value = serde_json::from_str(&ok(&[
        "-w",
        "json",
        "snapshot",
        "status",
        legacy_file.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(old["revision"], 12, "{old}");
    assert_eq!(
        old["hash"],
        status_hash(&ok(&["-w", "json", "snapshot", "status", file_s]))
    );

    // A damaged file: refused by raftkv and by etcdctl's own sha256 check.
    let damaged = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[..512].fill(0);
    std::fs::write(&damaged, &bytes).unwrap();
    let out = raftkv(&["snapshot", "status", damaged.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected sha256"));
    let mut restore = Command::new(etcdctl_binary());
    restore.env("ETCDCTL_API", "3").args([
        "snapshot",
        "restore",
        "--data-dir",
        dir.path().join("etcd-restore").to_str().unwrap(),
        damaged.to_str().unwrap(),
    ]);
    let refused = run_with_timeout(restore, None, Duration::from_secs(30));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("expected sha256"));

    // restore (defaults: revision bumped by 1e9 and compacted there): a one-member cluster
    // from the backup serves the keys with their revisions; old revisions are compacted.
    let ports = raftkv_client::local_cluster::free_loopback_ports(2).unwrap();
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let data_dir = dir.path().join("restored");
    let initial = format!("r0={peer}");
    let restore_flags = [
        "--name",
        "r0",
        "--initial-cluster",
        initial.as_str(),
        "--initial-advertise-peer-urls",
        peer.as_str(),
        "--initial-cluster-token",
        "restored",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let mut args = vec!["snapshot", "restore", file_s];
    args.extend(restore_flags);
    let said = ok(&args);
    assert!(said.contains("added member"), "{said}");
    assert!(said.contains("revision 1000000012, 11 keys"), "{said}");
    // Not into a data dir that holds something.
    let again = raftkv(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let mut member = Command::new(env!("CARGO_BIN_EXE_raftkv"));
    member
        .arg("server")
        .args(restore_flags)
        .args(["--listen-peer-urls", &peer, "--listen-client-urls", &client])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _member = KillOnDrop(member.spawn().unwrap());
    let restored_ep = format!("--endpoints=127.0.0.1:{}", ports[0]);
    let got = poll_until(
        "the restored member to serve",
        Duration::from_secs(30),
        || {
            let out = raftkv(&[&restored_ep, "get", "k7", "-w", "json"]);
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["header"]["revision"], 1_000_000_012_i64, "{got}");
    assert_eq!(got["kvs"][0]["mod_revision"], 10, "{got}");
    let old = raftkv(&[&restored_ep, "get", "k7", "--rev", "12"]);
    assert!(!old.status.success());
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    ok(&[&restored_ep, "put", "after", "restore"]);
    let after = ok(&[&restored_ep, "get", "after", "-w", "json"]);
    assert!(after.contains("\"mod_revision\":1000000013"), "{after}");
}

/// The `hash` field of `raftkv snapshot status -w json`.
fn status_hash(json: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(json).unwrap()["hash"].clone()
}
