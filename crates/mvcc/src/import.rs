//! Building a store from another store's history (an etcd backend being migrated).
//!
//! The history comes from outside raftkv, so nothing in it is trusted: every change is
//! checked against the invariants [`Store`] relies on (revisions in range and unique, each
//! key's changes in revision order, versions that count up from 1) before a store exists.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::key_history::{Entry, KeyHistory, Live, State};
use crate::revision::Revision;
use crate::store::{entry_size, Store};

/// One change of a key: it got `value` at `revision`, or (`value: None`) was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedChange {
    pub key: Bytes,
    pub revision: Revision,
    pub value: Option<ImportedValue>,
}

/// The value a key got, with etcd's bookkeeping for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedValue {
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Bytes,
}

/// A lease, as another store recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedLease {
    pub id: i64,
    /// The granted TTL, in seconds.
    pub ttl: i64,
    /// What was left of it when the other store last recorded it (0: unknown, so the full
    /// TTL, as etcd itself grants on a restart without checkpoints).
    pub remaining_ms: i64,
}

/// Why a history cannot become a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The key whose change is wrong (empty for store-wide problems).
    pub key: Bytes,
    pub revision: Revision,
    pub problem: &'static str,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (key {:?} at revision {}.{})",
            self.problem,
            String::from_utf8_lossy(&self.key),
            self.revision.main,
            self.revision.sub
        )
    }
}

impl std::error::Error for ImportError {}

impl Store {
    /// A store whose history is `changes` (in any order across keys), whose latest revision
    /// is `current`, which was compacted at `compacted` (-1: never), and which holds
    /// `leases`; every key whose latest value names a lease is attached to it.
    pub fn import(
        current: i64,
        compacted: i64,
        changes: impl IntoIterator<Item = ImportedChange>,
        leases: impl IntoIterator<Item = ImportedLease>,
    ) -> Result<Store, ImportError> {
        let store_wide = |problem| ImportError {
            key: Bytes::new(),
            revision: Revision::new(current, 0),
            problem,
        };
        if current < 1 || compacted < -1 || compacted > current {
            return Err(store_wide("revision counters out of range"));
        }
        let mut keys: BTreeMap<Bytes, KeyHistory> = BTreeMap::new();
        let mut by_revision = BTreeMap::new();
        let mut stored_bytes = 0u64;
        for change in changes {
            let fail = |problem| ImportError {
                key: change.key.clone(),
                revision: change.revision,
                problem,
            };
            let rev = change.revision;
            if change.key.is_empty() {
                return Err(fail("empty key"));
            }
            if rev.main < 2 || rev.main > current || rev.sub < 0 {
                return Err(fail("revision out of range"));
            }
            let history = keys.entry(change.key.clone()).or_default();
            let previous = history.latest();
            if previous.is_some_and(|last| last.rev >= rev) {
                return Err(fail("changes of a key out of revision order"));
            }
            let state = match change.value {
                None => State::Tombstone,
                Some(v) => {
                    let expected_version = match previous {
                        Some(Entry {
                            state: State::Live(live),
                            ..
                        }) => live.version + 1,
                        // After a deletion, or as the oldest change kept by a compaction,
                        // any version counts as the start.
                        _ => v.version,
                    };
                    if v.version < 1 || v.version != expected_version {
                        return Err(fail("version does not follow the previous one"));
                    }
                    if v.create_revision < 1 || v.create_revision > rev.main {
                        return Err(fail("create revision after the change"));
                    }
                    State::Live(Live {
                        create_revision: v.create_revision,
                        version: v.version,
                        lease: v.lease,
                        value: v.value,
                    })
                }
            };
            let entry = Entry { rev, state };
            stored_bytes += entry_size(&entry) + change.key.len() as u64;
            if by_revision.insert(rev, change.key.clone()).is_some() {
                return Err(fail("two changes share a revision"));
            }
            history.push(entry);
        }
        let mut store = Store {
            current,
            compacted,
            keys: keys.into_iter().collect(),
            by_revision: by_revision.into_iter().collect(),
            stored_bytes,
            // Alarms and the rest start empty: they belong to the old cluster.
            ..Store::new()
        };
        for lease in leases {
            let fail = |problem| ImportError {
                key: Bytes::new(),
                revision: Revision::new(lease.id, 0),
                problem,
            };
            if lease.id == 0 {
                return Err(fail("lease ID 0"));
            }
            if !(1..=crate::MAX_LEASE_TTL).contains(&lease.ttl) || lease.remaining_ms < 0 {
                return Err(fail("lease TTL out of range"));
            }
            let full_ms = lease.ttl.saturating_mul(1000);
            let remaining_ms = match lease.remaining_ms {
                0 => full_ms,
                left => left.min(full_ms),
            };
            let terms = crate::lease::Terms {
                ttl: lease.ttl,
                remaining_ms,
                renewals: 0,
            };
            if !store.leases.insert(lease.id, terms) {
                return Err(fail("two leases share an ID"));
            }
        }
        store.rebuild_lease_keys().map_err(|problem| ImportError {
            key: Bytes::new(),
            revision: Revision::new(current, 0),
            problem,
        })?;
        Ok(store)
    }

    /// The inverse of [`Store::import`]: every change still in the history (as compacted), in
    /// revision order, as an export to another store's format (an etcd backend) needs them.
    pub fn history(&self) -> Vec<ImportedChange> {
        self.by_revision
            .iter()
            .filter_map(|(rev, key)| {
                let history = self.keys.get(key)?;
                // Not what a compaction in progress has yet to drop.
                if !history.survives_compaction(*rev, self.compacted) {
                    return None;
                }
                let entry = history.entry_exactly_at(*rev)?;
                let value = match &entry.state {
                    State::Tombstone => None,
                    State::Live(live) => Some(ImportedValue {
                        create_revision: live.create_revision,
                        version: live.version,
                        lease: live.lease,
                        value: live.value.clone(),
                    }),
                };
                Some(ImportedChange {
                    key: key.clone(),
                    revision: *rev,
                    value,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
    use proto::raftkvpb::{internal_request::Request, InternalRequest};

    fn put(store: &mut Store, key: &'static str, value: &'static str) {
        store
            .apply(&InternalRequest {
                auth: None,
                request: Some(Request::Put(PutRequest {
                    key: Bytes::from_static(key.as_bytes()),
                    value: Bytes::from_static(value.as_bytes()),
                    ..Default::default()
                })),
            })
            .unwrap();
    }

    fn change(
        key: &'static str,
        main: i64,
        value: Option<(i64, i64, &'static str)>,
    ) -> ImportedChange {
        ImportedChange {
            key: Bytes::from_static(key.as_bytes()),
            revision: Revision::new(main, 0),
            value: value.map(|(create_revision, version, v)| ImportedValue {
                create_revision,
                version,
                lease: 0,
                value: Bytes::from_static(v.as_bytes()),
            }),
        }
    }

    /// Revisions 2-5: a=1, b=1, a=2, b deleted.
    fn put_put_put_delete() -> Store {
        let mut applied = Store::new();
        put(&mut applied, "a", "1");
        put(&mut applied, "b", "1");
        put(&mut applied, "a", "2");
        applied
            .apply(&InternalRequest {
                auth: None,
                request: Some(Request::DeleteRange(DeleteRangeRequest {
                    key: Bytes::from_static(b"b"),
                    ..Default::default()
                })),
            })
            .unwrap();
        applied
    }

    #[test]
    fn an_imported_history_equals_the_store_that_applied_it() {
        let applied = put_put_put_delete();
        let imported = Store::import(
            5,
            -1,
            vec![
                change("b", 3, Some((3, 1, "1"))),
                change("a", 2, Some((2, 1, "1"))),
                change("a", 4, Some((2, 2, "2"))),
                change("b", 5, None),
            ],
            [],
        )
        .unwrap();
        assert!(imported == applied);
        let all = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        };
        assert_eq!(imported.range(&all).unwrap(), applied.range(&all).unwrap());
        assert_eq!(imported.snapshot(), applied.snapshot());
    }

    #[test]
    fn history_is_what_import_takes_back() {
        let applied = put_put_put_delete();
        let history = applied.history();
        assert_eq!(
            history,
            vec![
                change("a", 2, Some((2, 1, "1"))),
                change("b", 3, Some((3, 1, "1"))),
                change("a", 4, Some((2, 2, "2"))),
                change("b", 5, None),
            ]
        );
        let back = Store::import(5, -1, history, []).unwrap();
        assert!(back == applied);
    }

    #[test]
    fn inconsistent_histories_are_refused_with_the_key_named() {
        let cases: Vec<(Vec<ImportedChange>, &str)> = vec![
            (
                vec![change("a", 9, Some((9, 1, "x")))],
                "revision out of range",
            ),
            (
                vec![
                    change("a", 3, Some((3, 1, "x"))),
                    change("a", 2, Some((2, 1, "y"))),
                ],
                "changes of a key out of revision order",
            ),
            (
                vec![
                    change("a", 2, Some((2, 1, "x"))),
                    change("b", 2, Some((2, 1, "y"))),
                ],
                "two changes share a revision",
            ),
            (
                vec![
                    change("a", 2, Some((2, 1, "x"))),
                    change("a", 3, Some((2, 3, "y"))),
                ],
                "version does not follow the previous one",
            ),
            (
                vec![change("a", 2, Some((4, 1, "x")))],
                "create revision after the change",
            ),
            (vec![change("", 2, Some((2, 1, "x")))], "empty key"),
        ];
        for (changes, problem) in cases {
            let err = Store::import(5, -1, changes, []).unwrap_err();
            assert_eq!(err.problem, problem);
        }
        assert_eq!(
            Store::import(5, 6, vec![], []).unwrap_err().problem,
            "revision counters out of range"
        );
    }

    #[test]
    fn imported_leases_hold_their_keys_and_bad_ones_are_refused() {
        let mut attached = change("a", 2, Some((2, 1, "x")));
        if let Some(v) = attached.value.as_mut() {
            v.lease = 7;
        }
        let lease = |id, ttl, remaining_ms| ImportedLease {
            id,
            ttl,
            remaining_ms,
        };
        let store = Store::import(2, -1, vec![attached.clone()], [lease(7, 60, 0)]).unwrap();
        let got = store.leases().get(7).unwrap();
        assert_eq!(
            got.remaining_ms, 60_000,
            "unknown remaining time: the full TTL"
        );
        assert_eq!(
            got.keys.iter().collect::<Vec<_>>(),
            [&Bytes::from_static(b"a")]
        );
        let err = Store::import(2, -1, vec![attached.clone()], []).unwrap_err();
        assert_eq!(
            err.problem,
            "a key is attached to a lease that does not exist"
        );
        let err = Store::import(2, -1, vec![], [lease(7, 60, 0), lease(7, 5, 0)]).unwrap_err();
        assert_eq!(err.problem, "two leases share an ID");
        let err = Store::import(2, -1, vec![], [lease(7, 0, 0)]).unwrap_err();
        assert_eq!(err.problem, "lease TTL out of range");
        let err = Store::import(2, -1, vec![], [lease(0, 5, 0)]).unwrap_err();
        assert_eq!(err.problem, "lease ID 0");
    }
}
