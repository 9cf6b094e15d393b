//! Test-only fault hooks for the Jepsen-style harness (`crates/jepsen`).
//!
//! Why they exist: some faults cannot be made from outside the process on one shared kernel
//! (a member whose clock runs faster or slower than the others), and the harness must prove it
//! can catch a broken build (reads served from the local state machine without ReadIndex).
//!
//! Everything here compiles to inert defaults unless the crate is built with the
//! `fault-injection` feature, and even then each hook only acts when its environment variable
//! is set when the member starts. Production builds (`cargo build -p raftkv`) never enable the
//! feature.

use std::time::Duration;

/// `1` = serve linearizable Range requests from the local state machine, skipping ReadIndex.
/// Deliberately breaks linearizability (the harness's negative control).
pub const STALE_READS_ENV: &str = "RAFTKV_FAULT_STALE_READS";

/// Path of a file holding this member's clock rate (a float, e.g. `2.0` = ticks twice as
/// fast as configured, `0.5` = half as fast). Re-read while running, so the harness can skew
/// and unskew a live member. Missing or unreadable file = rate 1.
pub const CLOCK_RATE_FILE_ENV: &str = "RAFTKV_FAULT_CLOCK_RATE_FILE";

/// Whether linearizable reads must skip the ReadIndex barrier (broken on purpose).
pub fn skip_read_index() -> bool {
    #[cfg(feature = "fault-injection")]
    {
        enabled::stale_reads()
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        false
    }
}

/// The interval until the next Raft tick: the configured heartbeat divided by this
/// member's injected clock rate.
pub fn tick_interval(heartbeat: Duration) -> Duration {
    #[cfg(feature = "fault-injection")]
    {
        enabled::scaled_tick(heartbeat)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        heartbeat
    }
}

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    pub fn stale_reads() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var(super::STALE_READS_ENV).is_ok_and(|v| v.trim() == "1"))
    }

    /// How often the rate file is looked at: a skew takes effect within this delay.
    const REREAD: Duration = Duration::from_millis(200);
    /// Rates outside this range are clamped (a zero or negative rate would stop time).
    const MIN_RATE: f64 = 0.1;
    const MAX_RATE: f64 = 10.0;

    fn current_rate() -> f64 {
        static PATH: OnceLock<Option<String>> = OnceLock::new();
        static CACHE: Mutex<Option<(Instant, f64)>> = Mutex::new(None);
        let Some(path) = PATH.get_or_init(|| std::env::var(super::CLOCK_RATE_FILE_ENV).ok()) else {
            return 1.0;
        };
        let Ok(mut cache) = CACHE.lock() else {
            return 1.0;
        };
        let now = Instant::now();
        if let Some((at, rate)) = *cache {
            if now.duration_since(at) < REREAD {
                return rate;
            }
        }
        let rate = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(1.0, |r| r.clamp(MIN_RATE, MAX_RATE));
        *cache = Some((now, rate));
        rate
    }

    pub fn scaled_tick(heartbeat: Duration) -> Duration {
        heartbeat.div_f64(current_rate())
    }
}
