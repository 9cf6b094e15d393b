//! Range reads: key selection at a revision, revision filters, sorting, limit, count.

use std::cmp::Ordering;

use proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    RangeRequest, RangeResponse, ResponseHeader,
};
use proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::key_range::KeyRange;
use crate::store::Store;

impl Store {
    /// Checks `req.revision` against a read view at `view_rev` (the current revision, or the
    /// revision a txn is writing) and the compaction point; returns the revision to read at.
    pub(crate) fn resolve_read_revision(
        &self,
        requested: i64,
        view_rev: i64,
    ) -> Result<i64, MvccError> {
        if requested > view_rev {
            return Err(MvccError::FutureRevision);
        }
        let rev = if requested <= 0 { view_rev } else { requested };
        if rev < self.compacted {
            return Err(MvccError::Compacted);
        }
        Ok(rev)
    }

    /// Serves a Range against the view at `view_rev`. Mirrors etcd 3.4's order of work:
    /// fetch (limit+1 rows when neither sorting nor filters are asked for), filter, sort,
    /// truncate to `limit`, and count every key in the range regardless of the rest.
    pub(crate) fn range_at_view(
        &self,
        req: &RangeRequest,
        view_rev: i64,
    ) -> Result<RangeResponse, MvccError> {
        let rev = self.resolve_read_revision(req.revision, view_rev)?;
        // etcd 3.4 never validates `sort_order`: a value outside the enum is "some order"
        // when deciding what to fetch (everything, like ASCEND/DESCEND) and no order when
        // sorting, so the keys come back in key order. Observed on etcd 3.4.23; clients
        // built against a newer enum get answers rather than errors.
        let sort_order = SortOrder::try_from(req.sort_order).ok();
        let sort_target =
            SortTarget::try_from(req.sort_target).map_err(|_| MvccError::InvalidSortOption)?;

        let has_filters = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd decides on the raw sort_order: a non-KEY target with order NONE is sorted
        // ascending below but still fetched with the limit, so it sorts only the first
        // limit+1 keys. We reproduce that.
        let fetch_limit =
            if req.sort_order != SortOrder::None as i32 || has_filters || req.limit <= 0 {
                usize::MAX
            } else {
                usize::try_from(req.limit)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1)
            };

        let (mut kvs, count) = self.collect(
            KeyRange::new(&req.key, &req.range_end),
            rev,
            fetch_limit,
            req.count_only,
        );

        if has_filters {
            kvs.retain(|kv| passes_revision_filters(req, kv));
        }
        let effective_order = match (sort_target, sort_order) {
            (_, None) => SortOrder::None,
            (SortTarget::Key, Some(order)) => order,
            (_, Some(SortOrder::None)) => SortOrder::Ascend,
            (_, Some(order)) => order,
        };
        sort_kvs(&mut kvs, sort_target, effective_order);

        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Default::default();
            }
        }
        Ok(RangeResponse {
            header: Some(ResponseHeader {
                revision: view_rev,
                ..Default::default()
            }),
            kvs,
            more,
            count: i64::try_from(count).unwrap_or(i64::MAX),
        })
    }

    /// The keys of `range` alive at `rev`: at most `limit` of them materialised (none when
    /// `count_only`), and the number of all of them.
    pub(crate) fn collect(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        limit: usize,
        count_only: bool,
    ) -> (Vec<KeyValue>, usize) {
        let Some(bounds) = range.bounds() else {
            return (Vec::new(), 0);
        };
        let mut kvs = Vec::new();
        let mut count = 0;
        for (key, history) in self.keys.range::<_, [u8]>(bounds) {
            let Some((at, live)) = history.live_at(rev) else {
                continue;
            };
            count += 1;
            if !count_only && kvs.len() < limit {
                kvs.push(crate::store::key_value(key, at, live));
            }
        }
        (kvs, count)
    }
}

fn passes_revision_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
        || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
        || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
        || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
}

/// Sorts stably, so keys with equal targets stay in ascending key order for both
/// directions (etcd's sort is not stable; for small results it behaves the same).
fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    let compare: fn(&KeyValue, &KeyValue) -> Ordering = match target {
        SortTarget::Key => |a, b| a.key.cmp(&b.key),
        SortTarget::Version => |a, b| a.version.cmp(&b.version),
        SortTarget::Create => |a, b| a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => |a, b| a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => |a, b| a.value.cmp(&b.value),
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(compare),
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
    }
}
