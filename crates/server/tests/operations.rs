//! Day-two operations on real member processes: `/metrics` on every member (and on
//! `--listen-metrics-urls`), the NOSPACE alarm under `--quota-backend-bytes`, Defragment,
//! and a backup streamed from a follower under write load, restored into a new cluster.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::Parser;
use common::*;
use proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, CompactionRequest, DefragmentRequest,
    DeleteRangeRequest, HashKvRequest, RangeRequest, SnapshotRequest,
};
use raftkv_client::local_cluster::free_loopback_ports;

/// `GET path` over HTTP/1.1 on `127.0.0.1:port`; (status code, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Axum answers small bodies with Content-Length; a chunked body keeps its chunk
    // sizes in this naive read, which the line-based checks below ignore.
    (code, body.to_string())
}

fn scrape(c: &Cluster, i: usize) -> String {
    let (code, body) = http_get(c.local.member(i).client_port, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the series whose line starts with `series ` (name plus labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_exports_etcds_metrics() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    // Every member knows the leader; exactly one says it is the leader.
    let mut leaders = 0.0;
    for i in 0..3 {
        let text = poll(
            "has_leader on every member",
            Duration::from_secs(10),
            || {
                let t = scrape(&c, i);
                async move { (sample(&t, "etcd_server_has_leader") == Some(1.0)).then_some(t) }
            },
        )
        .await;
        leaders += sample(&text, "etcd_server_is_leader").expect("is_leader");
        for name in [
            "etcd_server_leader_changes_seen_total",
            "etcd_server_proposals_committed_total",
            "etcd_server_proposals_applied_total",
            "etcd_server_proposals_pending",
            "etcd_server_proposals_failed_total",
            "etcd_server_slow_apply_total",
            "etcd_mvcc_db_total_size_in_bytes",
            "etcd_debugging_mvcc_keys_total",
            "etcd_disk_wal_fsync_duration_seconds_count",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
        ] {
            assert!(sample(&text, name).is_some(), "m-{i} lacks {name}:\n{text}");
        }
        assert!(sample(&text, "etcd_server_leader_changes_seen_total").unwrap() >= 1.0);
    }
    assert_eq!(leaders, 1.0, "exactly one member is the leader");

    // Writes move the fsync histogram, the put counter and the gRPC counters.
    let before = scrape(&c, follower);
    let fsyncs_before = sample(&before, "etcd_disk_wal_fsync_duration_seconds_count").unwrap();
    let puts_before = sample(&before, "etcd_mvcc_put_total").unwrap_or(0.0);
    for i in 0..20 {
        put_retrying(&c, follower, &format!("k{i}"), "v").await;
    }
    // An error the server answers: a range without a key (INVALID_ARGUMENT).
    let mut kv = c.kv(follower).await;
    let refused = kv.range(RangeRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let after = scrape(&c, follower);
    let fsyncs_after = sample(&after, "etcd_disk_wal_fsync_duration_seconds_count").unwrap();
    assert!(
        fsyncs_after >= fsyncs_before + 1.0,
        "fsync count {fsyncs_before} -> {fsyncs_after}"
    );
    assert!(sample(&after, "etcd_mvcc_put_total").unwrap() >= puts_before + 20.0);
    let put_ok = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert!(sample(&after, put_ok).unwrap() >= 20.0, "{after}");
    let put_started = "grpc_server_started_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert!(sample(&after, put_started).unwrap() >= 20.0);
    let range_invalid = "grpc_server_handled_total{grpc_code=\"InvalidArgument\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
    assert_eq!(sample(&after, range_invalid), Some(1.0), "{after}");
    assert!(sample(&after, "etcd_debugging_mvcc_keys_total").unwrap() >= 20.0);
    // Peer traffic is counted per peer, by hex member id.
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("etcd_network_peer_sent_bytes_total{To=\"")),
        "{after}"
    );
    assert!(after
        .lines()
        .any(|l| l.starts_with("etcd_network_peer_received_bytes_total{From=\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_metrics_urls_serve_metrics_and_health() {
    let port = free_loopback_ports(1).unwrap()[0];
    let flag = format!("--listen-metrics-urls=http://127.0.0.1:{port}");
    let c = Cluster::start(1, &[flag.as_str()]);
    c.leader().await;
    let text = poll("metrics port", Duration::from_secs(10), || async move {
        let (code, body) = http_get(port, "/metrics");
        (code == 200 && sample(&body, "etcd_server_has_leader") == Some(1.0)).then_some(body)
    })
    .await;
    assert_eq!(sample(&text, "etcd_server_is_leader"), Some(1.0));
    assert_eq!(http_get(port, "/health").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_refuses_puts_until_compacted_and_disarmed() {
    let c = Cluster::start(3, &["--quota-backend-bytes=65536"]);
    let leader = c.leader().await;
    let writer = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut kv = c.kv(writer).await;
    let value = "b".repeat(4096);
    let mut accepted = 0;
    let refused = loop {
        match kv.put(put("big", &value)).await {
            Ok(_) => accepted += 1,
            Err(s) => break s,
        }
        assert!(accepted < 100, "the quota never refused a put");
    };
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert!(accepted >= 5, "refused too early: after {accepted} puts");

    // The alarm is cluster-wide: another member lists it and refuses puts from the log.
    let writer_id = c.status(writer).await.unwrap().header.unwrap().member_id;
    let mut m_other = c.maintenance(other).await;
    let listed = poll("alarm on another member", Duration::from_secs(10), || {
        let mut m = m_other.clone();
        async move {
            let r = m.alarm(AlarmRequest::default()).await.ok()?.into_inner();
            (!r.alarms.is_empty()).then_some(r.alarms)
        }
    })
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].member_id, writer_id);
    assert_eq!(listed[0].alarm, AlarmType::Nospace as i32);
    let mut kv_other = c.kv(other).await;
    let small = kv_other.put(put("small", "x")).await.unwrap_err();
    assert_eq!(small.message(), "etcdserver: mvcc: database space exceeded");
    let st = c.status(other).await.unwrap();
    assert_eq!(
        st.errors,
        vec![format!("memberID:{writer_id} alarm:NOSPACE ")]
    );
    assert_eq!(st.db_size_quota, 65536);
    let (code, body) = http_get(c.local.member(other).client_port, "/health");
    assert_eq!((code, body.as_str()), (503, "{\"health\":\"false\"}"));

    // Reads and deletes still work; compaction frees the history; defragment compacts the
    // member's log; then the operator disarms and puts work again.
    let got = kv_other.range(get("big")).await.unwrap().into_inner();
    assert_eq!(got.kvs.len(), 1);
    let del = kv_other
        .delete_range(DeleteRangeRequest {
            key: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.deleted, 1);
    let rev = del.header.unwrap().revision;
    kv_other
        .compact(CompactionRequest {
            revision: rev,
            physical: true,
        })
        .await
        .unwrap();
    for i in 0..3 {
        c.maintenance(i)
            .await
            .defragment(DefragmentRequest {})
            .await
            .unwrap_or_else(|e| panic!("defragment m-{i}: {e}"));
    }
    assert!(
        c.log(writer).contains("snapshot saved and log compacted"),
        "{}",
        c.log(writer)
    );
    // As `etcdctl alarm disarm`: list, then deactivate each. (The refused small put above
    // may have raised a second NOSPACE alarm, for `other`, if its store was within 262
    // bytes of the quota.)
    let active = m_other
        .alarm(AlarmRequest::default())
        .await
        .unwrap()
        .into_inner()
        .alarms;
    assert!(active.iter().any(|a| a.member_id == writer_id));
    for a in active {
        let disarmed = m_other
            .alarm(AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: a.member_id,
                alarm: a.alarm,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(disarmed.alarms, vec![a]);
    }
    poll("put after disarm", Duration::from_secs(10), || {
        let mut kv = kv.clone();
        async move { kv.put(put("after", "disarm")).await.ok() }
    })
    .await;
    assert_eq!(
        http_get(c.local.member(other).client_port, "/health").0,
        200
    );
    m_other
        .status(proto::etcdserverpb::StatusRequest {})
        .await
        .unwrap();
    let _ = m_other.alarm(AlarmRequest::default()).await.unwrap();
}

/// Server flags of `args`, parsed the way `raftkv snapshot restore` parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: server::ServerArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_follower_under_load_restores_into_a_new_cluster() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    for i in 0..50 {
        put_retrying(&c, leader, &format!("key{i:02}"), &format!("v{i}")).await;
    }
    // A follower applies a little after the leader acknowledged: wait until it has all 50.
    poll(
        "the follower applied the 50 keys",
        Duration::from_secs(10),
        || async {
            value(&c, follower, "key49", true)
                .await
                .filter(|v| v == "v49")
        },
    )
    .await;
    // Writers keep going while the backup streams from a follower.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let client = c.client(leader);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 2000 {
                let _ = client.put_str(&format!("load{n}"), "x").await;
                n += 1;
            }
            n
        })
    };
    let mut m = c.maintenance(follower).await;
    let mut stream = m.snapshot(SnapshotRequest {}).await.unwrap().into_inner();
    let mut file = Vec::new();
    let mut last_remaining = u64::MAX;
    while let Some(msg) = stream.message().await.unwrap() {
        assert!(
            msg.remaining_bytes <= last_remaining,
            "remaining_bytes counts down"
        );
        last_remaining = msg.remaining_bytes;
        file.extend_from_slice(&msg.blob);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // The stream's end is after the duration was recorded.
    let scraped = scrape(&c, follower);
    assert_eq!(
        sample(
            &scraped,
            "etcd_disk_backend_snapshot_duration_seconds_count"
        ),
        Some(1.0),
        "{scraped}"
    );
    let written = load.await.unwrap();
    assert!(written > 0);
    assert_eq!(file.len() % 512, 32, "etcdctl's length rule");
    // An etcd backend (bbolt) carrying raftkv's image, which etcd's layout agrees with.
    let image = server::backup::open(&file).expect("a valid backup");
    let original = mvcc::Store::restore(&image).expect("a valid store image");
    let as_etcd = migrate::EtcdBackend::parse(file.clone()).expect("etcd's layout reads");
    assert!(as_etcd.checksum_verified);
    assert_eq!(as_etcd.current_revision, original.current_revision());
    let rev = original.current_revision();
    assert!(rev >= 51, "the 50 keys are in it: revision {rev}");
    let original_hash = m
        .hash_kv(HashKvRequest { revision: rev })
        .await
        .unwrap()
        .into_inner()
        .hash;

    // Damaged files are refused with a clear error; nothing is created.
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &file[..file.len() - 100]).unwrap();
    let e = server::restore::read_backup(&truncated).unwrap_err();
    assert!(format!("{e:#}").contains("truncated"), "{e:#}");
    let corrupted = dir.path().join("corrupted.db");
    let mut bad = file.clone();
    bad[600] ^= 0xff;
    std::fs::write(&corrupted, &bad).unwrap();
    let e = server::restore::read_backup(&corrupted).unwrap_err();
    assert!(format!("{e:#}").contains("expected sha256"), "{e:#}");

    // A new 3-member cluster (other ports, other token) from the backup.
    let backup = dir.path().join("backup.db");
    std::fs::write(&backup, &file).unwrap();
    let mut b = Cluster::start(3, &["--initial-cluster-token=restored"]);
    b.local.stop_all(Duration::from_secs(10)).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let data_dir = b.data_dir(i);
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).unwrap();
        }
        let mut argv = vec!["restore".to_string()];
        argv.extend(b.local.member_args(i));
        let flags = Flags::try_parse_from(argv).unwrap();
        // Exactly the backup's revisions, so HashKV can be compared at the backup's revision.
        let exact = server::restore::RestoreOptions {
            bump_revision: 0,
            mark_compacted: false,
        };
        let r = server::restore::restore(&backup, &flags.args, exact).expect("restore");
        assert_eq!(r.revision, rev);
        ids.push(r.cluster_id);
        // Restoring into a data dir that now holds a member is refused.
        let again = server::restore::restore(&backup, &flags.args, exact).unwrap_err();
        assert!(format!("{again:#}").contains("not empty"), "{again:#}");
    }
    assert!(ids.iter().all(|&id| id == ids[0]), "one new cluster id");
    for i in 0..3 {
        b.spawn(i);
    }
    let new_leader = b.leader().await;
    let st = b.status(new_leader).await.unwrap();
    assert_eq!(st.header.unwrap().cluster_id, ids[0]);
    assert_ne!(
        ids[0],
        c.status(leader).await.unwrap().header.unwrap().cluster_id
    );
    for i in 0..3 {
        let mut mi = b.maintenance(i).await;
        let h = poll("restored member hash", Duration::from_secs(20), || {
            let mut mi = mi.clone();
            async move { mi.hash_kv(HashKvRequest { revision: rev }).await.ok() }
        })
        .await
        .into_inner();
        assert_eq!(h.hash, original_hash, "m-{i} of the restored cluster");
        let _ = mi
            .status(proto::etcdserverpb::StatusRequest {})
            .await
            .unwrap();
    }
    assert_eq!(
        value(&b, new_leader, "key07", false).await.as_deref(),
        Some("v7")
    );
    // The restored cluster takes writes after the backup's revision.
    assert_eq!(put_retrying(&b, new_leader, "new", "write").await, rev + 1);
}

/// Maintenance/Hash: every member's whole-store hash agrees once they applied the same
/// writes (compared at equal header revisions), and a write changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_agrees_across_members_and_moves_with_writes() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader().await;
    for i in 0..10 {
        put_retrying(&c, leader, &format!("h{i}"), "v").await;
    }
    let agreed = |rev_at_least: i64| {
        let c = &c;
        poll(
            "every member's Hash at one revision",
            Duration::from_secs(20),
            move || async move {
                let mut seen = Vec::new();
                for i in 0..3 {
                    let r = c
                        .maintenance(i)
                        .await
                        .hash(proto::etcdserverpb::HashRequest {})
                        .await
                        .ok()?
                        .into_inner();
                    seen.push((r.header?.revision, r.hash));
                }
                (seen.iter().all(|s| *s == seen[0]) && seen[0].0 >= rev_at_least).then_some(seen[0])
            },
        )
    };
    let (rev, first) = agreed(11).await;
    let next = put_retrying(&c, leader, "h0", "changed").await;
    assert!(next > rev);
    let (rev2, second) = agreed(next).await;
    assert_eq!(rev2, next);
    assert_ne!(first, second, "a write must change the hash");
}
