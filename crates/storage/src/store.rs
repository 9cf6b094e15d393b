//! [`Storage`]: the data dir as a whole — metadata, WAL, snapshots — and the in-memory copy
//! of the log after the newest snapshot.
//!
//! Layout of a data dir:
//!
//! ```text
//! <data-dir>/raftkv.meta        format version, member id, cluster id
//! <data-dir>/wal/<seq>.wal      WAL segments
//! <data-dir>/snap/<t>-<i>.snap  snapshot files (the newest `keep_snapshots`)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::{ConfState, Entry, HardState, Index, InitialState, Snapshot, SnapshotMeta, Term};

use crate::error::{Result, StorageError};
use crate::fs::{join, FileSystem};
use crate::meta::{self, Metadata, FORMAT_VERSION};
use crate::snapshot::{self, SnapshotWriter, WrittenSnapshot};
use crate::wal::{Replayed, Wal, DEFAULT_SEGMENT_SIZE};

const WAL_DIR: &str = "wal";
/// Lock file held while a `Storage` is open (not part of the durable state).
const LOCK_FILE: &str = "raftkv.lock";
const SNAP_DIR: &str = "snap";

/// How to open a data dir.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// This member's id; must match the data dir's.
    pub member_id: u64,
    /// The cluster's id; must match the data dir's.
    pub cluster_id: u64,
    /// True if this member is known to have had durable state before (it is restarting,
    /// not joining for the first time): then an empty data dir is an error, not a fresh
    /// start, so a member with a wiped volume never rejoins silently under its old id.
    pub expect_existing: bool,
    /// WAL segment size in bytes (default 64 MiB).
    pub segment_size: u64,
    /// Snapshot files to keep (default 2; at least 1).
    pub keep_snapshots: usize,
    /// How long to wait for another holder of the data dir's lock to let go (a previous
    /// instance still exiting) before failing with [`StorageError::Locked`]. Default 2 s.
    pub lock_wait: Duration,
}

impl StorageOptions {
    pub fn new(member_id: u64, cluster_id: u64) -> StorageOptions {
        StorageOptions {
            member_id,
            cluster_id,
            expect_existing: false,
            segment_size: DEFAULT_SEGMENT_SIZE,
            keep_snapshots: 2,
            lock_wait: Duration::from_secs(2),
        }
    }
}

/// What a start found on disk.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// The last durable hard state (default for a new data dir).
    pub hard_state: HardState,
    /// The newest snapshot, checksum verified, if any.
    pub snapshot: Option<Snapshot>,
    /// Every durable entry after the snapshot, in order, contiguous.
    pub entries: Vec<Entry>,
    /// True if this call initialised an empty data dir.
    pub created: bool,
}

impl Recovered {
    /// The core's starting point. `bootstrap` is the initial membership, used only when
    /// there is no snapshot (a snapshot carries its own). `applied` is the snapshot index:
    /// the state machine starts from the snapshot and re-applies committed entries.
    pub fn initial_state(&self, bootstrap: ConfState) -> InitialState {
        let meta = self.snapshot.as_ref().map(|s| s.meta.clone());
        InitialState {
            hard_state: self.hard_state,
            conf_state: meta
                .as_ref()
                .map(|m| m.conf_state.clone())
                .unwrap_or(bootstrap),
            applied: meta.as_ref().map(|m| m.index).unwrap_or(0),
            snapshot: meta,
            entries: self.entries.clone(),
        }
    }
}

/// The durable storage of one member. See the crate documentation for how to drive it.
#[derive(Debug)]
pub struct Storage {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    snap_dir: PathBuf,
    keep_snapshots: usize,
    opts: StorageOptions,
    wal: Wal,
    /// Held for the life of this store (see `FileSystem::lock`).
    _lock: Box<dyn std::any::Any + Send + Sync>,
    /// Hard state, newest snapshot marker, entries after it: the same state a replay
    /// of the WAL would produce.
    log: Replayed,
}

/// Lock the data dir, waiting up to `wait` for a previous holder to go away. (A holder
/// can also be a child process forked by someone else in this process, for the instant
/// between its fork and exec: the lock lives on the open file description.)
fn take_lock(
    fs: &dyn FileSystem,
    dir: &Path,
    wait: Duration,
) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    let path = join(dir, LOCK_FILE);
    let deadline = Instant::now() + wait;
    loop {
        match fs.lock(&path) {
            Ok(guard) => return Ok(guard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(StorageError::Locked {
                        dir: dir.to_path_buf(),
                        lock: path,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(StorageError::io("lock", &path, e)),
        }
    }
}

impl Storage {
    /// Open (or initialise) the data dir `dir` and recover its state.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: &StorageOptions,
    ) -> Result<(Storage, Recovered)> {
        let dir = dir.as_ref().to_path_buf();
        let wal_dir = join(&dir, WAL_DIR);
        let snap_dir = join(&dir, SNAP_DIR);
        if !fs
            .exists(&dir)
            .map_err(|e| StorageError::io("stat", &dir, e))?
        {
            if opts.expect_existing {
                return Err(StorageError::MissingState {
                    reason: format!(
                        "the directory does not exist, so neither does its metadata file {}",
                        join(&dir, meta::META_FILE).display()
                    ),
                    dir,
                });
            }
            fs.create_dir_all(&dir)
                .map_err(|e| StorageError::io("mkdir", &dir, e))?;
        }
        let lock = take_lock(&*fs, &dir, opts.lock_wait)?;
        let Some(found) = meta::read(&*fs, &dir)? else {
            return Self::initialise(fs, dir, opts, lock);
        };
        meta::check(&dir, &found, opts.member_id, opts.cluster_id)?;
        if !Wal::exists(&*fs, &wal_dir)? {
            return Err(StorageError::MissingWal {
                dir: wal_dir,
                reason: format!(
                    "the metadata file {} exists but there is no WAL segment",
                    join(&dir, meta::META_FILE).display()
                ),
            });
        }
        let (mut wal, replayed) = Wal::open(fs.clone(), &wal_dir, opts.segment_size)?;
        fs.create_dir_all(&snap_dir)
            .map_err(|e| StorageError::io("mkdir", &snap_dir, e))?;
        let snapshot = match &replayed.snapshot {
            Some(m) => Some(snapshot::load(&*fs, &snap_dir, m)?),
            None => None,
        };
        snapshot::tidy(
            &*fs,
            &snap_dir,
            replayed.snapshot.as_ref(),
            opts.keep_snapshots,
        )?;
        if let Some(m) = &replayed.snapshot {
            // Finish a purge that a crash interrupted (the snapshot is verified above).
            wal.purge(m.index)?;
        }
        let recovered = Recovered {
            hard_state: replayed.hard_state,
            snapshot,
            entries: replayed.entries.clone(),
            created: false,
        };
        let storage = Storage {
            fs,
            dir,
            snap_dir,
            keep_snapshots: opts.keep_snapshots,
            opts: opts.clone(),
            wal,
            _lock: lock,
            log: replayed,
        };
        Ok((storage, recovered))
    }

    /// A data dir without metadata: start fresh if it holds nothing of ours, else refuse.
    fn initialise(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        opts: &StorageOptions,
        lock: Box<dyn std::any::Any + Send + Sync>,
    ) -> Result<(Storage, Recovered)> {
        let wal_dir = join(&dir, WAL_DIR);
        let snap_dir = join(&dir, SNAP_DIR);
        let listing = |d: &Path| -> Result<Vec<String>> {
            if fs.exists(d).map_err(|e| StorageError::io("stat", d, e))? {
                fs.list_dir(d).map_err(|e| StorageError::io("list", d, e))
            } else {
                Ok(Vec::new())
            }
        };
        let top = listing(&dir)?;
        let snaps = listing(&snap_dir)?;
        let segments = listing(&wal_dir)?;
        // What an interrupted initialisation can leave behind: an empty first segment and
        // a metadata temp file. Anything else means this dir holds data we did not write.
        let foreign: Vec<&String> = top
            .iter()
            .filter(|n| !matches!(n.as_str(), "raftkv.meta.tmp" | LOCK_FILE))
            .chain(snaps.iter())
            .chain(
                segments
                    .iter()
                    .filter(|n| n.as_str() != "0000000000000001.wal"),
            )
            .collect();
        let first_segment = join(&wal_dir, "0000000000000001.wal");
        let leftover_has_records = !segments.is_empty() && {
            let data = fs
                .read(&first_segment)
                .map_err(|e| StorageError::io("read", &first_segment, e))?;
            data.len() > 256
        };
        if !foreign.is_empty() || leftover_has_records {
            return Err(StorageError::ForeignDir {
                reason: format!(
                    "{} is missing; found {:?}",
                    join(&dir, meta::META_FILE).display(),
                    foreign.iter().take(5).collect::<Vec<_>>()
                ),
                dir,
            });
        }
        if opts.expect_existing {
            return Err(StorageError::MissingState {
                reason: format!(
                    "metadata file {} is missing and there is no WAL",
                    join(&dir, meta::META_FILE).display()
                ),
                dir,
            });
        }
        for d in [&dir, &wal_dir, &snap_dir] {
            fs.create_dir_all(d)
                .map_err(|e| StorageError::io("mkdir", d, e))?;
        }
        if !segments.is_empty() {
            fs.remove_file(&first_segment)
                .map_err(|e| StorageError::io("remove", &first_segment, e))?;
        }
        let wal = Wal::create(fs.clone(), &wal_dir, opts.segment_size)?;
        fs.sync_dir(&dir)
            .map_err(|e| StorageError::io("fsync dir", &dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the data dir's own entry durable too (best effort: the parent may be a
            // mount point we cannot open).
            let _ = fs.sync_dir(parent);
        }
        let m = Metadata {
            format: FORMAT_VERSION,
            member_id: opts.member_id,
            cluster_id: opts.cluster_id,
        };
        meta::write(&*fs, &dir, &m)?;
        let recovered = Recovered {
            created: true,
            ..Recovered::default()
        };
        let storage = Storage {
            fs,
            dir,
            snap_dir,
            keep_snapshots: opts.keep_snapshots,
            opts: opts.clone(),
            wal,
            _lock: lock,
            log: Replayed::default(),
        };
        Ok((storage, recovered))
    }

    /// Persist one Ready's writes with one `fdatasync` (group commit): a snapshot received
    /// from the leader, entries (truncating a conflicting suffix first if `entries[0]` is
    /// at or below the last index), and the hard state. Returns only once all of it is
    /// durable. On `Err(NoSpace)` nothing changed and the call may be retried; after any
    /// other error the store refuses further writes (restart to recover).
    pub fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<()> {
        if let Some(snap) = snapshot {
            if snap.meta.index <= self.snapshot_index() {
                return Err(StorageError::Invalid(format!(
                    "snapshot at {} is not newer than the current snapshot at {}",
                    snap.meta.index,
                    self.snapshot_index()
                )));
            }
        }
        self.check_entries(entries, snapshot.map(|s| &s.meta))?;
        if hard_state.is_none() && entries.is_empty() && snapshot.is_none() {
            return Ok(());
        }
        if let Some(snap) = snapshot {
            // The image must be durable before the marker that makes it current.
            self.snapshot_writer().write_bytes(&snap.meta, &snap.data)?;
        }
        self.wal
            .append(snapshot.map(|s| &s.meta), entries, hard_state)?;
        self.apply_to_memory(snapshot.map(|s| &s.meta), entries, hard_state);
        if let Some(snap) = snapshot {
            self.after_new_snapshot(&snap.meta)?;
        }
        Ok(())
    }

    /// Record a hard state that differs from the stored one only in its commit index,
    /// *without* waiting for it to be durable: it is written now and becomes durable with
    /// the next durable write (`save` or `compact_to`), which flushes everything written
    /// before it. After a crash before then, the previous commit index is recovered.
    ///
    /// Why this is safe: the commit index is volatile state in Raft (it is re-learnt from
    /// the leader, and every committed entry is durable on a majority whatever any member
    /// recorded about it); persisting it only lets a restarted member re-apply its committed
    /// prefix before it hears from a leader. Why it matters: a commit-only `save` costs one
    /// fsync on every member for every write, and on the leader that fsync sits between the
    /// last acknowledgement and the answer to the client.
    ///
    /// A change of term or vote must be durable before it is acted on: it is refused here
    /// (`Invalid`), use `save`. So is a commit index past the last index (it would claim
    /// entries this member does not have, and a restart would fail with `MissingWal`) or
    /// below the saved one (the commit index never moves back; a caller that tries has lost
    /// track of what it applied). Both are refused before anything is written.
    pub fn save_commit(&mut self, hard_state: &HardState) -> Result<()> {
        let current = self.log.hard_state;
        if hard_state.term != current.term || hard_state.vote != current.vote {
            return Err(StorageError::Invalid(format!(
                "save_commit with term {} vote {:?}, but the stored hard state has term {} \
                 vote {:?}: a term or vote change must be saved durably",
                hard_state.term, hard_state.vote, current.term, current.vote
            )));
        }
        if hard_state.commit > self.last_index() {
            return Err(StorageError::Invalid(format!(
                "save_commit with commit index {}, past the last log index {}: a member can \
                 only record as committed entries it holds",
                hard_state.commit,
                self.last_index()
            )));
        }
        if hard_state.commit < current.commit {
            return Err(StorageError::Invalid(format!(
                "save_commit with commit index {}, below the saved commit index {}: the \
                 commit index never moves back",
                hard_state.commit, current.commit
            )));
        }
        if *hard_state == current {
            return Ok(());
        }
        self.wal.append_unsynced_hard_state(hard_state)?;
        self.apply_to_memory(None, &[], Some(hard_state));
        Ok(())
    }

    /// Entries must be contiguous, start at most one past our last index, and not reach
    /// into what the (new) snapshot covers.
    fn check_entries(&self, entries: &[Entry], snapshot: Option<&SnapshotMeta>) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index.saturating_add(1) {
                return Err(StorageError::Invalid(format!(
                    "entries are not contiguous: {} follows {}",
                    pair[1].index, pair[0].index
                )));
            }
        }
        // Where the log ends once the snapshot (if any) is applied, exactly as
        // `Replayed::apply_snapshot` will do it.
        let (floor, last) = match snapshot {
            Some(m) => {
                let keeps_log = matches!(self.term(m.index), Ok(t) if t == m.term)
                    && m.index <= self.last_index();
                (
                    m.index,
                    if keeps_log {
                        self.last_index()
                    } else {
                        m.index
                    },
                )
            }
            None => (self.snapshot_index(), self.last_index()),
        };
        if first.index <= floor {
            return Err(StorageError::Invalid(format!(
                "entry {} is at or below the snapshot index {floor}",
                first.index
            )));
        }
        if first.index > last.saturating_add(1) {
            return Err(StorageError::Invalid(format!(
                "entry {} would leave a gap after the last index {last}",
                first.index
            )));
        }
        Ok(())
    }

    fn apply_to_memory(
        &mut self,
        snapshot: Option<&SnapshotMeta>,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) {
        use crate::codec::Record;
        let records = snapshot
            .map(|m| Record::Snapshot(m.clone()))
            .into_iter()
            .chain(entries.iter().map(|e| Record::Entry(e.clone())))
            .chain(hs.map(|h| Record::HardState(*h)));
        for r in records {
            // `check_entries` validated the batch before it was written, so this cannot
            // fail; if it ever did, memory and disk would disagree: fail-stop.
            if let Err(why) = self.log.apply(r) {
                debug_assert!(false, "validated batch failed to apply: {why}");
                self.wal
                    .fail(format!("in-memory log rejected a durable batch: {why}"));
            }
        }
    }

    /// A writer for snapshot files that can run on another thread while this store keeps
    /// appending. Hand its result to [`Storage::compact_to`].
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter::new(self.fs.clone(), self.snap_dir.clone())
    }

    /// Make a snapshot written by [`SnapshotWriter`] current: record it in the WAL (one
    /// fsync), drop entries up to its index from memory, delete WAL segments it covers and
    /// snapshot files beyond the newest `keep_snapshots`. The snapshot must be of applied
    /// (so committed) state: `meta.index ≤ commit`, and its term must match our entry.
    pub fn compact_to(&mut self, written: &WrittenSnapshot) -> Result<()> {
        let meta = &written.meta;
        if meta.index <= self.snapshot_index() {
            return Ok(()); // Already covered by a newer snapshot; nothing to do.
        }
        if meta.index > self.log.hard_state.commit {
            return Err(StorageError::Invalid(format!(
                "snapshot at {} is beyond the commit index {}",
                meta.index, self.log.hard_state.commit
            )));
        }
        match self.term(meta.index) {
            Ok(t) if t == meta.term => {}
            Ok(t) => {
                return Err(StorageError::Invalid(format!(
                    "snapshot at {} has term {}, but the log's entry there has term {t}",
                    meta.index, meta.term
                )))
            }
            Err(e) => return Err(e),
        }
        self.wal.append(Some(meta), &[], None)?;
        self.apply_to_memory(Some(meta), &[], None);
        self.after_new_snapshot(meta)
    }

    fn after_new_snapshot(&mut self, meta: &SnapshotMeta) -> Result<()> {
        self.wal.purge(meta.index)?;
        snapshot::tidy(&*self.fs, &self.snap_dir, Some(meta), self.keep_snapshots)
    }

    /// Read the current snapshot back (to send it to a follower), if there is one.
    pub fn load_snapshot(&self) -> Result<Option<Snapshot>> {
        match &self.log.snapshot {
            Some(m) => snapshot::load(&*self.fs, &self.snap_dir, m).map(Some),
            None => Ok(None),
        }
    }

    /// The current snapshot, its image mapped from its file rather than read onto the heap,
    /// or `None` if there is none or the filesystem maps nothing. For the copy the Raft core
    /// keeps to send to followers behind the log: after a restart, and after a snapshot
    /// received from the leader is durable (whose heap copy can then be dropped).
    pub fn map_snapshot(&self) -> Result<Option<Snapshot>> {
        match &self.log.snapshot {
            Some(m) => snapshot::map(&*self.fs, &self.snap_dir, m),
            None => Ok(None),
        }
    }

    pub fn hard_state(&self) -> HardState {
        self.log.hard_state
    }

    /// Metadata of the current snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.log.snapshot.as_ref()
    }

    fn snapshot_index(&self) -> Index {
        self.log.snapshot.as_ref().map(|s| s.index).unwrap_or(0)
    }

    /// First index still in the log (snapshot index + 1).
    pub fn first_index(&self) -> Index {
        self.snapshot_index().saturating_add(1)
    }

    /// Last index in the log (the snapshot index if the log is empty).
    pub fn last_index(&self) -> Index {
        self.log
            .entries
            .last()
            .map(|e| e.index)
            .unwrap_or_else(|| self.snapshot_index())
    }

    /// Entries `[lo, hi)`.
    pub fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted(self.snapshot_index()));
        }
        if lo > hi || hi > self.last_index().saturating_add(1) {
            return Err(StorageError::Invalid(format!(
                "range [{lo}, {hi}) is outside the log [{}, {}]",
                self.first_index(),
                self.last_index()
            )));
        }
        let base = self.first_index();
        Ok(self.log.entries[(lo - base) as usize..(hi - base) as usize].to_vec())
    }

    /// Term of the entry at `index` (the snapshot's term at the snapshot index).
    pub fn term(&self, index: Index) -> Result<Term> {
        if let Some(s) = &self.log.snapshot {
            if index == s.index {
                return Ok(s.term);
            }
        }
        if index == 0 {
            return Ok(0);
        }
        if index < self.first_index() {
            return Err(StorageError::Compacted(self.snapshot_index()));
        }
        self.log
            .entries
            .get((index - self.first_index()) as usize)
            .map(|e| e.term)
            .ok_or_else(|| {
                StorageError::Invalid(format!(
                    "index {index} is past the last index {}",
                    self.last_index()
                ))
            })
    }

    /// Close this store and open the data dir again, as a restart would (for tests).
    pub fn reopen(self) -> Result<(Storage, Recovered)> {
        let (fs, dir) = (self.fs.clone(), self.dir.clone());
        let opts = StorageOptions {
            expect_existing: true,
            ..self.opts.clone()
        };
        drop(self);
        Storage::open(fs, dir, &opts)
    }

    /// Number of WAL segment files (for tests and metrics).
    pub fn wal_segment_count(&self) -> usize {
        self.wal.segment_count()
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> &Path {
        self.wal.dir()
    }
}
