//! The data dir's identity card: `raftkv.meta`, a few text lines an operator can `cat`.
//!
//! ```text
//! raftkv-data-dir
//! format=1
//! member=0x0000000000000001
//! cluster=0x00000000deadbeef
//! crc=0x1234abcd
//! ```
//!
//! `crc` is the CRC-32C of the lines above it (including their newlines). The file is
//! written once, when the data dir is initialised, after the WAL exists (temp file, fsync,
//! rename, directory fsync), so its presence means "this dir was fully initialised".

use std::path::Path;

use crate::error::{Result, StorageError};
use crate::fs::{join, write_file_atomically, FileSystem};

/// The metadata file: a data dir holds a member's storage once it exists.
pub const META_FILE: &str = "raftkv.meta";
/// The data-dir format this code writes and the newest it can open.
pub const FORMAT_VERSION: u32 = 1;
const FIRST_LINE: &str = "raftkv-data-dir";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Metadata {
    pub format: u32,
    pub member_id: u64,
    pub cluster_id: u64,
}

fn render(m: &Metadata) -> String {
    let body = format!(
        "{FIRST_LINE}\nformat={}\nmember={:#018x}\ncluster={:#018x}\n",
        m.format, m.member_id, m.cluster_id
    );
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}crc={crc:#010x}\n")
}

fn parse(text: &str) -> std::result::Result<Metadata, String> {
    let crc_at = text.rfind("crc=").ok_or("no crc line")?;
    let (body, crc_line) = text.split_at(crc_at);
    let stored = parse_hex(crc_line.trim_end().trim_start_matches("crc="))?;
    let actual = crc32c::crc32c(body.as_bytes()) as u64;
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let mut lines = body.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Err(format!("first line is not {FIRST_LINE:?}"));
    }
    let (mut format, mut member, mut cluster) = (None, None, None);
    for line in lines {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("malformed line {line:?}"))?;
        match key {
            "format" => format = Some(value.parse::<u32>().map_err(|e| format!("format: {e}"))?),
            "member" => member = Some(parse_hex(value)?),
            "cluster" => cluster = Some(parse_hex(value)?),
            _ => {} // Unknown keys from a newer minor writer are tolerated.
        }
    }
    Ok(Metadata {
        format: format.ok_or("no format line")?,
        member_id: member.ok_or("no member line")?,
        cluster_id: cluster.ok_or("no cluster line")?,
    })
}

fn parse_hex(s: &str) -> std::result::Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("{s:?} is not 0x-prefixed hex"))?;
    u64::from_str_radix(digits, 16).map_err(|e| format!("{s:?}: {e}"))
}

/// Reads the metadata file, or `None` if there is none.
pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Metadata>> {
    let path = join(dir, META_FILE);
    match fs.read(&path) {
        Ok(raw) => {
            let text = String::from_utf8(raw).map_err(|_| StorageError::BadMetadata {
                path: path.clone(),
                reason: "not UTF-8 text".into(),
            })?;
            parse(&text)
                .map(Some)
                .map_err(|reason| StorageError::BadMetadata { path, reason })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", path, e)),
    }
}

/// Durably writes the metadata file.
pub(crate) fn write(fs: &dyn FileSystem, dir: &Path, m: &Metadata) -> Result<()> {
    write_file_atomically(fs, &join(dir, META_FILE), render(m).as_bytes())
}

/// Checks that `found` may be opened by member `member_id` of cluster `cluster_id`.
pub(crate) fn check(dir: &Path, found: &Metadata, member_id: u64, cluster_id: u64) -> Result<()> {
    if found.format > FORMAT_VERSION {
        return Err(StorageError::NewerFormat {
            dir: dir.to_path_buf(),
            found: found.format,
            supported: FORMAT_VERSION,
        });
    }
    if found.cluster_id != cluster_id {
        return Err(StorageError::ClusterMismatch {
            dir: dir.to_path_buf(),
            expected: cluster_id,
            found: found.cluster_id,
        });
    }
    if found.member_id != member_id {
        return Err(StorageError::MemberMismatch {
            dir: dir.to_path_buf(),
            expected: member_id,
            found: found.member_id,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_edits() {
        let m = Metadata {
            format: 1,
            member_id: 7,
            cluster_id: 0xdead_beef,
        };
        let text = render(&m);
        assert_eq!(parse(&text).unwrap(), m);
        let edited = text.replace("member=0x0000000000000007", "member=0x0000000000000008");
        assert!(parse(&edited).unwrap_err().contains("checksum"));
        assert!(parse("").is_err());
        assert!(parse("crc=zz").is_err());
    }

    #[test]
    fn check_names_the_problem() {
        let dir = Path::new("/data");
        let m = Metadata {
            format: 1,
            member_id: 1,
            cluster_id: 2,
        };
        assert!(check(dir, &m, 1, 2).is_ok());
        assert!(matches!(
            check(dir, &m, 1, 3),
            Err(StorageError::ClusterMismatch { .. })
        ));
        assert!(matches!(
            check(dir, &m, 9, 2),
            Err(StorageError::MemberMismatch { .. })
        ));
        let newer = Metadata {
            format: FORMAT_VERSION + 1,
            ..m
        };
        let err = check(dir, &newer, 1, 2).unwrap_err().to_string();
        assert!(err.contains("newer") && err.contains("/data"), "{err}");
    }
}
