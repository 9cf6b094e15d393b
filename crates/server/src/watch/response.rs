//! Building watch responses: one watcher's view of a set of events, and etcd's splitting
//! of an oversized response into fragments.

use prost::Message as _;
use proto::etcdserverpb::watch_create_request::FilterType;
use proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use proto::mvccpb::{event::EventType, Event};

use super::encode::{EventWriter, Outgoing, SharedEvents};
use super::hub::WatchRange;
use crate::hooks::WatchSabotage;

/// The part of a watcher that decides which events it sees and how.
#[derive(Debug, Clone)]
pub struct Selection {
    pub range: WatchRange,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl Selection {
    /// From a create request, with etcd's rewrite of an empty key to `"\0"` (the smallest
    /// key). Filter values etcd does not know are ignored, as etcd ignores them. Key and
    /// range end are copied: the decoded request's bytes share the connection's read
    /// buffer, which a long-lived watcher would otherwise keep alive.
    pub fn from_request(req: &WatchCreateRequest) -> Selection {
        let key: &[u8] = if req.key.is_empty() { b"\0" } else { &req.key };
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        Selection {
            range: WatchRange::new(key, &req.range_end),
            prev_kv: req.prev_kv,
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
        }
    }

    /// etcd refuses a range whose end is not after its key (a from-key or single-key watch
    /// has no end to compare).
    pub fn is_empty_range(&self) -> bool {
        let end = self.range.end();
        !end.is_empty() && end != [0] && self.range.key() >= end
    }

    pub fn wants(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else { return false };
        if !self.range.contains(&kv.key) {
            return false;
        }
        match EventType::try_from(e.r#type) {
            Ok(EventType::Put) => !self.no_put,
            Ok(EventType::Delete) => !self.no_delete,
            Err(_) => false,
        }
    }

    /// The events this watcher sees, in order, with `prev_kv` only if it asked for it
    /// (`sabotage` is `None` but in the harness's negative control, `crate::hooks`).
    pub fn select<'e>(
        &self,
        sabotage: WatchSabotage,
        events: impl IntoIterator<Item = &'e Event>,
    ) -> Vec<Event> {
        events
            .into_iter()
            .filter(|e| self.wants(e))
            .filter_map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                sabotage.apply(e)
            })
            .collect()
    }
}

/// A step's response header, as a message and as the writer of every event response that
/// carries it (the header is encoded once for all of them).
pub struct Header {
    pub msg: ResponseHeader,
    pub writer: EventWriter,
    memo: FieldsMemo,
}

impl Header {
    pub fn new(msg: ResponseHeader) -> Header {
        Header {
            writer: EventWriter::new(&msg),
            msg,
            memo: FieldsMemo::default(),
        }
    }
}

/// The encoded events the last watcher of a step was given, and what chose them (its
/// selection and the sources with their start revisions). Watchers of one range on one
/// stream, with the same options and the same next revision, receive the same events and
/// differ only in their watch id (1,000 watchers of one key over 10 streams: 100 alike per
/// stream). The next such watcher's response is its header, its id and a copy of these
/// bytes, without selecting the events and looking each one's encoding up again.
#[derive(Default)]
struct FieldsMemo {
    range: Option<WatchRange>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    /// Each source's address (alive for the whole step) and start revision.
    sources: Vec<(usize, i64)>,
    fields: Vec<u8>,
    events: usize,
}

/// A source's identity within one step.
fn source_key(&(src, from): &(&SharedEvents, i64)) -> (usize, i64) {
    (std::ptr::from_ref(src) as usize, from)
}

impl FieldsMemo {
    /// Whether the remembered fields are what `sel` picks of `sources`.
    fn holds(&self, sel: &Selection, sources: &[(&SharedEvents, i64)]) -> bool {
        self.range.as_ref().is_some_and(|r| r.same(&sel.range))
            && self.prev_kv == sel.prev_kv
            && self.no_put == sel.no_put
            && self.no_delete == sel.no_delete
            && self.sources.len() == sources.len()
            && self
                .sources
                .iter()
                .zip(sources)
                .all(|(k, s)| *k == source_key(s))
    }

    /// Remember `fields` (`events` of them) as what `sel` picks of `sources`.
    fn remember<'a>(
        &mut self,
        sel: &Selection,
        sources: &[(&SharedEvents, i64)],
        fields: impl IntoIterator<Item = &'a [u8]>,
    ) {
        if !self.range.as_ref().is_some_and(|r| r.same(&sel.range)) {
            self.range = Some(sel.range.clone());
        }
        self.prev_kv = sel.prev_kv;
        self.no_put = sel.no_put;
        self.no_delete = sel.no_delete;
        self.sources.clear();
        self.sources.extend(sources.iter().map(source_key));
        self.fields.clear();
        self.events = 0;
        for f in fields {
            self.fields.extend_from_slice(f);
            self.events += 1;
        }
    }
}

/// How one watcher's events go out.
pub struct Reply<'a> {
    pub sel: &'a Selection,
    pub watch_id: i64,
    /// The watcher asked for etcd's fragmentation, at `limit` bytes.
    pub fragment: bool,
    pub limit: usize,
    pub sabotage: WatchSabotage,
}

impl Reply<'_> {
    /// Appends to `out` the response(s) carrying what the watcher wants of `sources`, each
    /// source taken from the revision given with it. Returns whether there was any event.
    ///
    /// The usual response is assembled from the events encoded once for every watcher (and
    /// selected once for the watchers alike, [`FieldsMemo`]); a watcher whose response must
    /// be fragmented (or the harness's sabotage) gets its events as messages.
    pub fn append(
        &self,
        header: &mut Header,
        sources: &[(&SharedEvents, i64)],
        out: &mut Vec<Outgoing>,
    ) -> bool {
        let sel = self.sel;
        let picked = || {
            sources.iter().flat_map(|&(src, from)| {
                src.events()
                    .iter()
                    .enumerate()
                    .filter(move |(_, e)| {
                        e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= from) && sel.wants(e)
                    })
                    .map(move |(i, e)| (src, i, e))
            })
        };
        if self.sabotage == WatchSabotage::None {
            let memo = &mut header.memo;
            if !memo.holds(sel, sources) {
                let encoded = picked().map(|(src, i, _)| src.field(i, sel.prev_kv));
                memo.remember(sel, sources, encoded);
            }
            if memo.events == 0 {
                return false;
            }
            let resp = header
                .writer
                .response_with_fields(self.watch_id, &memo.fields);
            if !(self.fragment && memo.events >= 2 && resp.encoded_len() >= self.limit) {
                out.push(resp);
                return true;
            }
        }
        let events = sel.select(self.sabotage, picked().map(|(_, _, e)| e));
        if events.is_empty() {
            return false;
        }
        let resp = WatchResponse {
            header: Some(header.msg),
            watch_id: self.watch_id,
            events,
            ..Default::default()
        };
        if self.fragment {
            out.extend(fragments(resp, self.limit).iter().map(Outgoing::message));
        } else {
            out.push(Outgoing::message(&resp));
        }
        true
    }
}

/// etcd's fragmentation: a response of at least `limit` encoded bytes with two or more
/// events is cut into pieces that each stay under `limit` (a single event may exceed it);
/// every piece but the last has `fragment = true`. Events of one revision may be split
/// across pieces: the client reassembles them.
pub fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut template = resp.clone();
    template.events = Vec::new();
    template.fragment = true;
    let mut pieces = Vec::new();
    let mut current = template.clone();
    for ev in resp.events {
        current.events.push(ev);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let ev = current.events.pop().expect("just pushed");
            pieces.push(std::mem::replace(&mut current, template.clone()));
            current.events.push(ev);
        }
    }
    current.fragment = false;
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::mvccpb::KeyValue;

    fn ev(t: EventType, key: &'static [u8], value_len: usize) -> Event {
        Event {
            r#type: t as i32,
            kv: Some(KeyValue {
                key: Bytes::from_static(key),
                value: Bytes::from(vec![b'x'; value_len]),
                ..Default::default()
            }),
            prev_kv: Some(KeyValue::default()),
        }
    }

    #[test]
    fn filters_ranges_and_prev_kv() {
        let req = WatchCreateRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"c"),
            filters: vec![FilterType::Nodelete as i32, 7],
            ..Default::default()
        };
        let s = Selection::from_request(&req);
        let evs = [
            ev(EventType::Put, b"a", 1),
            ev(EventType::Delete, b"b", 0),
            ev(EventType::Put, b"c", 1),
            ev(EventType::Put, b"bz", 1),
        ];
        let got = s.select(WatchSabotage::None, &evs);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.prev_kv.is_none()));
        assert!(!s.is_empty_range());
        let bad = Selection::from_request(&WatchCreateRequest {
            key: Bytes::from_static(b"b"),
            range_end: Bytes::from_static(b"a"),
            ..Default::default()
        });
        assert!(bad.is_empty_range());
        let all = Selection::from_request(&WatchCreateRequest {
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        });
        assert!(!all.is_empty_range());
        assert_eq!(all.select(WatchSabotage::None, &evs).len(), 4);
    }

    /// Watchers alike share the memo's bytes; one that differs in any part of what chose
    /// them (range, options, sources, start revision) gets its own selection, and every
    /// response is what a message built for that watcher would encode.
    #[test]
    fn watchers_alike_get_the_same_events_and_the_others_their_own() {
        use bytes::Bytes;
        let put = |key: &'static [u8], rev: i64| {
            let mut e = ev(EventType::Put, key, 3);
            e.kv.as_mut().unwrap().mod_revision = rev;
            e.prev_kv.as_mut().unwrap().value = Bytes::from_static(b"old");
            e
        };
        let first = SharedEvents::new(vec![put(b"a", 5), put(b"b", 5)]);
        let second = SharedEvents::new(vec![put(b"a", 6)]);
        let watch = |key: &'static [u8], prev_kv: bool, filters: Vec<i32>| {
            Selection::from_request(&WatchCreateRequest {
                key: Bytes::from_static(key),
                prev_kv,
                filters,
                ..Default::default()
            })
        };
        let a = watch(b"a", false, vec![]);
        let a_same = Selection {
            range: a.range.clone(),
            ..a.clone()
        };
        let a_prev = Selection {
            prev_kv: true,
            ..a.clone()
        };
        let a_noput = Selection {
            no_put: true,
            ..a.clone()
        };
        // An equal range, but not the shared copy: selected again (same result).
        let a_other_copy = watch(b"a", false, vec![]);
        let b = watch(b"b", false, vec![]);
        let both: &[(&SharedEvents, i64)] = &[(&first, i64::MIN), (&second, i64::MIN)];
        let later: &[(&SharedEvents, i64)] = &[(&first, 6), (&second, i64::MIN)];
        let msg = ResponseHeader {
            revision: 6,
            ..Default::default()
        };
        let mut header = Header::new(msg);
        let cases: Vec<(&Selection, &[(&SharedEvents, i64)])> = vec![
            (&a, both),
            (&a_same, both),
            (&a, both),
            (&a_prev, both),
            (&a, later),
            (&a_noput, both),
            (&a_other_copy, both),
            (&b, both),
            (&a, both),
        ];
        for (id, (sel, sources)) in cases.into_iter().enumerate() {
            let reply = Reply {
                sel,
                watch_id: id as i64,
                fragment: false,
                limit: 1 << 20,
                sabotage: WatchSabotage::None,
            };
            let mut out = Vec::new();
            let any = reply.append(&mut header, sources, &mut out);
            let expected = sel.select(
                WatchSabotage::None,
                sources.iter().flat_map(|&(src, from)| {
                    src.events()
                        .iter()
                        .filter(move |e| e.kv.as_ref().unwrap().mod_revision >= from)
                }),
            );
            assert_eq!(any, !expected.is_empty(), "watcher {id}");
            let got: Vec<WatchResponse> = out.iter().map(|o| o.decode().unwrap()).collect();
            let want: Vec<WatchResponse> = (!expected.is_empty())
                .then(|| WatchResponse {
                    header: Some(msg),
                    watch_id: id as i64,
                    events: expected,
                    ..Default::default()
                })
                .into_iter()
                .collect();
            assert_eq!(got, want, "watcher {id}");
        }
    }

    #[test]
    fn fragments_keep_every_event_once_and_mark_all_but_the_last() {
        let resp = WatchResponse {
            watch_id: 3,
            events: (0..10).map(|_| ev(EventType::Put, b"k", 100)).collect(),
            ..Default::default()
        };
        let pieces = fragments(resp.clone(), 350);
        assert!(pieces.len() > 1);
        let n: usize = pieces.iter().map(|p| p.events.len()).sum();
        assert_eq!(n, 10);
        for p in &pieces[..pieces.len() - 1] {
            assert!(p.fragment && p.encoded_len() < 350);
        }
        assert!(!pieces.last().unwrap().fragment);
        assert_eq!(fragments(resp.clone(), 1 << 20), vec![resp]);
    }
}
