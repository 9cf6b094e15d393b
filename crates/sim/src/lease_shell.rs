//! The simulator in the server's place for leases: it keeps each member's lease clock
//! (`node::Lessor`) from its applies at virtual time, lends it to the driver's lease
//! duties every tick, writes the driver's decisions as log entries, and feeds the lease
//! checkers what happened.

use std::time::Duration;

use node::LeaseDecision;
use raft::{Entry, NodeId};

use crate::checkers::lease_decisions::Decision;
use crate::checkers::LeaseLiveness;
use crate::cluster::{time, trace, Cluster, Sabotage};
use crate::leases::{LeaseApplied, LeaseChange, LeaseEntry, LeaseTable};

impl Cluster {
    fn ignores_checkpoints(&self) -> bool {
        self.config.sabotage == Some(Sabotage::LessorIgnoresCheckpoints)
    }

    /// The lease clock after the state machine was restored: each lease from its recorded
    /// remaining time, now.
    pub(crate) fn reset_lessor(&mut self, idx: usize) {
        let fresh = self.ignores_checkpoints();
        let now = time(self.now);
        let node = &mut self.nodes[idx];
        let state = node.sm.leases().clock_state(fresh);
        node.lessor.reset(state, now);
    }

    /// One apply's lease changes, at the current virtual time.
    pub(crate) fn feed_lessor(&mut self, idx: usize, changes: &[LeaseChange]) {
        let ignore_checkpoints = self.ignores_checkpoints();
        let now = time(self.now);
        let lessor = &mut self.nodes[idx].lessor;
        for c in changes {
            match *c {
                LeaseChange::Renewed {
                    id,
                    renewals,
                    ttl_ms,
                } => lessor.renewed(id, renewals, Duration::from_millis(ttl_ms), now),
                LeaseChange::Checkpointed {
                    id,
                    renewals,
                    remaining_ms,
                } => {
                    if !ignore_checkpoints {
                        lessor.checkpointed(id, renewals, Duration::from_millis(remaining_ms), now)
                    }
                }
                LeaseChange::Removed { id } => lessor.removed(id),
            }
        }
    }

    /// The driver's lease duties on member `idx`, with its lease clock.
    pub(crate) fn lease_duties(&mut self, idx: usize) {
        let id = idx as NodeId + 1;
        let now = time(self.now);
        let node = &mut self.nodes[idx];
        let Some(driver) = node.driver.as_mut() else {
            return;
        };
        if !driver.lease_duties_due() {
            return;
        }
        let first_seq = self.lease_seq;
        let seq = std::cell::Cell::new(first_seq);
        let decided = driver.lease_duties(&node.lessor, now, |d| {
            let n = seq.get();
            seq.set(n + 1);
            crate::leases::decision_entry(d, id, n)
        });
        self.lease_seq = seq.get();
        // What the driver counts applied: with an apply stage, what it handed over. The
        // lease clock it just read is the stage's, which may not have applied that yet
        // (counted below); the apply-side guard keeps such a decision from revoking a
        // lease renewed before it (`lease_timing` checks the outcome).
        let applied = driver.status().applied;
        let stage_applied = node.sm.applied_index();
        for (n, d) in (first_seq..).zip(&decided) {
            let payload = crate::leases::decision_entry(d, id, n);
            trace!(self, "node {id} decides {d:?}");
            if let LeaseDecision::Expire {
                term,
                leases,
                barrier,
            } = d
            {
                if barrier.is_some_and(|b| b.index > stage_applied) {
                    self.stats.lease_decisions_ahead_of_stage += 1;
                }
                let lessor = &self.nodes[idx].lessor;
                let ran_out_by_barrier = leases
                    .iter()
                    .map(|at| {
                        let by = barrier.map_or(now, |b| b.asked_at);
                        (at.id, lessor.remaining(at.id, by) == Some(Duration::ZERO))
                    })
                    .collect();
                self.checks.lease_decisions.decided(
                    payload,
                    Decision {
                        proposer: id,
                        term: *term,
                        barrier: *barrier,
                        ran_out_by_barrier,
                        applied,
                    },
                );
            }
        }
    }

    /// Member `idx` applied lease entry `e` with outcome `out`; `first` when no member
    /// applied it before (the moment it takes effect for clients).
    pub(crate) fn observe_lease_apply(
        &mut self,
        idx: usize,
        e: &Entry,
        out: &LeaseApplied,
        first: bool,
    ) -> bool {
        self.feed_lessor(idx, &out.changes);
        if !first {
            return true;
        }
        let now = self.now;
        self.stats.lease_expiries_refused += out.stale_expiries as u64;
        self.stats.lease_checkpoints += out.checkpoints as u64;
        self.stats.leases_expired += out.expired.len() as u64;
        if !out.expired.is_empty() {
            let r = self
                .checks
                .lease_decisions
                .observe_effect(&e.data, &out.expired);
            if !self.check(r) {
                return false;
            }
            for &id in &out.expired {
                let r = self.checks.lease_timing.observe_expiry(id, now);
                if !self.check(r) {
                    return false;
                }
            }
        }
        for c in &out.changes {
            match *c {
                LeaseChange::Removed { id } => {
                    self.leases_gone.insert(id);
                    if let Some(l) = self.checks.lease_liveness.as_mut() {
                        l.observe_revoked(id);
                    }
                }
                LeaseChange::Renewed { id, ttl_ms, .. } => {
                    if let Some(l) = self.checks.lease_liveness.as_mut() {
                        l.observe_renewed(id, ttl_ms, now);
                    }
                }
                LeaseChange::Checkpointed { .. } => {}
            }
        }
        true
    }

    /// Member `idx` answers, now, the client call that proposed `e`, which it just applied
    /// and took at `taken_at`: a grant or a keep-alive that renewed the lease is
    /// acknowledged with the TTL the server's rule lets it promise counted from this
    /// answer (`node::promised_ttl`: the granted TTL less how long ago the member took the
    /// call, plus the leaders' expiry grace; never more than the TTL). An answer too late
    /// to promise anything acknowledges nothing.
    ///
    /// Why the lag counts: the member that answers may apply the renewal long after the
    /// leader did (a member catching up after a restart answered 400 ms late in seed 36),
    /// and the leader's clock counts from its own apply; but every leader applies a
    /// renewal after the member took the call, which the member knows on its own clock.
    pub(crate) fn observe_lease_ack(&mut self, idx: usize, e: &Entry, taken_at: u64) -> bool {
        let Some(out) = self.nodes[idx].sm.last_lease() else {
            return true;
        };
        // One renewal per lease a grant or keep-alive renewed; a batch of keep-alives
        // answers each of its leases with its own renewal.
        let renewed: Vec<(i64, u64)> = out
            .changes
            .iter()
            .filter_map(|c| match *c {
                LeaseChange::Renewed { id, ttl_ms, .. } => Some((id, ttl_ms)),
                _ => None,
            })
            .collect();
        let entry = crate::leases::decode(&e.data);
        for (id, ttl) in renewed {
            match entry {
                Some(LeaseEntry::Grant { .. }) => self.stats.lease_grants += 1,
                Some(LeaseEntry::KeepAlives { .. }) => {
                    self.stats.lease_keepalives += 1;
                    self.stats.lease_keepalives_batched += 1;
                }
                _ => self.stats.lease_keepalives += 1,
            }
            if !self.observe_renewal_ack(id, ttl, taken_at) {
                return false;
            }
        }
        true
    }

    /// The acknowledgement of one renewal of lease `id` (granted TTL `ttl`), answered now
    /// for a call taken at `taken_at`.
    fn observe_renewal_ack(&mut self, id: i64, ttl: u64, taken_at: u64) -> bool {
        let now = self.now;
        let lag = now.saturating_sub(taken_at);
        let promised = if self.config.sabotage == Some(Sabotage::LeaseAckIgnoresLag) {
            ttl
        } else {
            node::promised_ttl(
                Duration::from_millis(ttl),
                self.config.lease.expiry_grace,
                Duration::from_millis(lag),
            )
            .as_millis() as u64
        };
        if promised < ttl {
            self.stats.lease_acks_shortened += 1;
        }
        if promised == 0 {
            return true;
        }
        let r = self.checks.lease_timing.observe_ack(id, promised, now);
        self.check(r)
    }

    /// The liveness phase begins (before the restarts): every lease the committed log
    /// holds, with the remaining time it recorded, must be revoked within its bound.
    pub(crate) fn start_lease_liveness(&mut self, slack: u64) {
        let ledger = &self.checks.committed;
        let mut table = LeaseTable::default();
        let mut holes = false;
        for index in 1..=ledger.max_index() {
            match ledger.get(index) {
                Some(e) if e.kind == raft::EntryKind::Normal => {
                    table.apply(&e.data, e.term);
                }
                Some(_) => {}
                None => holes = true,
            }
        }
        // With an entry unknown to the ledger, a renewal may be missing from the replay:
        // count from the full TTL then.
        let recorded: Vec<(i64, u64)> = table
            .iter()
            .filter(|(id, _)| !self.leases_gone.contains(id))
            .map(|(id, l)| (id, if holes { l.ttl_ms } else { l.remaining_ms }))
            .collect();
        trace!(self, "lease liveness starts: {recorded:?}");
        // The leaders let every lease run its expiry grace past its deadline.
        let slack = slack + self.config.lease.expiry_grace.as_millis() as u64;
        self.checks.lease_liveness = Some(LeaseLiveness::start(recorded, slack));
    }

    /// A leader was first seen (or a new one) during the liveness phase.
    pub fn lease_leader_change(&mut self) {
        let now = self.now;
        if let Some(l) = self.checks.lease_liveness.as_mut() {
            l.observe_leader_change(now);
        }
    }

    /// Whether every lease is revoked, or a violation if one outlived its bound.
    pub(crate) fn lease_liveness_done(&mut self) -> bool {
        let now = self.now;
        let Some(l) = self.checks.lease_liveness.as_ref() else {
            return true;
        };
        let r = l.check(now);
        let done = l.done();
        self.check(r) && done
    }
}
