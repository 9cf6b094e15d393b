//! Snapshot files: one state-machine image per file, `<term>-<index>.snap` (16 hex digits
//! each) in the `snap/` directory.
//!
//! A snapshot is written to `<name>.tmp`, fsynced, renamed to its final name, and the
//! directory fsynced: a final name therefore always holds a complete file, and only a
//! WAL marker record makes a snapshot *current* (see `Storage::compact_to`). A file with a
//! final name but no marker (a crash between the two) is an orphan and is deleted at start.
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! "RKVSNAP1" | meta_len: u32 | meta (as in WAL snapshot markers) | data ... |
//! data_len: u64 | crc32c(everything before this field): u32
//! ```
//!
//! The length and checksum trail the data so an image can be streamed from a reader of
//! unknown length, on a background thread, without holding it all in memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft::{Index, Snapshot, SnapshotMeta, Term};

use crate::codec;
use crate::error::{Result, StorageError};
use crate::fs::{join, FileSystem, FsFile};

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const TRAILER: usize = 12;
const CHUNK: usize = 1 << 20;
/// A snapshot being written is written out to the disk every this many bytes
/// (`FsFile::write_out_so_far`), not all at its final fdatasync.
const WRITE_OUT_EVERY: u64 = 8 << 20;

pub(crate) fn snapshot_name(term: Term, index: Index) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// `(term, index)` of a final snapshot file name.
pub(crate) fn parse_snapshot_name(name: &str) -> Option<(Term, Index)> {
    let stem = name.strip_suffix(".snap")?;
    let (t, i) = stem.split_once('-')?;
    if t.len() != 16 || i.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(t, 16).ok()?,
        u64::from_str_radix(i, 16).ok()?,
    ))
}

/// A snapshot file that is complete and durable under its final name, but not yet made
/// current: hand it to `Storage::compact_to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenSnapshot {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub file_size: u64,
}

/// Writes snapshot files. Cheap to clone and `Send`: move it to the thread that serialises
/// the state machine; it never touches the WAL, so appends go on while it writes.
#[derive(Clone, Debug)]
pub struct SnapshotWriter {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
}

impl SnapshotWriter {
    pub(crate) fn new(fs: Arc<dyn FileSystem>, dir: PathBuf) -> SnapshotWriter {
        SnapshotWriter { fs, dir }
    }

    /// Write the image produced by `data` as the snapshot described by `meta`.
    pub fn write(&self, meta: &SnapshotMeta, data: &mut dyn Read) -> Result<WrittenSnapshot> {
        self.write_with(meta, &mut |sink| std::io::copy(data, sink).map(drop))
    }

    /// Write the image that `produce` writes into the sink it is given, as the snapshot
    /// described by `meta`: the image goes to the file as it is produced (through a 1 MiB
    /// buffer), never whole in memory. An error `produce` returns that did not come from
    /// the file is reported as the image's (`produce snapshot image`).
    pub fn write_with(
        &self,
        meta: &SnapshotMeta,
        produce: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<WrittenSnapshot> {
        let name = snapshot_name(meta.term, meta.index);
        let path = join(&self.dir, &name);
        let tmp = join(&self.dir, &format!("{name}.tmp"));
        let mut file = self
            .fs
            .create(&tmp)
            .map_err(|e| StorageError::io("create", &tmp, e))?;
        match write_contents(&mut *file, &tmp, meta, produce) {
            Ok(size) => {
                drop(file);
                self.fs
                    .rename(&tmp, &path)
                    .map_err(|e| StorageError::io("rename", &tmp, e))?;
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
                Ok(WrittenSnapshot {
                    meta: meta.clone(),
                    path,
                    file_size: size,
                })
            }
            Err(e) => {
                drop(file);
                let _ = self.fs.remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The image of a snapshot this writer wrote, read back from its file (where
    /// [`SnapshotWriter::map_image`] maps nothing).
    pub fn read_image(&self, written: &WrittenSnapshot) -> Result<Bytes> {
        Ok(load(&*self.fs, &self.dir, &written.meta)?.data)
    }

    /// [`SnapshotWriter::write`] for an image already in memory.
    pub fn write_bytes(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<WrittenSnapshot> {
        self.write(meta, &mut std::io::Cursor::new(data))
    }

    /// The image of a snapshot this writer wrote, as the file's pages mapped read-only:
    /// `None` where the filesystem maps nothing. Why: a member keeps its latest image for
    /// followers that fall behind its log, for as long as the snapshot is current. As a heap
    /// copy that is the size of the store again in resident memory on every member (a
    /// 1 GiB store: 1 GiB more), though it is rarely sent; mapped, it costs no memory until
    /// it is read, and the kernel can drop its pages again. Only the header and trailer
    /// are read here (the checksum was computed as the file was written, and is checked
    /// when a restart loads it).
    pub fn map_image(&self, written: &WrittenSnapshot) -> Result<Option<Bytes>> {
        map_checked(
            &*self.fs,
            &written.path,
            &written.meta,
            Some(written.file_size),
        )
    }
}

/// The current snapshot `meta` names in `dir`, its image mapped from the file
/// ([`SnapshotWriter::map_image`] says why), or `None` where the filesystem maps nothing.
/// The file's checksum is not read again: the file was checked when it was loaded at open,
/// or written here from the bytes received, and it is never written again.
pub(crate) fn map(
    fs: &dyn FileSystem,
    dir: &Path,
    meta: &SnapshotMeta,
) -> Result<Option<Snapshot>> {
    let path = join(dir, &snapshot_name(meta.term, meta.index));
    Ok(map_checked(fs, &path, meta, None)?.map(|data| Snapshot {
        meta: meta.clone(),
        data,
    }))
}

/// Maps `path` and checks that it holds the snapshot `meta` (and is `size` bytes, if
/// known); returns the image's bytes within the file.
fn map_checked(
    fs: &dyn FileSystem,
    path: &Path,
    meta: &SnapshotMeta,
    size: Option<u64>,
) -> Result<Option<Bytes>> {
    let Some(raw) = fs
        .map_immutable(path)
        .map_err(|e| StorageError::io("map", path, e))?
    else {
        return Ok(None);
    };
    let bad = |reason: String| StorageError::CorruptSnapshot {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(size) = size.filter(|&s| s != raw.len() as u64) {
        return Err(bad(format!(
            "file is {} bytes, {size} were written",
            raw.len()
        )));
    }
    let (found, range) = layout(&raw).map_err(bad)?;
    if found != *meta {
        return Err(bad(format!(
            "file holds snapshot (index {}, term {}), (index {}, term {}) was expected",
            found.index, found.term, meta.index, meta.term
        )));
    }
    Ok(Some(raw.slice(range)))
}

/// Streams header, data and trailer into `file` and fsyncs it. Returns the file size.
fn write_contents(
    file: &mut dyn FsFile,
    path: &Path,
    meta: &SnapshotMeta,
    produce: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<u64> {
    let io = |op| move |e| StorageError::io(op, path, e);
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(MAGIC);
    let mut meta_bytes = Vec::new();
    codec::encode_snapshot_meta(&mut meta_bytes, meta);
    head.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    head.extend_from_slice(&meta_bytes);
    let crc = crc32c::crc32c(&head);
    file.write_all(&head).map_err(io("write"))?;

    let mut sink = ImageSink {
        file,
        buf: Vec::with_capacity(CHUNK),
        crc,
        len: 0,
        written_out: 0,
        file_failed: false,
    };
    let mut produced = produce(&mut sink).and_then(|()| sink.hand_on());
    if produced.is_ok() && sink.file_failed {
        // A producer that swallowed the file's error: the file is not what was produced.
        produced = Err(std::io::Error::other("an earlier write to the file failed"));
    }
    if let Err(e) = produced {
        return Err(if sink.file_failed {
            StorageError::io("write", path, e)
        } else {
            StorageError::io("produce snapshot image", path, e)
        });
    }
    let (file, mut crc, data_len) = (sink.file, sink.crc, sink.len);
    let len_bytes = data_len.to_le_bytes();
    crc = crc32c::crc32c_append(crc, &len_bytes);
    let mut trailer = Vec::with_capacity(TRAILER);
    trailer.extend_from_slice(&len_bytes);
    trailer.extend_from_slice(&crc.to_le_bytes());
    file.write_all(&trailer).map_err(io("write"))?;
    file.sync_data().map_err(io("fdatasync"))?;
    Ok(head.len() as u64 + data_len + TRAILER as u64)
}

/// Where an image is written: buffered, checksummed and counted on its way to the file.
struct ImageSink<'a> {
    file: &'a mut dyn FsFile,
    buf: Vec<u8>,
    crc: u32,
    len: u64,
    /// `len` at the last `write_out_so_far`.
    written_out: u64,
    /// The file refused a write (as opposed to the producer failing).
    file_failed: bool,
}

impl ImageSink<'_> {
    fn hand_on(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let written = self.write_through(&buf);
        self.buf = buf;
        self.buf.clear();
        written
    }

    /// `data` checksummed and into the file, written out every [`WRITE_OUT_EVERY`].
    /// After a failure the sink stays failed: the file no longer holds what was checksummed.
    fn write_through(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.file_failed {
            return Err(std::io::Error::other("an earlier write to the file failed"));
        }
        self.crc = crc32c::crc32c_append(self.crc, data);
        let mut written = self.file.write_all(data);
        self.len += data.len() as u64;
        if written.is_ok() && self.len - self.written_out >= WRITE_OUT_EVERY {
            written = self.file.write_out_so_far();
            self.written_out = self.len;
        }
        if written.is_err() {
            self.file_failed = true;
        }
        written
    }
}

impl Write for ImageSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > CHUNK {
            self.hand_on()?;
        }
        if data.len() >= CHUNK {
            // Large enough to go straight through, a chunk at a time so that it is written
            // out as it goes.
            for chunk in data.chunks(CHUNK) {
                self.write_through(chunk)?;
            }
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads and verifies the snapshot file for `meta`.
pub(crate) fn load(fs: &dyn FileSystem, dir: &Path, meta: &SnapshotMeta) -> Result<Snapshot> {
    let path = join(dir, &snapshot_name(meta.term, meta.index));
    let bad = |reason: String| StorageError::CorruptSnapshot {
        path: path.clone(),
        reason,
    };
    let raw = match fs.read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(format!(
                "the WAL says snapshot (index {}, term {}) is durable, but its file is missing",
                meta.index, meta.term
            )))
        }
        Err(e) => return Err(StorageError::io("read", &path, e)),
    };
    let raw = Bytes::from(raw);
    let (found, data) = parse(&raw).map_err(bad)?;
    if found.index != meta.index || found.term != meta.term {
        return Err(bad(format!(
            "file holds snapshot (index {}, term {}), the WAL expects (index {}, term {})",
            found.index, found.term, meta.index, meta.term
        )));
    }
    Ok(Snapshot { meta: found, data })
}

/// Splits and verifies a snapshot file: its metadata and a zero-copy slice of its image.
fn parse(raw: &Bytes) -> std::result::Result<(SnapshotMeta, Bytes), String> {
    let min = MAGIC.len() + 4 + TRAILER;
    if raw.len() < min {
        return Err(format!(
            "file is {} bytes, shorter than the smallest snapshot ({min})",
            raw.len()
        ));
    }
    if &raw[..MAGIC.len()] != MAGIC {
        return Err("bad magic at offset 0 (not a raftkv snapshot)".into());
    }
    let crc_at = raw.len() - 4;
    let stored = u32::from_le_bytes(raw[crc_at..].try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(&raw[..crc_at]);
    if stored != actual {
        return Err(format!(
            "checksum mismatch at offset {crc_at} (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let (meta, range) = layout(raw)?;
    Ok((meta, raw.slice(range)))
}

/// The metadata and the image's byte range of a snapshot file, from its header and
/// trailer alone (no checksum: [`parse`] checks it first where a file is read back).
fn layout(raw: &[u8]) -> std::result::Result<(SnapshotMeta, std::ops::Range<usize>), String> {
    let min = MAGIC.len() + 4 + TRAILER;
    if raw.len() < min || &raw[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "not a raftkv snapshot ({} bytes, magic {:?})",
            raw.len(),
            raw.get(..MAGIC.len())
        ));
    }
    let crc_at = raw.len() - 4;
    let meta_len = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes")) as usize;
    let meta_end = 12usize
        .checked_add(meta_len)
        .filter(|&e| e <= raw.len() - TRAILER)
        .ok_or("metadata length runs past the end of the file")?;
    let meta = codec::decode_snapshot_meta(&raw[12..meta_end])?;
    let data_len = u64::from_le_bytes(
        raw[raw.len() - TRAILER..crc_at]
            .try_into()
            .expect("8 bytes"),
    );
    let data_end = raw.len() - TRAILER;
    if data_len != (data_end - meta_end) as u64 {
        return Err(format!(
            "data length {data_len} disagrees with the file size"
        ));
    }
    Ok((meta, meta_end..data_end))
}

/// Deletes temp files, orphans newer than the current snapshot, and all but the newest
/// `keep` snapshots at or below it.
pub(crate) fn tidy(
    fs: &dyn FileSystem,
    dir: &Path,
    current: Option<&SnapshotMeta>,
    keep: usize,
) -> Result<()> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| StorageError::io("list", dir, e))?;
    let current_index = current.map(|m| m.index).unwrap_or(0);
    let mut kept: Vec<(Index, Term, String)> = Vec::new();
    let mut doomed = Vec::new();
    for name in names {
        if name.ends_with(".snap.tmp") {
            doomed.push(name);
        } else if let Some((term, index)) = parse_snapshot_name(&name) {
            let is_current = current.is_some_and(|m| m.index == index && m.term == term);
            if index > current_index || (index == current_index && !is_current) {
                tracing::warn!(file = %name, "deleting a snapshot file that the WAL never made current (crash before its marker)");
                doomed.push(name);
            } else {
                kept.push((index, term, name));
            }
        }
    }
    kept.sort();
    let excess = kept.len().saturating_sub(keep.max(1));
    doomed.extend(kept.into_iter().take(excess).map(|(_, _, n)| n));
    if doomed.is_empty() {
        return Ok(());
    }
    for name in &doomed {
        let path = join(dir, name);
        fs.remove_file(&path)
            .map_err(|e| StorageError::io("remove", &path, e))?;
    }
    fs.sync_dir(dir)
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lazy_fs::LazyFs;
    use raft::ConfState;

    /// A file that keeps what is written and where each write-out hint came.
    #[derive(Default)]
    struct Recording {
        data: Vec<u8>,
        written_out_at: Vec<usize>,
        synced: bool,
        /// Refuse a write that would make the file longer than this.
        refuse_beyond: Option<usize>,
    }

    impl FsFile for Recording {
        fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
            if self
                .refuse_beyond
                .is_some_and(|limit| self.data.len() + buf.len() > limit)
            {
                return Err(std::io::Error::other("disk says no"));
            }
            self.data.extend_from_slice(buf);
            Ok(())
        }
        fn sync_data(&mut self) -> std::io::Result<()> {
            self.synced = true;
            Ok(())
        }
        fn set_len(&mut self, len: u64) -> std::io::Result<()> {
            self.data.truncate(len as usize);
            Ok(())
        }
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.data.len() as u64)
        }
        fn write_out_so_far(&mut self) -> std::io::Result<()> {
            self.written_out_at.push(self.data.len());
            Ok(())
        }
    }

    #[test]
    fn a_long_image_is_written_out_every_few_mib_not_only_at_the_end() {
        let meta = SnapshotMeta {
            index: 5,
            term: 1,
            conf_state: ConfState::default(),
        };
        let image: Vec<u8> = (0..(20u32 << 20) + 7).map(|i| (i % 249) as u8).collect();
        let mut file = Recording::default();
        let size = write_contents(&mut file, Path::new("/x"), &meta, &mut |sink| {
            // Small pieces and one large one.
            sink.write_all(&image[..3 << 20])?;
            for piece in image[3 << 20..].chunks(4096) {
                sink.write_all(piece)?;
            }
            Ok(())
        })
        .unwrap();
        assert!(file.synced);
        assert_eq!(size, file.data.len() as u64);
        let (found, data) = parse(&Bytes::from(file.data.clone())).unwrap();
        assert_eq!((found.index, &data[..]), (5, &image[..]));
        // 20 MiB of image: written out after the 8th and the 16th MiB (plus the header).
        assert_eq!(file.written_out_at.len(), 2, "{:?}", file.written_out_at);
        for (n, at) in file.written_out_at.iter().enumerate() {
            let image_bytes = *at as u64 - (file.data.len() - image.len() - TRAILER) as u64;
            assert!(
                image_bytes >= (n as u64 + 1) * WRITE_OUT_EVERY
                    && image_bytes < (n as u64 + 1) * WRITE_OUT_EVERY + CHUNK as u64 * 4,
                "write-out {n} after {image_bytes} bytes of image"
            );
        }
    }

    #[test]
    fn a_file_error_the_producer_swallows_still_fails_the_snapshot() {
        let meta = SnapshotMeta {
            index: 5,
            term: 1,
            conf_state: ConfState::default(),
        };
        let mut file = Recording {
            refuse_beyond: Some(2 << 20),
            ..Recording::default()
        };
        let r = write_contents(&mut file, Path::new("/x"), &meta, &mut |sink| {
            for _ in 0..5 {
                // Ignores every error, as a careless producer might.
                let _ = sink.write_all(&[3u8; 1 << 20]);
            }
            Ok(())
        });
        match r {
            Err(StorageError::Io { op, .. }) => assert_eq!(op, "write"),
            other => panic!("a snapshot with a failed write was accepted: {other:?}"),
        }
        assert!(!file.synced, "nothing is synced after a failed write");
    }

    #[test]
    fn the_real_filesystem_writes_out_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = crate::fs::RealFs.create(&dir.path().join("f")).unwrap();
        for _ in 0..3 {
            file.write_all(&[1u8; 1 << 20]).unwrap();
            file.write_out_so_far().unwrap();
        }
        file.sync_data().unwrap();
        assert_eq!(file.len().unwrap(), 3 << 20);
    }

    fn setup() -> (Arc<LazyFs>, PathBuf) {
        let fs = Arc::new(LazyFs::new());
        let dir = PathBuf::from("/snap");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![],
            },
        }
    }

    /// On the real filesystem the image comes back mapped, byte for byte; a filesystem
    /// that maps nothing says so; a file that is not what was written is named, not used.
    #[test]
    fn a_written_image_maps_back_from_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let real: Arc<dyn FileSystem> = Arc::new(crate::fs::RealFs);
        let w = SnapshotWriter::new(real, tmp.path().to_path_buf());
        let image: Vec<u8> = (0..2 * CHUNK + 5).map(|i| (i * 13) as u8).collect();
        let written = w.write_bytes(&meta(7, 3), &image).unwrap();
        let mapped = w.map_image(&written).unwrap().expect("RealFs maps files");
        assert_eq!(&mapped[..], &image[..]);

        let mut other = written.clone();
        other.meta = meta(8, 3);
        let err = w.map_image(&other).unwrap_err().to_string();
        assert!(err.contains("index 7") && err.contains("index 8"), "{err}");
        other = written.clone();
        other.file_size += 1;
        let err = w.map_image(&other).unwrap_err().to_string();
        assert!(err.contains("were written"), "{err}");

        let (fs, dir) = setup();
        let lazy = SnapshotWriter::new(fs, dir);
        let written = lazy.write_bytes(&meta(7, 3), &image).unwrap();
        assert!(lazy.map_image(&written).unwrap().is_none());
    }

    #[test]
    fn written_snapshots_load_back_and_damage_is_detected() {
        let (fs, dir) = setup();
        let w = SnapshotWriter::new(fs.clone(), dir.clone());
        let image: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i * 7) as u8).collect();
        let written = w.write_bytes(&meta(10, 2), &image).unwrap();
        let snap = load(&*fs, &dir, &meta(10, 2)).unwrap();
        assert_eq!(snap.meta, meta(10, 2));
        assert_eq!(&snap.data[..], &image[..]);

        for offset in [
            0usize,
            9,
            40,
            image.len() / 2,
            written.file_size as usize - 1,
        ] {
            let (fs2, dir2) = setup();
            SnapshotWriter::new(fs2.clone(), dir2.clone())
                .write_bytes(&meta(10, 2), &image)
                .unwrap();
            fs2.corrupt_durably(&written.path, |b| b[offset] ^= 0x10)
                .unwrap();
            let err = load(&*fs2, &dir2, &meta(10, 2)).unwrap_err().to_string();
            assert!(
                err.contains("0000000000000002-000000000000000a.snap"),
                "{err}"
            );
        }
        assert!(load(&*fs, &dir, &meta(11, 2))
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }

    #[test]
    fn tidy_keeps_the_newest_and_drops_orphans_and_temps() {
        let (fs, dir) = setup();
        let w = SnapshotWriter::new(fs.clone(), dir.clone());
        for i in 1..=4 {
            w.write_bytes(&meta(i * 10, 1), b"x").unwrap();
        }
        fs.create(&dir.join("0000000000000001-0000000000000099.snap.tmp"))
            .unwrap();
        tidy(&*fs, &dir, Some(&meta(30, 1)), 2).unwrap();
        let mut names = fs.list_dir(&dir).unwrap();
        names.sort();
        assert_eq!(names, vec![snapshot_name(1, 20), snapshot_name(1, 30)]);
    }
}
