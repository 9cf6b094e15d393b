//! Kubernetes' use of the store, replayed against raftkv and etcd 3.4 side by side.
//!
//! Kubernetes cannot run on this machine, so this test plays kube-apiserver: it issues the
//! exact request shapes of its etcd3 storage layer (`client/v3/kubernetes`: Get, List with
//! `limit` and continuation, Count, OptimisticPut / OptimisticDelete with `GetOnFailure`,
//! the compaction Txn on `compact_rev_key`, Compact, prefix watches from `RV + 1` with
//! `prev_kv`, `progress_notify` and `hasleader`, progress requests, LeaseGrant with keys put
//! in Txns) in the order the apiserver does, against a 3-member raftkv and a 3-member etcd
//! started with the same flags. Each step writes a transcript line that leaves out only what
//! two clusters cannot share (cluster and member ids, terms); the transcripts must be equal.
//!
//! On top of the comparison it checks the properties of `../shared/reference/beyond-etcd.md`
//! §2.8 that are about raftkv alone: `Status.version` passes Kubernetes' feature gate for
//! progress requests and WatchList (etcd 3.4.23 does not: that is why raftkv reports
//! 3.4.31), every progress request on a stream of 100 prefix watches is answered and no event
//! at or below an answered revision comes after it, 1,000 watch streams share one connection
//! and a progress request touches only its own stream, and every DELETE of an expired
//! lease's 1,000 keys carries `prev_kv`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{b, client, runtime};
use proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchResponse,
};
use proto::mvccpb::{event::EventType, Event, KeyValue};
use proto::prost::bytes::Bytes;
use raftkv_client::client::{prefix_range_end, CallError, Client};
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster, MemberProgram};
use raftkv_client::{WatchOptions, WatchStream};

const PODS: &str = "/registry/pods/default/";
const EVENTS: &str = "/registry/events/default/";
const COMPACT_REV_KEY: &str = "compact_rev_key";
/// Objects created before the paginated List (kube-apiserver's default page is 500; a small
/// page over a few dozen objects exercises the same continuation logic).
const OBJECTS: usize = 40;
const PAGE: i64 = 7;
/// Keys attached to one lease, Kubernetes' cap per lease (beyond-etcd §1.2).
const LEASED_KEYS: usize = 1_000;
const LEASE_TTL: i64 = 5;

struct Side {
    label: &'static str,
    cluster: LocalCluster,
    client: Client,
    /// What this side answered, one line per step; compared with the other side's.
    transcript: Vec<String>,
}

impl Side {
    fn note(&mut self, line: String) {
        self.transcript.push(line);
    }
}

fn start(label: &'static str, program: MemberProgram) -> Side {
    let spec = ClusterSpec::new(program, &format!("k8s-{label}"), 3);
    let cluster = LocalCluster::start(spec).expect("cannot start the local cluster");
    let client = client(&cluster.endpoints());
    Side {
        label,
        cluster,
        client,
        transcript: Vec::new(),
    }
}

fn rev(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map_or(-1, |h| h.revision)
}

fn kv_line(kv: &KeyValue) -> String {
    format!(
        "{}={} c{} m{} v{} l{}",
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        i64::from(kv.lease != 0)
    )
}

fn range_line(r: &RangeResponse) -> String {
    let kvs: Vec<String> = r.kvs.iter().map(kv_line).collect();
    format!(
        "rev {} count {} more {} [{}]",
        rev(&r.header),
        r.count,
        r.more,
        kvs.join(", ")
    )
}

fn txn_line(r: &TxnResponse) -> String {
    let ops: Vec<String> = r
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(response_op::Response::ResponseRange(r)) => format!("range {}", range_line(r)),
            Some(response_op::Response::ResponsePut(p)) => format!("put rev {}", rev(&p.header)),
            Some(response_op::Response::ResponseDeleteRange(d)) => {
                format!("delete rev {} deleted {}", rev(&d.header), d.deleted)
            }
            Some(response_op::Response::ResponseTxn(_)) => "txn".into(),
            None => "none".into(),
        })
        .collect();
    format!(
        "rev {} succeeded {} [{}]",
        rev(&r.header),
        r.succeeded,
        ops.join("; ")
    )
}

fn event_line(e: &Event) -> String {
    let kind = if e.r#type == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    let kv = e.kv.as_ref().map_or("-".into(), kv_line);
    let prev = e.prev_kv.as_ref().map_or("-".into(), kv_line);
    format!("{kind} {kv} prev {prev}")
}

fn error_line(e: &CallError) -> String {
    format!("error {:?} {}", e.code(), e.message())
}

fn key_range(prefix: &str) -> (Bytes, Bytes) {
    (b(prefix), Bytes::from(prefix_range_end(prefix.as_bytes())))
}

fn compare(key: &str, target: CompareTarget, value: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: b(key),
        target_union: Some(value),
        ..Default::default()
    }
}

fn put_op(key: &str, value: &str, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(key),
            value: b(value),
            lease,
            ..Default::default()
        })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: b(key),
            ..Default::default()
        })),
    }
}

fn delete_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: b(key),
                ..Default::default()
            },
        )),
    }
}

/// kube-apiserver's OptimisticPut: `If(mod_revision(key) == expected) Then(Put) Else(Get)`
/// (`expected` 0 creates; without `get_on_failure` there is no Else branch).
async fn optimistic_put(
    c: &Client,
    key: &str,
    value: &str,
    expected: i64,
    lease: i64,
    get_on_failure: bool,
) -> Result<TxnResponse, CallError> {
    c.txn(TxnRequest {
        compare: vec![compare(
            key,
            CompareTarget::Mod,
            TargetUnion::ModRevision(expected),
        )],
        success: vec![put_op(key, value, lease)],
        failure: if get_on_failure {
            vec![get_op(key)]
        } else {
            Vec::new()
        },
    })
    .await
}

/// kube-apiserver's OptimisticDelete: `If(mod_revision(key) == expected) Then(Delete)
/// Else(Get)`.
async fn optimistic_delete(c: &Client, key: &str, expected: i64) -> Result<TxnResponse, CallError> {
    c.txn(TxnRequest {
        compare: vec![compare(
            key,
            CompareTarget::Mod,
            TargetUnion::ModRevision(expected),
        )],
        success: vec![delete_op(key)],
        failure: vec![get_op(key)],
    })
    .await
}

/// The compactor election: `If(version(compact_rev_key) == t) Then(Put(compact_rev_key,
/// rev)) Else(Get(compact_rev_key))` (k8s.io/apiserver storage/etcd3/compact.go).
async fn compaction_txn(c: &Client, t: i64, rev: i64) -> Result<TxnResponse, CallError> {
    c.txn(TxnRequest {
        compare: vec![compare(
            COMPACT_REV_KEY,
            CompareTarget::Version,
            TargetUnion::Version(t),
        )],
        success: vec![put_op(COMPACT_REV_KEY, &rev.to_string(), 0)],
        failure: vec![get_op(COMPACT_REV_KEY)],
    })
    .await
}

async fn list(c: &Client, prefix: &str, revision: i64, limit: i64) -> RangeResponse {
    let (key, range_end) = key_range(prefix);
    c.range(RangeRequest {
        key,
        range_end,
        revision,
        limit,
        ..Default::default()
    })
    .await
    .expect("list")
}

/// A List the way the apiserver pages it: at one pinned revision, each page starting at
/// the last key of the previous one + "\0". Returns the keys and a transcript line per page.
async fn paginated_list(c: &Client, prefix: &str, revision: i64) -> (Vec<Bytes>, Vec<String>) {
    let (start, range_end) = key_range(prefix);
    let mut key = start;
    let mut keys = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = c
            .range(RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                revision,
                limit: PAGE,
                ..Default::default()
            })
            .await
            .expect("list page");
        pages.push(format!("page {}", range_line(&page)));
        keys.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => {
                let mut next = last.key.to_vec();
                next.push(0);
                key = Bytes::from(next);
            }
            _ => break,
        }
        assert!(pages.len() <= OBJECTS, "pagination does not end");
    }
    (keys, pages)
}

/// Reads the stream until its next response, bounded.
async fn next(stream: &mut WatchStream, what: &str) -> WatchResponse {
    match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => panic!("{what}: the stream ended"),
        Ok(Err(e)) => panic!("{what}: {}", error_line(&e)),
        Err(_) => panic!("{what}: no response in 20 s"),
    }
}

/// Events of `stream` until one at `through` or above has arrived (responses with no
/// events, such as progress notifications, are skipped).
async fn events_through(stream: &mut WatchStream, through: i64, what: &str) -> Vec<Event> {
    let mut events = Vec::new();
    while events
        .last()
        .and_then(|e: &Event| e.kv.as_ref())
        .is_none_or(|kv| kv.mod_revision < through)
    {
        let r = next(stream, what).await;
        assert!(!r.canceled, "{what}: canceled: {}", r.cancel_reason);
        events.extend(r.events);
    }
    events
}

fn watch_create(prefix: &str, start_revision: i64) -> WatchCreateRequest {
    let (key, range_end) = key_range(prefix);
    WatchCreateRequest {
        key,
        range_end,
        start_revision,
        prev_kv: true,
        progress_notify: true,
        ..Default::default()
    }
}

/// What Kubernetes requires of `Status.version` before it turns on consistent reads from
/// its watch cache and WatchList (k8s.io/apiserver storage/feature: every endpoint at least
/// 3.4.31 and not in 3.5.0..3.5.13).
fn kubernetes_accepts_version(version: &str) -> bool {
    let parts: Vec<u64> = version
        .split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect();
    let [major, minor, patch] = parts[..] else {
        return false;
    };
    if [major, minor, patch].contains(&u64::MAX) {
        return false;
    }
    let v = (major, minor, patch);
    v >= (3, 4, 31) && !((3, 5, 0)..(3, 5, 13)).contains(&v)
}

/// Steps 1–6: objects created, updated and deleted as the apiserver does, the paginated
/// List at a pinned revision while writes go on, Count, and the compaction round.
async fn objects_and_lists(side: &mut Side) {
    let c = side.client.clone();
    // Healthcheck: a linearizable Get of /registry/health.
    let health = c
        .range(RangeRequest {
            key: b("/registry/health"),
            ..Default::default()
        })
        .await
        .expect("healthcheck");
    side.note(format!("health {}", range_line(&health)));

    // Creates (expected mod_revision 0), then a create of an existing object.
    let mut mod_revs = Vec::new();
    for i in 0..OBJECTS {
        let key = format!("{PODS}pod-{i:02}");
        let r = optimistic_put(&c, &key, &format!("spec-{i}"), 0, 0, true)
            .await
            .expect("create");
        assert!(r.succeeded, "{}: create of {key} failed", side.label);
        mod_revs.push(rev(&r.header));
    }
    side.note(format!(
        "created {OBJECTS}, last rev {}",
        mod_revs[OBJECTS - 1]
    ));
    let again = optimistic_put(&c, &format!("{PODS}pod-03"), "dup", 0, 0, true)
        .await
        .expect("create again");
    side.note(format!("create existing: {}", txn_line(&again)));
    let again = optimistic_put(&c, &format!("{PODS}pod-04"), "dup", 0, 0, false)
        .await
        .expect("create again, no GetOnFailure");
    side.note(format!("create existing, no get: {}", txn_line(&again)));

    // Updates with the right and a stale resource version; deletes the same way.
    let update = optimistic_put(
        &c,
        &format!("{PODS}pod-05"),
        "spec-5b",
        mod_revs[5],
        0,
        true,
    )
    .await
    .expect("update");
    side.note(format!("update: {}", txn_line(&update)));
    let stale = optimistic_put(
        &c,
        &format!("{PODS}pod-05"),
        "spec-5c",
        mod_revs[5],
        0,
        true,
    )
    .await
    .expect("stale update");
    side.note(format!("stale update: {}", txn_line(&stale)));
    let delete = optimistic_delete(&c, &format!("{PODS}pod-06"), mod_revs[6])
        .await
        .expect("delete");
    side.note(format!("delete: {}", txn_line(&delete)));
    let stale = optimistic_delete(&c, &format!("{PODS}pod-07"), mod_revs[6])
        .await
        .expect("stale delete");
    side.note(format!("stale delete: {}", txn_line(&stale)));
    let gone = optimistic_delete(&c, &format!("{PODS}pod-06"), mod_revs[6])
        .await
        .expect("delete of a deleted object");
    side.note(format!("delete deleted: {}", txn_line(&gone)));

    // GetCurrentRevision: limit 1 over the resource prefix; then writes go on while the
    // List pages at that revision.
    let current = list(&c, PODS, 0, 1).await;
    let pinned = rev(&current.header);
    side.note(format!("current {}", range_line(&current)));
    for i in 0..3 {
        let key = format!("{PODS}pod-{:02}", OBJECTS + i);
        optimistic_put(&c, &key, "late", 0, 0, true)
            .await
            .expect("late create");
    }
    optimistic_delete(&c, &format!("{PODS}pod-00"), mod_revs[0])
        .await
        .expect("late delete");
    let (keys, pages) = paginated_list(&c, PODS, pinned).await;
    for page in pages {
        side.note(page);
    }
    let whole = list(&c, PODS, pinned, 0).await;
    let whole_keys: Vec<Bytes> = whole.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys, whole_keys,
        "{}: the pages at revision {pinned} are not the unpaginated List",
        side.label
    );
    // Count (the apiserver's object-count metric) and a keys-only List.
    let (key, range_end) = key_range(PODS);
    let count = c
        .range(RangeRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count");
    side.note(format!("count {}", range_line(&count)));
    let keys_only = c
        .range(RangeRequest {
            key,
            range_end,
            keys_only: true,
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("keys only");
    side.note(format!("keys only {}", range_line(&keys_only)));

    // The compaction round: the first apiserver wins the Txn and compacts the revision of
    // the previous round; a second one, with the stale version, loses and reads the key.
    let round1 = compaction_txn(&c, 0, pinned).await.expect("compaction txn");
    side.note(format!("compaction txn: {}", txn_line(&round1)));
    let lost = compaction_txn(&c, 0, pinned)
        .await
        .expect("losing compaction txn");
    side.note(format!("losing compaction txn: {}", txn_line(&lost)));
    let compacted = c
        .compact(CompactionRequest {
            revision: pinned,
            physical: false,
        })
        .await
        .expect("compact");
    side.note(format!(
        "compact at {pinned}: rev {}",
        rev(&compacted.header)
    ));
    let head = rev(&compacted.header);
    for (what, at) in [
        ("below the compaction", pinned - 1),
        ("at the compaction", pinned),
        ("in the future", head + 10),
    ] {
        let r = c
            .range(RangeRequest {
                key: b(PODS),
                range_end: Bytes::from(prefix_range_end(PODS.as_bytes())),
                revision: at,
                limit: 1,
                ..Default::default()
            })
            .await;
        side.note(match r {
            Ok(r) => format!("list {what}: {}", range_line(&r)),
            Err(e) => format!("list {what}: {}", error_line(&e)),
        });
    }
    let mut stream = c
        .watch(watch_create(PODS, pinned - 1), WatchOptions::default())
        .await
        .expect("watch from a compacted revision");
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let r = next(&mut stream, "watch from a compacted revision").await;
        answers.push(format!(
            "created {} canceled {} compact_revision {} events {}",
            r.created,
            r.canceled,
            r.compact_revision,
            r.events.len()
        ));
        if r.canceled {
            break;
        }
    }
    side.note(format!("watch below compaction: {}", answers.join(" / ")));
}

/// Step 7: the watch the apiserver's cacher opens after a List (prefix, from `RV + 1`,
/// `prev_kv`, `progress_notify`, `hasleader`) gets every change with `prev_kv`, including
/// right after a compaction (etcd#18089's sequence), and a progress request answered at a
/// revision no later event goes below.
async fn cacher_watch(side: &mut Side) {
    let c = side.client.clone();
    let key = format!("{PODS}cached");
    let v1 = optimistic_put(&c, &key, "v1", 0, 0, true)
        .await
        .expect("v1");
    let r1 = rev(&v1.header);
    let v2 = optimistic_put(&c, &key, "v2", r1, 0, true)
        .await
        .expect("v2");
    let r2 = rev(&v2.header);
    c.compact(CompactionRequest {
        revision: r2,
        physical: true,
    })
    .await
    .expect("compact at v2");
    let mut stream = c
        .watch(
            watch_create(PODS, r2 + 1),
            WatchOptions {
                require_leader: true,
            },
        )
        .await
        .expect("cacher watch");
    let created = next(&mut stream, "cacher watch created").await;
    assert!(
        created.created,
        "{}: first response not created",
        side.label
    );
    let v3 = optimistic_put(&c, &key, "v3", r2, 0, true)
        .await
        .expect("v3");
    let r3 = rev(&v3.header);
    let del = optimistic_delete(&c, &key, r3).await.expect("delete");
    let recreate = optimistic_put(&c, &key, "v4", 0, 0, true)
        .await
        .expect("v4");
    let last = rev(&recreate.header);
    assert!(del.succeeded && recreate.succeeded);
    let events = events_through(&mut stream, last, "cacher watch").await;
    for e in &events {
        let is_create = e.kv.as_ref().is_some_and(|kv| kv.version == 1);
        assert!(
            is_create || e.prev_kv.is_some(),
            "{}: a non-create event without prev_kv: {}",
            side.label,
            event_line(e)
        );
        side.note(format!("cacher event {}", event_line(e)));
    }
    stream.request_progress().await.expect("progress request");
    let progress = next(&mut stream, "progress answer").await;
    assert_eq!(
        progress.watch_id, -1,
        "{}: not a progress answer",
        side.label
    );
    assert!(progress.events.is_empty());
    side.note(format!("progress at rev {}", rev(&progress.header)));
}

/// Step 8: a lease granted for objects with a TTL (Events), 1,000 keys attached to it in
/// one Txn each; when it expires every key is deleted in one revision, each DELETE with
/// `prev_kv`.
async fn leased_objects(side: &mut Side) {
    let c = side.client.clone();
    let granted = c.lease_grant(LEASE_TTL, 0).await.expect("lease grant");
    let granted_at = Instant::now();
    side.note(format!("lease ttl {}", granted.ttl));
    let start = rev(&c.status().await.expect("status").header) + 1;
    let mut stream = c
        .watch(watch_create(EVENTS, start), WatchOptions::default())
        .await
        .expect("events watch");
    assert!(next(&mut stream, "events watch created").await.created);
    // The apiserver writes each object in its own Txn, concurrently.
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..LEASED_KEYS {
        let c = c.clone();
        puts.spawn(async move {
            let key = format!("{EVENTS}event-{i:04}");
            let r = optimistic_put(&c, &key, "e", 0, granted.id, true).await;
            r.expect("leased create").succeeded
        });
    }
    while let Some(created) = puts.join_next().await {
        assert!(
            created.expect("put task"),
            "{}: a leased create failed",
            side.label
        );
    }
    let mut creates = 0;
    let mut deletes = Vec::new();
    while deletes.len() < LEASED_KEYS {
        let r = next(&mut stream, "leased keys' events").await;
        for e in r.events {
            if e.r#type == EventType::Delete as i32 {
                deletes.push(e);
            } else {
                creates += 1;
            }
        }
    }
    let expired_after = granted_at.elapsed();
    let revisions: BTreeSet<i64> = deletes
        .iter()
        .map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision))
        .collect();
    let with_prev = deletes
        .iter()
        .filter(|e| e.prev_kv.as_ref().is_some_and(|p| p.lease == granted.id))
        .count();
    eprintln!(
        "{}: {LEASED_KEYS} keys of a {LEASE_TTL} s lease deleted {:.2} s after the grant",
        side.label,
        expired_after.as_secs_f64()
    );
    side.note(format!(
        "lease expiry: {creates} creates, {} deletes in {} revision(s), {with_prev} with prev_kv \
         of the lease",
        deletes.len(),
        revisions.len()
    ));
    let left = list(&c, EVENTS, 0, 0).await;
    side.note(format!("after expiry: count {}", left.count));
}

/// Step 9 (after everything else): a member that loses its quorum answers a unary call
/// carrying `hasleader` with `etcdserver: no leader` once it knows it has no leader.
async fn no_leader(side: &mut Side) {
    side.cluster.kill_member(1).expect("kill member 1");
    side.cluster.kill_member(2).expect("kill member 2");
    let only = side.client.only(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let mut request = only.request(RangeRequest {
            key: b("/registry/health"),
            serializable: true,
            ..Default::default()
        });
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let mut kv = proto::etcdserverpb::kv_client::KvClient::new(only.first_channel());
        match tokio::time::timeout(Duration::from_secs(5), kv.range(request)).await {
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                break format!("{:?} {}", status.code(), status.message());
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{}: still no `no leader` answer 20 s after losing quorum: {other:?}",
                    side.label
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    side.note(format!("hasleader without quorum: {answer}"));
}

#[test]
fn kubernetes_requests_get_etcds_answers() {
    let rt = runtime();
    let _in_runtime = rt.enter();
    let mut sides = [
        start("etcd", MemberProgram::Etcd(common::etcd_binary())),
        start("raftkv", common::raftkv_program()),
    ];
    rt.block_on(async {
        for side in sides.iter_mut() {
            // Both sides start from the same revision: wait on a read, not a write.
            let c = side.client.clone();
            let label = side.label;
            common::poll_until_async(&format!("{label} answers"), Duration::from_secs(30), || {
                let c = c.clone();
                async move { c.status().await.map(|_| ()).map_err(|e| error_line(&e)) }
            })
            .await;
            objects_and_lists(side).await;
            cacher_watch(side).await;
            leased_objects(side).await;
            no_leader(side).await;
        }
    });
    let [etcd, raftkv] = &sides;
    for (i, (theirs, ours)) in etcd.transcript.iter().zip(&raftkv.transcript).enumerate() {
        assert_eq!(
            ours, theirs,
            "step {i}: raftkv (left) differs from etcd (right)"
        );
    }
    assert_eq!(raftkv.transcript.len(), etcd.transcript.len());
}

#[test]
fn raftkv_reports_a_version_kubernetes_accepts() {
    for (version, accepted) in [
        ("3.4.23", false),
        ("3.4.31", true),
        ("3.5.12", false),
        ("3.5.13", true),
        ("3.6.0", true),
        ("3.4", false),
        ("junk", false),
    ] {
        assert_eq!(kubernetes_accepts_version(version), accepted, "{version}");
    }
    let rt = runtime();
    let _in_runtime = rt.enter();
    let cluster = common::start_cluster_of(common::raftkv_program(), "k8s-version", Vec::new());
    let c = client(&cluster.endpoints());
    rt.block_on(async {
        for member in c.each() {
            let status = common::poll_until_async("status", Duration::from_secs(30), || {
                let member = member.clone();
                async move { member.status().await.map_err(|e| error_line(&e)) }
            })
            .await;
            assert!(
                kubernetes_accepts_version(&status.version),
                "Kubernetes would turn off RequestWatchProgress for version {}",
                status.version
            );
        }
    });
}

/// A stream of 100 prefix watches (one per resource type, as the apiserver groups them)
/// while a writer runs: every progress request is answered, and no event at or below an
/// answered revision arrives after the answer. 1,000 streams on one connection each get
/// an event, and a progress request on one stream reaches no other.
#[test]
fn progress_requests_and_many_streams() {
    const WATCHES: usize = 100;
    const REQUESTS: usize = 200;
    const STREAMS: usize = 1_000;
    let rt = common::multi_thread_runtime();
    let _in_runtime = rt.enter();
    let cluster = common::start_cluster_of(common::raftkv_program(), "k8s-progress", Vec::new());
    // One endpoint: every stream on one connection.
    let c = client(&cluster.endpoints()[..1]);
    rt.block_on(async {
        common::poll_until_async("a write", Duration::from_secs(30), || {
            let c = c.clone();
            async move {
                c.put_str("ready", "1")
                    .await
                    .map(|_| ())
                    .map_err(|e| error_line(&e))
            }
        })
        .await;
        let resource = |i: usize| format!("/registry/r{i:03}/");
        let mut stream = c
            .watch(watch_create(&resource(0), 0), WatchOptions::default())
            .await
            .expect("stream");
        for i in 1..WATCHES {
            stream
                .create(watch_create(&resource(i), 0))
                .await
                .expect("create");
        }
        let mut created = 0;
        while created < WATCHES {
            created += usize::from(next(&mut stream, "creates").await.created);
        }
        let writer = {
            let c = c.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("{}obj", resource(n % WATCHES));
                    if c.put_str(&key, "x").await.is_err() {
                        break;
                    }
                }
            })
        };
        let mut answered = 0;
        let mut highest_answer = 0;
        let mut waits = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let asked = Instant::now();
            stream.request_progress().await.expect("progress request");
            loop {
                let r = next(&mut stream, "progress answer").await;
                for e in &r.events {
                    let at = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    assert!(
                        at > highest_answer,
                        "event at {at} after a progress answer at {highest_answer}"
                    );
                }
                if r.watch_id == -1 && r.events.is_empty() {
                    answered += 1;
                    highest_answer = highest_answer.max(rev(&r.header));
                    waits.push(asked.elapsed());
                    break;
                }
            }
        }
        writer.abort();
        assert_eq!(answered, REQUESTS);
        waits.sort();
        eprintln!(
            "progress answers on a stream of {WATCHES} watches under writes: p50 {:?} p99 {:?} \
             max {:?}",
            waits[REQUESTS / 2],
            waits[REQUESTS * 99 / 100],
            waits[REQUESTS - 1]
        );

        // 1,000 streams of one watch each on the same connection.
        let mut streams = Vec::with_capacity(STREAMS);
        for _ in 0..STREAMS {
            let mut s = c
                .watch(
                    watch_create("/registry/leases/", 0),
                    WatchOptions::default(),
                )
                .await
                .expect("one of 1,000 streams");
            assert!(next(&mut s, "stream created").await.created);
            streams.push(s);
        }
        streams[0]
            .request_progress()
            .await
            .expect("progress on stream 0");
        let answer = next(&mut streams[0], "stream 0's progress").await;
        assert_eq!(answer.watch_id, -1);
        let put = c
            .put_str("/registry/leases/node-1", "renew")
            .await
            .expect("put");
        let at = rev(&put.header);
        for (i, s) in streams.iter_mut().enumerate() {
            let r = next(s, "the lease event").await;
            assert_eq!(
                (
                    r.watch_id,
                    r.events.len(),
                    r.events[0].kv.as_ref().map(|kv| kv.mod_revision)
                ),
                (0, 1, Some(at)),
                "stream {i}: expected the put as its next response (a progress answer meant \
                 for stream 0 would come first)"
            );
        }
    });
}
