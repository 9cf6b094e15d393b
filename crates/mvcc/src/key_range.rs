//! The `key` + `range_end` convention etcd uses in Range, DeleteRange, Compare and Watch.

use std::ops::Bound;

/// Start and end bounds of a key range, as `BTreeMap::range` takes them.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Which keys a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `range_end == "\0"`: every key >= `key` (with `key == "\0"` that is every key).
    FromKey(&'a [u8]),
    /// Otherwise the half-open interval `[key, range_end)`; empty when `range_end <= key`.
    Span(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::FromKey(key),
            end => KeyRange::Span(key, end),
        }
    }

    pub fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => candidate == key,
            KeyRange::FromKey(start) => candidate >= start,
            KeyRange::Span(start, end) => candidate >= start && candidate < end,
        }
    }

    /// Bounds for `BTreeMap::range`, or `None` when the range is empty (a `BTreeMap` panics
    /// on inverted bounds, so those must never reach it).
    pub fn bounds(&self) -> Option<KeyBounds<'a>> {
        match *self {
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::FromKey(start) => Some((Bound::Included(start), Bound::Unbounded)),
            KeyRange::Span(start, end) if start < end => {
                Some((Bound::Included(start), Bound::Excluded(end)))
            }
            KeyRange::Span(..) => None,
        }
    }
}

/// The `range_end` that selects every key starting with `prefix`, as etcd clients compute
/// it: the prefix with its last byte below 0xff incremented and what follows dropped; `"\0"`
/// (from-key) when the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_range_end_like_etcd() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a"));
        assert_eq!(KeyRange::new(b"a", b"\0"), KeyRange::FromKey(b"a"));
        assert_eq!(KeyRange::new(b"a", b"c"), KeyRange::Span(b"a", b"c"));
    }

    #[test]
    fn membership() {
        let span = KeyRange::new(b"b", b"d");
        assert!(!span.contains(b"a"));
        assert!(span.contains(b"b"));
        assert!(span.contains(b"czzz"));
        assert!(!span.contains(b"d"));
        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0"));
        assert!(all.contains(b"\xff\xff"));
        assert!(KeyRange::new(b"x", b"").contains(b"x"));
        assert!(!KeyRange::new(b"x", b"").contains(b"xy"));
    }

    #[test]
    fn inverted_span_has_no_bounds() {
        assert!(KeyRange::new(b"d", b"b").bounds().is_none());
        assert!(KeyRange::new(b"d", b"d").bounds().is_none());
        assert!(KeyRange::new(b"b", b"d").bounds().is_some());
    }

    #[test]
    fn prefix_end_matches_client_convention() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
