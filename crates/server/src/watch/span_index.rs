//! The hub's index of watched key spans: which streams watch a range (a prefix, `[key, end)`
//! or every key from `key`) that holds a given key.
//!
//! The node thread asks this for every event it publishes, under the state machine's write
//! lock, so the answer must not cost a walk over every watched range: with 10,000 prefix
//! watches a walk is 10,000 comparisons per event. This is an interval tree: a treap
//! ordered by the span's start, each node also holding the greatest end in its subtree, so
//! a query visits O(log n) nodes plus the ones that match.
//!
//! Priorities come from a generator seeded at random per index: the ranges are chosen by
//! clients, and with priorities a client could predict it could insert its ranges so that
//! the tree degenerates into a chain (O(n) per query, and recursion as deep as the chain).
//! The order in which a query reports matches follows the tree's shape; callers that care
//! sort them.

use std::cmp::Ordering;

use super::hub::{StreamId, WatchRange};

/// Where a span ends: before a key, or after every key (etcd's `range_end = "\0"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum End<'a> {
    Before(&'a [u8]),
    Unbounded,
}

fn end_of(range: &WatchRange) -> End<'_> {
    match range.end() {
        [0] => End::Unbounded,
        end => End::Before(end),
    }
}

/// Whether a span ending at `end` still holds `key` (its start being at or below it).
fn ends_after(end: End<'_>, key: &[u8]) -> bool {
    match end {
        End::Unbounded => true,
        End::Before(e) => key < e,
    }
}

struct Node {
    range: WatchRange,
    stream: StreamId,
    priority: u64,
    /// The node of this subtree whose span ends last (kept as its range, which is shared,
    /// so the field costs a pointer and not a copy of the key).
    max_end: WatchRange,
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

impl Node {
    /// The order of the tree: start, then end, then stream (one node per pair).
    fn cmp_to(&self, range: &WatchRange, stream: StreamId) -> Ordering {
        (self.range.key(), end_of(&self.range), self.stream).cmp(&(
            range.key(),
            end_of(range),
            stream,
        ))
    }

    /// Recompute `max_end` from the node's own span and its children's.
    fn fix(&mut self) {
        let mut max = &self.range;
        for child in [&self.left, &self.right].into_iter().flatten() {
            if end_of(&child.max_end) > end_of(max) {
                max = &child.max_end;
            }
        }
        self.max_end = max.clone();
    }
}

/// The spans watched, each with the stream that watches it. A stream adds a span once,
/// however many of its watchers share it (the hub counts those).
pub struct SpanIndex {
    root: Option<Box<Node>>,
    len: usize,
    /// splitmix64 state for the priorities.
    seed: u64,
}

impl Default for SpanIndex {
    fn default() -> Self {
        use std::hash::BuildHasher;
        // The standard library seeds `RandomState` from the operating system's randomness.
        SpanIndex::with_seed(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }
}

impl SpanIndex {
    pub fn with_seed(seed: u64) -> Self {
        SpanIndex {
            root: None,
            len: 0,
            seed,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (range, stream) held, in the tree's order.
    #[cfg(test)]
    pub fn pairs(&self) -> Vec<(WatchRange, StreamId)> {
        fn walk(node: Option<&Node>, out: &mut Vec<(WatchRange, StreamId)>) {
            if let Some(n) = node {
                walk(n.left.as_deref(), out);
                out.push((n.range.clone(), n.stream));
                walk(n.right.as_deref(), out);
            }
        }
        let mut out = Vec::new();
        walk(self.root.as_deref(), &mut out);
        out
    }

    fn next_priority(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `stream` watches `range` (a real range, not a single key). Adding a pair already
    /// held changes nothing.
    pub fn insert(&mut self, range: WatchRange, stream: StreamId) {
        debug_assert!(!range.is_single_key(), "single keys are looked up by hash");
        let priority = self.next_priority();
        let node = Box::new(Node {
            max_end: range.clone(),
            range,
            stream,
            priority,
            left: None,
            right: None,
        });
        let (root, added) = insert(self.root.take(), node);
        self.root = Some(root);
        self.len += usize::from(added);
    }

    /// `stream` no longer watches `range`; returns whether the pair was held.
    pub fn remove(&mut self, range: &WatchRange, stream: StreamId) -> bool {
        let removed = remove(&mut self.root, range, stream);
        self.len -= usize::from(removed);
        removed
    }

    /// Call `found` with the stream of every span that holds `key` (a stream once per span
    /// of its that does).
    pub fn streams_holding(&self, key: &[u8], found: &mut impl FnMut(StreamId)) {
        stab(self.root.as_deref(), key, found);
    }
}

fn insert(node: Option<Box<Node>>, new: Box<Node>) -> (Box<Node>, bool) {
    let Some(mut node) = node else {
        return (new, true);
    };
    let added = match node.cmp_to(&new.range, new.stream) {
        Ordering::Equal => return (node, false),
        Ordering::Greater => {
            let (child, added) = insert(node.left.take(), new);
            let lifts = child.priority > node.priority;
            node.left = Some(child);
            if lifts {
                node = rotate_right(node);
            }
            added
        }
        Ordering::Less => {
            let (child, added) = insert(node.right.take(), new);
            let lifts = child.priority > node.priority;
            node.right = Some(child);
            if lifts {
                node = rotate_left(node);
            }
            added
        }
    };
    node.fix();
    (node, added)
}

/// The left child becomes the root of this subtree.
fn rotate_right(mut node: Box<Node>) -> Box<Node> {
    let mut top = node.left.take().expect("rotate_right needs a left child");
    node.left = top.right.take();
    node.fix();
    top.right = Some(node);
    top.fix();
    top
}

/// The right child becomes the root of this subtree.
fn rotate_left(mut node: Box<Node>) -> Box<Node> {
    let mut top = node.right.take().expect("rotate_left needs a right child");
    node.right = top.left.take();
    node.fix();
    top.left = Some(node);
    top.fix();
    top
}

/// Join two treaps, every node of `left` ordered before every node of `right`.
fn merge(left: Option<Box<Node>>, right: Option<Box<Node>>) -> Option<Box<Node>> {
    match (left, right) {
        (None, r) => r,
        (l, None) => l,
        (Some(mut l), Some(mut r)) => {
            if l.priority > r.priority {
                l.right = merge(l.right.take(), Some(r));
                l.fix();
                Some(l)
            } else {
                r.left = merge(Some(l), r.left.take());
                r.fix();
                Some(r)
            }
        }
    }
}

fn remove(slot: &mut Option<Box<Node>>, range: &WatchRange, stream: StreamId) -> bool {
    let Some(node) = slot else {
        return false;
    };
    let removed = match node.cmp_to(range, stream) {
        Ordering::Equal => {
            let node = slot.take().expect("matched Some above");
            let Node { left, right, .. } = *node;
            *slot = merge(left, right);
            return true;
        }
        Ordering::Greater => remove(&mut node.left, range, stream),
        Ordering::Less => remove(&mut node.right, range, stream),
    };
    if removed {
        node.fix();
    }
    removed
}

fn stab(node: Option<&Node>, key: &[u8], found: &mut impl FnMut(StreamId)) {
    let Some(node) = node else {
        return;
    };
    if !ends_after(end_of(&node.max_end), key) {
        // No span of this subtree reaches `key`.
        return;
    }
    stab(node.left.as_deref(), key, found);
    if node.range.key() > key {
        // This span and every one to its right start after `key`.
        return;
    }
    if ends_after(end_of(&node.range), key) {
        found(node.stream);
    }
    stab(node.right.as_deref(), key, found);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(key: &[u8], end: &[u8]) -> WatchRange {
        WatchRange::new(key, end)
    }

    fn holding(index: &SpanIndex, key: &[u8]) -> Vec<StreamId> {
        let mut out = Vec::new();
        index.streams_holding(key, &mut |s| out.push(s));
        out.sort_unstable();
        out
    }

    /// Every node's `max_end` is the greatest end in its subtree, keys are in order and
    /// priorities form a heap.
    fn check_shape(node: Option<&Node>) -> usize {
        let Some(n) = node else { return 0 };
        let mut max = end_of(&n.range);
        for c in [&n.left, &n.right].into_iter().flatten() {
            assert!(c.priority <= n.priority, "heap order");
            max = max.max(end_of(&c.max_end));
        }
        if let Some(l) = &n.left {
            assert_eq!(l.cmp_to(&n.range, n.stream), Ordering::Less);
        }
        if let Some(r) = &n.right {
            assert_eq!(r.cmp_to(&n.range, n.stream), Ordering::Greater);
        }
        assert_eq!(end_of(&n.max_end), max, "max_end of {:?}", n.range);
        1 + check_shape(n.left.as_deref()) + check_shape(n.right.as_deref())
    }

    #[test]
    fn prefixes_ranges_and_from_key_spans_hold_what_they_cover() {
        let mut index = SpanIndex::default();
        index.insert(span(b"a/", b"a0"), 1); // the prefix "a/"
        index.insert(span(b"b", b"d"), 2);
        index.insert(span(b"c", b"\0"), 3); // every key from "c"
        index.insert(span(b"\0", b"\0"), 4); // every key
        assert_eq!(holding(&index, b"a/x"), [1, 4]);
        assert_eq!(holding(&index, b"a0"), [4]);
        assert_eq!(holding(&index, b"b"), [2, 4]);
        assert_eq!(holding(&index, b"c"), [2, 3, 4]);
        assert_eq!(holding(&index, b"d"), [3, 4]);
        assert_eq!(holding(&index, b"zzz"), [3, 4]);
        assert_eq!(holding(&index, b""), Vec::<StreamId>::new());
        assert!(index.remove(&span(b"c", b"\0"), 3));
        assert!(!index.remove(&span(b"c", b"\0"), 3), "removed already");
        assert_eq!(holding(&index, b"d"), [4]);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn one_span_of_two_streams_is_two_entries_and_a_repeat_is_none() {
        let mut index = SpanIndex::default();
        index.insert(span(b"k", b"l"), 7);
        index.insert(span(b"k", b"l"), 8);
        index.insert(span(b"k", b"l"), 7);
        assert_eq!(index.len(), 2);
        assert_eq!(holding(&index, b"k1"), [7, 8]);
        assert!(index.remove(&span(b"k", b"l"), 7));
        assert_eq!(holding(&index, b"k1"), [8]);
    }

    fn depth(node: Option<&Node>) -> usize {
        node.map_or(0, |n| {
            1 + depth(n.left.as_deref()).max(depth(n.right.as_deref()))
        })
    }

    /// Spans inserted in key order (as a client creating watches one after another would)
    /// and in an order matched to the priorities of a fixed seed, which turns an index with
    /// that seed into a chain: with the index's own random seed both stay shallow. A treap's
    /// expected depth is about 1.4 log2 n; 4 log2 n is far out in its tail.
    #[test]
    fn the_tree_stays_shallow_whatever_order_the_spans_come_in() {
        let n = 20_000usize;
        let bound = 4 * (usize::BITS - n.leading_zeros()) as usize;
        let key = |i: usize| format!("k{i:06}").into_bytes();
        let mut sorted = SpanIndex::default();
        for i in 0..n {
            sorted.insert(span(&key(i), b"\0"), 0);
        }
        assert!(
            depth(sorted.root.as_deref()) <= bound,
            "sorted: {}",
            depth(sorted.root.as_deref())
        );
        // The priorities seed 7 gives, in order; a span is given the rank of its priority
        // among them, so with seed 7 every new node lands below the last: a chain.
        let mut probe = SpanIndex::with_seed(7);
        let priorities: Vec<u64> = (0..n).map(|_| probe.next_priority()).collect();
        let mut by_priority: Vec<usize> = (0..n).collect();
        by_priority.sort_by_key(|&i| std::cmp::Reverse(priorities[i]));
        let mut rank = vec![0; n];
        for (r, &i) in by_priority.iter().enumerate() {
            rank[i] = r;
        }
        let mut chained = SpanIndex::with_seed(7);
        for &r in &rank[..2_000] {
            chained.insert(span(&key(r), b"\0"), 0);
        }
        assert!(
            depth(chained.root.as_deref()) > 1_000,
            "the adversarial order works on seed 7"
        );
        let mut random = SpanIndex::default();
        for &r in &rank {
            random.insert(span(&key(r), b"\0"), 0);
        }
        assert!(
            depth(random.root.as_deref()) <= bound,
            "adversarial: {}",
            depth(random.root.as_deref())
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>, Vec<u8>, StreamId),
        Remove(usize),
        Stab(Vec<u8>),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // A small alphabet, so that spans overlap, nest and share starts and ends.
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(b'a'), Just(b'b'), Just(b'c')],
            0..4,
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (key(), key(), 0u64..4).prop_map(|(k, e, s)| Op::Insert(k, e, s)),
            2 => any::<usize>().prop_map(Op::Remove),
            3 => key().prop_map(Op::Stab),
        ]
    }

    proptest! {
        /// Against the obvious list: after any sequence of inserts and removals, a key is held
        /// by exactly the spans that contain it, and the tree keeps its shape.
        #[test]
        fn answers_as_a_list_of_spans_would(ops in proptest::collection::vec(op(), 1..120)) {
            let mut index = SpanIndex::default();
            let mut list: Vec<(WatchRange, StreamId)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, e, s) => {
                        // The hub's ranges: a non-empty end (single keys go elsewhere).
                        let e = if e.is_empty() { vec![0] } else { e };
                        let r = span(&k, &e);
                        index.insert(r.clone(), s);
                        if !list.contains(&(r.clone(), s)) {
                            list.push((r, s));
                        }
                    }
                    Op::Remove(i) if !list.is_empty() => {
                        let (r, s) = list.swap_remove(i % list.len());
                        prop_assert!(index.remove(&r, s));
                    }
                    Op::Remove(_) => {}
                    Op::Stab(k) => {
                        let mut want: Vec<StreamId> = list
                            .iter()
                            .filter(|(r, _)| r.contains(&k))
                            .map(|(_, s)| *s)
                            .collect();
                        want.sort_unstable();
                        prop_assert_eq!(holding(&index, &k), want, "key {:?}", k);
                    }
                }
                prop_assert_eq!(check_shape(index.root.as_deref()), list.len());
                prop_assert_eq!(index.len(), list.len());
            }
        }
    }
}
