//! Disk full at every possible moment, on LazyFs with a size limit: for a sweep of volume
//! sizes the workload runs until a write fails, which must be a `NoSpace` error that
//! changed nothing (the batch is rolled back even when it had crossed into a new segment).
//! Then: the same store still matches the model; a process restart and then a power loss,
//! each followed by recovery on the full volume, give exactly the acknowledged state; with
//! space back, work continues.
//! (`disk_full.rs` does the same on a real tmpfs, once.)

use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta};
use storage::{LazyFs, LogStore, LossMode, MemLogStore, Storage, StorageOptions};

fn opts(expect_existing: bool) -> StorageOptions {
    let mut o = StorageOptions::new(1, 0xd15c);
    o.segment_size = 1024;
    o.expect_existing = expect_existing;
    o
}

fn same(s: &Storage, m: &MemLogStore) -> bool {
    s.hard_state() == m.hard_state()
        && s.snapshot_meta().cloned() == m.snapshot_meta()
        && s.first_index() == m.first_index()
        && s.last_index() == m.last_index()
        && s.entries(s.first_index(), s.last_index() + 1).ok()
            == m.entries(m.first_index(), m.last_index() + 1).ok()
}

/// Step `k` of a deterministic workload: batches of growing entries, a snapshot every 19th.
fn step(k: u64, s: &mut impl LogStore) -> storage::Result<()> {
    if k % 19 == 18 && s.hard_state().commit >= s.first_index() {
        let index = s.hard_state().commit;
        let meta = SnapshotMeta {
            index,
            term: s.term(index)?,
            conf_state: ConfState {
                voters: vec![1],
                learners: vec![],
            },
        };
        return s.compact(&Snapshot {
            meta,
            data: Bytes::from(vec![k as u8; 300]),
        });
    }
    let last = s.last_index();
    let n = 1 + k % 5;
    let entries: Vec<Entry> = (last + 1..=last + n)
        .map(|i| Entry {
            term: 1,
            index: i,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![i as u8; 40 + (i as usize * 13) % 120]),
        })
        .collect();
    s.save(
        Some(&HardState {
            term: 1,
            vote: Some(1),
            commit: last + n,
        }),
        &entries,
        None,
    )
}

/// A store on a volume of `capacity` bytes, run until a write fails: the volume, the
/// store, the model of what was acknowledged, the failed step and its error. `None` when
/// the volume is too small to initialise or compaction keeps it from filling.
fn fill(
    capacity: u64,
) -> Option<(
    Arc<LazyFs>,
    Storage,
    MemLogStore,
    u64,
    storage::StorageError,
)> {
    let fs = Arc::new(LazyFs::new());
    fs.set_capacity(Some(capacity));
    let (mut store, _) = Storage::open(fs.clone(), "/d", &opts(false)).ok()?;
    let mut model = MemLogStore::new();
    for k in 1..=3_000 {
        let before = model.clone();
        match step(k, &mut store) {
            Ok(()) => step(k, &mut model).unwrap(),
            Err(e) => return Some((fs, store, before, k, e)),
        }
    }
    None
}

#[test]
fn running_out_of_space_at_any_point_loses_and_damages_nothing() {
    let mut outcomes = 0;
    for capacity in (1500..9000u64).step_by(37) {
        let Some((fs, store, mut model, k, err)) = fill(capacity) else {
            continue;
        };
        assert!(
            err.is_no_space(),
            "capacity {capacity}: expected disk full, got {err}"
        );
        assert!(
            same(&store, &model),
            "capacity {capacity}: the failed write changed the store"
        );
        // A process restart (the page cache keeps every written byte), then a power loss,
        // each on the still-full volume: both recover exactly the acknowledged state.
        let (store, _) = store
            .reopen()
            .unwrap_or_else(|e| panic!("capacity {capacity}: restart on a full disk failed: {e}"));
        assert!(
            same(&store, &model),
            "capacity {capacity}: restart lost or changed acknowledged data"
        );
        drop(store);
        fs.power_loss(LossMode::DropUnsynced);
        let (store, _) = Storage::open(fs.clone(), "/d", &opts(true))
            .unwrap_or_else(|e| panic!("capacity {capacity}: restart on a full disk failed: {e}"));
        assert!(
            same(&store, &model),
            "capacity {capacity}: restart lost or changed acknowledged data"
        );
        // Space returns: carry on, restart again.
        fs.set_capacity(None);
        let mut store = store;
        for j in k..k + 15 {
            step(j, &mut store).unwrap();
            step(j, &mut model).unwrap();
        }
        let (store, _) = store.reopen().unwrap();
        assert!(
            same(&store, &model),
            "capacity {capacity}: after space returned"
        );
        outcomes += 1;
    }
    assert!(
        outcomes > 100,
        "only {outcomes} capacities ran out of space"
    );
}

/// The same, but the process that hit the full disk carries on once space returns,
/// without a restart (the rolled-back batch must leave the WAL's in-memory bookkeeping as
/// it was, also when it had rolled into a new segment): what it writes next, and a
/// power cut and a restart after it, recover exactly the acknowledged state.
#[test]
fn a_store_that_hit_a_full_disk_writes_on_when_space_returns() {
    let mut outcomes = 0;
    for capacity in (1500..9000u64).step_by(37) {
        let Some((fs, mut store, mut model, k, err)) = fill(capacity) else {
            continue;
        };
        assert!(err.is_no_space(), "capacity {capacity}: {err}");
        fs.set_capacity(None);
        for j in k..k + 15 {
            step(j, &mut store).unwrap();
            step(j, &mut model).unwrap();
        }
        drop(store);
        fs.power_loss(LossMode::DropUnsynced);
        let (store, _) = Storage::open(fs.clone(), "/d", &opts(true))
            .unwrap_or_else(|e| panic!("capacity {capacity}: restart failed: {e}"));
        assert!(
            same(&store, &model),
            "capacity {capacity}: the writes after the full disk were not recovered"
        );
        outcomes += 1;
    }
    assert!(
        outcomes > 100,
        "only {outcomes} capacities ran out of space"
    );
}
