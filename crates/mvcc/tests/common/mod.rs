//! Request builders and small helpers shared by the store's tests.
#![allow(dead_code, unused_imports)]

use bytes::Bytes;
use mvcc::{validate, Limits, MvccError, Response, Store};
use proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use proto::raftkvpb::{internal_request::Request, InternalRequest};

pub use compare::CompareResult::{Equal, Greater, Less, NotEqual};
pub use compare::TargetUnion as T;

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

pub fn get(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

pub fn del(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(k),
        range_end: b(end),
        prev_kv: false,
    }
}

pub fn cmp(k: &str, result: compare::CompareResult, target: T) -> Compare {
    let t = match &target {
        T::Version(_) => compare::CompareTarget::Version,
        T::CreateRevision(_) => compare::CompareTarget::Create,
        T::ModRevision(_) => compare::CompareTarget::Mod,
        T::Value(_) => compare::CompareTarget::Value,
        T::Lease(_) => compare::CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: t as i32,
        key: b(k),
        range_end: Bytes::new(),
        target_union: Some(target),
    }
}

pub fn op_put(p: PutRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(p)),
    }
}
pub fn op_get(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}
pub fn op_del(d: DeleteRangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(d)),
    }
}
pub fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// Validates like the API layer (default limits), then applies: what a server does.
pub fn submit(store: &mut Store, request: Request) -> Result<Response, MvccError> {
    validate::check_request(&request, &Limits::default())?;
    store.apply(&InternalRequest {
        auth: None,
        request: Some(request),
    })
}

pub fn do_put(store: &mut Store, p: PutRequest) -> Result<PutResponse, MvccError> {
    match submit(store, Request::Put(p))? {
        Response::Put(r) => Ok(r),
        other => panic!("unexpected response {other:?}"),
    }
}

pub fn must_put(store: &mut Store, k: &str, v: &str) -> i64 {
    do_put(store, put(k, v))
        .expect("put")
        .header
        .expect("header")
        .revision
}

pub fn do_del(store: &mut Store, d: DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
    match submit(store, Request::DeleteRange(d))? {
        Response::DeleteRange(r) => Ok(r),
        other => panic!("unexpected response {other:?}"),
    }
}

pub fn do_txn(store: &mut Store, t: TxnRequest) -> Result<TxnResponse, MvccError> {
    match submit(store, Request::Txn(t))? {
        Response::Txn(r) => Ok(r),
        other => panic!("unexpected response {other:?}"),
    }
}

pub fn do_compact(store: &mut Store, revision: i64) -> Result<(), MvccError> {
    submit(
        store,
        Request::Compaction(CompactionRequest {
            revision,
            physical: false,
        }),
    )
    .map(|_| ())
}

pub fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

pub fn values(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect()
}

pub fn header_rev(resp: &RangeResponse) -> i64 {
    resp.header.as_ref().expect("header").revision
}

/// The value of `k` now, or None.
pub fn value_of(store: &Store, k: &str) -> Option<String> {
    let resp = store.range(&get(k, "")).expect("range");
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

pub fn range_of(r: &response_op::Response) -> &RangeResponse {
    match r {
        response_op::Response::ResponseRange(r) => r,
        other => panic!("expected a range response, got {other:?}"),
    }
}

/// A store holding a..e written in order at revisions 2..6.
pub fn abcde() -> Store {
    let mut store = Store::new();
    for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        must_put(&mut store, k, &format!("v{i}"));
    }
    store
}
