//! raftkv's state exported as an etcd backend (`migrate::export`, what `Maintenance/
//! Snapshot` streams), read by etcd's own tools: `etcdctl snapshot status` checks it and
//! reports raftkv's revision, `etcdctl snapshot restore` turns it into a data dir, and a
//! real etcd 3.4 started on that dir answers a full-range read at every retained revision
//! exactly as raftkv's store does (every key, value, create/mod revision, version, lease),
//! and holds the lease with its keys. The other direction is `migrate_from_etcd.rs`.
//!
//! `RAFTKV_EXPORT_SEED=<n>` replays one history.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::GetOptions;
use mvcc::Store;
use proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use proto::raftkvpb::{internal_request::Request, InternalRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::{rows_at, Row};

const LEASE: i64 = 0x1234;

#[test]
fn etcd_restores_an_exported_store_and_serves_the_same_history() {
    let seed = common::seed_from_env("RAFTKV_EXPORT_SEED");
    let store = random_store(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("raftkv.snapshot");
    let mut bytes = migrate::export(&store, 42).expect("export");
    let sha = server::backup::trailer(&bytes);
    bytes.extend_from_slice(&sha);
    std::fs::write(&file, &bytes).unwrap();

    // `snapshot status`: bbolt's tx.Check passes, the revision is raftkv's.
    let status = etcdctl(&["snapshot", "status", "-w", "json"], &file);
    let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["revision"], store.current_revision(), "{status}");
    assert_eq!(status["totalSize"], (bytes.len() - 32) as u64, "{status}");

    // `snapshot restore` into a fresh data dir, then a real etcd on it.
    let ports = raftkv_client::local_cluster::free_loopback_ports(2).expect("ports");
    let (client_url, peer_url) = (
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
    );
    let data_dir = dir.path().join("etcd-data");
    let cluster = format!("restored={peer_url}");
    let restore = etcdctl(
        &[
            "snapshot",
            "restore",
            "--name",
            "restored",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--initial-cluster",
            &cluster,
            "--initial-advertise-peer-urls",
            &peer_url,
        ],
        &file,
    );
    assert!(restore.contains("added member"), "{restore}");
    let _etcd = EtcdProcess::start(
        &data_dir,
        &client_url,
        &peer_url,
        &dir.path().join("etcd.log"),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = common::connect_answering(&client_url).await;
        let latest = client
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .unwrap();
        let current = store.current_revision();
        assert_eq!(latest.header().unwrap().revision(), current);
        let compacted = store.compact_revision();
        assert!(compacted > 1, "the history was compacted (at {compacted})");
        for revision in compacted..=current {
            assert_eq!(
                rows_at(&client, revision).await,
                ours_at(&store, revision),
                "full range at revision {revision} (seed {seed})"
            );
        }
        let below = client
            .get(
                "",
                Some(
                    GetOptions::new()
                        .with_all_keys()
                        .with_revision(compacted - 1),
                ),
            )
            .await;
        assert!(below.is_err(), "etcd knows the compaction too");
        let ttl = client
            .lease_time_to_live(
                LEASE,
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .unwrap();
        assert_eq!(ttl.granted_ttl(), 600);
        // etcd lists a lease's keys from a Go map, in no fixed order.
        let mut keys = ttl.keys().to_vec();
        keys.sort();
        assert_eq!(keys, [b"leased/1".to_vec(), b"leased/2".to_vec()]);
        let put = client.put("after-restore", "x", None).await.unwrap();
        assert_eq!(put.header().unwrap().revision(), current + 1);
        eprintln!(
            "etcd serves revisions {compacted}..={current} as raftkv did; {} keys live",
            store.key_count()
        );
    });
}

/// Runs etcdctl on `file` (last argument); returns stdout and stderr, failing on error.
fn etcdctl(args: &[&str], file: &Path) -> String {
    let mut cmd = Command::new(common::etcdctl_binary());
    cmd.env("ETCDCTL_API", "3").args(args).arg(file);
    let out = common::run_with_timeout(cmd, None, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "etcdctl {args:?} failed: {text}");
    if args.contains(&"json") {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        text
    }
}

/// A single etcd member on a restored data dir, killed when dropped.
struct EtcdProcess(Child);

impl EtcdProcess {
    fn start(data_dir: &Path, client_url: &str, peer_url: &str, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(common::etcd_binary())
            .args(["--name", "restored", "--data-dir"])
            .arg(data_dir)
            .args(["--listen-client-urls", client_url])
            .args(["--advertise-client-urls", client_url])
            .args(["--listen-peer-urls", peer_url])
            .args(["--initial-advertise-peer-urls", peer_url])
            .args(["--initial-cluster", &format!("restored={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        EtcdProcess(child)
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn apply(store: &mut Store, request: Request) {
    store
        .apply(&InternalRequest {
            auth: None,
            request: Some(request),
        })
        .expect("the request applies");
}

fn put(key: &str, value: Vec<u8>, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: value.into(),
        lease,
        ..Default::default()
    }
}

/// A random history over a few keys: puts (some bigger than a bbolt page), deletes,
/// two-key txns, one compaction half way; a lease with two keys; a put last, so the
/// newest change is at the store's revision.
fn random_store(seed: u64) -> Store {
    const KEYS: [&str; 8] = ["a", "a/1", "a/2", "b", "c", "c/x", "d", "zz"];
    const OPS: usize = 1500;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut store = Store::new();
    apply(
        &mut store,
        Request::LeaseGrant(LeaseGrantRequest {
            ttl: 600,
            id: LEASE,
        }),
    );
    for key in ["leased/1", "leased/2"] {
        apply(&mut store, Request::Put(put(key, b"held".to_vec(), LEASE)));
    }
    for step in 0..OPS {
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        match rng.gen_range(0..10) {
            0..=5 => {
                let len = if rng.gen_range(0..50) == 0 { 10_000 } else { 8 };
                let value = format!("v{step}-").repeat(len / 4).into_bytes();
                apply(&mut store, Request::Put(put(key, value, 0)));
            }
            6 => apply(
                &mut store,
                Request::DeleteRange(DeleteRangeRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    range_end: Bytes::from(mvcc::key_range::prefix_end(key.as_bytes())),
                    ..Default::default()
                }),
            ),
            _ => {
                let other = format!("{}/txn", KEYS[rng.gen_range(0..KEYS.len())]);
                let ops = [key, other.as_str()]
                    .iter()
                    .map(|k| RequestOp {
                        request: Some(request_op::Request::RequestPut(put(
                            k,
                            format!("t{step}").into_bytes(),
                            0,
                        ))),
                    })
                    .collect();
                apply(
                    &mut store,
                    Request::Txn(TxnRequest {
                        success: ops,
                        ..Default::default()
                    }),
                );
            }
        }
        if step == OPS / 2 {
            let revision = store.current_revision() - 10;
            apply(
                &mut store,
                Request::Compaction(CompactionRequest {
                    revision,
                    physical: true,
                }),
            );
        }
    }
    apply(&mut store, Request::Put(put("last", b"1".to_vec(), 0)));
    store
}

fn ours_at(store: &Store, revision: i64) -> Vec<Row> {
    store
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("raftkv range at {revision}: {e:?}"))
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.to_vec(),
                kv.value.to_vec(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
            )
        })
        .collect()
}
