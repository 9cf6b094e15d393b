//! The conformance suite against the WAL-backed store, on the LazyFS test filesystem and on
//! real files. (The suite's own soundness — the reference store passes, deliberately buggy
//! stores fail — is tested inside the crate, in `conformance::tests`.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use storage::{LazyFs, RealFs, Storage, StorageOptions};

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

fn wal_on_real_files() -> Storage {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = ROOT.get_or_init(|| tempfile::tempdir().unwrap());
    let dir: PathBuf = root
        .path()
        .join(format!("store-{}", NEXT.fetch_add(1, Ordering::SeqCst)));
    Storage::open(Arc::new(RealFs), dir, &options()).unwrap().0
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
