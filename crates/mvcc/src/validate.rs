//! Request checks etcd makes in its API layer, before a request is proposed to Raft.
//!
//! The server should run [`check_request`] (or the per-type functions) before proposing, so
//! that invalid requests never enter the log. [`crate::Store::apply`] runs the same checks
//! again, except the operation count, which depends on a per-member flag
//! (`--max-txn-ops`): a replicated state machine must not let member configuration change
//! the outcome of an applied entry.

use std::collections::HashSet;

use bytes::Bytes;
use proto::etcdserverpb::{
    range_request::SortTarget, request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use proto::raftkvpb::internal_request;

use crate::error::MvccError;

/// etcd's default for `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Limits that vary per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most compares, or operations in one branch, a txn may have (`--max-txn-ops`).
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

/// Checks a request the way etcd's API layer does before proposing it.
pub fn check_request(
    request: &internal_request::Request,
    limits: &Limits,
) -> Result<(), MvccError> {
    match request {
        internal_request::Request::Put(put) => check_put(put),
        internal_request::Request::DeleteRange(del) => check_delete_range(del),
        internal_request::Request::Txn(txn) => check_txn(txn, limits),
        internal_request::Request::Compaction(_) | internal_request::Request::Alarm(_) => Ok(()),
        internal_request::Request::LeaseGrant(g) if g.ttl > crate::MAX_LEASE_TTL => {
            Err(MvccError::LeaseTtlTooLarge)
        }
        internal_request::Request::LeaseGrant(_)
        | internal_request::Request::LeaseRevoke(_)
        | internal_request::Request::LeaseKeepAlive(_)
        | internal_request::Request::LeaseKeepAlives(_)
        | internal_request::Request::LeaseCheckpoints(_)
        | internal_request::Request::LeaseExpiry(_) => Ok(()),
        // Auth requests are checked by the auth store when applied (crate::auth).
        _ => Ok(()),
    }
}

pub fn check_range(req: &RangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    // Only the target is checked. etcd 3.4 accepts any `sort_order` (see `range_at_view`)
    // but dereferences a missing sorter for an unknown target and crashes; we answer what
    // etcd 3.5+ answers instead (docs/etcd-compatibility.md).
    if SortTarget::try_from(req.sort_target).is_err() {
        return Err(MvccError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(req: &PutRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Operation counts, empty keys, per-operation checks (recursively), then overlapping
/// writes within each branch.
pub fn check_txn(req: &TxnRequest, limits: &Limits) -> Result<(), MvccError> {
    check_txn_shape(req, i64::try_from(limits.max_txn_ops).unwrap_or(i64::MAX))?;
    // Done after the shape checks, as etcd does, so the quadratic overlap search only ever
    // sees requests of bounded size.
    check_overlapping_writes(&req.success)?;
    check_overlapping_writes(&req.failure)?;
    Ok(())
}

/// `budget` shrinks with nesting: a nested txn may have at most `budget - (ops of its
/// parent)` operations, as in etcd.
fn check_txn_shape(req: &TxnRequest, budget: i64) -> Result<(), MvccError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    let ops = i64::try_from(ops).unwrap_or(i64::MAX);
    if ops > budget {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_op(op, budget - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, budget: i64) -> Result<(), MvccError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => check_range(r),
        Some(request_op::Request::RequestPut(p)) => check_put(p),
        Some(request_op::Request::RequestDeleteRange(d)) => check_delete_range(d),
        Some(request_op::Request::RequestTxn(t)) => check_txn_shape(t, budget),
        None => Err(MvccError::KeyNotFound),
    }
}

/// A delete of one txn branch, as an interval of keys. etcd compares these intervals as
/// plain byte strings, so a from-key delete (`range_end == "\0"`) is the empty interval
/// `[key, "\0")` here and never conflicts with a put; we reproduce that.
struct DeletedInterval {
    start: Bytes,
    end: Option<Bytes>,
}

impl DeletedInterval {
    fn covers(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_ref(),
            Some(end) => key >= self.start.as_ref() && key < end.as_ref(),
        }
    }
}

#[derive(Default)]
struct BranchWrites {
    puts: HashSet<Bytes>,
    deletes: Vec<DeletedInterval>,
}

impl BranchWrites {
    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|d| d.covers(key))
    }
}

/// etcd's rule for "duplicate key given in txn request": within the operations that one
/// execution could run, a key may be put at most once and may not be both put and covered
/// by a delete. Puts in the then- and else-branch of one nested txn may name the same key
/// since only one branch runs. Deletes may overlap each other freely. Deletes of a nested
/// txn are only checked against puts that come later in the parent's operation list, and
/// against the parent's own puts; we keep etcd's exact order of checks.
fn check_overlapping_writes(ops: &[RequestOp]) -> Result<(), MvccError> {
    collect_writes(ops).map(|_| ())
}

fn collect_writes(ops: &[RequestOp]) -> Result<BranchWrites, MvccError> {
    let mut writes = BranchWrites::default();
    for op in ops {
        if let Some(request_op::Request::RequestDeleteRange(del)) = &op.request {
            writes.deletes.push(DeletedInterval {
                start: del.key.clone(),
                end: (!del.range_end.is_empty()).then(|| del.range_end.clone()),
            });
        }
    }
    for op in ops {
        let Some(request_op::Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let then_writes = collect_writes(&nested.success)?;
        let else_writes = collect_writes(&nested.failure)?;
        for key in &then_writes.puts {
            if writes.puts.contains(key) || writes.deleted(key) {
                return Err(MvccError::DuplicateKey);
            }
            writes.puts.insert(key.clone());
        }
        for key in &else_writes.puts {
            let already_put = writes.puts.contains(key) && !then_writes.puts.contains(key);
            if already_put || writes.deleted(key) {
                return Err(MvccError::DuplicateKey);
            }
            writes.puts.insert(key.clone());
        }
        writes.deletes.extend(then_writes.deletes);
        writes.deletes.extend(else_writes.deletes);
    }
    for op in ops {
        let Some(request_op::Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if writes.puts.contains(&put.key) || writes.deleted(&put.key) {
            return Err(MvccError::DuplicateKey);
        }
        writes.puts.insert(put.key.clone());
    }
    Ok(writes)
}
