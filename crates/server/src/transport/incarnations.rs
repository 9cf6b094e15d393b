//! Which incarnation of each peer we have seen, persisted in our data dir.
//!
//! A member whose data dir is wiped comes back with the same member ID but a new
//! incarnation. Letting it rejoin would be unsafe: it forgot its vote and the entries it
//! acknowledged, so a quorum counted with it may no longer exist. Every member therefore
//! remembers the first incarnation it accepted from each peer, across restarts, and
//! refuses a different one. (A member that was never seen can always join: it cannot have
//! lost anything the cluster relied on. The remedy for a wiped member is to remove it and
//! add it back as a new member.)
//!
//! "First seen" can be an outsider's: without peer mTLS, whoever dials first as a member
//! that has not started yet is recorded in its place. An operator undoes that with
//! `raftkv peer admit` (a replicated entry, [`Incarnations::admit`]): every member then
//! records the incarnation the operator read from the real member's data dir, and cuts the
//! connections admitted under another one (docs/security.md, "A pre-claimed member").
//!
//! The record is only worth anything if it is durable *before* the peer is admitted: a
//! peer admitted unrecorded could, after our restart, come back wiped and be taken for new.
//! So a peer whose incarnation cannot be written down is refused (transiently; it retries),
//! and the file goes through the storage layer's [`FileSystem`] (the same atomic
//! write-fsync-rename-fsync as the data dir's metadata, and the same fault injection in
//! tests).
//!
//! Files, both in the data dir:
//!
//! * `raftkv.incarnation` — this member's own incarnation: one hex number and a newline,
//!   made when the data dir is created.
//! * `raftkv.peers` — one line per peer we accepted: `<member id hex> <incarnation hex>`,
//!   followed by ` <log index hex>` when an operator's admission set it (the index of the
//!   admitting entry; a line without it is a first sighting, as every line was before
//!   admissions existed).
//!
//! Why the index: an admission reaches a member either as the log entry or, for a member
//! that was down while the leader compacted past it, inside a snapshot
//! (`crate::admissions`). A record only ever moves forward in log order, so neither a
//! replayed entry nor an older snapshot (this member's own, at restart) undoes a later
//! admission already on disk.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use storage::FileSystem;

use super::codec::RefusalKind;

/// Why a peer's incarnation was not accepted: what to tell it, and in which words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub reason: String,
}

/// Where the record lives (absent for a record kept only in memory).
struct Backing {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
}

/// What is recorded for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    incarnation: u64,
    /// The log index of the operator's admission that set it; 0 for a first sighting.
    admitted_at: u64,
}

pub struct Incarnations {
    backing: Option<Backing>,
    /// Held while the file is written, so two first handshakes cannot interleave their
    /// writes (each would otherwise write a file missing the other's peer).
    seen: Mutex<HashMap<u64, Record>>,
    /// Bumped by every [`Incarnations::admit`], so open connections notice cheaply that the
    /// incarnation they were admitted with may no longer be the recorded one.
    generation: AtomicU64,
}

impl Incarnations {
    /// Load the record from `path` (missing file = nothing seen yet). A damaged file is an
    /// error naming the file and the line: guessing could readmit a wiped member.
    pub fn load(fs: Arc<dyn FileSystem>, path: &Path) -> anyhow::Result<Incarnations> {
        let mut seen = HashMap::new();
        match fs.read(path) {
            Ok(raw) => {
                let text = String::from_utf8(raw).map_err(|_| {
                    anyhow::anyhow!("peer incarnation record {} is not text", path.display())
                })?;
                for (n, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let (id, record) = parse_line(line).ok_or_else(|| {
                        anyhow::anyhow!(
                            "peer incarnation record {} line {}: malformed {line:?} (expected \
                             `<member id hex> <incarnation hex> [<admitting log index hex>]`)",
                            path.display(),
                            n + 1
                        )
                    })?;
                    seen.insert(id, record);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot read the peer incarnation record {}: {e}",
                    path.display()
                ))
            }
        }
        Ok(Incarnations {
            backing: Some(Backing {
                fs,
                path: path.to_path_buf(),
            }),
            seen: Mutex::new(seen),
            generation: AtomicU64::new(0),
        })
    }

    /// A record kept only in memory (tests).
    pub fn in_memory() -> Incarnations {
        Incarnations {
            backing: None,
            seen: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Record `incarnation` for `member` in place of whatever was recorded (an operator's
    /// `raftkv peer admit`, applied from the log entry at index `at`, or found in a
    /// snapshot that says the entry at `at` admitted it). A record set by an admission at
    /// `at` or later stays: the record moves only forward in log order. `Ok(true)` when the
    /// record changed.
    ///
    /// Durable before it returns; if the file cannot be written the record stays in memory
    /// (until a restart) and the error says so. Connections admitted under another
    /// incarnation see [`Incarnations::generation`] move and end at their next frame.
    pub fn admit(&self, member: u64, incarnation: u64, at: u64) -> anyhow::Result<bool> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| anyhow::anyhow!("the peer incarnation record is unusable"))?;
        let before = seen.get(&member).copied();
        if before.is_some_and(|r| r.admitted_at >= at) {
            return Ok(false);
        }
        seen.insert(
            member,
            Record {
                incarnation,
                admitted_at: at,
            },
        );
        if before.map(|r| r.incarnation) != Some(incarnation) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.persist(&seen)?;
        Ok(true)
    }

    /// Counts [`Incarnations::admit`] calls.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether `incarnation` is what is recorded for `member` now.
    pub fn is_recorded(&self, member: u64, incarnation: u64) -> bool {
        self.seen
            .lock()
            .map(|seen| seen.get(&member).map(|r| r.incarnation) == Some(incarnation))
            .unwrap_or(false)
    }

    /// Accept `incarnation` for `member` if it is the same as before, or if `member` is new
    /// and its incarnation is now durably recorded.
    ///
    /// Blocks: the first sighting of a member writes and fsyncs a file. Call it from a
    /// blocking context (`tokio::task::spawn_blocking`), never on an async worker thread.
    pub fn check(&self, member: u64, incarnation: u64) -> Result<(), Refusal> {
        let mut seen = self.seen.lock().map_err(|_| Refusal {
            kind: RefusalKind::Unavailable,
            reason: "the peer incarnation record is unusable after a panic".into(),
        })?;
        match seen.get(&member).map(|r| r.incarnation) {
            Some(known) if known == incarnation => Ok(()),
            Some(known) => Err(Refusal {
                kind: RefusalKind::IdentityWiped,
                reason: format!(
                    "member {member:x} lost its data dir (incarnation {incarnation:x}, \
                     previously {known:x}); it must not rejoin under its old identity: remove \
                     it and add it back as a new member"
                ),
            }),
            None => {
                let mut next = seen.clone();
                next.insert(
                    member,
                    Record {
                        incarnation,
                        admitted_at: 0,
                    },
                );
                if let Err(e) = self.persist(&next) {
                    // Memory is left as it was: the next attempt tries to record it again.
                    return Err(Refusal {
                        kind: RefusalKind::Unavailable,
                        reason: format!(
                            "cannot record the incarnation of member {member:x} ({e}); \
                             refusing it until it can be recorded"
                        ),
                    });
                }
                *seen = next;
                Ok(())
            }
        }
    }

    fn persist(&self, seen: &HashMap<u64, Record>) -> anyhow::Result<()> {
        let Some(b) = &self.backing else {
            return Ok(());
        };
        let sorted: BTreeMap<_, _> = seen.iter().collect();
        let text: String = sorted
            .into_iter()
            .map(|(id, r)| match r.admitted_at {
                0 => format!("{id:x} {:x}\n", r.incarnation),
                at => format!("{id:x} {:x} {at:x}\n", r.incarnation),
            })
            .collect();
        storage::write_file_atomically(&*b.fs, &b.path, text.as_bytes())?;
        Ok(())
    }
}

fn parse_line(line: &str) -> Option<(u64, Record)> {
    let mut parts = line.split_whitespace();
    let id = u64::from_str_radix(parts.next()?, 16).ok()?;
    let incarnation = u64::from_str_radix(parts.next()?, 16).ok()?;
    let admitted_at = match parts.next() {
        Some(at) => u64::from_str_radix(at, 16).ok()?,
        None => 0,
    };
    parts.next().is_none().then_some((
        id,
        Record {
            incarnation,
            admitted_at,
        },
    ))
}

/// This member's incarnation, read from `path`, or made (random) and durably written if
/// there is no such file yet — which must mean the data dir was just created: the caller
/// opens the storage first, and that refuses a restarting member's wiped data dir.
pub fn own_incarnation(fs: &dyn FileSystem, path: &Path) -> anyhow::Result<u64> {
    match fs.read(path) {
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw);
            u64::from_str_radix(text.trim(), 16).map_err(|e| {
                anyhow::anyhow!(
                    "incarnation file {} is damaged ({e}): its content is {:?}",
                    path.display(),
                    text.trim()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let inc = random_incarnation();
            storage::write_file_atomically(fs, path, format!("{inc:x}\n").as_bytes())
                .with_context(|| {
                    format!("cannot create the incarnation file {}", path.display())
                })?;
            Ok(inc)
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the incarnation file {}: {e}",
            path.display()
        )),
    }
}

/// A number that differs between two creations of a data dir (std's randomly keyed
/// hasher, fed the time and the process id; it need not be secret, only different).
fn random_incarnation() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::{LazyFs, LossMode, RealFs};

    const DIR: &str = "/data";

    fn lazy() -> (Arc<LazyFs>, PathBuf) {
        let fs = Arc::new(LazyFs::new());
        fs.create_dir_all(Path::new(DIR)).unwrap();
        (fs, Path::new(DIR).join("raftkv.peers"))
    }

    #[test]
    fn a_changed_incarnation_is_refused_even_after_a_power_loss() {
        let (fs, path) = lazy();
        let rec = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(rec.check(7, 100).is_ok());
        assert!(rec.check(7, 100).is_ok());
        assert!(rec.check(8, 5).is_ok());
        // Accepted means durable: a power cut right after loses nothing of it.
        fs.power_loss(LossMode::DropUnsynced);
        let again = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(again.check(7, 100).is_ok());
        assert!(again.check(8, 5).is_ok());
        let refusal = again.check(7, 101).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::IdentityWiped);
        assert!(refusal.reason.contains("lost its data dir"), "{refusal:?}");
    }

    /// An operator's admission replaces a pre-claimed record, durably, and only for that
    /// member.
    #[test]
    fn an_admission_replaces_the_recorded_incarnation_durably() {
        let (fs, path) = lazy();
        let rec = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(
            rec.check(7, 0xbad).is_ok(),
            "the outsider's claim comes first"
        );
        assert!(rec.check(8, 5).is_ok());
        assert_eq!(
            rec.check(7, 0x600d).unwrap_err().kind,
            RefusalKind::IdentityWiped
        );
        let before = rec.generation();
        assert!(rec.admit(7, 0x600d, 40).unwrap());
        assert!(rec.generation() > before);
        assert!(rec.is_recorded(7, 0x600d) && !rec.is_recorded(7, 0xbad));
        assert!(rec.check(7, 0x600d).is_ok());
        assert_eq!(
            rec.check(7, 0xbad).unwrap_err().kind,
            RefusalKind::IdentityWiped
        );
        fs.power_loss(LossMode::DropUnsynced);
        let again = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(again.check(7, 0x600d).is_ok());
        assert!(again.check(8, 5).is_ok());
        assert_eq!(
            again.check(7, 0xbad).unwrap_err().kind,
            RefusalKind::IdentityWiped
        );
    }

    /// An admission only moves the record forward in log order: replaying an older entry,
    /// or restoring an older snapshot, leaves a later admission in place, across a reload;
    /// a record written before admissions had an index still loads as a first sighting.
    #[test]
    fn an_older_admission_never_undoes_a_later_one() {
        let (fs, path) = lazy();
        storage::write_file_atomically(&*fs, &path, b"7 bad\n").unwrap();
        let rec = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(rec.is_recorded(7, 0xbad));
        assert!(rec.admit(7, 0xa1, 10).unwrap());
        assert!(rec.admit(7, 0xa2, 20).unwrap());
        let generation = rec.generation();
        assert!(!rec.admit(7, 0xa1, 10).unwrap(), "an older admission");
        assert!(!rec.admit(7, 0xa2, 20).unwrap(), "the same admission again");
        assert_eq!(
            rec.generation(),
            generation,
            "nothing changed, nobody is cut off"
        );
        assert!(rec.is_recorded(7, 0xa2));
        fs.power_loss(LossMode::DropUnsynced);
        let again = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(!again.admit(7, 0xa1, 15).unwrap());
        assert!(again.is_recorded(7, 0xa2));
        assert!(again.admit(7, 0xa3, 21).unwrap());
        assert!(again.is_recorded(7, 0xa3));
    }

    #[test]
    fn the_record_works_on_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raftkv.peers");
        let rec = Incarnations::load(Arc::new(RealFs), &path).unwrap();
        assert!(rec.check(0xa, 0xb).is_ok());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a b\n");
        let again = Incarnations::load(Arc::new(RealFs), &path).unwrap();
        assert_eq!(
            again.check(0xa, 0xc).unwrap_err().kind,
            RefusalKind::IdentityWiped
        );
    }

    /// A peer whose incarnation cannot be recorded is refused, transiently, and nothing is
    /// remembered of it: once the disk works again it is recorded and admitted.
    #[test]
    fn a_peer_that_cannot_be_recorded_is_refused_until_it_can() {
        let (fs, path) = lazy();
        let rec = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(rec.check(1, 10).is_ok());
        // Every file operation from now on fails.
        fs.crash_after_ops(0);
        let refusal = rec.check(2, 20).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Unavailable, "{refusal:?}");
        assert!(
            refusal.reason.contains("raftkv.peers") && refusal.reason.contains("member 2"),
            "{refusal:?}"
        );
        // Not remembered in memory either: another incarnation of 2 is not taken for a
        // wiped member, it is simply still unrecordable.
        assert_eq!(rec.check(2, 21).unwrap_err().kind, RefusalKind::Unavailable);
        // Known peers are still admitted: nothing needs writing for them.
        assert!(rec.check(1, 10).is_ok());

        fs.power_loss(LossMode::DropUnsynced);
        assert!(rec.check(2, 21).is_ok());
        let reloaded = Incarnations::load(fs.clone(), &path).unwrap();
        assert!(reloaded.check(2, 21).is_ok());
        assert!(reloaded.check(1, 10).is_ok());
        assert_eq!(
            reloaded.check(2, 20).unwrap_err().kind,
            RefusalKind::IdentityWiped
        );
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file_and_line() {
        let (fs, path) = lazy();
        storage::write_file_atomically(&*fs, &path, b"1 a\n2 zz\n").unwrap();
        let err = Incarnations::load(fs.clone(), &path)
            .err()
            .expect("a damaged record must not load")
            .to_string();
        assert!(err.contains("/data/raftkv.peers line 2"), "{err}");

        let own = Path::new(DIR).join("raftkv.incarnation");
        storage::write_file_atomically(&*fs, &own, b"not hex\n").unwrap();
        let err = own_incarnation(&*fs, &own).unwrap_err().to_string();
        assert!(err.contains("/data/raftkv.incarnation"), "{err}");
    }

    #[test]
    fn the_own_incarnation_is_made_once_and_durably() {
        let (fs, _) = lazy();
        let path = Path::new(DIR).join("raftkv.incarnation");
        let first = own_incarnation(&*fs, &path).unwrap();
        fs.power_loss(LossMode::DropUnsynced);
        assert_eq!(own_incarnation(&*fs, &path).unwrap(), first);
    }
}
