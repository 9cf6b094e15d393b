//! `--quota-backend-bytes`: the storage quota, checked before a write is proposed.
//!
//! As etcd's quota check: a put or a txn that puts is refused with `etcdserver: mvcc:
//! database space exceeded` when the store's size plus the request's cost
//! ([`mvcc::quota_cost`]) would reach the quota, and the member proposes a NOSPACE alarm
//! for itself. Once the alarm is applied, every member refuses such writes from the log
//! too (`mvcc::alarm`), until an operator compacts and disarms. The size is the store's
//! [`mvcc::Store::approximate_size`]: keys, values and history held, which compaction
//! reduces at once (there is no file to defragment).

use proto::raftkvpb::internal_request::Request;

/// etcd's default quota (2 GiB), used when the flag is 0 or absent.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The configured quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// `None`: no quota (a negative flag, as etcd's passthrough quota).
    limit: Option<u64>,
}

impl Quota {
    /// From `--quota-backend-bytes`: absent or 0 is the 2 GiB default, negative disables.
    pub fn from_flag(flag: Option<i64>) -> Quota {
        let limit = match flag {
            None | Some(0) => Some(DEFAULT_QUOTA_BYTES),
            Some(n) if n < 0 => None,
            Some(n) => Some(n as u64),
        };
        Quota { limit }
    }

    /// The quota in bytes (Status's `dbSizeQuota`, the metrics gauge); 0 when disabled.
    pub fn bytes(&self) -> u64 {
        self.limit.unwrap_or(0)
    }

    /// Whether `request` fits: its cost added to `size` stays below the quota. Requests
    /// that cost nothing (deletes, compactions) always fit.
    pub fn admits(&self, size: u64, request: &Request) -> bool {
        let cost = mvcc::quota_cost(request);
        match self.limit {
            None => true,
            Some(_) if cost == 0 => true,
            Some(limit) => size.saturating_add(cost) < limit,
        }
    }
}

impl Default for Quota {
    fn default() -> Quota {
        Quota::from_flag(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn put(value: usize) -> Request {
        Request::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![b'v'; value]),
            ..Default::default()
        })
    }

    #[test]
    fn flag_values_mean_what_they_mean_to_etcd() {
        assert_eq!(Quota::from_flag(None).bytes(), DEFAULT_QUOTA_BYTES);
        assert_eq!(Quota::from_flag(Some(0)).bytes(), DEFAULT_QUOTA_BYTES);
        assert_eq!(Quota::from_flag(Some(4096)).bytes(), 4096);
        let off = Quota::from_flag(Some(-1));
        assert_eq!(off.bytes(), 0);
        assert!(off.admits(u64::MAX, &put(10)));
    }

    #[test]
    fn admits_below_the_quota_only() {
        let q = Quota::from_flag(Some(1000));
        // cost = 256 + 1 + value
        assert!(q.admits(0, &put(100)));
        assert!(q.admits(642, &put(100))); // 642 + 357 = 999 < 1000
        assert!(!q.admits(643, &put(100)));
        let delete = Request::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        });
        assert!(q.admits(u64::MAX, &delete));
    }
}
