//! Accept etcdctl 3.4's `:authority` headers that carry a URL scheme.
//!
//! etcdctl 3.4's endpoint commands (`endpoint status|health|hashkv`, `--cluster` variants)
//! dial `http://host:port` through gRPC's passthrough resolver, so every HTTP/2 request
//! carries `:authority: http://host:port`. etcd's Go server ignores the authority; our
//! HTTP/2 stack (h2) rejects it as malformed and resets the stream (`PROTOCOL_ERROR`).
//!
//! This adapter sits between the socket and the HTTP server, on the client-to-server
//! direction only. For an HTTP/2 connection it decodes the *first* header block (HPACK).
//! gRPC clients send one `:authority` for every call of a channel, so the first block
//! decides the connection:
//! - no scheme in `:authority` (every client but etcdctl 3.4's endpoint commands): the block
//!   is forwarded byte for byte and the rest of the connection passes straight through, at
//!   no cost per request (decoding every block cost a third of a busy leader's CPU);
//! - a scheme: from then on every header block is decoded (keeping the client's dynamic
//!   table in step), the scheme is stripped from `:authority`, and the block is re-encoded
//!   with literal, never-indexed fields — so the server's own decoder never needs a dynamic
//!   table and stays consistent.
//!
//! etcdctl 3.4 dialling a unix socket (`--endpoints unix:///run/e.sock`) sends the socket's
//! path as `:authority` (`/run/e.sock`), which h2 rejects the same way; such an authority (one
//! with a `/`, or nothing left once the scheme is stripped) becomes `localhost`, the name a
//! local socket's server goes by.
//!
//! A client that changed `:authority` to a scheme-carrying one later on a passed-through
//! connection would see the HTTP/2 server's own `PROTOCOL_ERROR` for that stream, i.e. what
//! it would get without this adapter. All other frames, the server-to-client direction and
//! HTTP/1.1 connections pass through untouched. A malformed header block closes the
//! connection, as the HTTP/2 server itself would.
//!
//! The HPACK decoder is our own (`hpack.rs`, `huffman.rs`): the crate this used to rest on is
//! unmaintained and panics on some malformed blocks. Ours returns an error for every
//! malformed block, which property tests over random and mutated blocks check (`props.rs`).

mod hpack;
mod huffman;
#[cfg(test)]
mod props;
#[cfg(test)]
mod test_encoder;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest frame size every HTTP/2 peer must accept; our re-encoded blocks use it.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (h2's default header list limit is 16 KiB).
const MAX_BLOCK: usize = 1 << 20;

enum Mode {
    /// Not yet known whether the client speaks HTTP/2 with prior knowledge.
    Detect,
    /// HTTP/2, first header block not complete yet: frames are held until it is.
    Http2Probe,
    /// HTTP/2 with a scheme in `:authority`: every header block is rewritten.
    Http2Fix,
    Passthrough,
}

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
struct PendingBlock {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    raw: BytesMut,
    out: BytesMut,
    decoder: hpack::Decoder,
    pending: Option<PendingBlock>,
    /// While probing: the raw frames of the first header block, forwarded as they came if
    /// the block needs no fix.
    held: Vec<u8>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Detect,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            decoder: hpack::Decoder::default(),
            pending: None,
            held: Vec::new(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Move what can be decided from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        if let Mode::Detect = self.mode {
            let n = self.raw.len().min(PREFACE.len());
            if self.raw[..n] != PREFACE[..n] {
                self.mode = Mode::Passthrough;
            } else if n == PREFACE.len() {
                self.out.extend_from_slice(&self.raw.split_to(n));
                self.mode = Mode::Http2Probe;
            } else if self.eof {
                self.mode = Mode::Passthrough;
            }
        }
        match self.mode {
            Mode::Detect => Ok(()),
            Mode::Passthrough => {
                let all = self.raw.split();
                self.out.extend_from_slice(&all);
                Ok(())
            }
            Mode::Http2Probe | Mode::Http2Fix => {
                while self.raw.len() >= FRAME_HEADER {
                    if let Mode::Passthrough = self.mode {
                        let all = self.raw.split();
                        self.out.extend_from_slice(&all);
                        break;
                    }
                    let len = (usize::from(self.raw[0]) << 16)
                        | (usize::from(self.raw[1]) << 8)
                        | usize::from(self.raw[2]);
                    if self.raw.len() < FRAME_HEADER + len {
                        break;
                    }
                    let frame = self.raw.split_to(FRAME_HEADER + len);
                    self.frame(&frame)?;
                }
                Ok(())
            }
        }
    }

    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        if let Mode::Http2Probe = self.mode {
            if self.pending.is_some() || frame[3] == HEADERS {
                self.held.extend_from_slice(frame);
            }
        }
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        if let Some(p) = &mut self.pending {
            if kind != CONTINUATION || stream_id != p.stream_id {
                return Err(bad("header block interrupted by another frame"));
            }
            p.block.extend_from_slice(payload);
            if p.block.len() > MAX_BLOCK {
                return Err(bad("header block too large"));
            }
            if flags & END_HEADERS != 0 {
                let p = self.pending.take().expect("checked above");
                self.finish(p)?;
            }
            return Ok(());
        }
        if kind != HEADERS {
            self.out.extend_from_slice(frame);
            return Ok(());
        }
        let mut body = payload;
        let mut pad = 0usize;
        if flags & PADDED != 0 {
            let (&p, rest) = body
                .split_first()
                .ok_or_else(|| bad("short HEADERS frame"))?;
            pad = usize::from(p);
            body = rest;
        }
        let mut priority = None;
        if flags & PRIORITY != 0 {
            if body.len() < 5 {
                return Err(bad("short HEADERS frame"));
            }
            let mut p = [0u8; 5];
            p.copy_from_slice(&body[..5]);
            priority = Some(p);
            body = &body[5..];
        }
        if pad > body.len() {
            return Err(bad("HEADERS padding exceeds the frame"));
        }
        let fragment = &body[..body.len() - pad];
        let p = PendingBlock {
            stream_id,
            flags,
            priority,
            block: fragment.to_vec(),
        };
        if flags & END_HEADERS != 0 {
            self.finish(p)
        } else {
            self.pending = Some(p);
            Ok(())
        }
    }

    /// Decode a complete block; emit it re-encoded with `:authority` fixed, or — for a
    /// first block that needs no fix — as it came, switching the connection to passthrough.
    fn finish(&mut self, p: PendingBlock) -> io::Result<()> {
        let fields = self
            .decoder
            .decode(&p.block)
            .map_err(|e| bad(&format!("undecodable header block: {e}")))?;
        if let Mode::Http2Probe = self.mode {
            let held = std::mem::take(&mut self.held);
            let needs_fix = fields
                .iter()
                .any(|(n, v)| n.as_slice() == b":authority" && fix_authority(v) != v.as_slice());
            if !needs_fix {
                self.out.extend_from_slice(&held);
                self.mode = Mode::Passthrough;
                return Ok(());
            }
            self.mode = Mode::Http2Fix;
        }
        let mut block = Vec::with_capacity(p.block.len() * 2);
        for (name, value) in &fields {
            let value = if name.as_slice() == b":authority" {
                fix_authority(value)
            } else {
                value.as_slice()
            };
            encode_literal(&mut block, name, value);
        }
        let mut chunks = block.chunks(MAX_FRAME - 5).peekable();
        let first = chunks.next().unwrap_or(&[]);
        let mut flags = p.flags & (END_STREAM | PRIORITY);
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        let mut payload = Vec::with_capacity(first.len() + 5);
        if let Some(pr) = p.priority {
            payload.extend_from_slice(&pr);
        }
        payload.extend_from_slice(first);
        self.emit(HEADERS, flags, p.stream_id, &payload);
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                END_HEADERS
            } else {
                0
            };
            self.emit(CONTINUATION, flags, p.stream_id, chunk);
        }
        Ok(())
    }

    fn emit(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let len = payload.len();
        self.out.put_u8((len >> 16) as u8);
        self.out.put_u8((len >> 8) as u8);
        self.out.put_u8(len as u8);
        self.out.put_u8(kind);
        self.out.put_u8(flags);
        self.out.put_u32(stream_id);
        self.out.extend_from_slice(payload);
    }
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// `http://host:port/` → `host:port`; anything without a scheme is returned as is.
/// The `:authority` the HTTP/2 server accepts for what a client sent: without a URL scheme
/// and path, and `localhost` for a unix socket's path (or an authority that was only a
/// scheme and a path, `unix:///run/e.sock`).
fn fix_authority(v: &[u8]) -> &[u8] {
    let v = strip_scheme(v);
    if v.is_empty() || v.contains(&b'/') {
        b"localhost"
    } else {
        v
    }
}

fn strip_scheme(v: &[u8]) -> &[u8] {
    match v.windows(3).position(|w| w == b"://") {
        Some(i) => {
            let rest = &v[i + 3..];
            let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
            &rest[..end]
        }
        None => v,
    }
}

/// HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn encode_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// "Literal header field never indexed, new name", both strings raw (no Huffman).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x10);
    encode_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    encode_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passthrough) && this.raw.is_empty() {
                // Decided and drained: read straight into the caller's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    }
                    this.raw.extend_from_slice(rb.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            (payload.len() >> 16) as u8,
            (payload.len() >> 8) as u8,
            payload.len() as u8,
            kind,
            flags,
        ];
        f.extend_from_slice(&sid.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn pass(input: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut fix = AuthorityFix::new(&input[..]);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// Decode the HEADERS blocks of an HTTP/2 byte stream (after the preface).
    fn headers_of(stream: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = hpack::Decoder::default();
        let mut rest = &stream[PREFACE.len()..];
        let mut blocks = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            if rest[3] == HEADERS {
                blocks.push(dec.decode(&rest[FRAME_HEADER..FRAME_HEADER + len]).unwrap());
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        blocks
    }

    #[tokio::test]
    async fn schemes_are_stripped_and_the_dynamic_table_stays_in_step() {
        // Two requests from an indexing encoder: the second refers to the first's entries.
        let mut enc = test_encoder::Encoder::new();
        let req = [
            (b":method".to_vec(), b"POST".to_vec()),
            (b":authority".to_vec(), b"http://127.0.0.1:2379".to_vec()),
            (b"custom".to_vec(), b"kept".to_vec()),
        ];
        let b1 = enc.encode(req.iter().map(|(n, v)| (&n[..], &v[..])));
        let b2 = enc.encode(req.iter().map(|(n, v)| (&n[..], &v[..])));
        assert!(
            b2.len() < b1.len(),
            "the second block must use the dynamic table"
        );
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &b1));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        // The second block split over HEADERS + CONTINUATION, with padding.
        let (h, c) = b2.split_at(b2.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(h);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | END_STREAM, 3, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, c));
        let out = pass(input).await.unwrap();
        let blocks = headers_of(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            assert_eq!(b[1], (b":authority".to_vec(), b"127.0.0.1:2379".to_vec()));
            assert_eq!(b[2], (b"custom".to_vec(), b"kept".to_vec()));
        }
        // Non-header frames are untouched.
        assert!(out.windows(4).any(|w| w == b"data"));
    }

    /// A reader that hands out at most 3 bytes per read, so frames arrive in pieces.
    struct Trickle<'a>(&'a [u8]);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.0.len().min(3).min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_connection_without_a_scheme_passes_through_byte_for_byte() {
        let mut enc = test_encoder::Encoder::new();
        let req = [
            (b":method".to_vec(), b"POST".to_vec()),
            (b":authority".to_vec(), b"127.0.0.1:2379".to_vec()),
        ];
        let b1 = enc.encode(req.iter().map(|(n, v)| (&n[..], &v[..])));
        // A later block with a scheme is not looked at: the first block decided.
        let b2 = enc.encode([(&b":authority"[..], &b"http://h:1"[..])]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS before the first block
        let (h, c) = b1.split_at(b1.len() / 2);
        input.extend(frame(HEADERS, 0, 1, h));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, c));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &b2));
        assert_eq!(pass(input.clone()).await.unwrap(), input);
        let mut out = Vec::new();
        AuthorityFix::new(Trickle(&input))
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, input, "same bytes when frames arrive in pieces");
    }

    #[tokio::test]
    async fn a_scheme_in_the_first_block_is_fixed_even_when_frames_arrive_in_pieces() {
        let mut enc = test_encoder::Encoder::new();
        let req = [(&b":authority"[..], &b"http://127.0.0.1:2379"[..])];
        let b1 = enc.encode(req);
        let b2 = enc.encode(req);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &b1));
        input.extend(frame(HEADERS, END_HEADERS, 3, &b2));
        let mut out = Vec::new();
        AuthorityFix::new(Trickle(&input))
            .read_to_end(&mut out)
            .await
            .unwrap();
        let blocks = headers_of(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            assert_eq!(b[0], (b":authority".to_vec(), b"127.0.0.1:2379".to_vec()));
        }
    }

    #[tokio::test]
    async fn http1_passes_through_and_garbage_is_an_error_not_a_panic() {
        let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(pass(req.clone()).await.unwrap(), req);
        let mut bad_block = PREFACE.to_vec();
        bad_block.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert!(pass(bad_block).await.is_err());
        let mut interrupted = PREFACE.to_vec();
        interrupted.extend(frame(HEADERS, 0, 1, &[0x82]));
        interrupted.extend(frame(0x0, 0, 1, b"x"));
        assert!(pass(interrupted).await.is_err());
    }

    #[test]
    fn strip_scheme_cases() {
        assert_eq!(strip_scheme(b"http://h:1"), b"h:1");
        assert_eq!(strip_scheme(b"http://h:1/"), b"h:1");
        assert_eq!(strip_scheme(b"h:1"), b"h:1");
    }

    #[test]
    fn a_unix_socket_authority_becomes_localhost() {
        assert_eq!(fix_authority(b"/run/e.sock"), b"localhost");
        assert_eq!(fix_authority(b"unix:///run/e.sock"), b"localhost");
        assert_eq!(fix_authority(b"localhost:2379"), b"localhost:2379");
        assert_eq!(fix_authority(b"http://h:1"), b"h:1");
        assert_eq!(fix_authority(b"h:1"), b"h:1");
    }
}
