//! The faults the harness injects *inside* a member, and the flags that ask for them.
//!
//! Why inside: on one shared kernel some faults cannot be made from outside the process (a
//! member whose clock runs faster or slower than the others; a SIGKILL that loses what was
//! never fsynced, which the real kernel keeps in its page cache), and the harness must show
//! it catches a broken build (reads served without ReadIndex).
//!
//! Why here and not in the server: the server only offers injection points
//! ([`server::Hooks`]) and defaults them to the real behaviour. The fault code lives in this
//! crate and reaches a process only through the harness's own member binary
//! (`raftkv-jepsen-member`, `src/bin/member.rs`), which passes [`FaultArgs::hooks`] to
//! [`server::run_with_hooks`]. `raftkv`, `raftkv-member` and the container image do not link
//! this crate, so they cannot contain it; `scripts/check-fault-hooks.sh` proves that on the
//! built binaries, using [`FAULT_BUILD_MARKER`] and the name of [`DeferredSyncFs`].

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use server::{Hooks, WatchSabotage};
use storage::{FileSystem, FsFile, RealFs};

/// Written to the member's log by [`FaultArgs::hooks`], so it is in every binary that can
/// inject these faults and a log says which member ran with them. `scripts/check-fault-hooks.sh`
/// looks for exactly this text: change both together.
pub const FAULT_BUILD_MARKER: &str = "raftkv-test-only-fault-injection";

/// The member's fault flags. The harness builds them with [`FaultArgs::to_flags`]; the
/// member parses them next to the server's own flags. Flags, not environment variables: a
/// `ps` listing shows what a member was started with, and nothing leaks to child processes.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct FaultArgs {
    /// Serve linearizable Range requests from the local state machine, skipping ReadIndex.
    /// Breaks linearizability on purpose (the harness's negative control).
    #[arg(long = "fault-stale-reads")]
    pub stale_reads: bool,
    /// Keep every written byte in process memory until its file is fsynced, so a SIGKILL
    /// loses exactly the un-fsynced writes, as a power loss would.
    #[arg(long = "fault-lose-unsynced")]
    pub lose_unsynced: bool,
    /// A file holding this member's clock rate (`2.0` = ticks twice as fast as configured,
    /// `0.5` = half as fast). Re-read while running, so the harness can skew and unskew a
    /// live member. Missing or unreadable = rate 1.
    #[arg(long = "fault-clock-rate-file", value_name = "PATH")]
    pub clock_rate_file: Option<PathBuf>,
    /// Break watch responses on purpose (`drop-prev-kv`: events at revisions divisible by 7
    /// lose their prev_kv; `drop-event`: those events are not sent; `drop-progress`: every 7th
    /// progress request of a stream gets no answer): the watch checker's negative control.
    #[arg(
        long = "fault-watch",
        value_name = "drop-prev-kv|drop-event|drop-progress"
    )]
    pub watch: Option<WatchFault>,
}

/// The `--fault-watch` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFault {
    DropPrevKv,
    DropEvent,
    DropProgress,
}

impl FaultArgs {
    /// The command-line flags that make a member parse back exactly these faults.
    pub fn to_flags(&self) -> Vec<OsString> {
        let mut flags = Vec::new();
        if self.stale_reads {
            flags.push("--fault-stale-reads".into());
        }
        if self.lose_unsynced {
            flags.push("--fault-lose-unsynced".into());
        }
        if let Some(path) = &self.clock_rate_file {
            flags.push("--fault-clock-rate-file".into());
            flags.push(path.clone().into_os_string());
        }
        if let Some(w) = self.watch {
            flags.push("--fault-watch".into());
            flags.push(
                match w {
                    WatchFault::DropPrevKv => "drop-prev-kv",
                    WatchFault::DropEvent => "drop-event",
                    WatchFault::DropProgress => "drop-progress",
                }
                .into(),
            );
        }
        flags
    }

    /// The server's injection points set to these faults (the real behaviour where no fault
    /// is asked for). Announces itself on stderr, the member's log.
    pub fn hooks(&self) -> Hooks {
        eprintln!(
            "{FAULT_BUILD_MARKER}: stale_reads={} lose_unsynced={} clock_rate_file={:?} watch={:?}",
            self.stale_reads, self.lose_unsynced, self.clock_rate_file, self.watch
        );
        let mut hooks = Hooks {
            skip_read_index: self.stale_reads,
            watch_sabotage: match self.watch {
                None => WatchSabotage::None,
                Some(WatchFault::DropPrevKv) => WatchSabotage::DropPrevKv,
                Some(WatchFault::DropEvent) => WatchSabotage::DropEvent,
                Some(WatchFault::DropProgress) => WatchSabotage::DropProgress,
            },
            ..Hooks::default()
        };
        if self.lose_unsynced {
            hooks.file_system = Arc::new(DeferredSyncFs);
        }
        if let Some(path) = &self.clock_rate_file {
            let clock = SkewedClock::new(path.clone());
            hooks.tick_interval = Arc::new(move |configured| clock.tick_interval(configured));
        }
        hooks
    }
}

/// Real files whose written bytes stay in process memory until `sync_data`.
///
/// The real-process counterpart of the storage crate's `LazyFs` (which lives in memory and
/// cannot outlive a crash). Unlike `LazyFs` it does not defer directory entries: create,
/// rename and remove happen at once, so it tests data fsyncs, not directory fsyncs.
#[derive(Debug)]
pub struct DeferredSyncFs;

struct DeferredFile {
    inner: Box<dyn FsFile>,
    /// Bytes written after the last sync, not yet handed to the kernel (they go to the
    /// kernel file's write position, which zeros written ahead with `extend_zeroed` do not
    /// move).
    pending: Vec<u8>,
}

impl DeferredFile {
    fn hand_over_pending(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.inner.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

impl FsFile for DeferredFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.hand_over_pending()?;
        self.inner.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        // The WAL cuts a batch whose fsync failed back to where it began, so the cut must land
        // after the held-back bytes. Handing them to the kernel early only makes this fault
        // lose less, never keeps something a real kernel would lose.
        self.hand_over_pending()?;
        self.inner.set_len(len)
    }

    fn extend_zeroed(&mut self, len: u64) -> io::Result<()> {
        // The zeros reach the kernel at once: a crash then leaves zeros where the held-back
        // records would have been, as a real power cut after the zeros' writeback does.
        self.inner.extend_zeroed(len)
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
    // Reads happen at recovery, before anything can be pending, so they go straight through.
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

/// A member clock that runs at the rate written in a file.
///
/// One kernel clock is shared by every member, so the only honest way to make one member's
/// time pass faster or slower is to scale the interval between its Raft ticks.
pub struct SkewedClock {
    path: PathBuf,
    /// The rate last read and when, so the file is not read on every tick.
    last: Mutex<Option<(Instant, f64)>>,
}

impl SkewedClock {
    /// How long a rate read from the file is used: a skew takes effect within this delay.
    pub const REREAD: Duration = Duration::from_millis(200);
    /// Rates are clamped to this range: a zero or negative rate would stop time, and a huge
    /// one would turn the tick loop into a busy loop.
    pub const MIN_RATE: f64 = 0.1;
    pub const MAX_RATE: f64 = 10.0;

    pub fn new(path: PathBuf) -> SkewedClock {
        SkewedClock {
            path,
            last: Mutex::new(None),
        }
    }

    /// The configured tick interval divided by the current rate.
    pub fn tick_interval(&self, configured: Duration) -> Duration {
        configured.div_f64(self.rate_at(Instant::now()))
    }

    /// The rate in effect at `now`: the one read within [`Self::REREAD`] before `now`, else
    /// the file's current content. Taking `now` as an argument lets tests step time.
    pub fn rate_at(&self, now: Instant) -> f64 {
        // A poisoned lock only means another tick panicked mid-read; the cache is still valid.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((read_at, rate)) = *last {
            if now.saturating_duration_since(read_at) < Self::REREAD {
                return rate;
            }
        }
        let rate = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(1.0, |r| r.clamp(Self::MIN_RATE, Self::MAX_RATE));
        *last = Some((now, rate));
        rate
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn writes_wait_for_sync_and_a_rollback_cut_lands_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut f = DeferredSyncFs.create(&path).unwrap();
        f.write_all(b"record-1").unwrap();
        assert_eq!(RealFs.read(&path).unwrap(), b"", "held back until sync");
        assert_eq!(f.len().unwrap(), 8, "the writer sees its own pending bytes");
        f.sync_data().unwrap();
        assert_eq!(RealFs.read(&path).unwrap(), b"record-1");
        // A batch whose fsync failed is cut back to where it began.
        f.write_all(b"batch-2").unwrap();
        f.set_len(8).unwrap();
        f.write_all(b"record-3").unwrap();
        f.sync_data().unwrap();
        assert_eq!(RealFs.read(&path).unwrap(), b"record-1record-3");
        // Bytes never synced are gone when the process (here: the file handle) dies.
        let mut g = DeferredSyncFs.open_append(&path).unwrap();
        g.write_all(b"lost").unwrap();
        drop(g);
        assert_eq!(RealFs.read(&path).unwrap(), b"record-1record-3");
    }

    #[test]
    fn the_clock_rate_follows_its_file_within_the_reread_delay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock-rate");
        let clock = SkewedClock::new(path.clone());
        let t0 = Instant::now();
        assert_eq!(clock.rate_at(t0), 1.0, "no file yet: normal rate");

        std::fs::write(&path, "4\n").unwrap();
        assert_eq!(clock.rate_at(t0), 1.0, "the last read is still fresh");
        let t1 = t0 + SkewedClock::REREAD;
        assert_eq!(clock.rate_at(t1), 4.0);
        assert_eq!(
            Duration::from_millis(100).div_f64(clock.rate_at(t1)),
            Duration::from_millis(25),
            "four times as fast = a quarter of the interval"
        );

        for (content, rate) in [
            ("0.25", 0.25),
            ("0", SkewedClock::MIN_RATE),
            ("-3", SkewedClock::MIN_RATE),
            ("1000", SkewedClock::MAX_RATE),
            ("NaN", 1.0),
            ("fast", 1.0),
        ] {
            std::fs::write(&path, content).unwrap();
            let clock = SkewedClock::new(path.clone());
            assert_eq!(clock.rate_at(t0), rate, "file content {content:?}");
        }
    }

    #[derive(Parser)]
    struct MemberLike {
        #[command(flatten)]
        faults: FaultArgs,
    }

    #[test]
    fn the_member_parses_back_what_the_harness_asks_for() {
        let cases = [
            FaultArgs::default(),
            FaultArgs {
                stale_reads: true,
                lose_unsynced: true,
                clock_rate_file: Some(PathBuf::from("/tmp/run dir/clock-rate-m1")),
                watch: Some(WatchFault::DropEvent),
            },
            FaultArgs {
                watch: Some(WatchFault::DropPrevKv),
                ..FaultArgs::default()
            },
            FaultArgs {
                watch: Some(WatchFault::DropProgress),
                ..FaultArgs::default()
            },
            FaultArgs {
                lose_unsynced: true,
                ..FaultArgs::default()
            },
        ];
        for faults in cases {
            let argv = std::iter::once(OsString::from("member")).chain(faults.to_flags());
            let parsed = MemberLike::try_parse_from(argv).unwrap().faults;
            assert_eq!(parsed, faults);
        }
    }

    #[test]
    fn the_hooks_inject_what_was_asked_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock-rate");
        std::fs::write(&path, "2").unwrap();

        let none = FaultArgs::default().hooks();
        assert!(!none.skip_read_index);
        assert_eq!(format!("{:?}", none.file_system), "RealFs");
        let tick = Duration::from_millis(10);
        assert_eq!((none.tick_interval)(tick), tick);

        let all = FaultArgs {
            stale_reads: true,
            lose_unsynced: true,
            clock_rate_file: Some(path),
            watch: Some(WatchFault::DropPrevKv),
        }
        .hooks();
        assert!(all.skip_read_index);
        assert_eq!(all.watch_sabotage, WatchSabotage::DropPrevKv);
        assert_eq!(format!("{:?}", all.file_system), "DeferredSyncFs");
        assert_eq!((all.tick_interval)(tick), Duration::from_millis(5));
    }
}
