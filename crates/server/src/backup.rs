//! The backup file `Maintenance/Snapshot` streams and `raftkv snapshot` reads.
//!
//! etcdctl's `snapshot save` writes whatever the stream carries and checks only its
//! shape: the payload, then the payload's SHA-256 (32 bytes, sent as the last message), and
//! a total length with `len % 512 == 32` (etcd's bbolt files are page-aligned). So the
//! payload is the store's snapshot image (`mvcc::Store::snapshot`, which has its own
//! CRC) in a small envelope, zero-padded to a multiple of 512:
//!
//! ```text
//! magic      8 bytes  "RKVBAK01"
//! image_len  u64      big-endian
//! image      image_len bytes (mvcc snapshot image)
//! padding    zeros up to a multiple of 512
//! sha256     32 bytes over everything above (appended by the stream, as etcd does)
//! ```
//!
//! It is not a bbolt database: `etcdctl snapshot status` and `etcdctl snapshot restore`
//! cannot read it (restore still checks the SHA-256 first, so it refuses a damaged file
//! with etcd's own message). `raftkv snapshot status|restore` read it (docs/operations.md).

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"RKVBAK01";
/// etcdctl refuses a file whose length is not `k * 512 + 32`.
pub const ALIGN: usize = 512;
pub const SHA_LEN: usize = 32;

/// The payload (without the trailer) for a store image.
pub fn payload(image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(image.len() + ALIGN + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(image.len() as u64).to_be_bytes());
    out.extend_from_slice(image);
    let padded = out.len().div_ceil(ALIGN) * ALIGN;
    out.resize(padded, 0);
    out
}

/// The SHA-256 trailer of a payload.
pub fn trailer(payload: &[u8]) -> [u8; SHA_LEN] {
    Sha256::digest(payload).into()
}

/// Why a backup file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("snapshot file is truncated or not a snapshot: {len} bytes is not a multiple of {ALIGN} plus a {SHA_LEN}-byte sha256")]
    BadLength { len: usize },
    #[error("snapshot file is corrupted: expected sha256 {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("not a raftkv snapshot (a bbolt file from etcd? raftkv cannot read those)")]
    NotRaftkv,
    #[error("snapshot file is damaged: {0}")]
    Damaged(&'static str),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check a whole backup file (payload + trailer) and return the store image inside.
pub fn open(file: &[u8]) -> Result<&[u8], BackupError> {
    let len = file.len();
    if len < ALIGN + SHA_LEN || len % ALIGN != SHA_LEN {
        return Err(BackupError::BadLength { len });
    }
    let (payload, sha) = file.split_at(len - SHA_LEN);
    let actual = trailer(payload);
    if actual[..] != sha[..] {
        return Err(BackupError::Checksum {
            expected: hex(sha),
            actual: hex(&actual),
        });
    }
    if &payload[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotRaftkv);
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&payload[8..16]);
    let image_len =
        usize::try_from(u64::from_be_bytes(n)).map_err(|_| BackupError::Damaged("image length"))?;
    let end = 16usize
        .checked_add(image_len)
        .filter(|&e| e <= payload.len())
        .ok_or(BackupError::Damaged("image length beyond the file"))?;
    if payload[end..].iter().any(|&b| b != 0) || payload.len() - end >= ALIGN {
        return Err(BackupError::Damaged("padding"));
    }
    Ok(&payload[16..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(image: &[u8]) -> Vec<u8> {
        let mut f = payload(image);
        let t = trailer(&f);
        f.extend_from_slice(&t);
        f
    }

    #[test]
    fn round_trip_and_etcdctls_length_rule() {
        for n in [0, 1, 495, 496, 497, 5000] {
            let image = vec![7u8; n];
            let f = file(&image);
            assert_eq!(f.len() % ALIGN, SHA_LEN, "image of {n} bytes");
            assert_eq!(open(&f).unwrap(), &image[..]);
        }
    }

    #[test]
    fn truncated_corrupted_and_foreign_files_are_refused() {
        let f = file(b"some image");
        assert!(matches!(
            open(&f[..f.len() - 1]),
            Err(BackupError::BadLength { .. })
        ));
        assert!(matches!(
            open(&f[..512]),
            Err(BackupError::BadLength { .. })
        ));
        let mut damaged = f.clone();
        damaged[20] ^= 1;
        let e = open(&damaged).unwrap_err();
        assert!(matches!(e, BackupError::Checksum { .. }));
        assert!(e.to_string().contains("expected sha256"), "{e}");
        // A page-aligned file with a correct sha256 that is not ours (etcd's bbolt).
        let mut foreign = vec![0u8; 1024];
        foreign[..4].copy_from_slice(b"bolt");
        let t = trailer(&foreign);
        foreign.extend_from_slice(&t);
        assert_eq!(open(&foreign), Err(BackupError::NotRaftkv));
    }
}
