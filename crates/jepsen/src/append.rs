//! Workload (b): list-append, checked with lincheck's Elle-style checker.
//!
//! Each key holds a list of unique numbers, stored as a space-separated string. A transaction
//! touches one or two keys, reading each and optionally appending to it:
//!
//! 1. one read-only etcd Txn reads every key the transaction touches (with mod_revisions);
//! 2. if it appends anything, one Txn guarded by `mod_revision(k) == r` for *every* key read
//!    puts the extended lists. If it succeeds, no touched key changed between the two steps, so
//!    the reads and the appends took effect atomically at the second Txn. If the guard fails,
//!    nothing was written: the transaction is recorded as failed.
//!
//! An error in step 1 means nothing was written (`fail`); an indeterminate step 2 is `info`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lincheck::elle::MicroOp;
use lincheck::jsonl::TxnEvent;
use proto::etcdserverpb::request_op::Request as Op;
use proto::etcdserverpb::response_op::Response as OpResponse;
use proto::etcdserverpb::{DeleteRangeRequest, RequestOp, TxnRequest, TxnResponse};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::client::{compare_mod_revision, put_op, range_op, EtcdClient, Outcome};
/// Pause after a failed operation before the next one.
const FAIL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

use crate::recorder::{OpCounts, ProcessIds, Recorder};

pub fn delete_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        })),
    }
}

/// Shared state of the list-append workload.
pub struct Appends {
    pub history: Arc<Recorder>,
    pub processes: Arc<ProcessIds>,
    pub keys: Vec<String>,
    next_element: AtomicU64,
    /// (key, element) of every acknowledged append.
    pub acked: Mutex<Vec<(String, u64)>>,
    /// (key, element) of every append whose transaction provably failed.
    pub failed: Mutex<Vec<(String, u64)>>,
}

/// Parses a stored list ("" or absent = empty). `None` if the value is not a list we wrote.
pub fn parse_list(value: &[u8]) -> Option<Vec<u64>> {
    let text = std::str::from_utf8(value).ok()?;
    text.split_whitespace().map(|e| e.parse().ok()).collect()
}

fn format_list(list: &[u64]) -> String {
    list.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one read-only Txn saw: per key, its list and mod_revision.
pub type Snapshot = Vec<(Vec<u64>, u64)>;

/// Decodes the ranges of a read-only txn (one range per key, in order).
pub fn decode_reads(resp: &TxnResponse, keys: usize) -> Result<Snapshot, String> {
    if resp.responses.len() != keys {
        return Err(format!(
            "expected {keys} range responses, got {}",
            resp.responses.len()
        ));
    }
    resp.responses
        .iter()
        .map(|r| match &r.response {
            Some(OpResponse::ResponseRange(range)) => match range.kvs.first() {
                None => Ok((Vec::new(), 0)),
                Some(kv) => parse_list(&kv.value)
                    .map(|l| (l, u64::try_from(kv.mod_revision).unwrap_or(0)))
                    .ok_or_else(|| format!("unparseable list {:?}", kv.value)),
            },
            other => Err(format!("unexpected response {other:?}")),
        })
        .collect()
}

/// A read-only transaction over `keys`.
pub fn read_txn(keys: &[&str]) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success: keys.iter().map(|k| range_op(k)).collect(),
        failure: vec![],
    }
}

impl Appends {
    pub fn new(history: Arc<Recorder>, processes: Arc<ProcessIds>, keys: usize) -> Appends {
        Appends {
            history,
            processes,
            keys: (0..keys.max(1)).map(|i| format!("a{i}")).collect(),
            next_element: AtomicU64::new(1),
            acked: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
        }
    }

    fn record_outcome(&self, process: u64, outcome: &Outcome<Vec<MicroOp>>) {
        match outcome {
            Outcome::Ok(ops) => self.history.record(|time| TxnEvent::Ok {
                time,
                process,
                ops: ops.clone(),
            }),
            Outcome::Fail(error) => self.history.record(|time| TxnEvent::Fail {
                time,
                process,
                error: error.clone(),
            }),
            Outcome::Unknown(error) => self.history.record(|time| TxnEvent::Info {
                time,
                process,
                error: error.clone(),
            }),
        };
    }

    /// Records and performs one transaction: for each `(key, append?)`, read the key and, if
    /// asked, append a fresh element to it.
    pub async fn run_txn(
        &self,
        client: &mut EtcdClient,
        process: u64,
        plan: &[(String, bool)],
    ) -> Outcome<Vec<MicroOp>> {
        let mut ops = Vec::new();
        for (key, append) in plan {
            ops.push(MicroOp::Read {
                key: key.clone(),
                list: None,
            });
            if *append {
                ops.push(MicroOp::Append {
                    key: key.clone(),
                    element: self.next_element.fetch_add(1, Ordering::Relaxed),
                });
            }
        }
        self.history.record(|time| TxnEvent::Invoke {
            time,
            process,
            ops: ops.clone(),
        });
        let appended: Vec<(String, u64)> = ops
            .iter()
            .filter_map(|op| match op {
                MicroOp::Append { key, element } => Some((key.clone(), *element)),
                MicroOp::Read { .. } => None,
            })
            .collect();
        let outcome = perform(client, plan, ops).await;
        self.record_outcome(process, &outcome);
        match &outcome {
            Outcome::Ok(_) => crate::register::lock(&self.acked).extend(appended),
            Outcome::Fail(_) => crate::register::lock(&self.failed).extend(appended),
            Outcome::Unknown(_) => {}
        }
        outcome
    }
}

async fn perform(
    client: &mut EtcdClient,
    plan: &[(String, bool)],
    mut ops: Vec<MicroOp>,
) -> Outcome<Vec<MicroOp>> {
    let keys: Vec<&str> = plan.iter().map(|(k, _)| k.as_str()).collect();
    let snapshot = match client.txn(read_txn(&keys)).await {
        Outcome::Ok(resp) => match decode_reads(&resp, keys.len()) {
            Ok(s) => s,
            Err(e) => return Outcome::Fail(format!("bad read: {e}")),
        },
        // Nothing was written yet, whatever happened to the read.
        Outcome::Fail(e) | Outcome::Unknown(e) => return Outcome::Fail(e),
    };
    let mut new_lists: Vec<(String, Vec<u64>)> = Vec::new();
    for op in &mut ops {
        match op {
            MicroOp::Read { key, list } => {
                let i = keys.iter().position(|k| k == key).unwrap_or(0);
                *list = Some(snapshot[i].0.clone());
            }
            MicroOp::Append { key, element } => {
                let i = keys.iter().position(|k| k == key).unwrap_or(0);
                let mut l = snapshot[i].0.clone();
                l.push(*element);
                new_lists.push((key.clone(), l));
            }
        }
    }
    if new_lists.is_empty() {
        return Outcome::Ok(ops);
    }
    let req = TxnRequest {
        compare: keys
            .iter()
            .zip(&snapshot)
            .map(|(k, (_, m))| compare_mod_revision(k, *m))
            .collect(),
        success: new_lists
            .iter()
            .map(|(k, l)| put_op(k, &format_list(l)))
            .collect(),
        failure: vec![],
    };
    match client.txn(req).await {
        Outcome::Ok(resp) if resp.succeeded => Outcome::Ok(ops),
        Outcome::Ok(_) => Outcome::Fail("mod_revision guard failed: nothing written".into()),
        Outcome::Fail(e) => Outcome::Fail(e),
        Outcome::Unknown(e) => Outcome::Unknown(e),
    }
}

/// One client: transactions back to back until `stop`.
pub async fn client_loop(
    appends: Arc<Appends>,
    mut client: EtcdClient,
    mut rng: ChaCha8Rng,
    stop: Arc<AtomicBool>,
) -> OpCounts {
    let mut counts = OpCounts::default();
    let mut process = appends.processes.next();
    while !stop.load(Ordering::Relaxed) {
        let n = rng.gen_range(1..=2usize).min(appends.keys.len());
        let keys: Vec<&String> = appends.keys.choose_multiple(&mut rng, n).collect();
        let plan: Vec<(String, bool)> = keys
            .into_iter()
            .map(|k| (k.clone(), rng.gen_bool(0.6)))
            .collect();
        match appends.run_txn(&mut client, process, &plan).await {
            Outcome::Ok(_) => counts.ok += 1,
            Outcome::Fail(_) => {
                counts.fail += 1;
                // Typically the member is down or leaderless: do not spin on it.
                tokio::time::sleep(FAIL_BACKOFF).await;
            }
            Outcome::Unknown(_) => {
                counts.indeterminate += 1;
                process = appends.processes.next();
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_list(b""), Some(vec![]));
        assert_eq!(
            parse_list(format_list(&[3, 1, 2]).as_bytes()),
            Some(vec![3, 1, 2])
        );
        assert_eq!(parse_list(b"1 x"), None);
    }
}
