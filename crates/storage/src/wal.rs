//! The segmented write-ahead log.
//!
//! The WAL is a directory of segment files `<seq as 16 hex digits>.wal`, numbered without
//! gaps. Only the newest segment is written; when it reaches the configured size the next
//! batch starts a new one. Every segment begins with a header record, then a copy of the
//! current hard state and snapshot marker, so that older segments can be deleted without
//! losing either.
//!
//! Truncating a conflicting suffix is *logical*: an entry record at index `i` replaces every
//! earlier-written entry at `i` and above. That keeps a conflict and its replacement in one
//! append-only batch (one fsync, no window in which the log is shorter than both) and never
//! cuts through a hard-state record written after the conflicting entries.
//!
//! Recovery (`Wal::open`) replays every record in order, up to the first that fails its
//! checks. What may follow that point depends on the segment. In a sealed segment nothing
//! (it was synced before its successor existed): corruption. In the newest segment of
//! format 2, records are written over zeros and a power cut can keep any subset of the
//! pages of the write it interrupted, so intact records may follow a broken one; every
//! synced batch ends in a batch end naming where its records began, written only after
//! everything before that was synced. So the bad bytes are *torn* (cut off with a
//! warning) unless a valid batch end after them begins beyond them, which proves they were
//! synced: corruption, which stops the member. In the newest segment of format 1
//! (appended, which leaves a prefix of an interrupted write) they are torn only if no valid
//! record follows them. Damage to the final synced batch looks like a torn write either
//! way, so the warning does not claim to know which it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft::{Entry, HardState, Index, SnapshotMeta};

use crate::codec::{self, Frame, Record};
use crate::error::{Result, StorageError};
use crate::fs::{join, FileSystem, FsFile};

/// The WAL format this code writes and the newest it can read. Format 2 ends every synced
/// batch with a batch-end record and writes records over zeros written ahead of them;
/// format 1 (no batch ends, appends only) is still read, and a member that opens a format-1
/// active segment starts a format-2 one before it writes.
pub(crate) const WAL_FORMAT: u32 = 2;
/// The first format whose segments carry batch ends and may end in zeros.
const FORMAT_WITH_BATCH_ENDS: u32 = 2;
/// Default segment size (64 MiB, like etcd).
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// How far ahead of its last record the active segment is filled with zeros
/// (`FsFile::extend_zeroed`): one extension, and one larger fsync, per this many bytes of log.
const PREALLOC_STEP: u64 = 1 << 20;

/// A segment that exists on disk.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Highest entry index written into this segment (0 if none). A segment can be deleted
    /// once a snapshot covers this index (and every older segment can be deleted too).
    max_index: Index,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What replaying the WAL recovered.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub hard_state: HardState,
    /// The newest snapshot marker: a snapshot at this index is durable.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl Replayed {
    fn last_index(&self) -> Index {
        self.entries.last().map(|e| e.index).unwrap_or(0)
    }

    /// Applies one record, as the log semantics define it. Errors are described for the
    /// caller to wrap with the file and offset.
    pub(crate) fn apply(&mut self, record: Record) -> std::result::Result<(), String> {
        match record {
            Record::SegmentHeader { .. } => {
                return Err("segment header in the middle of a segment".into())
            }
            Record::HardState(hs) => self.hard_state = hs,
            Record::Snapshot(meta) => self.apply_snapshot(meta),
            // Changes no state: replay checks where it says its batch began.
            Record::BatchEnd { .. } => {}
            Record::Entry(e) => {
                match self.entries.first().map(|f| f.index) {
                    None => {}
                    Some(first) if e.index <= first => self.entries.clear(),
                    Some(first) => {
                        let last = self.last_index();
                        if e.index > last.saturating_add(1) {
                            return Err(format!(
                                "entry {} follows entry {last}: entries {}..{} are missing",
                                e.index,
                                last.saturating_add(1),
                                e.index - 1
                            ));
                        }
                        self.entries.truncate((e.index - first) as usize);
                    }
                }
                self.entries.push(e);
            }
        }
        Ok(())
    }

    /// A snapshot at `meta.index` replaces the log up to it. If our entry at that index has
    /// another term (a snapshot installed from the leader over a divergent log), the
    /// whole log is replaced (Raft's InstallSnapshot rule).
    fn apply_snapshot(&mut self, meta: SnapshotMeta) {
        if self.snapshot.as_ref().is_some_and(|s| s.index > meta.index) {
            return; // An older marker copied into a newer segment: already superseded.
        }
        match self.entries.first().map(|f| f.index) {
            Some(first) if meta.index >= first && meta.index <= self.last_index() => {
                let pos = (meta.index - first) as usize;
                if self.entries[pos].term == meta.term {
                    self.entries.drain(..=pos);
                } else {
                    self.entries.clear();
                }
            }
            Some(_) if meta.index > self.last_index() => self.entries.clear(),
            _ => {}
        }
        self.snapshot = Some(meta);
    }
}

/// The open WAL: replayed state lives in the caller; the WAL only appends and purges.
pub(crate) struct Wal {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    segment_size: u64,
    segments: Vec<Segment>,
    active: Box<dyn FsFile>,
    /// Where the active segment's records end (the next one is written here).
    active_len: u64,
    /// How far the active segment's file reaches: zeros from `active_len` up to here.
    prealloc_end: u64,
    /// Where the records the next batch end closes begin in the active segment: the end of
    /// the last batch end, or 0 in a segment that has none yet.
    batch_start: u64,
    /// What a new segment starts with, so old segments can go.
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    /// Set after a failed fsync or a failed rollback: the state on disk is unknown.
    failed: Option<String>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segments", &self.segments)
            .field("active_len", &self.active_len)
            .finish()
    }
}

/// One thing to write in a batch.
enum Item<'a> {
    Snapshot(&'a SnapshotMeta),
    Entry(&'a Entry),
    HardState(&'a HardState),
    /// The batch's last record (`Record::BatchEnd`).
    End,
}

impl Wal {
    /// Create an empty WAL in `dir` (which must exist and hold no segments).
    pub(crate) fn create(fs: Arc<dyn FileSystem>, dir: &Path, segment_size: u64) -> Result<Wal> {
        let (active, active_len, seg) = new_segment(&*fs, dir, 1, &HardState::default(), None)?;
        let mut active = active;
        sync(&mut active, &seg.path)?;
        fs.sync_dir(dir)
            .map_err(|e| StorageError::io("fsync dir", dir, e))?;
        Ok(Wal {
            fs,
            dir: dir.to_path_buf(),
            segment_size,
            segments: vec![seg],
            active,
            active_len,
            prealloc_end: active_len,
            batch_start: 0,
            hard_state: HardState::default(),
            snapshot: None,
            failed: None,
            buf: Vec::new(),
        })
    }

    /// Does `dir` hold any segment?
    pub(crate) fn exists(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
        if !fs
            .exists(dir)
            .map_err(|e| StorageError::io("stat", dir, e))?
        {
            return Ok(false);
        }
        let names = fs
            .list_dir(dir)
            .map_err(|e| StorageError::io("list", dir, e))?;
        Ok(names.iter().any(|n| parse_segment_name(n).is_some()))
    }

    /// Open and replay the WAL in `dir`, cutting off a torn tail.
    pub(crate) fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        segment_size: u64,
    ) -> Result<(Wal, Replayed)> {
        let names = fs
            .list_dir(dir)
            .map_err(|e| StorageError::io("list", dir, e))?;
        let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        seqs.sort_unstable();
        if seqs.is_empty() {
            return Err(StorageError::MissingWal {
                dir: dir.to_path_buf(),
                reason: "no WAL segment files".into(),
            });
        }
        for pair in seqs.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(StorageError::MissingWal {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "segment {} is followed by {}: segment(s) {}..{} are missing",
                        segment_name(pair[0]),
                        segment_name(pair[1]),
                        pair[0] + 1,
                        pair[1] - 1
                    ),
                });
            }
        }

        let mut replayed = Replayed::default();
        let mut segments = Vec::with_capacity(seqs.len());
        let mut active_len = 0;
        let mut active_format = WAL_FORMAT;
        let mut batch_start = 0;
        let mut zero_tail = false;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = join(dir, &segment_name(seq));
            let is_last = i + 1 == seqs.len();
            let data = Bytes::from(
                fs.read(&path)
                    .map_err(|e| StorageError::io("read", &path, e))?,
            );
            let found = replay_segment(&data, seq, &path, is_last, &mut replayed)?;
            let (valid_len, max_index) = (found.valid_len, found.max_index);
            if let Tail::Torn(why) = &found.tail {
                let tail = TornTail {
                    path: &path,
                    offset: valid_len,
                    dropped_bytes: data.len() as u64 - valid_len,
                    why,
                    last_index: replayed
                        .entries
                        .last()
                        .map(|e| e.index)
                        .or(replayed.snapshot.as_ref().map(|s| s.index))
                        .unwrap_or(0),
                };
                tracing::warn!(
                    file = %path.display(),
                    offset = tail.offset,
                    dropped_bytes = tail.dropped_bytes,
                    last_index = tail.last_index,
                    "{}",
                    tail.describe()
                );
                cut_tail(&*fs, &path, valid_len)?;
            }
            if is_last {
                active_len = valid_len;
                active_format = found.format;
                batch_start = found.batch_start;
                zero_tail = matches!(found.tail, Tail::Zeros);
            }
            segments.push(Segment {
                seq,
                path,
                max_index,
            });
        }
        check_replayed(dir, &replayed)?;

        // Everything replayed is from here on treated as synced (a batch end written next
        // says so, and the member acts on the state it recovered), but a process that was
        // killed before its fsync leaves its last writes in the page cache only: sync every
        // segment before anything is written (pages already clean cost nothing).
        for seg in &segments[..segments.len() - 1] {
            let mut file = fs
                .open_append(&seg.path)
                .map_err(|e| StorageError::io("open", &seg.path, e))?;
            sync(&mut file, &seg.path)?;
        }
        let last = segments.last().expect("at least one segment");
        let mut active = fs
            .open_append(&last.path)
            .map_err(|e| StorageError::io("open", &last.path, e))?;
        if zero_tail {
            // Zeros written ahead of records that never came: the clean end of a format-2
            // segment. Cut them so the next record is written where the records end.
            active
                .set_len(active_len)
                .map_err(|e| StorageError::io("truncate", &last.path, e))?;
        }
        sync(&mut active, &last.path)?;
        if active_len == 0 {
            // The crash came before the segment header was durable: write it again.
            let mut head = Vec::new();
            codec::encode_segment_header(&mut head, WAL_FORMAT, last.seq);
            codec::encode_hard_state(&mut head, &replayed.hard_state);
            if let Some(s) = &replayed.snapshot {
                codec::encode_snapshot_marker(&mut head, s);
            }
            active
                .write_all(&head)
                .map_err(|e| StorageError::io("write", &last.path, e))?;
            sync(&mut active, &last.path)?;
            active_len = head.len() as u64;
            active_format = WAL_FORMAT;
            batch_start = 0;
        }
        if active_format < FORMAT_WITH_BATCH_ENDS {
            // A data dir written by an older raftkv: its newest segment is append-only and
            // has no batch ends, so it is sealed as it is and the writes go to a new segment.
            let seq = last.seq + 1;
            let (mut file, len, seg) = new_segment(
                &*fs,
                dir,
                seq,
                &replayed.hard_state,
                replayed.snapshot.as_ref(),
            )?;
            sync(&mut file, &seg.path)?;
            fs.sync_dir(dir)
                .map_err(|e| StorageError::io("fsync dir", dir, e))?;
            segments.push(seg);
            active = file;
            active_len = len;
            batch_start = 0;
        }
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            segment_size,
            segments,
            active,
            active_len,
            prealloc_end: active_len,
            batch_start,
            hard_state: replayed.hard_state,
            snapshot: replayed.snapshot.clone(),
            failed: None,
            buf: Vec::new(),
        };
        Ok((wal, replayed))
    }

    /// Durably append, in this order: a snapshot marker, entries, the hard state. One
    /// `fdatasync` for the whole batch (more only if it crosses into a new segment). On
    /// return `Ok`, everything is durable; on `Err(NoSpace)` nothing was changed.
    pub(crate) fn append(
        &mut self,
        snapshot: Option<&SnapshotMeta>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(StorageError::Failed(why.clone()));
        }
        let items = snapshot
            .map(Item::Snapshot)
            .into_iter()
            .chain(entries.iter().map(Item::Entry))
            .chain(hard_state.map(Item::HardState))
            .chain([Item::End]);

        let start_len = self.active_len;
        let start_batch = self.batch_start;
        let start_segments = self.segments.len();
        let start_max = self.segments.last().map(|s| s.max_index).unwrap_or(0);
        let mut sealed: Vec<(Box<dyn FsFile>, PathBuf)> = Vec::new();
        let mut hs_now = self.hard_state;
        let mut snap_now = self.snapshot.clone();

        let result = (|| -> Result<()> {
            self.buf.clear();
            for item in items {
                let before = self.buf.len();
                match item {
                    Item::Snapshot(m) => codec::encode_snapshot_marker(&mut self.buf, m),
                    Item::Entry(e) => codec::encode_entry(&mut self.buf, e),
                    Item::HardState(h) => codec::encode_hard_state(&mut self.buf, h),
                    Item::End => codec::encode_batch_end(&mut self.buf, self.batch_start),
                }
                let full = self.active_len + self.buf.len() as u64 > self.segment_size;
                if full && self.active_len + before as u64 > self.header_len_hint() {
                    // Seal the active segment with the records before this one, start a new
                    // segment and carry this record over.
                    let mut carried = self.buf.split_off(before);
                    self.write_active(&self.buf.clone())?;
                    self.buf = Vec::new();
                    // A sealed segment ends at its last record and is durable before the
                    // next one exists: zeros, or a torn record, in a segment that has a
                    // successor are damage, never a crash's leftovers.
                    let sealed_path = self.segments.last().expect("active").path.clone();
                    self.active
                        .set_len(self.active_len)
                        .map_err(|e| StorageError::io("truncate", &sealed_path, e))?;
                    sync(&mut self.active, &sealed_path)?;
                    let seq = self.segments.last().expect("active").seq + 1;
                    let (file, len, seg) =
                        new_segment(&*self.fs, &self.dir, seq, &hs_now, snap_now.as_ref())?;
                    let old = std::mem::replace(&mut self.active, file);
                    sealed.push((old, sealed_path));
                    self.segments.push(seg);
                    self.active_len = len;
                    self.prealloc_end = len;
                    self.batch_start = 0;
                    if matches!(item, Item::End) {
                        // It closes what this batch writes into the new segment.
                        carried.clear();
                        codec::encode_batch_end(&mut carried, 0);
                    }
                    self.buf = carried;
                }
                match item {
                    Item::Snapshot(m) => snap_now = Some(m.clone()),
                    Item::Entry(e) => {
                        let seg = self.segments.last_mut().expect("active");
                        seg.max_index = seg.max_index.max(e.index);
                    }
                    Item::HardState(h) => hs_now = *h,
                    Item::End => {}
                }
            }
            let tail = std::mem::take(&mut self.buf);
            let written = self.write_active(&tail);
            self.buf = tail;
            written
        })();

        if let Err(e) = result {
            self.rollback(start_len, start_segments, start_max, sealed, &e);
            self.batch_start = start_batch;
            return Err(e);
        }

        // Durability point: sealed segments first, then the active one, then the directory
        // if this batch created segments.
        let synced = (|| -> Result<()> {
            for (file, path) in sealed.iter_mut() {
                sync(file, path)?;
            }
            let active_path = self.segments.last().expect("active").path.clone();
            sync(&mut self.active, &active_path)?;
            if self.segments.len() > start_segments {
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
            }
            Ok(())
        })();
        if let Err(e) = synced {
            // After a failed fsync the kernel may have dropped the dirty pages: we no longer
            // know what is on disk. Fail-stop; a restart recovers from the disk.
            self.failed = Some(e.to_string());
            return Err(e);
        }
        self.hard_state = hs_now;
        self.snapshot = snap_now;
        self.batch_start = self.active_len;
        Ok(())
    }

    /// Write a hard-state record without syncing it (see `Storage::save_commit`). It is
    /// flushed by the next synced batch: a later fdatasync of the active segment covers every
    /// byte written to it before, and a batch that rolls to a new segment syncs the segment
    /// it seals. A record that would not fit in the active segment goes through the synced
    /// `append` instead (rolling segments is rare; keeping it in one place keeps it right).
    pub(crate) fn append_unsynced_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(StorageError::Failed(why.clone()));
        }
        self.buf.clear();
        codec::encode_hard_state(&mut self.buf, hard_state);
        if self.active_len + self.buf.len() as u64 > self.segment_size {
            return self.append(None, &[], Some(hard_state));
        }
        let start_len = self.active_len;
        let start_segments = self.segments.len();
        let start_max = self.segments.last().map(|s| s.max_index).unwrap_or(0);
        let record = std::mem::take(&mut self.buf);
        let written = self.write_active(&record);
        self.buf = record;
        if let Err(e) = written {
            self.rollback(start_len, start_segments, start_max, Vec::new(), &e);
            return Err(e);
        }
        self.hard_state = *hard_state;
        Ok(())
    }

    /// A segment's header, hard state and marker take roughly this much; a segment never
    /// seals before holding at least one record after them.
    fn header_len_hint(&self) -> u64 {
        64 + self
            .snapshot
            .as_ref()
            .map(|s| 8 * (s.conf_state.voters.len() + s.conf_state.learners.len()) as u64 + 32)
            .unwrap_or(0)
    }

    fn write_active(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let path = &self.segments.last().expect("active").path;
        let needed = self.active_len + bytes.len() as u64;
        if needed > self.prealloc_end {
            let target = needed.max((self.active_len + PREALLOC_STEP).min(self.segment_size));
            // Best effort: on a full disk the record may still fit where the zeros did not
            // (it is then appended, as in format 1).
            if self.active.extend_zeroed(target).is_ok() {
                self.prealloc_end = target;
            }
        }
        self.active
            .write_all(bytes)
            .map_err(|e| StorageError::io("write", path, e))?;
        self.active_len += bytes.len() as u64;
        Ok(())
    }

    /// Undo a batch that failed before its fsync: delete the segments it created and cut
    /// the segment it started in back to where the batch began. If that fails too, the WAL
    /// is marked failed.
    fn rollback(
        &mut self,
        start_len: u64,
        start_segments: usize,
        start_max: Index,
        mut sealed: Vec<(Box<dyn FsFile>, PathBuf)>,
        cause: &StorageError,
    ) {
        let undo = (|| -> std::io::Result<()> {
            let created: Vec<Segment> = self.segments.drain(start_segments..).collect();
            if let Some((first_file, _)) = (!sealed.is_empty()).then(|| sealed.remove(0)) {
                self.active = first_file;
            }
            self.active.set_len(start_len)?;
            // Durably: sealing a segment syncs the records this batch wrote into it.
            self.active.sync_data()?;
            if !created.is_empty() {
                for seg in created.iter().rev() {
                    self.fs.remove_file(&seg.path)?;
                }
                self.fs.sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        self.active_len = start_len;
        // Zeros may or may not follow now; the next write extends them again if needed.
        self.prealloc_end = start_len;
        if let Some(seg) = self.segments.last_mut() {
            seg.max_index = start_max;
        }
        if let Err(e) = undo {
            self.failed = Some(format!("{cause}; then rolling the batch back failed: {e}"));
        } else if !cause.is_no_space() {
            self.failed = Some(cause.to_string());
        }
    }

    /// Delete whole segments whose entries are all covered by a durable snapshot at
    /// `snapshot_index`. Never the active segment (it holds the newest marker). Oldest
    /// first, one directory fsync per deletion, so the survivors are always a gap-free run.
    pub(crate) fn purge(&mut self, snapshot_index: Index) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[0].max_index <= snapshot_index {
            let seg = &self.segments[0];
            match self.fs.remove_file(&seg.path) {
                Ok(()) => {}
                // Removed by an earlier purge whose directory fsync failed: finish the job.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove", &seg.path, e)),
            }
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
            self.segments.remove(0);
            removed += 1;
        }
        Ok(removed)
    }

    /// Refuse all further writes (the caller found memory and disk out of step).
    pub(crate) fn fail(&mut self, why: String) {
        self.failed.get_or_insert(why);
    }

    /// Number of segment files.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Create segment `seq` with its header, hard state and snapshot marker (not yet synced).
fn new_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    seq: u64,
    hs: &HardState,
    snapshot: Option<&SnapshotMeta>,
) -> Result<(Box<dyn FsFile>, u64, Segment)> {
    let path = join(dir, &segment_name(seq));
    let mut head = Vec::new();
    codec::encode_segment_header(&mut head, WAL_FORMAT, seq);
    codec::encode_hard_state(&mut head, hs);
    if let Some(s) = snapshot {
        codec::encode_snapshot_marker(&mut head, s);
    }
    let mut file = fs
        .create(&path)
        .map_err(|e| StorageError::io("create", &path, e))?;
    if let Err(e) = file.write_all(&head) {
        let _ = fs.remove_file(&path);
        return Err(StorageError::io("write", &path, e));
    }
    let len = head.len() as u64;
    Ok((
        file,
        len,
        Segment {
            seq,
            path,
            max_index: 0,
        },
    ))
}

fn sync(file: &mut Box<dyn FsFile>, path: &Path) -> Result<()> {
    file.sync_data()
        .map_err(|e| StorageError::io("fdatasync", path, e))
}

fn cut_tail(fs: &dyn FileSystem, path: &Path, len: u64) -> Result<()> {
    let mut f = fs
        .open_append(path)
        .map_err(|e| StorageError::io("open", path, e))?;
    f.set_len(len)
        .map_err(|e| StorageError::io("truncate", path, e))?;
    sync(&mut f, path)
}

/// What start-up cut off the end of the newest segment, for the warning it logs.
struct TornTail<'a> {
    path: &'a Path,
    /// Where the last intact record ends (the file is cut back to this length).
    offset: u64,
    dropped_bytes: u64,
    /// Why the first dropped record is not intact (incomplete, bad checksum, …).
    why: &'a str,
    /// The last log index that was recovered.
    last_index: Index,
}

impl TornTail<'_> {
    /// The warning text. It says only what the storage knows. A crash in the middle of an
    /// append leaves exactly this behind (and such a batch was never acknowledged, as
    /// acknowledgements wait for the fsync), but damage to the final records of data that
    /// *was* fsynced looks the same, so the text must not promise that nothing
    /// acknowledged was lost; it says where such entries still exist.
    fn describe(&self) -> String {
        format!(
            "WAL segment {} ends with {} byte(s) past the last intact record (which ends at \
             byte offset {}; the last recovered log index is {}) that do not form a valid \
             record ({}), and no intact record follows them: cutting them off. This is what \
             a crash in the middle of a write leaves, but damage to the final records looks \
             the same, so whether these bytes held acknowledged entries cannot be known \
             here. If they did, the cluster's other members hold them (an entry is \
             acknowledged only once a majority has it durably) and the leader sends them \
             again; a single-member cluster has no other copy",
            self.path.display(),
            self.dropped_bytes,
            self.offset,
            self.last_index,
            self.why
        )
    }
}

/// What follows the intact records of a segment.
enum Tail {
    /// Nothing: the records end with the file.
    None,
    /// Zeros only (format 2: written ahead of records that never came): the clean end.
    Zeros,
    /// Bytes that are not a valid record, left by a write that did not complete (or by
    /// damage that looks the same): cut off with a warning saying why.
    Torn(String),
}

/// What replaying one segment found.
struct SegmentReplay {
    /// Where its intact records end.
    valid_len: u64,
    /// The highest entry index in it.
    max_index: Index,
    /// The WAL format its header names.
    format: u32,
    /// Format 2: where its last batch end ends (0 if it has none).
    batch_start: u64,
    tail: Tail,
}

/// Replays one segment into `replayed`: every intact record in order, up to the first
/// that is not. What may follow it depends on the segment's format and place (module
/// docs; docs/storage.md, "Recovery rules").
fn replay_segment(
    data: &Bytes,
    seq: u64,
    path: &Path,
    is_last: bool,
    replayed: &mut Replayed,
) -> Result<SegmentReplay> {
    let corrupt = |offset: usize, reason: String| StorageError::CorruptWal {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut at = 0usize;
    let mut found = SegmentReplay {
        valid_len: 0,
        max_index: 0,
        format: WAL_FORMAT,
        batch_start: 0,
        tail: Tail::None,
    };
    loop {
        let why = match codec::read_frame(data, at) {
            Frame::End if at == 0 && !is_last => {
                return Err(corrupt(
                    0,
                    "sealed (not the newest) segment is empty".into(),
                ));
            }
            Frame::End => {
                found.valid_len = at as u64;
                return Ok(found);
            }
            Frame::Valid { body_start, end } => {
                let record =
                    codec::decode_body(data, body_start, end).map_err(|r| corrupt(at, r))?;
                if at == 0 {
                    match record {
                        Record::SegmentHeader {
                            format,
                            seq: found_seq,
                        } => {
                            if format > WAL_FORMAT {
                                return Err(corrupt(0, format!("segment has WAL format {format}, newer than the supported {WAL_FORMAT}; run a newer raftkv")));
                            }
                            if found_seq != seq {
                                return Err(corrupt(0, format!("segment header says sequence {found_seq}, file name says {seq}")));
                            }
                            found.format = format;
                        }
                        other => {
                            return Err(corrupt(
                                0,
                                format!("segment does not start with a header but with {other:?}"),
                            ))
                        }
                    }
                } else {
                    match &record {
                        Record::Entry(e) => found.max_index = found.max_index.max(e.index),
                        Record::BatchEnd { start } => {
                            if found.format < FORMAT_WITH_BATCH_ENDS {
                                return Err(corrupt(
                                    at,
                                    format!(
                                        "batch end in a segment of WAL format {}, which has none",
                                        found.format
                                    ),
                                ));
                            }
                            if *start != found.batch_start {
                                return Err(corrupt(at, format!("batch end says its batch began at offset {start}, but the batch before it ended at {}", found.batch_start)));
                            }
                            found.batch_start = end as u64;
                        }
                        _ => {}
                    }
                    replayed.apply(record).map_err(|r| corrupt(at, r))?;
                }
                at = end;
                continue;
            }
            Frame::Truncated => "the record runs past the end of the file".to_string(),
            Frame::Bad(reason) => reason,
        };
        // `at` is where the intact records end and something else begins.
        found.valid_len = at as u64;
        if !is_last {
            return Err(corrupt(
                at,
                format!("{why}, in a sealed (not the newest) segment"),
            ));
        }
        if found.format < FORMAT_WITH_BATCH_ENDS {
            // Appends only: a crash leaves a prefix of the last write, never a valid record
            // after a broken one.
            if record_after(data, at, Some).is_some() {
                return Err(corrupt(
                    at,
                    format!(
                        "{why}, followed by valid records, so this is damage, not a torn write"
                    ),
                ));
            }
            found.tail = Tail::Torn(why);
            return Ok(found);
        }
        // Format 2: records are written over zeros, and writeback may persist the pages
        // of an unfinished write in any order, so intact records may follow a broken one.
        // Only a batch end that begins after this point proves it was synced: it is
        // written after the fsync of everything before its start.
        if data[at..].iter().all(|&b| b == 0) {
            found.tail = Tail::Zeros;
            return Ok(found);
        }
        let synced_past = |r| match r {
            Record::BatchEnd { start } if start > at as u64 => Some(start),
            _ => None,
        };
        if let Some((end_at, start)) = record_after(data, at, synced_past) {
            return Err(corrupt(
                at,
                format!(
                    "{why}; the batch end at offset {end_at} shows that everything before \
                     offset {start} was synced, so this is damage, not a torn write"
                ),
            ));
        }
        found.tail = Tail::Torn(why);
        return Ok(found);
    }
}

/// The first checksum-valid, decodable record that starts after `from` and that `pick`
/// accepts, as (its offset, what `pick` made of it). Used only on the error path, to tell
/// a torn tail from damage (it tries every offset).
fn record_after<T>(
    data: &Bytes,
    from: usize,
    pick: impl Fn(Record) -> Option<T>,
) -> Option<(usize, T)> {
    (from + 1..data.len()).find_map(|at| match codec::read_frame(data, at) {
        Frame::Valid { body_start, end } => codec::decode_body(data, body_start, end)
            .ok()
            .and_then(&pick)
            .map(|t| (at, t)),
        _ => None,
    })
}

/// Checks that must hold after a full replay.
fn check_replayed(dir: &Path, r: &Replayed) -> Result<()> {
    let snap_index = r.snapshot.as_ref().map(|s| s.index).unwrap_or(0);
    if let Some(first) = r.entries.first() {
        if first.index > snap_index.saturating_add(1) {
            return Err(StorageError::MissingWal {
                dir: dir.to_path_buf(),
                reason: format!(
                    "the log starts at entry {} but the snapshot only covers up to {snap_index}",
                    first.index
                ),
            });
        }
    }
    let durable_last = r.last_index().max(snap_index);
    if r.hard_state.commit > durable_last {
        return Err(StorageError::MissingWal {
            dir: dir.to_path_buf(),
            reason: format!(
                "the hard state says entries up to {} are committed, but the log ends at {durable_last}",
                r.hard_state.commit
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::EntryKind;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(format!("{index}/{term}")),
        }
    }

    #[test]
    fn replay_applies_conflicts_and_snapshots() {
        let mut r = Replayed::default();
        for i in 1..=5 {
            r.apply(Record::Entry(e(i, 1))).unwrap();
        }
        r.apply(Record::Entry(e(4, 2))).unwrap();
        assert_eq!(r.entries, vec![e(1, 1), e(2, 1), e(3, 1), e(4, 2)]);
        assert!(
            r.apply(Record::Entry(e(6, 2))).is_err(),
            "a gap is an error"
        );
        r.apply(Record::Snapshot(SnapshotMeta {
            index: 2,
            term: 1,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(r.entries, vec![e(3, 1), e(4, 2)]);
        // A snapshot that disagrees with our entry at its index replaces the log.
        r.apply(Record::Snapshot(SnapshotMeta {
            index: 3,
            term: 5,
            ..Default::default()
        }))
        .unwrap();
        assert!(r.entries.is_empty());
        // An older marker (copied into a new segment) changes nothing.
        r.apply(Record::Entry(e(4, 5))).unwrap();
        r.apply(Record::Snapshot(SnapshotMeta {
            index: 2,
            term: 1,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(r.entries, vec![e(4, 5)]);
        assert_eq!(r.snapshot.as_ref().unwrap().index, 3);
    }

    #[test]
    fn segment_names_round_trip_and_reject_junk() {
        assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
        for junk in [
            "x.wal",
            "0000000000000001.wal.tmp",
            "000000000000001.wal",
            "zzzzzzzzzzzzzzzz.wal",
        ] {
            assert_eq!(parse_segment_name(junk), None, "{junk}");
        }
    }
}
