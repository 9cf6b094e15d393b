//! Liveness of expiry (the liveness phase): once everything is healed and clients stopped
//! keeping leases alive, every lease is revoked by
//!
//! ```text
//! max(E + R, A + TTL) + slack
//! ```
//!
//! where `R` is the remaining time the log last recorded for it before healing (its last
//! renewal or checkpoint: every member that restarts counts down from `R`, the
//! documented bound after a restart with the checkpoint's staleness already in it), `E`
//! the time the current leader was first seen (the election bound: the bound moves with
//! each leader change, as `max(D + δ, E)` in docs/lease.md), `A` the time a renewal
//! still in flight at healing was first applied, and `slack` the scan interval, the
//! barrier and the commit of the expiry entry.

use std::collections::BTreeMap;

use super::Violation;

const NAME: &str = "lease-liveness";

#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Counted from the leader's election.
    after_leader: u64,
    /// Not before this (a renewal applied after healing).
    not_before: u64,
}

#[derive(Debug)]
pub struct LeaseLiveness {
    slack: u64,
    pending: BTreeMap<i64, Pending>,
    leader_since: Option<u64>,
}

impl LeaseLiveness {
    /// At healing: every lease that exists, with the remaining time the log recorded.
    pub fn start(recorded: impl IntoIterator<Item = (i64, u64)>, slack: u64) -> LeaseLiveness {
        LeaseLiveness {
            slack,
            pending: recorded
                .into_iter()
                .map(|(id, r)| {
                    (
                        id,
                        Pending {
                            after_leader: r,
                            not_before: 0,
                        },
                    )
                })
                .collect(),
            leader_since: None,
        }
    }

    /// A (new) leader was first seen at `at`.
    pub fn observe_leader_change(&mut self, at: u64) {
        self.leader_since = Some(at);
    }

    /// Lease `id` was granted or renewed (first applied) at `at` for `ttl`.
    ///
    /// The log now records `ttl` as its remaining time, so a leader that applies the
    /// renewal only after its election (one elected after the member that applied it
    /// first removed itself: membership seeds 18738 and 8916) counts the full `ttl` from
    /// its own apply: the election bound `E + ttl` holds for it as `E + R` does for a
    /// renewal recorded before healing.
    pub fn observe_renewed(&mut self, id: i64, ttl: u64, at: u64) {
        let p = self.pending.entry(id).or_insert(Pending {
            after_leader: 0,
            not_before: 0,
        });
        p.not_before = p.not_before.max(at + ttl);
        p.after_leader = p.after_leader.max(ttl);
    }

    pub fn observe_revoked(&mut self, id: i64) {
        self.pending.remove(&id);
    }

    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }

    fn bound(&self, p: &Pending) -> Option<u64> {
        let e = self.leader_since?;
        Some((e + p.after_leader).max(p.not_before) + self.slack)
    }

    /// At `now`: is some lease still there past its bound?
    pub fn check(&self, now: u64) -> Result<(), Violation> {
        for (id, p) in &self.pending {
            if let Some(bound) = self.bound(p) {
                if now > bound {
                    return Err(Violation::new(
                        NAME,
                        format!(
                            "lease {id} not revoked by {bound} (leader since {:?}, recorded remaining {}, renewed to {}, slack {})",
                            self.leader_since, p.after_leader, p.not_before, self.slack
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_outliving_its_bound_is_caught() {
        let mut c = LeaseLiveness::start([(1, 100), (2, 300)], 10);
        c.check(10_000).unwrap(); // no leader yet: no clock runs for the bound
        c.observe_leader_change(1000);
        c.check(1110).unwrap();
        c.check(1111).unwrap_err();
        c.observe_revoked(1);
        c.check(1200).unwrap();
        // A renewal that landed after healing moves the bound.
        c.observe_renewed(2, 300, 1100);
        c.check(1409).unwrap();
        c.check(1411).unwrap_err();
        c.observe_revoked(2);
        assert!(c.done());
    }

    #[test]
    fn a_renewal_applied_after_healing_counts_its_full_ttl_from_a_later_election() {
        // Recorded remaining 100 at healing, renewed for 300 at 1100; a leader elected at
        // 2000 (after the member that applied the renewal first left) counts 300 from there.
        let mut c = LeaseLiveness::start([(1, 100)], 10);
        c.observe_leader_change(1000);
        c.observe_renewed(1, 300, 1100);
        c.observe_leader_change(2000);
        c.check(2310).unwrap();
        c.check(2311).unwrap_err();
    }

    #[test]
    fn a_leader_change_moves_the_bound() {
        let mut c = LeaseLiveness::start([(1, 100)], 10);
        c.observe_leader_change(1000);
        c.observe_leader_change(1500);
        c.check(1610).unwrap();
        c.check(1611).unwrap_err();
    }
}
