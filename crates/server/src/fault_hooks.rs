//! Test-only fault hooks for the Jepsen-style harness (`crates/jepsen`).
//!
//! Why they exist: some faults cannot be made from outside the process on one shared kernel
//! (a member whose clock runs faster or slower than the others), and the harness must prove it
//! can catch a broken build (reads served from the local state machine without ReadIndex).
//!
//! Everything here compiles to inert defaults unless the crate is built with the
//! `fault-injection` feature, and even then each hook only acts when its environment variable
//! is set when the member starts. Production builds (`cargo build -p raftkv`) never enable the
//! feature.

use std::sync::Arc;
use std::time::Duration;

use storage::{FileSystem, RealFs};

/// `1` = serve linearizable Range requests from the local state machine, skipping ReadIndex.
/// Deliberately breaks linearizability (the harness's negative control).
pub const STALE_READS_ENV: &str = "RAFTKV_FAULT_STALE_READS";

/// Path of a file holding this member's clock rate (a float, e.g. `2.0` = ticks twice as
/// fast as configured, `0.5` = half as fast). Re-read while running, so the harness can skew
/// and unskew a live member. Missing or unreadable file = rate 1.
pub const CLOCK_RATE_FILE_ENV: &str = "RAFTKV_FAULT_CLOCK_RATE_FILE";

/// `1` = keep every written byte in process memory until its file is fsynced, so a SIGKILL
/// loses exactly the un-fsynced writes (as a power loss would; a real SIGKILL keeps the page
/// cache). Directory entries are not deferred: only file data is lost.
pub const LOSE_UNSYNCED_ENV: &str = "RAFTKV_FAULT_LOSE_UNSYNCED";

/// The filesystem the member's storage runs on.
pub fn file_system() -> Arc<dyn FileSystem> {
    #[cfg(feature = "fault-injection")]
    {
        if std::env::var(LOSE_UNSYNCED_ENV).is_ok_and(|v| v.trim() == "1") {
            return Arc::new(enabled::DeferredSyncFs);
        }
    }
    Arc::new(RealFs)
}

/// Whether linearizable reads must skip the ReadIndex barrier (broken on purpose).
pub fn skip_read_index() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        enabled::stale_reads()
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        false
    }
}

/// The interval until the next Raft tick: the configured heartbeat divided by this
/// member's injected clock rate.
pub fn tick_interval(heartbeat: Duration) -> Duration {
    #[cfg(feature = "fault-injection")]
    {
        enabled::scaled_tick(heartbeat)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        heartbeat
    }
}

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::io::{self, Read};
    use std::path::Path;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use storage::{FileSystem, FsFile, RealFs};

    /// Real files whose appended bytes stay in memory until `sync_data`.
    #[derive(Debug)]
    pub struct DeferredSyncFs;

    struct DeferredFile {
        inner: Box<dyn FsFile>,
        /// Bytes appended after the file's durable end, not yet written to the kernel.
        pending: Vec<u8>,
    }

    impl FsFile for DeferredFile {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            self.pending.extend_from_slice(buf);
            Ok(())
        }

        fn sync_data(&mut self) -> io::Result<()> {
            if !self.pending.is_empty() {
                self.inner.write_all(&self.pending)?;
                self.pending.clear();
            }
            self.inner.sync_data()
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            // Hand the held-back records to the kernel first, so a cut lands after them (the
            // WAL cuts a rolled-back batch back to where it began). Writing them early only
            // makes this fault lose less, never something a real kernel would keep.
            if !self.pending.is_empty() {
                self.inner.write_all(&self.pending)?;
                self.pending.clear();
            }
            self.inner.set_len(len)
        }

        fn len(&self) -> io::Result<u64> {
            Ok(self.inner.len()? + self.pending.len() as u64)
        }
    }

    impl FileSystem for DeferredSyncFs {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            RealFs.create_dir_all(dir)
        }
        fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
            RealFs.list_dir(dir)
        }
        fn exists(&self, path: &Path) -> io::Result<bool> {
            RealFs.exists(path)
        }
        // Files are only read at recovery, before anything is pending.
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            RealFs.read(path)
        }
        fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
            RealFs.open_read(path)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(DeferredFile {
                inner: RealFs.create(path)?,
                pending: Vec::new(),
            }))
        }
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(DeferredFile {
                inner: RealFs.open_append(path)?,
                pending: Vec::new(),
            }))
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            RealFs.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            RealFs.remove_file(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            RealFs.sync_dir(dir)
        }
        fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
            RealFs.lock(path)
        }
    }

    pub fn stale_reads() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var(super::STALE_READS_ENV).is_ok_and(|v| v.trim() == "1"))
    }

    /// How often the rate file is looked at: a skew takes effect within this delay.
    const REREAD: Duration = Duration::from_millis(200);
    /// Rates outside this range are clamped (a zero or negative rate would stop time).
    const MIN_RATE: f64 = 0.1;
    const MAX_RATE: f64 = 10.0;

    fn current_rate() -> f64 {
        static PATH: OnceLock<Option<String>> = OnceLock::new();
        static CACHE: Mutex<Option<(Instant, f64)>> = Mutex::new(None);
        let Some(path) = PATH.get_or_init(|| std::env::var(super::CLOCK_RATE_FILE_ENV).ok()) else {
            return 1.0;
        };
        let Ok(mut cache) = CACHE.lock() else {
            return 1.0;
        };
        let now = Instant::now();
        if let Some((at, rate)) = *cache {
            if now.duration_since(at) < REREAD {
                return rate;
            }
        }
        let rate = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(1.0, |r| r.clamp(MIN_RATE, MAX_RATE));
        *cache = Some((now, rate));
        rate
    }

    pub fn scaled_tick(heartbeat: Duration) -> Duration {
        heartbeat.div_f64(current_rate())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn records_wait_for_sync_and_a_rollback_cut_lands_after_them() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("segment");
            let mut f = DeferredSyncFs.create(&path).unwrap();
            f.write_all(b"record-1").unwrap();
            assert_eq!(RealFs.read(&path).unwrap(), b"", "held back until sync");
            assert_eq!(f.len().unwrap(), 8);
            f.sync_data().unwrap();
            assert_eq!(RealFs.read(&path).unwrap(), b"record-1");
            // A batch that failed before its fsync is cut back to where it began.
            f.write_all(b"batch-2").unwrap();
            f.set_len(8).unwrap();
            f.write_all(b"record-3").unwrap();
            f.sync_data().unwrap();
            assert_eq!(RealFs.read(&path).unwrap(), b"record-1record-3");
            // A record never synced is gone when the process dies.
            let mut g = DeferredSyncFs.open_append(&path).unwrap();
            g.write_all(b"lost").unwrap();
            drop(g);
            assert_eq!(RealFs.read(&path).unwrap(), b"record-1record-3");
        }
    }
}
