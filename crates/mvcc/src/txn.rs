//! Transactions: compares, branch selection, and atomic execution of the chosen operations.
//!
//! Like etcd 3.4, a txn decides *every* branch up front, including those of nested txns,
//! by evaluating all compares against the store as it was before the txn. Then it checks
//! the chosen puts (ignore_value/ignore_lease need an existing key, leases must exist) and
//! reads (revision not compacted, not in the future) against that same state, and only
//! then executes the operations in order, each seeing the writes of the ones before.

use std::cmp::Ordering;

use proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op, response_op, Compare, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::key_range::KeyRange;
use crate::store::{Store, Writer};
use crate::validate::{self, Limits};

/// The branch each txn (the outer one and every nested one that will run) takes.
struct Plan {
    succeeded: bool,
    /// Plans of the nested txns in the chosen branch, in operation order.
    nested: Vec<Plan>,
}

impl Store {
    pub(crate) fn apply_txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        // The op-count limit is a per-member flag, checked before proposing; it must not
        // decide the outcome of an applied entry (see `validate`).
        validate::check_txn(
            req,
            &Limits {
                max_txn_ops: usize::MAX,
            },
        )?;
        let plan = self.plan(req);
        self.check_puts(req, &plan)?;
        self.check_ranges(req, &plan)?;

        let mut writer = Writer::begin(self);
        match execute(&mut writer, req, &plan) {
            Ok(mut resp) => {
                let rev = writer.commit();
                resp.header = Some(ResponseHeader {
                    revision: rev,
                    ..Default::default()
                });
                Ok(resp)
            }
            Err(err) => {
                writer.roll_back();
                Err(err)
            }
        }
    }

    /// Serves a txn that cannot write (see [`is_read_only`]) without going through the log,
    /// as etcd does for read-only txns: same validation, same compares, same responses as
    /// applying it would give, and the store is not touched. Fails with `Internal` if the
    /// txn can write.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        if !is_read_only(req) {
            return Err(MvccError::Internal(
                "read_txn given a txn that writes".into(),
            ));
        }
        validate::check_txn(
            req,
            &Limits {
                max_txn_ops: usize::MAX,
            },
        )?;
        let plan = self.plan(req);
        self.check_ranges(req, &plan)?;
        let mut resp = self.execute_reads(req, &plan)?;
        resp.header = Some(ResponseHeader {
            revision: self.current,
            ..Default::default()
        });
        Ok(resp)
    }

    fn execute_reads(&self, req: &TxnRequest, plan: &Plan) -> Result<TxnResponse, MvccError> {
        let mut nested = plan.nested.iter();
        let mut responses = Vec::new();
        for op in chosen(req, plan.succeeded) {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    response_op::Response::ResponseRange(self.range_at_view(r, self.current)?)
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    let Some(p) = nested.next() else {
                        return Err(MvccError::Internal(
                            "txn plan does not match request".into(),
                        ));
                    };
                    let mut inner = self.execute_reads(t, p)?;
                    inner.header = Some(ResponseHeader::default());
                    response_op::Response::ResponseTxn(inner)
                }
                Some(_) => return Err(MvccError::Internal("write in a read-only txn".into())),
                None => return Err(MvccError::KeyNotFound),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: plan.succeeded,
            responses,
        })
    }

    fn plan(&self, req: &TxnRequest) -> Plan {
        let succeeded = req.compare.iter().all(|c| self.compare_holds(c));
        let nested = chosen(req, succeeded)
            .iter()
            .filter_map(|op| match &op.request {
                Some(request_op::Request::RequestTxn(t)) => Some(self.plan(t)),
                _ => None,
            })
            .collect();
        Plan { succeeded, nested }
    }

    /// A compare holds when it holds for every key of its range that exists; over a range
    /// with no existing key it is evaluated against an all-zero record, except a VALUE
    /// compare, which then fails (a missing value cannot be told from an empty one).
    fn compare_holds(&self, cmp: &Compare) -> bool {
        let range = KeyRange::new(&cmp.key, &cmp.range_end);
        let (kvs, _) = self.collect(range, self.current, usize::MAX, false);
        if kvs.is_empty() {
            if cmp.target == CompareTarget::Value as i32 {
                return false;
            }
            return compare_kv(cmp, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(cmp, kv))
    }

    fn check_puts(&self, req: &TxnRequest, plan: &Plan) -> Result<(), MvccError> {
        let mut nested = plan.nested.iter();
        for op in chosen(req, plan.succeeded) {
            match &op.request {
                Some(request_op::Request::RequestPut(put)) => {
                    if (put.ignore_value || put.ignore_lease) && !self.exists(&put.key) {
                        return Err(MvccError::KeyNotFound);
                    }
                    if put.lease != 0 && !self.leases.contains(put.lease) {
                        return Err(MvccError::LeaseNotFound);
                    }
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    if let Some(p) = nested.next() {
                        self.check_puts(t, p)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_ranges(&self, req: &TxnRequest, plan: &Plan) -> Result<(), MvccError> {
        let mut nested = plan.nested.iter();
        for op in chosen(req, plan.succeeded) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) if r.revision > 0 => {
                    self.resolve_read_revision(r.revision, self.current)?;
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    if let Some(p) = nested.next() {
                        self.check_ranges(t, p)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn exists(&self, key: &[u8]) -> bool {
        self.keys
            .get(key)
            .is_some_and(|h| h.live_at(self.current).is_some())
    }
}

/// True when no branch of the txn, at any nesting depth, contains a put or a delete: such a
/// txn cannot change the store and may be served like a read (etcd's `isTxnReadonly`).
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestPut(_))
            | Some(request_op::Request::RequestDeleteRange(_)) => false,
            Some(request_op::Request::RequestTxn(t)) => is_read_only(t),
            Some(request_op::Request::RequestRange(_)) | None => true,
        })
}

fn chosen(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// Runs the chosen operations. The nested txn responses carry a header with revision 0,
/// as etcd's do; the caller sets the outer header.
fn execute(
    writer: &mut Writer<'_>,
    req: &TxnRequest,
    plan: &Plan,
) -> Result<TxnResponse, MvccError> {
    let mut nested = plan.nested.iter();
    let mut responses = Vec::new();
    for op in chosen(req, plan.succeeded) {
        let response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => {
                let view = writer.view_rev();
                response_op::Response::ResponseRange(writer.store.range_at_view(r, view)?)
            }
            Some(request_op::Request::RequestPut(p)) => {
                response_op::Response::ResponsePut(writer.put(p)?)
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                response_op::Response::ResponseDeleteRange(writer.delete_range(d))
            }
            Some(request_op::Request::RequestTxn(t)) => {
                let Some(p) = nested.next() else {
                    return Err(MvccError::Internal(
                        "txn plan does not match request".into(),
                    ));
                };
                let mut inner = execute(writer, t, p)?;
                inner.header = Some(ResponseHeader::default());
                response_op::Response::ResponseTxn(inner)
            }
            None => return Err(MvccError::KeyNotFound),
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: plan.succeeded,
        responses,
    })
}

/// One compare against one key's record. The operand is read from `target_union` only if
/// it names the same field as `target`; otherwise it counts as zero / empty, as in etcd.
fn compare_kv(cmp: &Compare, kv: &KeyValue) -> bool {
    let ordering = match CompareTarget::try_from(cmp.target) {
        Ok(CompareTarget::Value) => {
            let operand: &[u8] = match &cmp.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_ref().cmp(operand)
        }
        Ok(CompareTarget::Version) => kv.version.cmp(&match cmp.target_union {
            Some(TargetUnion::Version(v)) => v,
            _ => 0,
        }),
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&match cmp.target_union {
            Some(TargetUnion::CreateRevision(v)) => v,
            _ => 0,
        }),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&match cmp.target_union {
            Some(TargetUnion::ModRevision(v)) => v,
            _ => 0,
        }),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&match cmp.target_union {
            Some(TargetUnion::Lease(v)) => v,
            _ => 0,
        }),
        // An unknown target compares as equal, like etcd's switch without a default.
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(cmp.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        // An unknown operator holds, again as in etcd.
        Err(_) => true,
    }
}
