//! Negative control: the harness's member (`raftkv-jepsen-member`) told to serve
//! linearizable reads from its local state machine (no ReadIndex) must be caught. Clients stay
//! connected to a leader that gets partitioned away, so it keeps answering reads while the
//! majority moves on; the checker must say `not-linearizable`.

mod common;

use std::time::Duration;

use jepsen::{Fault, RunConfig};

#[test]
fn reads_without_read_index_are_caught_as_not_linearizable() {
    let name = "stale-reads";
    let mut c = RunConfig::new(name, &common::run_dir(name), &common::member_binary());
    c.stale_reads = true;
    c.duration = Duration::from_secs(20);
    c.faults = vec![Fault::PartitionLeader];
    c.quiet = (Duration::from_secs(1), Duration::from_secs(2));
    c.hold = (Duration::from_secs(4), Duration::from_secs(5));
    // Few hot keys: writes on the majority side and reads on the old leader meet.
    c.register_slots = 1;
    c.register_clients = 6;
    c.append_clients = 2;
    c.seed = 7;
    let report = jepsen::run(&c).unwrap_or_else(|e| panic!("run failed: {e:#}"));
    eprintln!("{}", report.one_line());
    assert_eq!(
        report.register_verdict,
        "not-linearizable",
        "the stale-read build was not caught: {}",
        report.one_line()
    );
    assert!(!report.passed());
    let witness = c.dir.join("report-register.txt");
    assert!(
        witness.exists(),
        "a violation must come with a witness report at {}",
        witness.display()
    );
}

/// Negative controls for the watch checker: the first member drops the `prev_kv` of, or does
/// not send, every event at a revision divisible by 7, or does not answer a progress request
/// due at such a revision; a watcher on it and one on a healthy member follow the same keys.
/// Each build must be caught by the property it breaks.
#[test]
fn broken_watches_are_caught() {
    for (fault, property) in [
        (jepsen::faults::WatchFault::DropPrevKv, "prev_kv"),
        (jepsen::faults::WatchFault::DropEvent, "reliable"),
        (jepsen::faults::WatchFault::DropProgress, "answered"),
    ] {
        let name = format!("broken-watch-{fault:?}");
        let mut c = RunConfig::new(&name, &common::run_dir(&name), &common::member_binary());
        c.watch_fault = Some(fault);
        c.duration = Duration::from_secs(8);
        c.faults = vec![Fault::PartitionLeader];
        c.append_clients = 1;
        c.seed = 11;
        let report = jepsen::run(&c).unwrap_or_else(|e| panic!("run failed: {e:#}"));
        eprintln!("{}", report.one_line());
        assert!(!report.passed(), "{fault:?} passed: {}", report.one_line());
        let witness = std::fs::read_to_string(c.dir.join("report-watch.txt")).unwrap_or_else(|e| {
            panic!(
                "{fault:?}: no report-watch.txt ({e}): {}",
                report.one_line()
            )
        });
        assert!(
            witness.lines().any(|l| l.contains(property)),
            "{fault:?} not caught as {property}:\n{witness}"
        );
        // The rest of the run was fine: only the watch checker objects.
        assert_eq!(
            report.register_verdict,
            "linearizable",
            "{}",
            report.one_line()
        );
    }
}
