//! etcd's buckets, decoded.

use bbolt::{Bucket, Db, Value};
use bytes::Bytes;
use mvcc::{ImportedChange, ImportedLease, ImportedValue, Revision, Store};
use prost::Message;
use proto::etcdserverpb::CompactionRequest;
use proto::mvccpb::KeyValue;
use proto::raftkvpb::{internal_request::Request, InternalRequest};

use crate::error::MigrateError;

/// A revision as etcd's `key` bucket spells it: main, `_`, sub.
const REVISION_LEN: usize = 17;
/// The mark etcd appends to the revision of a deletion.
const TOMBSTONE_MARK: u8 = b't';

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, Message)]
pub struct EtcdLease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// Everything read from an etcd backend.
#[derive(Debug, Clone)]
pub struct EtcdBackend {
    /// The file carried `etcdctl snapshot save`'s SHA-256 and it matched.
    pub checksum_verified: bool,
    /// The last Raft index etcd applied (informational).
    pub consistent_index: Option<u64>,
    pub current_revision: i64,
    /// The last finished compaction (-1: never compacted).
    pub compacted_revision: i64,
    /// A compaction etcd had scheduled but not finished; it is carried out on import.
    pub scheduled_compaction: Option<i64>,
    /// Every change of every key still in the history, in revision order.
    pub changes: Vec<ImportedChange>,
    pub leases: Vec<EtcdLease>,
    pub auth_enabled: bool,
    pub users: usize,
    pub roles: usize,
}

impl EtcdBackend {
    /// Decodes an etcd backend or snapshot file's bytes.
    pub fn parse(bytes: Vec<u8>) -> Result<EtcdBackend, MigrateError> {
        let (bytes, checksum_verified) = crate::strip_checksum(bytes)?;
        Self::from_db(&Db::from_bytes(bytes)?, checksum_verified)
    }

    /// Decodes an opened database; `checksum_verified` says whether the caller checked a
    /// SHA-256 trailer.
    pub fn from_db(db: &Db, checksum_verified: bool) -> Result<EtcdBackend, MigrateError> {
        let key_bucket = db
            .bucket(b"key")?
            .ok_or(MigrateError::MissingBucket("key"))?;
        let meta = db
            .bucket(b"meta")?
            .ok_or(MigrateError::MissingBucket("meta"))?;

        let changes = decode_changes(&key_bucket)?;
        let consistent_index = meta
            .get(b"consistent_index")?
            .map(|v| be_u64("meta", b"consistent_index", v))
            .transpose()?;
        let finished = meta_revision(&meta, b"finishedCompactRev")?;
        let scheduled = meta_revision(&meta, b"scheduledCompactRev")?;
        let last = changes.last().map_or(1, |c| c.revision.main);
        let current_revision = [last, finished.unwrap_or(1), scheduled.unwrap_or(1)]
            .into_iter()
            .max()
            .unwrap_or(1);
        let compacted_revision = finished.unwrap_or(-1);
        let scheduled_compaction = scheduled.filter(|s| *s > compacted_revision);

        let leases = match db.bucket(b"lease")? {
            None => Vec::new(),
            Some(bucket) => decode_leases(&bucket)?,
        };
        let auth_enabled = match db.bucket(b"auth")? {
            Some(auth) => auth.get(b"authEnabled")?.is_some_and(|v| v == [1]),
            None => false,
        };
        let count = |name: &[u8]| -> Result<usize, MigrateError> {
            Ok(db
                .bucket(name)?
                .map_or(Ok(0), |b| b.entries().map(|e| e.len()))?)
        };
        Ok(EtcdBackend {
            checksum_verified,
            consistent_index,
            current_revision,
            compacted_revision,
            scheduled_compaction,
            changes,
            leases,
            auth_enabled,
            users: count(b"authUsers")?,
            roles: count(b"authRoles")?,
        })
    }

    /// State in the backend that raftkv's store cannot hold yet and an import would drop.
    /// Empty when the import is lossless.
    pub fn unsupported(&self) -> Vec<String> {
        let mut lost = Vec::new();
        if self.auth_enabled || self.users > 0 || self.roles > 0 {
            lost.push(format!(
                "authentication (enabled: {}, {} users, {} roles)",
                self.auth_enabled, self.users, self.roles
            ));
        }
        lost
    }

    /// The raftkv store holding this history. Refuses when [`Self::unsupported`] is not
    /// empty: a migration that silently drops state is worse than none.
    pub fn into_store(self) -> Result<Store, MigrateError> {
        let lost = self.unsupported();
        if !lost.is_empty() {
            return Err(MigrateError::Unsupported(lost.join("; ")));
        }
        let leases = self.leases.iter().map(|l| ImportedLease {
            id: l.id,
            ttl: l.ttl,
            remaining_ms: l.remaining_ttl.saturating_mul(1000),
        });
        let mut store = Store::import(
            self.current_revision,
            self.compacted_revision,
            self.changes,
            leases,
        )?;
        if let Some(revision) = self.scheduled_compaction {
            store
                .apply(&InternalRequest {
                    auth: None,
                    request: Some(Request::Compaction(CompactionRequest {
                        revision,
                        physical: true,
                    })),
                })
                .map_err(|e| MigrateError::Malformed {
                    bucket: "meta",
                    key: b"scheduledCompactRev".to_vec(),
                    problem: format!("the scheduled compaction cannot be carried out: {e:?}"),
                })?;
        }
        Ok(store)
    }
}

fn malformed(bucket: &'static str, key: &[u8], problem: impl Into<String>) -> MigrateError {
    MigrateError::Malformed {
        bucket,
        key: key.to_vec(),
        problem: problem.into(),
    }
}

fn be_u64(bucket: &'static str, key: &[u8], value: &[u8]) -> Result<u64, MigrateError> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| malformed(bucket, key, format!("{} bytes where 8 belong", value.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn be_i64(bucket: &'static str, key: &[u8], value: &[u8]) -> Result<i64, MigrateError> {
    i64::try_from(be_u64(bucket, key, value)?)
        .map_err(|_| malformed(bucket, key, "value beyond i64"))
}

/// A revision key of the `key` bucket: the revision and whether it marks a deletion.
fn decode_revision(bucket: &'static str, raw: &[u8]) -> Result<(Revision, bool), MigrateError> {
    let tombstone = match raw.len() {
        REVISION_LEN => false,
        n if n == REVISION_LEN + 1 && raw[REVISION_LEN] == TOMBSTONE_MARK => true,
        _ => return Err(malformed(bucket, raw, "not a revision")),
    };
    if raw[8] != b'_' {
        return Err(malformed(bucket, raw, "not a revision"));
    }
    let main = be_i64(bucket, raw, &raw[..8])?;
    let sub = be_i64(bucket, raw, &raw[9..REVISION_LEN])?;
    Ok((Revision::new(main, sub), tombstone))
}

fn meta_revision(meta: &Bucket<'_>, name: &'static [u8]) -> Result<Option<i64>, MigrateError> {
    meta.get(name)?
        .map(|raw| match decode_revision("meta", raw)? {
            (rev, false) => Ok(rev.main),
            (_, true) => Err(malformed(
                "meta",
                name,
                "a compaction revision marked deleted",
            )),
        })
        .transpose()
}

fn decode_changes(bucket: &Bucket<'_>) -> Result<Vec<ImportedChange>, MigrateError> {
    let mut changes = Vec::new();
    for (raw_rev, value) in bucket.entries()? {
        let Value::Data(raw_kv) = value else {
            return Err(malformed("key", raw_rev, "a nested bucket"));
        };
        let (revision, tombstone) = decode_revision("key", raw_rev)?;
        let kv = KeyValue::decode(raw_kv)
            .map_err(|e| malformed("key", raw_rev, format!("undecodable KeyValue: {e}")))?;
        let value = if tombstone {
            None
        } else {
            if kv.mod_revision != revision.main {
                return Err(malformed(
                    "key",
                    raw_rev,
                    format!(
                        "stored under revision {} but says {}",
                        revision.main, kv.mod_revision
                    ),
                ));
            }
            Some(ImportedValue {
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
                value: kv.value,
            })
        };
        changes.push(ImportedChange {
            key: Bytes::copy_from_slice(&kv.key),
            revision,
            value,
        });
    }
    Ok(changes)
}

fn decode_leases(bucket: &Bucket<'_>) -> Result<Vec<EtcdLease>, MigrateError> {
    bucket
        .entries()?
        .into_iter()
        .map(|(id, value)| match value {
            Value::Data(raw) => EtcdLease::decode(raw)
                .map_err(|e| malformed("lease", id, format!("undecodable Lease: {e}"))),
            Value::Bucket(_) => Err(malformed("lease", id, "a nested bucket")),
        })
        .collect()
}
