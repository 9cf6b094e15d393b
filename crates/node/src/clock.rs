//! The Raft clock: turns wall-clock time (an input) into core ticks.

use std::time::Duration;

/// Counts the ticks due at a given time, keeping the clock's phase.
///
/// Why a cap: a slow iteration (a long fsync, a burst of input) must not slow the Raft
/// clock — a leader whose clock runs slow sends heartbeats late and its followers time out —
/// so every missed tick counts. But a stall of seconds (a paused process) is not replayed in
/// full: many election timeouts at once would make check-quorum depose a healthy leader
/// before it can hear from anyone. Inputs carry the time they arrived and the caller ticks
/// to that time before handing each one over, so a heartbeat that arrived during a stall is
/// stepped after the ticks that preceded it, never before them: the stall cannot make a
/// follower count the time before that heartbeat against the leader.
#[derive(Clone, Debug)]
pub struct TickClock {
    interval: Duration,
    next_due: Duration,
    max_catch_up: u32,
}

impl TickClock {
    /// A clock whose first tick is due one `interval` after `now`.
    pub fn new(interval: Duration, now: Duration, max_catch_up: u32) -> TickClock {
        let interval = interval.max(Duration::from_nanos(1));
        TickClock {
            interval,
            next_due: now + interval,
            max_catch_up: max_catch_up.max(1),
        }
    }

    /// How many ticks to count at `now` (0 if none is due yet); at most `max_catch_up`.
    pub fn due(&mut self, now: Duration) -> u32 {
        if now < self.next_due {
            return 0;
        }
        let late = (now - self.next_due).as_nanos() / self.interval.as_nanos();
        let count = u32::try_from(late).unwrap_or(u32::MAX).saturating_add(1);
        self.next_due += self.interval.saturating_mul(count);
        count.min(self.max_catch_up)
    }

    /// When the next tick is due (the caller may sleep until then).
    pub fn next_due(&self) -> Duration {
        self.next_due
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_clock_counts_the_missed_ticks_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut c = TickClock::new(ms(10), ms(0), 10);
        assert_eq!(c.due(ms(9)), 0);
        assert_eq!(c.due(ms(10)), 1);
        assert_eq!(c.next_due(), ms(20));
        // 35 ms late: the due tick and three missed ones; the phase is kept.
        assert_eq!(c.due(ms(55)), 4);
        assert_eq!(c.next_due(), ms(60));
        // A 5 s stall counts as the cap, and the clock resumes on its phase after it.
        assert_eq!(c.due(ms(5_055)), 10);
        assert_eq!(c.next_due(), ms(5_060));
        assert_eq!(c.due(ms(5_059)), 0);
    }
}
