//! Checks that the generated types put fields on the wire where etcd expects them:
//! a wrong field number compiles fine and only breaks against a real etcd client.

use bytes::Bytes;
use proto::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proto::prost::Message;
use proto::raftkvpb::{internal_request, InternalRequest};

#[test]
fn range_request_fields_use_etcd_numbers() {
    let req = RangeRequest {
        key: Bytes::from_static(b"a"),
        range_end: Bytes::from_static(b"b"),
        limit: 5,
        max_create_revision: 7,
        ..Default::default()
    };
    // key = field 1 (tag 0x0a), range_end = 2 (0x12), limit = 3 varint (0x18),
    // max_create_revision = 13 varint (13 << 3 = 0x68).
    assert_eq!(
        req.encode_to_vec(),
        vec![0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5, 0x68, 7]
    );
}

#[test]
fn compare_range_end_is_field_64() {
    let cmp = Compare {
        range_end: Bytes::from_static(b"z"),
        ..Default::default()
    };
    // Field 64, wire type 2: tag (64 << 3) | 2 = 514, varint-encoded as 0x82 0x04.
    assert_eq!(cmp.encode_to_vec(), vec![0x82, 0x04, 1, b'z']);
}

#[test]
fn internal_request_round_trips_a_nested_txn() {
    let txn = TxnRequest {
        compare: vec![Compare {
            key: Bytes::from_static(b"k"),
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let entry = InternalRequest {
        auth: None,
        request: Some(internal_request::Request::Txn(txn)),
    };
    let bytes = entry.encode_to_vec();
    let decoded = InternalRequest::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, entry);
}
