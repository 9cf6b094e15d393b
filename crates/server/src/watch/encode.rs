//! Watch responses as bytes, for the gRPC stream's codec ([`WatchCodec`]).
//!
//! With many watchers on one key, every event goes into as many responses. Rather than build
//! and encode one `WatchResponse` per watcher, each event is encoded once per revision (with
//! and without its `prev_kv`, on first use) as the `events` field of a `WatchResponse`, and
//! the header once per step of the stream. A watcher's response is then assembled by copying
//! those pieces, one after the other, into a buffer the stream task writes all of its
//! responses into ([`EventWriter`]): protobuf encodes a message as its fields one after the
//! other, so the result is the same message prost would encode (field order ascending:
//! header 1, watch_id 2, events 11).
//!
//! Copying beats sharing here: an event is typically tens of bytes, and sharing it by
//! reference count (as `Bytes`) costs an atomic increment and decrement per watcher on a
//! counter every stream touches, from both cores, plus a list of pieces per response. A
//! copied response is one slice of a buffer of the stream's own.
//!
//! Each response is written already framed for gRPC (its 5-byte length prefix in front),
//! so the responses a stream hands over are sent as the buffer they were written in: runs
//! of responses cut one after the other from one chunk are joined back without copying
//! ([`framed`]) and each run is handed to HTTP/2 as one piece of the body. Before, each response was copied
//! a second time, into one buffer per batch, after being cut from the first (the watch
//! profile in `bench/RESULTS.md`, "Watch fan-out on a quiet hour").

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::encoding::{int64, message};
use prost::Message;
use proto::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use proto::mvccpb::Event;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

use super::queue::Receiver;
use super::stream::OutBatch;

/// `WatchResponse` field numbers written by hand here.
const HEADER_FIELD: u32 = 1;
const WATCH_ID_FIELD: u32 = 2;
const EVENTS_FIELD: u32 = 11;

/// One event as an `events` field, encoded on first use.
type LazyField = OnceLock<Box<[u8]>>;

/// The events of one revision (live) or one catch-up step (history), each encoded at most
/// twice, lazily: as the watchers without `prev_kv` see it and as those with it see it.
#[derive(Debug)]
pub struct SharedEvents {
    events: Vec<Event>,
    encoded: Box<[[LazyField; 2]]>,
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
    pub fn field(&self, i: usize, prev_kv: bool) -> &[u8] {
        let e = &self.events[i];
        let with_prev = prev_kv && e.prev_kv.is_some();
        self.encoded[i][usize::from(with_prev)].get_or_init(|| {
            let mut buf = Vec::new();
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
            buf.into_boxed_slice()
        })
    }
}

/// Bytes a stream task's response buffer is allocated with: responses are cut from it one
/// after the other (each keeps the chunk alive until HTTP/2 has written it out: a client
/// that stops reading holds its stream's last chunks), and a new chunk is taken when less than [`CHUNK_MIN_LEFT`] remains.
const CHUNK: usize = 16 * 1024;
const CHUNK_MIN_LEFT: usize = 512;

/// Writes the event responses of one step of a stream task (one header for all of them).
pub struct EventWriter {
    /// The header as the `header` field of a `WatchResponse`.
    header: Box<[u8]>,
    buf: BytesMut,
}

impl EventWriter {
    pub fn new(header: &ResponseHeader) -> EventWriter {
        let mut field = Vec::with_capacity(message::encoded_len(HEADER_FIELD, header));
        message::encode(HEADER_FIELD, header, &mut field);
        EventWriter {
            header: field.into_boxed_slice(),
            buf: BytesMut::new(),
        }
    }

    /// The response to watcher `watch_id` carrying `events` (encoded `events` fields, see
    /// [`SharedEvents::field`]) and how many there are; `None` without any event.
    pub fn response<'a>(
        &mut self,
        watch_id: i64,
        events: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<(Outgoing, usize)> {
        let mut n = 0;
        for e in events {
            if n == 0 {
                self.start(watch_id);
            }
            self.buf.put_slice(e);
            n += 1;
        }
        (n > 0).then(|| (self.finish(), n))
    }

    /// The response to watcher `watch_id` carrying `fields`: encoded `events` fields one
    /// after the other, as another watcher's response already carried them.
    pub fn response_with_fields(&mut self, watch_id: i64, fields: &[u8]) -> Outgoing {
        self.start(watch_id);
        self.buf.put_slice(fields);
        self.finish()
    }

    /// Begins a response: its gRPC prefix (the length filled in by [`EventWriter::finish`]),
    /// the header and the watch id.
    fn start(&mut self, watch_id: i64) {
        if self.buf.capacity() < CHUNK_MIN_LEFT {
            self.buf.reserve(CHUNK);
        }
        self.buf.put_slice(&[0; GRPC_PREFIX]);
        self.buf.put_slice(&self.header);
        // proto3 leaves a zero scalar out, as prost's generated code does.
        if watch_id != 0 {
            int64::encode(WATCH_ID_FIELD, &watch_id, &mut self.buf);
        }
    }

    /// Cuts the response begun by [`EventWriter::start`] from the buffer, its length set.
    fn finish(&mut self) -> Outgoing {
        let len = self.buf.len() - GRPC_PREFIX;
        self.buf[1..GRPC_PREFIX].copy_from_slice(&prefix_len(len).to_be_bytes());
        Outgoing(self.buf.split())
    }
}

/// A message's length as gRPC's prefix carries it. None comes near `u32::MAX`: catch-up
/// steps and coalesced revisions are bounded to about a MiB, and a request is far smaller.
fn prefix_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// One response on its way to the client, encoded and framed: gRPC's 5-byte prefix (no
/// compression, the length), then the message.
#[derive(Debug)]
pub struct Outgoing(BytesMut);

impl Outgoing {
    pub fn message(resp: &WatchResponse) -> Outgoing {
        let len = resp.encoded_len();
        let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
        buf.put_u8(0);
        buf.put_u32(prefix_len(len));
        // Cannot fail: the buffer has room for the whole message.
        let _ = resp.encode(&mut buf);
        Outgoing(buf)
    }

    /// The message's encoded length (without the prefix).
    pub fn encoded_len(&self) -> usize {
        self.0.len() - GRPC_PREFIX
    }

    /// The encoded message.
    fn message_bytes(&self) -> &[u8] {
        &self.0[GRPC_PREFIX..]
    }

    /// The response as a message (for the JSON gateway, which re-encodes it as JSON).
    pub fn decode(&self) -> Result<WatchResponse, prost::DecodeError> {
        WatchResponse::decode(self.message_bytes())
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
        dst.put_slice(item.message_bytes());
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

/// gRPC's length prefix of a message: a compression flag (0: none) and the length.
const GRPC_PREFIX: usize = 5;

/// `responses` (each already framed) as the runs of bytes to send, in order: responses
/// cut one after the other from one chunk are joined back into one run without copying;
/// a new run starts where a response lies elsewhere (the writer took a new chunk, or the
/// response was encoded on its own).
fn framed(responses: Vec<Outgoing>) -> Vec<Bytes> {
    let mut runs = Vec::new();
    let mut run: Option<BytesMut> = None;
    for Outgoing(r) in responses {
        run = Some(match run {
            Some(mut joined) if joined.as_ptr_range().end == r.as_ptr() => {
                // Adjacent: if cut from one chunk (almost always), `unsplit` only moves an
                // index; two allocations that merely touch are copied, still correct.
                joined.unsplit(r);
                joined
            }
            Some(joined) => {
                runs.push(joined.freeze());
                r
            }
            None => r,
        });
    }
    runs.extend(run.map(BytesMut::freeze));
    runs
}

/// The Watch call's HTTP response body, in place of tonic's encoder: each batch of
/// responses the stream task hands over becomes a few data chunks of gRPC-framed messages,
/// as they were written ([`framed`]), and the stream's end (or the error that ended it)
/// becomes the trailers. tonic's encoder would take the responses one at a time through a stream of
/// them, each with its own poll and its own trip through the encoder, a cost paid for every
/// watcher of every revision.
pub struct ResponseBody {
    rx: Receiver<OutBatch>,
    /// The rest of the batch being sent (emptied before the next is received, so an idle
    /// stream holds no response's memory).
    runs: std::vec::IntoIter<Bytes>,
    ended: bool,
}

impl ResponseBody {
    pub fn new(rx: Receiver<OutBatch>) -> ResponseBody {
        ResponseBody {
            rx,
            runs: Vec::new().into_iter(),
            ended: false,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let status = loop {
            if let Some(run) = self.runs.next() {
                return Poll::Ready(Some(Ok(Frame::data(run))));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(batch)) => self.runs = framed(batch).into_iter(),
                Some(Err(status)) => break status,
                None => break Status::ok(""),
            }
        };
        self.ended = true;
        let mut trailers = tonic::codegen::http::HeaderMap::new();
        Poll::Ready(Some(
            status
                .add_header(&mut trailers)
                .map(|()| Frame::trailers(trailers)),
        ))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
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
        let mut writer = EventWriter::new(&header);
        for (watch_id, prev_kv) in [(0, false), (5, true), (-3, false)] {
            let (out, n) = writer
                .response(watch_id, (0..2).map(|i| shared.field(i, prev_kv)))
                .expect("two events");
            assert_eq!(n, 2);
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
            let bytes = expected.encode_to_vec();
            assert_eq!(
                out.message_bytes(),
                bytes,
                "id {watch_id} prev_kv {prev_kv}"
            );
            assert_eq!(out.encoded_len(), bytes.len());
            assert_eq!(out.0[..GRPC_PREFIX], grpc_prefix(bytes.len()));
            assert_eq!(out.decode().unwrap(), expected);
        }
        assert!(writer.response(1, std::iter::empty()).is_none());
        // Responses cut from one chunk stay intact while later ones are written, and across
        // chunks: 2,000 responses of ~60 bytes span several.
        let cut: Vec<Outgoing> = (0..2000)
            .map(|id| writer.response(id, [shared.field(1, false)]).unwrap().0)
            .collect();
        for (id, out) in cut.iter().enumerate() {
            let resp = out.decode().unwrap();
            assert_eq!(resp.watch_id, id as i64);
            assert_eq!(resp.events.len(), 1);
            assert_eq!(resp.events[0].kv.as_ref().unwrap().key, &b"b"[..]);
        }
        let whole = WatchResponse {
            watch_id: 4,
            created: true,
            ..Default::default()
        };
        assert_eq!(Outgoing::message(&whole).decode().unwrap(), whole);
    }

    fn grpc_prefix(len: usize) -> [u8; GRPC_PREFIX] {
        let mut p = [0; GRPC_PREFIX];
        p[1..].copy_from_slice(&(len as u32).to_be_bytes());
        p
    }

    /// What a gRPC client reads from `runs`: each message behind its prefix, decoded.
    fn read_framed(runs: &[Bytes]) -> Vec<WatchResponse> {
        let all: Vec<u8> = runs.iter().flat_map(|r| r.iter().copied()).collect();
        let mut rest = &all[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            assert_eq!(rest[0], 0, "compression flag");
            let len = u32::from_be_bytes(rest[1..GRPC_PREFIX].try_into().unwrap()) as usize;
            out.push(WatchResponse::decode(&rest[GRPC_PREFIX..GRPC_PREFIX + len]).unwrap());
            rest = &rest[GRPC_PREFIX + len..];
        }
        out
    }

    #[test]
    fn a_batch_goes_out_as_the_runs_it_was_written_in() {
        let shared = SharedEvents::new(vec![Event {
            r#type: 0,
            kv: Some(kv(b"key", 9)),
            prev_kv: None,
        }]);
        let mut writer = EventWriter::new(&ResponseHeader {
            revision: 9,
            ..Default::default()
        });
        // 1,000 responses of ~40 bytes: about three chunks, with a response encoded on its
        // own (a create) in the middle.
        let mut batch: Vec<Outgoing> = (0..1000)
            .map(|id| writer.response(id, [shared.field(0, false)]).unwrap().0)
            .collect();
        let created = WatchResponse {
            watch_id: 77,
            created: true,
            ..Default::default()
        };
        batch.insert(500, Outgoing::message(&created));
        let expected: Vec<WatchResponse> = batch.iter().map(|o| o.decode().unwrap()).collect();
        let chunks = batch
            .iter()
            .map(|o| o.0.len())
            .sum::<usize>()
            .div_ceil(CHUNK);
        let runs = framed(batch);
        assert_eq!(read_framed(&runs), expected, "every response, in order");
        assert!(
            runs.len() <= chunks + 3,
            "{} runs for {chunks} chunks and one separate response: responses of one chunk \
             were not joined",
            runs.len()
        );
        assert!(
            runs.len() >= 3,
            "the separate response starts and ends a run"
        );
        assert!(framed(Vec::new()).is_empty());
    }
}
