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

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// A time on the lease clock (or a span of it) in nanoseconds: a `Duration` in 8 bytes
/// instead of 16, converted exactly for anything under 584 years (longer saturates, and
/// etcd's longest TTL is 285 years). Every decision compares the same values a `Duration`
/// would hold, so packing changes no expiry.
type Nanos = u64;

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One lease as this member's clock sees it: 32 bytes, 40 with its ID in the table. The
/// floor of an unlogged renewal (rare: only the leader's keep-alive fast path sets one)
/// lives in [`Lessor::floors`] instead of costing every lease 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracked {
    /// As the log set it (renewal, checkpoint). The lease runs out at
    /// `max(deadline, floor)`.
    deadline: Nanos,
    /// When the log last recorded how much was left (renewal or checkpoint).
    recorded_at: Nanos,
    /// The granted TTL; zero when not known yet (a lease restored or checkpointed before
    /// this member applied a grant or keep-alive of it).
    ttl: Nanos,
    renewals: u64,
}

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
/// `crates/mvcc/tests/lease_bytes.rs` counts both): a 40-byte slot in `leases` and a
/// 16-byte key in `by_end`, plus the tables' slack.
#[derive(Debug, Default, Clone)]
pub struct Lessor {
    leases: HashMap<i64, Tracked>,
    /// Promised by this member's keep-alive answers that the log has not caught up with
    /// (see [`Lessor::renewed_unlogged`]); only leases that got such an answer. A floor
    /// stays until its lease is removed, as nothing on this member may bring the lease's
    /// end before it.
    floors: HashMap<i64, Nanos>,
    /// (end, id) of every lease, so the expired ones are found without a scan.
    by_end: BTreeSet<(Nanos, i64)>,
}

impl Lessor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// When `t`, lease `id`'s entry, runs out: its deadline or its floor, the later.
    fn ends(&self, id: i64, t: &Tracked) -> Nanos {
        if self.floors.is_empty() {
            return t.deadline;
        }
        self.floors
            .get(&id)
            .map_or(t.deadline, |floor| t.deadline.max(*floor))
    }

    fn end_of(&self, id: i64) -> Option<Nanos> {
        self.leases.get(&id).map(|t| self.ends(id, t))
    }

    /// Puts lease `id` in `by_end` at its current end, after a change that may have moved
    /// it from `old_end`.
    fn reindex(&mut self, id: i64, old_end: Option<Nanos>) {
        let end = self.end_of(id);
        if end != old_end {
            if let Some(old) = old_end {
                self.by_end.remove(&(old, id));
            }
            if let Some(end) = end {
                self.by_end.insert((end, id));
            }
        }
    }

    /// Granted or kept alive (applied at `now`): `ttl` from now.
    pub fn renewed(&mut self, id: i64, renewals: u64, ttl: Duration, now: Duration) {
        let old_end = self.end_of(id);
        let (ttl, now) = (nanos(ttl), nanos(now));
        self.leases.insert(
            id,
            Tracked {
                deadline: now.saturating_add(ttl),
                recorded_at: now,
                ttl,
                renewals,
            },
        );
        self.reindex(id, old_end);
    }

    /// The leader answered a keep-alive of `id` at `now` before its entry is applied: the
    /// lease runs at least its TTL from now. Returns the granted TTL, or `None` (nothing
    /// changed) when the lease is unknown, its TTL is not known yet, or it already ran out
    /// (its revocation may be on its way: such a keep-alive must go through the log).
    pub fn renewed_unlogged(&mut self, id: i64, now: Duration) -> Option<Duration> {
        let t = *self.leases.get(&id)?;
        let end = self.ends(id, &t);
        let now = nanos(now);
        if t.ttl == 0 || end <= now {
            return None;
        }
        let floor = self.floors.entry(id).or_default();
        *floor = (*floor).max(now.saturating_add(t.ttl));
        self.reindex(id, Some(end));
        Some(Duration::from_nanos(t.ttl))
    }

    /// The leader recorded that at most `remaining` was left (applied at `now`). Never
    /// moves a deadline later: the leader's view was taken before we applied it.
    pub fn checkpointed(&mut self, id: i64, renewals: u64, remaining: Duration, now: Duration) {
        let old_end = self.end_of(id);
        let now = nanos(now);
        let at_most = now.saturating_add(nanos(remaining));
        let (deadline, ttl) = match self.leases.get(&id) {
            Some(t) => (t.deadline.min(at_most), t.ttl),
            None => (at_most, 0),
        };
        self.leases.insert(
            id,
            Tracked {
                deadline,
                recorded_at: now,
                ttl,
                renewals,
            },
        );
        self.reindex(id, old_end);
    }

    pub fn removed(&mut self, id: i64) {
        let old_end = self.end_of(id);
        self.leases.remove(&id);
        self.floors.remove(&id);
        self.reindex(id, old_end);
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
            let deadline = now.saturating_add(nanos(remaining));
            let old = self.leases.insert(
                at.id,
                Tracked {
                    deadline,
                    recorded_at: now,
                    ttl: nanos(ttl),
                    renewals: at.renewals,
                },
            );
            if let Some(old) = old {
                self.by_end.remove(&(old.deadline, at.id));
            }
            self.by_end.insert((deadline, at.id));
        }
    }

    /// Time left on lease `id`, or `None` if this member does not know it.
    pub fn remaining(&self, id: i64, now: Duration) -> Option<Duration> {
        self.end_of(id)
            .map(|end| Duration::from_nanos(end.saturating_sub(nanos(now))))
    }

    /// Up to `max` leases whose deadline is at or before `now`, earliest first.
    pub fn expired(&self, now: Duration, max: usize) -> Vec<LeaseAt> {
        let now = nanos(now);
        self.by_end
            .iter()
            .take_while(|(end, _)| *end <= now)
            .take(max)
            .filter_map(|(_, id)| {
                self.leases.get(id).map(|t| LeaseAt {
                    id: *id,
                    renewals: t.renewals,
                })
            })
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
        let mut due: Vec<(LeaseAt, Duration)> = self
            .leases
            .iter()
            .filter_map(|(id, t)| {
                let end = self.ends(*id, t);
                (end > now && now.saturating_sub(t.recorded_at) >= interval).then(|| {
                    (
                        LeaseAt {
                            id: *id,
                            renewals: t.renewals,
                        },
                        Duration::from_nanos(end - now),
                    )
                })
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
}
