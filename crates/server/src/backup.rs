//! The backup file `Maintenance/Snapshot` streams and `raftkv snapshot` reads.
//!
//! The payload is the member's state as an etcd 3.4 backend: a bbolt database in etcd's
//! layout (`migrate::export`: buckets `key`, `meta`, `lease`, `auth*`, `cluster`), plus a
//! bucket `raftkv` whose key `image` holds the store's own snapshot image
//! (`mvcc::Store::snapshot`, with its CRC). The stream ends with the payload's SHA-256 as
//! its last message, as etcd's does, and `etcdctl snapshot save` appends it to the file:
//!
//! ```text
//! bbolt database   whole 4096-byte pages (so len % 512 == 0)
//! sha256           32 bytes over the database (etcdctl's length rule: len % 512 == 32)
//! ```
//!
//! So etcd's tools read a raftkv backup: `etcdctl snapshot status` (bbolt's `tx.Check()`,
//! key count, revision) and `etcdctl snapshot restore` (an etcd data dir serving the same
//! keys, revisions and versions). `raftkv snapshot status|restore` read the `raftkv`
//! bucket's image and lose nothing etcd's layout cannot hold (docs/operations.md).
//!
//! [`read`] also takes the two other kinds of file raftkv has met:
//! * raftkv's earlier format, `RKVBAK01`: magic (8 bytes), image length (u64 big-endian),
//!   the image, zero padding to a multiple of 512, then the SHA-256;
//! * etcd's own snapshots and `member/snap/db` files, which are migrated
//!   (docs/migration.md).

use sha2::{Digest, Sha256};

/// The magic of raftkv's earlier backup format.
const MAGIC: &[u8; 8] = b"RKVBAK01";
/// etcdctl refuses a file whose length is not `k * 512 + 32`.
pub const ALIGN: usize = 512;
pub const SHA_LEN: usize = 32;

/// The payload (without the trailer) for a store: the bbolt file in etcd's layout.
/// `consistent_index` is the Raft index the store has applied.
pub fn payload(store: &mvcc::Store, consistent_index: u64) -> Result<Vec<u8>, BackupError> {
    migrate::export(store, consistent_index).map_err(|e| BackupError::Export(e.to_string()))
}

/// The payload of raftkv's earlier backup format for a store image. Nothing writes it any
/// more; it is kept so tests can check old backups still restore.
#[doc(hidden)]
pub fn legacy_payload(image: &[u8]) -> Vec<u8> {
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
    #[error("not a raftkv snapshot")]
    NotRaftkv,
    #[error("snapshot file is damaged: {0}")]
    Damaged(&'static str),
    #[error("neither a raftkv backup nor an etcd database: {0}")]
    NotADatabase(String),
    #[error("{0}")]
    Etcd(String),
    #[error("cannot write the backup: {0}")]
    Export(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a backup file holds.
#[derive(Debug)]
pub enum Contents {
    /// A raftkv store image (from the `raftkv` bucket, or an `RKVBAK01` file).
    Raftkv(Vec<u8>),
    /// An etcd backend without raftkv's image, to be migrated.
    Etcd(Box<migrate::EtcdBackend>),
}

/// Checks a backup file and says what it holds. A file whose length says it carries the
/// SHA-256 trailer must match it, whatever it holds; a file without one is a raw
/// database (etcd's `member/snap/db`).
pub fn read(file: &[u8]) -> Result<Contents, BackupError> {
    let len = file.len();
    let (payload, verified) = if len % ALIGN == SHA_LEN && len >= ALIGN + SHA_LEN {
        let (payload, sha) = file.split_at(len - SHA_LEN);
        let actual = trailer(payload);
        if actual[..] != sha[..] {
            return Err(BackupError::Checksum {
                expected: hex(sha),
                actual: hex(&actual),
            });
        }
        (payload, true)
    } else if file.starts_with(MAGIC) {
        return Err(BackupError::BadLength { len });
    } else {
        (file, false)
    };
    if payload.starts_with(MAGIC) {
        return legacy_image(payload).map(|image| Contents::Raftkv(image.to_vec()));
    }
    let db = bbolt::Db::from_bytes(payload.to_vec()).map_err(|e| {
        if verified {
            BackupError::NotADatabase(e.to_string())
        } else {
            // Neither etcdctl's length rule nor bbolt's pages: most likely cut short.
            BackupError::NotADatabase(format!("{e} ({})", BackupError::BadLength { len }))
        }
    })?;
    match migrate::raftkv_image(&db).map_err(|e| BackupError::NotADatabase(e.to_string()))? {
        Some(image) => Ok(Contents::Raftkv(image)),
        None => migrate::EtcdBackend::from_db(&db, verified)
            .map(|b| Contents::Etcd(Box::new(b)))
            .map_err(|e| BackupError::Etcd(e.to_string())),
    }
}

/// Check a whole backup file and return the raftkv store image inside; an etcd database
/// without one is [`BackupError::NotRaftkv`].
pub fn open(file: &[u8]) -> Result<Vec<u8>, BackupError> {
    match read(file)? {
        Contents::Raftkv(image) => Ok(image),
        Contents::Etcd(_) => Err(BackupError::NotRaftkv),
    }
}

/// The image inside an `RKVBAK01` payload (trailer already checked and removed).
fn legacy_image(payload: &[u8]) -> Result<&[u8], BackupError> {
    if payload.len() < 16 {
        return Err(BackupError::Damaged("envelope"));
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
    use bytes::Bytes;
    use proto::etcdserverpb::PutRequest;
    use proto::raftkvpb::{internal_request::Request, InternalRequest};

    fn with_trailer(mut payload: Vec<u8>) -> Vec<u8> {
        let t = trailer(&payload);
        payload.extend_from_slice(&t);
        payload
    }

    fn store_with(n: usize) -> mvcc::Store {
        let mut store = mvcc::Store::new();
        for i in 0..n {
            store
                .apply(&InternalRequest {
                    auth: None,
                    request: Some(Request::Put(PutRequest {
                        key: Bytes::from(format!("k{i}")),
                        value: Bytes::from(vec![7u8; i * 100]),
                        ..Default::default()
                    })),
                })
                .unwrap();
        }
        store
    }

    #[test]
    fn bbolt_backups_follow_etcdctls_length_rule_and_hold_the_image() {
        for n in [0, 1, 50, 400] {
            let store = store_with(n);
            let f = with_trailer(payload(&store, 9).unwrap());
            assert_eq!(f.len() % ALIGN, SHA_LEN, "{n} keys");
            let image = open(&f).unwrap();
            assert!(mvcc::Store::restore(&image).unwrap() == store);
            // Without its trailer (a raw db) it still reads.
            let raw = &f[..f.len() - SHA_LEN];
            assert!(matches!(read(raw).unwrap(), Contents::Raftkv(_)));
        }
    }

    #[test]
    fn legacy_backups_still_open() {
        for n in [0, 1, 495, 496, 497, 5000] {
            let image = vec![7u8; n];
            let f = with_trailer(legacy_payload(&image));
            assert_eq!(f.len() % ALIGN, SHA_LEN, "image of {n} bytes");
            assert_eq!(open(&f).unwrap(), image);
        }
    }

    #[test]
    fn truncated_corrupted_and_foreign_files_are_refused() {
        let f = with_trailer(legacy_payload(b"some image"));
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

        let f = with_trailer(payload(&store_with(20), 1).unwrap());
        let mut damaged = f.clone();
        damaged[5000] ^= 1;
        assert!(matches!(open(&damaged), Err(BackupError::Checksum { .. })));
        // Cut by a page: the last 32 bytes are taken for a trailer, and do not match.
        let e = open(&f[..f.len() - 4096]).unwrap_err();
        assert!(matches!(e, BackupError::Checksum { .. }), "{e}");
        // Cut by a page and the trailer: a raw database missing its last page.
        let e = open(&f[..f.len() - 4096 - SHA_LEN]).unwrap_err();
        assert!(matches!(e, BackupError::NotADatabase(_)), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");

        // A page-aligned file with a correct sha256 that is neither.
        let mut foreign = vec![0u8; 1024];
        foreign[..4].copy_from_slice(b"bolt");
        let e = open(&with_trailer(foreign)).unwrap_err();
        assert!(matches!(e, BackupError::NotADatabase(_)), "{e}");

        // An etcd database without raftkv's bucket is etcd's, for migration.
        let etcd = bbolt::write_db(&[
            bbolt::BucketContents {
                name: b"key".to_vec(),
                entries: vec![],
            },
            bbolt::BucketContents {
                name: b"meta".to_vec(),
                entries: vec![],
            },
        ])
        .unwrap();
        let f = with_trailer(etcd);
        assert!(matches!(read(&f).unwrap(), Contents::Etcd(_)));
        assert_eq!(open(&f), Err(BackupError::NotRaftkv));
    }
}
