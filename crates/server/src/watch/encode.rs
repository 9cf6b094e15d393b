//! Watch responses as bytes, for the gRPC stream's codec ([`WatchCodec`]).
//!
//! With many watchers on one key, every event goes into as many responses. Rather than build
//! and encode one `WatchResponse` per watcher, each event is encoded once per revision (with
//! and without its `prev_kv`, on first use) as the `events` field of a `WatchResponse`, and the
//! encoded bytes are shared by every response that carries it. A response is then the
//! stream's encoded header, the watch id and those shared pieces ([`Outgoing::Events`]); the
//! codec writes them one after the other into tonic's send buffer. Protobuf encodes a message
//! as its fields one after the other, so the result is the same message prost would encode
//! (field order ascending: header 1, watch_id 2, events 11).

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{int64, message};
use prost::Message;
use proto::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use proto::mvccpb::Event;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

/// `WatchResponse` field numbers written by hand here.
const HEADER_FIELD: u32 = 1;
const WATCH_ID_FIELD: u32 = 2;
const EVENTS_FIELD: u32 = 11;

/// The events of one revision (live) or one catch-up step (history), each encoded at most
/// twice, lazily: as the watchers without `prev_kv` see it and as those with it see it.
#[derive(Debug)]
pub struct SharedEvents {
    events: Vec<Event>,
    encoded: Box<[[OnceLock<Bytes>; 2]]>,
}

impl SharedEvents {
    pub fn new(events: Vec<Event>) -> SharedEvents {
        let encoded = (0..events.len()).map(|_| Default::default()).collect();
        SharedEvents { events, encoded }
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Event `i` as one `events` field of a `WatchResponse`, with its `prev_kv` if `prev_kv`.
    pub fn field(&self, i: usize, prev_kv: bool) -> Bytes {
        let e = &self.events[i];
        let with_prev = prev_kv && e.prev_kv.is_some();
        self.encoded[i][usize::from(with_prev)]
            .get_or_init(|| {
                let mut buf = BytesMut::new();
                if with_prev {
                    message::encode(EVENTS_FIELD, e, &mut buf);
                } else {
                    let bare = Event {
                        r#type: e.r#type,
                        kv: e.kv.clone(),
                        prev_kv: None,
                    };
                    message::encode(EVENTS_FIELD, &bare, &mut buf);
                }
                buf.freeze()
            })
            .clone()
    }
}

/// A stream's header at one revision as the `header` field of a `WatchResponse`: encoded once
/// for all the responses of that revision on the stream.
pub fn header_field(header: &ResponseHeader) -> Bytes {
    let mut buf = BytesMut::with_capacity(message::encoded_len(HEADER_FIELD, header));
    message::encode(HEADER_FIELD, header, &mut buf);
    buf.freeze()
}

/// One response on its way to the client, encoded.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Any response, encoded whole (created, canceled, progress, fragments).
    Whole(Bytes),
    /// Events for one watcher: header field, id, then the shared encoded events.
    Events {
        header: Bytes,
        watch_id: i64,
        events: Vec<Bytes>,
    },
}

impl Outgoing {
    pub fn message(resp: &WatchResponse) -> Outgoing {
        Outgoing::Whole(resp.encode_to_vec().into())
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            Outgoing::Whole(b) => b.len(),
            Outgoing::Events {
                header,
                watch_id,
                events,
            } => header.len() + id_len(*watch_id) + events.iter().map(Bytes::len).sum::<usize>(),
        }
    }

    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Outgoing::Whole(b) => buf.put_slice(b),
            Outgoing::Events {
                header,
                watch_id,
                events,
            } => {
                buf.put_slice(header);
                // proto3 leaves a zero scalar out, as prost's generated code does.
                if *watch_id != 0 {
                    int64::encode(WATCH_ID_FIELD, watch_id, buf);
                }
                for e in events {
                    buf.put_slice(e);
                }
            }
        }
    }

    /// The response as a message (for the JSON gateway, which re-encodes it as JSON).
    pub fn decode(&self) -> Result<WatchResponse, prost::DecodeError> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.write(&mut buf);
        WatchResponse::decode(buf.as_slice())
    }
}

fn id_len(id: i64) -> usize {
    if id == 0 {
        0
    } else {
        int64::encoded_len(WATCH_ID_FIELD, &id)
    }
}

/// Bytes tonic allocates up front for a stream's send buffer and its receive buffer (8 KiB
/// each by default, per stream, whether it ever sends or receives much); both grow on demand,
/// so an idle stream keeps only this much (a create request or response is under 128 bytes
/// unless its key is long).
const STREAM_BUFFER: usize = 128;
/// tonic hands what it has encoded to HTTP/2 once this much is buffered (its default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The Watch call's codec: requests decoded by prost, responses written from [`Outgoing`].
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchCodec;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(STREAM_BUFFER, YIELD_THRESHOLD)
}

impl Codec for WatchCodec {
    type Encode = Outgoing;
    type Decode = WatchRequest;
    type Encoder = OutgoingEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> OutgoingEncoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder(ProstDecoder::new(buffer_settings()))
    }
}

#[derive(Debug)]
pub struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.write(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// prost's decoder with the small initial buffer.
#[derive(Debug)]
pub struct RequestDecoder(ProstDecoder<WatchRequest>);

impl Decoder for RequestDecoder {
    type Item = WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        self.0.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::mvccpb::KeyValue;

    fn kv(key: &'static [u8], rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(key),
            value: Bytes::from_static(b"value"),
            mod_revision: rev,
            create_revision: 2,
            version: 3,
            ..Default::default()
        }
    }

    #[test]
    fn shared_pieces_encode_the_response_prost_would() {
        let shared = SharedEvents::new(vec![
            Event {
                r#type: 0,
                kv: Some(kv(b"a", 7)),
                prev_kv: Some(kv(b"a", 5)),
            },
            Event {
                r#type: 1,
                kv: Some(kv(b"b", 7)),
                prev_kv: None,
            },
        ]);
        let header = ResponseHeader {
            cluster_id: 11,
            member_id: 12,
            revision: 7,
            raft_term: 3,
        };
        for (watch_id, prev_kv) in [(0, false), (5, true), (-3, false)] {
            let out = Outgoing::Events {
                header: header_field(&header),
                watch_id,
                events: (0..2).map(|i| shared.field(i, prev_kv)).collect(),
            };
            let mut events = shared.events().to_vec();
            if !prev_kv {
                events.iter_mut().for_each(|e| e.prev_kv = None);
            }
            let expected = WatchResponse {
                header: Some(header),
                watch_id,
                events,
                ..Default::default()
            };
            let mut bytes = Vec::new();
            out.write(&mut bytes);
            assert_eq!(
                bytes,
                expected.encode_to_vec(),
                "id {watch_id} prev_kv {prev_kv}"
            );
            assert_eq!(out.encoded_len(), bytes.len());
            assert_eq!(out.decode().unwrap(), expected);
        }
        let whole = WatchResponse {
            watch_id: 4,
            created: true,
            ..Default::default()
        };
        assert_eq!(Outgoing::message(&whole).decode().unwrap(), whole);
    }
}
