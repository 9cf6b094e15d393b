//! Which incarnation of each peer we have seen, persisted in our data dir.
//!
//! A member whose data dir is wiped comes back with the same member ID but a new
//! incarnation. Letting it rejoin would be unsafe: it forgot its vote and the entries it
//! acknowledged, so a quorum counted with it may no longer exist. Every member therefore
//! remembers the first incarnation it accepted from each peer, across restarts, and
//! refuses a different one. (A member that was never seen can always join: it cannot have
//! lost anything the cluster relied on. The remedy for a wiped member is to remove it and
//! add it back as a new member — membership changes come in a later issue.)

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::warn;

pub struct Incarnations {
    path: Option<PathBuf>,
    seen: Mutex<HashMap<u64, u64>>,
}

impl Incarnations {
    /// Load the record from `path` (missing file = nothing seen yet).
    pub fn load(path: &Path) -> anyhow::Result<Incarnations> {
        let mut seen = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let mut parts = line.split_whitespace();
                    let (Some(id), Some(inc)) = (parts.next(), parts.next()) else {
                        anyhow::bail!("{}: malformed line {line:?}", path.display());
                    };
                    let id = u64::from_str_radix(id, 16)?;
                    let inc = u64::from_str_radix(inc, 16)?;
                    seen.insert(id, inc);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
        Ok(Incarnations {
            path: Some(path.to_path_buf()),
            seen: Mutex::new(seen),
        })
    }

    /// A record kept only in memory (tests).
    pub fn in_memory() -> Incarnations {
        Incarnations {
            path: None,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Accept `incarnation` for `member` if it is the first or the same as before.
    pub fn check(&self, member: u64, incarnation: u64) -> Result<(), String> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| "incarnation record poisoned".to_string())?;
        match seen.get(&member) {
            Some(&known) if known == incarnation => Ok(()),
            Some(&known) => Err(format!(
                "member {member:x} lost its data dir (incarnation {incarnation:x}, previously {known:x}); \
                 it must not rejoin under its old identity: remove it and add it back as a new member"
            )),
            None => {
                seen.insert(member, incarnation);
                if let Err(e) = self.persist(&seen) {
                    warn!(error = %e, "cannot persist the peer incarnation record");
                }
                Ok(())
            }
        }
    }

    fn persist(&self, seen: &HashMap<u64, u64>) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for (id, inc) in seen {
            writeln!(f, "{id:x} {inc:x}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_incarnation_is_refused_even_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("raftkv-inc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peers");
        let _ = std::fs::remove_file(&path);
        let rec = Incarnations::load(&path).unwrap();
        assert!(rec.check(7, 100).is_ok());
        assert!(rec.check(7, 100).is_ok());
        assert!(rec.check(8, 5).is_ok());
        let again = Incarnations::load(&path).unwrap();
        assert!(again.check(7, 100).is_ok());
        let e = again.check(7, 101).unwrap_err();
        assert!(e.contains("lost its data dir"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
