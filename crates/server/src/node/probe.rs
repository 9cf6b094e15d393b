//! An opt-in latency probe: timestamps of each hop a write takes (client call, node thread,
//! WAL fsync, peer socket writes and reads, acknowledgements, apply), keyed by log index.
//!
//! Why: to see where the time of one request goes across three processes, the hops must be
//! timed on a clock every process shares (the wall clock, on one machine) and joined by the
//! log index afterwards (`bench/latency-probe.py`). Off unless the environment variable
//! `RAFTKV_LATENCY_PROBE` names a directory; then each process appends
//! `<event> <index> <nanoseconds>` lines to `probe-<pid>.log` there. When off, a mark costs
//! one relaxed atomic load.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// 0 unknown, 1 off, 2 on.
static STATE: AtomicU8 = AtomicU8::new(0);
static SINK: Mutex<Option<(std::fs::File, Vec<u8>)>> = Mutex::new(None);

/// Lines buffered before a write (the probe must not add a syscall per hop).
const FLUSH_BYTES: usize = 64 * 1024;

fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => init(),
    }
}

#[cold]
fn init() -> bool {
    let file = std::env::var_os("RAFTKV_LATENCY_PROBE").and_then(|dir| {
        let path = std::path::Path::new(&dir).join(format!("probe-{}.log", std::process::id()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let on = file.is_some();
    if let Ok(mut s) = SINK.lock() {
        if s.is_none() {
            *s = file.map(|f| (f, Vec::with_capacity(FLUSH_BYTES * 2)));
        }
    }
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    on
}

/// Record that `event` happened now for log index `index` (0 when the index is not known).
#[inline]
pub fn mark(event: &'static str, index: u64) {
    if enabled() {
        record(event, index);
    }
}

#[cold]
fn record(event: &'static str, index: u64) {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    if let Ok(mut s) = SINK.lock() {
        if let Some((file, buf)) = s.as_mut() {
            let _ = writeln!(buf, "{event} {index} {ns}");
            if buf.len() >= FLUSH_BYTES {
                let _ = file.write_all(buf);
                buf.clear();
            }
        }
    }
}
