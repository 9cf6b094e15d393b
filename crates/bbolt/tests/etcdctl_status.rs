//! Files from [`bbolt::write_db`] opened by the real bbolt: `etcdctl snapshot status`
//! (Debian's etcd-client) opens the file read-only, runs `tx.Check()` (every page reachable
//! or free, none twice, only branch and leaf pages in trees) and counts every key of every
//! bucket. A missing etcdctl fails the test: it is the point of the test.

use std::path::Path;
use std::process::Command;

use bbolt::{write_db, BucketContents, MAX_KEY_SIZE};

/// Runs `etcdctl snapshot status -w json` on `path`; returns its JSON answer.
fn status(path: &Path) -> serde_json::Value {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .expect("etcdctl must be installed (Debian package etcd-client)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "etcdctl snapshot status failed: {stdout}{stderr}"
    );
    assert!(!stderr.contains("integrity"), "{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn bucket(name: &str, entries: Vec<(Vec<u8>, Vec<u8>)>) -> BucketContents {
    BucketContents {
        name: name.as_bytes().to_vec(),
        entries,
    }
}

/// A revision key of etcd's `key` bucket.
fn revision(main: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&0u64.to_be_bytes());
    k
}

fn check(buckets: &[BucketContents], expected_revision: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let file = write_db(buckets).unwrap();
    std::fs::write(&path, &file).unwrap();
    let s = status(&path);
    let keys: usize = buckets.iter().map(|b| b.entries.len()).sum();
    assert_eq!(s["totalKey"], keys as u64, "{s}");
    assert_eq!(s["revision"], expected_revision, "{s}");
    assert_eq!(s["totalSize"], file.len() as u64, "{s}");
}

#[test]
fn etcdctl_reads_small_large_and_deep_files() {
    // Nothing at all, and one empty bucket.
    check(&[], 0);
    check(&[bucket("key", vec![])], 0);

    // Many revisions in `key` (three-level tree), values of every size up to 100 KiB in
    // another bucket (overflow pages), keys near bbolt's limit (overflowing branches).
    let keys: Vec<_> = (1..=80_000u64)
        .map(|r| (revision(r), format!("value {r}").into_bytes()))
        .collect();
    let sizes: Vec<_> = [0usize, 1, 4000, 4096, 5000, 65_536, 102_400]
        .iter()
        .enumerate()
        .map(|(i, &n)| (vec![b'a' + i as u8], vec![i as u8; n]))
        .collect();
    let long: Vec<_> = (0..4u8)
        .map(|i| (vec![b'k' + i; MAX_KEY_SIZE - 8], vec![i; 10]))
        .collect();
    check(
        &[
            bucket("empty", vec![]),
            bucket("key", keys),
            bucket("long", long),
            bucket("sizes", sizes),
        ],
        80_000,
    );
}

#[test]
fn etcdctl_reports_a_damaged_written_file() {
    // The check above must be able to fail: a written file with one tree page pointed at
    // twice is refused by bbolt's check.
    let keys: Vec<_> = (1..=2_000u64)
        .map(|r| (revision(r), vec![7u8; 100]))
        .collect();
    let mut file = write_db(&[bucket("key", keys)]).unwrap();
    // Point the first branch page's second child at page 2, the first leaf, again.
    let db = bbolt::Db::from_bytes(file.clone()).unwrap();
    let high = db.meta().high_water_page as usize;
    let branch_page = (2..high)
        .find(|&p| file[p * 4096 + 8] == 0x01)
        .expect("a branch page");
    let second_child = branch_page * 4096 + 16 + 16 + 8;
    file[second_child..second_child + 8].copy_from_slice(&2u64.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, &file).unwrap();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&path)
        .output()
        .expect("etcdctl must be installed (Debian package etcd-client)");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("integrity check failed"), "{all}");
}
