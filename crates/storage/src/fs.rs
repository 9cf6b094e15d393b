//! The small file-I/O interface the storage is written against.
//!
//! Why an interface at all: `SIGKILL` keeps the page cache, so a crash test with real
//! processes cannot tell whether we fsync at the right moments. Behind this trait the same
//! storage code runs either on the real filesystem ([`RealFs`]) or on [`crate::LazyFs`],
//! which keeps every byte that was not yet made durable apart and throws it away at a
//! simulated power loss. The trait is deliberately tiny: only the calls the WAL, the
//! snapshot store and the metadata file need, each with the durability meaning it has on
//! Linux (ext4/xfs):
//!
//! * data written to a file is durable only after [`FsFile::sync_data`] on that file;
//! * creating, renaming or removing a directory entry is durable only after
//!   [`FileSystem::sync_dir`] on the directory that holds it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// An open file being written. Writes go to the write position: the end of the file when it
/// was opened or created, or where the last `set_len` cut it.
pub trait FsFile: Send {
    /// Write all of `buf` at the write position, overwriting what is there, and move the
    /// position past it. On failure a prefix of `buf` may have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Grow the file to `len` bytes by *writing* zeros (not a sparse hole), without moving
    /// the write position; durable with the next `sync_data`. Why: the WAL writes its
    /// records over zeros written ahead of them, and an `fdatasync` of bytes that are
    /// already allocated and inside the file's size persists only data, not the inode
    /// (size, block map) that an append changes; about half the cost of a small sync here
    /// (docs/storage.md, "Zeros ahead of the records"). Default: nothing, and the file
    /// grows as it is written, which every caller must accept.
    fn extend_zeroed(&mut self, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Make the file's data (and its size) durable: `fdatasync(2)`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cut (or extend with zeros) the file to `len` bytes; later writes go to the new end.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True if the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Start writing what was written so far out to the disk, and wait until what an
    /// earlier call started is out. Not a durability promise (that is `sync_data`): a long
    /// write calls it every few MiB so that its final `sync_data` finds little left to do.
    /// Why: one fdatasync of hundreds of MiB holds up every other fsync on the disk while it
    /// runs, the WAL's included (a 441 MB snapshot: WAL syncs of 100-300 ms on all three
    /// members of a cluster on one disk). Pass its errors on: waiting for write-back
    /// consumes the file's pending write error, which the final `sync_data` would then
    /// not report. Default: nothing.
    fn write_out_so_far(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A filesystem. Implementations must be shareable across threads: a snapshot is written
/// on a background thread while the WAL keeps appending.
pub trait FileSystem: Send + Sync + std::fmt::Debug {
    /// Create `dir` and its parents if missing. Directory creation is treated as durable.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir` (files only, no `.`/`..`), in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Does `path` exist?
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Read a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Open a file for streaming reads (large snapshots).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// The contents of a file that nothing will write to or truncate again (a snapshot
    /// under its final name), backed by the file's pages instead of the heap, or `None`
    /// where this filesystem cannot map files (the caller keeps its own copy then).
    fn map_immutable(&self, _path: &Path) -> io::Result<Option<bytes::Bytes>> {
        Ok(None)
    }
    /// Create a new empty file, replacing any file of that name.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Open an existing file for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Atomically replace `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Make the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take an exclusive lock on the file `path` (created if missing), held until the
    /// returned guard is dropped (or the process dies). Fails with
    /// `io::ErrorKind::WouldBlock` if someone else holds it. Keeps two processes from
    /// writing one data dir.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>>;
}

/// The real filesystem, through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

struct RealFile {
    file: File,
    /// Where the last `write_out_so_far` started writing out up to, and up to where it
    /// waited for the writing to end.
    written_out: u64,
    waited_to: u64,
}

impl FsFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn extend_zeroed(&mut self, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut at = self.file.metadata()?.len();
        let zeros = [0u8; 64 * 1024];
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            // pwrite(2): the file's write position stays where it is.
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        use std::io::Seek;
        self.file.set_len(len)?;
        self.file.seek(io::SeekFrom::Start(len))?;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn write_out_so_far(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let end = self.file.metadata()?.len();
        let fd = self.file.as_raw_fd();
        let range = |from: u64, to: u64, flags| {
            let offset = libc::off64_t::try_from(from).map_err(io::Error::other)?;
            let len = libc::off64_t::try_from(to - from).map_err(io::Error::other)?;
            // SAFETY: `sync_file_range` takes no pointers; `fd` is our open file.
            if unsafe { libc::sync_file_range(fd, offset, len, flags) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // Start the new range first, so the disk is busy while we wait for the previous one.
        let previous = (self.waited_to, self.written_out);
        if end > self.written_out {
            range(self.written_out, end, libc::SYNC_FILE_RANGE_WRITE)?;
            self.written_out = end;
        }
        if previous.1 > previous.0 {
            range(
                previous.0,
                previous.1,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
            self.waited_to = previous.1;
        }
        Ok(())
    }
}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Private to the member's user, as etcd makes its data dir (0700): the files in it
        // (the log, snapshots, the member's incarnation) are nobody else's to read.
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(path)?))
    }

    fn map_immutable(&self, path: &Path) -> io::Result<Option<bytes::Bytes>> {
        let file = File::open(path)?;
        // SAFETY: a mapping's bytes change if the file is written, and reading them faults
        // if it is truncated. Callers map only files that are complete, fsynced and never
        // opened for writing again (snapshot files: written under a temp name, renamed,
        // later only deleted, which leaves the mapping valid until it is dropped).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Some(bytes::Bytes::from_owner(map)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Ok(Box::new(RealFile {
            file,
            written_out: 0,
            waited_to: 0,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0))?;
        Ok(Box::new(RealFile {
            file,
            written_out: 0,
            waited_to: 0,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced; that persists its entries.
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // flock(2): released by the kernel when the process dies, however it dies.
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another process",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Replace the file `path` with `contents` so that a crash at any moment leaves either the
/// old file or the new one, complete, and the new one is durable when this returns: write
/// `<path>.tmp`, `fdatasync` it, rename it over `path`, fsync the directory. Without the
/// first fsync a crash can leave the rename durable but the data not (an empty file under
/// the real name); without the directory fsync the rename itself can be lost.
///
/// For small files written rarely (the data dir's metadata, the peer transport's
/// incarnation record). Errors name the file and the step that failed.
pub fn write_file_atomically(
    fs: &dyn FileSystem,
    path: &Path,
    contents: &[u8],
) -> crate::Result<()> {
    use crate::StorageError;
    let name = path
        .file_name()
        .ok_or_else(|| StorageError::Invalid(format!("{} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = fs
        .create(&tmp)
        .map_err(|e| StorageError::io("create", &tmp, e))?;
    f.write_all(contents)
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    f.sync_data()
        .map_err(|e| StorageError::io("fdatasync", &tmp, e))?;
    drop(f);
    fs.rename(&tmp, path)
        .map_err(|e| StorageError::io("rename", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}

/// `dir/name` as an owned path (small helper used throughout the crate).
pub(crate) fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LazyFs, LossMode};

    /// Data dirs and the files in them are private to the member's user (etcd: 0700 / 0600):
    /// the member's incarnation and its log are nobody else's to read.
    #[test]
    fn data_dirs_and_files_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        RealFs.create_dir_all(&dir).unwrap();
        let file = dir.join("record");
        write_file_atomically(&RealFs, &file, b"secret\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    /// A power cut at any system call of the write leaves the old file or the new one,
    /// whole; once the call returned, the new one survives any power cut.
    #[test]
    fn an_atomic_write_leaves_the_old_or_the_new_file_whole() {
        let dir = Path::new("/d");
        let path = dir.join("record");
        for crash_at in 0..10 {
            let fs = LazyFs::new();
            fs.create_dir_all(dir).unwrap();
            write_file_atomically(&fs, &path, b"old contents\n").unwrap();
            fs.crash_after_ops(crash_at);
            let result = write_file_atomically(&fs, &path, b"new contents, longer\n");
            let crashed = fs.has_crashed();
            fs.power_loss(LossMode::KeepTornPrefix { seed: crash_at });
            let found = fs.read(&path).unwrap();
            if let Err(err) = result {
                assert!(crashed);
                let err = err.to_string();
                // The file (or its temp file), or the directory whose fsync failed.
                assert!(
                    err.contains("/d/record") || err.contains("fsync dir on /d:"),
                    "{err}"
                );
                assert!(
                    found == b"old contents\n" || found == b"new contents, longer\n",
                    "crash at {crash_at}: {:?}",
                    String::from_utf8_lossy(&found)
                );
            } else {
                assert_eq!(found, b"new contents, longer\n", "crash at {crash_at}");
            }
        }
        let fs = LazyFs::new();
        assert!(matches!(
            write_file_atomically(&fs, Path::new("/"), b"x"),
            Err(crate::StorageError::Invalid(_))
        ));
    }
}
