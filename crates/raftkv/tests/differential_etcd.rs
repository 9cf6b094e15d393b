//! Differential test against the reference: the same seeded random sequence of KV requests
//! goes to a 3-member etcd and a 3-member raftkv started with the same flags, through the same
//! client, and every response must match field by field — revisions, versions, counts,
//! `more`, prev_kvs, txn branches, and for errors the gRPC code and the exact message.
//! Only what legitimately differs between two clusters is ignored: cluster id, member id and
//! raft term in response headers.
//!
//! `RAFTKV_DIFF_SEED=<n>` replays a sequence; `RAFTKV_DIFF_OPS=<n>` changes its length.
//! `RAFTKV_DIFF_KEEP_GOING=1` lists every mismatch instead of stopping at the first.

mod common;

use std::time::{Duration, Instant};

use proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use proto::prost::bytes::Bytes;
use raftkv_client::client::{prefix_range_end, CallError, Client, Timeouts};
use raftkv_client::leader::{wait_for_leader, TermLedger};
use raftkv_client::local_cluster::{LocalCluster, MemberProgram};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MAX_TXN_OPS: usize = 16;

#[derive(Clone, Debug)]
enum Request {
    Put(PutRequest),
    Range(RangeRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

/// A response with the fields that may differ between clusters zeroed, or the error's code
/// and message.
#[derive(Debug, PartialEq)]
enum Outcome {
    Put(proto::etcdserverpb::PutResponse),
    Range(proto::etcdserverpb::RangeResponse),
    Delete(proto::etcdserverpb::DeleteRangeResponse),
    Txn(proto::etcdserverpb::TxnResponse),
    Compact(proto::etcdserverpb::CompactionResponse),
    Error { code: tonic::Code, message: String },
}

fn scrub(header: &mut Option<ResponseHeader>) {
    if let Some(h) = header {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

fn scrub_txn(t: &mut proto::etcdserverpb::TxnResponse) {
    scrub(&mut t.header);
    for op in &mut t.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => scrub(&mut r.header),
            Some(response_op::Response::ResponsePut(r)) => scrub(&mut r.header),
            Some(response_op::Response::ResponseDeleteRange(r)) => scrub(&mut r.header),
            Some(response_op::Response::ResponseTxn(r)) => scrub_txn(r),
            None => {}
        }
    }
}

fn error(e: CallError) -> Outcome {
    Outcome::Error {
        code: e.code(),
        message: e.message().to_string(),
    }
}

async fn execute(client: &Client, request: &Request) -> Outcome {
    match request.clone() {
        Request::Put(r) => client.put(r).await.map_or_else(error, |mut x| {
            scrub(&mut x.header);
            Outcome::Put(x)
        }),
        Request::Range(r) => client.range(r).await.map_or_else(error, |mut x| {
            scrub(&mut x.header);
            Outcome::Range(x)
        }),
        Request::Delete(r) => client.delete_range(r).await.map_or_else(error, |mut x| {
            scrub(&mut x.header);
            Outcome::Delete(x)
        }),
        Request::Txn(r) => client.txn(r).await.map_or_else(error, |mut x| {
            scrub_txn(&mut x);
            Outcome::Txn(x)
        }),
        Request::Compact(r) => client.compact(r).await.map_or_else(error, |mut x| {
            scrub(&mut x.header);
            Outcome::Compact(x)
        }),
    }
}

/// Generates requests over a small key space so that keys collide, ranges overlap and
/// compares hit existing keys. It tracks the revision and compaction point seen in the
/// reference's answers to aim reads at interesting revisions.
struct Generator {
    rng: ChaCha8Rng,
    revision: i64,
    compacted: i64,
}

const KEYS: &[&str] = &[
    "a", "a/1", "a/2", "a/3", "b", "b/1", "b/2", "c", "c/x", "d", "e", "f",
];

fn b(s: &str) -> Bytes {
    Bytes::from(s.as_bytes().to_vec())
}

impl Generator {
    fn key(&mut self) -> Bytes {
        b(KEYS[self.rng.gen_range(0..KEYS.len())])
    }

    fn value(&mut self) -> Bytes {
        match self.rng.gen_range(0..10) {
            0 => Bytes::new(),
            _ => Bytes::from(format!("v{}", self.rng.gen_range(0..1000)).into_bytes()),
        }
    }

    /// `(key, range_end)`: a single key, a prefix, an explicit range, from-key, or all keys.
    fn key_range(&mut self) -> (Bytes, Bytes) {
        match self.rng.gen_range(0..6) {
            0 | 1 => (self.key(), Bytes::new()),
            2 => {
                let p = ["a/", "b/", "c", "a", ""][self.rng.gen_range(0..5)];
                if p.is_empty() {
                    (b("\0"), b("\0"))
                } else {
                    (b(p), Bytes::from(prefix_range_end(p.as_bytes())))
                }
            }
            3 => {
                let (x, y) = (self.key(), self.key());
                // Sometimes reversed on purpose: an empty range, not an error.
                (x, y)
            }
            4 => (self.key(), b("\0")),
            _ => (b("\0"), b("\0")),
        }
    }

    fn read_revision(&mut self) -> i64 {
        match self.rng.gen_range(0..10) {
            0..=4 => 0,
            5..=7 => self.rng.gen_range(1..=self.revision.max(1)),
            8 => (self.compacted - self.rng.gen_range(0..3)).max(0),
            _ => self.revision + self.rng.gen_range(1..4),
        }
    }

    fn range(&mut self) -> RangeRequest {
        let (key, range_end) = self.key_range();
        let mut r = RangeRequest {
            key,
            range_end,
            revision: self.read_revision(),
            ..Default::default()
        };
        if self.rng.gen_bool(0.4) {
            r.limit = self.rng.gen_range(1..5);
        }
        if self.rng.gen_bool(0.3) {
            // Now and then an order outside the enum, which etcd 3.4 takes as "no sort".
            r.sort_order = [-1, 0, 0, 1, 1, 2, 2, 5][self.rng.gen_range(0..8)];
            r.sort_target = self.rng.gen_range(0..5);
        }
        // No invalid sort target: etcd 3.4 (the reference binary) crashes on one, while
        // raftkv answers "etcdserver: invalid sort option" as etcd 3.5+ does.
        r.keys_only = self.rng.gen_bool(0.15);
        r.count_only = self.rng.gen_bool(0.1);
        if self.rng.gen_bool(0.15) {
            let rev = self.rng.gen_range(1..=self.revision.max(1));
            match self.rng.gen_range(0..4) {
                0 => r.min_mod_revision = rev,
                1 => r.max_mod_revision = rev,
                2 => r.min_create_revision = rev,
                _ => r.max_create_revision = rev,
            }
        }
        if self.rng.gen_bool(0.02) {
            r.key = Bytes::new();
        }
        r
    }

    fn put(&mut self) -> PutRequest {
        let mut p = PutRequest {
            key: self.key(),
            value: self.value(),
            prev_kv: self.rng.gen_bool(0.3),
            ..Default::default()
        };
        match self.rng.gen_range(0..50) {
            0 => p.key = Bytes::new(),
            1 => {
                p.ignore_value = true;
                p.value = Bytes::new();
            }
            2 => p.ignore_value = true, // with a value: an error
            _ => {}
        }
        p
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = self.key_range();
        let mut d = DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.gen_bool(0.4),
        };
        if self.rng.gen_bool(0.02) {
            d.key = Bytes::new();
        }
        d
    }

    fn compare(&mut self) -> Compare {
        let target = self.rng.gen_range(0..4); // VERSION, CREATE, MOD, VALUE (no leases)
        let number = self.rng.gen_range(0..=self.revision.max(1));
        let union = match target {
            0 => TargetUnion::Version(self.rng.gen_range(0..4)),
            1 => TargetUnion::CreateRevision(number),
            2 => TargetUnion::ModRevision(number),
            _ => TargetUnion::Value(self.value()),
        };
        let (key, range_end) = if self.rng.gen_bool(0.15) {
            self.key_range()
        } else {
            (self.key(), Bytes::new())
        };
        Compare {
            result: self.rng.gen_range(0..4),
            target: [
                CompareTarget::Version,
                CompareTarget::Create,
                CompareTarget::Mod,
                CompareTarget::Value,
            ][target] as i32,
            key,
            target_union: Some(union),
            range_end,
        }
    }

    fn op(&mut self, depth: usize) -> RequestOp {
        let request = match self.rng.gen_range(0..10) {
            0..=3 => request_op::Request::RequestPut(self.put()),
            4..=6 => request_op::Request::RequestRange(RangeRequest {
                revision: 0,
                ..self.range()
            }),
            7 | 8 => request_op::Request::RequestDeleteRange(self.delete()),
            _ if depth < 2 => request_op::Request::RequestTxn(self.txn(depth + 1)),
            _ => request_op::Request::RequestPut(self.put()),
        };
        RequestOp {
            request: Some(request),
        }
    }

    fn txn(&mut self, depth: usize) -> TxnRequest {
        let too_many = depth == 0 && self.rng.gen_bool(0.04);
        let n_ops = |rng: &mut ChaCha8Rng| {
            if too_many {
                MAX_TXN_OPS + 1
            } else {
                rng.gen_range(0..4)
            }
        };
        let compares = self.rng.gen_range(0..3);
        let n_success = n_ops(&mut self.rng);
        let n_failure = self.rng.gen_range(0..3);
        let mut txn = TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: (0..n_success).map(|_| self.op(depth)).collect(),
            failure: (0..n_failure).map(|_| self.op(depth)).collect(),
        };
        if self.rng.gen_bool(0.05) {
            // Two puts of one key in one branch: "duplicate key given in txn request".
            let put = self.put();
            txn.success.push(RequestOp {
                request: Some(request_op::Request::RequestPut(put.clone())),
            });
            txn.success.push(RequestOp {
                request: Some(request_op::Request::RequestPut(put)),
            });
        }
        txn
    }

    fn compact(&mut self) -> CompactionRequest {
        let revision = match self.rng.gen_range(0..6) {
            0 => self.compacted.max(1), // already compacted
            1 => self.revision + 1,     // future
            _ => self
                .rng
                .gen_range(self.compacted.max(1)..=self.revision.max(1)),
        };
        CompactionRequest {
            revision,
            physical: self.rng.gen_bool(0.3),
        }
    }

    fn next(&mut self) -> Request {
        match self.rng.gen_range(0..100) {
            0..=29 => Request::Put(self.put()),
            30..=54 => Request::Range(self.range()),
            55..=69 => Request::Delete(self.delete()),
            70..=96 => Request::Txn(self.txn(0)),
            _ => Request::Compact(self.compact()),
        }
    }

    /// Learns the revision and compaction point from the reference's answer.
    fn observe(&mut self, request: &Request, outcome: &Outcome) {
        let header_rev = match outcome {
            Outcome::Put(r) => r.header.as_ref().map(|h| h.revision),
            Outcome::Range(r) => r.header.as_ref().map(|h| h.revision),
            Outcome::Delete(r) => r.header.as_ref().map(|h| h.revision),
            Outcome::Txn(r) => r.header.as_ref().map(|h| h.revision),
            Outcome::Compact(r) => r.header.as_ref().map(|h| h.revision),
            Outcome::Error { .. } => None,
        };
        if let Some(rev) = header_rev {
            self.revision = self.revision.max(rev);
        }
        if let (Request::Compact(c), Outcome::Compact(_)) = (request, outcome) {
            self.compacted = c.revision;
        }
    }
}

/// Invalid and edge requests sent first, so every run covers them whatever the seed.
fn edge_cases() -> Vec<Request> {
    let put = |k: &str, v: &str| PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    };
    let put_op = |k: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(put(k, "v"))),
    };
    vec![
        Request::Range(RangeRequest::default()), // empty key
        Request::Put(put("", "v")),
        Request::Delete(DeleteRangeRequest::default()),
        Request::Put(put("edge/a", "1")),
        Request::Put(put("edge/a", "2")),
        Request::Put(put("edge/b", "1")),
        // An order outside the enum: no sort (key order, not by value), then the limit.
        Request::Range(RangeRequest {
            key: b("edge/"),
            range_end: Bytes::from(prefix_range_end(b"edge/")),
            sort_order: 5,
            sort_target: SortTarget::Value as i32,
            limit: 1,
            ..Default::default()
        }),
        // Over --max-request-bytes (1.5 MiB) but under the gRPC frame limit.
        Request::Put(PutRequest {
            key: b("edge/big"),
            value: Bytes::from(vec![b'x'; 1_600_000]),
            ..Default::default()
        }),
        Request::Put(PutRequest {
            key: b("edge/missing"),
            ignore_value: true,
            ..Default::default()
        }),
        Request::Put(PutRequest {
            key: b("edge/a"),
            value: b("x"),
            ignore_value: true,
            ..Default::default()
        }),
        Request::Put(PutRequest {
            key: b("edge/a"),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        }),
        Request::Txn(TxnRequest {
            success: (0..=MAX_TXN_OPS)
                .map(|i| put_op(&format!("edge/t{i}")))
                .collect(),
            ..Default::default()
        }),
        Request::Txn(TxnRequest {
            success: vec![put_op("edge/dup"), put_op("edge/dup")],
            ..Default::default()
        }),
        Request::Txn(TxnRequest {
            success: vec![
                put_op("edge/x"),
                RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: b("edge/"),
                            range_end: Bytes::from(prefix_range_end(b"edge/")),
                            prev_kv: false,
                        },
                    )),
                },
            ],
            ..Default::default()
        }),
        Request::Range(RangeRequest {
            key: b("edge/a"),
            revision: 1_000,
            ..Default::default()
        }),
        Request::Compact(CompactionRequest {
            revision: 1_000,
            physical: false,
        }),
        Request::Compact(CompactionRequest {
            revision: 3,
            physical: true,
        }),
        Request::Compact(CompactionRequest {
            revision: 2,
            physical: false,
        }),
        Request::Range(RangeRequest {
            key: b("edge/a"),
            revision: 2,
            ..Default::default()
        }),
        Request::Range(RangeRequest {
            key: b("edge/a"),
            revision: 3,
            ..Default::default()
        }),
    ]
}

struct Side {
    label: &'static str,
    cluster: LocalCluster,
    client: Client,
}

fn start_side(label: &'static str, program: MemberProgram) -> Side {
    let extra = vec![format!("--max-txn-ops={MAX_TXN_OPS}")];
    let cluster = common::start_cluster_of(program, &format!("diff-{label}"), extra);
    let client = Client::new(
        &cluster.endpoints(),
        Timeouts {
            dial: Duration::from_secs(2),
            call: Duration::from_secs(10),
        },
    )
    .expect("client");
    Side {
        label,
        cluster,
        client,
    }
}

async fn ready(side: &Side) {
    let mut ledger = TermLedger::default();
    if let Err(e) =
        wait_for_leader(&side.client, &mut ledger, Duration::from_secs(30), |_| true).await
    {
        panic!(
            "{} cluster has no leader: {e}\n{}",
            side.label,
            side.cluster.log_tails(20)
        );
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

#[test]
fn same_responses_as_etcd() {
    let seed = env_number("RAFTKV_DIFF_SEED", 20_260_525);
    let ops = env_number("RAFTKV_DIFF_OPS", 2500) as usize;
    let keep_going = std::env::var("RAFTKV_DIFF_KEEP_GOING").is_ok();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Lazily connected channels need a runtime to exist when they are built.
    let _context = runtime.enter();
    let etcd = start_side("etcd", MemberProgram::Etcd(common::etcd_binary()));
    let ours = start_side("raftkv", common::raftkv_program());
    runtime.block_on(async {
        let limit = Duration::from_secs(400);
        let outcome =
            tokio::time::timeout(limit, compare_runs(&etcd, &ours, seed, ops, keep_going)).await;
        assert!(
            outcome.is_ok(),
            "the differential run did not finish within {limit:?} (seed {seed})"
        );
    });
}

async fn compare_runs(etcd: &Side, ours: &Side, seed: u64, ops: usize, keep_going: bool) {
    ready(etcd).await;
    ready(ours).await;
    let mut generator = Generator {
        rng: ChaCha8Rng::seed_from_u64(seed),
        revision: 1,
        compacted: 0,
    };
    // The edge cases below compact at revision 3; the generator learns it from the answers.
    let started = Instant::now();
    let mut mismatches = Vec::new();
    let edges = edge_cases();
    let total = edges.len() + ops;
    let mut edges = edges.into_iter();
    for index in 0..total {
        let request = edges.next().unwrap_or_else(|| generator.next());
        let expected = execute(&etcd.client, &request).await;
        let actual = execute(&ours.client, &request).await;
        generator.observe(&request, &expected);
        if expected != actual {
            let report = format!(
                "op {index} (seed {seed}): {request:?}\n  etcd:   {expected:?}\n  raftkv: {actual:?}"
            );
            if !keep_going {
                panic!("responses differ\n{report}");
            }
            println!("MISMATCH {report}");
            mismatches.push(report);
        }
    }
    // Finally every revision still readable must hold the same keys on both.
    for revision in generator.compacted.max(1)..=generator.revision {
        let all = Request::Range(RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            revision,
            ..Default::default()
        });
        let expected = execute(&etcd.client, &all).await;
        let actual = execute(&ours.client, &all).await;
        if expected != actual {
            let report = format!(
                "full read at revision {revision}:\n  etcd:   {expected:?}\n  raftkv: {actual:?}"
            );
            if !keep_going {
                panic!("stores differ (seed {seed})\n{report}");
            }
            mismatches.push(report);
        }
    }
    println!(
        "{total} requests ({ops} random), final revision {}, compacted at {}, {:.1}s, {} mismatches",
        generator.revision,
        generator.compacted,
        started.elapsed().as_secs_f64(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches (seed {seed}); first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The comparison itself must catch a difference: a changed revision or message is seen.
#[test]
fn scrubbing_keeps_what_must_match() {
    let mut a = proto::etcdserverpb::PutResponse {
        header: Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 5,
            raft_term: 3,
        }),
        prev_kv: None,
    };
    let mut b_ = a.clone();
    b_.header.as_mut().unwrap().member_id = 99;
    b_.header.as_mut().unwrap().raft_term = 7;
    scrub(&mut a.header);
    scrub(&mut b_.header);
    assert_eq!(Outcome::Put(a.clone()), Outcome::Put(b_.clone()));
    b_.header.as_mut().unwrap().revision = 6;
    assert_ne!(Outcome::Put(a), Outcome::Put(b_));
    let e1 = Outcome::Error {
        code: tonic::Code::InvalidArgument,
        message: "etcdserver: key is not provided".into(),
    };
    let e2 = Outcome::Error {
        code: tonic::Code::InvalidArgument,
        message: "etcdserver: key not provided".into(),
    };
    assert_ne!(e1, e2);
    let _ = (SortOrder::None, SortTarget::Key, CompareResult::Equal);
}
