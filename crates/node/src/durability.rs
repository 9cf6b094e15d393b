//! The durability rule: which writes must be fsynced before anything that depends on them
//! leaves the member. It lives here and nowhere else.

use raft::{Entry, HardState, Snapshot};

/// Whether a write must be durable (fsynced) before the messages that depend on it are
/// sent and before it is acknowledged with `advance`.
///
/// * New entries and snapshots: always. An append acknowledgement promises the leader that
///   the entries survive a crash (safety rule 3: committed means durable on a quorum).
/// * Term and vote: always. A vote granted and forgotten at a crash lets a member vote
///   twice in one term (safety rule 1).
/// * The commit index alone: never. Raft keeps it in volatile state; after a crash the
///   member learns it again from the leader. Losing it costs nothing but re-learning, while
///   syncing it would put a second fsync on every write's path (after the acknowledgements
///   of a write, every member's next write is exactly this one). What a crash can lose is
///   written down in `docs/node-driver.md`.
pub fn must_sync(
    hard_state: Option<&HardState>,
    entries: &[Entry],
    snapshot: Option<&Snapshot>,
    durable: &HardState,
) -> bool {
    !entries.is_empty()
        || snapshot.is_some()
        || hard_state.is_some_and(|hs| hs.term != durable.term || hs.vote != durable.vote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft::EntryKind;

    fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
        HardState { term, vote, commit }
    }

    #[test]
    fn only_a_commit_only_write_skips_the_fsync() {
        let durable = hs(3, Some(1), 10);
        assert!(!must_sync(Some(&hs(3, Some(1), 12)), &[], None, &durable));
        assert!(must_sync(Some(&hs(4, None, 12)), &[], None, &durable));
        assert!(must_sync(Some(&hs(3, Some(2), 10)), &[], None, &durable));
        let e = Entry {
            index: 11,
            term: 3,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        assert!(must_sync(None, &[e], None, &durable));
        assert!(!must_sync(None, &[], None, &durable));
    }
}
