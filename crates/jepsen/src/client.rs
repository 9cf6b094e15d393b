//! One etcd client connection with a per-attempt deadline and honest outcomes.
//!
//! Nothing here retries: a write is sent once. Its outcome is `Ok`, `Fail` only when the error
//! proves the request was not executed (`raftkv_client::retry::proves_not_executed`: refused
//! before reaching the server, or rejected as invalid), and `Unknown` otherwise (timeout,
//! broken connection, `UNAVAILABLE` after sending...). A read's error can always be treated
//! as a failure: a read that did not return changed nothing.
//!
//! Unlike `raftkv_client::Client`, a client here talks to exactly one member and never fails
//! over: each history process is pinned to one member so the nemesis's faults hit it.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::request_op::Request as Op;
use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use raftkv_client::endpoint::lazy_channel;
use raftkv_client::retry::proves_not_executed;
use tonic::transport::Channel;
use tonic::Status;

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    Ok(T),
    /// Proven not executed.
    Fail(String),
    /// May or may not have been executed.
    Unknown(String),
}

/// Runs one attempt under `deadline` and classifies its result.
pub async fn attempt<T>(
    deadline: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Outcome<T> {
    match tokio::time::timeout(deadline, fut).await {
        Err(_) => Outcome::Unknown("client deadline exceeded".into()),
        Ok(Ok(resp)) => Outcome::Ok(resp.into_inner()),
        Ok(Err(status)) => {
            let text = format!("{:?}: {}", status.code(), status.message());
            if proves_not_executed(&status) {
                Outcome::Fail(text)
            } else {
                Outcome::Unknown(text)
            }
        }
    }
}

/// A value read from one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub value: Option<String>,
    pub mod_revision: u64,
    /// Header revision.
    pub revision: u64,
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn header_revision(h: &Option<proto::etcdserverpb::ResponseHeader>) -> u64 {
    h.as_ref().map_or(0, |h| rev(h.revision))
}

/// A client with its own HTTP/2 connection to one member.
#[derive(Clone)]
pub struct EtcdClient {
    kv: KvClient<Channel>,
    pub deadline: Duration,
}

impl EtcdClient {
    /// A lazily connected client: the connection is opened by the first request, and
    /// re-opened after it breaks (that is a new attempt's business, not a retry).
    pub fn new(endpoint: &str, deadline: Duration) -> Result<EtcdClient> {
        let channel = lazy_channel(endpoint, deadline, Some(deadline))?;
        Ok(EtcdClient {
            kv: KvClient::new(channel),
            deadline,
        })
    }

    /// A linearizable read of `key`.
    pub async fn get(&mut self, key: &str) -> Outcome<Read> {
        let req = RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        let mut kv = self.kv.clone();
        match attempt(self.deadline, kv.range(req)).await {
            Outcome::Ok(resp) => {
                let revision = header_revision(&resp.header);
                Outcome::Ok(match resp.kvs.first() {
                    Some(kv) => Read {
                        value: Some(String::from_utf8_lossy(&kv.value).into_owned()),
                        mod_revision: rev(kv.mod_revision),
                        revision,
                    },
                    None => Read {
                        value: None,
                        mod_revision: 0,
                        revision,
                    },
                })
            }
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Unknown(e) => Outcome::Unknown(e),
        }
    }

    /// Put; returns the header revision.
    pub async fn put(&mut self, key: &str, value: &str) -> Outcome<u64> {
        let req = PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        };
        let mut kv = self.kv.clone();
        map(attempt(self.deadline, kv.put(req)).await, |r| {
            header_revision(&r.header)
        })
    }

    /// DeleteRange of one key; returns (deleted anything, header revision).
    pub async fn delete(&mut self, key: &str) -> Outcome<(bool, u64)> {
        let req = DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        let mut kv = self.kv.clone();
        map(attempt(self.deadline, kv.delete_range(req)).await, |r| {
            (r.deleted > 0, header_revision(&r.header))
        })
    }

    /// A raw transaction.
    pub async fn txn(&mut self, req: TxnRequest) -> Outcome<TxnResponse> {
        let mut kv = self.kv.clone();
        attempt(self.deadline, kv.txn(req)).await
    }
}

fn map<T, U>(o: Outcome<T>, f: impl FnOnce(T) -> U) -> Outcome<U> {
    match o {
        Outcome::Ok(t) => Outcome::Ok(f(t)),
        Outcome::Fail(e) => Outcome::Fail(e),
        Outcome::Unknown(e) => Outcome::Unknown(e),
    }
}

/// `key`'s value equals `value` (`None`: the key does not exist).
pub fn compare_value(key: &str, value: Option<&str>) -> Compare {
    match value {
        Some(v) => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::Value(Bytes::copy_from_slice(v.as_bytes()))),
        },
        None => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::CreateRevision(0)),
        },
    }
}

/// `key`'s mod_revision equals `revision` (0: the key does not exist).
pub fn compare_mod_revision(key: &str, revision: u64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::ModRevision(
            i64::try_from(revision).unwrap_or(i64::MAX),
        )),
    }
}

pub fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })),
    }
}

pub fn range_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        })),
    }
}

/// The header revision of a txn response.
pub fn txn_revision(r: &TxnResponse) -> u64 {
    header_revision(&r.header)
}
