//! Power-loss tests over the LazyFS test filesystem.
//!
//! A random workload (appends, conflicting suffixes, hard-state changes, local snapshots
//! with compaction, snapshots installed from a "leader") runs against a `Storage` on
//! `LazyFs`, with a crash armed to fire at a random system call. When it fires, the power
//! is cut: everything not fsynced is lost (or, in torn mode, a random prefix of it
//! survives). The store is reopened, and what it recovered must be exactly one of the
//! states the workload could have left durable: the state after the last acknowledged
//! operation, or that state plus a prefix of the records of the operation that was in
//! flight. Every acknowledged write therefore survives; nothing is invented. Then the
//! workload goes on from the recovered state, and crashes again.
//!
//! The model is `MemLogStore`, the reference store the conformance suite validates.

use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storage::{FileSystem, LazyFs, LogStore, LossMode, MemLogStore, Storage, StorageOptions};

mod common;
use common::{as_format_1, frame};

const DIR: &str = "/data";

fn opts(expect_existing: bool) -> StorageOptions {
    let mut o = StorageOptions::new(3, 0x5eed);
    o.segment_size = 1024;
    o.expect_existing = expect_existing;
    o
}

/// One operation of the workload.
#[derive(Clone, Debug)]
enum Op {
    Save {
        hs: Option<HardState>,
        entries: Vec<Entry>,
        snapshot: Option<Snapshot>,
    },
    Compact(Snapshot),
    /// A commit-index-only hard state, written without an fsync (`save_commit`).
    Commit(HardState),
}

fn entry(index: u64, term: u64, rng: &mut ChaCha8Rng) -> Entry {
    let len = rng.gen_range(0..200);
    let data: Vec<u8> = (0..len)
        .map(|i| (index as usize * 31 + i + term as usize) as u8)
        .collect();
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(data),
    }
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![],
            },
        },
        data: Bytes::from(format!("image@{index}/{term}")),
    }
}

/// A random next operation that is valid for the log `m` (the way a Raft core would
/// produce it: never truncating committed entries, commit never past the last index).
fn next_op(m: &MemLogStore, rng: &mut ChaCha8Rng) -> Op {
    let hs = m.hard_state();
    let (first, last) = (m.first_index(), m.last_index());
    let snap_index = first - 1;
    let term = hs.term.max(1);
    match rng.gen_range(0..100) {
        0..=54 => {
            let n = rng.gen_range(1..12);
            let entries: Vec<Entry> = (last + 1..=last + n).map(|i| entry(i, term, rng)).collect();
            let new_hs = rng.gen_bool(0.7).then(|| HardState {
                term,
                vote: hs.vote,
                commit: rng.gen_range(hs.commit..=last + n),
            });
            Op::Save {
                hs: new_hs.or(Some(HardState { term, ..hs })),
                entries,
                snapshot: None,
            }
        }
        55..=69 => {
            // A new leader's conflicting suffix, from just after the commit index.
            let new_term = term + 1;
            let from = rng.gen_range(hs.commit.max(snap_index) + 1..=last + 1);
            let n = rng.gen_range(1..6);
            let entries = (from..from + n).map(|i| entry(i, new_term, rng)).collect();
            Op::Save {
                hs: Some(HardState {
                    term: new_term,
                    vote: Some(rng.gen_range(1..=3)),
                    commit: hs.commit,
                }),
                entries,
                snapshot: None,
            }
        }
        70..=79 => Op::Save {
            hs: Some(HardState {
                term: term + 1,
                vote: Some(rng.gen_range(1..=3)),
                commit: hs.commit,
            }),
            entries: vec![],
            snapshot: None,
        },
        80..=86 if last > hs.commit => Op::Commit(HardState {
            commit: rng.gen_range(hs.commit + 1..=last),
            ..hs
        }),
        80..=92 if hs.commit > snap_index => {
            let index = rng.gen_range(snap_index + 1..=hs.commit);
            Op::Compact(snapshot(index, m.term(index).unwrap()))
        }
        _ => {
            // A snapshot from the leader, ahead of everything we have.
            let index = last.max(hs.commit) + rng.gen_range(1..20);
            let t = term + 1;
            let after: Vec<Entry> = (index + 1..index + rng.gen_range(1..4))
                .map(|i| entry(i, t, rng))
                .collect();
            Op::Save {
                hs: Some(HardState {
                    term: t,
                    vote: None,
                    commit: index,
                }),
                entries: after,
                snapshot: Some(snapshot(index, t)),
            }
        }
    }
}

fn apply(m: &mut MemLogStore, op: &Op) {
    match op {
        Op::Save {
            hs,
            entries,
            snapshot,
        } => m.save(hs.as_ref(), entries, snapshot.as_ref()).unwrap(),
        Op::Compact(s) => m.compact(s).unwrap(),
        Op::Commit(h) => m.save(Some(h), &[], None).unwrap(),
    }
}

/// Every state an interrupted `op` can leave durable. `durable` is the state after the
/// last synced operation and `pending` the commit-only hard states acknowledged since
/// (written, not synced): a prefix of those may survive, and if all of them did, a prefix of
/// `op`'s WAL records (snapshot marker, entries one by one, hard state).
fn candidates(
    durable: &MemLogStore,
    pending: &[HardState],
    before: &MemLogStore,
    op: &Op,
) -> Vec<MemLogStore> {
    let mut out = vec![durable.clone()];
    let mut m = durable.clone();
    for h in pending {
        m.save(Some(h), &[], None).unwrap();
        out.push(m.clone());
    }
    out.push(before.clone());
    match op {
        Op::Commit(h) => {
            let mut m = before.clone();
            m.save(Some(h), &[], None).unwrap();
            out.push(m);
        }
        Op::Compact(s) => {
            let mut m = before.clone();
            m.compact(s).unwrap();
            out.push(m);
        }
        Op::Save {
            hs,
            entries,
            snapshot,
        } => {
            let mut m = before.clone();
            if let Some(s) = snapshot {
                m.save(None, &[], Some(s)).unwrap();
                out.push(m.clone());
            }
            for e in entries {
                m.save(None, std::slice::from_ref(e), None).unwrap();
                out.push(m.clone());
            }
            if let Some(h) = hs {
                m.save(Some(h), &[], None).unwrap();
                out.push(m);
            }
        }
    }
    out
}

/// Does the store hold exactly the model's state?
fn same(s: &Storage, m: &MemLogStore) -> bool {
    s.hard_state() == m.hard_state()
        && s.snapshot_meta().cloned() == m.snapshot_meta()
        && s.first_index() == m.first_index()
        && s.last_index() == m.last_index()
        && s.entries(s.first_index(), s.last_index() + 1).ok()
            == m.entries(m.first_index(), m.last_index() + 1).ok()
}

fn describe(s: &Storage) -> String {
    format!(
        "hs={:?} snap={:?} log=[{}, {}]",
        s.hard_state(),
        s.snapshot_meta().map(|m| (m.index, m.term)),
        s.first_index(),
        s.last_index()
    )
}

/// What a power loss leaves of the bytes written since the last sync.
#[derive(Clone, Copy)]
enum Loss {
    /// Nothing.
    Unsynced,
    /// A prefix of what was appended to a file.
    Prefix,
    /// Any subset of the pages written to, each whole, and the old or the new length.
    Pages,
}

/// One seeded run: `crashes` power losses, each after a random number of system calls.
fn run(seed: u64, crashes: usize, loss: Loss) -> (u64, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fs = Arc::new(LazyFs::new());
    let (mut store, _) = Storage::open(fs.clone(), DIR, &opts(false)).unwrap();
    let mut model = MemLogStore::new();
    // The state after the last synced operation, and the unsynced commits acknowledged since.
    let mut durable = model.clone();
    let mut pending: Vec<HardState> = Vec::new();
    let mut acked_ops = 0u64;
    for crash in 0..crashes {
        fs.crash_after_ops(rng.gen_range(0..300));
        let (before, op) = loop {
            let op = next_op(&model, &mut rng);
            let before = model.clone();
            let result = match &op {
                Op::Save {
                    hs,
                    entries,
                    snapshot,
                } => store.save(hs.as_ref(), entries, snapshot.as_ref()),
                Op::Compact(s) => {
                    // Background-style: write the file, then make it current.
                    store
                        .snapshot_writer()
                        .write_bytes(&s.meta, &s.data)
                        .and_then(|w| store.compact_to(&w))
                }
                Op::Commit(h) => store.save_commit(h),
            };
            match result {
                Ok(()) => {
                    apply(&mut model, &op);
                    acked_ops += 1;
                    match &op {
                        Op::Commit(h) => pending.push(*h),
                        _ => {
                            durable = model.clone();
                            pending.clear();
                        }
                    }
                    assert!(
                        same(&store, &model),
                        "seed {seed}: store diverged from the model before any crash"
                    );
                }
                Err(e) => {
                    assert!(
                        fs.has_crashed(),
                        "seed {seed}: {op:?} failed without a crash: {e}"
                    );
                    break (before, op);
                }
            }
        };
        drop(store);
        let mode = match loss {
            Loss::Unsynced => LossMode::DropUnsynced,
            Loss::Prefix => LossMode::KeepTornPrefix { seed: rng.gen() },
            Loss::Pages => LossMode::TornPages {
                seed: rng.gen(),
                page: 64,
            },
        };
        fs.power_loss(mode);
        let (reopened, rec) = Storage::open(fs.clone(), DIR, &opts(true))
            .unwrap_or_else(|e| panic!("seed {seed} crash {crash}: recovery failed: {e}"));
        let options = candidates(&durable, &pending, &before, &op);
        let Some(matched) = options.iter().find(|m| same(&reopened, m)) else {
            panic!(
                "seed {seed} crash {crash}: recovered {} matches no durable state; in flight: {op:?}; \
                 last acknowledged state: hs={:?} log=[{}, {}]",
                describe(&reopened),
                before.hard_state(),
                before.first_index(),
                before.last_index()
            );
        };
        if let Some(s) = &rec.snapshot {
            assert_eq!(
                s.data,
                Bytes::from(format!("image@{}/{}", s.meta.index, s.meta.term)),
                "seed {seed}: snapshot image"
            );
        }
        model = matched.clone();
        durable = model.clone();
        pending.clear();
        store = reopened;
    }
    (acked_ops, fs.sync_count())
}

#[test]
fn acknowledged_writes_survive_power_loss_at_any_system_call() {
    let mut ops = 0;
    for seed in 0..150 {
        ops += run(seed, 4, Loss::Unsynced).0;
    }
    assert!(
        ops > 3000,
        "the workload made too little progress ({ops} ops)"
    );
}

#[test]
fn torn_writes_at_power_loss_are_cut_and_acknowledged_writes_survive() {
    for seed in 1000..1150 {
        run(seed, 4, Loss::Prefix);
    }
}

/// The WAL writes its records over zeros written ahead of them, so writeback may persist
/// the pages of a write that did not finish in any order: a later page of a torn batch
/// can survive without an earlier one. Recovery must still cut such a batch (intact
/// records after a broken one are not damage unless a later batch end proves the broken
/// one was synced) and keep everything acknowledged.
#[test]
fn writes_torn_page_by_page_at_power_loss_are_cut_and_acknowledged_writes_survive() {
    let mut ops = 0;
    for seed in 2000..2300 {
        ops += run(seed, 4, Loss::Pages).0;
    }
    assert!(
        ops > 6000,
        "the workload made too little progress ({ops} ops)"
    );
}

#[test]
fn a_crash_while_initialising_the_data_dir_leaves_it_initialisable() {
    for n in 0..30 {
        let fs = Arc::new(LazyFs::new());
        fs.crash_after_ops(n);
        let first = Storage::open(fs.clone(), DIR, &opts(false));
        fs.power_loss(LossMode::DropUnsynced);
        let (mut store, rec) = Storage::open(fs.clone(), DIR, &opts(false))
            .unwrap_or_else(|e| panic!("crash after {n} calls during init: {e}"));
        assert!(
            first.is_err() || !rec.created,
            "a completed init is reopened, not redone"
        );
        store
            .save(
                Some(&HardState {
                    term: 1,
                    vote: Some(3),
                    commit: 0,
                }),
                &[],
                None,
            )
            .unwrap();
    }
}

/// The model checker itself must notice a store that loses an acknowledged write.
#[test]
fn the_checker_rejects_a_state_that_lost_an_acknowledged_write() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let fs = Arc::new(LazyFs::new());
    let (mut store, _) = Storage::open(fs.clone(), DIR, &opts(false)).unwrap();
    let mut model = MemLogStore::new();
    let e1: Vec<Entry> = (1..=3).map(|i| entry(i, 1, &mut rng)).collect();
    store.save(None, &e1, None).unwrap();
    model.save(None, &e1, None).unwrap();
    let op = Op::Save {
        hs: None,
        entries: vec![entry(4, 1, &mut rng)],
        snapshot: None,
    };
    drop(store);
    // A store that dropped the acknowledged entry 3.
    let fs2 = Arc::new(LazyFs::new());
    let (mut other, _) = Storage::open(fs2, DIR, &opts(false)).unwrap();
    other.save(None, &e1[..2], None).unwrap();
    assert!(
        !candidates(&model, &[], &model, &op)
            .iter()
            .any(|m| same(&other, m)),
        "losing entry 3 must not match"
    );
    // ...while the honest recovered states do match.
    other.save(None, &e1[2..], None).unwrap();
    assert!(candidates(&model, &[], &model, &op)
        .iter()
        .any(|m| same(&other, m)));
}

/// `save_commit` costs no fsync, its commit index is lost by a power cut before the next
/// durable write and kept by one after it, and it refuses a term or vote change.
#[test]
fn a_commit_only_hard_state_is_durable_with_the_next_synced_write() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let fs = Arc::new(LazyFs::new());
    let (mut store, _) = Storage::open(fs.clone(), DIR, &opts(false)).unwrap();
    let hs = |commit| HardState {
        term: 2,
        vote: Some(1),
        commit,
    };
    let e: Vec<Entry> = (1..=4).map(|i| entry(i, 2, &mut rng)).collect();
    store.save(Some(&hs(1)), &e[..2], None).unwrap();

    let syncs = fs.sync_count();
    store.save_commit(&hs(2)).unwrap();
    assert_eq!(fs.sync_count(), syncs, "save_commit must not fsync");
    assert_eq!(
        store.hard_state(),
        hs(2),
        "the new commit is visible at once"
    );
    let refused = store.save_commit(&HardState { term: 3, ..hs(2) });
    assert!(
        matches!(refused, Err(storage::StorageError::Invalid(_))),
        "{refused:?}"
    );
    drop(store);
    fs.power_loss(LossMode::DropUnsynced);
    let (mut store, rec) = Storage::open(fs.clone(), DIR, &opts(true)).unwrap();
    assert_eq!(
        rec.hard_state,
        hs(1),
        "an unsynced commit is lost by a power cut"
    );
    assert_eq!(rec.entries.len(), 2);

    store.save_commit(&hs(2)).unwrap();
    store.save(None, &e[2..], None).unwrap();
    drop(store);
    fs.power_loss(LossMode::DropUnsynced);
    let (_, rec) = Storage::open(fs.clone(), DIR, &opts(true)).unwrap();
    assert_eq!(
        rec.hard_state,
        hs(2),
        "the next synced write carries the commit"
    );
    assert_eq!(rec.entries.len(), 4);
}

/// `save_commit` refuses a commit index past the last log index or behind the saved one,
/// with an error that says which, and writes nothing: the store stays usable, and a power
/// cut followed by a synced write recovers only what was accepted.
#[test]
fn save_commit_refuses_a_commit_past_the_log_or_behind_the_saved_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let fs = Arc::new(LazyFs::new());
    let (mut store, _) = Storage::open(fs.clone(), DIR, &opts(false)).unwrap();
    let hs = |commit| HardState {
        term: 2,
        vote: Some(1),
        commit,
    };
    let e: Vec<Entry> = (1..=4).map(|i| entry(i, 2, &mut rng)).collect();
    store.save(Some(&hs(2)), &e, None).unwrap();

    let before = fs.unsynced_bytes(&store.wal_dir().join("0000000000000001.wal"));
    match store.save_commit(&hs(5)) {
        Err(storage::StorageError::Invalid(why)) => {
            assert!(why.contains("past the last log index 4"), "{why}")
        }
        other => panic!("a commit past the log was not refused: {other:?}"),
    }
    match store.save_commit(&hs(1)) {
        Err(storage::StorageError::Invalid(why)) => {
            assert!(why.contains("below the saved commit index 2"), "{why}")
        }
        other => panic!("a commit moving back was not refused: {other:?}"),
    }
    assert_eq!(
        store.hard_state(),
        hs(2),
        "a refused commit changes nothing"
    );
    assert_eq!(
        fs.unsynced_bytes(&store.wal_dir().join("0000000000000001.wal")),
        before,
        "a refused commit writes nothing"
    );

    // The store is not failed by a refusal: the edge cases that are allowed still work.
    store.save_commit(&hs(2)).unwrap();
    store.save_commit(&hs(4)).unwrap();
    store.save(Some(&hs(4)), &[], None).unwrap();
    drop(store);
    fs.power_loss(LossMode::DropUnsynced);
    let (_, rec) = Storage::open(fs.clone(), DIR, &opts(true)).unwrap();
    assert_eq!(rec.hard_state, hs(4));
    assert_eq!(rec.entries.len(), 4);
}

fn plain(index: u64) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![index as u8; 150]),
    }
}

/// A process killed between a batch's write and its fsync, then a start that replays
/// that batch from the page cache, then a power cut in the first batch after it (its
/// pages kept in any subset). The start must have made what it replayed durable: the
/// member acts on it, and the batch end written next says everything before it was
/// synced. Without that sync the batch end calls the lost pages damage and the member
/// cannot start (94 of 200 seeds in review), or the replayed batch is silently gone.
#[test]
fn a_start_syncs_what_a_killed_process_left_in_the_page_cache() {
    for seed in 0..200 {
        let lazy = LazyFs::new();
        let fs = Arc::new(lazy.clone());
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: 0,
        };
        let (mut store, _) = Storage::open(fs.clone(), DIR, &opts(false)).unwrap();
        store.save(Some(&hs), &[plain(1), plain(2)], None).unwrap();
        lazy.hold_syncs(true);
        store.save(None, &[plain(3), plain(4)], None).unwrap();
        drop(store); // killed before that fsync: the page cache keeps the batch
        lazy.hold_syncs(false);
        let (mut store, rec) = Storage::open(fs.clone(), DIR, &opts(true)).unwrap();
        assert_eq!(rec.entries.len(), 4, "seed {seed}: the batch is read back");
        lazy.hold_syncs(true);
        store.save(None, &[plain(5), plain(6)], None).unwrap();
        drop(store); // the power goes before that fsync
        lazy.hold_syncs(false);
        lazy.power_loss(LossMode::TornPages { seed, page: 64 });
        let (_, rec) = Storage::open(fs.clone(), DIR, &opts(true))
            .unwrap_or_else(|e| panic!("seed {seed}: a power cut read as damage: {e}"));
        assert!(
            rec.entries.len() >= 4
                && rec.entries[..4] == (1..=4).map(plain).collect::<Vec<_>>()[..],
            "seed {seed}: what the start replayed was lost: {} entries",
            rec.entries.len()
        );
    }
}

/// A data dir of WAL format 1 whose newest segment ends in a record its raftkv wrote
/// without an fsync (a commit-only hard state) before it stopped. The new raftkv seals
/// that segment and writes on in a new one, so the segment must be synced first: a power
/// cut afterwards may not tear a segment that has a successor.
#[test]
fn an_older_newest_segment_is_synced_before_a_start_seals_it() {
    for seed in 0..100 {
        let fs = LazyFs::new();
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: 0,
        };
        let (mut store, _) = Storage::open(Arc::new(fs.clone()), DIR, &opts(false)).unwrap();
        store.save(Some(&hs), &[plain(1), plain(2)], None).unwrap();
        let seg = store.wal_dir().join("0000000000000001.wal");
        drop(store);
        fs.corrupt_durably(&seg, |bytes| *bytes = as_format_1(bytes))
            .unwrap();
        let mut commit = vec![3u8]; // a hard state: term 1, vote 1, commit 2
        for v in [1u64, 1, 2] {
            commit.extend_from_slice(&v.to_le_bytes());
        }
        let mut old = fs.open_append(&seg).unwrap();
        old.write_all(&frame(&commit)).unwrap();
        drop(old);
        let (mut store, rec) = Storage::open(Arc::new(fs.clone()), DIR, &opts(true)).unwrap();
        assert_eq!(rec.hard_state.commit, 2, "seed {seed}");
        store.save(None, &[plain(3)], None).unwrap();
        drop(store);
        fs.power_loss(LossMode::KeepTornPrefix { seed });
        let (_, rec) = Storage::open(Arc::new(fs.clone()), DIR, &opts(true))
            .unwrap_or_else(|e| panic!("seed {seed}: a power cut read as damage: {e}"));
        assert_eq!(
            rec.entries,
            (1..=3).map(plain).collect::<Vec<_>>(),
            "seed {seed}"
        );
    }
}
