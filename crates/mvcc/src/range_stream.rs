//! A Range answer encoded in bounded pieces from a point-in-time view of the store, so that
//! serving it costs memory in proportion to a piece, not to the answer (issue 18: 100
//! concurrent unpaginated reads over a 1 GiB store must not take 100 × 1 GiB).
//!
//! [`RangeStream::new`] takes an O(1) view ([`Store::view`]) and walks the range once to
//! learn the number of keys and the encoded length of the answer (gRPC's length prefix comes
//! before the message). [`RangeStream::fill`] then encodes the answer piece by piece, walking
//! the view again from the last key written. The bytes are exactly prost's encoding of the
//! [`RangeResponse`] that [`Store::range`] gives for the same request at the same revision:
//! header, then the kvs in key order, then `more` and `count`, each field only when prost
//! would write it.
//!
//! Only requests whose answer is in key order without filtering take this path
//! ([`RangeStream::new`] returns `None` for the others, which [`Store::range`] serves): no
//! sort other than by key ascending, no revision filters, not `count_only`.

use std::ops::Bound;

use bytes::{Bytes, BytesMut};
use proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use proto::etcdserverpb::{RangeRequest, ResponseHeader};
use proto::prost::encoding;

use crate::error::MvccError;
use crate::key_range::KeyRange;
use crate::store::{key_value, Store};
use crate::validate;

/// A Range answer being encoded from a view of the store.
#[derive(Debug)]
pub struct RangeStream {
    view: Store,
    /// The revision the keys are read at.
    rev: i64,
    /// The answer's header: the view's revision; the server fills in its identity.
    pub header: Option<ResponseHeader>,
    /// The next key to look at, and the end of the range.
    next: Bound<Bytes>,
    end: Bound<Bytes>,
    keys_only: bool,
    /// Key-values still to encode.
    left: usize,
    /// Every key of the range alive at `rev`, and whether `limit` cut the answer short.
    count: usize,
    more: bool,
    /// The encoded length of all the `kvs` fields.
    kvs_len: usize,
    header_written: bool,
    finished: bool,
}

/// Whether `req` asks for its keys in key order without filtering or counting only.
pub fn streamable(req: &RangeRequest) -> bool {
    let key_order = req.sort_target == SortTarget::Key as i32
        && (req.sort_order == SortOrder::None as i32 || req.sort_order == SortOrder::Ascend as i32);
    let filters = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    key_order && !filters && !req.count_only
}

fn owned(bound: Bound<&[u8]>) -> Bound<Bytes> {
    bound.map(Bytes::copy_from_slice)
}

impl RangeStream {
    /// The answer to `req` from `view` (a [`Store::view`]), read at the view's current
    /// revision like [`Store::range`]; `None` when `req` is not [`streamable`]. The errors are
    /// [`Store::range`]'s.
    pub fn new(view: Store, req: &RangeRequest) -> Result<Option<RangeStream>, MvccError> {
        if !streamable(req) {
            return Ok(None);
        }
        validate::check_range(req)?;
        let view_rev = view.current;
        let rev = view.resolve_read_revision(req.revision, view_rev)?;
        let limit = match usize::try_from(req.limit) {
            Ok(l) if l > 0 => l,
            _ => usize::MAX,
        };
        let (next, end) = match KeyRange::new(&req.key, &req.range_end).bounds() {
            Some((start, end)) => (owned(start), owned(end)),
            // An empty range: nothing to walk.
            None => (Bound::Excluded(Bytes::new()), Bound::Excluded(Bytes::new())),
        };
        let mut stream = RangeStream {
            view,
            rev,
            header: Some(ResponseHeader {
                revision: view_rev,
                ..Default::default()
            }),
            next,
            end,
            keys_only: req.keys_only,
            left: 0,
            count: 0,
            more: false,
            kvs_len: 0,
            header_written: false,
            finished: false,
        };
        let empty = matches!(
            (&stream.next, &stream.end),
            (Bound::Excluded(a), Bound::Excluded(b)) if a.is_empty() && b.is_empty()
        );
        if !empty {
            let (mut count, mut kvs, mut kvs_len) = (0usize, 0usize, 0usize);
            for (key, history) in stream.view.keys.range::<_, [u8]>(stream.bounds()) {
                let Some((at, live)) = history.live_at(rev) else {
                    continue;
                };
                count += 1;
                if kvs < limit {
                    kvs += 1;
                    kvs_len += encoding::message::encoded_len(2, &stream.kv(key, at, live));
                }
            }
            stream.count = count;
            stream.left = kvs;
            stream.more = count > kvs;
            stream.kvs_len = kvs_len;
        }
        Ok(Some(stream))
    }

    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            self.next.as_ref().map(|b| b.as_ref()),
            self.end.as_ref().map(|b| b.as_ref()),
        )
    }

    fn kv(
        &self,
        key: &Bytes,
        at: crate::Revision,
        live: &crate::key_history::Live,
    ) -> proto::mvccpb::KeyValue {
        let mut kv = key_value(key, at, live);
        if self.keys_only {
            kv.value = Bytes::new();
        }
        kv
    }

    /// The number of keys in the range (the answer's `count`).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The encoded length of the whole answer, with the current [`RangeStream::header`].
    pub fn message_len(&self) -> usize {
        let header = self
            .header
            .as_ref()
            .map_or(0, |h| encoding::message::encoded_len(1, h));
        let more = if self.more {
            encoding::bool::encoded_len(3, &true)
        } else {
            0
        };
        let count = i64::try_from(self.count).unwrap_or(i64::MAX);
        let count = if count != 0 {
            encoding::int64::encoded_len(4, &count)
        } else {
            0
        };
        header + self.kvs_len + more + count
    }

    /// Appends the next piece of the answer to `buf`: key-values until `buf` holds at least
    /// `target` bytes (one at least, however large), the header before the first and the
    /// `more` and `count` fields after the last. Returns false once the answer is complete.
    pub fn fill(&mut self, buf: &mut BytesMut, target: usize) -> bool {
        if self.finished {
            return false;
        }
        if !self.header_written {
            if let Some(h) = &self.header {
                encoding::message::encode(1, h, buf);
            }
            self.header_written = true;
        }
        while self.left > 0 && buf.len() < target {
            let mut last = None;
            let mut wrote = false;
            for (key, history) in self.view.keys.range::<_, [u8]>(self.bounds()) {
                last = Some(key.clone());
                let Some((at, live)) = history.live_at(self.rev) else {
                    continue;
                };
                encoding::message::encode(2, &self.kv(key, at, live), buf);
                wrote = true;
                self.left -= 1;
                if self.left == 0 || buf.len() >= target {
                    break;
                }
            }
            match last {
                Some(key) => self.next = Bound::Excluded(key),
                None => self.left = 0,
            }
            if !wrote && self.left > 0 {
                // The view cannot change under us, so the first walk's keys are all there;
                // stop rather than loop should that ever not hold.
                self.left = 0;
            }
        }
        if self.left == 0 {
            if self.more {
                encoding::bool::encode(3, &true, buf);
            }
            let count = i64::try_from(self.count).unwrap_or(i64::MAX);
            if count != 0 {
                encoding::int64::encode(4, &count, buf);
            }
            self.finished = true;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::prost::Message as _;
    use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest};

    fn apply(store: &mut Store, r: Internal) {
        store
            .apply(&InternalRequest {
                auth: None,
                request: Some(r),
            })
            .expect("apply");
    }

    fn put(store: &mut Store, key: &str, value: &str) {
        apply(
            store,
            Internal::Put(proto::etcdserverpb::PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..Default::default()
            }),
        );
    }

    /// A store with live keys, deleted keys, overwritten keys and an old revision.
    fn store() -> Store {
        let mut s = Store::new();
        for i in 0..300 {
            put(&mut s, &format!("k{i:04}"), &"v".repeat(i % 50));
        }
        for i in (0..300).step_by(7) {
            apply(
                &mut s,
                Internal::DeleteRange(proto::etcdserverpb::DeleteRangeRequest {
                    key: Bytes::from(format!("k{i:04}")),
                    ..Default::default()
                }),
            );
        }
        for i in (0..300).step_by(5) {
            put(&mut s, &format!("k{i:04}"), "again");
        }
        put(&mut s, "other", "x");
        s
    }

    fn streamed(
        s: &Store,
        req: &RangeRequest,
        target: usize,
    ) -> Result<Option<Vec<u8>>, MvccError> {
        let Some(mut stream) = RangeStream::new(s.view(), req)? else {
            return Ok(None);
        };
        let len = stream.message_len();
        let mut out = BytesMut::new();
        let mut pieces = 0;
        loop {
            let before = out.len();
            let more = stream.fill(&mut out, before + target);
            pieces += 1;
            if !more {
                break;
            }
            assert!(pieces < 100_000, "the stream does not end");
        }
        assert_eq!(out.len(), len, "message_len is the length written");
        if target < 100 && len > 1000 {
            assert!(pieces > 10, "small targets give many pieces ({pieces})");
        }
        Ok(Some(out.to_vec()))
    }

    fn req(key: &str, end: &str) -> RangeRequest {
        RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            ..Default::default()
        }
    }

    #[test]
    fn pieces_are_the_encoding_of_store_range() {
        let s = store();
        let mut cases = vec![
            req("k", "l"),
            req("k0100", "k0200"),
            req("a", "\0"),
            req("\0", "\0"),
            req("k", "k"),
            req("z", "a"),
            req("nothing", "nothinh"),
            req("k0007", "k0008"),
        ];
        let mut extra = Vec::new();
        for base in &cases {
            for limit in [1, 2, 10, 299, 300, 1000] {
                extra.push(RangeRequest {
                    limit,
                    ..base.clone()
                });
            }
            extra.push(RangeRequest {
                keys_only: true,
                ..base.clone()
            });
            extra.push(RangeRequest {
                sort_order: SortOrder::Ascend as i32,
                limit: 3,
                ..base.clone()
            });
            // An old revision: before the deletes and overwrites.
            extra.push(RangeRequest {
                revision: 250,
                ..base.clone()
            });
            extra.push(RangeRequest {
                revision: 310,
                limit: 5,
                ..base.clone()
            });
        }
        cases.extend(extra);
        for r in &cases {
            let want = s.range(r).expect("range").encode_to_vec();
            for target in [1, 64, 4096, usize::MAX / 2] {
                let got = streamed(&s, r, target)
                    .expect("stream")
                    .expect("streamable");
                assert_eq!(got, want, "request {r:?}, target {target}");
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_store_range() {
        let s = store();
        let base = req("k", "l");
        for r in [
            RangeRequest {
                sort_order: SortOrder::Descend as i32,
                ..base.clone()
            },
            RangeRequest {
                sort_target: SortTarget::Mod as i32,
                ..base.clone()
            },
            RangeRequest {
                min_mod_revision: 3,
                ..base.clone()
            },
            RangeRequest {
                max_create_revision: 3,
                ..base.clone()
            },
            RangeRequest {
                count_only: true,
                ..base.clone()
            },
        ] {
            assert!(streamed(&s, &r, 64).expect("no error").is_none(), "{r:?}");
        }
    }

    #[test]
    fn errors_are_store_range_errors() {
        let mut s = store();
        let future = RangeRequest {
            revision: s.current_revision() + 1,
            ..req("k", "l")
        };
        assert_eq!(
            streamed(&s, &future, 64).unwrap_err(),
            s.range(&future).unwrap_err()
        );
        apply(
            &mut s,
            Internal::Compaction(proto::etcdserverpb::CompactionRequest {
                revision: 200,
                physical: false,
            }),
        );
        let old = RangeRequest {
            revision: 100,
            ..req("k", "l")
        };
        assert_eq!(streamed(&s, &old, 64).unwrap_err(), MvccError::Compacted);
        assert_eq!(s.range(&old).unwrap_err(), MvccError::Compacted);
        let empty_key = req("", "l");
        assert_eq!(
            streamed(&s, &empty_key, 64).unwrap_err(),
            s.range(&empty_key).unwrap_err()
        );
    }

    /// Writes after the view was taken do not show in the answer.
    #[test]
    fn the_answer_is_the_view_at_its_start() {
        let mut s = store();
        let r = req("k", "l");
        let want = s.range(&r).expect("range").encode_to_vec();
        let mut stream = RangeStream::new(s.view(), &r)
            .expect("ok")
            .expect("streamable");
        let mut out = BytesMut::new();
        assert!(stream.fill(&mut out, 100));
        for i in 0..300 {
            put(&mut s, &format!("k{i:04}"), "changed");
        }
        loop {
            let target = out.len() + 100;
            if !stream.fill(&mut out, target) {
                break;
            }
        }
        assert_eq!(out.to_vec(), want);
    }
}
