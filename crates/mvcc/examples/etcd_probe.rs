//! Differential probe: sends the same KV requests to a real etcd and to an in-process
//! [`mvcc::Store`] and reports every response that differs (ignoring cluster/member ids and
//! the Raft term, which only a server knows).
//!
//! ```text
//! etcd --data-dir $(mktemp -d) --listen-client-urls http://127.0.0.1:23790 \
//!      --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 &
//! cargo run -p raftkv-mvcc --example etcd_probe -- http://127.0.0.1:23790 scripted
//! cargo run -p raftkv-mvcc --example etcd_probe -- http://127.0.0.1:23790 random 7 2000
//! ```
//!
//! Both modes expect an etcd with an empty keyspace at revision 1 (a fresh data dir), since
//! revisions are compared exactly. Exits non-zero if anything differed.

use bytes::Bytes;
use mvcc::{validate, Limits, Response, Store};
use proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, CompactionRequest, Compare, DeleteRangeRequest,
    PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use proto::raftkvpb::{internal_request::Request, InternalRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
enum Op {
    Write(Request),
    Read(RangeRequest),
}

type Outcome = Result<String, (i32, String)>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:23790".into());
    let mode = args.get(2).map(String::as_str).unwrap_or("scripted");
    let ops = match mode {
        "scripted" => scripted(),
        "random" => {
            let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
            let count = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000);
            random_ops(seed, count)
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let mut etcd = KvClient::connect(endpoint).await?;
    let mut store = Store::new();
    let mut differences = 0;
    let (mut oks, mut errors) = (0, std::collections::BTreeMap::<String, usize>::new());
    for (i, op) in ops.iter().enumerate() {
        let theirs = run_etcd(&mut etcd, op).await;
        let ours = run_store(&mut store, op);
        match &theirs {
            Ok(_) => oks += 1,
            Err((_, message)) => *errors.entry(message.clone()).or_default() += 1,
        }
        if theirs != ours {
            differences += 1;
            println!("#{i} DIFFERS: {op:?}\n  etcd:  {theirs:?}\n  store: {ours:?}");
        } else if mode == "scripted" {
            println!("#{i} same: {theirs:?}");
        }
    }
    println!("etcd answered {oks} ok; errors: {errors:?}");
    println!("final revision {}", store.current_revision());
    println!("{} operations, {differences} differences", ops.len());
    if differences > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn run_etcd(client: &mut KvClient<Channel>, op: &Op) -> Outcome {
    let result = match op.clone() {
        Op::Read(r) => client
            .range(r)
            .await
            .map(|r| format!("{:?}", clean_range(r.into_inner()))),
        Op::Write(Request::Put(p)) => client.put(p).await.map(|r| {
            let mut r = r.into_inner();
            r.header = clean(r.header);
            format!("{r:?}")
        }),
        Op::Write(Request::DeleteRange(d)) => client.delete_range(d).await.map(|r| {
            let mut r = r.into_inner();
            r.header = clean(r.header);
            format!("{r:?}")
        }),
        Op::Write(Request::Txn(t)) => client
            .txn(t)
            .await
            .map(|r| format!("{:?}", clean_txn(r.into_inner()))),
        Op::Write(Request::Compaction(c)) => client.compact(c).await.map(|r| {
            let mut r = r.into_inner();
            r.header = clean(r.header);
            format!("{r:?}")
        }),
        Op::Write(Request::Alarm(_)) => unreachable!("the probe generates no alarms"),
        // The probe compares the KV service only; it never generates lease or auth entries.
        Op::Write(other) => return Err((12, format!("not probed: {other:?}"))),
    };
    result.map_err(|s| (s.code() as i32, s.message().to_string()))
}

fn run_store(store: &mut Store, op: &Op) -> Outcome {
    let result = match op {
        Op::Read(r) => store.range(r).map(|r| format!("{:?}", clean_range(r))),
        Op::Write(request) => validate::check_request(request, &Limits::default())
            .and_then(|()| {
                store.apply(&InternalRequest {
                    auth: None,
                    request: Some(request.clone()),
                })
            })
            .map(|resp| match resp {
                Response::Put(r) => format!("{r:?}"),
                Response::DeleteRange(r) => format!("{r:?}"),
                Response::Txn(r) => format!("{:?}", clean_txn(r)),
                Response::Compaction(r) => format!("{r:?}"),
                Response::Alarm(r) => format!("{r:?}"),
                other => format!("{other:?}"),
            }),
    };
    result.map_err(|e| {
        let (code, message) = e.to_status();
        (code as i32, message)
    })
}

fn clean(header: Option<ResponseHeader>) -> Option<ResponseHeader> {
    header.map(|h| ResponseHeader {
        revision: h.revision,
        ..Default::default()
    })
}

fn clean_range(mut r: proto::etcdserverpb::RangeResponse) -> proto::etcdserverpb::RangeResponse {
    r.header = clean(r.header);
    r
}

fn clean_txn(mut r: TxnResponse) -> TxnResponse {
    r.header = clean(r.header);
    r
}

// ------------------------------------------------------------------ request builders

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn get(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

fn del(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(k),
        range_end: b(end),
        prev_kv: true,
    }
}

fn op_put(p: PutRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(p)),
    }
}
fn op_get(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}
fn op_del(d: DeleteRangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(d)),
    }
}
fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

fn cmp(
    k: &str,
    end: &str,
    result: compare::CompareResult,
    target: compare::TargetUnion,
) -> Compare {
    let t = match &target {
        compare::TargetUnion::Version(_) => compare::CompareTarget::Version,
        compare::TargetUnion::CreateRevision(_) => compare::CompareTarget::Create,
        compare::TargetUnion::ModRevision(_) => compare::CompareTarget::Mod,
        compare::TargetUnion::Value(_) => compare::CompareTarget::Value,
        compare::TargetUnion::Lease(_) => compare::CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: t as i32,
        key: b(k),
        range_end: b(end),
        target_union: Some(target),
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

fn w(r: Request) -> Op {
    Op::Write(r)
}

fn scripted() -> Vec<Op> {
    use compare::CompareResult::*;
    use compare::TargetUnion as T;
    use proto::etcdserverpb::range_request::{SortOrder, SortTarget};
    let mut ops = vec![
        Op::Read(get("a", "")),
        w(Request::Put(PutRequest {
            prev_kv: true,
            ..put("a", "1")
        })),
        w(Request::Put(PutRequest {
            prev_kv: true,
            ..put("a", "2")
        })),
        w(Request::DeleteRange(del("zz", ""))),
        w(Request::DeleteRange(del("zz", "\0"))),
        w(Request::Put(put("b", "3"))),
        w(Request::Put(put("c", "1"))),
        w(Request::Put(put("c", "2"))),
        w(Request::Put(put("c", "0"))),
        w(Request::Put(put("d", "9"))),
        Op::Read(RangeRequest {
            limit: 2,
            ..get("a", "z")
        }),
        Op::Read(RangeRequest {
            limit: 1,
            count_only: true,
            ..get("a", "z")
        }),
        Op::Read(RangeRequest {
            count_only: true,
            ..get("\0", "\0")
        }),
        // sort target with order NONE and a limit: etcd sorts only the first limit+1 keys
        Op::Read(RangeRequest {
            limit: 2,
            sort_target: SortTarget::Version as i32,
            ..get("a", "z")
        }),
        Op::Read(RangeRequest {
            limit: 2,
            sort_target: SortTarget::Version as i32,
            sort_order: SortOrder::Descend as i32,
            ..get("a", "z")
        }),
        Op::Read(RangeRequest {
            keys_only: true,
            sort_target: SortTarget::Value as i32,
            sort_order: SortOrder::Descend as i32,
            ..get("a", "\0")
        }),
        Op::Read(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            limit: 3,
            ..get("a", "\0")
        }),
        Op::Read(RangeRequest {
            min_mod_revision: 4,
            max_mod_revision: 7,
            limit: 1,
            ..get("a", "\0")
        }),
        Op::Read(RangeRequest {
            min_create_revision: 5,
            ..get("a", "\0")
        }),
        Op::Read(RangeRequest {
            max_create_revision: 4,
            ..get("a", "\0")
        }),
        // An out-of-range sort_order means "no sort" to etcd 3.4, as to us.
        Op::Read(RangeRequest {
            sort_order: 5,
            sort_target: SortTarget::Value as i32,
            limit: 2,
            ..get("a", "\0")
        }),
        // Not probed: an out-of-range sort_target crashes etcd 3.4 (nil sorter); we answer
        // "invalid sort option" like etcd 3.5+.
        Op::Read(get("d", "b")),
        Op::Read(get("\0", "\0")),
        Op::Read(get("", "")),
        Op::Read(RangeRequest {
            revision: 3,
            ..get("a", "\0")
        }),
        Op::Read(RangeRequest {
            revision: 100,
            ..get("a", "")
        }),
        // read-only txn and txn whose only write deletes nothing: no new revision
        w(Request::Txn(txn(
            vec![],
            vec![op_get(get("a", ""))],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![op_del(del("nope", ""))],
            vec![],
        ))),
        // nested txn: inner compares see the state before the outer txn's writes
        w(Request::Txn(txn(
            vec![cmp("a", "", Greater, T::Version(0))],
            vec![
                op_put(put("x", "1")),
                op_get(get("x", "")),
                op_del(del("missing", "")),
                op_txn(txn(
                    vec![cmp("x", "", Equal, T::Version(0))],
                    vec![op_put(put("z", "then")), op_get(get("z", ""))],
                    vec![op_put(put("w", "else"))],
                )),
                op_get(RangeRequest {
                    revision: 2,
                    ..get("a", "")
                }),
                op_del(del("b", "")),
            ],
            vec![],
        ))),
        // compare with range_end, value compare on a missing key, mismatched target union
        w(Request::Txn(txn(
            vec![cmp("a", "e", Greater, T::Version(0))],
            vec![],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![cmp("nokey", "", NotEqual, T::Value(b("x")))],
            vec![],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![cmp("nokey", "nokez", Equal, T::CreateRevision(0))],
            vec![],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![Compare {
                target: compare::CompareTarget::Mod as i32,
                target_union: Some(T::Version(1)),
                ..cmp("a", "", Equal, T::Version(1))
            }],
            vec![],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![cmp("a", "", Equal, T::Lease(0))],
            vec![op_get(get("a", ""))],
            vec![],
        ))),
        // duplicate keys
        w(Request::Txn(txn(
            vec![],
            vec![op_put(put("k", "1")), op_put(put("k", "2"))],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![op_put(put("k", "1")), op_del(del("j", "l"))],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![op_put(put("k", "1")), op_del(del("k", "\0"))],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![op_del(del("k", "")), op_del(del("j", "l"))],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![op_txn(txn(
                vec![],
                vec![op_put(put("m", "t"))],
                vec![op_put(put("m", "e"))],
            ))],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![
                op_txn(txn(vec![], vec![op_put(put("n", "t"))], vec![])),
                op_put(put("n", "outer")),
            ],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![
                op_txn(txn(vec![], vec![op_put(put("p", "t"))], vec![])),
                op_txn(txn(vec![], vec![op_del(del("p", ""))], vec![])),
            ],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![
                op_txn(txn(vec![], vec![op_del(del("q", ""))], vec![])),
                op_txn(txn(vec![], vec![op_put(put("q", "t"))], vec![])),
            ],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![op_put(put("k", "1"))],
            vec![op_put(put("k", "2"))],
        ))),
        // validation
        w(Request::Put(put("", "v"))),
        w(Request::DeleteRange(del("", ""))),
        w(Request::Txn(txn(
            vec![cmp("", "", Equal, T::Version(0))],
            vec![],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![RequestOp { request: None }],
            vec![],
        ))),
        w(Request::Txn(txn(vec![], vec![op_get(get("", ""))], vec![]))),
        w(Request::Put(PutRequest {
            ignore_value: true,
            ..put("a", "v")
        })),
        w(Request::Put(PutRequest {
            ignore_lease: true,
            lease: 5,
            ..put("a", "v")
        })),
        w(Request::Put(PutRequest {
            ignore_value: true,
            ..put("nokey", "")
        })),
        w(Request::Put(PutRequest {
            ignore_lease: true,
            ..put("nokey", "v")
        })),
        w(Request::Put(PutRequest {
            lease: 5,
            ..put("a", "v")
        })),
        w(Request::Put(PutRequest {
            lease: 5,
            ignore_value: true,
            ..put("nokey", "")
        })),
        w(Request::Txn(txn(
            vec![],
            vec![op_put(PutRequest {
                lease: 5,
                ignore_value: true,
                ..put("nokey", "")
            })],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![],
            vec![
                op_get(RangeRequest {
                    revision: 1000,
                    ..get("a", "")
                }),
                op_put(PutRequest {
                    lease: 5,
                    ..put("a", "")
                }),
            ],
            vec![],
        ))),
        w(Request::Put(PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put("a", "")
        })),
        w(Request::Put(PutRequest {
            ignore_lease: true,
            prev_kv: true,
            ..put("a", "new")
        })),
        w(Request::Txn(txn(
            vec![],
            (0..129)
                .map(|i| op_put(put(&format!("t{i}"), "v")))
                .collect(),
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![cmp("a", "", Equal, T::Version(0)); 2],
            vec![op_txn(txn(
                vec![],
                (0..127)
                    .map(|i| op_put(put(&format!("t{i}"), "v")))
                    .collect(),
                vec![],
            ))],
            vec![],
        ))),
        w(Request::Txn(txn(
            vec![cmp("a", "", Equal, T::Version(0)); 2],
            vec![op_txn(txn(
                vec![],
                (0..126)
                    .map(|i| op_put(put(&format!("t{i}"), "v")))
                    .collect(),
                vec![],
            ))],
            vec![],
        ))),
        // deletes, then reads at old revisions and compaction rules
        w(Request::DeleteRange(del("a", "c"))),
        w(Request::Put(put("a", "again"))),
        Op::Read(RangeRequest {
            revision: 5,
            ..get("a", "\0")
        }),
    ];
    ops.extend([
        w(Request::Compaction(CompactionRequest {
            revision: 0,
            physical: false,
        })),
        w(Request::Compaction(CompactionRequest {
            revision: 6,
            physical: false,
        })),
        w(Request::Compaction(CompactionRequest {
            revision: 6,
            physical: true,
        })),
        w(Request::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        })),
        w(Request::Compaction(CompactionRequest {
            revision: 10_000,
            physical: false,
        })),
        Op::Read(RangeRequest {
            revision: 5,
            ..get("a", "\0")
        }),
        Op::Read(RangeRequest {
            revision: 6,
            ..get("a", "\0")
        }),
        w(Request::Txn(txn(
            vec![],
            vec![op_get(RangeRequest {
                revision: 5,
                ..get("a", "")
            })],
            vec![],
        ))),
        Op::Read(get("\0", "\0")),
    ]);
    ops
}

const RANDOM_KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn random_key(rng: &mut ChaCha8Rng) -> String {
    RANDOM_KEYS[rng.gen_range(0..RANDOM_KEYS.len())].to_string()
}

fn random_end(rng: &mut ChaCha8Rng) -> String {
    match rng.gen_range(0..4) {
        0 => String::new(),
        1 => "\0".to_string(),
        _ => random_key(rng) + "z",
    }
}

/// A txn of up to 3 compares and up to 3 operations per branch, nested up to two levels.
fn random_txn(rng: &mut ChaCha8Rng, depth: u32, rev_hint: i64) -> TxnRequest {
    use compare::CompareResult as R;
    let branch = |rng: &mut ChaCha8Rng| -> Vec<RequestOp> {
        (0..rng.gen_range(0..4))
            .map(|_| match rng.gen_range(0..if depth < 2 { 5 } else { 4 }) {
                0 | 1 => op_put(PutRequest {
                    key: b(&random_key(rng)),
                    value: b(&rng.gen_range(0..5).to_string()),
                    prev_kv: rng.gen_bool(0.3),
                    ..Default::default()
                }),
                2 => op_del(DeleteRangeRequest {
                    key: b(&random_key(rng)),
                    range_end: b(&random_end(rng)),
                    prev_kv: rng.gen_bool(0.5),
                }),
                3 => op_get(RangeRequest {
                    revision: if rng.gen_bool(0.2) {
                        rng.gen_range(0..=rev_hint)
                    } else {
                        0
                    },
                    limit: rng.gen_range(0..3),
                    ..get(&random_key(rng), &random_end(rng))
                }),
                _ => op_txn(random_txn(rng, depth + 1, rev_hint)),
            })
            .collect()
    };
    let compares = (0..rng.gen_range(0..3))
        .map(|_| {
            let result = [R::Equal, R::Greater, R::Less, R::NotEqual][rng.gen_range(0..4)];
            let target = match rng.gen_range(0..5) {
                0 => compare::TargetUnion::Version(rng.gen_range(0..3)),
                1 => compare::TargetUnion::CreateRevision(rng.gen_range(0..rev_hint + 1)),
                2 => compare::TargetUnion::ModRevision(rng.gen_range(0..rev_hint + 1)),
                3 => compare::TargetUnion::Lease(0),
                _ => compare::TargetUnion::Value(b(&rng.gen_range(0..5).to_string())),
            };
            let k = random_key(rng);
            let e = if rng.gen_bool(0.2) {
                random_end(rng)
            } else {
                String::new()
            };
            cmp(&k, &e, result, target)
        })
        .collect();
    let success = branch(rng);
    let failure = branch(rng);
    txn(compares, success, failure)
}

fn random_ops(seed: u64, count: usize) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let key = random_key;
    let end = random_end;
    let mut ops = Vec::new();
    // Track an upper bound of the revision so reads and compactions hit interesting values.
    let mut rev_hint: i64 = 1;
    for _ in 0..count {
        let op = match rng.gen_range(0..100) {
            0..=34 => {
                rev_hint += 1;
                let ignore_value = rng.gen_bool(0.1);
                // Mostly valid ignore_value puts (empty value), sometimes the invalid kind.
                let value = if ignore_value && rng.gen_bool(0.8) {
                    String::new()
                } else {
                    rng.gen_range(0..5).to_string()
                };
                w(Request::Put(PutRequest {
                    key: b(&key(&mut rng)),
                    value: b(&value),
                    prev_kv: rng.gen_bool(0.3),
                    ignore_value,
                    ..Default::default()
                }))
            }
            35..=44 => w(Request::DeleteRange(DeleteRangeRequest {
                key: b(&key(&mut rng)),
                range_end: b(&end(&mut rng)),
                prev_kv: rng.gen_bool(0.5),
            })),
            45..=74 => Op::Read(RangeRequest {
                key: b(&key(&mut rng)),
                range_end: b(&end(&mut rng)),
                limit: rng.gen_range(0..4),
                revision: if rng.gen_bool(0.3) {
                    rng.gen_range(0..=rev_hint + 1)
                } else {
                    0
                },
                sort_order: rng.gen_range(0..3),
                sort_target: if rng.gen_bool(0.5) {
                    0
                } else {
                    rng.gen_range(0..5)
                },
                keys_only: rng.gen_bool(0.2),
                count_only: rng.gen_bool(0.1),
                min_mod_revision: if rng.gen_bool(0.1) {
                    rng.gen_range(0..rev_hint + 1)
                } else {
                    0
                },
                max_create_revision: if rng.gen_bool(0.1) {
                    rng.gen_range(0..rev_hint + 1)
                } else {
                    0
                },
                ..Default::default()
            }),
            75..=96 => {
                rev_hint += 1;
                w(Request::Txn(random_txn(&mut rng, 0, rev_hint)))
            }
            _ => w(Request::Compaction(CompactionRequest {
                revision: rng.gen_range((rev_hint - 5).max(0)..=rev_hint),
                physical: false,
            })),
        };
        ops.push(op);
    }
    ops
}
