//! The simulator is deterministic: the same seed produces the same run, bit for bit, so a
//! printed seed really replays a failure.

use sim::fuzz::{run_seed, FuzzOptions};

#[test]
fn one_seed_run_twice_gives_identical_traces() {
    for apply_stage in [Some(false), Some(true)] {
        let options = FuzzOptions {
            trace: true,
            apply_stage,
            ..FuzzOptions::default()
        };
        same_traces(&options);
    }
}

/// Runs a few seeds twice with `options` and compares their traces event by event.
fn same_traces(options: &FuzzOptions) {
    for seed in [3u64, 17, 12_345] {
        let first = run_seed(seed, options);
        let second = run_seed(seed, options);
        assert!(
            first.trace.len() > 100,
            "seed {seed}: trace too short to mean anything"
        );
        assert_eq!(
            first.trace.len(),
            second.trace.len(),
            "seed {seed}: traces differ in length"
        );
        for (i, (a, b)) in first.trace.iter().zip(&second.trace).enumerate() {
            assert_eq!(a, b, "seed {seed}: traces diverge at event {i}");
        }
        assert_eq!(first.failure, second.failure);
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let options = FuzzOptions {
        trace: true,
        ..FuzzOptions::default()
    };
    let a = run_seed(1, &options);
    let b = run_seed(2, &options);
    assert_ne!(a.trace, b.trace, "the seed does not influence the run");
}
