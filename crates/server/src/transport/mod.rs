//! Peer transport: how members carry Raft messages and forwarded proposals to each other.
//!
//! Each member dials every other member once and keeps that TCP connection for its own
//! outgoing traffic; it receives on the connections others dial to it. So a pair of
//! members shares two connections, one per direction, and ordering per direction is the
//! order of sending (which the forwarding protocol relies on).
//!
//! * **Handshake.** The dialler's first frame is a [`Hello`] naming the cluster, both
//!   member IDs and the dialler's *incarnation* (a random number fixed when its data dir
//!   was created). The acceptor refuses a wrong cluster, an unknown member, or a known
//!   member whose incarnation changed: that member lost its data dir and must not rejoin
//!   under its old identity (it may have voted or acknowledged entries it no longer has).
//!   A refusal carries a [`RefusalKind`]: the dialler stops its member on
//!   `IdentityWiped` ([`PeerEvent::IdentityRefused`]) and retries on any other kind. A new
//!   member's incarnation is written to disk (on a blocking thread, not a runtime worker)
//!   before it is admitted; if that fails it is refused as `Unavailable` and retries.
//! * **Direct writes, batching and pipelining.** The sender (the node thread) encodes the
//!   frames of one `Ready` for a peer into one buffer and writes it straight into that peer's
//!   socket, non-blocking. Why: handing frames to a tokio task cost a thread wake-up per hop
//!   (tens of µs on the path of every write, twice: the leader's Append and the follower's
//!   acknowledgement). Only what the socket does not take at once goes to a backlog, which
//!   the connection's task writes; while a backlog exists every sender appends to it, so
//!   bytes leave in the order they were sent. Nobody waits for replies (Raft's own flow
//!   control bounds what is in flight).
//! * **TLS.** An `https://` peer URL is dialled over TLS (`crate::tls`), and a listener
//!   whose URL is `https://` accepts only TLS. The TLS session lives in the connection task,
//!   so on a TLS connection every send goes through the backlog (one task wake-up per
//!   batch) instead of a direct socket write.
//! * **Membership.** The peers are the members of the replicated member list: the node
//!   thread adds one ([`Transport::add_peer`]) as soon as a change adding it is in its log
//!   (the leader must reach a new member before the change can commit), and drops one
//!   ([`Transport::remove_peer`]) once its removal is applied. A member whose peer URLs
//!   changed (`MemberUpdate`, applied) is dialled afresh at the new ones
//!   ([`Transport::set_peer_urls`]). A removed id stays in the
//!   [`PeerSet`] for good: its handshakes are refused with [`RefusalKind::Removed`], which
//!   stops it ([`PeerEvent::Removed`]), and its open connections are closed, so a removed
//!   member cannot disturb the others (etcd's transport keeps the same set).
//! * **Snapshots in parts.** An `InstallSnapshot` goes to a peer that advertises
//!   [`codec::FEATURE_SNAPSHOT_PARTS`] as a head and 1 MiB parts ([`snapshot_parts`]),
//!   framed by the connection task as the socket drains, in order with everything else sent
//!   to that peer: frames sent while a snapshot is on its way wait behind it. At most one
//!   snapshot per peer is queued or on its way; another is dropped (Raft sends it again if
//!   it is still needed). The image, shared with the Raft core, is never copied whole.
//! * **Failures.** Connect errors, DNS names that do not resolve yet and broken
//!   connections are retried with capped exponential backoff, forever. Messages sent
//!   while a peer is unreachable are dropped: Raft retransmits what matters.

pub mod codec;
pub mod hash_kv;
mod incarnations;
pub mod join_gate;
mod snapshot_parts;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use raft::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
#[cfg(test)]
use tokio::sync::mpsc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use codec::{ChangeRefusal, ForwardError, Frame, Hello, HelloReply, JoinFound, RefusalKind};
pub use incarnations::{own_incarnation, Incarnations, Refusal};

/// Bytes a peer's backlog may hold before further frames are dropped (Raft's in-flight
/// limits keep a healthy peer far below this; a stuck one must not eat the memory).
const MAX_BACKLOG: usize = 64 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// An accepted connection's read buffer, and the most it keeps between frames.
const READ_BUFFER: usize = 64 << 10;
const RETAINED_READ_BUFFER: usize = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a connection probes its peer's round-trip time (the first probe goes out as
/// soon as the connection is up). etcd probes every few seconds too; a probe is 13 bytes.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What the transport hands to the node.
#[derive(Debug)]
pub enum PeerEvent {
    /// A frame from `from` (already checked to come from a member of our cluster).
    Frame { from: u64, frame: Frame },
    /// `peer` refused our handshake for a reason that may pass (it is unreachable for us
    /// for now, cannot record us yet, is misconfigured, ...): the dialler keeps retrying.
    Refused { peer: u64, reason: String },
    /// `peer` says our identity is invalid: it knows our member ID under another
    /// incarnation, so our data dir was wiped. This member must stop; it may only come back
    /// under a new member ID.
    IdentityRefused { peer: u64, reason: String },
    /// `peer` says this member was removed from the cluster: it must stop for good.
    Removed { peer: u64 },
    /// Our connection to `peer` is up: frames sent to it now reach it.
    Connected { peer: u64 },
    /// Our connection to `peer` broke; frames sent to it are dropped until it is back.
    Disconnected { peer: u64 },
}

/// Where received frames go.
pub type Sink = Arc<dyn Fn(PeerEvent) + Send + Sync>;

/// How our connection to a peer stands, and what its handshake reply said. (The reply
/// also carries the peer's name and client URLs, for builds that listed members from it;
/// they are not kept: members publish them through the log, `crate::publish`.)
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub connected: bool,
    /// Since when our connection has been up (`None` while down): etcd's strict
    /// reconfiguration check counts only peers connected for a while.
    pub connected_since: Option<std::time::Instant>,
    /// The peer's commit index when we connected (used by the wiped-member check).
    pub commit: u64,
    /// The peer answers [`codec::Frame::HashKv`] ([`codec::FEATURE_HASHKV`]).
    pub hash_kv: bool,
    /// Every feature bit the peer's last handshake reply advertised (`codec::FEATURE_*`).
    pub features: u64,
}

/// Identity of this member as the transport presents it.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    pub cluster_id: u64,
    pub member_id: u64,
    pub incarnation: u64,
    pub name: String,
    pub client_urls: Vec<String>,
}

/// The ids a member talks to, shared by the dialling and the accepting side: the members
/// it knows of, and the ids removed from the cluster for good.
#[derive(Debug, Default)]
pub struct PeerSet {
    inner: Mutex<PeerSetInner>,
}

#[derive(Debug, Default)]
struct PeerSetInner {
    members: BTreeSet<u64>,
    removed: BTreeSet<u64>,
}

impl PeerSet {
    pub fn new(members: impl IntoIterator<Item = u64>) -> PeerSet {
        PeerSet {
            inner: Mutex::new(PeerSetInner {
                members: members.into_iter().collect(),
                removed: BTreeSet::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PeerSetInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, id: u64) -> bool {
        self.lock().members.contains(&id)
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.lock().removed.contains(&id)
    }

    /// A member added (never one removed before: ids are not reused).
    pub fn add(&self, id: u64) {
        let mut s = self.lock();
        if !s.removed.contains(&id) {
            s.members.insert(id);
        }
    }

    /// A member removed, for good.
    pub fn remove(&self, id: u64) {
        let mut s = self.lock();
        s.members.remove(&id);
        s.removed.insert(id);
    }
}

/// What starting a dialler for a peer added at runtime needs.
struct Dialling {
    local: LocalIdentity,
    sink: Sink,
    shutdown: CancellationToken,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The runtime the diallers run on (peers are added from the node thread too).
    runtime: tokio::runtime::Handle,
    /// Stops each peer's dialler (and its connection) when the peer is removed or its
    /// peer URLs change, with the URLs it dials.
    stops: HashMap<u64, (CancellationToken, Vec<String>)>,
}

/// The sending side: one outbox per peer, shared with that peer's connection task.
#[derive(Clone)]
pub struct Transport {
    outboxes: Arc<RwLock<HashMap<u64, Arc<Outbox>>>>,
    directory: Arc<Mutex<HashMap<u64, PeerInfo>>>,
    peers: Arc<PeerSet>,
    dialling: Arc<Mutex<Dialling>>,
    /// Callers waiting for a peer's HashKV answer ([`Transport::hash_kv`]).
    hash_waiters: Arc<hash_kv::Waiters>,
}

/// One peer's outgoing side.
#[derive(Default)]
struct Outbox {
    state: Mutex<OutState>,
    /// Wakes the connection task when the backlog gained bytes.
    wake: Notify,
}

#[derive(Default)]
struct OutState {
    /// A connection is up: frames are written to `direct` or queued in `backlog`.
    up: bool,
    /// While a plain TCP connection is up: a non-blocking handle on its socket (a duplicate of the
    /// connection task's descriptor) that senders write to directly.
    direct: Option<std::net::TcpStream>,
    /// Encoded frames the connection task must write before anything else may be.
    backlog: BytesMut,
    /// The connection task holds bytes taken from the backlog and not yet written: senders
    /// must append to the backlog too.
    writing: bool,
    /// The peer takes snapshots in parts ([`codec::FEATURE_SNAPSHOT_PARTS`]).
    snapshot_parts: bool,
    /// A snapshot the connection task sends in parts once `backlog` is written (and is
    /// sending, while `writing`).
    snapshot: Option<snapshot_parts::Outgoing>,
    /// Frames sent after `snapshot`: they become the backlog once its last part is written.
    after: BytesMut,
}

impl OutState {
    /// Forget everything queued (the connection is new, or gone).
    fn clear_queued(&mut self) {
        self.backlog.clear();
        self.snapshot = None;
        self.after.clear();
        self.writing = false;
    }
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write `bytes` (whole frames) now if the socket takes them, else queue the rest for
    /// the connection task. Dropped when no connection is up or the backlog is full.
    fn send_bytes(&self, peer: u64, bytes: &[u8]) {
        let mut st = self.lock();
        if !st.up {
            debug!(
                peer = format_args!("{peer:x}"),
                "no connection to peer; dropping frames"
            );
            return;
        }
        crate::metrics::metrics().peer_sent(peer, bytes.len());
        let mut sent = 0;
        if let Some(sock) = st
            .direct
            .as_ref()
            .filter(|_| !st.writing && st.backlog.is_empty() && st.snapshot.is_none())
        {
            let mut sock: &std::net::TcpStream = sock;
            while sent < bytes.len() {
                match sock.write(&bytes[sent..]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // The connection is broken; its task notices on its read half and
                        // reconnects. Nothing more may go out on this socket.
                        debug!(peer = format_args!("{peer:x}"), error = %e, "peer write failed");
                        st.direct = None;
                        st.up = false;
                        return;
                    }
                }
            }
            if sent == bytes.len() {
                return;
            }
        }
        // A frame already partly written must be completed, whatever the backlog holds.
        if sent == 0 && st.backlog.len() + st.after.len() + bytes.len() > MAX_BACKLOG {
            debug!(
                peer = format_args!("{peer:x}"),
                "peer backlog full; dropping frames"
            );
            return;
        }
        // Behind a snapshot on its way, frames wait for its last part (`sent` is 0 then:
        // no direct write happened).
        let queue = if st.snapshot.is_some() {
            &mut st.after
        } else {
            &mut st.backlog
        };
        queue.extend_from_slice(&bytes[sent..]);
        drop(st);
        self.wake.notify_one();
    }

    /// Queue `message` (an `InstallSnapshot`) to be sent in parts by the connection task,
    /// after everything sent before it. Dropped when no connection is up or another snapshot
    /// is queued or on its way (Raft sends it again if it is still needed).
    fn send_snapshot(&self, peer: u64, outgoing: snapshot_parts::Outgoing) {
        let mut st = self.lock();
        if !st.up {
            debug!(
                peer = format_args!("{peer:x}"),
                "no connection to peer; dropping a snapshot"
            );
            return;
        }
        if st.snapshot.is_some() {
            debug!(
                peer = format_args!("{peer:x}"),
                "a snapshot is already on its way to this peer; dropping another"
            );
            return;
        }
        crate::metrics::metrics().peer_sent(peer, outgoing.len());
        debug!(
            peer = format_args!("{peer:x}"),
            bytes = outgoing.len(),
            "sending a snapshot in parts"
        );
        st.snapshot = Some(outgoing);
        drop(st);
        self.wake.notify_one();
    }

    /// The next bytes the connection task must write, if any: the backlog, else the next
    /// frame of the snapshot (then the frames that waited behind it become the backlog).
    /// Marks the task as writing while it has some.
    fn next_to_write(&self) -> Option<BytesMut> {
        let mut st = self.lock();
        loop {
            if !st.backlog.is_empty() {
                st.writing = true;
                return Some(st.backlog.split());
            }
            if let Some(snapshot) = st.snapshot.as_mut() {
                let mut frame = BytesMut::new();
                if snapshot.next_frame(&mut frame) {
                    st.writing = true;
                    return Some(frame);
                }
                st.snapshot = None;
                let after = std::mem::take(&mut st.after);
                st.backlog = after;
                continue;
            }
            st.writing = false;
            return None;
        }
    }
}

impl Transport {
    /// Start one dialling task per peer (`peers`: member id → peer URLs). Must be called
    /// inside a tokio runtime.
    pub fn start(
        local: LocalIdentity,
        peers: &[(u64, Vec<String>)],
        sink: Sink,
        shutdown: CancellationToken,
    ) -> Transport {
        Self::start_with_tls(local, peers, sink, shutdown, None)
    }

    /// [`Transport::start`], dialling `https://` peer URLs with `tls`.
    pub fn start_with_tls(
        local: LocalIdentity,
        peers: &[(u64, Vec<String>)],
        sink: Sink,
        shutdown: CancellationToken,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Transport {
        let set = PeerSet::new(peers.iter().map(|(id, _)| *id).chain([local.member_id]));
        let t = Transport {
            outboxes: Arc::default(),
            directory: Arc::default(),
            hash_waiters: Arc::default(),
            peers: Arc::new(set),
            dialling: Arc::new(Mutex::new(Dialling {
                local,
                sink,
                shutdown,
                tls,
                runtime: tokio::runtime::Handle::current(),
                stops: HashMap::new(),
            })),
        };
        for (id, urls) in peers {
            t.add_peer(*id, urls);
        }
        t
    }

    /// The set the acceptor checks diallers against ([`Acceptor::members`]).
    pub fn peer_set(&self) -> Arc<PeerSet> {
        self.peers.clone()
    }

    /// Start talking to member `id` at `urls` (a no-op if it is already a peer, is this
    /// member, or was removed). The dialler runs on the runtime the transport started on.
    pub fn add_peer(&self, id: u64, urls: &[String]) {
        let mut d = self.dialling.lock().unwrap_or_else(|p| p.into_inner());
        if id == d.local.member_id || d.stops.contains_key(&id) || self.peers.is_removed(id) {
            return;
        }
        if urls.is_empty() {
            return;
        }
        self.peers.add(id);
        let outbox = Arc::new(Outbox::default());
        let dialer = Dialer {
            local: d.local.clone(),
            peer: id,
            urls: urls.to_vec(),
            outbox: outbox.clone(),
            sink: d.sink.clone(),
            directory: self.directory.clone(),
            tls: d.tls.clone(),
            probe: false,
            snapshot_parts: false,
            hash_waiters: self.hash_waiters.clone(),
        };
        let stop = d.shutdown.child_token();
        d.stops.insert(id, (stop.clone(), urls.to_vec()));
        self.outboxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, outbox);
        let task = async move {
            tokio::select! {
                _ = dialer.run() => {}
                _ = stop.cancelled() => {}
            }
        };
        d.runtime.spawn(task);
    }

    /// Talk to member `id` at `urls` from now on (`MemberUpdate`, or a snapshot's member
    /// list): a peer dialled at other URLs is dialled afresh at these (its connection to
    /// the old ones ends, and the node hears it lost the peer until the new one is up); an
    /// unknown peer is added as by [`Transport::add_peer`]; the same URLs change nothing.
    pub fn set_peer_urls(&self, id: u64, urls: &[String]) {
        let mut sorted = urls.to_vec();
        sorted.sort();
        let old = {
            let mut d = self.dialling.lock().unwrap_or_else(|p| p.into_inner());
            let same = d.stops.get(&id).map(|(_, dialled)| {
                let mut dialled = dialled.clone();
                dialled.sort();
                dialled == sorted
            });
            match same {
                Some(true) => return,
                Some(false) if !urls.is_empty() => d.stops.remove(&id),
                _ => None,
            }
        };
        if let Some((stop, dialled)) = old {
            info!(
                peer = format_args!("{id:x}"),
                from = %dialled.join(","),
                to = %urls.join(","),
                "peer URLs changed; redialling"
            );
            stop.cancel();
            self.outboxes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let was_connected = self
                .directory
                .lock()
                .map(|mut d| {
                    d.get_mut(&id).is_some_and(|p| {
                        let was = p.connected;
                        p.connected = false;
                        p.connected_since = None;
                        was
                    })
                })
                .unwrap_or(false);
            if was_connected {
                let sink = self
                    .dialling
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sink
                    .clone();
                sink(PeerEvent::Disconnected { peer: id });
            }
        }
        self.add_peer(id, urls);
    }

    /// Stop talking to member `id` for good: its dialler and connection end, and its
    /// handshakes and frames are refused from now on.
    pub fn remove_peer(&self, id: u64) {
        self.peers.remove(id);
        let stop = self
            .dialling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stops
            .remove(&id);
        if let Some((stop, _)) = stop {
            stop.cancel();
        }
        self.outboxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Ok(mut d) = self.directory.lock() {
            d.remove(&id);
        }
    }

    /// Send `frame` to `to`. Never blocks; drops the frame if the peer is unknown or not
    /// connected, or its backlog is full (Raft tolerates lost messages).
    pub fn send(&self, to: u64, frame: Frame) {
        let o = self
            .outboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .cloned();
        if let Some(o) = o {
            if let Some((ev, i)) = probe_point(&frame, "tx_append", "tx_ack") {
                crate::node::probe::mark(ev, i);
            }
            let mut buf = BytesMut::new();
            codec::encode(&frame, &mut buf);
            o.send_bytes(to, &buf);
        }
    }

    /// Send Raft messages, each to its `to`: one write per peer for all of its messages.
    pub fn send_raft(&self, msgs: &[Message]) {
        let mut buf = BytesMut::new();
        let outboxes = self.outboxes.read().unwrap_or_else(|p| p.into_inner());
        for (&peer, o) in outboxes.iter() {
            buf.clear();
            let mut probed = None;
            let parts = o.lock().snapshot_parts;
            for m in msgs.iter().filter(|m| m.to == peer) {
                if parts {
                    if let Some(outgoing) = snapshot_parts::Outgoing::new(m) {
                        // In order: what came before the snapshot goes first.
                        if !buf.is_empty() {
                            o.send_bytes(peer, &buf);
                            buf.clear();
                        }
                        o.send_snapshot(peer, outgoing);
                        continue;
                    }
                }
                probed = probed.or(probe_point_raft(m, "tx_append", "tx_ack"));
                codec::encode_raft(m, &mut buf);
            }
            if !buf.is_empty() {
                o.send_bytes(peer, &buf);
                if let Some((ev, i)) = probed {
                    crate::node::probe::mark(ev, i);
                }
            }
        }
    }

    /// Whether our connection to `peer` is up right now.
    pub fn is_connected(&self, peer: u64) -> bool {
        self.directory
            .lock()
            .map(|d| d.get(&peer).is_some_and(|p| p.connected))
            .unwrap_or(false)
    }

    /// Whether every other member of the configuration advertised `feature` in its last
    /// handshake reply. A member never reached counts as one that does not: a new kind of
    /// log entry waits until every replica is known to apply it.
    pub fn every_peer_advertises(&self, feature: u64) -> bool {
        let me = self
            .dialling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .local
            .member_id;
        let members = self.peers.lock().members.clone();
        let directory = self.directory.lock().unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .filter(|id| **id != me)
            .all(|id| directory.get(id).is_some_and(|p| p.features & feature != 0))
    }

    /// Every peer's connection state (and what its handshake reply said).
    pub fn directory(&self) -> HashMap<u64, PeerInfo> {
        self.directory.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Ask peer `to` for HashKV at `revision` over the peer connection
    /// ([`hash_kv`](self::hash_kv)). `None` when the peer cannot be asked this way (no
    /// connection, or a build that does not answer it); `Some(Err)` with the peer's error
    /// text, or when no answer came within `timeout`.
    pub async fn hash_kv(
        &self,
        to: u64,
        revision: i64,
        timeout: std::time::Duration,
    ) -> Option<Result<codec::PeerHashKv, String>> {
        let supported = self
            .directory
            .lock()
            .ok()
            .and_then(|d| d.get(&to).map(|p| p.connected && p.hash_kv))
            .unwrap_or(false);
        if !supported {
            return None;
        }
        let (req_id, answer) = self.hash_waiters.register();
        self.send(to, Frame::HashKv { req_id, revision });
        Some(match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the transport dropped the request".into()),
            Err(_) => {
                self.hash_waiters.forget(req_id);
                Err(format!("no answer within {timeout:?}"))
            }
        })
    }
}

/// Resolve and connect to a peer URL, with a TLS handshake for an `https://` one.
async fn open_stream(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<PeerStream> {
    open_stream_from(url, tls, None).await
}

/// [`open_stream`] from local address `source` when this host has it (else from whatever
/// address the system picks).
async fn open_stream_from(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<PeerStream> {
    let (is_tls, hostport) = match url.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("http://").unwrap_or(url)),
    };
    let hostport = hostport.trim_end_matches('/');
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_from(hostport, source))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    stream.set_nodelay(true)?;
    if !is_tls {
        return Ok(PeerStream::Plain(stream));
    }
    let Some(config) = tls else {
        anyhow::bail!("{url} is https:// but no peer TLS is configured");
    };
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| anyhow::anyhow!("{url}: bad host name for TLS: {e}"))?;
    let stream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))?
    .map_err(|e| anyhow::anyhow!("TLS handshake failed: {e}"))?;
    Ok(PeerStream::Tls(Box::new(stream)))
}

/// Connect to `hostport`, bound to `source` if that is an address of this host and of the
/// same family as the target; otherwise as the system chooses.
async fn connect_from(
    hostport: &str,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    if let Some(source) = source {
        for target in tokio::net::lookup_host(hostport).await? {
            if target.is_ipv4() != source.is_ipv4() {
                continue;
            }
            let socket = if source.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            if socket.bind(std::net::SocketAddr::new(source, 0)).is_ok() {
                return socket.connect(target).await;
            }
        }
    }
    TcpStream::connect(hostport).await
}

/// The address a joining member asks from: the host of its first advertised peer URL that
/// is an IP address, so that the members' join gate (`join_gate`) sees the host its URLs
/// name even on a machine with several addresses.
fn join_source(peer_urls: &[String]) -> Option<std::net::IpAddr> {
    peer_urls.iter().find_map(|u| {
        match url::Url::parse(u).ok()?.host()? {
            url::Host::Ipv4(ip) => Some(std::net::IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(std::net::IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        }
        .filter(|ip| !ip.is_unspecified())
    })
}

/// Ask the member at peer URL `url` which member of its cluster has `peer_urls`
/// ([`Frame::JoinQuery`]), from the address those URLs name ([`join_source`]). The outer
/// error is about reaching it; the inner one is its refusal (which says only that there is
/// no such member for this asker).
pub async fn ask_join(
    url: &str,
    peer_urls: &[String],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Result<JoinFound, String>> {
    async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        peer_urls: &[String],
    ) -> anyhow::Result<Result<JoinFound, String>> {
        let query = Frame::JoinQuery {
            peer_urls: peer_urls.to_vec(),
        };
        match send_and_read_reply(&mut stream, &query).await? {
            Some(Frame::JoinAnswer { result }) => Ok(result),
            other => anyhow::bail!("unexpected answer to a join query: {other:?}"),
        }
    }
    match open_stream_from(url, tls, join_source(peer_urls)).await? {
        PeerStream::Plain(s) => ask(s, peer_urls).await,
        PeerStream::Tls(s) => ask(*s, peer_urls).await,
    }
}

/// Ask the member at peer URL `url` to add this member (`name`, `peer_urls`) to its cluster
/// ([`Frame::AddMe`], `crate::auto_join`). The outer error is about reaching it; the inner
/// one is its refusal.
pub async fn ask_add(
    url: &str,
    name: &str,
    peer_urls: &[String],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Result<(), String>> {
    async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        name: &str,
        peer_urls: &[String],
    ) -> anyhow::Result<Result<(), String>> {
        let query = Frame::AddMe {
            name: name.to_string(),
            peer_urls: peer_urls.to_vec(),
        };
        match send_and_read_reply(&mut stream, &query).await? {
            Some(Frame::AddMeAnswer { result }) => Ok(result),
            other => anyhow::bail!("unexpected answer to an add-me request: {other:?}"),
        }
    }
    match open_stream_from(url, tls, join_source(peer_urls)).await? {
        PeerStream::Plain(s) => ask(s, name, peer_urls).await,
        PeerStream::Tls(s) => ask(*s, name, peer_urls).await,
    }
}

/// One peer's outgoing connection, re-established forever.
struct Dialer {
    local: LocalIdentity,
    peer: u64,
    urls: Vec<String>,
    outbox: Arc<Outbox>,
    sink: Sink,
    directory: Arc<Mutex<HashMap<u64, PeerInfo>>>,
    /// For `https://` URLs.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The peer's last acceptance said it answers round-trip probes.
    probe: bool,
    /// The peer's last acceptance said it takes snapshots in parts.
    snapshot_parts: bool,
    /// Where the peer's HashKV answers, which come back on this connection, are delivered.
    hash_waiters: Arc<hash_kv::Waiters>,
}

/// A dialled peer connection.
enum PeerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Dialer {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut attempt: u64 = 0;
        loop {
            let url = self.urls[(attempt as usize) % self.urls.len()].clone();
            attempt += 1;
            match self.connect(&url).await {
                Ok(stream) => {
                    backoff = BACKOFF_MIN;
                    info!(peer = format_args!("{:x}", self.peer), url = %url, "connected to peer");
                    let why = self.pump(stream).await;
                    self.set_connected(false);
                    info!(peer = format_args!("{:x}", self.peer), reason = %why, "peer connection lost");
                }
                Err(e) => {
                    // Quiet while a peer is simply not up yet; louder once it persists.
                    if attempt % 50 == 1 {
                        warn!(peer = format_args!("{:x}", self.peer), url = %url, error = %e, "cannot reach peer; retrying");
                    } else {
                        debug!(peer = format_args!("{:x}", self.peer), url = %url, error = %e, "cannot reach peer");
                    }
                }
            }
            // Back off; what is sent meanwhile is dropped (it would be stale).
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Resolve, connect, TLS handshake for an `https://` URL, then our handshake.
    async fn connect(&mut self, url: &str) -> anyhow::Result<PeerStream> {
        Ok(match open_stream(url, self.tls.clone()).await? {
            PeerStream::Plain(s) => PeerStream::Plain(self.hello(s).await?),
            PeerStream::Tls(s) => PeerStream::Tls(Box::new(self.hello(*s).await?)),
        })
    }

    /// Our handshake on a connected stream.
    async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
    ) -> anyhow::Result<S> {
        let hello = Frame::Hello(Hello {
            version: codec::PROTOCOL_VERSION,
            cluster_id: self.local.cluster_id,
            from: self.local.member_id,
            to: self.peer,
            incarnation: self.local.incarnation,
            name: self.local.name.clone(),
            client_urls: self.local.client_urls.clone(),
        });
        let reply = send_and_read_reply(&mut stream, &hello).await?;
        match reply {
            Some(Frame::HelloReply(HelloReply::Accepted {
                commit, features, ..
            })) => {
                self.probe = features & codec::FEATURE_PING != 0;
                self.snapshot_parts = features & codec::FEATURE_SNAPSHOT_PARTS != 0;
                if let Ok(mut d) = self.directory.lock() {
                    d.insert(
                        self.peer,
                        PeerInfo {
                            connected: true,
                            connected_since: Some(std::time::Instant::now()),
                            commit,
                            hash_kv: features & codec::FEATURE_HASHKV != 0,
                            features,
                        },
                    );
                }
                Ok(stream)
            }
            Some(Frame::HelloReply(HelloReply::Refused { kind, reason })) => {
                let peer = self.peer;
                (self.sink)(match kind {
                    RefusalKind::IdentityWiped => PeerEvent::IdentityRefused {
                        peer,
                        reason: reason.clone(),
                    },
                    RefusalKind::Removed => PeerEvent::Removed { peer },
                    _ => PeerEvent::Refused {
                        peer,
                        reason: reason.clone(),
                    },
                });
                anyhow::bail!("peer refused us ({kind:?}): {reason}")
            }
            other => anyhow::bail!("unexpected handshake reply {other:?}"),
        }
    }

    fn set_connected(&self, connected: bool) {
        if let Ok(mut d) = self.directory.lock() {
            let info = d.entry(self.peer).or_default();
            info.connected = connected;
            if !connected {
                info.connected_since = None;
            }
        }
        let peer = self.peer;
        (self.sink)(if connected {
            PeerEvent::Connected { peer }
        } else {
            PeerEvent::Disconnected { peer }
        });
    }

    /// Serve the connection until it breaks. Returns why.
    async fn pump(&mut self, stream: PeerStream) -> String {
        match stream {
            PeerStream::Plain(s) => self.pump_plain(s).await,
            PeerStream::Tls(s) => self.pump_tls(*s).await,
        }
    }

    /// Publish a TLS connection (senders queue to the backlog), then write the backlog
    /// whenever it has bytes, until the connection breaks. Returns why.
    async fn pump_tls(&mut self, stream: tokio_rustls::client::TlsStream<TcpStream>) -> String {
        self.publish(None);
        let _unpublish = Unpublish(&self.outbox);
        self.set_connected(true);
        let (rd, wr) = tokio::io::split(stream);
        self.write_backlog(rd, wr).await
    }

    /// Publish the connection for direct writes, then write the backlog whenever it has
    /// bytes, until the connection breaks. Returns why.
    async fn pump_plain(&mut self, stream: TcpStream) -> String {
        // A duplicate descriptor for the senders; it shares the socket's non-blocking mode.
        let (stream, direct) = match stream
            .into_std()
            .and_then(|s| Ok((s.try_clone()?, s)))
            .and_then(|(d, s)| Ok((TcpStream::from_std(s)?, d)))
        {
            Ok(x) => x,
            Err(e) => return format!("cannot share the connection: {e}"),
        };
        self.publish(Some(direct));
        let _unpublish = Unpublish(&self.outbox);
        // Only now do frames sent to this peer reach it: tell the node.
        self.set_connected(true);
        let (rd, wr) = stream.into_split();
        self.write_backlog(rd, wr).await
    }

    /// Mark the connection up, with the descriptor senders may write to directly (plain
    /// TCP) or none (TLS: every frame goes through the backlog).
    fn publish(&self, direct: Option<std::net::TcpStream>) {
        let mut st = self.outbox.lock();
        st.up = true;
        st.direct = direct;
        st.snapshot_parts = self.snapshot_parts;
        st.clear_queued();
    }

    /// Write the backlog to `wr` whenever it has bytes, until the connection breaks;
    /// returns why.
    async fn write_backlog<R, W>(&self, mut rd: R, mut wr: W) -> String
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut incoming = BytesMut::new();
        let mut probes = tokio::time::interval(PROBE_INTERVAL);
        probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = probes.tick(), if self.probe => {
                    let mut ping = BytesMut::new();
                    codec::encode(&Frame::Ping { sent: probe_clock() }, &mut ping);
                    self.outbox.send_bytes(self.peer, &ping);
                },
                _ = self.outbox.wake.notified() => {
                    while let Some(chunk) = self.outbox.next_to_write() {
                        if let Err(e) = wr.write_all(&chunk).await {
                            return e.to_string();
                        }
                    }
                    // A no-op on plain TCP; pushes out TLS records still buffered.
                    if let Err(e) = wr.flush().await {
                        return e.to_string();
                    }
                },
                // After the handshake the acceptor writes nothing but the answers to our
                // HashKV questions (`hash_kv`); anything else means the connection is bad.
                r = rd.read_buf(&mut incoming) => {
                    match r {
                        Ok(0) => return "closed by peer".into(),
                        Ok(_) => {}
                        Err(e) => return e.to_string(),
                    }
                    loop {
                        let body = match codec::split_frame_within(&mut incoming, MAX_ANSWER) {
                            Ok(Some(body)) => body,
                            Ok(None) => break,
                            Err(e) => return e.to_string(),
                        };
                        match codec::decode(body) {
                            Ok(Frame::HashKvResult { req_id, result }) => {
                                self.hash_waiters.complete(req_id, result)
                            }
                            Ok(_) => return "unexpected data from peer".into(),
                            Err(e) => return e.to_string(),
                        }
                    }
                }
            }
        }
    }
}

/// Whatever ends a pump (an error, or the task being cancelled at shutdown), the senders
/// must stop writing to its connection and a duplicated socket must be closed.
struct Unpublish<'a>(&'a Outbox);

impl Drop for Unpublish<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.up = false;
        st.direct = None;
        st.clear_queued();
    }
}

/// Microseconds since this process first asked: the only clock a round-trip probe uses (it
/// comes back in the peer's answer and is compared with this same clock).
fn probe_clock() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// The latency probe's name and log index for a frame carrying entries or acknowledging them.
fn probe_point(f: &Frame, append: &'static str, ack: &'static str) -> Option<(&'static str, u64)> {
    match f {
        Frame::Raft(m) => probe_point_raft(m, append, ack),
        _ => None,
    }
}

fn probe_point_raft(
    m: &Message,
    append: &'static str,
    ack: &'static str,
) -> Option<(&'static str, u64)> {
    match &m.body {
        raft::MessageBody::Append { entries, .. } => entries.last().map(|e| (append, e.index)),
        raft::MessageBody::AppendResponse { match_index, .. } => Some((ack, *match_index)),
        _ => None,
    }
}

/// Send `frame` (a handshake-time frame) and read the one frame that answers it, within
/// [`HANDSHAKE_TIMEOUT`]; `Ok(None)` when the other end closes without answering.
async fn send_and_read_reply<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    frame: &Frame,
) -> anyhow::Result<Option<Frame>> {
    let mut buf = BytesMut::new();
    codec::encode(frame, &mut buf);
    stream.write_all(&buf).await?;
    stream.flush().await?;
    buf.clear();
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read_handshake_frame(stream, &mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {HANDSHAKE_TIMEOUT:?}"))?
}

/// Read one handshake frame (at most [`codec::MAX_HANDSHAKE_FRAME`] bytes: the sender is not
/// admitted yet); `Ok(None)` on a clean end of stream.
async fn read_handshake_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> anyhow::Result<Option<Frame>> {
    loop {
        if let Some(body) = codec::split_frame_within(buf, codec::MAX_HANDSHAKE_FRAME)? {
            return Ok(Some(codec::decode(body)?));
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// etcd's words for a member that was removed from the cluster.
/// The largest frame a dialler accepts from the acceptor after the handshake (a HashKV
/// answer is a few dozen bytes; its error text is short).
const MAX_ANSWER: usize = 64 * 1024;

pub const REMOVED: &str = "the member has been permanently removed from the cluster";

/// The receiving side: accepts peer connections on the peer listeners.
pub struct Acceptor {
    pub local: LocalIdentity,
    /// The members of the cluster, to refuse strangers and removed members (shared with
    /// the transport: [`Transport::peer_set`]).
    pub members: Arc<PeerSet>,
    pub incarnations: Arc<Incarnations>,
    pub sink: Sink,
    /// Our commit index, reported in handshake replies.
    pub commit: Arc<std::sync::atomic::AtomicU64>,
    /// Where a peer's round-trip probe is answered: our own connection to it. `None`
    /// answers no probe (and the acceptance then advertises none).
    pub probes: Option<Transport>,
    /// Answers a joining member's [`Frame::JoinQuery`] (`None`: refused).
    pub join: Option<JoinLookup>,
    /// Answers a peer's [`Frame::HashKv`], on its connection (advertised as
    /// [`codec::FEATURE_HASHKV`] when present).
    pub hash_kv: Option<hash_kv::HashSource>,
    /// Answers a [`Frame::AddMe`] (`crate::auto_join`; `None`: refused).
    pub add_me: Option<AddMeHandler>,
    /// The log entries this member's state machine applies beyond those of version 1, as
    /// feature bits ([`codec::FEATURE_LEASE_KEEP_ALIVES`]): advertised as they are.
    pub applies: u64,
}

/// A member asking to be added ([`Frame::AddMe`]) and the address its connection came from.
#[derive(Clone, Debug)]
pub struct AddMeRequest {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub source: std::net::IpAddr,
}

/// Decides (and makes) an [`AddMeRequest`]: `Ok` once the member is in the cluster's list.
pub type AddMeHandler = Arc<
    dyn Fn(AddMeRequest) -> futures_util::future::BoxFuture<'static, Result<(), String>>
        + Send
        + Sync,
>;

/// Which member of the cluster has these peer URLs (`crate::join`), or why none (for this
/// member's log: the asker is told only [`join_gate::REFUSED`]). With the flag set, only a
/// member added with `member add` is looked for (the asker has no peer certificate).
pub type JoinLookup = Arc<dyn Fn(&[String], bool) -> Result<JoinFound, String> + Send + Sync>;

/// How an accepted peer connection starts.
#[derive(Clone)]
pub enum PeerListen {
    Plain,
    /// A TLS handshake first (`https://` listen URL).
    Tls(Arc<rustls::ServerConfig>),
}

impl Acceptor {
    /// Serve one listener until shutdown.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        self.serve_with(listener, PeerListen::Plain, shutdown).await
    }

    /// Serve one listener until shutdown, each connection starting as `mode` says.
    pub async fn serve_with(
        self: Arc<Self>,
        listener: TcpListener,
        mode: PeerListen,
        shutdown: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => return,
            };
            match accepted {
                Ok((stream, addr)) => {
                    let me = self.clone();
                    let stop = shutdown.clone();
                    let mode = mode.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            r = me.start(stream, addr, mode) => if let Err(e) = r {
                                debug!(%addr, error = %e, "peer connection ended");
                            },
                            _ = stop.cancelled() => {}
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Check a dialler's Hello; `Err` refuses it.
    async fn admit(&self, h: &Hello) -> Result<(), Refusal> {
        let refuse = |kind, reason| Err(Refusal { kind, reason });
        if h.version != codec::PROTOCOL_VERSION {
            return refuse(
                RefusalKind::ProtocolVersion,
                format!(
                    "peer protocol version {} is not ours ({})",
                    h.version,
                    codec::PROTOCOL_VERSION
                ),
            );
        }
        if h.cluster_id != self.local.cluster_id {
            return refuse(
                RefusalKind::WrongCluster,
                format!(
                    "cluster ID mismatch: member {:x} belongs to cluster {:x}, this is cluster {:x}",
                    h.from, h.cluster_id, self.local.cluster_id
                ),
            );
        }
        if h.to != self.local.member_id {
            return refuse(
                RefusalKind::UnknownMember,
                format!("this is member {:x}, not {:x}", self.local.member_id, h.to),
            );
        }
        if self.members.is_removed(h.from) {
            return refuse(RefusalKind::Removed, REMOVED.to_string());
        }
        if !self.members.contains(h.from) || h.from == self.local.member_id {
            return refuse(
                RefusalKind::UnknownMember,
                format!("member {:x} is not in this cluster", h.from),
            );
        }
        // The first sighting of a peer writes and fsyncs the record: keep that off the
        // runtime's worker threads, which serve every other connection meanwhile.
        let incarnations = self.incarnations.clone();
        let (from, incarnation) = (h.from, h.incarnation);
        match tokio::task::spawn_blocking(move || incarnations.check(from, incarnation)).await {
            Ok(verdict) => verdict,
            Err(e) => refuse(
                RefusalKind::Unavailable,
                format!("checking the incarnation of member {from:x} failed: {e}"),
            ),
        }
    }

    /// The TLS handshake if any, then [`Acceptor::handle`].
    async fn start(
        &self,
        stream: TcpStream,
        addr: std::net::SocketAddr,
        mode: PeerListen,
    ) -> anyhow::Result<()> {
        stream.set_nodelay(true)?;
        let mut asker = join_gate::Asker {
            source: Some(addr.ip()),
            certified: false,
        };
        match mode {
            PeerListen::Plain => self.handle(stream, asker).await,
            PeerListen::Tls(config) => {
                let stream = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    tokio_rustls::TlsAcceptor::from(config).accept(stream),
                )
                .await
                .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))?
                .map_err(|e| {
                    // An outsider without an acceptable certificate ends here.
                    warn!(error = %e, "peer TLS handshake failed");
                    anyhow::anyhow!("TLS handshake failed: {e}")
                })?;
                // The verifier let a certificate through only if the peer CA signed it
                // (none is asked for without --peer-client-cert-auth).
                asker.certified = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                self.handle(stream, asker).await
            }
        }
    }

    /// A joining member's question (before any handshake): answered only as
    /// [`join_gate`] says; any refusal is [`join_gate::REFUSED`], the reason is logged here.
    async fn answer_join(
        &self,
        peer_urls: &[String],
        asker: join_gate::Asker,
    ) -> Result<JoinFound, String> {
        let urls = peer_urls.join(",");
        let source = asker.source.map(|a| a.to_string()).unwrap_or_default();
        let refuse = |why: &str| {
            warn!(%urls, %source, reason = %why, "join query refused");
            Err(join_gate::REFUSED.to_string())
        };
        let Some(lookup) = &self.join else {
            return refuse("this member answers no join queries");
        };
        if !asker.certified {
            let from_host = match asker.source {
                Some(ip) => join_gate::comes_from_url_host(ip, peer_urls).await,
                None => false,
            };
            if !from_host {
                return refuse(
                    "the question does not come from an address of its peer URLs' host \
                     (and carries no peer certificate)",
                );
            }
        }
        match lookup(peer_urls, !asker.certified) {
            Ok(found) => {
                info!(
                    member = format_args!("{:x}", found.member_id),
                    %urls,
                    "a member is joining: told it who it is"
                );
                Ok(found)
            }
            Err(e) => refuse(&e),
        }
    }

    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        asker: join_gate::Asker,
    ) -> anyhow::Result<()> {
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let hello = match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            read_handshake_frame(&mut stream, &mut buf),
        )
        .await
        {
            Ok(Ok(Some(Frame::Hello(h)))) => h,
            Ok(Ok(Some(Frame::JoinQuery { peer_urls }))) => {
                let result = self.answer_join(&peer_urls, asker).await;
                let mut out = BytesMut::new();
                codec::encode(&Frame::JoinAnswer { result }, &mut out);
                stream.write_all(&out).await?;
                stream.flush().await?;
                return Ok(());
            }
            Ok(Ok(Some(Frame::AddMe { name, peer_urls }))) => {
                let source = asker.source.map(|a| a.to_string()).unwrap_or_default();
                let result = match (&self.add_me, asker.source) {
                    (Some(handler), Some(from)) => {
                        handler(AddMeRequest {
                            name: name.clone(),
                            peer_urls: peer_urls.clone(),
                            source: from,
                        })
                        .await
                    }
                    (Some(_), None) => Err("the request's source address is unknown".to_string()),
                    (None, _) => Err("this member adds no members by request".to_string()),
                };
                match &result {
                    Ok(()) => {
                        info!(%name, urls = %peer_urls.join(","), %source, "added a member at its request")
                    }
                    Err(e) => {
                        warn!(%name, urls = %peer_urls.join(","), %source, error = %e, "add-me request refused")
                    }
                }
                let mut out = BytesMut::new();
                codec::encode(&Frame::AddMeAnswer { result }, &mut out);
                stream.write_all(&out).await?;
                stream.flush().await?;
                return Ok(());
            }
            Ok(Ok(other)) => anyhow::bail!("expected a hello, got {other:?}"),
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("handshake timed out"),
        };
        // Read before the check, so an operator's admission racing with it is seen below.
        let mut admitted_at = self.incarnations.generation();
        let reply = match self.admit(&hello).await {
            Ok(()) => HelloReply::Accepted {
                name: self.local.name.clone(),
                client_urls: self.local.client_urls.clone(),
                commit: self.commit.load(std::sync::atomic::Ordering::Relaxed),
                features: (if self.probes.is_some() {
                    codec::FEATURE_PING
                } else {
                    0
                }) | (if self.hash_kv.is_some() {
                    codec::FEATURE_HASHKV
                } else {
                    0
                }) | codec::FEATURE_SNAPSHOT_PARTS
                    | self.applies,
            },
            Err(Refusal { kind, reason }) => {
                warn!(peer = format_args!("{:x}", hello.from), ?kind, %reason, "refusing peer");
                HelloReply::Refused { kind, reason }
            }
        };
        let refused = matches!(reply, HelloReply::Refused { .. });
        let mut out = BytesMut::new();
        codec::encode(&Frame::HelloReply(reply), &mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        if refused {
            return Ok(());
        }
        let from = hello.from;
        // Answers to the peer's HashKV questions, written back on this connection.
        let (answer_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<Frame>();
        // A snapshot arriving in parts on this connection.
        let mut incoming_snapshot = snapshot_parts::Incoming::default();
        loop {
            if self.members.is_removed(from) {
                anyhow::bail!("member {from:x} was removed from the cluster");
            }
            // An operator admitted `from` with another incarnation since this connection was
            // admitted (`raftkv peer admit`): whoever holds it is not that member.
            let generation = self.incarnations.generation();
            if generation != admitted_at {
                if !self.incarnations.is_recorded(from, hello.incarnation) {
                    anyhow::bail!(
                        "member {from:x} was admitted with another incarnation by an operator"
                    );
                }
                admitted_at = generation;
            }
            while let Some(body) = codec::split_frame(&mut buf)? {
                let frame = match codec::decode(body)? {
                    Frame::SnapshotHead { message, len } => {
                        match incoming_snapshot
                            .head(message, len)
                            .map_err(anyhow::Error::msg)?
                        {
                            Some(whole) => Frame::Raft(whole),
                            None => continue,
                        }
                    }
                    Frame::SnapshotPart { data } => {
                        match incoming_snapshot.part(&data).map_err(anyhow::Error::msg)? {
                            Some(whole) => Frame::Raft(whole),
                            None => continue,
                        }
                    }
                    frame => frame,
                };
                match &frame {
                    Frame::Raft(m) if m.from != from || m.to != self.local.member_id => {
                        anyhow::bail!(
                            "misaddressed raft message {}->{} on {from:x}'s connection",
                            m.from,
                            m.to
                        )
                    }
                    Frame::Hello(_)
                    | Frame::HelloReply(_)
                    | Frame::JoinQuery { .. }
                    | Frame::JoinAnswer { .. }
                    | Frame::AddMe { .. }
                    | Frame::AddMeAnswer { .. } => {
                        anyhow::bail!("handshake frame after handshake")
                    }
                    // Answered here, not by the node: the probe measures the network and
                    // the two transports, not how busy the node thread is.
                    Frame::Ping { sent } => {
                        if let Some(t) = &self.probes {
                            t.send(from, Frame::Pong { sent: *sent });
                        }
                        continue;
                    }
                    Frame::Pong { sent } => {
                        // An echo from the future is not ours: ignore it.
                        if let Some(rtt) = probe_clock().checked_sub(*sent) {
                            crate::metrics::metrics().peer_round_trip(from, rtt as f64 / 1e6);
                        }
                        continue;
                    }
                    // A corruption check's question, answered here as etcd's peer handler
                    // answers it; hashing reads the whole store, so off the async threads.
                    // The answer goes back on this same connection, like an HTTP reply:
                    // our own connection to the asker may not be up yet (it just restarted).
                    Frame::HashKv { req_id, revision } => {
                        if let Some(source) = &self.hash_kv {
                            let (source, tx) = (source.clone(), answer_tx.clone());
                            let (req_id, revision) = (*req_id, *revision);
                            tokio::task::spawn_blocking(move || {
                                let result = source(revision);
                                let _ = tx.send(Frame::HashKvResult { req_id, result });
                            });
                        }
                        continue;
                    }
                    Frame::HashKvResult { .. } => {
                        anyhow::bail!("a HashKV answer on {from:x}'s connection to us")
                    }
                    _ => {}
                }
                if let Some((ev, i)) = probe_point(&frame, "rx_append", "rx_ack") {
                    crate::node::probe::mark(ev, i);
                }
                (self.sink)(PeerEvent::Frame { from, frame });
            }
            // A large frame (a snapshot) grew the buffer; once it is consumed, give the
            // memory back rather than keep it for the connection's lifetime.
            if buf.is_empty() && buf.capacity() > RETAINED_READ_BUFFER {
                buf = BytesMut::with_capacity(READ_BUFFER);
            }
            tokio::select! {
                read = stream.read_buf(&mut buf) => match read? {
                    0 => return Ok(()),
                    n => crate::metrics::metrics().peer_received(from, n),
                },
                Some(answer) = answers.recv() => {
                    let mut out = BytesMut::new();
                    codec::encode(&answer, &mut out);
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn identity(id: u64, incarnation: u64) -> LocalIdentity {
        LocalIdentity {
            cluster_id: 99,
            member_id: id,
            incarnation,
            name: format!("m{id}"),
            client_urls: vec![format!("http://127.0.0.1:{id}")],
        }
    }

    /// A loopback listener on a port below 32768, where the kernel's ephemeral range
    /// starts: test listeners stay out of it so they never collide with outgoing
    /// connections' ports. The first port tried differs per process and per call; a port in
    /// use (another test, another process) is skipped.
    async fn bind_below_ephemeral() -> TcpListener {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        const LOW: u32 = 20_000;
        const SPAN: u32 = 12_000;
        let base = std::process::id().wrapping_mul(7919);
        for _ in 0..SPAN {
            let port = LOW + base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)).await {
                return l;
            }
        }
        panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
    }

    /// Start an acceptor for member 2 and return its address and what it received.
    async fn acceptor(
        incs: Arc<Incarnations>,
    ) -> (
        String,
        mpsc::UnboundedReceiver<PeerEvent>,
        CancellationToken,
    ) {
        acceptor_applying(incs, codec::FEATURE_LEASE_KEEP_ALIVES).await
    }

    /// [`acceptor`], advertising `applies` as the log entries it applies.
    async fn acceptor_applying(
        incs: Arc<Incarnations>,
        applies: u64,
    ) -> (
        String,
        mpsc::UnboundedReceiver<PeerEvent>,
        CancellationToken,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink: Sink = Arc::new(move |ev| {
            let _ = tx.send(ev);
        });
        let acc = Arc::new(Acceptor {
            local: identity(2, 1),
            members: Arc::new(PeerSet::new([1, 2])),
            incarnations: incs,
            sink,
            commit: Arc::new(AtomicU64::new(17)),
            probes: None,
            join: None,
            hash_kv: None,
            add_me: None,
            applies,
        });
        let listener = bind_below_ephemeral().await;
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(acc.serve(listener, stop.clone()));
        (url, rx, stop)
    }

    fn dial(
        incarnation: u64,
        url: &str,
    ) -> (
        Transport,
        mpsc::UnboundedReceiver<PeerEvent>,
        CancellationToken,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink: Sink = Arc::new(move |ev| {
            let _ = tx.send(ev);
        });
        let stop = CancellationToken::new();
        let t = Transport::start(
            identity(1, incarnation),
            &[(2, vec![url.to_string()])],
            sink,
            stop.clone(),
        );
        (t, rx, stop)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<PeerEvent>) -> PeerEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no event in time")
            .unwrap()
    }

    /// A peer's advertised entries gate what a member proposes: known only once connected,
    /// and only the bits the peer's acceptor sent (a build without the batched keep-alive
    /// entry sends none for it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_peer_advertises_only_what_each_peers_handshake_said() {
        for (applies, expected) in [(codec::FEATURE_LEASE_KEEP_ALIVES, true), (0, false)] {
            let incs = Arc::new(Incarnations::in_memory());
            let (url, _got, _stop) = acceptor_applying(incs, applies).await;
            let (t, _events, _stop1) = dial(5, &url);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !t.is_connected(2) {
                assert!(
                    !t.every_peer_advertises(codec::FEATURE_LEASE_KEEP_ALIVES),
                    "a peer never reached counts as advertising nothing"
                );
                assert!(tokio::time::Instant::now() < deadline, "never connected");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                t.every_peer_advertises(codec::FEATURE_LEASE_KEEP_ALIVES),
                expected,
                "acceptor applying {applies:#x}"
            );
            // Bits the acceptor always sends are seen too, whatever it applies.
            assert!(t.every_peer_advertises(codec::FEATURE_SNAPSHOT_PARTS));
        }
    }

    /// More than the socket takes at once: the rest goes through the backlog, and every
    /// frame arrives once, whole and in the order sent (direct writes and backlog mixed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_larger_than_the_socket_arrives_complete_and_in_order() {
        let incs = Arc::new(Incarnations::in_memory());
        let (url, mut got, _stop) = acceptor(incs).await;
        let (t, _events, _stop1) = dial(5, &url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !t.is_connected(2) {
            assert!(tokio::time::Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Wait until the sending side is published too: a probe frame gets through.
        let first = loop {
            t.send(
                2,
                Frame::Forward {
                    req_id: 0,
                    data: bytes::Bytes::new(),
                },
            );
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), got.recv()).await
            {
                break ev;
            }
            assert!(tokio::time::Instant::now() < deadline, "no frame delivered");
        };
        assert!(matches!(first, PeerEvent::Frame { .. }));
        let data = bytes::Bytes::from(vec![7u8; 64 * 1024]);
        let n = 400u64; // 25 MiB: far more than a loopback socket buffers
        for req_id in 1..=n {
            t.send(
                2,
                Frame::Forward {
                    req_id,
                    data: data.clone(),
                },
            );
        }
        let mut expect = 1;
        while expect <= n {
            match next(&mut got).await {
                PeerEvent::Frame {
                    frame: Frame::Forward { req_id: 0, .. },
                    ..
                } => {} // a late duplicate of the probe frame
                PeerEvent::Frame {
                    frame: Frame::Forward { req_id, data: d },
                    ..
                } => {
                    assert_eq!(req_id, expect, "out of order");
                    assert_eq!(d.len(), data.len());
                    expect += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn raft(body: raft::MessageBody) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body,
        }
    }

    fn install_snapshot(image: bytes::Bytes) -> Message {
        raft(raft::MessageBody::InstallSnapshot {
            snapshot: raft::Snapshot {
                meta: raft::SnapshotMeta {
                    index: 500,
                    term: 2,
                    conf_state: raft::ConfState {
                        voters: vec![1, 2],
                        learners: vec![],
                    },
                },
                data: image,
            },
        })
    }

    fn heartbeat(commit: u64) -> Message {
        raft(raft::MessageBody::Heartbeat {
            commit,
            read_seq: 0,
        })
    }

    /// A snapshot larger than the socket takes goes in parts (no frame on the wire grows
    /// with the image: `snapshot_parts::tests`), arrives whole with its image unchanged, and
    /// keeps its place: what was sent before it arrives before it, what was sent while it was
    /// on its way arrives after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_goes_in_parts_and_keeps_its_place_among_the_frames() {
        let incs = Arc::new(Incarnations::in_memory());
        let (url, mut got, _stop) = acceptor(incs).await;
        let (t, _events, _stop1) = dial(5, &url);
        wait_connected(&t, 2).await;
        // Wait until the sending side is published and knows the peer takes parts.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            t.send_raft(&[heartbeat(0)]);
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), got.recv()).await
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no frame delivered");
        }
        let image: bytes::Bytes = (0..(24usize << 20)).map(|i| (i % 253) as u8).collect();
        t.send_raft(&[heartbeat(1), install_snapshot(image.clone()), heartbeat(2)]);
        for commit in 3..=20 {
            t.send_raft(&[heartbeat(commit)]);
        }
        let mut order = Vec::new();
        while order.len() < 21 {
            match next(&mut got).await {
                PeerEvent::Frame {
                    frame: Frame::Raft(m),
                    ..
                } => match m.body {
                    raft::MessageBody::Heartbeat { commit: 0, .. } => {} // a late probe
                    raft::MessageBody::Heartbeat { commit, .. } => order.push(commit as i64),
                    raft::MessageBody::InstallSnapshot { snapshot } => {
                        assert_eq!(snapshot.meta.index, 500);
                        assert!(snapshot.data == image, "the image changed on the way");
                        order.push(-1);
                    }
                    other => panic!("unexpected {other:?}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut want = vec![1, -1];
        want.extend(2..=20);
        assert_eq!(order, want);
    }

    /// The outbox's queue, step by step: frames before the snapshot, the snapshot's head and
    /// parts, frames sent meanwhile (behind it, not written directly), and a second snapshot
    /// while one is on its way dropped.
    #[test]
    fn frames_sent_during_a_snapshot_wait_behind_it_and_a_second_snapshot_is_dropped() {
        let outbox = Outbox::default();
        {
            let mut st = outbox.lock();
            st.up = true;
            st.snapshot_parts = true;
        }
        let frame = |commit| {
            let mut b = BytesMut::new();
            codec::encode_raft(&heartbeat(commit), &mut b);
            b
        };
        let image = bytes::Bytes::from(vec![9u8; snapshot_parts::PART + 1]);
        outbox.send_bytes(2, &frame(1));
        let first = install_snapshot(image.clone());
        outbox.send_snapshot(2, snapshot_parts::Outgoing::new(&first).unwrap());
        outbox.send_bytes(2, &frame(2));
        let second = install_snapshot(bytes::Bytes::from_static(b"newer"));
        outbox.send_snapshot(2, snapshot_parts::Outgoing::new(&second).unwrap());
        outbox.send_bytes(2, &frame(3));

        let mut wire = BytesMut::new();
        while let Some(chunk) = outbox.next_to_write() {
            assert!(outbox.lock().writing);
            wire.extend_from_slice(&chunk);
        }
        assert!(!outbox.lock().writing);
        let mut incoming = snapshot_parts::Incoming::default();
        let mut got = Vec::new();
        while let Some(body) = codec::split_frame(&mut wire).unwrap() {
            match codec::decode(body).unwrap() {
                Frame::Raft(m) => got.push(m),
                Frame::SnapshotHead { message, len } => {
                    got.extend(incoming.head(message, len).unwrap())
                }
                Frame::SnapshotPart { data } => got.extend(incoming.part(&data).unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, vec![heartbeat(1), first, heartbeat(2), heartbeat(3)]);
    }

    #[tokio::test]
    async fn frames_flow_after_handshake_and_a_wiped_peer_is_refused() {
        let incs = Arc::new(Incarnations::in_memory());
        let (url, mut got, _stop) = acceptor(incs).await;

        let (t, _events, stop1) = dial(5, &url);
        // The first frames may be dropped while connecting: resend until one arrives.
        let data = bytes::Bytes::from_static(b"payload");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let ev = loop {
            t.send(
                2,
                Frame::Forward {
                    req_id: 1,
                    data: data.clone(),
                },
            );
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), got.recv()).await
            {
                break ev;
            }
            assert!(tokio::time::Instant::now() < deadline, "no frame delivered");
        };
        match ev {
            PeerEvent::Frame {
                from: 1,
                frame: Frame::Forward { data: d, .. },
            } => assert_eq!(d, data),
            other => panic!("unexpected {other:?}"),
        }
        let info = t.directory().get(&2).cloned().unwrap();
        assert_eq!(info.commit, 17);
        stop1.cancel();

        // Same member id, new incarnation: refused as a wiped identity, and the dialler
        // is told why.
        let (_t2, mut events2, _stop2) = dial(6, &url);
        match next(&mut events2).await {
            PeerEvent::IdentityRefused { peer: 2, reason } => {
                assert!(reason.contains("lost its data dir"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Reads from a raw connection until the other side closes it; panics if it stays open
    /// longer than `within` (the acceptor must drop a bad connection, not sit on it).
    async fn closed_by_acceptor(stream: &mut TcpStream, within: Duration) {
        let mut sink = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
                Err(_) => panic!("the acceptor kept the connection open"),
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// A stranger announcing a 1 GiB frame before any handshake is disconnected at once:
    /// nothing is reserved for a frame from a sender that has not been admitted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_huge_frame_before_the_handshake_is_refused() {
        let (url, mut got, _stop) = acceptor(Arc::new(Incarnations::in_memory())).await;
        let mut stream = TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        let mut announce = Vec::from(((1u32 << 30) - 1).to_le_bytes());
        announce.extend_from_slice(&[0u8; 4096]);
        stream.write_all(&announce).await.unwrap();
        // At once, not when the handshake times out (which is how a member that waited for
        // the announced gigabyte would end it).
        closed_by_acceptor(&mut stream, HANDSHAKE_TIMEOUT / 2).await;
        assert!(
            got.try_recv().is_err(),
            "a stranger's bytes reached the node"
        );
    }

    /// After a valid handshake as member 1, a Raft message that claims another sender (or
    /// another recipient) ends the connection and never reaches the node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_from_another_sender_than_the_handshake_named_is_refused() {
        let (url, mut got, _stop) = acceptor(Arc::new(Incarnations::in_memory())).await;
        let mut stream = TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        let mut out = BytesMut::new();
        codec::encode(
            &Frame::Hello(Hello {
                version: codec::PROTOCOL_VERSION,
                cluster_id: 99,
                from: 1,
                to: 2,
                incarnation: 5,
                name: "m1".into(),
                client_urls: vec![],
            }),
            &mut out,
        );
        stream.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        match read_handshake_frame(&mut stream, &mut buf).await.unwrap() {
            Some(Frame::HelloReply(HelloReply::Accepted { .. })) => {}
            other => panic!("handshake not accepted: {other:?}"),
        }
        // A genuine frame first, so the test shows the connection itself works.
        let heartbeat = |from| {
            Frame::Raft(Message {
                from,
                to: 2,
                term: 1,
                body: raft::MessageBody::TimeoutNow,
            })
        };
        out.clear();
        codec::encode(&heartbeat(1), &mut out);
        stream.write_all(&out).await.unwrap();
        match next(&mut got).await {
            PeerEvent::Frame { from: 1, .. } => {}
            other => panic!("unexpected {other:?}"),
        }
        // Now one claiming to come from member 3 on member 1's connection.
        out.clear();
        codec::encode(&heartbeat(3), &mut out);
        stream.write_all(&out).await.unwrap();
        closed_by_acceptor(&mut stream, Duration::from_secs(10)).await;
        assert!(got.try_recv().is_err(), "the forged frame reached the node");
    }

    async fn wait_connected(t: &Transport, peer: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !t.is_connected(peer) {
            assert!(tokio::time::Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An acceptor that cannot record a new peer's incarnation refuses it (transiently: the
    /// dialler is not told to stop) instead of admitting it unrecorded; once the disk works
    /// again the retrying dialler is recorded, durably, and admitted.
    #[tokio::test]
    async fn a_peer_whose_incarnation_cannot_be_recorded_is_refused_until_it_can() {
        let fs = Arc::new(storage::LazyFs::new());
        let path = std::path::Path::new("/data/raftkv.peers");
        storage::FileSystem::create_dir_all(&*fs, path.parent().unwrap()).unwrap();
        let incs = Arc::new(Incarnations::load(fs.clone(), path).unwrap());
        let (url, _got, _stop) = acceptor(incs).await;
        fs.crash_after_ops(0); // every file operation fails from now on

        let (t, mut events, _stop1) = dial(5, &url);
        match next(&mut events).await {
            PeerEvent::Refused { peer: 2, reason } => {
                assert!(reason.contains("cannot record"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!t.is_connected(2));

        fs.power_loss(storage::LossMode::DropUnsynced); // the disk works again
        wait_connected(&t, 2).await;
        // Admitted means recorded durably: a power cut now keeps it.
        fs.power_loss(storage::LossMode::DropUnsynced);
        let reloaded = Incarnations::load(fs.clone(), path).unwrap();
        assert!(reloaded.check(1, 5).is_ok());
        assert_eq!(
            reloaded.check(1, 6).unwrap_err().kind,
            RefusalKind::IdentityWiped
        );
    }

    /// A filesystem whose directory fsync waits at a gate, to catch a handshake that fsyncs
    /// on a runtime worker thread.
    #[derive(Debug, Default)]
    struct GatedFs {
        inner: storage::LazyFs,
        gate: Arc<(Mutex<Gate>, std::sync::Condvar)>,
    }

    #[derive(Debug, Default)]
    struct Gate {
        open: bool,
        parked: bool,
    }

    impl GatedFs {
        fn open_gate(&self) {
            self.gate.0.lock().unwrap().open = true;
            self.gate.1.notify_all();
        }

        fn parked(&self) -> bool {
            self.gate.0.lock().unwrap().parked
        }
    }

    impl storage::FileSystem for GatedFs {
        fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
            self.inner.create_dir_all(dir)
        }
        fn list_dir(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
            self.inner.list_dir(dir)
        }
        fn exists(&self, path: &std::path::Path) -> std::io::Result<bool> {
            self.inner.exists(path)
        }
        fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
            self.inner.read(path)
        }
        fn open_read(
            &self,
            path: &std::path::Path,
        ) -> std::io::Result<Box<dyn std::io::Read + Send>> {
            self.inner.open_read(path)
        }
        fn create(&self, path: &std::path::Path) -> std::io::Result<Box<dyn storage::FsFile>> {
            self.inner.create(path)
        }
        fn open_append(&self, path: &std::path::Path) -> std::io::Result<Box<dyn storage::FsFile>> {
            self.inner.open_append(path)
        }
        fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
            self.inner.remove_file(path)
        }
        fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
            let mut g = self.gate.0.lock().unwrap();
            g.parked = true;
            while !g.open {
                g = self.gate.1.wait(g).unwrap();
            }
            drop(g);
            self.inner.sync_dir(dir)
        }
        fn lock(
            &self,
            path: &std::path::Path,
        ) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
            self.inner.lock(path)
        }
    }

    /// Recording a new peer's incarnation (which fsyncs) must not block the runtime: on a
    /// single-threaded runtime, while that fsync is stuck, this test's own task still runs
    /// and the acceptor still answers another dialler. Were the fsync on the runtime
    /// thread, nothing would run until the watchdog opened the gate, and the test fails.
    #[tokio::test(flavor = "current_thread")]
    async fn recording_an_incarnation_does_not_block_the_runtime() {
        let fs = Arc::new(GatedFs::default());
        let path = std::path::Path::new("/data/raftkv.peers");
        storage::FileSystem::create_dir_all(&*fs, path.parent().unwrap()).unwrap();
        let incs = Arc::new(Incarnations::load(fs.clone(), path).unwrap());
        let (url, _got, _stop) = acceptor(incs).await;

        let watchdog_fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (fs, fired) = (fs.clone(), watchdog_fired.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(20));
                fired.store(true, std::sync::atomic::Ordering::SeqCst);
                fs.open_gate();
            });
        }

        let (t, _events, _stop1) = dial(5, &url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !fs.parked() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reached the fsync"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A stranger dials meanwhile: the acceptor answers it at once.
        let (tx, mut strangers) = mpsc::unbounded_channel();
        let sink: Sink = Arc::new(move |ev| {
            let _ = tx.send(ev);
        });
        let stop3 = CancellationToken::new();
        let _t3 = Transport::start(
            identity(3, 1),
            &[(2, vec![url.clone()])],
            sink,
            stop3.clone(),
        );
        match next(&mut strangers).await {
            PeerEvent::Refused { peer: 2, reason } => {
                assert!(reason.contains("not in this cluster"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        stop3.cancel();
        assert!(
            !watchdog_fired.load(std::sync::atomic::Ordering::SeqCst),
            "the runtime was blocked until the watchdog opened the gate"
        );
        assert!(
            !t.is_connected(2),
            "admitted before its incarnation was durable"
        );

        fs.open_gate();
        wait_connected(&t, 2).await;
    }
}
