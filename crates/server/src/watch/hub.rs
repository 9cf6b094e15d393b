//! The hand-off from the node thread to the watch streams.
//!
//! After every apply that changed something, the node thread calls [`WatchHub::publish`]
//! with the revision's events, while it still holds the state machine's write lock. The hub
//! then offers one shared [`RevBatch`] to every stream with a watcher whose range matches an
//! event, with `try_send` on that stream's bounded queue: the node thread never waits for a
//! stream, never allocates per watcher and never does I/O.
//!
//! The hub finds those streams through an index of every distinct range watched: single keys
//! in a hash map, real ranges in an interval tree ([`SpanIndex`]). A revision costs a lookup
//! per event plus the streams it reaches, not a walk over every stream or every range.
//!
//! A stream whose queue is full is set aside as a *victim*: the hub records the first
//! revision it missed and stops offering it batches. The stream task notices, drains what
//! it was given, and catches up from the MVCC history (`Store::events_between`) in bounded
//! batches before the hub feeds it again (`super::stream`). This is etcd's victim scheme at
//! stream granularity; its memory cost is the queue, whatever the client does.
//!
//! Lock order: the state machine lock, then the hub's mutex, never the reverse. Because
//! `publish` runs under the write lock, a stream that registers interest (or clears its
//! victim mark) while holding the read lock at revision `C` is offered exactly the
//! revisions after `C`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;
use mvcc::key_range::KeyRange;
use proto::mvccpb::Event;
use tokio::sync::Notify;

use super::encode::SharedEvents;
use super::queue;
use super::span_index::SpanIndex;

/// Batches a stream's queue holds before the stream becomes a victim.
pub const STREAM_QUEUE: usize = 128;

/// Revisions published while the hub is held ([`WatchHub::hold_wakes`]) after which the
/// streams waiting for them are woken anyway: a round of the node thread may apply hundreds
/// of revisions, and a stream left asleep for all of them would fill its queue and be set
/// aside as a victim. A quarter of the queue leaves it room to drain meanwhile.
const HELD_REVS: u32 = (STREAM_QUEUE / 4) as u32;

/// Ranges a departing stream takes out of the index per hold of the hub's lock
/// ([`WatchHub::unregister`]). Measured on the project's machine: 100,000 range removals
/// take 130-220 ms in all, which one hold of the lock used to cost the node thread's
/// `publish`; a chunk takes about 0.3 ms.
const UNREGISTER_CHUNK: usize = 256;

/// The events of one revision, in the order the request made them (one Txn, one
/// DeleteRange with a DELETE per key, or one Put), each encoded once for every stream.
#[derive(Debug)]
pub struct RevBatch {
    pub rev: i64,
    pub events: SharedEvents,
}

/// A watcher's key range in etcd's `key` / `range_end` convention (after etcd's rewrite of an
/// empty key to `"\0"`): `end` empty is one key, `"\0"` every key from `key`, else `[key, end)`.
///
/// Key and end live in one shared allocation (the key's length, the key, the end): the hub
/// holds each distinct range of a stream once and the stream's watchers of that range point
/// to the same copy (see [`WatchHub::add_range`]), so a watcher on a range already watched
/// costs no range of its own.
///
/// A range hashes and compares as its encoded bytes, so that the hub can look a single key
/// up among a stream's ranges by [`WatchRange::probe`] without building a range.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WatchRange(Arc<[u8]>);

impl std::borrow::Borrow<[u8]> for WatchRange {
    fn borrow(&self) -> &[u8] {
        // The derived `Hash` and `Eq` hash and compare the `Arc<[u8]>`, i.e. these bytes.
        &self.0
    }
}

impl WatchRange {
    pub fn new(key: &[u8], end: &[u8]) -> WatchRange {
        // A gRPC message's length is a u32, so no key received can be longer.
        let key_len = u32::try_from(key.len()).expect("a key is shorter than a gRPC message");
        let mut bytes = Vec::with_capacity(4 + key.len() + end.len());
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(end);
        WatchRange(bytes.into())
    }

    /// The encoded bytes of the single-key range of `key` (what `WatchRange::new(key, b"")`
    /// holds), written into `buf`.
    pub fn probe(key: &[u8], buf: &mut Vec<u8>) {
        let key_len = u32::try_from(key.len()).expect("a key is shorter than a gRPC message");
        buf.clear();
        buf.extend_from_slice(&key_len.to_le_bytes());
        buf.extend_from_slice(key);
    }

    /// The very same copy of a range (not only an equal one): a stream's watchers of one
    /// range share the copy the hub keeps ([`WatchHub::add_range`]).
    pub fn same(&self, other: &WatchRange) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// One key alone (no range end).
    pub fn is_single_key(&self) -> bool {
        self.end().is_empty()
    }

    fn split(&self) -> usize {
        let len: [u8; 4] = self.0[..4].try_into().expect("four bytes");
        4 + u32::from_le_bytes(len) as usize
    }

    pub fn key(&self) -> &[u8] {
        &self.0[4..self.split()]
    }

    pub fn end(&self) -> &[u8] {
        &self.0[self.split()..]
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        KeyRange::new(self.key(), self.end()).contains(key)
    }
}

impl std::fmt::Debug for WatchRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRange")
            .field("key", &Bytes::copy_from_slice(self.key()))
            .field("end", &Bytes::copy_from_slice(self.end()))
            .finish()
    }
}

/// A stream's identity at the hub.
pub type StreamId = u64;

/// What a stream shares with the hub: 0 while the stream is fed, else the first revision
/// the hub could not queue for it; and a wake-up for the stream's task, which may be idle
/// when the mark is set (after a snapshot install nothing else would wake it).
#[derive(Debug, Default)]
pub struct VictimMark(AtomicI64, Notify);

impl VictimMark {
    /// The first missed revision, if the stream is a victim.
    pub fn missed_from(&self) -> Option<i64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            r => Some(r),
        }
    }

    /// Mark the stream a victim from `rev` unless it already is (the earliest miss counts),
    /// and wake its task. Never blocks: `Notify` keeps a permit if nobody waits.
    fn set(&self, rev: i64) {
        if self
            .0
            .compare_exchange(0, rev, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.1.notify_one();
        }
    }

    /// Resolves once the mark has been set since the last wake-up.
    pub async fn marked(&self) {
        self.1.notified().await
    }

    /// Clear the mark and return the first missed revision. Call with the state machine's
    /// read lock held, after draining the queue.
    pub fn take(&self) -> Option<i64> {
        match self.0.swap(0, Ordering::AcqRel) {
            0 => None,
            r => Some(r),
        }
    }
}

struct Slot {
    tx: queue::Sender<Arc<RevBatch>>,
    /// The distinct ranges of the stream's watchers (synced or not: the stream filters),
    /// each with the number of watchers on it. Each one is also in the hub's index, once.
    ranges: Ranges,
    victim: Arc<VictimMark>,
}

/// The streams that watch one single key (each once, however many of its watchers do).
/// Most keys are watched by one stream, held inline. The streams are kept in one
/// contiguous list, which `publish` copies whole; a key watched by more than
/// [`SCAN_LIMIT`] streams also gets a position index, so that a stream leaving such a key
/// costs O(1) rather than a scan of the list (10,000 streams leaving one key by scanning
/// made about 5·10⁷ comparisons, under the hub's lock).
enum KeyStreams {
    One(StreamId),
    Few(Vec<StreamId>),
    Many(Box<IndexedStreams>),
}

/// Most streams on one key whose removal scans the list; above it, a position index.
const SCAN_LIMIT: usize = 32;

/// A list of streams and where each one sits in it.
struct IndexedStreams {
    ids: Vec<StreamId>,
    at: HashMap<StreamId, usize>,
}

impl IndexedStreams {
    fn new(ids: Vec<StreamId>) -> IndexedStreams {
        let at = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        IndexedStreams { ids, at }
    }

    fn push(&mut self, stream: StreamId) {
        self.at.insert(stream, self.ids.len());
        self.ids.push(stream);
    }

    /// Drop `stream` by moving the last one into its place.
    fn remove(&mut self, stream: StreamId) {
        let Some(i) = self.at.remove(&stream) else {
            return;
        };
        self.ids.swap_remove(i);
        if let Some(moved) = self.ids.get(i) {
            self.at.insert(*moved, i);
        }
    }
}

impl KeyStreams {
    fn add(&mut self, stream: StreamId) {
        match self {
            KeyStreams::One(first) => *self = KeyStreams::Few(vec![*first, stream]),
            KeyStreams::Few(ids) if ids.len() < SCAN_LIMIT => ids.push(stream),
            KeyStreams::Few(ids) => {
                let mut indexed = IndexedStreams::new(std::mem::take(ids));
                indexed.push(stream);
                *self = KeyStreams::Many(Box::new(indexed));
            }
            KeyStreams::Many(indexed) => indexed.push(stream),
        }
    }

    /// Drop `stream`; returns whether no stream is left.
    fn remove(&mut self, stream: StreamId) -> bool {
        match self {
            KeyStreams::One(id) => return *id == stream,
            KeyStreams::Few(ids) => {
                if let Some(i) = ids.iter().position(|id| *id == stream) {
                    ids.swap_remove(i);
                }
            }
            KeyStreams::Many(indexed) => {
                indexed.remove(stream);
                if indexed.ids.len() <= SCAN_LIMIT / 2 {
                    // Few enough to scan again: the index is given back, and the list's
                    // room for thousands with it.
                    let mut ids = std::mem::take(&mut indexed.ids);
                    ids.shrink_to_fit();
                    *self = KeyStreams::Few(ids);
                }
            }
        }
        match *self.as_slice() {
            [] => true,
            [last] => {
                *self = KeyStreams::One(last);
                false
            }
            _ => false,
        }
    }

    /// Whether `stream` is one of them (by the index where there is one).
    fn contains(&self, stream: StreamId) -> bool {
        match self {
            KeyStreams::Many(indexed) => indexed.at.contains_key(&stream),
            _ => self.as_slice().contains(&stream),
        }
    }

    fn as_slice(&self) -> &[StreamId] {
        match self {
            KeyStreams::One(id) => std::slice::from_ref(id),
            KeyStreams::Few(ids) => ids,
            KeyStreams::Many(indexed) => &indexed.ids,
        }
    }
}

/// Every distinct range watched, with the streams watching it.
#[derive(Default)]
struct RangeIndex {
    keys: HashMap<WatchRange, KeyStreams>,
    spans: SpanIndex,
}

impl RangeIndex {
    fn insert(&mut self, range: WatchRange, stream: StreamId) {
        if !range.is_single_key() {
            self.spans.insert(range, stream);
            return;
        }
        match self.keys.get_mut(&range) {
            Some(streams) => streams.add(stream),
            None => {
                self.keys.insert(range, KeyStreams::One(stream));
            }
        }
    }

    fn remove(&mut self, range: &WatchRange, stream: StreamId) {
        if !range.is_single_key() {
            let held = self.spans.remove(range, stream);
            debug_assert!(held, "stream {stream}'s {range:?} was not indexed");
            return;
        }
        let streams = self.keys.get_mut(range);
        debug_assert!(
            streams.as_ref().is_some_and(|s| s.contains(stream)),
            "stream {stream}'s {range:?} was not indexed"
        );
        if streams.is_some_and(|s| s.remove(stream)) {
            self.keys.remove(range);
        }
    }

    /// Every (range, stream) pair held, sorted (for tests).
    #[cfg(test)]
    fn pairs(&self) -> Vec<(Vec<u8>, StreamId)> {
        let mut out: Vec<(Vec<u8>, StreamId)> = self
            .keys
            .iter()
            .flat_map(|(r, s)| s.as_slice().iter().map(|id| (r.0.to_vec(), *id)))
            .chain(
                self.spans
                    .pairs()
                    .into_iter()
                    .map(|(r, id)| (r.0.to_vec(), id)),
            )
            .collect();
        out.sort();
        out
    }

    /// Push onto `out` the streams watching a range that holds one of `events`' keys, each
    /// once. `probe` is scratch space for the single-key lookups.
    fn streams_for(&self, events: &[Event], probe: &mut Vec<u8>, out: &mut Vec<StreamId>) {
        out.clear();
        // Lists that were pushed whole: one list is free of repeats (a key's streams are
        // distinct), two or more may share streams.
        let mut lists = 0;
        for kv in events.iter().filter_map(|e| e.kv.as_ref()) {
            WatchRange::probe(&kv.key, probe);
            if let Some(streams) = self.keys.get(probe.as_slice()) {
                out.extend_from_slice(streams.as_slice());
                lists += 1;
            }
            if !self.spans.is_empty() {
                let before = out.len();
                self.spans.streams_holding(&kv.key, &mut |s| out.push(s));
                // A stream may hold several spans that contain the key.
                lists += out.len() - before;
            }
        }
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

/// A stream's distinct ranges. Most streams watch one range (one watch per stream is the
/// common case), held inline; a map is allocated only for a second distinct range.
enum Ranges {
    None,
    One(WatchRange, u32),
    /// Two distinct ranges or more, each with its number of watchers. Boxed so that the
    /// inline case, which most streams are, stays small (a map is 48 bytes by itself).
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<WatchRange, u32>>),
}

impl Ranges {
    /// One more watcher on `range`; returns the copy of the range the stream keeps (the one
    /// already there if another watcher has the same range) and whether the range is new to
    /// the stream.
    fn add(&mut self, range: WatchRange) -> (WatchRange, bool) {
        match self {
            Ranges::None => {
                *self = Ranges::One(range.clone(), 1);
                (range, true)
            }
            Ranges::One(held, n) if *held == range => {
                *n += 1;
                (held.clone(), false)
            }
            Ranges::One(..) => {
                let Ranges::One(held, n) = std::mem::replace(self, Ranges::None) else {
                    unreachable!("matched One above")
                };
                let mut map = Box::<HashMap<WatchRange, u32>>::default();
                map.insert(held, n);
                map.insert(range.clone(), 1);
                *self = Ranges::Many(map);
                (range, true)
            }
            Ranges::Many(map) => match map.get_key_value(&range) {
                Some((shared, _)) => {
                    let shared = shared.clone();
                    *map.get_mut(&shared).expect("just found") += 1;
                    (shared, false)
                }
                None => {
                    map.insert(range.clone(), 1);
                    (range, true)
                }
            },
        }
    }

    /// One watcher on `range` less; returns whether that was the stream's last watcher on
    /// it. A map left with one range goes back inline, so that a stream's memory follows
    /// what it watches now.
    fn remove(&mut self, range: &WatchRange) -> bool {
        match self {
            Ranges::None => false,
            Ranges::One(held, n) => {
                if held != range {
                    return false;
                }
                *n -= 1;
                let gone = *n == 0;
                if gone {
                    *self = Ranges::None;
                }
                gone
            }
            Ranges::Many(map) => {
                let gone = match map.get_mut(range) {
                    Some(n) => {
                        *n -= 1;
                        *n == 0
                    }
                    None => false,
                };
                if gone {
                    map.remove(range);
                }
                if map.len() <= 1 {
                    let last = map.drain().next();
                    *self = match last {
                        Some((r, n)) => Ranges::One(r, n),
                        None => Ranges::None,
                    };
                }
                gone
            }
        }
    }

    /// The stream's distinct ranges.
    fn into_distinct(self) -> Vec<WatchRange> {
        match self {
            Ranges::None => Vec::new(),
            Ranges::One(r, _) => vec![r],
            Ranges::Many(map) => map.into_keys().collect(),
        }
    }
}

#[derive(Default)]
struct Inner {
    streams: HashMap<StreamId, Slot>,
    index: RangeIndex,
    /// Scratch buffers of [`WatchHub::publish`], kept so that it does not allocate.
    probe: Vec<u8>,
    targets: Vec<StreamId>,
    next_id: StreamId,
    /// Live [`HeldWakes`] guards: while any is, [`WatchHub::publish`] leaves the streams it
    /// fed asleep and keeps their wakers in `deferred`.
    held: u32,
    deferred: Vec<Waker>,
    /// Revisions published since `deferred` was last emptied.
    held_revs: u32,
}

/// Stream tasks the hub fed are woken only when this guard is dropped (see
/// [`WatchHub::hold_wakes`]).
pub struct HeldWakes(Arc<WatchHub>);

impl Drop for HeldWakes {
    fn drop(&mut self) {
        let wakers = {
            let mut inner = self.0.lock();
            inner.held -= 1;
            if inner.held > 0 {
                return;
            }
            inner.held_revs = 0;
            std::mem::take(&mut inner.deferred)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Fan-out point between the node thread and the watch streams (see the module docs).
#[derive(Default)]
pub struct WatchHub {
    inner: Mutex<Inner>,
}

/// What a new stream gets from [`WatchHub::register`].
pub struct Registration {
    pub id: StreamId,
    pub rx: queue::Receiver<Arc<RevBatch>>,
    pub victim: Arc<VictimMark>,
}

impl WatchHub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// A new stream with no watchers yet.
    pub fn register(&self) -> Registration {
        let (tx, rx) = queue::bounded(STREAM_QUEUE);
        let victim = Arc::new(VictimMark::default());
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.streams.insert(
            id,
            Slot {
                tx,
                ranges: Ranges::None,
                victim: victim.clone(),
            },
        );
        Registration { id, rx, victim }
    }

    /// Until the returned guard is dropped, streams that [`WatchHub::publish`] feeds are not
    /// woken (their batches are queued all the same). The node thread holds it over a
    /// round's apply and drops it once it has answered the round's proposers: waking a
    /// stream from the node thread puts its task on the runtime's queue, and the fan-out of
    /// a revision to every watcher would run before the answers that were queued after it.
    pub fn hold_wakes(self: &Arc<Self>) -> HeldWakes {
        self.lock().held += 1;
        HeldWakes(self.clone())
    }

    /// The stream is gone: no batch is offered to it from now on, and its ranges leave the
    /// index [`UNREGISTER_CHUNK`] at a time, the lock handed over between chunks, so that a
    /// stream with very many range watches does not hold up the node thread's
    /// [`WatchHub::publish`] for all of their removals at once. Meanwhile the index may
    /// still name the stream; `publish` skips a stream that is not registered.
    pub fn unregister(&self, stream: StreamId) {
        let slot = self.lock().streams.remove(&stream);
        let Some(slot) = slot else {
            return;
        };
        let ranges = slot.ranges.into_distinct();
        for chunk in ranges.chunks(UNREGISTER_CHUNK) {
            let mut inner = self.lock();
            for range in chunk {
                inner.index.remove(range, stream);
            }
            // To a waiting `publish`, if there is one: a plain unlock lets this thread take
            // the lock straight back, before the waiter has woken.
            MutexGuard::unlock_fair(inner);
        }
    }

    /// One more watcher of `stream` on `range`; returns the stream's copy of the range for
    /// the watcher to keep (the one already there if another watcher has the same range).
    pub fn add_range(&self, stream: StreamId, range: WatchRange) -> WatchRange {
        let mut inner = self.lock();
        let Inner { streams, index, .. } = &mut *inner;
        match streams.get_mut(&stream) {
            Some(slot) => {
                let (kept, new) = slot.ranges.add(range);
                if new {
                    index.insert(kept.clone(), stream);
                }
                kept
            }
            None => range,
        }
    }

    /// One watcher of `stream` on `range` less.
    pub fn remove_range(&self, stream: StreamId, range: &WatchRange) {
        let mut inner = self.lock();
        let Inner { streams, index, .. } = &mut *inner;
        if let Some(slot) = streams.get_mut(&stream) {
            if slot.ranges.remove(range) {
                index.remove(range, stream);
            }
        }
    }

    /// Number of streams registered (for tests and metrics).
    pub fn streams(&self) -> usize {
        self.lock().streams.len()
    }

    /// Offer the events of revision `rev` to every interested stream. Called by the node
    /// thread under the state machine's write lock; never blocks on a stream.
    pub fn publish(&self, rev: i64, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.streams.is_empty() {
            return;
        }
        let Inner {
            streams,
            index,
            probe,
            targets,
            held,
            deferred,
            held_revs,
            ..
        } = &mut *inner;
        index.streams_for(events, probe, targets);
        let mut batch: Option<Arc<RevBatch>> = None;
        for id in targets.iter() {
            // A stream that left while its ranges are still being taken out of the index.
            let Some(slot) = streams.get(id) else {
                continue;
            };
            if slot.victim.missed_from().is_some() {
                continue;
            }
            let b = batch
                .get_or_insert_with(|| {
                    Arc::new(RevBatch {
                        rev,
                        events: SharedEvents::new(events.to_vec()),
                    })
                })
                .clone();
            match slot.tx.try_send_unwoken(b) {
                Ok(None) => {}
                Ok(Some(waker)) if *held > 0 => deferred.push(waker),
                Ok(Some(waker)) => waker.wake(),
                Err(queue::TrySendError::Full(_)) => slot.victim.set(rev),
                // The stream is going away; it unregisters itself.
                Err(queue::TrySendError::Closed(_)) => {}
            }
        }
        if *held > 0 {
            *held_revs += 1;
            if *held_revs >= HELD_REVS {
                *held_revs = 0;
                deferred.drain(..).for_each(Waker::wake);
            }
        }
    }

    /// The store was replaced by a snapshot: nothing after `from_rev - 1` was published,
    /// so every stream catches up from history (or learns that it was compacted).
    pub fn restored(&self, from_rev: i64) {
        for slot in self.lock().streams.values() {
            slot.victim.set(from_rev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::mvccpb::KeyValue;

    fn put(key: &'static [u8], rev: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from_static(key),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn range(key: &'static [u8], end: &'static [u8]) -> WatchRange {
        WatchRange::new(key, end)
    }

    #[test]
    fn only_interested_streams_are_offered_a_revision() {
        let hub = WatchHub::default();
        let mut a = hub.register();
        let mut b = hub.register();
        hub.add_range(a.id, range(b"a", b""));
        let b_range = hub.add_range(b.id, range(b"b", b"\0"));
        hub.publish(2, &[put(b"a", 2)]);
        hub.publish(3, &[put(b"c", 3)]);
        assert_eq!(a.rx.try_recv().unwrap().rev, 2);
        assert!(a.rx.try_recv().is_err());
        assert_eq!(b.rx.try_recv().unwrap().rev, 3);
        hub.remove_range(b.id, &b_range);
        hub.publish(4, &[put(b"c", 4)]);
        assert!(b.rx.try_recv().is_err());
    }

    /// Counts the wake-ups of a waiting stream task.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_held_hub_queues_batches_and_wakes_their_streams_only_when_released() {
        use std::future::Future;
        let hub = Arc::new(WatchHub::default());
        let mut a = hub.register();
        hub.add_range(a.id, range(b"a", b""));
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let woken = || wakes.0.load(Ordering::SeqCst);
        // The stream task waits on its empty queue.
        let mut wait = |rx: &mut queue::Receiver<Arc<RevBatch>>| {
            let pending = std::pin::pin!(rx.recv()).poll(&mut cx).is_pending();
            assert!(pending, "the queue should be empty");
        };
        wait(&mut a.rx);
        let held = hub.hold_wakes();
        let held_too = hub.hold_wakes();
        hub.publish(2, &[put(b"a", 2)]);
        hub.publish(3, &[put(b"a", 3)]);
        drop(held);
        assert_eq!(woken(), 0, "woken while the hub was held");
        drop(held_too);
        assert_eq!(woken(), 1, "one wake-up for the queue that was empty");
        assert_eq!(a.rx.try_recv().unwrap().rev, 2);
        assert_eq!(a.rx.try_recv().unwrap().rev, 3);
        // A long round does not leave the stream asleep until its queue is full.
        wait(&mut a.rx);
        let held = hub.hold_wakes();
        for rev in 0..i64::from(HELD_REVS) {
            hub.publish(10 + rev, &[put(b"a", 10 + rev)]);
        }
        assert_eq!(woken(), 2, "woken after {HELD_REVS} revisions while held");
        drop(held);
        assert_eq!(woken(), 2, "no wake-up left to give");
        while a.rx.try_recv().is_ok() {}
        // Not held: woken at once.
        wait(&mut a.rx);
        hub.publish(4, &[put(b"a", 4)]);
        assert_eq!(woken(), 3);
        assert_eq!(a.rx.try_recv().unwrap().rev, 4);
    }

    #[test]
    fn a_probe_finds_the_single_key_range_and_no_other() {
        let mut probe = Vec::new();
        WatchRange::probe(b"key", &mut probe);
        let mut keys = HashMap::new();
        keys.insert(range(b"key", b""), 1u32);
        keys.insert(range(b"ke", b""), 1u32);
        assert!(keys.contains_key(probe.as_slice()));
        WatchRange::probe(b"k", &mut probe);
        assert!(!keys.contains_key(probe.as_slice()));
        // The key "ke" with end "y" encodes differently from the key "key".
        let mut spans = HashMap::new();
        spans.insert(range(b"ke", b"y"), 1u32);
        WatchRange::probe(b"key", &mut probe);
        assert!(!spans.contains_key(probe.as_slice()));
    }

    #[test]
    fn streams_of_keys_and_of_ranges_are_both_offered_what_they_watch() {
        let hub = WatchHub::default();
        let mut keys = hub.register();
        let mut spans = hub.register();
        for k in [&b"a"[..], b"b", b"c"] {
            hub.add_range(keys.id, WatchRange::new(k, b""));
        }
        hub.add_range(spans.id, range(b"m", b"p"));
        hub.add_range(spans.id, range(b"x", b"\0"));
        for (rev, key) in [(2, &b"b"[..]), (3, b"n"), (4, b"d"), (5, b"zz"), (6, b"p")] {
            hub.publish(rev, &[put(key, rev)]);
        }
        let got = |rx: &mut queue::Receiver<Arc<RevBatch>>| {
            std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.rev)).collect::<Vec<_>>()
        };
        assert_eq!(got(&mut keys.rx), vec![2]);
        assert_eq!(got(&mut spans.rx), vec![3, 5]);
        // A Txn touching a watched key among others reaches the stream once.
        hub.publish(7, &[put(b"q", 7), put(b"c", 7)]);
        assert_eq!(got(&mut keys.rx), vec![7]);
        assert!(got(&mut spans.rx).is_empty());
    }

    #[test]
    fn watchers_of_one_range_share_it_until_the_last_one_leaves() {
        let hub = WatchHub::default();
        let mut s = hub.register();
        let first = hub.add_range(s.id, range(b"k", b"l"));
        let second = hub.add_range(s.id, range(b"k", b"l"));
        assert!(Arc::ptr_eq(&first.0, &second.0));
        assert_eq!((second.key(), second.end()), (&b"k"[..], &b"l"[..]));
        hub.remove_range(s.id, &first);
        hub.publish(2, &[put(b"k", 2)]);
        assert_eq!(s.rx.try_recv().unwrap().rev, 2);
        hub.remove_range(s.id, &second);
        hub.publish(3, &[put(b"k", 3)]);
        assert!(s.rx.try_recv().is_err());
    }

    #[test]
    fn a_stream_keeps_one_range_inline_and_maps_only_for_more() {
        let hub = WatchHub::default();
        let mut s = hub.register();
        let inline = |hub: &WatchHub| {
            matches!(
                hub.lock().streams.values().next().unwrap().ranges,
                Ranges::None | Ranges::One(..)
            )
        };
        let got = |rx: &mut queue::Receiver<Arc<RevBatch>>| {
            std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.rev)).collect::<Vec<_>>()
        };
        let key = hub.add_range(s.id, range(b"k", b""));
        let key_again = hub.add_range(s.id, range(b"k", b""));
        assert!(inline(&hub));
        let span = hub.add_range(s.id, range(b"m", b"p"));
        assert!(!inline(&hub));
        for (rev, k) in [(2, &b"k"[..]), (3, b"n"), (4, b"x")] {
            hub.publish(rev, &[put(k, rev)]);
        }
        assert_eq!(got(&mut s.rx), vec![2, 3]);
        // Back to the one single key (still watched twice): inline again.
        hub.remove_range(s.id, &span);
        assert!(inline(&hub));
        hub.remove_range(s.id, &key);
        for (rev, k) in [(5, &b"k"[..]), (6, b"n")] {
            hub.publish(rev, &[put(k, rev)]);
        }
        assert_eq!(got(&mut s.rx), vec![5]);
        hub.remove_range(s.id, &key_again);
        hub.publish(7, &[put(b"k", 7)]);
        assert!(got(&mut s.rx).is_empty());
        // A span alone, inline, is scanned like one in a map.
        hub.add_range(s.id, range(b"m", b"p"));
        assert!(inline(&hub));
        hub.publish(8, &[put(b"k", 8), put(b"o", 8)]);
        hub.publish(9, &[put(b"p", 9)]);
        assert_eq!(got(&mut s.rx), vec![8]);
    }

    #[test]
    fn a_stream_that_leaves_is_dropped_from_the_index() {
        let hub = WatchHub::default();
        let a = hub.register();
        let mut b = hub.register();
        for s in [a.id, b.id] {
            hub.add_range(s, range(b"k", b""));
            hub.add_range(s, range(b"p/", b"p0"));
        }
        hub.add_range(a.id, range(b"\0", b"\0"));
        hub.unregister(a.id);
        {
            let inner = hub.lock();
            assert_eq!(inner.index.spans.len(), 1, "b's span only");
            assert_eq!(inner.index.keys.len(), 1);
            assert_eq!(inner.index.keys.values().next().unwrap().as_slice(), [b.id]);
        }
        hub.publish(2, &[put(b"p/x", 2)]);
        assert_eq!(b.rx.try_recv().unwrap().rev, 2);
        hub.unregister(b.id);
        let inner = hub.lock();
        assert!(inner.index.spans.is_empty() && inner.index.keys.is_empty());
    }

    #[test]
    fn a_stream_with_many_ranges_leaves_the_index_whole_over_several_chunks() {
        let hub = WatchHub::default();
        let gone = hub.register();
        let mut stays = hub.register();
        let n = 3 * UNREGISTER_CHUNK + 7;
        for i in 0..n {
            let from = format!("r{i:06}/");
            let end = format!("r{i:06}0");
            hub.add_range(gone.id, WatchRange::new(from.as_bytes(), end.as_bytes()));
            hub.add_range(gone.id, WatchRange::new(format!("k{i}").as_bytes(), b""));
        }
        hub.add_range(stays.id, range(b"r000001/", b"r0000010"));
        hub.unregister(gone.id);
        {
            let inner = hub.lock();
            assert_eq!(inner.index.spans.len(), 1, "only the stream that stays");
            assert!(inner.index.keys.is_empty());
        }
        hub.publish(2, &[put(b"r000001/x", 2)]);
        assert_eq!(stays.rx.try_recv().unwrap().rev, 2);
    }

    /// While a departing stream's ranges are still being taken out of the index (between
    /// two chunks), `publish` offers nothing to it and still feeds the others.
    #[test]
    fn a_revision_published_while_a_stream_leaves_skips_it() {
        let hub = WatchHub::default();
        let leaving = hub.register();
        let mut stays = hub.register();
        for s in [leaving.id, stays.id] {
            hub.add_range(s, range(b"k", b""));
            hub.add_range(s, range(b"p/", b"p0"));
        }
        // What `unregister` does first: the slot goes, the index still names the stream.
        hub.lock().streams.remove(&leaving.id);
        hub.publish(2, &[put(b"k", 2), put(b"p/x", 2)]);
        assert_eq!(stays.rx.try_recv().unwrap().rev, 2);
    }

    #[test]
    fn a_key_of_three_streams_keeps_the_two_left_when_the_middle_one_goes() {
        let hub = WatchHub::default();
        let mut regs: Vec<Registration> = (0..3).map(|_| hub.register()).collect();
        for r in &regs {
            hub.add_range(r.id, range(b"k", b""));
        }
        hub.remove_range(regs[1].id, &WatchRange::new(b"k", b""));
        hub.publish(2, &[put(b"k", 2)]);
        let got: Vec<bool> = regs.iter_mut().map(|r| r.rx.try_recv().is_ok()).collect();
        assert_eq!(got, [true, false, true]);
        hub.unregister(regs[0].id);
        assert!(matches!(
            hub.lock().index.keys.values().next(),
            Some(KeyStreams::One(id)) if *id == regs[2].id
        ));
        hub.publish(3, &[put(b"k", 3)]);
        assert_eq!(regs[2].rx.try_recv().unwrap().rev, 3);
    }

    /// The list's streams as a set, after checking that a position index agrees with it.
    fn key_streams_checked(streams: &KeyStreams) -> std::collections::BTreeSet<StreamId> {
        if let KeyStreams::Many(indexed) = streams {
            assert_eq!(
                indexed.at.len(),
                indexed.ids.len(),
                "an index entry per stream"
            );
            for (i, id) in indexed.ids.iter().enumerate() {
                assert_eq!(
                    indexed.at.get(id),
                    Some(&i),
                    "stream {id} indexed where it is"
                );
            }
        }
        let set: std::collections::BTreeSet<StreamId> =
            streams.as_slice().iter().copied().collect();
        assert_eq!(set.len(), streams.as_slice().len(), "each stream once");
        set
    }

    #[test]
    fn a_key_of_thousands_of_streams_indexes_them_and_gives_the_index_back_when_few_are_left() {
        let mut model = std::collections::BTreeSet::new();
        let mut streams = KeyStreams::One(0);
        model.insert(0);
        for id in 1..5_000 {
            streams.add(id);
            model.insert(id);
        }
        assert!(matches!(streams, KeyStreams::Many(_)));
        assert_eq!(key_streams_checked(&streams), model);
        // Leave in a scrambled order (a fixed LCG), joining a few back on the way.
        let mut order: Vec<StreamId> = model.iter().copied().collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in (1..order.len()).rev() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let mut next_new = 10_000;
        for (n, id) in order.into_iter().enumerate() {
            model.remove(&id);
            assert!(!streams.remove(id), "streams that joined later are left");
            if n % 97 == 0 && model.len() > 2 {
                streams.add(next_new);
                model.insert(next_new);
                next_new += 1;
            }
            if n % 50 == 0 {
                assert_eq!(key_streams_checked(&streams), model, "after {n} removals");
            }
        }
        assert!(
            model.len() > SCAN_LIMIT && matches!(streams, KeyStreams::Many(_)),
            "the streams that joined on the way are still indexed"
        );
        // The streams that joined on the way leave last.
        let joined: Vec<StreamId> = model.iter().copied().collect();
        for id in joined {
            model.remove(&id);
            assert_eq!(streams.remove(id), model.is_empty());
            if model.is_empty() {
                break;
            }
            assert_eq!(key_streams_checked(&streams), model);
            match model.len() {
                1 => assert!(matches!(streams, KeyStreams::One(_))),
                l if l <= SCAN_LIMIT / 2 => assert!(matches!(streams, KeyStreams::Few(_))),
                _ => assert!(
                    matches!(streams, KeyStreams::Many(_)),
                    "{} left",
                    model.len()
                ),
            }
        }
    }

    #[test]
    fn a_key_watched_by_many_streams_reaches_exactly_those_still_there() {
        let hub = WatchHub::default();
        let mut regs: Vec<Registration> = (0..100).map(|_| hub.register()).collect();
        for r in &regs {
            hub.add_range(r.id, range(b"k", b""));
        }
        for r in regs.iter().step_by(3) {
            hub.unregister(r.id);
        }
        let left: Vec<(Vec<u8>, StreamId)> = regs
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, r)| (range(b"k", b"").0.to_vec(), r.id))
            .collect();
        assert_eq!(
            hub.lock().index.pairs(),
            left,
            "the index holds exactly those left"
        );
        hub.publish(2, &[put(b"k", 2)]);
        for (i, r) in regs.iter_mut().enumerate() {
            assert_eq!(r.rx.try_recv().is_ok(), i % 3 != 0, "stream {i}");
        }
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Register,
            Add(usize, &'static [u8], &'static [u8]),
            Remove(usize, usize),
            Unregister(usize),
            Publish(Vec<&'static [u8]>),
        }

        fn key() -> impl Strategy<Value = &'static [u8]> {
            prop::sample::select(vec![&b"a"[..], b"a/", b"a/1", b"ab", b"b", b"\0", b""])
        }

        fn op() -> impl Strategy<Value = Op> {
            let end = prop::sample::select(vec![&b""[..], b"\0", b"\0a", b"a0", b"b", b"c"]);
            prop_oneof![
                1 => Just(Op::Register),
                4 => (any::<usize>(), key(), end).prop_map(|(s, k, e)| Op::Add(s, k, e)),
                2 => (any::<usize>(), any::<usize>()).prop_map(|(s, r)| Op::Remove(s, r)),
                1 => any::<usize>().prop_map(Op::Unregister),
                4 => prop::collection::vec(key(), 1..3).prop_map(Op::Publish),
            ]
        }

        proptest! {
            /// Against a list of every stream's watched ranges: each revision reaches exactly
            /// the streams with a range that holds one of its keys, once, whatever sequence of
            /// creates, cancels and departures came before.
            #[test]
            fn a_revision_reaches_exactly_the_streams_watching_its_keys(
                ops in prop::collection::vec(op(), 1..80)
            ) {
                let hub = WatchHub::default();
                // Per live stream: its registration and the ranges its watchers hold.
                let mut live: Vec<(Registration, Vec<WatchRange>)> = Vec::new();
                let mut rev = 1;
                for op in ops {
                    match op {
                        Op::Register => live.push((hub.register(), Vec::new())),
                        Op::Add(s, k, e) if !live.is_empty() => {
                            let i = s % live.len();
                            let kept = hub.add_range(live[i].0.id, WatchRange::new(k, e));
                            live[i].1.push(kept);
                        }
                        Op::Remove(s, r) if !live.is_empty() => {
                            let i = s % live.len();
                            if !live[i].1.is_empty() {
                                let n = live[i].1.len();
                                let range = live[i].1.swap_remove(r % n);
                                // An equal range in a copy of its own, every other time: the
                                // hub must find its entry by value.
                                let range = if r % 2 == 0 {
                                    range
                                } else {
                                    WatchRange::new(range.key(), range.end())
                                };
                                hub.remove_range(live[i].0.id, &range);
                            }
                        }
                        Op::Unregister(s) if !live.is_empty() => {
                            let (reg, _) = live.swap_remove(s % live.len());
                            hub.unregister(reg.id);
                        }
                        Op::Publish(keys) => {
                            rev += 1;
                            let events: Vec<Event> = keys.iter().map(|k| put(k, rev)).collect();
                            hub.publish(rev, &events);
                            for (reg, ranges) in &mut live {
                                let wants = ranges
                                    .iter()
                                    .any(|r| keys.iter().any(|k| r.contains(k)));
                                let got: Vec<i64> =
                                    std::iter::from_fn(|| reg.rx.try_recv().ok().map(|b| b.rev))
                                        .collect();
                                let want = if wants { vec![rev] } else { vec![] };
                                prop_assert_eq!(got, want, "stream {} with {:?}", reg.id, ranges);
                            }
                        }
                        _ => {}
                    }
                    // The index holds each stream's distinct ranges, once, and nothing else.
                    let mut want: Vec<(Vec<u8>, StreamId)> = live
                        .iter()
                        .flat_map(|(reg, ranges)| ranges.iter().map(|r| (r.0.to_vec(), reg.id)))
                        .collect();
                    want.sort();
                    want.dedup();
                    prop_assert_eq!(hub.lock().index.pairs(), want);
                }
                for (reg, _) in live {
                    hub.unregister(reg.id);
                }
                let inner = hub.lock();
                prop_assert!(inner.index.spans.is_empty() && inner.index.keys.is_empty());
            }
        }
    }

    #[test]
    fn a_full_queue_makes_a_victim_from_the_first_missed_revision() {
        let hub = WatchHub::default();
        let mut s = hub.register();
        let mut other = hub.register();
        hub.add_range(s.id, range(b"k", b""));
        hub.add_range(other.id, range(b"k", b""));
        for rev in 2..2 + STREAM_QUEUE as i64 + 5 {
            hub.publish(rev, &[put(b"k", rev)]);
            // The other stream keeps up and is never set aside.
            assert_eq!(other.rx.try_recv().unwrap().rev, rev);
        }
        assert_eq!(s.victim.missed_from(), Some(2 + STREAM_QUEUE as i64));
        assert!(other.victim.missed_from().is_none());
        let mut n = 0;
        while s.rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, STREAM_QUEUE);
        assert_eq!(s.victim.take(), Some(2 + STREAM_QUEUE as i64));
        hub.publish(1000, &[put(b"k", 1000)]);
        assert_eq!(s.rx.try_recv().unwrap().rev, 1000);
        hub.unregister(s.id);
        assert_eq!(hub.streams(), 1);
    }
}
