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
    /// Events in the response.
    pub events: u32,
    /// The first eight bytes of each event's value (the put's send time), in order, of the
    /// events whose value has eight bytes or more (not a DELETE's).
    stamps: Stamps,
}

/// Stamps of one response held inline up to [`INLINE_STAMPS`] (a response usually carries
/// one or a few events), so that a response costs no allocation.
const INLINE_STAMPS: usize = 6;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stamps {
    len: usize,
    /// Unused slots stay zero, so equal sequences compare equal.
    inline: [u64; INLINE_STAMPS],
    spill: Vec<u64>,
}

impl Stamps {
    fn push(&mut self, stamp: u64) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = stamp,
            None => self.spill.push(stamp),
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.inline[..self.len.min(INLINE_STAMPS)]
            .iter()
            .chain(&self.spill)
            .copied()
    }
}

impl Tally {
    /// The send-time stamps of the response's events, in order (events without one left out).
    pub fn stamps(&self) -> impl Iterator<Item = u64> + '_ {
        self.stamps.iter()
    }
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

/// Reads a varint, advancing `buf`: one byte inline (every tag and most lengths and
/// revisions of a watch response), longer ones by prost.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    match buf.first() {
        Some(&b) if b < 0x80 => {
            *buf = &buf[1..];
            Ok(u64::from(b))
        }
        _ => decode_varint(buf).map_err(|_| Malformed("invalid varint")),
    }
}

/// Reads the next field of `buf`, advancing it.
#[inline(always)]
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Field<'a>, Malformed> {
    let key = varint(buf)?;
    let tag = u32::try_from(key >> 3).map_err(|_| Malformed("invalid tag"))?;
    if tag == 0 {
        return Err(Malformed("invalid tag value: 0"));
    }
    let wire = WireType::try_from(key & 7).map_err(|_| Malformed("invalid wire type"))?;
    match wire {
        WireType::Varint => Ok(Field::Varint(tag, varint(buf)?)),
        WireType::LengthDelimited => {
            let len = varint(buf)?;
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
                Field::Bytes(RESPONSE_EVENTS, e) => {
                    t.events += 1;
                    if let Some(stamp) = event_stamp(e)? {
                        t.stamps.push(stamp);
                    }
                }
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
        let n = src.remaining();
        // The message is read where tonic buffered it (one contiguous buffer), not copied
        // out first; a message in pieces (not what tonic hands over today) is copied.
        let tally = if src.chunk().len() >= n {
            let t = Tally::decode(&src.chunk()[..n]);
            src.advance(n);
            t
        } else {
            let msg: Bytes = src.copy_to_bytes(n);
            Tally::decode(&msg)
        };
        tally
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
        assert_eq!(t.events, 3);
        assert_eq!(t.stamps().collect::<Vec<_>>(), vec![1234, u64::MAX - 1]);
        assert_eq!(t, as_prost_reads(&resp.encode_to_vec()));
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

    /// What the benchmark needs of a response, read from prost's full decoding.
    fn as_prost_reads(bytes: &[u8]) -> Tally {
        let resp = WatchResponse::decode(bytes).unwrap();
        let mut t = Tally {
            created: resp.created,
            canceled: resp.canceled,
            events: resp.events.len() as u32,
            ..Default::default()
        };
        for e in &resp.events {
            let value = e.kv.as_ref().map(|kv| &kv.value[..]).unwrap_or_default();
            if let Some(b) = value.get(..8) {
                t.stamps.push(u64::from_le_bytes(b.try_into().unwrap()));
            }
        }
        t
    }

    #[test]
    fn responses_of_any_number_of_events_read_as_prost_reads_them() {
        // Around the inline capacity, with deletes, short values and prev_kv mixed in.
        let around = [INLINE_STAMPS - 1, INLINE_STAMPS, INLINE_STAMPS + 1];
        for n in [0, 1, 2, 40].into_iter().chain(around) {
            let events: Vec<Event> = (0..n)
                .map(|i| match i % 4 {
                    0 => event(0, &(i as u64 * 7919).to_le_bytes(), i % 8 == 0),
                    1 => event(1, b"", true),
                    2 => event(0, b"short", false),
                    _ => event(0, &[i as u8; 24], false),
                })
                .collect();
            let resp = WatchResponse {
                watch_id: n as i64,
                canceled: n == 2,
                events,
                ..Default::default()
            };
            let bytes = resp.encode_to_vec();
            let t = Tally::decode(&bytes).unwrap();
            assert_eq!(t, as_prost_reads(&bytes), "{n} events");
            assert_eq!(t.events as usize, n);
        }
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
