//! raftkv's state written as an etcd 3.4 backend: the inverse of [`crate::EtcdBackend`].
//!
//! `Maintenance/Snapshot` streams this file, so what `etcdctl snapshot save` stores is a
//! bbolt database etcd's own tools accept: `etcdctl snapshot status` checks and counts it,
//! `etcdctl snapshot restore` turns it into an etcd data dir that serves the same keys at
//! the same revisions. The buckets, as etcd's `mvcc`, `lease`, `auth` and `membership`
//! packages write them:
//!
//! * `key`: every change still in the history — revision (main u64 big-endian, `_`, sub
//!   u64 big-endian, plus `t` for a deletion) → `mvccpb.KeyValue` (just the key for a
//!   deletion);
//! * `meta`: `consistent_index` (the applied Raft index, u64 big-endian) and, once the
//!   store was compacted, `scheduledCompactRev` = `finishedCompactRev` = that revision;
//! * `lease`: lease ID (u64 big-endian) → `leasepb.Lease {ID, TTL, RemainingTTL}`;
//! * `auth` (`authEnabled` 0/1, `authRevision` u64 big-endian), `authUsers` (name →
//!   `authpb.User`), `authRoles` (name → `authpb.Role`);
//! * `cluster`: `clusterVersion` = "3.4.0". Members are not written: etcd's restore
//!   replaces them with the new cluster's anyway.
//!
//! etcd cannot hold everything raftkv knows (lease renewal counts, a current revision
//! past the last change after a compaction or an empty txn, alarms), so one more bucket,
//! `raftkv`, holds the store's own image (`mvcc::Store::snapshot`) under `image`: raftkv's
//! restore reads that and loses nothing. etcd ignores buckets it does not know.

use std::collections::BTreeMap;

use bbolt::{BucketContents, Db, Value};
use mvcc::Store;
use prost::Message;
use proto::authpb::{Role, User, UserAddOptions};
use proto::mvccpb::KeyValue;

use crate::backend::EtcdLease;
use crate::error::MigrateError;

/// The bucket raftkv adds to etcd's layout.
pub const RAFTKV_BUCKET: &[u8] = b"raftkv";
/// The key under [`RAFTKV_BUCKET`] holding the store image.
pub const IMAGE_KEY: &[u8] = b"image";
/// The version etcd's `cluster` bucket names: raftkv speaks etcd 3.4's API.
pub const CLUSTER_VERSION: &str = "3.4.0";

/// A bucket's keys and values, in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A revision as etcd's `key` and `meta` buckets spell it.
fn revision_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&(main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(sub as u64).to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// The bbolt file (without `etcdctl`'s SHA-256 trailer) holding `store` in etcd's layout;
/// `consistent_index` is the Raft index the store has applied.
pub fn export(store: &Store, consistent_index: u64) -> Result<Vec<u8>, MigrateError> {
    let mut buckets: BTreeMap<&[u8], Entries> = BTreeMap::new();

    let keys = store
        .history()
        .into_iter()
        .map(|c| {
            let rev = revision_key(c.revision.main, c.revision.sub, c.value.is_none());
            let kv = match c.value {
                None => KeyValue {
                    key: c.key,
                    ..Default::default()
                },
                Some(v) => KeyValue {
                    key: c.key,
                    create_revision: v.create_revision,
                    mod_revision: c.revision.main,
                    version: v.version,
                    value: v.value,
                    lease: v.lease,
                },
            };
            (rev, kv.encode_to_vec())
        })
        .collect();
    buckets.insert(b"key", keys);

    let mut meta = vec![(
        b"consistent_index".to_vec(),
        consistent_index.to_be_bytes().to_vec(),
    )];
    if store.compact_revision() > 0 {
        let rev = revision_key(store.compact_revision(), 0, false);
        meta.push((b"finishedCompactRev".to_vec(), rev.clone()));
        meta.push((b"scheduledCompactRev".to_vec(), rev));
    }
    meta.sort();
    buckets.insert(b"meta", meta);

    let leases = store
        .leases()
        .iter()
        .map(|l| {
            let full_ms = l.ttl.saturating_mul(1000);
            // etcd records a remaining TTL only once checkpointed (0: the full TTL).
            let remaining_ttl = if l.remaining_ms < full_ms {
                (l.remaining_ms + 999) / 1000
            } else {
                0
            };
            let lease = EtcdLease {
                id: l.id,
                ttl: l.ttl,
                remaining_ttl,
            };
            ((l.id as u64).to_be_bytes().to_vec(), lease.encode_to_vec())
        })
        .collect();
    buckets.insert(b"lease", leases);

    let auth = store.auth();
    buckets.insert(
        b"auth",
        vec![
            (b"authEnabled".to_vec(), vec![auth.is_enabled() as u8]),
            (
                b"authRevision".to_vec(),
                auth.revision().to_be_bytes().to_vec(),
            ),
        ],
    );
    let users = auth
        .user_names()
        .into_iter()
        .filter_map(|name| {
            let u = auth.user(&name)?;
            let user = User {
                name: name.clone().into_bytes().into(),
                password: u.password_hash.clone().into_bytes().into(),
                roles: u.roles.iter().cloned().collect(),
                options: Some(UserAddOptions {
                    no_password: u.no_password,
                }),
            };
            Some((name.into_bytes(), user.encode_to_vec()))
        })
        .collect();
    buckets.insert(b"authUsers", users);
    let roles = auth
        .role_names()
        .into_iter()
        .filter_map(|name| {
            let perms = auth.role(&name).ok()?;
            let role = Role {
                name: name.clone().into_bytes().into(),
                key_permission: perms.to_vec(),
            };
            Some((name.into_bytes(), role.encode_to_vec()))
        })
        .collect();
    buckets.insert(b"authRoles", roles);

    buckets.insert(
        b"cluster",
        vec![(
            b"clusterVersion".to_vec(),
            CLUSTER_VERSION.as_bytes().to_vec(),
        )],
    );
    buckets.insert(RAFTKV_BUCKET, vec![(IMAGE_KEY.to_vec(), store.snapshot())]);

    let buckets: Vec<BucketContents> = buckets
        .into_iter()
        .map(|(name, entries)| BucketContents {
            name: name.to_vec(),
            entries,
        })
        .collect();
    Ok(bbolt::write_db(&buckets)?)
}

/// The raftkv store image inside a bbolt database (without trailer), if it was written
/// by [`export`]; `None` for an etcd backend that is not raftkv's.
pub fn raftkv_image(db: &Db) -> Result<Option<Vec<u8>>, MigrateError> {
    let Some(bucket) = db.bucket(RAFTKV_BUCKET)? else {
        return Ok(None);
    };
    Ok(bucket.entries()?.into_iter().find_map(|(k, v)| match v {
        Value::Data(d) if k == IMAGE_KEY => Some(d.to_vec()),
        _ => None,
    }))
}

#[cfg(test)]
mod tests;
