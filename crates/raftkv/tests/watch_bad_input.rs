//! Bad Watch requests against real members:
//!
//! * a 1-member etcd 3.4 and a 1-member raftkv get the same odd requests (an empty key,
//!   alone and as the start of a range; a range end below or equal to its key; unknown
//!   filter values; negative and duplicate client ids; cancels of unknown, already
//!   canceled and never-created ids) on one stream each, then the same puts; what each
//!   watch id received is compared, headers aside but for their revision (event responses:
//!   their events in order and no header at all, since how many revisions one response
//!   carries is the server's choice, see [`file`]);
//! * raftkv's `--max-watches-per-stream`: a create beyond it is refused the way etcd
//!   refuses a bad create (`created` + `canceled`, `watch_id = -1`, a reason), the refused
//!   watch costs nothing and sees nothing, a cancel frees a place, watches canceled for
//!   compaction count until the client cancels them, and other streams are unaffected.

mod common;

use common::{b, client, runtime};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::etcdserverpb::{
    watch_create_request::FilterType, CompactionRequest, WatchCreateRequest, WatchResponse,
};
use proto::prost::bytes::Bytes;
use raftkv_client::client::Client;
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};
use raftkv_client::{WatchOptions, WatchStream};

fn start(program: MemberProgram, prefix: &str, extra: &[&str]) -> LocalCluster {
    let mut spec = ClusterSpec::new(program, prefix, 1);
    spec.extra_args = extra.iter().map(|s| s.to_string()).collect();
    LocalCluster::start(spec).expect("cannot start the local cluster")
}

async fn ready(c: &Client, cluster: &LocalCluster) {
    if let Err(e) = c.put_retrying("ready", "1", Duration::from_secs(30)).await {
        panic!("cluster not ready: {e}\n{}", cluster.log_tails(20));
    }
}

async fn next_within(s: &mut WatchStream, deadline: Instant) -> WatchResponse {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, s.next())
        .await
        .expect("timed out waiting for a watch response")
        .expect("the watch stream failed")
        .expect("the watch stream ended")
}

fn watch(key: &str, end: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(key),
        range_end: b(end),
        ..Default::default()
    }
}

/// The key of the marker watch every script starts with (auto id 0): its event, put last,
/// says every earlier event of the stream was sent (a stream's events go out in revision
/// order, in etcd as in raftkv).
const MARKER: &str = "~marker";

/// A response as compared: the header's revision only.
fn comparable(mut r: WatchResponse) -> WatchResponse {
    let rev = r.header.as_ref().map_or(0, |h| h.revision);
    r.header = Some(proto::etcdserverpb::ResponseHeader {
        revision: rev,
        ..Default::default()
    });
    r
}

/// Whether `r` only carries events (no create, cancel or compaction answer).
fn events_only(r: &WatchResponse) -> bool {
    !r.created && !r.canceled && r.compact_revision == 0 && !r.events.is_empty()
}

/// File `r` under its watch id. Event responses that follow one another are merged into one,
/// without a header revision: etcd sends a synced watcher one response per revision, raftkv
/// one per revision or several queued revisions at once (docs/watch.md, "Events"), and a
/// client may see either; the events and their order are what both must agree on.
fn file(by_id: &mut BTreeMap<i64, Vec<WatchResponse>>, r: WatchResponse) {
    let filed = by_id.entry(r.watch_id).or_default();
    if events_only(&r) {
        if let Some(last) = filed.last_mut().filter(|l| events_only(l)) {
            last.events.extend(r.events);
            return;
        }
        let mut r = comparable(r);
        r.header = Some(Default::default());
        filed.push(r);
    } else {
        filed.push(comparable(r));
    }
}

/// Read until the marker watch's event of revision `marker_rev`, filing every response
/// by watch id (responses of one id keep their order on both servers; across ids, control
/// answers and events may interleave differently).
async fn read_to_marker(
    s: &mut WatchStream,
    marker_rev: i64,
    by_id: &mut BTreeMap<i64, Vec<WatchResponse>>,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = next_within(s, deadline).await;
        let is_marker = r.watch_id == 0
            && r.events.iter().any(|e| {
                e.kv.as_ref()
                    .is_some_and(|kv| kv.mod_revision == marker_rev)
            });
        file(by_id, r);
        if is_marker {
            return;
        }
    }
}

/// The odd requests, on one stream of `c`; what each watch id received.
async fn script(c: &Client) -> BTreeMap<i64, Vec<WatchResponse>> {
    let mut s = c
        .watch(watch(MARKER, ""), WatchOptions::default())
        .await
        .expect("watch");
    let creates = [
        // An empty key is "\0" (the smallest key): alone, and as a range's start.
        watch("", ""),
        watch("", "0z"),
        // Empty ranges: refused with etcd's reason.
        watch("b", "a"),
        watch("a", "a"),
        // Filter values etcd does not know.
        WatchCreateRequest {
            filters: vec![7, FilterType::Nodelete as i32],
            ..watch("f", "")
        },
        WatchCreateRequest {
            filters: vec![-3],
            ..watch("f", "")
        },
        WatchCreateRequest {
            filters: vec![1, -3],
            ..watch("f", "")
        },
        WatchCreateRequest {
            filters: vec![7, 1, -3],
            ..watch("f", "")
        },
        WatchCreateRequest {
            filters: vec![-3, 1],
            ..watch("f", "")
        },
        WatchCreateRequest {
            filters: vec![2],
            ..watch("f", "")
        },
        // A client-chosen negative id, then the same id again (a duplicate).
        WatchCreateRequest {
            watch_id: -5,
            ..watch("f", "")
        },
        WatchCreateRequest {
            watch_id: -5,
            ..watch("g", "")
        },
        // A prev_kv watch on a key that is put and deleted.
        WatchCreateRequest {
            prev_kv: true,
            ..watch("g", "")
        },
    ];
    let mut by_id = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let marker = next_within(&mut s, deadline).await;
    by_id.insert(0, vec![comparable(marker)]);
    // One at a time: each answered before the next, and all before the first put.
    for c in &creates {
        s.create(c.clone()).await.expect("create");
        let r = next_within(&mut s, deadline).await;
        assert!(r.created, "{r:?}");
        by_id.entry(r.watch_id).or_default().push(comparable(r));
    }
    c.put(proto::etcdserverpb::PutRequest {
        key: Bytes::from_static(b"\0"),
        value: b("nul"),
        ..Default::default()
    })
    .await
    .expect("put \\0");
    for (k, v) in [("0a", "1"), ("f", "2"), ("g", "3"), ("b", "4")] {
        c.put_str(k, v).await.expect("put");
    }
    for k in ["f", "g"] {
        c.delete_range(proto::etcdserverpb::DeleteRangeRequest {
            key: b(k),
            ..Default::default()
        })
        .await
        .expect("delete");
    }
    let rev = c
        .put_str(MARKER, "1")
        .await
        .expect("put")
        .header
        .unwrap()
        .revision;
    read_to_marker(&mut s, rev, &mut by_id).await;
    // Cancels: unknown ids (no answer in etcd 3.4), a known id twice (answered once).
    for id in [42, -1, 1, 1, -5] {
        s.cancel(id).await.expect("cancel");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // The put below must come after both cancels took effect, on either server: a cancel
    // and a put sent at once race (etcd answered -5's cancel after the put in one CI run).
    let mut answered = Vec::new();
    while answered.len() < 2 {
        let r = next_within(&mut s, deadline).await;
        if r.canceled && !r.created {
            answered.push(r.watch_id);
        }
        file(&mut by_id, r);
    }
    answered.sort();
    assert_eq!(answered, [-5, 1], "the cancels answered");
    c.put_str("f", "after cancel").await.expect("put");
    let rev = c
        .put_str(MARKER, "2")
        .await
        .expect("put")
        .header
        .unwrap()
        .revision;
    read_to_marker(&mut s, rev, &mut by_id).await;
    by_id
}

/// One line per watch id: what it received, briefly (for a failure's message).
fn summary(by_id: &BTreeMap<i64, Vec<WatchResponse>>) -> String {
    let mut out = String::new();
    for (id, rs) in by_id {
        out.push_str(&format!("\n  {id}:"));
        for r in rs {
            let evs: Vec<String> = r
                .events
                .iter()
                .map(|e| {
                    let kv = e.kv.clone().unwrap_or_default();
                    format!("{}{:?}@{}", e.r#type, kv.key, kv.mod_revision)
                })
                .collect();
            out.push_str(&format!(
                " [c{} x{} {:?} {evs:?}]",
                r.created as u8, r.canceled as u8, r.cancel_reason
            ));
        }
    }
    out
}

#[test]
fn bad_watch_requests_get_etcds_answers() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let mut answers = Vec::new();
    for (label, program) in [
        ("etcd", MemberProgram::Etcd(common::etcd_binary())),
        ("raftkv", common::raftkv_program()),
    ] {
        let cluster = start(program, &format!("wbad-{label}"), &[]);
        let c = client(&cluster.endpoints());
        let got = rt.block_on(async {
            ready(&c, &cluster).await;
            script(&c).await
        });
        answers.push((label, got));
    }
    let (etcd, raftkv) = (&answers[0].1, &answers[1].1);
    // The script must have produced the answers it is about, on the reference side.
    let refused = etcd
        .get(&-1)
        .map_or(0, |v| v.iter().filter(|r| r.canceled).count());
    assert_eq!(refused, 3, "etcd's refused creates: {:?}", etcd.get(&-1));
    if etcd != raftkv || std::env::var_os("WATCH_BAD_INPUT_SHOW").is_some() {
        eprintln!("etcd:   {}\nraftkv: {}", summary(etcd), summary(raftkv));
    }
    for id in etcd.keys().chain(raftkv.keys()) {
        assert_eq!(
            raftkv.get(id),
            etcd.get(id),
            "watch id {id}: raftkv (left) and etcd (right) differ"
        );
    }
}

/// `--max-watches-per-stream=3` on raftkv.
#[test]
fn creates_beyond_the_per_stream_limit_are_refused_without_leaking() {
    let cluster = start(
        common::raftkv_program(),
        "wlimit",
        &["--max-watches-per-stream=3"],
    );
    let rt = runtime();
    let _in_runtime = rt.enter();
    let c = client(&cluster.endpoints());
    rt.block_on(async {
        ready(&c, &cluster).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = c
            .watch(watch("k0", ""), WatchOptions::default())
            .await
            .expect("watch");
        assert_eq!(next_within(&mut s, deadline).await.watch_id, 0);
        for k in ["k1", "k2"] {
            s.create(watch(k, "")).await.expect("create");
            let r = next_within(&mut s, deadline).await;
            assert!(r.created && !r.canceled, "{r:?}");
        }
        // The fourth: refused as etcd refuses a create, with the limit in the reason.
        s.create(watch("k3", "")).await.expect("create");
        let refused = next_within(&mut s, deadline).await;
        assert!(refused.created && refused.canceled, "{refused:?}");
        assert_eq!(refused.watch_id, -1);
        assert_eq!(
            refused.cancel_reason,
            "raftkv: too many watches on this stream, limit 3 (--max-watches-per-stream)"
        );
        // Another stream has its own three.
        let mut other = client(&cluster.endpoints())
            .watch(watch("k3", ""), WatchOptions::default())
            .await
            .expect("watch");
        assert!(next_within(&mut other, deadline).await.created);
        // The refused watch sees nothing: the put of k3 reaches the other stream only,
        // and the marker put on k0 arrives next on the first.
        c.put_str("k3", "x").await.expect("put");
        let r = next_within(&mut other, deadline).await;
        assert_eq!(r.events.len(), 1, "{r:?}");
        c.put_str("k0", "x").await.expect("put");
        let r = next_within(&mut s, deadline).await;
        assert_eq!((r.watch_id, r.events.len()), (0, 1), "{r:?}");
        // A cancel frees a place.
        s.cancel(1).await.expect("cancel");
        let r = next_within(&mut s, deadline).await;
        assert!(r.canceled && r.watch_id == 1, "{r:?}");
        s.create(watch("k3", "")).await.expect("create");
        let r = next_within(&mut s, deadline).await;
        assert!(r.created && !r.canceled, "{r:?}");
        let k3 = r.watch_id;
        // A watch canceled for compaction keeps its place until the client cancels it.
        let current = c
            .put_str("k9", "x")
            .await
            .expect("put")
            .header
            .unwrap()
            .revision;
        c.compact(CompactionRequest {
            revision: current,
            physical: false,
        })
        .await
        .expect("compact");
        s.cancel(k3).await.expect("cancel");
        let r = next_within(&mut s, deadline).await;
        assert!(r.canceled && r.watch_id == k3, "{r:?}");
        s.create(WatchCreateRequest {
            start_revision: 1,
            ..watch("k4", "")
        })
        .await
        .expect("create");
        let created = next_within(&mut s, deadline).await;
        assert!(created.created && !created.canceled, "{created:?}");
        let r = next_within(&mut s, deadline).await;
        assert!(
            r.canceled && r.compact_revision == current && r.watch_id == created.watch_id,
            "{r:?}"
        );
        s.create(watch("k5", "")).await.expect("create");
        let r = next_within(&mut s, deadline).await;
        assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");
        s.cancel(created.watch_id).await.expect("cancel");
        let r = next_within(&mut s, deadline).await;
        assert!(r.canceled && r.watch_id == created.watch_id, "{r:?}");
        s.create(watch("k5", "")).await.expect("create");
        let r = next_within(&mut s, deadline).await;
        assert!(r.created && !r.canceled, "{r:?}");
        // The stream still delivers.
        c.put_str("k5", "x").await.expect("put");
        let r = next_within(&mut s, deadline).await;
        assert_eq!(r.events.len(), 1, "{r:?}");
    });
}
