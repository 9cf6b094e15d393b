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

/// An open file being written. Writes go to the end of the file.
pub trait FsFile: Send {
    /// Append all of `buf` to the file. On failure a prefix of `buf` may have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
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
}

impl FsFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
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
}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
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

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(RealFile { file }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0))?;
        Ok(Box::new(RealFile { file }))
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

/// `dir/name` as an owned path (small helper used throughout the crate).
pub(crate) fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
