//! Migration from etcd, checked against a real etcd 3.4: a seeded random history (puts,
//! overwrites, deletes, multi-key txns, a compaction) is written to a 3-member etcd, saved
//! with the real `etcdctl snapshot save`, read by `migrate`, and the resulting store must
//! answer a full-range read at every revision etcd still has exactly as etcd answers it:
//! every key, value, create/mod revision and version. Damaged files are refused.
//!
//! `RAFTKV_MIGRATE_SEED=<n>` replays one history.

mod common;

use common::{rows_at, Row};

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, DeleteOptions, GetOptions, Txn, TxnOp};
use proto::etcdserverpb::RangeRequest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEYS: [&str; 8] = ["a", "a/1", "a/2", "b", "c", "c/x", "d", "zz"];

#[test]
fn an_etcd_snapshot_migrates_with_its_whole_history() {
    let seed = common::seed_from_env("RAFTKV_MIGRATE_SEED");
    let cluster = common::start_cluster_of(
        raftkv_client::local_cluster::MemberProgram::Etcd(common::etcd_binary()),
        "mig",
        vec![],
    );
    let endpoint = cluster.member(0).endpoint();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("etcd.snapshot");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = common::connect_answering(&endpoint).await;
        let lease = seed_history(&mut client, seed).await;
        save_snapshot(&endpoint, &file);

        let backend = migrate::read_file(&file).expect("the snapshot reads");
        assert!(
            backend.checksum_verified,
            "etcdctl's SHA-256 trailer was checked"
        );
        let store = backend.into_store().expect("the history imports");

        let latest = client
            .get("", Some(GetOptions::new().with_all_keys()))
            .await
            .unwrap();
        let current = latest.header().unwrap().revision();
        assert_eq!(store.current_revision(), current, "current revision");
        let compacted = store.compact_revision();
        assert!(
            compacted > 1,
            "the seeded history was compacted (at {compacted})"
        );
        for revision in compacted..=current {
            let theirs = rows_at(&client, revision).await;
            let ours: Vec<Row> = store
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
                    let (k, v) = (kv.key.to_vec(), kv.value.to_vec());
                    (
                        k,
                        v,
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        kv.lease,
                    )
                })
                .collect();
            assert_eq!(
                ours, theirs,
                "full range at revision {revision} (seed {seed})"
            );
        }
        eprintln!(
            "compared full ranges at revisions {compacted}..={current}; {} keys live now",
            store.key_count()
        );
        assert!(
            store.key_count() > 0,
            "the seeded history leaves keys behind"
        );
        // Below the compaction, etcd has nothing left and neither has the import.
        let below = store.range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision: compacted - 1,
            ..Default::default()
        });
        assert!(below.is_err(), "a read below the compaction is refused");

        // The same file through the real CLI: `raftkv snapshot restore` for each member of
        // a new raftkv cluster, which then answers every retained revision as etcd does.
        let mut restored = common::start_cluster("migr");
        restored.stop_all(Duration::from_secs(10)).unwrap();
        for i in 0..restored.len() {
            let data_dir = &restored.member(i).data_dir;
            if data_dir.exists() {
                std::fs::remove_dir_all(data_dir).unwrap();
            }
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
            // Keep etcd's revisions and history readable (the default bumps the revision
            // and marks the history compacted, as for any restore).
            cmd.arg("snapshot")
                .arg("restore")
                .arg(&file)
                .arg("--bump-revision=0")
                .arg("--mark-compacted=false");
            cmd.args(restored.member_args(i));
            let out = common::run_with_timeout(cmd, None, Duration::from_secs(30));
            assert!(
                out.status.success(),
                "raftkv snapshot restore of etcd's file failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for i in 0..restored.len() {
            restored.start_member(i).unwrap();
        }
        let mut ours = common::connect_answering(&restored.member(0).endpoint()).await;
        for revision in compacted..=current {
            assert_eq!(
                rows_at(&ours, revision).await,
                rows_at(&client, revision).await,
                "restored raftkv at revision {revision}"
            );
        }
        // The lease came along, holding its keys.
        let ttl = ours
            .lease_time_to_live(
                lease,
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .unwrap();
        assert_eq!(ttl.granted_ttl(), 600);
        assert!(
            ttl.ttl() > 0 && ttl.ttl() <= 600,
            "remaining TTL {}",
            ttl.ttl()
        );
        assert_eq!(ttl.keys(), [b"leased/1".to_vec(), b"leased/2".to_vec()]);
        // New writes continue etcd's revision sequence.
        let put = ours.put("after-migration", "x", None).await.unwrap();
        assert_eq!(put.header().unwrap().revision(), current + 1);
    });
    refuses_damaged_files(&file, dir.path());
}

/// A truncated file, a flipped byte, a file that is not bbolt at all: each is an error
/// that says what is wrong, and nothing panics.
fn refuses_damaged_files(good: &Path, dir: &Path) {
    let bytes = std::fs::read(good).unwrap();
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let err = migrate::read_file(&write("flipped", &flipped)).unwrap_err();
    assert!(
        matches!(err, migrate::MigrateError::ChecksumMismatch),
        "{err}"
    );

    let truncated = &bytes[..bytes.len() - 4096 - 32];
    let err = migrate::read_file(&write("truncated", truncated)).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    let err = migrate::read_file(&write("text", b"hello, this is not a database")).unwrap_err();
    assert!(err.to_string().contains("bbolt"), "{err}");

    // Without the trailer, bbolt's own checks still catch a damaged meta page...
    let mut raw = bytes[..bytes.len() - 32].to_vec();
    let both_metas_broken = {
        let page_size = u32::from_le_bytes(raw[24..28].try_into().unwrap()) as usize;
        raw[16 + 48] ^= 1; // the first meta's txid
        raw[page_size + 16 + 48] ^= 1; // the second's
        raw
    };
    let err = migrate::read_file(&write("metas", &both_metas_broken)).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");

    // ... and an unverified raw database still reads.
    let raw = &bytes[..bytes.len() - 32];
    let backend = migrate::read_file(&write("raw-db", raw)).expect("a raw db reads");
    assert!(!backend.checksum_verified);
}

/// A random history over a few keys: puts (new and overwrites), single and prefix
/// deletes, multi-key txns, and one compaction two thirds of the way.
async fn seed_history(client: &mut Client, seed: u64) -> i64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A lease that outlives the test, with two keys attached.
    let lease = client.lease_grant(600, None).await.unwrap().id();
    for key in ["leased/1", "leased/2"] {
        let opts = etcd_client::PutOptions::new().with_lease(lease);
        client.put(key, "held", Some(opts)).await.unwrap();
    }
    // Enough changes that etcd's `key` bucket spans several pages under a branch page, and
    // one value larger than a page (bbolt's overflow pages).
    const OPS: usize = 600;
    for step in 0..OPS {
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        match rng.gen_range(0..10) {
            0..=5 => {
                let value = format!("v{step}-{}", rng.gen::<u16>());
                client.put(key, value, None).await.unwrap();
            }
            6 => {
                client.delete(key, None).await.unwrap();
            }
            7 => {
                client
                    .delete(key, Some(DeleteOptions::new().with_prefix()))
                    .await
                    .unwrap();
            }
            _ => {
                let other = KEYS[rng.gen_range(0..KEYS.len())];
                let ops = vec![
                    TxnOp::put(key, format!("t{step}"), None),
                    TxnOp::put(format!("{other}/txn"), format!("t{step}"), None),
                ];
                client.txn(Txn::new().and_then(ops)).await.unwrap();
            }
        }
        if step == OPS * 2 / 3 {
            let rev = client
                .get("a", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
            client.compact(rev - 10, None).await.unwrap();
        }
    }
    let big = format!("{seed:x}").repeat(1_000);
    client.put("big", big, None).await.unwrap();
    lease
}

fn save_snapshot(endpoint: &str, file: &Path) {
    let mut cmd = Command::new(common::etcdctl_binary());
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("snapshot")
        .arg("save")
        .arg(file);
    let out = common::run_with_timeout(cmd, None, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "etcdctl snapshot save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The live path: `etcdctl make-mirror` from a running etcd into raftkv copies what exists
/// and then follows new writes and deletes (values only: make-mirror writes through the
/// KV API, so raftkv assigns its own revisions).
#[test]
fn etcdctl_make_mirror_copies_a_live_etcd_into_raftkv() {
    let source = common::start_cluster_of(
        raftkv_client::local_cluster::MemberProgram::Etcd(common::etcd_binary()),
        "mms",
        vec![],
    );
    let dest = common::start_cluster("mmd");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut etcd = common::connect_answering(&source.member(0).endpoint()).await;
        let mut raftkv = common::connect_answering(&dest.member(0).endpoint()).await;
        for i in 0..50 {
            etcd.put(format!("before/{i:02}"), format!("v{i}"), None)
                .await
                .unwrap();
        }
        let mut mirror = std::process::Command::new(common::etcdctl_binary())
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(source.member(0).endpoint())
            .arg("make-mirror")
            .arg(dest.member(0).endpoint())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot start etcdctl make-mirror");
        // Writes while the mirror runs: new keys, overwrites, a delete.
        for i in 0..20 {
            etcd.put(format!("during/{i:02}"), format!("w{i}"), None)
                .await
                .unwrap();
        }
        etcd.put("before/00", "changed", None).await.unwrap();
        etcd.delete("before/01", None).await.unwrap();

        let expected = all_pairs(&mut etcd).await;
        assert_eq!(expected.len(), 69);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = all_pairs(&mut raftkv).await;
            if got == expected {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = mirror.kill();
                panic!(
                    "raftkv never caught up with etcd through make-mirror: {} of {} keys",
                    got.len(),
                    expected.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        mirror.kill().expect("stop make-mirror");
        let _ = mirror.wait();
    });
}

async fn all_pairs(client: &mut Client) -> Vec<(Vec<u8>, Vec<u8>)> {
    client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
        .collect()
}
