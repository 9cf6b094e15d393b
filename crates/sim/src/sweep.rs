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
}

impl SweepSummary {
    pub fn seeds_per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One line: range, result and speed.
    pub fn headline(&self) -> String {
        format!(
            "swept seeds {}..{} ({} seeds): {} failed, {:.1}s, {:.0} seeds/s, {} virtual ticks, {} messages",
            self.start,
            self.start + self.count,
            self.count,
            self.failures.len(),
            self.elapsed.as_secs_f64(),
            self.seeds_per_second(),
            self.total_ticks,
            self.total_messages
        )
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
                if report.failure.is_some() {
                    failures.lock().expect("no panics while locked").push(report);
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
    }
}
