//! Revisions: the store's logical clock.

/// The position of one change in the store's history. Every mutating request gets its own
/// `main` revision; the writes of one txn share it and are ordered by `sub` (0, 1, 2, ...),
/// which is also the order their watch events are delivered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The first position of a main revision, for range bounds.
    pub const fn start_of(main: i64) -> Self {
        Revision { main, sub: 0 }
    }
}
