//! The server's apply stage, in the simulator: a per-member FIFO of apply jobs that runs
//! behind the member's node thread.
//!
//! Why: the server applies on a thread of its own. Its node thread carries out each batch's
//! messages and writes as before, but hands the batch's state-machine work (install the
//! snapshot, apply the entries and answer their proposers, release the reads, take the
//! snapshot the driver asked for) to the stage as one job, and calls `advance()` at once.
//! The driver then counts an entry applied when it is handed over, and everything that
//! reads applied state on the node thread (the lease clock lent to the lease duties, the
//! promotion candidates) sees the stage's progress, which may lag. The simulator runs that
//! shape so the seed sweep covers the interleavings it creates: reads released through the
//! queue, snapshots started from it, a lagging lease clock, candidates arriving late, and
//! crashes with jobs still queued (the work is volatile: recovery re-applies from the
//! durable snapshot and log).
//!
//! Each job runs at a simulated time drawn from the run's RNG (bounded, so the liveness
//! phase still ends), never before the job handed over before it: a member's jobs run in
//! order. A stalled member's stage is stalled too; its due jobs run when the stall ends.

use std::collections::VecDeque;

use node::{ApplyItem, Outcome, Reply};
use raft::{Index, NodeId, Snapshot, SnapshotMeta};
use rand::Rng;

use crate::cluster::{trace, Cluster, CrashPoint, Sabotage};

/// How a run's apply stages behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyStageConfig {
    /// A job runs a delay drawn from `0..=max_delay_units` after it is handed over (or
    /// when the job before it ran, if that is later).
    pub max_delay_units: u64,
    /// The drivers' backpressure threshold (`DriverConfig::max_apply_gap`): small values
    /// make the stage's lag, reported with `set_apply_lag`, refuse proposals now and then.
    pub max_apply_gap: u64,
}

/// One batch's state-machine work, handed to the stage in the contract's order.
#[derive(Clone, Debug, Default)]
pub(crate) struct StageJob {
    /// Virtual time at which the stage runs it.
    pub(crate) due: u64,
    pub(crate) install: Option<Snapshot>,
    pub(crate) apply: Vec<ApplyItem>,
    /// The batch's `ReadReady` replies: released only after everything handed over before
    /// them is applied.
    pub(crate) reads: Vec<Reply>,
    pub(crate) start_snapshot: Option<SnapshotMeta>,
    /// Applying it may change the promotion candidates (it installs a snapshot or applies a
    /// `ConfChange`): the driver hears them once the stage applied it.
    pub(crate) feeds_candidates: bool,
}

impl StageJob {
    fn is_empty(&self) -> bool {
        self.install.is_none()
            && self.apply.is_empty()
            && self.reads.is_empty()
            && self.start_snapshot.is_none()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.install {
            parts.push(format!("install {}/{}", s.meta.index, s.meta.term));
        }
        if let (Some(a), Some(b)) = (self.apply.first(), self.apply.last()) {
            parts.push(format!("apply {}..={}", a.entry.index, b.entry.index));
        }
        if !self.reads.is_empty() {
            parts.push(format!("{} reads", self.reads.len()));
        }
        if let Some(m) = &self.start_snapshot {
            parts.push(format!("snapshot at {}/{}", m.index, m.term));
        }
        parts.join(", ")
    }
}

/// A member's apply stage: the jobs handed over and not yet run.
#[derive(Clone, Debug, Default)]
pub(crate) struct ApplyStage {
    jobs: VecDeque<StageJob>,
    /// Entries handed over but not yet applied (what `set_apply_lag` is told).
    queued_entries: u64,
}

impl ApplyStage {
    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    pub(crate) fn queued_entries(&self) -> u64 {
        self.queued_entries
    }

    /// The next job to run if it is due by `now`. `out_of_order` (sabotage) takes the
    /// newest due job instead of the oldest.
    fn take_due(&mut self, now: u64, out_of_order: bool) -> Option<StageJob> {
        if self.jobs.front()?.due > now {
            return None;
        }
        let due = self.jobs.iter().take_while(|j| j.due <= now).count();
        let job = if out_of_order {
            self.jobs.remove(due - 1)?
        } else {
            self.jobs.pop_front()?
        };
        self.queued_entries -= job.apply.len() as u64;
        Some(job)
    }
}

impl Cluster {
    pub(crate) fn stage_enabled(&self) -> bool {
        self.config.apply_stage.is_some()
    }

    /// The stage part of a batch: `ReadReady` replies, the snapshot to install, the
    /// entries to apply and the snapshot to start move out of `fx` into one job on
    /// member `idx`'s stage. Failures are answered here at once (they need no ordering);
    /// so are reads under `Sabotage::ReleaseReadsAtHandOver`. False if a check failed.
    pub(crate) fn hand_over(&mut self, idx: usize, fx: &mut node::Effects) -> bool {
        let Some(cfg) = self.config.apply_stage else {
            return true;
        };
        let mut job = StageJob {
            feeds_candidates: fx.install_snapshot.is_some()
                || fx
                    .apply
                    .iter()
                    .any(|i| i.entry.kind == raft::EntryKind::ConfChange),
            install: fx.install_snapshot.clone(),
            apply: std::mem::take(&mut fx.apply),
            start_snapshot: fx.start_snapshot.take(),
            ..StageJob::default()
        };
        let early_reads = self.config.sabotage == Some(Sabotage::ReleaseReadsAtHandOver);
        for r in std::mem::take(&mut fx.replies) {
            if r.outcome == Outcome::ReadReady && !early_reads {
                job.reads.push(r);
            } else if !self.answer(idx, &r) {
                return false;
            }
        }
        if job.is_empty() {
            return true;
        }
        let delay = self.rng.gen_range(0..=cfg.max_delay_units);
        let stage = &mut self.nodes[idx].stage;
        let after = stage.jobs.back().map_or(0, |j| j.due);
        job.due = (self.now + delay).max(after);
        stage.queued_entries += job.apply.len() as u64;
        let (lag, depth) = (stage.queued_entries, stage.jobs.len() + 1);
        self.stats.stage_max_lag = self.stats.stage_max_lag.max(lag);
        self.stats.stage_max_jobs = self.stats.stage_max_jobs.max(depth as u64);
        trace!(
            self,
            "node {} hands over [{}] (runs at {}, {lag} entries queued)",
            idx + 1,
            job.describe(),
            job.due
        );
        self.nodes[idx].stage.jobs.push_back(job);
        true
    }

    /// The stages' due jobs, member by member (a stalled member's wait for its stall to
    /// end): each job is applied, answered, and followed by the member's node-thread work
    /// it causes (the lag and the candidates it reports to the driver).
    pub(crate) fn run_stages(&mut self) {
        if !self.stage_enabled() {
            return;
        }
        let out_of_order = self.config.sabotage == Some(Sabotage::StageJobsOutOfOrder);
        for idx in 0..self.nodes.len() {
            // Bounded: a job's node-thread follow-up may hand over another due at once.
            for _ in 0..1_000 {
                let node = &mut self.nodes[idx];
                if node.driver.is_none() || node.stalled_until.is_some() {
                    break;
                }
                let Some(job) = node.stage.take_due(self.now, out_of_order) else {
                    break;
                };
                if !self.run_job(idx, job) {
                    if self.violation.is_some() {
                        return;
                    }
                    break; // crashed: its queue is gone
                }
                self.after_input(idx);
                if self.violation.is_some() {
                    return;
                }
            }
        }
    }

    /// Runs one job on member `idx`'s stage, in the order the server's stage does:
    /// install, apply and answer, release the reads, then take the snapshot the driver
    /// asked for (the state machine is exactly at its index now). An armed
    /// `CrashPoint::BeforeApply` strikes here. False if the member crashed or a check
    /// failed.
    fn run_job(&mut self, idx: usize, job: StageJob) -> bool {
        let id = idx as NodeId + 1;
        if self.crash_strikes(idx, CrashPoint::BeforeApply) {
            return false;
        }
        trace!(self, "node {id} stage runs [{}]", job.describe());
        self.stats.stage_jobs += 1;
        if !self.apply_to_state_machine(idx, job.install.as_ref(), &job.apply) {
            return false;
        }
        for r in &job.reads {
            self.stats.stage_reads_released += 1;
            if !self.answer(idx, r) {
                return false;
            }
        }
        let node = &mut self.nodes[idx];
        let lag = node.stage.queued_entries();
        let driver = node.driver.as_mut().expect("alive");
        driver.set_apply_lag(lag);
        if job.feeds_candidates {
            driver.set_promotion_candidates(node.sm.promotion_candidates());
        }
        if let Some(meta) = job.start_snapshot {
            self.start_snapshot(idx, meta);
        }
        self.violation.is_none()
    }

    /// Member `idx` handed everything up to `index` to apply (or, without a stage, applied
    /// it).
    pub(crate) fn note_handed_over(&mut self, idx: usize, index: Index) {
        self.nodes[idx].handed_over = index;
    }

    /// The stage's part of the per-step checks: the state machine never runs ahead of
    /// what was handed over, and is exactly there once the stage is idle.
    pub(crate) fn stage_problem(&self, idx: usize) -> Option<String> {
        let node = &self.nodes[idx];
        let applied = node.sm.applied_index();
        let idle = node.stage.is_empty();
        if applied > node.handed_over || (idle && applied != node.handed_over) {
            return Some(format!(
                "node {} has applied {applied} but handed over {} with {} jobs queued",
                node.id,
                node.handed_over,
                node.stage.len()
            ));
        }
        None
    }
}
