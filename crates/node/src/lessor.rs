//! The lease clock: when each lease runs out, by this member's clock. Pure: time comes in as
//! an argument, and nothing here touches the log.
//!
//! Every member runs one, fed with the lease changes its store applies (grant and keep-alive
//! = the full TTL from the moment of apply; a checkpoint = at most that much left). Only
//! the leader *acts* on it: it proposes the revocation of what ran out and checkpoints of
//! what is left (`crates/server/src/lease`). A follower never expires a lease.
//!
//! Because keep-alives go through the log, a member's deadline for a lease is set when it
//! applies the lease's last renewal, which happens after the leader committed it; so a new
//! leader's deadlines are never earlier than its predecessor's, and later only by how much
//! later it applied. A member that replays the log after a restart applies everything
//! "now": there a checkpoint bounds what a replayed renewal gives (`min`, below), so no
//! lease gets a fresh full TTL from a leader change or a restart beyond what
//! `checkpoint_interval` allows (docs/lease.md has the exact bound).
//!
//! The leader also answers keep-alives before their entry is applied (so they never wait
//! behind a slow apply): [`Lessor::renewed_unlogged`] records such a renewal as a *floor*
//! under the lease's deadline, which neither a checkpoint nor anything else on this member
//! brings forward, until the logged renewal (applied later) takes over.

use std::collections::hash_map::{Entry as MapEntry, HashMap, RandomState};
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::time::Duration;

use hashbrown::HashTable;

/// A time on the lease clock (or a span of it) in nanoseconds: a `Duration` in 8 bytes
/// instead of 16, converted exactly for anything under 584 years (longer saturates, and
/// etcd's longest TTL is 285 years). Every decision compares the same values a `Duration`
/// would hold, so packing changes no expiry.
type Nanos = u64;

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One lease as this member's clock sees it: 40 bytes, its ID included. The log's own
/// deadline of a lease with a floor (rare: only the leader's keep-alive fast path sets
/// one) lives in [`Lessor::floors`] instead of costing every lease 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracked {
    id: i64,
    /// When the lease runs out: the deadline the log set (renewal, checkpoint), or its
    /// floor if that is later.
    end: Nanos,
    /// When the log last recorded how much was left (renewal or checkpoint).
    recorded_at: Nanos,
    /// The granted TTL; zero when not known yet (a lease restored or checkpointed before
    /// this member applied a grant or keep-alive of it).
    ttl: Nanos,
    renewals: u64,
}

/// An unlogged renewal's promise (see [`Lessor::renewed_unlogged`]) and the deadline the
/// log set meanwhile: the lease ends at the later of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Floor {
    floor: Nanos,
    deadline: Nanos,
}

/// Leases per chunk of [`Lessor::chunks`] (40 KiB): the table grows a chunk at a time
/// rather than doubling, so at most one chunk is ever unused.
const CHUNK: usize = 1024;

/// Leases per block of [`Lessor::block_min`]: the expiry scan skips a block whose
/// earliest end is still to come.
const BLOCK: usize = 64;

/// A lease the leader decided about, with the renewal count it saw (the apply-side guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAt {
    pub id: i64,
    pub renewals: u64,
}

/// The apply-side guard of a leader's lease decision (an expiry or a checkpoint), shared
/// by the store (`mvcc::lease`) and the simulator's state machine so both apply the same
/// rule: the decision holds only when the log entry carrying it has the term its proposer
/// led in (`decided_term`; no entry has term 0), and the lease was not renewed since the
/// proposer looked (`decided_renewals`).
pub fn decision_holds(
    decided_term: u64,
    entry_term: u64,
    decided_renewals: u64,
    renewals: u64,
) -> bool {
    decided_term != 0 && decided_term == entry_term && decided_renewals == renewals
}

/// Deadlines of every lease this member knows.
///
/// Memory per lease (issue 14 budgets 128 B for this and the replicated table together;
/// `crates/mvcc/tests/lease_bytes.rs` counts both): one table, not two. The leases sit
/// densely in fixed-size chunks (a 40-byte [`Tracked`] each, at most one chunk spare);
/// the ID index holds only each lease's 4-byte slot number (5 bytes a bucket with its
/// control byte, at least 7/16 full); and instead of an ordered set of ends, the expiry
/// scan keeps the earliest end of every 64 slots (8 bytes per 64 leases) and looks only
/// into blocks whose earliest end has come. Its answer is the same as an ordered set's:
/// the leases that ran out, ordered by (end, ID), the first `max`.
#[derive(Debug, Default, Clone)]
pub struct Lessor {
    /// Slots `0..len` hold the leases, in no particular order (a removal moves the last
    /// lease into the freed slot).
    chunks: Vec<Box<[Tracked]>>,
    len: usize,
    /// Lease ID → slot.
    index: HashTable<u32>,
    hasher: RandomState,
    /// The earliest `end` in each block of `BLOCK` slots (blocks `0..ceil(len / BLOCK)`).
    block_min: Vec<Nanos>,
    /// Promised by this member's keep-alive answers that the log has not caught up with
    /// (see [`Lessor::renewed_unlogged`]); only leases that got such an answer. A floor
    /// stays until its lease is removed, as nothing on this member may bring the lease's
    /// end before it.
    floors: HashMap<i64, Floor>,
}

const EMPTY: Tracked = Tracked {
    id: 0,
    end: 0,
    recorded_at: 0,
    ttl: 0,
    renewals: 0,
};

impl Lessor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, slot: usize) -> &Tracked {
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn at_mut(&mut self, slot: usize) -> &mut Tracked {
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn slot_of(&self, id: i64) -> Option<usize> {
        let chunks = &self.chunks;
        self.index
            .find(self.hasher.hash_one(id), |&s| {
                chunks[s as usize / CHUNK][s as usize % CHUNK].id == id
            })
            .map(|&s| s as usize)
    }

    /// Adds a lease this member did not know.
    fn push(&mut self, t: Tracked) {
        let slot = self.len;
        if slot == self.chunks.len() * CHUNK {
            self.chunks.push(vec![EMPTY; CHUNK].into_boxed_slice());
        }
        *self.at_mut(slot) = t;
        self.len += 1;
        let slot32 = u32::try_from(slot).expect("fewer than 2^32 leases");
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(t.id), slot32, |&s| {
                hasher.hash_one(chunks[s as usize / CHUNK][s as usize % CHUNK].id)
            });
        if slot.is_multiple_of(BLOCK) {
            self.block_min.push(t.end);
        } else {
            let min = &mut self.block_min[slot / BLOCK];
            *min = (*min).min(t.end);
        }
    }

    /// The earliest end in block `b` again, after a change that may have raised it.
    fn recompute_block(&mut self, b: usize) {
        let slots = b * BLOCK..((b + 1) * BLOCK).min(self.len);
        self.block_min[b] = slots.map(|s| self.at(s).end).min().unwrap_or(Nanos::MAX);
    }

    /// Moves the lease in `slot` to `end`.
    fn set_end(&mut self, slot: usize, end: Nanos) {
        let t = self.at_mut(slot);
        let old = std::mem::replace(&mut t.end, end);
        let b = slot / BLOCK;
        if end < self.block_min[b] {
            self.block_min[b] = end;
        } else if old == self.block_min[b] && end > old {
            self.recompute_block(b);
        }
    }

    /// Forgets the lease in `slot`: the last lease moves into it.
    fn remove_slot(&mut self, slot: usize) {
        let id = self.at(slot).id;
        let hash = self.hasher.hash_one(id);
        if let Ok(found) = self.index.find_entry(hash, |&s| s as usize == slot) {
            found.remove();
        }
        let last = self.len - 1;
        if slot != last {
            let moved = *self.at(last);
            *self.at_mut(slot) = moved;
            let hash = self.hasher.hash_one(moved.id);
            if let Some(s) = self.index.find_mut(hash, |&s| s as usize == last) {
                *s = slot as u32;
            }
        }
        self.len = last;
        if last.is_multiple_of(BLOCK) {
            self.block_min.pop();
        } else {
            self.recompute_block(last / BLOCK);
        }
        if slot < last && slot / BLOCK != last / BLOCK {
            self.recompute_block(slot / BLOCK);
        }
        // Keep at most one spare chunk, and give back most of an index grown for many
        // more leases than are left (as a restore into new tables would).
        while self.chunks.len() * CHUNK >= self.len + 2 * CHUNK {
            self.chunks.pop();
        }
        if self.index.capacity() >= 1024 && self.len < self.index.capacity() / 8 {
            let (chunks, hasher) = (&self.chunks, &self.hasher);
            self.index.shrink_to(self.len * 2, |&s| {
                hasher.hash_one(chunks[s as usize / CHUNK][s as usize % CHUNK].id)
            });
            self.block_min.shrink_to(self.len.div_ceil(BLOCK) * 2);
        }
    }

    /// Granted or kept alive (applied at `now`): `ttl` from now.
    pub fn renewed(&mut self, id: i64, renewals: u64, ttl: Duration, now: Duration) {
        let (ttl, now) = (nanos(ttl), nanos(now));
        let deadline = now.saturating_add(ttl);
        let end = match self.floors.get_mut(&id) {
            Some(f) => {
                f.deadline = deadline;
                deadline.max(f.floor)
            }
            None => deadline,
        };
        match self.slot_of(id) {
            Some(slot) => {
                let t = self.at_mut(slot);
                t.recorded_at = now;
                t.ttl = ttl;
                t.renewals = renewals;
                self.set_end(slot, end);
            }
            None => self.push(Tracked {
                id,
                end,
                recorded_at: now,
                ttl,
                renewals,
            }),
        }
    }

    /// The leader answered a keep-alive of `id` at `now` before its entry is applied: the
    /// lease runs at least its TTL from now. Returns the granted TTL, or `None` (nothing
    /// changed) when the lease is unknown, its TTL is not known yet, or it already ran out
    /// (its revocation may be on its way: such a keep-alive must go through the log).
    pub fn renewed_unlogged(&mut self, id: i64, now: Duration) -> Option<Duration> {
        let slot = self.slot_of(id)?;
        let t = *self.at(slot);
        let now = nanos(now);
        if t.ttl == 0 || t.end <= now {
            return None;
        }
        let floor = now.saturating_add(t.ttl);
        let end = match self.floors.entry(id) {
            MapEntry::Occupied(mut f) => {
                let f = f.get_mut();
                f.floor = f.floor.max(floor);
                f.deadline.max(f.floor)
            }
            MapEntry::Vacant(v) => {
                // Without a floor, the end is the log's deadline.
                v.insert(Floor {
                    floor,
                    deadline: t.end,
                });
                t.end.max(floor)
            }
        };
        self.set_end(slot, end);
        Some(Duration::from_nanos(t.ttl))
    }

    /// The leader recorded that at most `remaining` was left (applied at `now`). Never
    /// moves a deadline later: the leader's view was taken before we applied it.
    pub fn checkpointed(&mut self, id: i64, renewals: u64, remaining: Duration, now: Duration) {
        let now = nanos(now);
        let at_most = now.saturating_add(nanos(remaining));
        let Some(slot) = self.slot_of(id) else {
            // No floor without a lease.
            self.push(Tracked {
                id,
                end: at_most,
                recorded_at: now,
                ttl: 0,
                renewals,
            });
            return;
        };
        let end = match self.floors.get_mut(&id) {
            Some(f) => {
                f.deadline = f.deadline.min(at_most);
                f.deadline.max(f.floor)
            }
            None => self.at(slot).end.min(at_most),
        };
        let t = self.at_mut(slot);
        t.recorded_at = now;
        t.renewals = renewals;
        self.set_end(slot, end);
    }

    pub fn removed(&mut self, id: i64) {
        self.floors.remove(&id);
        if let Some(slot) = self.slot_of(id) {
            self.remove_slot(slot);
        }
    }

    /// Forget everything and start from a restored state: each lease has `remaining` left
    /// from `now` (its last checkpointed or renewed value) and was granted `ttl`.
    pub fn reset(
        &mut self,
        leases: impl IntoIterator<Item = (LeaseAt, Duration, Duration)>,
        now: Duration,
    ) {
        // New tables rather than cleared ones: a restore after a big table must not keep
        // its capacity.
        *self = Lessor::new();
        let now = nanos(now);
        for (at, remaining, ttl) in leases {
            let t = Tracked {
                id: at.id,
                end: now.saturating_add(nanos(remaining)),
                recorded_at: now,
                ttl: nanos(ttl),
                renewals: at.renewals,
            };
            match self.slot_of(at.id) {
                Some(slot) => {
                    // Listed twice: the later one counts, as a map insert would.
                    let old_end = self.at(slot).end;
                    *self.at_mut(slot) = Tracked { end: old_end, ..t };
                    self.set_end(slot, t.end);
                }
                None => self.push(t),
            }
        }
    }

    /// Time left on lease `id`, or `None` if this member does not know it.
    pub fn remaining(&self, id: i64, now: Duration) -> Option<Duration> {
        self.slot_of(id)
            .map(|slot| Duration::from_nanos(self.at(slot).end.saturating_sub(nanos(now))))
    }

    /// Whether some lease's end is at or before `now`. Stops at the first one: the leader
    /// asks this every scan, and with a million leases run out a full scan per ask was a
    /// good part of a mass expiry's time.
    pub fn any_expired(&self, now: Duration) -> bool {
        let now = nanos(now);
        self.block_min.iter().enumerate().any(|(b, &min)| {
            min <= now
                && (b * BLOCK..((b + 1) * BLOCK).min(self.len)).any(|s| self.at(s).end <= now)
        })
    }

    /// The renewals seen of lease `id` (what a decision about it names), or `None` if
    /// this member does not know it.
    pub fn renewals(&self, id: i64) -> Option<u64> {
        self.slot_of(id).map(|slot| self.at(slot).renewals)
    }

    /// Up to `max` leases whose end is at or before `now`, earliest first (ties by ID).
    pub fn expired(&self, now: Duration, max: usize) -> Vec<LeaseAt> {
        let now = nanos(now);
        if max == 0 {
            return Vec::new();
        }
        // The `max` earliest so far, the latest of them on top.
        let mut first: BinaryHeap<(Nanos, i64, u64)> = BinaryHeap::new();
        for (b, &min) in self.block_min.iter().enumerate() {
            if min > now {
                continue;
            }
            for slot in b * BLOCK..((b + 1) * BLOCK).min(self.len) {
                let t = self.at(slot);
                if t.end > now {
                    continue;
                }
                let key = (t.end, t.id, t.renewals);
                if first.len() < max {
                    first.push(key);
                } else if first
                    .peek()
                    .is_some_and(|top| (key.0, key.1) < (top.0, top.1))
                {
                    first.pop();
                    first.push(key);
                }
            }
        }
        first
            .into_sorted_vec()
            .into_iter()
            .map(|(_, id, renewals)| LeaseAt { id, renewals })
            .collect()
    }

    /// Up to `max` leases whose remaining time the log last recorded `interval` or longer
    /// ago, with what is left now: what a leader should checkpoint.
    pub fn due_checkpoints(
        &self,
        now: Duration,
        interval: Duration,
        max: usize,
    ) -> Vec<(LeaseAt, Duration)> {
        let (now, interval) = (nanos(now), nanos(interval));
        let mut due: Vec<(LeaseAt, Duration)> = (0..self.len)
            .map(|slot| self.at(slot))
            .filter(|t| t.end > now && now.saturating_sub(t.recorded_at) >= interval)
            .map(|t| {
                (
                    LeaseAt {
                        id: t.id,
                        renewals: t.renewals,
                    },
                    Duration::from_nanos(t.end - now),
                )
            })
            .collect();
        due.sort_by_key(|(at, _)| at.id);
        due.truncate(max);
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn ids(v: &[LeaseAt]) -> Vec<i64> {
        v.iter().map(|a| a.id).collect()
    }

    #[test]
    fn a_decision_holds_only_in_its_term_and_before_a_renewal() {
        assert!(decision_holds(3, 3, 5, 5));
        assert!(!decision_holds(3, 4, 5, 5), "carried into a later term");
        assert!(!decision_holds(3, 3, 5, 6), "renewed since");
        assert!(!decision_holds(0, 0, 0, 0), "no entry has term 0");
    }

    #[test]
    fn a_lease_expires_at_its_ttl_after_the_last_renewal() {
        let mut l = Lessor::new();
        l.renewed(1, 0, s(10), s(0));
        l.renewed(2, 0, s(5), s(0));
        assert!(l.expired(s(4), 10).is_empty());
        assert_eq!(ids(&l.expired(s(5), 10)), [2]);
        l.renewed(1, 1, s(10), s(8));
        assert_eq!(ids(&l.expired(s(17), 10)), [2]);
        let both = l.expired(s(18), 10);
        assert_eq!(ids(&both), [2, 1]);
        assert_eq!(both[1].renewals, 1);
        assert_eq!(l.remaining(1, s(12)), Some(s(6)));
        l.removed(2);
        assert_eq!(ids(&l.expired(s(100), 10)), [1]);
        assert_eq!(l.remaining(2, s(0)), None);
    }

    #[test]
    fn a_checkpoint_only_ever_brings_a_deadline_forward() {
        let mut l = Lessor::new();
        // A member replaying the log after a restart applies the grant and the later
        // checkpoint at the same moment: the checkpoint wins.
        l.renewed(1, 0, s(60), s(100));
        l.checkpointed(1, 0, s(7), s(100));
        assert_eq!(l.remaining(1, s(100)), Some(s(7)));
        // A checkpoint that says more than we think is left changes nothing.
        l.checkpointed(1, 0, s(50), s(101));
        assert_eq!(l.remaining(1, s(101)), Some(s(6)));
        // Unknown so far (restored state): taken as is.
        l.checkpointed(2, 3, s(4), s(101));
        assert_eq!(l.remaining(2, s(101)), Some(s(4)));
    }

    #[test]
    fn checkpoints_are_due_once_per_interval_per_lease() {
        let mut l = Lessor::new();
        l.renewed(1, 0, s(60), s(0));
        l.renewed(2, 0, s(60), s(3));
        assert!(l.due_checkpoints(s(4), s(5), 10).is_empty());
        let due = l.due_checkpoints(s(5), s(5), 10);
        assert_eq!(due, vec![(LeaseAt { id: 1, renewals: 0 }, s(55))]);
        l.checkpointed(1, 0, s(55), s(5));
        assert_eq!(l.due_checkpoints(s(8), s(5), 10)[0].0.id, 2);
        assert_eq!(l.due_checkpoints(s(20), s(5), 1).len(), 1);
        // Expired leases are revoked, not checkpointed.
        assert!(l.due_checkpoints(s(70), s(5), 10).is_empty());
    }

    #[test]
    fn an_unlogged_renewal_holds_the_deadline_until_the_log_catches_up() {
        let mut l = Lessor::new();
        l.renewed(1, 0, s(10), s(0));
        // Answered at 8 s: runs to 18 s at least.
        assert_eq!(l.renewed_unlogged(1, s(8)), Some(s(10)));
        assert!(l.expired(s(17), 10).is_empty());
        // A checkpoint decided before that answer does not bring it forward.
        l.checkpointed(1, 0, s(1), s(9));
        assert!(l.expired(s(17), 10).is_empty());
        assert_eq!(l.remaining(1, s(9)), Some(s(9)));
        assert_eq!(ids(&l.expired(s(18), 10)), [1]);
        // The logged renewal, applied later, goes beyond the floor.
        l.renewed(1, 1, s(10), s(12));
        assert_eq!(l.remaining(1, s(12)), Some(s(10)));
        // Too late, unknown, or a TTL not known yet: the log must decide.
        assert_eq!(l.renewed_unlogged(1, s(22)), None);
        assert_eq!(l.renewed_unlogged(2, s(0)), None);
        l.checkpointed(3, 0, s(5), s(0));
        assert_eq!(l.renewed_unlogged(3, s(1)), None);
        l.removed(1);
        assert_eq!(l.remaining(1, s(0)), None);
    }

    #[test]
    fn a_floor_goes_with_its_lease() {
        let mut l = Lessor::new();
        l.renewed(1, 0, s(10), s(0));
        assert_eq!(l.renewed_unlogged(1, s(5)), Some(s(10)));
        assert_eq!(l.remaining(1, s(5)), Some(s(10)));
        l.removed(1);
        // Granted again under the same ID: the old promise is gone with the old lease.
        l.renewed(1, 0, s(3), s(6));
        assert_eq!(l.remaining(1, s(6)), Some(s(3)));
        assert_eq!(ids(&l.expired(s(9), 10)), [1]);
    }

    #[test]
    fn times_keep_every_nanosecond_and_saturate_past_the_range() {
        let mut l = Lessor::new();
        let ns = Duration::from_nanos;
        l.renewed(1, 0, ns(1_000), ns(7));
        assert!(l.expired(ns(1_006), 10).is_empty());
        assert_eq!(ids(&l.expired(ns(1_007), 10)), [1]);
        assert_eq!(l.remaining(1, ns(500)), Some(ns(507)));
        // etcd's longest TTL (9e9 s) from a clock 400 years on: past u64 nanoseconds,
        // held at the end of the range rather than wrapped.
        let late = s(400 * 365 * 86_400);
        l.renewed(2, 0, s(9_000_000_000), late);
        assert_eq!(l.remaining(2, late), Some(ns(u64::MAX) - late));
        assert_eq!(ids(&l.expired(ns(u64::MAX), 10)), [1, 2]);
    }

    #[test]
    fn reset_starts_every_lease_from_its_recorded_remaining_time() {
        let mut l = Lessor::new();
        l.renewed(9, 0, s(1), s(0));
        l.reset(
            [
                (LeaseAt { id: 1, renewals: 2 }, s(3), s(10)),
                (LeaseAt { id: 2, renewals: 0 }, s(8), s(10)),
            ],
            s(50),
        );
        assert_eq!(l.len(), 2);
        assert_eq!(ids(&l.expired(s(53), 10)), [1]);
        assert_eq!(l.expired(s(53), 10)[0].renewals, 2);
        assert_eq!(ids(&l.expired(s(58), 10)), [1, 2]);
        assert_eq!(ids(&l.expired(s(58), 1)), [1]);
    }

    /// The lease clock as it was before the one-table layout (a map by ID and an ordered
    /// set of ends): what every answer of [`Lessor`] must equal.
    #[derive(Default)]
    struct Model {
        leases: std::collections::BTreeMap<i64, (Nanos, Nanos, Nanos, u64)>,
        floors: std::collections::BTreeMap<i64, Nanos>,
    }

    impl Model {
        fn end(&self, id: i64) -> Option<Nanos> {
            let (deadline, ..) = self.leases.get(&id)?;
            Some(
                self.floors
                    .get(&id)
                    .map_or(*deadline, |f| (*deadline).max(*f)),
            )
        }

        fn renewed(&mut self, id: i64, renewals: u64, ttl: Duration, now: Duration) {
            let (ttl, now) = (nanos(ttl), nanos(now));
            self.leases
                .insert(id, (now.saturating_add(ttl), now, ttl, renewals));
        }

        fn renewed_unlogged(&mut self, id: i64, now: Duration) -> Option<Duration> {
            let end = self.end(id)?;
            let ttl = self.leases[&id].2;
            let now = nanos(now);
            if ttl == 0 || end <= now {
                return None;
            }
            let floor = self.floors.entry(id).or_default();
            *floor = (*floor).max(now.saturating_add(ttl));
            Some(Duration::from_nanos(ttl))
        }

        fn checkpointed(&mut self, id: i64, renewals: u64, remaining: Duration, now: Duration) {
            let now = nanos(now);
            let at_most = now.saturating_add(nanos(remaining));
            let (deadline, ttl) = match self.leases.get(&id) {
                Some(t) => (t.0.min(at_most), t.2),
                None => (at_most, 0),
            };
            self.leases.insert(id, (deadline, now, ttl, renewals));
        }

        fn removed(&mut self, id: i64) {
            self.leases.remove(&id);
            self.floors.remove(&id);
        }

        fn expired(&self, now: Duration, max: usize) -> Vec<LeaseAt> {
            let now = nanos(now);
            let mut all: Vec<(Nanos, i64)> = self
                .leases
                .keys()
                .map(|id| (self.end(*id).unwrap(), *id))
                .filter(|(end, _)| *end <= now)
                .collect();
            all.sort();
            all.into_iter()
                .take(max)
                .map(|(_, id)| LeaseAt {
                    id,
                    renewals: self.leases[&id].3,
                })
                .collect()
        }

        fn due_checkpoints(&self, now: Duration, interval: Duration) -> Vec<(LeaseAt, Duration)> {
            let (now, interval) = (nanos(now), nanos(interval));
            self.leases
                .iter()
                .filter_map(|(id, t)| {
                    let end = self.end(*id).unwrap();
                    (end > now && now.saturating_sub(t.1) >= interval).then(|| {
                        (
                            LeaseAt {
                                id: *id,
                                renewals: t.3,
                            },
                            Duration::from_nanos(end - now),
                        )
                    })
                })
                .collect()
        }
    }

    /// Random operations on the one-table lease clock and on the model: every answer the
    /// same, across chunk and block boundaries, growth and shrinking, floors, restores.
    #[test]
    fn every_answer_equals_the_ordered_set_model() {
        let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..6u64 {
            let (mut l, mut m) = (Lessor::new(), Model::default());
            // Few IDs: leases come back under the same ID; many: the table grows past
            // several chunks and then shrinks.
            let ids = [50, 3_000, 9_000][round as usize % 3];
            let mut now_ms = 0u64;
            for step in 0..40_000u64 {
                now_ms += next(3);
                let now = Duration::from_millis(now_ms);
                let id = next(ids) as i64 - 10;
                let ms = |v: u64| Duration::from_millis(v);
                // Grow first, then churn, then drain.
                let phase = step * 3 / 40_000;
                match (phase, next(10)) {
                    (0, 0..=6) | (1, 0..=2) => {
                        let (ttl, r) = (ms(next(5_000)), next(4));
                        l.renewed(id, r, ttl, now);
                        m.renewed(id, r, ttl, now);
                    }
                    (_, 7) => assert_eq!(l.renewed_unlogged(id, now), m.renewed_unlogged(id, now)),
                    (_, 8) | (1, 3) => {
                        let (rem, r) = (ms(next(5_000)), next(4));
                        l.checkpointed(id, r, rem, now);
                        m.checkpointed(id, r, rem, now);
                    }
                    _ => {
                        l.removed(id);
                        m.removed(id);
                    }
                }
                if step % 97 == 0 {
                    let by =
                        Duration::from_millis(now_ms.saturating_sub(next(3_000)) + next(3_000));
                    for max in [1, 7, 100, usize::MAX] {
                        assert_eq!(l.expired(by, max), m.expired(by, max), "step {step}");
                    }
                    assert_eq!(
                        l.any_expired(by),
                        !m.expired(by, 1).is_empty(),
                        "step {step}"
                    );
                    let interval = ms(next(2_000));
                    let mut due = m.due_checkpoints(by, interval);
                    due.truncate(50);
                    assert_eq!(l.due_checkpoints(by, interval, 50), due);
                    assert_eq!(l.len(), m.leases.len());
                    let probe = next(ids) as i64 - 10;
                    assert_eq!(l.renewals(probe), m.leases.get(&probe).map(|t| t.3));
                    assert_eq!(
                        l.remaining(probe, by),
                        m.end(probe)
                            .map(|e| Duration::from_nanos(e.saturating_sub(nanos(by))))
                    );
                }
                if step == 30_000 && round >= 3 {
                    // A restore: the model restarts from the same listing.
                    let listing: Vec<_> = m
                        .leases
                        .iter()
                        .map(|(id, t)| {
                            (
                                LeaseAt {
                                    id: *id,
                                    renewals: t.3,
                                },
                                ms(next(4_000)),
                                Duration::from_nanos(t.2),
                            )
                        })
                        .collect();
                    l.reset(listing.clone(), now);
                    m = Model::default();
                    for (at, rem, ttl) in listing {
                        let n = nanos(now);
                        m.leases.insert(
                            at.id,
                            (n.saturating_add(nanos(rem)), n, nanos(ttl), at.renewals),
                        );
                    }
                }
            }
        }
    }
}
