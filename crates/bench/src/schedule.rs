//! The shared request schedule of the streaming workloads (`watch` writers, `lease`
//! keep-alive streams): numbered slots handed out until the run's stop condition, each at
//! its time under `--rate` (a caller that falls behind catches up; it does not skip slots).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::args::StopAt;

pub struct Schedule {
    issued: AtomicU64,
    start: Instant,
    stop: StopAt,
    rate: f64,
}

impl Schedule {
    /// A schedule starting now; `rate` 0 means as fast as the callers go.
    pub fn new(stop: StopAt, rate: f64) -> Schedule {
        Schedule {
            issued: AtomicU64::new(0),
            start: Instant::now(),
            stop,
            rate,
        }
    }

    /// Time since the schedule started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The next slot's start time (`Some(None)`: now), or `None` when the run is over.
    pub fn next_slot(&self) -> Option<Option<Instant>> {
        let slot = self.issued.fetch_add(1, Ordering::Relaxed);
        let at = (self.rate > 0.0)
            .then(|| self.start + Duration::from_secs_f64(slot as f64 / self.rate));
        match self.stop {
            StopAt::Total(n) if slot >= n => None,
            StopAt::Duration(d) if at.unwrap_or_else(Instant::now) >= self.start + d => None,
            _ => Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_stops_at_the_total() {
        let s = Schedule::new(StopAt::Total(2), 0.0);
        assert_eq!(s.next_slot(), Some(None));
        assert_eq!(s.next_slot(), Some(None));
        assert_eq!(s.next_slot(), None);
    }

    #[test]
    fn the_schedule_stops_at_the_total_and_paces_by_rate() {
        let s = Schedule::new(StopAt::Total(2), 10.0);
        let a = s.next_slot().unwrap().unwrap();
        let b = s.next_slot().unwrap().unwrap();
        assert_eq!(b - a, Duration::from_millis(100));
        assert!(s.next_slot().is_none());
    }
}
