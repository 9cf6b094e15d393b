//! A stream's watchers by id, in id order: one watcher inline, a `BTreeMap` only for two
//! or more.
//!
//! Almost every watch stream holds one watch (etcd's Go client opens a stream per watch
//! context, and a stream per watch is what most clients do), and a `BTreeMap` allocates a
//! whole leaf node (room for eleven entries, ~540 B for a watcher) for its first entry.
//! Held inline, the only watcher costs nothing beyond the stream; a stream with many
//! watchers pays what the map costs per entry, as before. A map left with one entry goes
//! back inline, so a stream's memory follows what it holds now, not what it once held.

use std::collections::BTreeMap;

/// Watchers (or anything else) by `i64` id; iteration is in id order, as a `BTreeMap`'s.
#[derive(Debug)]
pub enum IdTable<W> {
    Empty,
    One(i64, W),
    /// Two entries or more.
    Many(BTreeMap<i64, W>),
}

// By hand, so that no `W: Default` bound is asked for.
#[allow(clippy::derivable_impls)]
impl<W> Default for IdTable<W> {
    fn default() -> Self {
        IdTable::Empty
    }
}

impl<W> IdTable<W> {
    pub fn len(&self) -> usize {
        match self {
            IdTable::Empty => 0,
            IdTable::One(..) => 1,
            IdTable::Many(m) => m.len(),
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        matches!(self, IdTable::Empty)
    }

    pub fn contains_key(&self, id: i64) -> bool {
        match self {
            IdTable::Empty => false,
            IdTable::One(k, _) => *k == id,
            IdTable::Many(m) => m.contains_key(&id),
        }
    }

    #[cfg(test)]
    pub fn get(&self, id: i64) -> Option<&W> {
        match self {
            IdTable::One(k, w) if *k == id => Some(w),
            IdTable::Many(m) => m.get(&id),
            _ => None,
        }
    }

    /// Adds `w` under `id`; returns the entry it replaced.
    pub fn insert(&mut self, id: i64, w: W) -> Option<W> {
        match std::mem::take(self) {
            IdTable::Empty => {
                *self = IdTable::One(id, w);
                None
            }
            IdTable::One(k, old) if k == id => {
                *self = IdTable::One(id, w);
                Some(old)
            }
            IdTable::One(k, other) => {
                *self = IdTable::Many(BTreeMap::from([(k, other), (id, w)]));
                None
            }
            IdTable::Many(mut m) => {
                let old = m.insert(id, w);
                *self = IdTable::Many(m);
                old
            }
        }
    }

    /// Takes out the entry under `id`, if any.
    pub fn remove(&mut self, id: i64) -> Option<W> {
        match self {
            IdTable::Empty => None,
            IdTable::One(k, _) if *k != id => None,
            IdTable::One(..) => match std::mem::take(self) {
                IdTable::One(_, w) => Some(w),
                _ => unreachable!("matched One above"),
            },
            IdTable::Many(m) => {
                let w = m.remove(&id)?;
                if m.len() == 1 {
                    let (k, last) = m.pop_first().expect("one entry left");
                    *self = IdTable::One(k, last);
                }
                Some(w)
            }
        }
    }

    /// `(id, entry)` in id order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &W)> {
        let (one, many) = match self {
            IdTable::Empty => (None, None),
            IdTable::One(k, w) => (Some((*k, w)), None),
            IdTable::Many(m) => (None, Some(m.iter().map(|(k, w)| (*k, w)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// `(id, entry)` in id order, entries mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (i64, &mut W)> {
        let (one, many) = match self {
            IdTable::Empty => (None, None),
            IdTable::One(k, w) => (Some((*k, w)), None),
            IdTable::Many(m) => (None, Some(m.iter_mut().map(|(k, w)| (*k, w)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub fn values(&self) -> impl Iterator<Item = &W> {
        self.iter().map(|(_, w)| w)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut W> {
        self.iter_mut().map(|(_, w)| w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<W>(t: &IdTable<W>) -> Vec<i64> {
        t.iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn one_entry_is_held_inline_and_cancelling_it_empties_the_table() {
        let mut t = IdTable::default();
        assert!(t.is_empty());
        assert_eq!(t.insert(7, "a"), None);
        assert!(matches!(t, IdTable::One(7, "a")));
        assert_eq!((t.len(), t.get(7), t.get(8)), (1, Some(&"a"), None));
        assert!(t.contains_key(7) && !t.contains_key(0));
        assert_eq!(t.remove(8), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(7), Some("a"));
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.remove(7), None);
        assert_eq!(ids(&t), Vec::<i64>::new());
    }

    #[test]
    fn inserting_an_id_again_replaces_its_entry() {
        let mut t = IdTable::default();
        t.insert(1, "a");
        assert_eq!(t.insert(1, "b"), Some("a"));
        assert!(matches!(t, IdTable::One(1, "b")));
        t.insert(2, "c");
        assert_eq!(t.insert(2, "d"), Some("c"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(2), Some(&"d"));
    }

    #[test]
    fn grows_from_one_to_many_in_id_order_and_back() {
        let mut t = IdTable::default();
        t.insert(5, 50);
        t.insert(-1, -10);
        assert!(matches!(t, IdTable::Many(_)));
        for id in [3, 9, 0] {
            t.insert(id, id * 10);
        }
        assert_eq!(ids(&t), vec![-1, 0, 3, 5, 9]);
        assert_eq!(t.len(), 5);
        for (_, v) in t.iter_mut() {
            *v += 1;
        }
        assert_eq!(
            t.values().copied().collect::<Vec<_>>(),
            vec![-9, 1, 31, 51, 91]
        );
        for id in [0, 9, -1] {
            assert!(t.remove(id).is_some());
            assert!(matches!(t, IdTable::Many(_)));
        }
        assert_eq!(t.remove(42), None);
        // The last but one goes: the survivor is held inline again.
        assert_eq!(t.remove(3), Some(31));
        assert!(matches!(t, IdTable::One(5, 51)));
        for v in t.values_mut() {
            *v = 0;
        }
        assert_eq!(t.get(5), Some(&0));
        // And grows again from there.
        t.insert(4, 4);
        assert_eq!(ids(&t), vec![4, 5]);
        assert_eq!(t.remove(4), Some(4));
        assert_eq!(t.remove(5), Some(0));
        assert!(t.is_empty());
    }
}
