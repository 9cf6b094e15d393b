//! An in-memory filesystem with LazyFS semantics, for power-loss tests.
//!
//! [LazyFS](https://github.com/dsrhaslab/lazyfs) is a FUSE filesystem that keeps written
//! data in its own cache until it is fsynced and can drop that cache on command, which
//! simulates losing power. This module does the same, in process:
//!
//! * Every file has a *durable* content and a *current* content. Writes and truncations
//!   change the current content; [`FsFile::sync_data`] copies current to durable.
//! * Every directory entry (create, rename, remove) changes the *current* namespace;
//!   [`FileSystem::sync_dir`] copies that directory's current entries to the durable one.
//! * [`LazyFs::power_loss`] throws away everything not durable: files go back to their
//!   durable content, the namespace to its durable state, open handles become invalid.
//!   With [`LossMode::KeepTornPrefix`] a random prefix of each file's not-yet-synced
//!   appended bytes survives instead, as after a real crash in the middle of writeback:
//!   that produces torn records at the tail. With [`LossMode::TornPages`] every page
//!   that changed since the last sync independently keeps its new or its old content, and
//!   the file its new or its old size: what writeback in any order leaves of writes into
//!   the middle of a file (the WAL writes its records over zeros written ahead of them).
//! * [`LazyFs::crash_after_ops`] arms a crash: after that many more mutating calls, the
//!   next one fails and every call after it fails too, until `power_loss` "reboots". That
//!   puts the power loss *between any two system calls* of the code under test (between a
//!   write and its fsync, between a rename and the directory fsync, ...).
//!
//! Directories themselves are created durably (the storage creates its directory once, at
//! initialisation, and fsyncs its parent there anyway).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, FsFile};

/// What survives of the bytes that were written but not synced when the power goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossMode {
    /// Nothing that was not synced survives (LazyFS's default).
    DropUnsynced,
    /// For a file that was only appended to since its last sync, a pseudo-random prefix of
    /// the appended bytes survives (seeded; same seed ⇒ same outcome). Other unsynced
    /// changes are dropped.
    KeepTornPrefix { seed: u64 },
    /// Each `page`-byte piece of a file that differs between its synced and its current
    /// content survives with its current or its synced bytes, at random and independently
    /// of the others; the file's length is its synced or its current one (bytes beyond a
    /// content's length count as zeros). Seeded like `KeepTornPrefix`. The page cache
    /// writes 4 KiB pages back, a disk may tear them into 512 B sectors; tests use smaller
    /// pieces still, to tear records at many more places.
    TornPages { seed: u64, page: usize },
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Incremented at every power loss; handles from an older epoch are dead.
    epoch: u64,
    /// Mutating calls left before the armed crash, if one is armed.
    crash_countdown: Option<u64>,
    /// The power is off: every call fails until `power_loss` is called.
    crashed: bool,
    syncs: u64,
    /// Paths locked by a live guard, with the epoch that took the lock.
    locks: BTreeMap<PathBuf, u64>,
    /// Simulated volume size: writes past it fail with ENOSPC (after writing what fits).
    capacity: Option<u64>,
    /// Syncs do nothing (see [`LazyFs::hold_syncs`]).
    syncs_held: bool,
}

/// The LazyFS-like test filesystem. Cheap to clone: clones share one state.
#[derive(Clone, Debug, Default)]
pub struct LazyFs {
    state: Arc<Mutex<State>>,
}

fn power_is_off() -> io::Error {
    io::Error::other("simulated power loss: the machine is off")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl State {
    /// Account for one call that changes the filesystem; fails if the power is (now) off.
    fn mutating_call(&mut self) -> io::Result<()> {
        self.check_power()?;
        if let Some(left) = self.crash_countdown.as_mut() {
            if *left == 0 {
                self.crashed = true;
                self.crash_countdown = None;
                return Err(power_is_off());
            }
            *left -= 1;
        }
        Ok(())
    }

    fn check_power(&self) -> io::Result<()> {
        if self.crashed {
            Err(power_is_off())
        } else {
            Ok(())
        }
    }

    /// Bytes held by the files that currently have a name (what `df` would count).
    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|id| self.inodes.get(id))
            .map(|i| i.current.len() as u64)
            .sum()
    }

    /// How many of `wanted` more bytes fit on the volume (capped at `wanted`).
    fn room_for(&self, wanted: usize) -> usize {
        match self.capacity {
            None => wanted,
            Some(cap) => (cap.saturating_sub(self.used_bytes()) as usize).min(wanted),
        }
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if p.as_os_str().is_empty() || self.dirs.contains(p) => Ok(()),
            Some(p) => Err(not_found(p)),
            None => Ok(()),
        }
    }
}

impl LazyFs {
    pub fn new() -> LazyFs {
        LazyFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arm a crash: the `ops`-th mutating call from now fails, and so does everything
    /// after it, until [`LazyFs::power_loss`].
    pub fn crash_after_ops(&self, ops: u64) {
        self.lock().crash_countdown = Some(ops);
    }

    /// Has an armed crash fired?
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Lose power and "reboot": everything not durable is gone (see [`LossMode`]).
    pub fn power_loss(&self, mode: LossMode) {
        let mut st = self.lock();
        let mut rng = match mode {
            LossMode::DropUnsynced => None,
            LossMode::KeepTornPrefix { seed } | LossMode::TornPages { seed, .. } => {
                Some(SplitMix(seed))
            }
        };
        let page = match mode {
            LossMode::TornPages { page, .. } => Some(page.max(1)),
            _ => None,
        };
        // Visit inodes in a fixed order so a seed always gives the same outcome.
        let mut ids: Vec<u64> = st.inodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let inode = st.inodes.get_mut(&id).expect("listed above");
            if let (Some(page), Some(rng)) = (page, &mut rng) {
                inode.durable = torn_pages(&inode.durable, &inode.current, page, rng);
                inode.current = inode.durable.clone();
                continue;
            }
            let appended_only = inode.current.len() > inode.durable.len()
                && inode.current.starts_with(&inode.durable);
            let keep_extra = match (&mut rng, appended_only) {
                (Some(rng), true) => {
                    let extra = (inode.current.len() - inode.durable.len()) as u64;
                    (rng.next() % (extra + 1)) as usize
                }
                _ => 0,
            };
            if appended_only {
                inode.current.truncate(inode.durable.len() + keep_extra);
                inode.durable = inode.current.clone();
            } else {
                inode.current = inode.durable.clone();
            }
        }
        st.names = st.durable_names.clone();
        let live: BTreeSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|id, _| live.contains(id));
        st.epoch += 1;
        st.locks.clear(); // A reboot ends every process, and with them their locks.
        st.crashed = false;
        st.crash_countdown = None;
    }

    /// While `held`, file and directory syncs succeed and make nothing durable: what is
    /// written stays in the page cache, as when the process is killed before its syncs
    /// complete, and the next process reads it from there (a later `power_loss` still
    /// throws it away).
    pub fn hold_syncs(&self, held: bool) {
        self.lock().syncs_held = held;
    }

    /// Limit the volume to `bytes` (None: unlimited). Writes that do not fit write what
    /// fits and fail with ENOSPC, like a full disk.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Number of `sync_data` + `sync_dir` calls so far (for tests that count fsyncs).
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Bytes of `path` whose current content differs from its durable one, counting the
    /// bytes by which one is longer than the other (0 if the file is unknown).
    pub fn unsynced_bytes(&self, path: &Path) -> usize {
        let st = self.lock();
        st.names
            .get(path)
            .and_then(|id| st.inodes.get(id))
            .map(|i| {
                let common = i.current.len().min(i.durable.len());
                let changed = (0..common)
                    .filter(|&k| i.current[k] != i.durable[k])
                    .count();
                changed + i.current.len().max(i.durable.len()) - common
            })
            .unwrap_or(0)
    }

    /// Overwrite the current content of a file, durably (a test's way of damaging a file
    /// "on disk": flipping bits, truncating).
    pub fn corrupt_durably(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut st = self.lock();
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = st.inodes.get_mut(&id).expect("named inode exists");
        f(&mut inode.current);
        inode.durable = inode.current.clone();
        Ok(())
    }
}

/// What [`LossMode::TornPages`] leaves of a file whose synced content is `durable` and
/// whose current content is `current`.
fn torn_pages(durable: &[u8], current: &[u8], page: usize, rng: &mut SplitMix) -> Vec<u8> {
    let len = if rng.next().is_multiple_of(2) {
        durable.len()
    } else {
        current.len()
    };
    let byte = |v: &[u8], k: usize| v.get(k).copied().unwrap_or(0);
    let mut out = vec![0u8; len];
    for start in (0..len).step_by(page) {
        let end = (start + page).min(len);
        let changed = (start..end).any(|k| byte(durable, k) != byte(current, k));
        let from = if changed && rng.next().is_multiple_of(2) {
            current
        } else {
            durable
        };
        for (k, b) in out[start..end].iter_mut().enumerate() {
            *b = byte(from, start + k);
        }
    }
    out
}

/// A tiny deterministic RNG (SplitMix64) so the library needs no `rand` dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Releases a `LazyFs` lock when dropped (unless a power loss already did).
struct LazyLock {
    fs: LazyFs,
    path: PathBuf,
    epoch: u64,
}

impl Drop for LazyLock {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.locks.get(&self.path) == Some(&self.epoch) {
            st.locks.remove(&self.path);
        }
    }
}

struct LazyFile {
    fs: LazyFs,
    inode: u64,
    epoch: u64,
    /// The write position (see [`FsFile`]).
    pos: usize,
}

impl LazyFile {
    fn with_inode<T>(
        &self,
        mutating: bool,
        f: impl FnOnce(&mut Inode, &mut u64, usize) -> T,
    ) -> io::Result<T> {
        let mut st = self.fs.lock();
        if mutating {
            st.mutating_call()?;
        } else {
            st.check_power()?;
        }
        if st.epoch != self.epoch {
            return Err(io::Error::other("file handle from before a power loss"));
        }
        let room = st.room_for(usize::MAX);
        let st = &mut *st;
        let inode = st
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::other("stale inode"))?;
        Ok(f(inode, &mut st.syncs, room))
    }
}

impl FsFile for LazyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let pos = self.pos;
        let written = self.with_inode(true, |inode, _, room| {
            // Overwriting takes no room; only the bytes past the end do.
            let overwrite = inode.current.len().saturating_sub(pos).min(buf.len());
            let fits = overwrite + room.min(buf.len() - overwrite);
            if inode.current.len() < pos {
                inode.current.resize(pos, 0);
            }
            let end = pos + fits;
            if inode.current.len() < end {
                inode.current.resize(end, 0);
            }
            inode.current[pos..end].copy_from_slice(&buf[..fits]);
            (fits, fits < buf.len())
        })?;
        self.pos += written.0;
        if written.1 {
            Err(io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }

    fn extend_zeroed(&mut self, len: u64) -> io::Result<()> {
        self.with_inode(true, |inode, _, room| {
            let grow = (len as usize).saturating_sub(inode.current.len());
            if grow > room {
                return Err(io::Error::from_raw_os_error(28));
            }
            if grow > 0 {
                inode.current.resize(len as usize, 0);
            }
            Ok(())
        })?
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.fs.lock().syncs_held {
            return Ok(());
        }
        self.with_inode(true, |inode, syncs, _| {
            *syncs += 1;
            inode.durable = inode.current.clone();
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with_inode(true, |inode, _, room| {
            let grow = (len as usize).saturating_sub(inode.current.len());
            if grow > room {
                return Err(io::Error::from_raw_os_error(28));
            }
            inode.current.resize(len as usize, 0);
            Ok(())
        })??;
        self.pos = len as usize;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(false, |inode, _, _| inode.current.len() as u64)
    }
}

impl FileSystem for LazyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutating_call()?;
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() {
                break;
            }
            st.dirs.insert(p.to_path_buf());
            d = p.parent();
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        st.check_power()?;
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.lock();
        st.check_power()?;
        Ok(st.names.contains_key(path) || st.dirs.contains(path))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.lock();
        st.check_power()?;
        let id = st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(st.inodes[id].current.clone())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut st = self.lock();
        st.mutating_call()?;
        st.parent_exists(path)?;
        st.next_inode += 1;
        let id = st.next_inode;
        st.inodes.insert(id, Inode::default());
        st.names.insert(path.to_path_buf(), id);
        let epoch = st.epoch;
        Ok(Box::new(LazyFile {
            fs: self.clone(),
            inode: id,
            epoch,
            pos: 0,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let st = self.lock();
        st.check_power()?;
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let epoch = st.epoch;
        let pos = st.inodes[&id].current.len();
        Ok(Box::new(LazyFile {
            fs: self.clone(),
            inode: id,
            epoch,
            pos,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutating_call()?;
        let id = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.mutating_call()?;
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let mut st = self.lock();
        st.check_power()?;
        st.parent_exists(path)?;
        if st.locks.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another process",
            ));
        }
        let epoch = st.epoch;
        st.locks.insert(path.to_path_buf(), epoch);
        Ok(Box::new(LazyLock {
            fs: self.clone(),
            path: path.to_path_buf(),
            epoch,
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if st.syncs_held {
            return Ok(());
        }
        st.mutating_call()?;
        st.syncs += 1;
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, id) in &st.names {
            if p.parent() == Some(dir) {
                st.durable_names.insert(p.clone(), *id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &LazyFs, path: &str, data: &[u8], sync: bool) -> Box<dyn FsFile> {
        let mut f = fs.create(Path::new(path)).unwrap();
        f.write_all(data).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
        f
    }

    #[test]
    fn unsynced_data_and_unsynced_names_are_lost() {
        let fs = LazyFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        write(&fs, "/d/a", b"durable", true);
        fs.sync_dir(Path::new("/d")).unwrap();
        let mut a = fs.open_append(Path::new("/d/a")).unwrap();
        a.write_all(b" and more").unwrap();
        write(&fs, "/d/b", b"never named durably", true);
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"durable and more");

        fs.power_loss(LossMode::DropUnsynced);
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"durable");
        assert!(
            !fs.exists(Path::new("/d/b")).unwrap(),
            "b's dir entry was never synced"
        );
        assert!(a.write_all(b"x").is_err(), "handles die with the power");
    }

    #[test]
    fn rename_needs_a_dir_sync() {
        let fs = LazyFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        write(&fs, "/d/tmp", b"new", true);
        fs.rename(Path::new("/d/tmp"), Path::new("/d/final"))
            .unwrap();
        fs.power_loss(LossMode::DropUnsynced);
        assert!(!fs.exists(Path::new("/d/final")).unwrap());

        write(&fs, "/d/tmp", b"new", true);
        fs.rename(Path::new("/d/tmp"), Path::new("/d/final"))
            .unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        fs.power_loss(LossMode::DropUnsynced);
        assert_eq!(fs.read(Path::new("/d/final")).unwrap(), b"new");
    }

    #[test]
    fn torn_prefix_mode_keeps_a_prefix_of_appends_only() {
        let fs = LazyFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = write(&fs, "/d/a", b"0123", true);
        fs.sync_dir(Path::new("/d")).unwrap();
        f.write_all(b"456789").unwrap();
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let fs2 = LazyFs::new();
            fs2.create_dir_all(Path::new("/d")).unwrap();
            let mut g = write(&fs2, "/d/a", b"0123", true);
            fs2.sync_dir(Path::new("/d")).unwrap();
            g.write_all(b"456789").unwrap();
            fs2.power_loss(LossMode::KeepTornPrefix { seed });
            let got = fs2.read(Path::new("/d/a")).unwrap();
            assert!(b"0123456789".starts_with(&got) && got.len() >= 4, "{got:?}");
            seen.insert(got.len());
        }
        assert!(
            seen.len() > 3,
            "several different prefixes survive: {seen:?}"
        );
        // A truncation that was not synced is undone, whatever the mode.
        f.set_len(2).unwrap();
        fs.power_loss(LossMode::KeepTornPrefix { seed: 1 });
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"0123");
    }

    #[test]
    fn writes_go_to_the_write_position_over_zeros_written_ahead() {
        let fs = LazyFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = write(&fs, "/d/a", b"ab", false);
        f.extend_zeroed(6).unwrap();
        f.write_all(b"cd").unwrap();
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"abcd\0\0");
        f.write_all(b"efgh").unwrap();
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"abcdefgh");
        f.set_len(3).unwrap();
        f.write_all(b"X").unwrap();
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"abcX");
        assert_eq!(fs.unsynced_bytes(Path::new("/d/a")), 4);
        f.sync_data().unwrap();
        assert_eq!(fs.unsynced_bytes(Path::new("/d/a")), 0);
    }

    /// Writes over synced bytes may persist page by page in any order, and the length may
    /// be the old or the new one: every combination shows up over enough seeds.
    #[test]
    fn torn_pages_mode_keeps_any_subset_of_the_changed_pages() {
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let fs = LazyFs::new();
            fs.create_dir_all(Path::new("/d")).unwrap();
            let mut f = write(&fs, "/d/a", b"AAAA", true);
            fs.sync_dir(Path::new("/d")).unwrap();
            f.extend_zeroed(12).unwrap();
            f.write_all(b"bbbbcccc").unwrap();
            fs.power_loss(LossMode::TornPages { seed, page: 4 });
            let got = fs.read(Path::new("/d/a")).unwrap();
            assert!(got.starts_with(b"AAAA"), "synced bytes stay: {got:?}");
            for (k, piece) in got.chunks(4).enumerate().skip(1) {
                let new: &[u8] = [b"bbbb", b"cccc"][k - 1];
                assert!(piece == new || piece == b"\0\0\0\0", "{got:?}");
            }
            seen.insert(got);
        }
        let second_only = b"AAAA\0\0\0\0cccc".to_vec();
        assert!(seen.contains(&second_only), "a later page alone: {seen:?}");
        assert!(
            seen.contains(b"AAAA".as_slice()),
            "the old length: {seen:?}"
        );
        assert!(
            seen.contains(b"AAAAbbbbcccc".as_slice()),
            "everything: {seen:?}"
        );
    }

    #[test]
    fn armed_crash_fails_the_nth_call_and_everything_after() {
        let fs = LazyFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut f = write(&fs, "/d/a", b"", true);
        fs.sync_dir(Path::new("/d")).unwrap();
        fs.crash_after_ops(2);
        f.write_all(b"1").unwrap();
        f.write_all(b"2").unwrap();
        assert!(f.write_all(b"3").is_err());
        assert!(fs.has_crashed());
        assert!(f.sync_data().is_err());
        assert!(
            fs.read(Path::new("/d/a")).is_err(),
            "even reads fail while the power is off"
        );
        fs.power_loss(LossMode::DropUnsynced);
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"");
    }
}
