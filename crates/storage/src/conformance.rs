//! A conformance suite every [`LogStore`] must pass.
//!
//! Each check takes a fresh, empty store and returns `Err(description)` on the first
//! behaviour that differs from the log semantics the Raft core relies on. Run them all with
//! [`run_all`], or get one `#[test]` per check with [`conformance_tests!`]:
//!
//! ```text
//! storage::conformance_tests!(wal_store, || my_fresh_store());
//! ```
//!
//! The factory should make stores with small WAL segments (a few KiB) so that
//! [`ranges_across_segment_boundaries`] really crosses segment files.

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};

use crate::log_store::LogStore;

pub type CheckResult = Result<(), String>;

/// All checks, by name.
pub const CHECKS: &[&str] = &[
    "initial_state",
    "append_and_read_back",
    "truncate_conflicting_suffix",
    "compact",
    "install_snapshot",
    "hard_state_persistence",
    "reopen_after_close",
    "ranges_across_segment_boundaries",
    "rejects_invalid_appends",
];

/// Run one check by name on a fresh store.
pub fn run_check<S: LogStore>(name: &str, store: S) -> CheckResult {
    match name {
        "initial_state" => initial_state(store),
        "append_and_read_back" => append_and_read_back(store),
        "truncate_conflicting_suffix" => truncate_conflicting_suffix(store),
        "compact" => compact(store),
        "install_snapshot" => install_snapshot(store),
        "hard_state_persistence" => hard_state_persistence(store),
        "reopen_after_close" => reopen_after_close(store),
        "ranges_across_segment_boundaries" => ranges_across_segment_boundaries(store),
        "rejects_invalid_appends" => rejects_invalid_appends(store),
        other => Err(format!("no conformance check named {other:?}")),
    }
}

/// Run every check, each on a store from `fresh`; the first failure names its check.
pub fn run_all<S: LogStore>(mut fresh: impl FnMut() -> S) -> CheckResult {
    for name in CHECKS {
        run_check(name, fresh()).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// One `#[test]` per conformance check, in a module named `$module`.
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $fresh:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@each $fresh; initial_state, append_and_read_back,
                truncate_conflicting_suffix, compact, install_snapshot, hard_state_persistence,
                reopen_after_close, ranges_across_segment_boundaries, rejects_invalid_appends);
        }
    };
    (@each $fresh:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                let fresh = $fresh;
                if let Err(e) = $crate::conformance::$check(fresh()) {
                    panic!("conformance check {} failed: {}", stringify!($check), e);
                }
            }
        )*
    };
}

/// The entry the checks write at `index` in `term`: payload varies in size and content.
pub fn entry(index: u64, term: u64) -> Entry {
    let len = (index as usize * 37) % 300;
    let data: Vec<u8> = (0..len)
        .map(|i| (index as usize + i * term as usize) as u8)
        .collect();
    let kind = if index.is_multiple_of(17) {
        EntryKind::Noop
    } else {
        EntryKind::Normal
    };
    Entry {
        term,
        index,
        kind,
        data: Bytes::from(data),
    }
}

fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term)).collect()
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
            },
        },
        data: Bytes::from(format!("state machine image at {index}")),
    }
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($what:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!("{}: got {:?}, want {:?}", format!($($what)+), got, want));
        }
    }};
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what} failed: {e}"))
}

/// Everything the store claims about its log equals `want` (the entries after the
/// snapshot), `first` and `hs`.
fn expect_log<S: LogStore>(
    s: &S,
    first: u64,
    want: &[Entry],
    hs: HardState,
    when: &str,
) -> CheckResult {
    let last = want.last().map(|e| e.index).unwrap_or(first - 1);
    ensure_eq!(s.first_index(), first, "{when}: first_index");
    ensure_eq!(s.last_index(), last, "{when}: last_index");
    ensure_eq!(s.hard_state(), hs, "{when}: hard_state");
    ensure_eq!(
        ok(s.entries(first, last + 1), "entries")?,
        want.to_vec(),
        "{when}: entries({first}, {})",
        last + 1
    );
    for e in want {
        ensure_eq!(
            ok(s.term(e.index), "term")?,
            e.term,
            "{when}: term({})",
            e.index
        );
    }
    Ok(())
}

pub fn initial_state<S: LogStore>(s: S) -> CheckResult {
    expect_log(&s, 1, &[], HardState::default(), "new store")?;
    ensure_eq!(s.snapshot_meta(), None, "new store: snapshot");
    ensure_eq!(ok(s.term(0), "term(0)")?, 0, "term(0)");
    let s = ok(s.reopen(), "reopen")?;
    expect_log(&s, 1, &[], HardState::default(), "reopened new store")
}

pub fn append_and_read_back<S: LogStore>(mut s: S) -> CheckResult {
    let all = entries(1, 30, 1);
    for chunk in all.chunks(7) {
        ok(s.save(None, chunk, None), "save")?;
    }
    expect_log(&s, 1, &all, HardState::default(), "after appends")?;
    for lo in 1..=31 {
        for hi in lo..=31 {
            ensure_eq!(
                ok(s.entries(lo, hi), "entries")?,
                all[(lo - 1) as usize..(hi - 1) as usize].to_vec(),
                "entries({lo}, {hi})"
            );
        }
    }
    if s.entries(1, 32).is_ok() {
        return Err("entries past the last index must be an error".into());
    }
    if s.term(31).is_ok() {
        return Err("term past the last index must be an error".into());
    }
    Ok(())
}

pub fn truncate_conflicting_suffix<S: LogStore>(mut s: S) -> CheckResult {
    ok(s.save(None, &entries(1, 10, 1), None), "save 1..=10")?;
    ok(
        s.save(None, &entries(6, 8, 2), None),
        "save conflicting 6..=8",
    )?;
    let mut want = entries(1, 5, 1);
    want.extend(entries(6, 8, 2));
    expect_log(&s, 1, &want, HardState::default(), "after truncation")?;
    // Overwrite at the very end and at the very start too.
    ok(s.save(None, &entries(8, 9, 3), None), "save 8..=9")?;
    want.truncate(7);
    want.extend(entries(8, 9, 3));
    expect_log(&s, 1, &want, HardState::default(), "after tail overwrite")?;
    let s = ok(s.reopen(), "reopen")?;
    expect_log(
        &s,
        1,
        &want,
        HardState::default(),
        "reopened after truncations",
    )?;
    let mut s = s;
    ok(
        s.save(None, &entries(1, 2, 4), None),
        "save 1..=2 in term 4",
    )?;
    let s = ok(s.reopen(), "reopen")?;
    expect_log(
        &s,
        1,
        &entries(1, 2, 4),
        HardState::default(),
        "after overwriting from index 1",
    )
}

pub fn compact<S: LogStore>(mut s: S) -> CheckResult {
    let hs = HardState {
        term: 1,
        vote: Some(1),
        commit: 20,
    };
    ok(s.save(Some(&hs), &entries(1, 25, 1), None), "save")?;
    ok(s.compact(&snapshot(10, 1)), "compact to 10")?;
    expect_log(&s, 11, &entries(11, 25, 1), hs, "after compaction")?;
    ensure_eq!(ok(s.term(10), "term(10)")?, 1, "term at the snapshot index");
    if s.entries(5, 12).is_ok() || s.term(9).is_ok() {
        return Err("reading compacted entries must be an error".into());
    }
    if s.compact(&snapshot(22, 1)).is_ok() {
        return Err("compacting past the commit index must be refused".into());
    }
    let mut s = ok(s.reopen(), "reopen")?;
    expect_log(&s, 11, &entries(11, 25, 1), hs, "reopened after compaction")?;
    ensure_eq!(
        s.snapshot_meta(),
        Some(snapshot(10, 1).meta),
        "snapshot after reopen"
    );
    ok(s.compact(&snapshot(20, 1)), "compact to 20")?;
    ok(
        s.save(None, &entries(26, 30, 1), None),
        "append after compaction",
    )?;
    let s = ok(s.reopen(), "reopen")?;
    expect_log(
        &s,
        21,
        &entries(21, 30, 1),
        hs,
        "reopened after second compaction",
    )
}

pub fn install_snapshot<S: LogStore>(mut s: S) -> CheckResult {
    ok(
        s.save(
            Some(&HardState {
                term: 1,
                vote: None,
                commit: 3,
            }),
            &entries(1, 5, 1),
            None,
        ),
        "save",
    )?;
    // A leader's snapshot far ahead of our log replaces it entirely.
    let hs = HardState {
        term: 3,
        vote: None,
        commit: 40,
    };
    ok(
        s.save(Some(&hs), &entries(41, 42, 3), Some(&snapshot(40, 3))),
        "install snapshot 40",
    )?;
    expect_log(&s, 41, &entries(41, 42, 3), hs, "after install")?;
    ensure_eq!(
        s.snapshot_meta(),
        Some(snapshot(40, 3).meta),
        "snapshot meta"
    );
    let s = ok(s.reopen(), "reopen")?;
    expect_log(&s, 41, &entries(41, 42, 3), hs, "reopened after install")?;
    let mut s = s;
    if s.save(None, &[], Some(&snapshot(30, 2))).is_ok() {
        return Err("installing an older snapshot must be refused".into());
    }
    Ok(())
}

pub fn hard_state_persistence<S: LogStore>(mut s: S) -> CheckResult {
    let states = [
        HardState {
            term: 1,
            vote: Some(2),
            commit: 0,
        },
        HardState {
            term: 2,
            vote: None,
            commit: 0,
        },
        HardState {
            term: 2,
            vote: Some(3),
            commit: 0,
        },
        HardState {
            term: u64::MAX - 1,
            vote: Some(u64::MAX),
            commit: 0,
        },
    ];
    for hs in states {
        ok(s.save(Some(&hs), &[], None), "save hard state")?;
        ensure_eq!(s.hard_state(), hs, "hard state before reopen");
        s = ok(s.reopen(), "reopen")?;
        ensure_eq!(s.hard_state(), hs, "hard state after reopen");
    }
    // A hard state saved with entries, then entries without a hard state: the last one wins.
    let hs = HardState {
        term: 5,
        vote: Some(1),
        commit: 3,
    };
    ok(s.save(Some(&hs), &entries(1, 3, 5), None), "save")?;
    ok(s.save(None, &entries(4, 6, 5), None), "save")?;
    let s = ok(s.reopen(), "reopen")?;
    expect_log(
        &s,
        1,
        &entries(1, 6, 5),
        hs,
        "hard state kept across entry-only saves",
    )
}

pub fn reopen_after_close<S: LogStore>(mut s: S) -> CheckResult {
    let mut want = Vec::new();
    let mut hs = HardState::default();
    for round in 1..=5u64 {
        let lo = want.len() as u64 + 1;
        let batch = entries(lo, lo + round * 3, round);
        hs = HardState {
            term: round,
            vote: Some(round % 3 + 1),
            commit: lo - 1,
        };
        ok(s.save(Some(&hs), &batch, None), "save")?;
        want.extend(batch);
        s = ok(s.reopen(), "reopen")?;
        expect_log(&s, 1, &want, hs, &format!("after round {round}"))?;
    }
    let s = ok(s.reopen(), "reopen twice in a row")?;
    expect_log(&s, 1, &want, hs, "after a second reopen")
}

pub fn ranges_across_segment_boundaries<S: LogStore>(mut s: S) -> CheckResult {
    let all = entries(1, 400, 1);
    for chunk in all.chunks(13) {
        ok(s.save(None, chunk, None), "save")?;
    }
    let s = ok(s.reopen(), "reopen")?;
    expect_log(&s, 1, &all, HardState::default(), "after reopen")?;
    for lo in (1..=400).step_by(7) {
        for hi in [lo, lo + 1, lo + 50, lo + 199, 401]
            .into_iter()
            .filter(|&h| h <= 401 && h >= lo)
        {
            ensure_eq!(
                ok(s.entries(lo, hi), "entries")?,
                all[(lo - 1) as usize..(hi - 1) as usize].to_vec(),
                "entries({lo}, {hi})"
            );
        }
    }
    Ok(())
}

pub fn rejects_invalid_appends<S: LogStore>(mut s: S) -> CheckResult {
    ok(s.save(None, &entries(1, 5, 1), None), "save")?;
    if s.save(None, &entries(7, 8, 1), None).is_ok() {
        return Err("an append that leaves a gap must be refused".into());
    }
    let mut gappy = entries(6, 7, 1);
    gappy.push(entry(9, 1));
    if s.save(None, &gappy, None).is_ok() {
        return Err("non-contiguous entries must be refused".into());
    }
    let s = ok(s.reopen(), "reopen")?;
    expect_log(
        &s,
        1,
        &entries(1, 5, 1),
        HardState::default(),
        "after refused appends",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::log_store::MemLogStore;
    use raft::{Index, Term};

    crate::conformance_tests!(reference_store, MemLogStore::new);

    /// A store with one deliberate bug, to show the suite notices it.
    #[derive(Default)]
    struct Buggy {
        inner: MemLogStore,
        bug: Bug,
    }

    #[derive(Clone, Copy, Default, PartialEq)]
    enum Bug {
        #[default]
        ForgetsHardStateOnReopen,
        IgnoresTruncation,
        OffByOneRanges,
        CompactKeepsOldFirstIndex,
    }

    impl LogStore for Buggy {
        fn save(
            &mut self,
            hs: Option<&HardState>,
            entries: &[Entry],
            snap: Option<&Snapshot>,
        ) -> Result<()> {
            if self.bug == Bug::IgnoresTruncation {
                if let Some(first) = entries.first() {
                    if first.index <= self.inner.last_index() {
                        let skip = (self.inner.last_index() + 1 - first.index) as usize;
                        return self
                            .inner
                            .save(hs, &entries[skip.min(entries.len())..], snap);
                    }
                }
            }
            self.inner.save(hs, entries, snap)
        }
        fn compact(&mut self, snapshot: &Snapshot) -> Result<()> {
            self.inner.compact(snapshot)
        }
        fn hard_state(&self) -> HardState {
            self.inner.hard_state()
        }
        fn snapshot_meta(&self) -> Option<SnapshotMeta> {
            self.inner.snapshot_meta()
        }
        fn first_index(&self) -> Index {
            match self.bug {
                Bug::CompactKeepsOldFirstIndex => 1,
                _ => self.inner.first_index(),
            }
        }
        fn last_index(&self) -> Index {
            self.inner.last_index()
        }
        fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
            match self.bug {
                Bug::OffByOneRanges if hi > lo => self.inner.entries(lo, hi - 1),
                _ => self.inner.entries(lo, hi),
            }
        }
        fn term(&self, index: Index) -> Result<Term> {
            self.inner.term(index)
        }
        fn reopen(mut self) -> Result<Self> {
            if self.bug == Bug::ForgetsHardStateOnReopen {
                let forgot = HardState {
                    commit: self.inner.hard_state().commit,
                    ..HardState::default()
                };
                self.inner.save(Some(&forgot), &[], None)?;
            }
            Ok(self)
        }
    }

    #[test]
    fn the_suite_catches_each_deliberate_bug() {
        for bug in [
            Bug::ForgetsHardStateOnReopen,
            Bug::IgnoresTruncation,
            Bug::OffByOneRanges,
            Bug::CompactKeepsOldFirstIndex,
        ] {
            let result = run_all(|| Buggy {
                inner: MemLogStore::new(),
                bug,
            });
            assert!(
                result.is_err(),
                "a store with a bug passed the conformance suite"
            );
        }
        run_all(MemLogStore::new).expect("the reference store passes");
    }
}
