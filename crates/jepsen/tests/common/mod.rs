//! Shared helpers of the harness tests.

use std::path::PathBuf;

/// The member binary Cargo built for this package's tests.
pub fn member_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_raftkv-jepsen-member"))
}

/// A fresh directory for a run's artefacts (kept after the test, for inspection).
pub fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("raftkv-jepsen-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
