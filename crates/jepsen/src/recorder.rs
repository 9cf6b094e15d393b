//! The history being recorded: JSON lines in lincheck's formats, stamped from one monotonic
//! clock shared by every client and the nemesis of a run.
//!
//! The time is taken while holding the lock that appends the line, so lines are in time order
//! (the checkers require it), and an invoke is recorded before its request is sent and a
//! completion after its response arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// One history file being written (in memory until the run ends).
pub struct Recorder {
    start: Instant,
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the run began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Appends the event `make(time)` stamped with the current time; returns that time.
    pub fn record<E: Serialize>(&self, make: impl FnOnce(u64) -> E) -> u64 {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let time = self.now();
        lines.push(lincheck::jsonl::to_line(&make(time)));
        time
    }

    /// The history so far, one event per line.
    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines.iter() {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

/// Process ids: a client whose operation was indeterminate continues under a fresh id.
#[derive(Default)]
pub struct ProcessIds(AtomicU64);

impl ProcessIds {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Per-outcome counts of one workload.
#[derive(Default, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct OpCounts {
    pub ok: u64,
    pub fail: u64,
    pub indeterminate: u64,
}

impl OpCounts {
    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.indeterminate
    }

    pub fn add(&mut self, other: OpCounts) {
        self.ok += other.ok;
        self.fail += other.fail;
        self.indeterminate += other.indeterminate;
    }
}
