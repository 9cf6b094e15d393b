//! Key permissions as intervals, and the question "does the union of a user's granted
//! intervals cover this request's keys?" (etcd's unified range permissions).
//!
//! An etcd permission or request names one key (`range_end` empty), the keys
//! `[key, range_end)`, or every key from `key` on (`range_end` = `"\0"`). One key `k` is
//! the interval `[k, k+"\0")`, so every case is a half-open interval whose end may be
//! unbounded, and coverage is a sweep over the sorted intervals.

use bytes::Bytes;
use proto::authpb::permission::Type as PermType;
use proto::authpb::Permission;

/// A half-open key interval; `end == None` means "to the end of the key space".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInterval {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyInterval {
    /// The keys a request or permission with this `key` and `range_end` names.
    pub fn of(key: &[u8], range_end: &[u8]) -> KeyInterval {
        match range_end {
            [] => KeyInterval::single(key),
            [0] => KeyInterval {
                start: key.to_vec(),
                end: None,
            },
            // An end at or below the start names no key as a range; etcd still checks the
            // start key, so treat it as that one key.
            end if end <= key => KeyInterval::single(key),
            end => KeyInterval {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    fn single(key: &[u8]) -> KeyInterval {
        let mut end = key.to_vec();
        end.push(0);
        KeyInterval {
            start: key.to_vec(),
            end: Some(end),
        }
    }
}

/// Whether `wanted` lies inside the union of `granted`.
pub fn covered(granted: &[KeyInterval], wanted: &KeyInterval) -> bool {
    let mut sorted: Vec<&KeyInterval> = granted.iter().collect();
    sorted.sort_by(|a, b| a.start.cmp(&b.start));
    // `reached` is the end of the covered prefix of `wanted` so far.
    let mut reached: Vec<u8> = wanted.start.clone();
    for iv in sorted {
        if iv.start > reached {
            break;
        }
        match &iv.end {
            None => return true,
            Some(end) if *end > reached => reached = end.clone(),
            Some(_) => {}
        }
        if let Some(want_end) = &wanted.end {
            if reached >= *want_end {
                return true;
            }
        }
    }
    false
}

/// Whether a permission grants `want` (READ or WRITE).
pub fn grants(perm: &Permission, want: PermType) -> bool {
    let have = PermType::try_from(perm.perm_type).unwrap_or(PermType::Read);
    have == PermType::Readwrite || have == want
}

/// A permission as stored: etcd keeps a role's permissions sorted by key.
pub fn normalised(perm: &Permission) -> Permission {
    Permission {
        perm_type: perm.perm_type,
        key: Bytes::copy_from_slice(&perm.key),
        range_end: Bytes::copy_from_slice(&perm.range_end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(k: &str, e: &str) -> KeyInterval {
        KeyInterval::of(k.as_bytes(), e.as_bytes())
    }

    #[test]
    fn single_keys_ranges_and_open_ends() {
        let granted = vec![iv("foo", ""), iv("a", "c"), iv("k", "\0")];
        assert!(covered(&granted, &iv("foo", "")));
        assert!(!covered(&granted, &iv("fooo", "")));
        assert!(covered(&granted, &iv("b", "")));
        assert!(covered(&granted, &iv("a", "c")));
        assert!(!covered(&granted, &iv("a", "d")));
        assert!(covered(&granted, &iv("zzz", "")));
        assert!(covered(&granted, &iv("k", "\0")));
        assert!(!covered(&granted, &iv("j", "\0")));
        assert!(!covered(&[], &iv("a", "")));
    }

    #[test]
    fn adjacent_grants_cover_together() {
        let granted = vec![iv("b", "c"), iv("a", "b")];
        assert!(covered(&granted, &iv("a", "c")));
        let gap = vec![iv("a", "b"), iv("b\0", "c")];
        assert!(!covered(&gap, &iv("a", "c")));
    }
}
