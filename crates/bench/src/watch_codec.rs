//! The watch benchmark's client side of the Watch call: requests encoded by prost,
//! responses decoded by a walker over the protobuf wire format that keeps only what the
//! benchmark uses ([`Tally`]).
//!
//! The benchmark client shares the machine's cores with the member it measures, and at
//! 1,000 watchers it receives a million events a second or more: decoding each into a
//! full `WatchResponse` (a `Vec<Event>`, a `KeyValue` per event, key and value as shared
//! `Bytes`) would cost the client more CPU than it leaves the member. The walker still
//! reads every event of every response and the send-time stamp in its value, and rejects
//! a malformed message as prost would.

use bytes::{Buf, Bytes};
use prost::encoding::{decode_varint, WireType};
use prost::Message;
use proto::etcdserverpb::WatchRequest;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// What the benchmark reads of one `WatchResponse`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub created: bool,
    pub canceled: bool,
    /// The first eight bytes of each event's value (the put's send time), in order; an
    /// event without a value of eight bytes (a DELETE) counts as `None`.
    pub stamps: Vec<Option<u64>>,
}

// Field numbers of etcd's protos.
const RESPONSE_CREATED: u32 = 3;
const RESPONSE_CANCELED: u32 = 4;
const RESPONSE_EVENTS: u32 = 11;
const EVENT_KV: u32 = 2;
const KV_VALUE: u32 = 5;

/// A message the walker cannot read (what prost would reject too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(&'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed message: {}", self.0)
    }
}

/// One field: its number and, for a length-delimited one, its bytes; a varint's value.
enum Field<'a> {
    Bytes(u32, &'a [u8]),
    Varint(u32, u64),
    Other,
}

/// Reads the next field of `buf`, advancing it.
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Field<'a>, Malformed> {
    let key = decode_varint(buf).map_err(|_| Malformed("invalid varint"))?;
    let tag = u32::try_from(key >> 3).map_err(|_| Malformed("invalid tag"))?;
    if tag == 0 {
        return Err(Malformed("invalid tag value: 0"));
    }
    let wire = WireType::try_from(key & 7).map_err(|_| Malformed("invalid wire type"))?;
    match wire {
        WireType::Varint => Ok(Field::Varint(
            tag,
            decode_varint(buf).map_err(|_| Malformed("invalid varint"))?,
        )),
        WireType::LengthDelimited => {
            let len = decode_varint(buf).map_err(|_| Malformed("invalid varint"))?;
            let len = usize::try_from(len).map_err(|_| Malformed("length overflow"))?;
            if len > buf.len() {
                return Err(Malformed("buffer underflow"));
            }
            let (field, rest) = buf.split_at(len);
            *buf = rest;
            Ok(Field::Bytes(tag, field))
        }
        WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
            let n = if wire == WireType::SixtyFourBit { 8 } else { 4 };
            if n > buf.len() {
                return Err(Malformed("buffer underflow"));
            }
            buf.advance(n);
            Ok(Field::Other)
        }
        WireType::StartGroup | WireType::EndGroup => Err(Malformed("unexpected group")),
    }
}

/// The value of a `KeyValue` (its last `value` field, as protobuf merges).
fn kv_value(mut kv: &[u8]) -> Result<&[u8], Malformed> {
    let mut value: &[u8] = &[];
    while !kv.is_empty() {
        if let Field::Bytes(KV_VALUE, v) = next_field(&mut kv)? {
            value = v;
        }
    }
    Ok(value)
}

/// An event's stamp: the first eight bytes of its `kv`'s value.
fn event_stamp(mut event: &[u8]) -> Result<Option<u64>, Malformed> {
    let mut value: &[u8] = &[];
    while !event.is_empty() {
        if let Field::Bytes(EVENT_KV, kv) = next_field(&mut event)? {
            value = kv_value(kv)?;
        }
    }
    Ok(value
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes"))))
}

impl Tally {
    pub fn decode(mut buf: &[u8]) -> Result<Tally, Malformed> {
        let mut t = Tally::default();
        while !buf.is_empty() {
            match next_field(&mut buf)? {
                Field::Varint(RESPONSE_CREATED, v) => t.created = v != 0,
                Field::Varint(RESPONSE_CANCELED, v) => t.canceled = v != 0,
                Field::Bytes(RESPONSE_EVENTS, e) => t.stamps.push(event_stamp(e)?),
                _ => {}
            }
        }
        Ok(t)
    }
}

/// The codec of the benchmark's Watch calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct TallyCodec;

impl Codec for TallyCodec {
    type Encode = WatchRequest;
    type Decode = Tally;
    type Encoder = TallyCodec;
    type Decoder = TallyCodec;

    fn encoder(&mut self) -> TallyCodec {
        TallyCodec
    }

    fn decoder(&mut self) -> TallyCodec {
        TallyCodec
    }
}

impl Encoder for TallyCodec {
    type Item = WatchRequest;
    type Error = Status;

    fn encode(&mut self, item: WatchRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for TallyCodec {
    type Item = Tally;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Tally>, Status> {
        let msg: Bytes = src.copy_to_bytes(src.remaining());
        Tally::decode(&msg)
            .map(Some)
            .map_err(|e| Status::internal(format!("watch response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::{ResponseHeader, WatchResponse};
    use proto::mvccpb::{Event, KeyValue};

    fn event(kind: i32, value: &[u8], prev: bool) -> Event {
        let kv = |v: &[u8]| KeyValue {
            key: Bytes::from_static(b"some/key"),
            value: Bytes::copy_from_slice(v),
            create_revision: 3,
            mod_revision: 9,
            version: 2,
            lease: 77,
        };
        Event {
            r#type: kind,
            kv: Some(kv(value)),
            prev_kv: prev.then(|| kv(&u64::MAX.to_le_bytes())),
        }
    }

    #[test]
    fn reads_every_event_and_its_stamp_as_prost_would() {
        let stamp = |n: u64| {
            let mut v = n.to_le_bytes().to_vec();
            v.extend_from_slice(b"padding");
            v
        };
        let resp = WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 9,
                raft_term: 4,
            }),
            watch_id: -7,
            created: true,
            compact_revision: 5,
            cancel_reason: "x".into(),
            events: vec![
                event(0, &stamp(1234), true),
                event(1, b"", false),
                event(0, &stamp(u64::MAX - 1), false),
            ],
            ..Default::default()
        };
        let t = Tally::decode(&resp.encode_to_vec()).unwrap();
        assert!(t.created && !t.canceled);
        assert_eq!(t.stamps, vec![Some(1234), None, Some(u64::MAX - 1)]);
        let canceled = WatchResponse {
            canceled: true,
            ..Default::default()
        };
        assert_eq!(
            Tally::decode(&canceled.encode_to_vec()).unwrap(),
            Tally {
                canceled: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn rejects_what_prost_rejects() {
        let resp = WatchResponse {
            events: vec![event(0, b"0123456789", false)],
            ..Default::default()
        };
        let bytes = resp.encode_to_vec();
        for cut in 1..bytes.len() {
            let truncated = &bytes[..cut];
            assert_eq!(
                Tally::decode(truncated).is_err(),
                WatchResponse::decode(truncated).is_err(),
                "cut at {cut}"
            );
        }
        assert!(Tally::decode(&[0x00]).is_err());
        // A group (wire type 3) is not part of etcd's protos.
        assert!(Tally::decode(&[0x0b]).is_err());
    }
}
