//! Many seeds across threads. Each seed is independent and deterministic, so splitting a
//! range over threads changes nothing but the wall-clock time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fuzz::{run_seed, FuzzOptions, FuzzReport};

/// The outcome of sweeping `start..start + count`.
#[derive(Debug)]
pub struct SweepSummary {
    pub start: u64,
    pub count: u64,
    pub failures: Vec<FuzzReport>,
    pub elapsed: Duration,
    pub total_ticks: u64,
    pub total_messages: u64,
    /// Summed over all seeds: how much of each fault and feature the sweep exercised.
    pub totals: Totals,
}

/// Sums over a sweep, to show the faults really happened.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub crashes: u64,
    pub restarts: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub proposals: u64,
    pub reads_confirmed: u64,
    pub committed_entries: u64,
    pub writes_acked: u64,
    pub reads_served: u64,
    pub stalls: u64,
    pub restarts_below_applied: u64,
    /// Leader batches applied and answered before their entry write (`apply_first`).
    pub applied_first: u64,
    /// Membership changes a leader accepted, and removals some member applied.
    pub conf_changes: u64,
    pub removals_applied: u64,
    /// Promotions leaders' drivers proposed by themselves (each checked), and learners
    /// whose such promotion was applied.
    pub auto_promotions: u64,
    pub auto_promotions_applied: u64,
    /// Lease grants and renewing keep-alives acknowledged, leases revoked by an expiry
    /// that took effect, leases named by an applied expiry that the guard refused (stale),
    /// checkpoints recorded; acknowledgements that promised less than the TTL (late).
    pub lease_grants: u64,
    pub lease_keepalives: u64,
    pub lease_keepalives_batched: u64,
    pub lease_acks_shortened: u64,
    pub leases_expired: u64,
    pub lease_expiries_refused: u64,
    pub lease_checkpoints: u64,
    /// Seeds that applied on a stage (`Plan::apply_stage`), the jobs their stages ran,
    /// the reads those released, the jobs crashes dropped, the largest lag (entries) and
    /// queue (jobs) any stage reached, the lease expiries decided on a lease clock behind
    /// the barrier, and the calls refused with *too many requests*.
    pub stage_seeds: u64,
    pub stage_jobs: u64,
    pub stage_reads_released: u64,
    pub stage_jobs_dropped: u64,
    pub stage_max_lag: u64,
    pub stage_max_jobs: u64,
    pub lease_decisions_ahead_of_stage: u64,
    pub too_many_requests: u64,
}

impl Totals {
    /// The apply stage's share of one seed's report.
    fn add_stage(&mut self, report: &FuzzReport) {
        let s = &report.stats;
        self.stage_seeds += u64::from(report.plan.apply_stage.is_some());
        self.stage_jobs += s.stage_jobs;
        self.stage_reads_released += s.stage_reads_released;
        self.stage_jobs_dropped += s.stage_jobs_dropped;
        self.stage_max_lag = self.stage_max_lag.max(s.stage_max_lag);
        self.stage_max_jobs = self.stage_max_jobs.max(s.stage_max_jobs);
        self.lease_decisions_ahead_of_stage += s.lease_decisions_ahead_of_stage;
        self.too_many_requests += s.too_many_requests;
    }
}

impl SweepSummary {
    pub fn seeds_per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One line: range, result and speed.
    pub fn headline(&self) -> String {
        let t = &self.totals;
        format!(
            "swept seeds {}..{} ({} seeds): {} failed, {:.1}s, {:.0} seeds/s; {} virtual ticks, {} messages, \
             {} crashes ({} restarts, {} below their applied index), {} stalls, {} snapshots taken, {} installed, {} proposals, \
             {} entries committed, {} writes acknowledged ({} leader batches applied before their entry write), {} reads confirmed by the core, {} linearizable reads served",
            self.start,
            self.start + self.count,
            self.count,
            self.failures.len(),
            self.elapsed.as_secs_f64(),
            self.seeds_per_second(),
            self.total_ticks,
            self.total_messages,
            t.crashes,
            t.restarts,
            t.restarts_below_applied,
            t.stalls,
            t.snapshots_taken,
            t.snapshots_installed,
            t.proposals,
            t.committed_entries,
            t.writes_acked,
            t.applied_first,
            t.reads_confirmed,
            t.reads_served
        ) + &format!(
            "; leases: {} grants and {} keep-alives acknowledged ({} of them in batches, {} late with a shortened TTL), {} expired, {} stale expiries refused, {} checkpoints",
            t.lease_grants,
            t.lease_keepalives,
            t.lease_keepalives_batched,
            t.lease_acks_shortened,
            t.leases_expired,
            t.lease_expiries_refused,
            t.lease_checkpoints
        ) + &format!(
            "; apply stage in {} seeds: {} jobs run, {} reads released by them, {} jobs dropped by crashes, lag up to {} entries / {} jobs, {} lease expiries decided ahead of the stage, {} calls refused as too many requests",
            t.stage_seeds,
            t.stage_jobs,
            t.stage_reads_released,
            t.stage_jobs_dropped,
            t.stage_max_lag,
            t.stage_max_jobs,
            t.lease_decisions_ahead_of_stage,
            t.too_many_requests
        ) + &if t.conf_changes > 0 {
            format!(
                ", {} membership changes accepted, {} removals applied, {} automatic promotions proposed ({} applied)",
                t.conf_changes, t.removals_applied, t.auto_promotions, t.auto_promotions_applied
            )
        } else {
            String::new()
        }
    }
}

/// Runs every seed in `start..start + count` on `threads` threads.
pub fn sweep(start: u64, count: u64, threads: usize, options: &FuzzOptions) -> SweepSummary {
    let began = Instant::now();
    let next = AtomicU64::new(start);
    let end = start + count;
    let failures = Mutex::new(Vec::new());
    let ticks = AtomicU64::new(0);
    let messages = AtomicU64::new(0);
    let totals = Mutex::new(Totals::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let report = run_seed(seed, options);
                ticks.fetch_add(report.ticks, Ordering::Relaxed);
                messages.fetch_add(report.net.sent, Ordering::Relaxed);
                {
                    let mut t = totals.lock().expect("no panics while locked");
                    t.crashes += report.stats.crashes;
                    t.restarts += report.stats.restarts;
                    t.snapshots_taken += report.stats.snapshots_taken;
                    t.snapshots_installed += report.stats.snapshots_installed;
                    t.proposals += report.proposals as u64;
                    t.reads_confirmed += report.reads_confirmed;
                    t.committed_entries += report.committed_index;
                    t.writes_acked += report.writes_acked;
                    t.reads_served += report.reads_served;
                    t.stalls += report.stats.stalls;
                    t.restarts_below_applied += report.stats.restarts_below_applied;
                    t.applied_first += report.stats.applied_first;
                    t.conf_changes += report.stats.conf_changes;
                    t.removals_applied += report.stats.removals_applied;
                    t.auto_promotions += report.stats.auto_promotions;
                    t.auto_promotions_applied += report.stats.auto_promotions_applied;
                    t.lease_grants += report.stats.lease_grants;
                    t.lease_keepalives += report.stats.lease_keepalives;
                    t.lease_keepalives_batched += report.stats.lease_keepalives_batched;
                    t.lease_acks_shortened += report.stats.lease_acks_shortened;
                    t.leases_expired += report.stats.leases_expired;
                    t.lease_expiries_refused += report.stats.lease_expiries_refused;
                    t.lease_checkpoints += report.stats.lease_checkpoints;
                    t.add_stage(&report);
                }
                if report.failure.is_some() {
                    failures
                        .lock()
                        .expect("no panics while locked")
                        .push(report);
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("no panics while locked");
    failures.sort_by_key(|r| r.seed);
    SweepSummary {
        start,
        count,
        failures,
        elapsed: began.elapsed(),
        total_ticks: ticks.into_inner(),
        total_messages: messages.into_inner(),
        totals: totals.into_inner().expect("no panics while locked"),
    }
}
