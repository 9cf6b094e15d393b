//! Alarms: etcd's NOSPACE and CORRUPT, as replicated state of the store.
//!
//! An alarm changes what the store accepts, so it must change at the same log position on
//! every member: it is activated and deactivated by log entries (`InternalRequest.alarm`)
//! and travels in snapshots. While NOSPACE is active, puts and txns that put are refused
//! with `etcdserver: mvcc: database space exceeded` (reads, deletes and compactions still
//! work, so an operator can free space); while CORRUPT is active every request but alarms
//! is refused, as etcd's capped and corrupt appliers do.

use std::collections::BTreeSet;

use proto::etcdserverpb::{
    alarm_request::AlarmAction, request_op, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
    ResponseHeader, TxnRequest,
};
use proto::raftkvpb::internal_request::Request;

use crate::error::MvccError;

/// The active alarms: (member id, alarm type) pairs, ordered for deterministic output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarms {
    active: BTreeSet<(u64, i32)>,
}

impl Alarms {
    /// Every active alarm, by member then type.
    pub fn list(&self) -> Vec<AlarmMember> {
        self.active
            .iter()
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// Whether any member raised `alarm`.
    pub fn is_active(&self, alarm: AlarmType) -> bool {
        self.active.iter().any(|&(_, a)| a == alarm as i32)
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub(crate) fn insert(&mut self, member_id: u64, alarm: i32) {
        self.active.insert((member_id, alarm));
    }

    /// Applies an alarm entry. GET lists the alarms of the requested type (all of them for
    /// NONE); ACTIVATE and DEACTIVATE answer with the alarm they changed (nothing when
    /// there was nothing to change), as etcd's apply does. Activating NONE or an unknown
    /// type changes nothing.
    pub(crate) fn apply(&mut self, req: &AlarmRequest) -> AlarmResponse {
        let wanted = |a: i32| req.alarm == AlarmType::None as i32 || a == req.alarm;
        let alarms = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => self
                .list()
                .into_iter()
                .filter(|m| wanted(m.alarm))
                .collect(),
            Ok(AlarmAction::Activate) => match AlarmType::try_from(req.alarm) {
                Ok(AlarmType::Nospace | AlarmType::Corrupt) => {
                    self.active.insert((req.member_id, req.alarm));
                    vec![AlarmMember {
                        member_id: req.member_id,
                        alarm: req.alarm,
                    }]
                }
                _ => Vec::new(),
            },
            Ok(AlarmAction::Deactivate) => {
                if self.active.remove(&(req.member_id, req.alarm)) {
                    vec![AlarmMember {
                        member_id: req.member_id,
                        alarm: req.alarm,
                    }]
                } else {
                    Vec::new()
                }
            }
            Err(_) => Vec::new(),
        };
        AlarmResponse {
            header: Some(ResponseHeader::default()),
            alarms,
        }
    }

    /// Why the active alarms refuse `request`, if they do.
    pub(crate) fn refusal(&self, request: &Request) -> Option<MvccError> {
        if self.active.is_empty() || matches!(request, Request::Alarm(_)) {
            return None;
        }
        if self.is_active(AlarmType::Corrupt) {
            return Some(MvccError::Corrupt);
        }
        if self.is_active(AlarmType::Nospace) && quota_cost(request) > 0 {
            return Some(MvccError::NoSpace);
        }
        None
    }
}

/// What etcd charges a request against the quota: 256 bytes of overhead plus key and value
/// per put; for a txn, the dearer of its two branches (top-level puts only, as etcd 3.4
/// counts); nothing for deletes, compactions and alarms. A request that costs nothing is
/// never refused for space.
pub fn quota_cost(request: &Request) -> u64 {
    match request {
        Request::Put(p) => put_cost(p.key.len(), p.value.len()),
        Request::Txn(t) => txn_cost(t),
        _ => 0,
    }
}

/// etcd's per-key overhead in the quota computation.
const KV_OVERHEAD: u64 = 256;

fn put_cost(key: usize, value: usize) -> u64 {
    KV_OVERHEAD + key as u64 + value as u64
}

fn txn_cost(t: &TxnRequest) -> u64 {
    let branch = |ops: &[proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => put_cost(p.key.len(), p.value.len()),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp};

    fn req(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        }
    }

    fn put() -> Request {
        Request::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
    }

    #[test]
    fn activate_get_deactivate() {
        let mut a = Alarms::default();
        let r = a.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace));
        assert_eq!(r.alarms.len(), 1);
        assert!(a.is_active(AlarmType::Nospace));
        // Activating twice keeps one alarm.
        a.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace));
        let all = a.apply(&req(AlarmAction::Get, 0, AlarmType::None));
        assert_eq!(all.alarms.len(), 1);
        assert_eq!(all.alarms[0].member_id, 7);
        let corrupt = a.apply(&req(AlarmAction::Get, 0, AlarmType::Corrupt));
        assert!(corrupt.alarms.is_empty());
        // Deactivating another member's alarm changes nothing.
        assert!(a
            .apply(&req(AlarmAction::Deactivate, 8, AlarmType::Nospace))
            .alarms
            .is_empty());
        assert_eq!(
            a.apply(&req(AlarmAction::Deactivate, 7, AlarmType::Nospace))
                .alarms
                .len(),
            1
        );
        assert!(a.is_empty());
        // NONE is not an alarm one can raise.
        assert!(a
            .apply(&req(AlarmAction::Activate, 7, AlarmType::None))
            .alarms
            .is_empty());
        assert!(a.is_empty());
    }

    #[test]
    fn nospace_refuses_what_costs_space_only() {
        let mut a = Alarms::default();
        assert_eq!(a.refusal(&put()), None);
        a.apply(&req(AlarmAction::Activate, 1, AlarmType::Nospace));
        assert_eq!(a.refusal(&put()), Some(MvccError::NoSpace));
        let delete = Request::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        });
        assert_eq!(a.refusal(&delete), None);
        let txn_deleting = Request::Txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest::default(),
                )),
            }],
            ..Default::default()
        });
        assert_eq!(a.refusal(&txn_deleting), None);
        let txn_putting = Request::Txn(TxnRequest {
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest::default())),
            }],
            ..Default::default()
        });
        assert_eq!(a.refusal(&txn_putting), Some(MvccError::NoSpace));
        // Alarms themselves always apply, so the alarm can be disarmed.
        let disarm = Request::Alarm(req(AlarmAction::Deactivate, 1, AlarmType::Nospace));
        assert_eq!(a.refusal(&disarm), None);
    }

    #[test]
    fn corrupt_refuses_everything_but_alarms() {
        let mut a = Alarms::default();
        a.apply(&req(AlarmAction::Activate, 1, AlarmType::Corrupt));
        assert_eq!(
            a.refusal(&Request::DeleteRange(DeleteRangeRequest::default())),
            Some(MvccError::Corrupt)
        );
        assert_eq!(a.refusal(&put()), Some(MvccError::Corrupt));
    }

    #[test]
    fn costs_are_etcds() {
        assert_eq!(quota_cost(&put()), 256 + 2);
        let txn = Request::Txn(TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: Bytes::from_static(b"ab"),
                        value: Bytes::from_static(b"cd"),
                        ..Default::default()
                    })),
                };
                2
            ],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest::default())),
            }],
            ..Default::default()
        });
        assert_eq!(quota_cost(&txn), 2 * (256 + 4));
    }
}
