//! The conformance suite against the WAL-backed store, on the LazyFS test filesystem and on
//! real files. (The suite's own soundness — the reference store passes, deliberately buggy
//! stores fail — is tested inside the crate, in `conformance::tests`.)

use std::sync::Arc;

use raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};
use storage::{LazyFs, LogStore, RealFs, Result, Storage, StorageOptions};

/// Small segments so that the boundary checks cross many segment files.
fn options() -> StorageOptions {
    let mut opts = StorageOptions::new(1, 0xc1);
    opts.segment_size = 2048;
    opts
}

fn wal_on_lazy_fs() -> Storage {
    let (store, recovered) = Storage::open(Arc::new(LazyFs::new()), "/data", &options()).unwrap();
    assert!(recovered.created);
    store
}

/// The WAL store on real files, owning its temp dir so it is removed after the check.
struct OnRealFiles {
    store: Storage,
    _dir: tempfile::TempDir,
}

impl LogStore for OnRealFiles {
    fn save(&mut self, hs: Option<&HardState>, e: &[Entry], s: Option<&Snapshot>) -> Result<()> {
        self.store.save(hs, e, s)
    }
    fn compact(&mut self, s: &Snapshot) -> Result<()> {
        LogStore::compact(&mut self.store, s)
    }
    fn hard_state(&self) -> HardState {
        self.store.hard_state()
    }
    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.store.snapshot_meta().cloned()
    }
    fn first_index(&self) -> Index {
        self.store.first_index()
    }
    fn last_index(&self) -> Index {
        self.store.last_index()
    }
    fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        self.store.entries(lo, hi)
    }
    fn term(&self, index: Index) -> Result<Term> {
        self.store.term(index)
    }
    fn reopen(self) -> Result<Self> {
        let store = self.store.reopen()?.0;
        Ok(OnRealFiles {
            store,
            _dir: self._dir,
        })
    }
}

fn wal_on_real_files() -> OnRealFiles {
    let dir = tempfile::tempdir().unwrap();
    let store = Storage::open(Arc::new(RealFs), dir.path().join("data"), &options())
        .unwrap()
        .0;
    OnRealFiles { store, _dir: dir }
}

storage::conformance_tests!(wal_lazy_fs, wal_on_lazy_fs);
storage::conformance_tests!(wal_real_files, wal_on_real_files);

#[test]
fn segment_boundary_check_really_spans_segments() {
    let store = wal_on_lazy_fs();
    storage::conformance::ranges_across_segment_boundaries(store).unwrap();
    // Run the same writes again and look at the number of files they produced.
    let mut store = wal_on_lazy_fs();
    let entries: Vec<_> = (1..=400)
        .map(|i| storage::conformance::entry(i, 1))
        .collect();
    for chunk in entries.chunks(13) {
        store.save(None, chunk, None).unwrap();
    }
    assert!(
        store.wal_segment_count() > 10,
        "only {} segments",
        store.wal_segment_count()
    );
}
