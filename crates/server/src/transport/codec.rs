//! The peer wire format: length-prefixed frames, each one [`Frame`].
//!
//! ```text
//! frame   := len:u32-le  kind:u8  body            (len counts kind + body)
//! integer := u64 little-endian (u32 for lengths, u8 for tags and booleans)
//! bytes   := len:u32  raw
//! ```
//!
//! Frame kinds: 1 `Hello`, 2 `HelloReply::Accepted`, 4 `Raft`, 5 `Forward`,
//! 6 `ForwardResult`, 7 `HelloReply::Refused` (`code:u8 reason:bytes`, see
//! [`RefusalKind`]), 8 `Change` (`req_id change:bytes`), 9 `ChangeResult` (`req_id` then
//! `0`, or `1 retry:u8 grpc_code:u32 message:bytes`). Kind 3 was the refusal before it carried a code (`reason:bytes`): it is
//! still decoded, as [`RefusalKind::Other`], and never sent.
//!
//! Our own encoding rather than protobuf because `raft::Message` is a Rust enum that
//! changes with the core; a hand-written codec keeps the mapping explicit, allocation-light
//! (entry payloads decode as slices of one `Bytes` frame buffer, no copies) and fully
//! checked: a malformed or truncated frame is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft::{ConfState, Entry, EntryKind, Message, MessageBody, RejectHint, Snapshot, SnapshotMeta};

/// Frames larger than this are refused (a snapshot of a large store still fits).
pub const MAX_FRAME: usize = 1 << 30;

/// Frames larger than this are refused before the handshake has admitted the sender: a
/// `Hello` or `HelloReply` is a few hundred bytes (names and URLs), and a stranger must not
/// make a member hold memory for a frame it announces.
pub const MAX_HANDSHAKE_FRAME: usize = 64 << 10;

/// At most this much is reserved ahead of the bytes of a large frame that have arrived: the
/// buffer grows with what the peer really sends, not with the length it announces.
const MAX_RESERVE_AHEAD: usize = 4 << 20;

/// Bumped on any incompatible change of this format; checked in the handshake.
///
/// Still 1 after the coded refusal (frame kind 7) was added: a dialler only ever receives
/// a refusal in reply to its own Hello, and an older dialler that cannot decode kind 7
/// fails that handshake and retries, which is what a refusal makes it do anyway. Bumping
/// the version would instead make old and new members refuse each other outright, so a
/// rolling upgrade would split the cluster.
pub const PROTOCOL_VERSION: u64 = 1;

/// Feature bit in [`HelloReply::Accepted`]: the acceptor decodes [`Frame::Ping`] (and so
/// answers it). Added without a version bump for the reason above: the bits travel after the
/// fields every version reads, an older acceptor sends none (so it is never pinged) and an
/// older dialler ignores them.
pub const FEATURE_PING: u64 = 1;

/// Feature bit in [`HelloReply::Accepted`]: the acceptor answers [`Frame::HashKv`] (the
/// corruption checks' question, etcd's `/members/hashkv` on its peer port). Advertised only
/// by an acceptor that has a store to hash.
pub const FEATURE_HASHKV: u64 = 2;

/// Feature bit in [`HelloReply::Accepted`]: the acceptor takes a snapshot in parts
/// ([`Frame::SnapshotHead`] and [`Frame::SnapshotPart`], `transport::snapshot_parts`). A
/// dialler sends an older acceptor the snapshot in one frame, as before.
pub const FEATURE_SNAPSHOT_PARTS: u64 = 4;

/// Feature bit in [`HelloReply::Accepted`]: the acceptor's state machine applies the batched
/// keep-alive entry (`raftkvpb.LeaseKeepAlives`, `InternalRequest` field 25). A build from
/// before it decodes that entry as an empty request and applies nothing, so its replica
/// would diverge; a member proposes the entry only once every peer advertised this bit
/// (`Transport::every_peer_advertises`) and otherwise one keep-alive per entry, the way
/// every build applies.
pub const FEATURE_LEASE_KEEP_ALIVES: u64 = 8;

/// The feature bits this build advertises.
pub const FEATURES: u64 =
    FEATURE_PING | FEATURE_HASHKV | FEATURE_SNAPSHOT_PARTS | FEATURE_LEASE_KEEP_ALIVES;

/// A peer's answer to [`Frame::HashKv`]: what etcd's `HashKVResponse` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHashKv {
    pub member_id: u64,
    pub hash: u32,
    /// The revision the hash covers (the one asked for).
    pub hash_revision: i64,
    pub compact_revision: i64,
    /// The answering member's current revision (the response header's).
    pub current_revision: i64,
}

/// The first frame on a connection: who is dialling, and into which cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u64,
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
    /// Random number chosen when the sender's data dir was created: a change means the
    /// member lost its data and must not rejoin under its old identity.
    pub incarnation: u64,
    pub name: String,
    pub client_urls: Vec<String>,
}

/// The answer to a [`Hello`]: accepted (with the acceptor's own details) or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloReply {
    Accepted {
        name: String,
        client_urls: Vec<String>,
        commit: u64,
        /// What the acceptor understands beyond version 1 ([`FEATURE_PING`]); 0 from a
        /// build older than the bits.
        features: u64,
    },
    Refused {
        kind: RefusalKind,
        reason: String,
    },
}

/// Why a handshake was refused, as the dialler must act on it. The human-readable reason
/// travels next to it for the logs; decisions are made on this code alone, so rewording a
/// message can never change what a member does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not one of the kinds below, or a code from a newer peer that this build does not
    /// know: treated as transient (retry later).
    Other,
    /// The dialler speaks another protocol version.
    ProtocolVersion,
    /// The dialler belongs to another cluster.
    WrongCluster,
    /// The dialler is not a member of this cluster, or dialled the wrong member.
    UnknownMember,
    /// The acceptor knows the dialler's member ID under another incarnation: the dialler's
    /// data dir was wiped, and it must stop rather than rejoin under its old identity.
    /// The only refusal that is not transient.
    IdentityWiped,
    /// The acceptor cannot admit anyone new right now (it failed to record the dialler's
    /// incarnation durably); try again later.
    Unavailable,
    /// The dialler was removed from the cluster: it must stop (etcd's "the member has been
    /// permanently removed from the cluster"). Not transient either. An older dialler reads
    /// the code as `Other` and keeps retrying, which is harmless: it is refused forever.
    Removed,
}

impl RefusalKind {
    /// The code on the wire. Codes are never reused for another meaning.
    pub fn code(self) -> u8 {
        match self {
            RefusalKind::Other => 0,
            RefusalKind::ProtocolVersion => 1,
            RefusalKind::WrongCluster => 2,
            RefusalKind::UnknownMember => 3,
            RefusalKind::IdentityWiped => 4,
            RefusalKind::Unavailable => 5,
            RefusalKind::Removed => 6,
        }
    }

    /// The kind for a code; an unknown code is `Other` (transient), never an error: a newer
    /// peer may add kinds, and a refusal must still be understood as one.
    pub fn from_code(code: u8) -> RefusalKind {
        match code {
            1 => RefusalKind::ProtocolVersion,
            2 => RefusalKind::WrongCluster,
            3 => RefusalKind::UnknownMember,
            4 => RefusalKind::IdentityWiped,
            5 => RefusalKind::Unavailable,
            6 => RefusalKind::Removed,
            _ => RefusalKind::Other,
        }
    }
}

/// Why a forwarded proposal was not placed in the log (the node driver's vocabulary).
pub use node::ForwardError;

/// Everything that travels between members.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Hello(Hello),
    HelloReply(HelloReply),
    Raft(Message),
    /// A follower asks the leader to propose `data` (an encoded InternalRequest).
    Forward {
        req_id: u64,
        data: Bytes,
    },
    /// The leader's answer: where the entry landed, so the follower can wait for its own
    /// apply of (index, term), or why it was not proposed.
    ForwardResult {
        req_id: u64,
        result: Result<(u64, u64), ForwardError>,
    },
    /// A follower asks the leader to propose a membership change (an encoded
    /// `raft::ConfChange`), on behalf of a client's Cluster call.
    Change {
        req_id: u64,
        change: Bytes,
    },
    /// The leader's answer once the change is applied on the leader, or why not.
    ChangeResult {
        req_id: u64,
        result: Result<(), ChangeRefusal>,
    },
    /// A round-trip probe: `sent` is the sender's own clock (microseconds since its
    /// process-wide epoch), sent only to acceptors that advertise [`FEATURE_PING`].
    Ping {
        sent: u64,
    },
    /// The answer to a [`Frame::Ping`], on the answering member's own connection, echoing
    /// `sent` so the prober needs no clock but its own.
    Pong {
        sent: u64,
    },
    /// Instead of a [`Frame::Hello`]: a member started with `--initial-cluster-state
    /// existing` and an empty data dir asks which member of the cluster has `peer_urls`
    /// (raftkv's counterpart of etcd's `GET /members` on the peer port; `crate::join`).
    /// Answered with one [`Frame::JoinAnswer`], then the connection closes.
    JoinQuery {
        peer_urls: Vec<String>,
    },
    JoinAnswer {
        result: Result<JoinFound, String>,
    },
    /// HashKV of the receiver's store at `revision` (0: its current one), sent only to
    /// acceptors that advertise [`FEATURE_HASHKV`]; answered on the same connection.
    HashKv {
        req_id: u64,
        revision: i64,
    },
    /// The answer to a [`Frame::HashKv`], or etcd's error text (`mvcc: required revision is
    /// a future revision`, ...).
    HashKvResult {
        req_id: u64,
        result: Result<PeerHashKv, String>,
    },
    /// Instead of a [`Frame::Hello`]: a member started with `--auto-join`, an empty data dir
    /// and a name that is not one of the founders' asks to be added to the cluster with
    /// `peer_urls` (`crate::auto_join`). Answered with one [`Frame::AddMeAnswer`] once the
    /// cluster applied the change (or refused it), then the connection closes.
    AddMe {
        name: String,
        peer_urls: Vec<String>,
    },
    AddMeAnswer {
        result: Result<(), String>,
    },
    /// The start of a snapshot sent in parts (`transport::snapshot_parts`): the
    /// `InstallSnapshot` message with an empty image, and the image's length. Sent only to
    /// acceptors that advertise [`FEATURE_SNAPSHOT_PARTS`].
    SnapshotHead {
        message: Message,
        len: u64,
    },
    /// The next bytes of the image announced by the last [`Frame::SnapshotHead`] on this
    /// connection (the whole frame body after the kind: no inner length).
    SnapshotPart {
        data: Bytes,
    },
}

/// Who a joining member is, as a member of the running cluster answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinFound {
    pub cluster_id: u64,
    /// The id `member add` gave the member with the asked peer URLs.
    pub member_id: u64,
    /// `MemberList::encode` of the cluster's bootstrap members (`--initial-cluster` of the
    /// members that founded it): the configuration its log starts from.
    pub base: Bytes,
    /// `MemberList::encode` of the member list as the answering member applied it.
    pub current: Bytes,
}

/// Why a membership change was not made: the gRPC code and etcd's message for the client,
/// or `retry` when it may succeed if asked again (a change in flight, leadership moving).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRefusal {
    pub retry: bool,
    pub code: i32,
    pub message: String,
}

/// A frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated frame")]
    Truncated,
    #[error("unknown {0} tag {1}")]
    UnknownTag(&'static str, u8),
    #[error("invalid utf-8 in a string field")]
    BadString,
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

// ---- encoding -------------------------------------------------------------------------

/// Append `frame`, length prefix included, to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32_le(0);
    match frame {
        Frame::Hello(h) => {
            out.put_u8(1);
            out.put_u64_le(h.version);
            out.put_u64_le(h.cluster_id);
            out.put_u64_le(h.from);
            out.put_u64_le(h.to);
            out.put_u64_le(h.incarnation);
            put_str(out, &h.name);
            put_strs(out, &h.client_urls);
        }
        Frame::HelloReply(HelloReply::Accepted {
            name,
            client_urls,
            commit,
            features,
        }) => {
            out.put_u8(2);
            put_str(out, name);
            put_strs(out, client_urls);
            out.put_u64_le(*commit);
            out.put_u64_le(*features);
        }
        Frame::HelloReply(HelloReply::Refused { kind, reason }) => {
            out.put_u8(7);
            out.put_u8(kind.code());
            put_str(out, reason);
        }
        Frame::Raft(m) => {
            out.truncate(start);
            return encode_raft(m, out);
        }
        Frame::Forward { req_id, data } => {
            out.put_u8(5);
            out.put_u64_le(*req_id);
            put_bytes(out, data);
        }
        Frame::ForwardResult { req_id, result } => {
            out.put_u8(6);
            out.put_u64_le(*req_id);
            match result {
                Ok((index, term)) => {
                    out.put_u8(0);
                    out.put_u64_le(*index);
                    out.put_u64_le(*term);
                }
                Err(ForwardError::NotLeader) => out.put_u8(1),
                Err(ForwardError::TooManyRequests) => out.put_u8(2),
            }
        }
        Frame::Change { req_id, change } => {
            out.put_u8(8);
            out.put_u64_le(*req_id);
            put_bytes(out, change);
        }
        Frame::ChangeResult { req_id, result } => {
            out.put_u8(9);
            out.put_u64_le(*req_id);
            match result {
                Ok(()) => out.put_u8(0),
                Err(r) => {
                    out.put_u8(1);
                    out.put_u8(r.retry as u8);
                    out.put_u32_le(r.code as u32);
                    put_str(out, &r.message);
                }
            }
        }
        Frame::Ping { sent } => {
            out.put_u8(10);
            out.put_u64_le(*sent);
        }
        Frame::Pong { sent } => {
            out.put_u8(11);
            out.put_u64_le(*sent);
        }
        Frame::JoinQuery { peer_urls } => {
            out.put_u8(12);
            put_strs(out, peer_urls);
        }
        Frame::JoinAnswer { result } => {
            out.put_u8(13);
            match result {
                Ok(found) => {
                    out.put_u8(0);
                    out.put_u64_le(found.cluster_id);
                    out.put_u64_le(found.member_id);
                    put_bytes(out, &found.base);
                    put_bytes(out, &found.current);
                }
                Err(reason) => {
                    out.put_u8(1);
                    put_str(out, reason);
                }
            }
        }
        Frame::HashKv { req_id, revision } => {
            out.put_u8(14);
            out.put_u64_le(*req_id);
            out.put_i64_le(*revision);
        }
        Frame::HashKvResult { req_id, result } => {
            out.put_u8(15);
            out.put_u64_le(*req_id);
            match result {
                Ok(h) => {
                    out.put_u8(0);
                    out.put_u64_le(h.member_id);
                    out.put_u32_le(h.hash);
                    out.put_i64_le(h.hash_revision);
                    out.put_i64_le(h.compact_revision);
                    out.put_i64_le(h.current_revision);
                }
                Err(message) => {
                    out.put_u8(1);
                    put_str(out, message);
                }
            }
        }
        Frame::AddMe { name, peer_urls } => {
            out.put_u8(16);
            put_str(out, name);
            put_strs(out, peer_urls);
        }
        Frame::SnapshotHead { message, len } => {
            out.put_u8(18);
            put_message(out, message);
            out.put_u64_le(*len);
        }
        Frame::SnapshotPart { data } => {
            out.truncate(start);
            return encode_snapshot_part(data, out);
        }
        Frame::AddMeAnswer { result } => {
            out.put_u8(17);
            match result {
                Ok(()) => out.put_u8(0),
                Err(reason) => {
                    out.put_u8(1);
                    put_str(out, reason);
                }
            }
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Append a `Frame::Raft` carrying `m`, length prefix included, to `out` — without the
/// caller having to clone the message into a frame.
pub fn encode_raft(m: &Message, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u8(4);
    put_message(out, m);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Append a [`Frame::SnapshotPart`] carrying `data`, length prefix included, without
/// first copying `data` into a frame.
pub fn encode_snapshot_part(data: &[u8], out: &mut BytesMut) {
    out.reserve(5 + data.len());
    out.put_u32_le(1 + data.len() as u32);
    out.put_u8(19);
    out.put_slice(data);
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_strs(out: &mut BytesMut, v: &[String]) {
    out.put_u32_le(v.len() as u32);
    for s in v {
        put_str(out, s);
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn put_entry(out: &mut BytesMut, e: &Entry) {
    out.put_u64_le(e.term);
    out.put_u64_le(e.index);
    out.put_u8(match e.kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    });
    put_bytes(out, &e.data);
}

fn put_ids(out: &mut BytesMut, ids: &[u64]) {
    out.put_u32_le(ids.len() as u32);
    for id in ids {
        out.put_u64_le(*id);
    }
}

fn put_message(out: &mut BytesMut, m: &Message) {
    out.put_u64_le(m.from);
    out.put_u64_le(m.to);
    out.put_u64_le(m.term);
    match &m.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => {
            out.put_u8(1);
            out.put_u64_le(*last_index);
            out.put_u64_le(*last_term);
        }
        MessageBody::PreVoteResponse { granted } => {
            out.put_u8(2);
            out.put_u8(*granted as u8);
        }
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            out.put_u8(3);
            out.put_u64_le(*last_index);
            out.put_u64_le(*last_term);
            out.put_u8(*transfer as u8);
        }
        MessageBody::VoteResponse { granted } => {
            out.put_u8(4);
            out.put_u8(*granted as u8);
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            out.put_u8(5);
            out.put_u64_le(*prev_index);
            out.put_u64_le(*prev_term);
            out.put_u64_le(*commit);
            out.put_u32_le(entries.len() as u32);
            for e in entries {
                put_entry(out, e);
            }
        }
        MessageBody::AppendResponse {
            rejected,
            match_index,
        } => {
            out.put_u8(6);
            out.put_u64_le(*match_index);
            match rejected {
                None => out.put_u8(0),
                Some((at, hint)) => {
                    out.put_u8(1);
                    out.put_u64_le(*at);
                    out.put_u64_le(hint.index);
                    out.put_u64_le(hint.term);
                }
            }
        }
        MessageBody::Heartbeat { commit, read_seq } => {
            out.put_u8(7);
            out.put_u64_le(*commit);
            out.put_u64_le(*read_seq);
        }
        MessageBody::HeartbeatResponse { read_seq } => {
            out.put_u8(8);
            out.put_u64_le(*read_seq);
        }
        MessageBody::InstallSnapshot { snapshot } => {
            out.put_u8(9);
            out.put_u64_le(snapshot.meta.index);
            out.put_u64_le(snapshot.meta.term);
            put_ids(out, &snapshot.meta.conf_state.voters);
            put_ids(out, &snapshot.meta.conf_state.learners);
            put_bytes(out, &snapshot.data);
        }
        MessageBody::TimeoutNow => out.put_u8(10),
        MessageBody::ReadIndex { ctx } => {
            out.put_u8(11);
            put_bytes(out, ctx);
        }
        MessageBody::ReadIndexResponse { ctx, index } => {
            out.put_u8(12);
            put_bytes(out, ctx);
            match index {
                None => out.put_u8(0),
                Some(i) => {
                    out.put_u8(1);
                    out.put_u64_le(*i);
                }
            }
        }
    }
}

// ---- decoding -------------------------------------------------------------------------

/// If `buf` starts with a whole frame, remove it and return its body (kind + fields).
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    split_frame_within(buf, MAX_FRAME)
}

/// [`split_frame`] for frames of at most `max` bytes; a longer announced length is an error
/// as soon as the 4 length bytes are there, before anything is reserved for it.
pub fn split_frame_within(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(DecodeError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve((4 + len - buf.len()).min(MAX_RESERVE_AHEAD));
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Decode one frame body as returned by [`split_frame`].
pub fn decode(body: Bytes) -> Result<Frame, DecodeError> {
    let mut r = Reader(body);
    let frame = match r.u8()? {
        1 => Frame::Hello(Hello {
            version: r.u64()?,
            cluster_id: r.u64()?,
            from: r.u64()?,
            to: r.u64()?,
            incarnation: r.u64()?,
            name: r.string()?,
            client_urls: r.strings()?,
        }),
        2 => Frame::HelloReply(HelloReply::Accepted {
            name: r.string()?,
            client_urls: r.strings()?,
            commit: r.u64()?,
            // Absent from builds older than the feature bits.
            features: if r.0.has_remaining() { r.u64()? } else { 0 },
        }),
        3 => Frame::HelloReply(HelloReply::Refused {
            kind: RefusalKind::Other,
            reason: r.string()?,
        }),
        7 => Frame::HelloReply(HelloReply::Refused {
            kind: RefusalKind::from_code(r.u8()?),
            reason: r.string()?,
        }),
        4 => Frame::Raft(r.message()?),
        5 => Frame::Forward {
            req_id: r.u64()?,
            data: r.bytes()?,
        },
        6 => {
            let req_id = r.u64()?;
            let result = match r.u8()? {
                0 => Ok((r.u64()?, r.u64()?)),
                1 => Err(ForwardError::NotLeader),
                2 => Err(ForwardError::TooManyRequests),
                t => return Err(DecodeError::UnknownTag("forward result", t)),
            };
            Frame::ForwardResult { req_id, result }
        }
        8 => Frame::Change {
            req_id: r.u64()?,
            change: r.bytes()?,
        },
        9 => {
            let req_id = r.u64()?;
            let result = match r.u8()? {
                0 => Ok(()),
                1 => Err(ChangeRefusal {
                    retry: r.u8()? != 0,
                    code: r.u32()? as i32,
                    message: r.string()?,
                }),
                t => return Err(DecodeError::UnknownTag("change result", t)),
            };
            Frame::ChangeResult { req_id, result }
        }
        10 => Frame::Ping { sent: r.u64()? },
        11 => Frame::Pong { sent: r.u64()? },
        12 => Frame::JoinQuery {
            peer_urls: r.strings()?,
        },
        13 => Frame::JoinAnswer {
            result: match r.u8()? {
                0 => Ok(JoinFound {
                    cluster_id: r.u64()?,
                    member_id: r.u64()?,
                    base: r.bytes()?,
                    current: r.bytes()?,
                }),
                1 => Err(r.string()?),
                t => return Err(DecodeError::UnknownTag("join answer", t)),
            },
        },
        14 => Frame::HashKv {
            req_id: r.u64()?,
            revision: r.u64()? as i64,
        },
        15 => {
            let req_id = r.u64()?;
            let result = match r.u8()? {
                0 => Ok(PeerHashKv {
                    member_id: r.u64()?,
                    hash: r.u32()?,
                    hash_revision: r.u64()? as i64,
                    compact_revision: r.u64()? as i64,
                    current_revision: r.u64()? as i64,
                }),
                1 => Err(r.string()?),
                t => return Err(DecodeError::UnknownTag("hash kv result", t)),
            };
            Frame::HashKvResult { req_id, result }
        }
        16 => Frame::AddMe {
            name: r.string()?,
            peer_urls: r.strings()?,
        },
        17 => Frame::AddMeAnswer {
            result: match r.u8()? {
                0 => Ok(()),
                1 => Err(r.string()?),
                t => return Err(DecodeError::UnknownTag("add-me answer", t)),
            },
        },
        18 => Frame::SnapshotHead {
            message: r.message()?,
            len: r.u64()?,
        },
        19 => Frame::SnapshotPart {
            data: std::mem::take(&mut r.0),
        },
        t => return Err(DecodeError::UnknownTag("frame", t)),
    };
    Ok(frame)
}

/// A bounds-checked cursor over one frame body.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? != 0)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadString)
    }

    /// A count of items each at least `min_item` bytes long: refuses counts the remaining
    /// bytes cannot hold, so a hostile count cannot make us allocate wildly.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        self.need(n.saturating_mul(min_item))?;
        Ok(n)
    }

    fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.string()).collect()
    }

    fn ids(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u64()).collect()
    }

    fn entry(&mut self) -> Result<Entry, DecodeError> {
        let term = self.u64()?;
        let index = self.u64()?;
        let kind = match self.u8()? {
            0 => EntryKind::Normal,
            1 => EntryKind::Noop,
            2 => EntryKind::ConfChange,
            t => return Err(DecodeError::UnknownTag("entry kind", t)),
        };
        Ok(Entry {
            term,
            index,
            kind,
            data: self.bytes()?,
        })
    }

    fn message(&mut self) -> Result<Message, DecodeError> {
        let from = self.u64()?;
        let to = self.u64()?;
        let term = self.u64()?;
        let body = match self.u8()? {
            1 => MessageBody::PreVote {
                last_index: self.u64()?,
                last_term: self.u64()?,
            },
            2 => MessageBody::PreVoteResponse {
                granted: self.bool()?,
            },
            3 => MessageBody::Vote {
                last_index: self.u64()?,
                last_term: self.u64()?,
                transfer: self.bool()?,
            },
            4 => MessageBody::VoteResponse {
                granted: self.bool()?,
            },
            5 => {
                let prev_index = self.u64()?;
                let prev_term = self.u64()?;
                let commit = self.u64()?;
                let n = self.count(21)?;
                let entries = (0..n).map(|_| self.entry()).collect::<Result<_, _>>()?;
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
            6 => {
                let match_index = self.u64()?;
                let rejected = match self.u8()? {
                    0 => None,
                    1 => Some((
                        self.u64()?,
                        RejectHint {
                            index: self.u64()?,
                            term: self.u64()?,
                        },
                    )),
                    t => return Err(DecodeError::UnknownTag("append rejection", t)),
                };
                MessageBody::AppendResponse {
                    rejected,
                    match_index,
                }
            }
            7 => MessageBody::Heartbeat {
                commit: self.u64()?,
                read_seq: self.u64()?,
            },
            8 => MessageBody::HeartbeatResponse {
                read_seq: self.u64()?,
            },
            9 => {
                let index = self.u64()?;
                let term = self.u64()?;
                let voters = self.ids()?;
                let learners = self.ids()?;
                let data = self.bytes()?;
                MessageBody::InstallSnapshot {
                    snapshot: Snapshot {
                        meta: SnapshotMeta {
                            index,
                            term,
                            conf_state: ConfState { voters, learners },
                        },
                        data,
                    },
                }
            }
            10 => MessageBody::TimeoutNow,
            11 => MessageBody::ReadIndex { ctx: self.bytes()? },
            12 => {
                let ctx = self.bytes()?;
                let index = match self.u8()? {
                    0 => None,
                    1 => Some(self.u64()?),
                    t => return Err(DecodeError::UnknownTag("read index", t)),
                };
                MessageBody::ReadIndexResponse { ctx, index }
            }
            t => return Err(DecodeError::UnknownTag("message", t)),
        };
        Ok(Message {
            from,
            to,
            term,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, data: &'static [u8]) -> Entry {
        Entry {
            term: 3,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data),
        }
    }

    fn samples() -> Vec<Frame> {
        let msg = |body| {
            Frame::Raft(Message {
                from: 1,
                to: 2,
                term: 7,
                body,
            })
        };
        vec![
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                cluster_id: 9,
                from: 1,
                to: 2,
                incarnation: 42,
                name: "m1".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
            }),
            Frame::HelloReply(HelloReply::Accepted {
                name: "m2".into(),
                client_urls: vec![],
                commit: 5,
                features: FEATURES,
            }),
            Frame::Ping { sent: 123_456 },
            Frame::Pong { sent: u64::MAX },
            Frame::JoinQuery {
                peer_urls: vec!["http://a:1".into(), "http://b:2".into()],
            },
            Frame::JoinAnswer {
                result: Ok(JoinFound {
                    cluster_id: 3,
                    member_id: 4,
                    base: Bytes::from_static(b"base"),
                    current: Bytes::new(),
                }),
            },
            Frame::JoinAnswer {
                result: Err("no such member".into()),
            },
            Frame::AddMe {
                name: "raftkv-3".into(),
                peer_urls: vec!["http://raftkv-3:2380".into()],
            },
            Frame::AddMeAnswer { result: Ok(()) },
            Frame::AddMeAnswer {
                result: Err("not a member of the StatefulSet".into()),
            },
            Frame::SnapshotHead {
                message: Message {
                    from: 1,
                    to: 4,
                    term: 7,
                    body: MessageBody::InstallSnapshot {
                        snapshot: Snapshot {
                            meta: SnapshotMeta {
                                index: 100,
                                term: 4,
                                conf_state: ConfState {
                                    voters: vec![1, 2, 3],
                                    learners: vec![4],
                                },
                            },
                            data: Bytes::new(),
                        },
                    },
                },
                len: 3 << 30,
            },
            Frame::SnapshotPart {
                data: Bytes::from_static(b"part of an image"),
            },
            Frame::SnapshotPart { data: Bytes::new() },
            Frame::HashKv {
                req_id: 7,
                revision: 42,
            },
            Frame::HashKvResult {
                req_id: 7,
                result: Ok(PeerHashKv {
                    member_id: 0xabc,
                    hash: 0xdead_beef,
                    hash_revision: 42,
                    compact_revision: 3,
                    current_revision: 50,
                }),
            },
            Frame::HashKvResult {
                req_id: 8,
                result: Err("mvcc: required revision is a future revision".into()),
            },
            Frame::HelloReply(HelloReply::Refused {
                kind: RefusalKind::IdentityWiped,
                reason: "wiped".into(),
            }),
            Frame::HelloReply(HelloReply::Refused {
                kind: RefusalKind::Unavailable,
                reason: String::new(),
            }),
            msg(MessageBody::PreVote {
                last_index: 4,
                last_term: 2,
            }),
            msg(MessageBody::PreVoteResponse { granted: true }),
            msg(MessageBody::Vote {
                last_index: 4,
                last_term: 2,
                transfer: true,
            }),
            msg(MessageBody::VoteResponse { granted: false }),
            msg(MessageBody::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![
                    entry(5, b"x"),
                    Entry {
                        kind: EntryKind::Noop,
                        ..entry(6, b"")
                    },
                ],
                commit: 4,
            }),
            msg(MessageBody::AppendResponse {
                rejected: None,
                match_index: 6,
            }),
            msg(MessageBody::AppendResponse {
                rejected: Some((5, RejectHint { index: 3, term: 1 })),
                match_index: 0,
            }),
            msg(MessageBody::Heartbeat {
                commit: 6,
                read_seq: 11,
            }),
            msg(MessageBody::HeartbeatResponse { read_seq: 11 }),
            msg(MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 100,
                        term: 4,
                        conf_state: ConfState {
                            voters: vec![1, 2, 3],
                            learners: vec![4],
                        },
                    },
                    data: Bytes::from_static(b"image"),
                },
            }),
            msg(MessageBody::TimeoutNow),
            msg(MessageBody::ReadIndex {
                ctx: Bytes::from_static(b"c"),
            }),
            msg(MessageBody::ReadIndexResponse {
                ctx: Bytes::from_static(b"c"),
                index: Some(9),
            }),
            msg(MessageBody::ReadIndexResponse {
                ctx: Bytes::new(),
                index: None,
            }),
            Frame::Forward {
                req_id: 77,
                data: Bytes::from_static(b"req"),
            },
            Frame::ForwardResult {
                req_id: 77,
                result: Ok((10, 3)),
            },
            Frame::ForwardResult {
                req_id: 78,
                result: Err(ForwardError::NotLeader),
            },
            Frame::ForwardResult {
                req_id: 79,
                result: Err(ForwardError::TooManyRequests),
            },
            Frame::Change {
                req_id: 80,
                change: Bytes::from_static(b"cc"),
            },
            Frame::ChangeResult {
                req_id: 80,
                result: Ok(()),
            },
            Frame::ChangeResult {
                req_id: 81,
                result: Err(ChangeRefusal {
                    retry: false,
                    code: 5,
                    message: "etcdserver: member not found".into(),
                }),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_through_one_buffer() {
        let frames = samples();
        let mut buf = BytesMut::new();
        for f in &frames {
            encode(f, &mut buf);
        }
        let mut decoded = Vec::new();
        while let Some(body) = split_frame(&mut buf).unwrap() {
            decoded.push(decode(body).unwrap());
        }
        assert_eq!(decoded, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn an_acceptance_from_a_build_without_feature_bits_reads_as_no_features() {
        let mut old = BytesMut::new();
        old.put_u32_le(0);
        old.put_u8(2);
        put_str(&mut old, "m2");
        put_strs(&mut old, &["http://127.0.0.1:2379".to_string()]);
        old.put_u64_le(5);
        let len = (old.len() - 4) as u32;
        old[..4].copy_from_slice(&len.to_le_bytes());
        let body = split_frame(&mut old).unwrap().unwrap();
        assert_eq!(
            decode(body).unwrap(),
            Frame::HelloReply(HelloReply::Accepted {
                name: "m2".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
                commit: 5,
                features: 0,
            })
        );
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut whole = BytesMut::new();
        encode(&samples()[7], &mut whole);
        let mut buf = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(split_frame(&mut buf).unwrap(), None);
        buf.extend_from_slice(&whole[whole.len() - 1..]);
        assert!(split_frame(&mut buf).unwrap().is_some());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for f in samples() {
            let mut buf = BytesMut::new();
            encode(&f, &mut buf);
            let body = split_frame(&mut buf).unwrap().unwrap();
            // An acceptance without its feature bits is the older layout, and valid.
            let old_layout =
                matches!(f, Frame::HelloReply(HelloReply::Accepted { .. })).then(|| body.len() - 8);
            // A snapshot part is the rest of its frame (the frame's length, checked by
            // `split_frame`, delimits it): any cut after its kind is a shorter part.
            let whole_rest = matches!(f, Frame::SnapshotPart { .. });
            for cut in (0..body.len()).filter(|&c| Some(c) != old_layout && !(whole_rest && c > 0))
            {
                assert!(
                    decode(body.slice(..cut)).is_err(),
                    "{f:?} cut at {cut} decoded"
                );
            }
        }
    }

    #[test]
    fn an_announced_length_reserves_no_more_than_a_bounded_step() {
        // Before the handshake: a length above the handshake limit is refused at once.
        let mut buf = BytesMut::new();
        buf.put_u32_le((MAX_HANDSHAKE_FRAME + 1) as u32);
        assert!(matches!(
            split_frame_within(&mut buf, MAX_HANDSHAKE_FRAME),
            Err(DecodeError::TooLarge(n)) if n == MAX_HANDSHAKE_FRAME + 1
        ));
        // After it: a 1 GiB frame whose first bytes arrived holds a bounded reservation,
        // not the announced gigabyte.
        let mut buf = BytesMut::new();
        buf.put_u32_le(MAX_FRAME as u32);
        buf.put_slice(&[0; 100]);
        assert!(split_frame(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 2 * MAX_RESERVE_AHEAD,
            "reserved {} bytes for a frame of which 100 arrived",
            buf.capacity()
        );
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let mut buf = BytesMut::new();
        buf.put_u32_le(u32::MAX);
        assert!(matches!(
            split_frame(&mut buf),
            Err(DecodeError::TooLarge(_))
        ));
        // An Append claiming 4 billion entries in a few bytes.
        let mut body = BytesMut::new();
        body.put_u8(4);
        body.put_slice(&[0; 24]);
        body.put_u8(5);
        body.put_slice(&[0; 24]);
        body.put_u32_le(u32::MAX);
        assert_eq!(decode(body.freeze()), Err(DecodeError::Truncated));
        assert!(matches!(
            decode(Bytes::from_static(&[99])),
            Err(DecodeError::UnknownTag(..))
        ));
    }

    #[test]
    fn every_refusal_kind_round_trips_and_unknown_codes_are_transient() {
        let kinds = [
            RefusalKind::Other,
            RefusalKind::ProtocolVersion,
            RefusalKind::WrongCluster,
            RefusalKind::UnknownMember,
            RefusalKind::IdentityWiped,
            RefusalKind::Unavailable,
            RefusalKind::Removed,
        ];
        for kind in kinds {
            assert_eq!(RefusalKind::from_code(kind.code()), kind);
            let frame = Frame::HelloReply(HelloReply::Refused {
                kind,
                reason: format!("{kind:?}"),
            });
            let mut buf = BytesMut::new();
            encode(&frame, &mut buf);
            assert_eq!(decode(split_frame(&mut buf).unwrap().unwrap()), Ok(frame));
        }
        // Codes are distinct.
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());

        // A code from a newer peer: still a refusal, of the transient kind.
        let mut body = BytesMut::new();
        body.put_u8(7);
        body.put_u8(200);
        put_str(&mut body, "something new");
        assert_eq!(
            decode(body.freeze()),
            Ok(Frame::HelloReply(HelloReply::Refused {
                kind: RefusalKind::Other,
                reason: "something new".into(),
            }))
        );
        // The first version's refusal (kind 3, no code) still decodes, as transient.
        let mut body = BytesMut::new();
        body.put_u8(3);
        put_str(&mut body, "member 2 lost its data dir");
        assert_eq!(
            decode(body.freeze()),
            Ok(Frame::HelloReply(HelloReply::Refused {
                kind: RefusalKind::Other,
                reason: "member 2 lost its data dir".into(),
            }))
        );
    }
}
