//! Differential test: the checker against a brute-force oracle (every real-time-respecting
//! order of every subset of the indeterminate operations) on thousands of small random register
//! histories, half of them linearizable by construction and half corrupted.

use std::time::Duration;

use lincheck::models::register::{RegisterInput as RI, RegisterModel, RegisterOutput as RO};
use lincheck::{check, CheckOptions, Model, Operation, Verdict, INFINITY};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Op = Operation<RI, RO>;

/// Is there an order of all `ops` flagged in `include` that respects real time and the model?
fn brute(ops: &[Op], include: &[bool], used: &mut Vec<bool>, state: Option<i64>) -> bool {
    let remaining: Vec<usize> = (0..ops.len()).filter(|&i| include[i] && !used[i]).collect();
    if remaining.is_empty() {
        return true;
    }
    for &i in &remaining {
        // i may go next only if no other remaining op completed before i was invoked.
        if remaining
            .iter()
            .any(|&j| j != i && ops[j].ret < ops[i].call)
        {
            continue;
        }
        if let Some(next) = RegisterModel.step(&state, &ops[i].input, ops[i].output.as_ref()) {
            used[i] = true;
            let ok = brute(ops, include, used, next);
            used[i] = false;
            if ok {
                return true;
            }
        }
    }
    false
}

fn oracle(ops: &[Op]) -> bool {
    let unknown: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].is_indeterminate())
        .collect();
    (0..1u32 << unknown.len()).any(|mask| {
        let mut include: Vec<bool> = ops.iter().map(|o| !o.is_indeterminate()).collect();
        for (b, &i) in unknown.iter().enumerate() {
            include[i] = mask & (1 << b) != 0;
        }
        brute(ops, &include, &mut vec![false; ops.len()], None)
    })
}

/// A random execution: each op takes effect at a random instant of its interval; optionally one
/// output is then corrupted. With `unique`, every write stores its own value, which lets the
/// checker bound indeterminate writes by the reads that observe them (an optimisation this test
/// must cover too).
fn random_history(rng: &mut ChaCha8Rng, corrupt: bool, unique: bool) -> Vec<Op> {
    let n = rng.gen_range(2..=7);
    let mut plans: Vec<(u64, u64, u64, RI, bool)> = (0..n)
        .map(|k| {
            let call = rng.gen_range(0..20);
            let ret = call + rng.gen_range(1..10);
            let input = match rng.gen_range(0..3) {
                0 => RI::Read,
                1 if unique => RI::Write(100 + k as i64),
                1 => RI::Write(rng.gen_range(1..4)),
                _ if unique => RI::Cas {
                    expected: 100 + rng.gen_range(0..8),
                    new: 200 + k as i64,
                },
                _ => RI::Cas {
                    expected: rng.gen_range(0..4),
                    new: rng.gen_range(1..4),
                },
            };
            (
                call,
                ret,
                rng.gen_range(call..=ret),
                input,
                rng.gen_bool(0.2),
            )
        })
        .collect();
    plans.sort_by_key(|p| p.2);
    let mut state: Option<i64> = None;
    let mut ops = Vec::new();
    for (k, (call, ret, _, input, indeterminate)) in plans.into_iter().enumerate() {
        let applies = !indeterminate || rng.gen_bool(0.5);
        let output = match input {
            RI::Read => RO::Read(state),
            RI::Write(v) => {
                if applies {
                    state = Some(v);
                }
                RO::Write
            }
            RI::Cas { expected, new } => {
                let holds = state == Some(expected);
                if holds && applies {
                    state = Some(new);
                }
                RO::Cas(holds)
            }
        };
        ops.push(Operation {
            process: k as u64,
            key: String::new(),
            input,
            output: (!indeterminate).then_some(output),
            call,
            ret: if indeterminate { INFINITY } else { ret },
        });
    }
    if corrupt {
        let i = rng.gen_range(0..ops.len());
        ops[i].output = match (&ops[i].input, &ops[i].output) {
            (RI::Read, Some(_)) if unique => Some(RO::Read(Some(100 + rng.gen_range(0..8)))),
            (RI::Read, Some(_)) => Some(RO::Read(if rng.gen_bool(0.2) {
                None
            } else {
                Some(rng.gen_range(0..4))
            })),
            (RI::Cas { .. }, Some(RO::Cas(b))) => Some(RO::Cas(!b)),
            (_, out) => out.clone(),
        };
    }
    ops.sort_by_key(|o| o.call);
    ops
}

/// The history as known at time `t`: later invocations dropped, pending ops indeterminate.
fn cut(ops: &[Op], t: u64) -> Vec<Op> {
    ops.iter()
        .filter(|o| o.call <= t)
        .map(|o| {
            let mut o = o.clone();
            if o.ret > t {
                o.ret = INFINITY;
                o.output = None;
            }
            o
        })
        .collect()
}

#[test]
fn checker_agrees_with_brute_force_on_random_small_histories() {
    agree(2026, false);
}

#[test]
fn checker_agrees_with_brute_force_with_unique_values() {
    agree(2027, true);
}

fn agree(seed: u64, unique: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let options = CheckOptions {
        budget: Duration::from_secs(10),
        minimise: true,
    };
    let (mut yes, mut no) = (0, 0);
    for case in 0..4000 {
        let ops = random_history(&mut rng, case % 2 == 1, unique);
        let expected = oracle(&ops);
        let got = check(&RegisterModel, &ops, &options);
        let want = if expected {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        assert_eq!(got.verdict, want, "case {case}: {ops:#?}");
        if expected {
            yes += 1;
        } else {
            no += 1;
            let v = got.violation.expect("a witness");
            // The witness cut is itself not linearizable, and no earlier cut fails.
            assert!(
                !oracle(&cut(&ops, v.cut_time)),
                "case {case}: cut {} linearizable",
                v.cut_time
            );
            for t in ops.iter().filter(|o| o.ret < v.cut_time).map(|o| o.ret) {
                assert!(
                    oracle(&cut(&ops, t)),
                    "case {case}: earlier cut {t} also fails"
                );
            }
        }
    }
    eprintln!("oracle: {yes} linearizable, {no} not linearizable");
    // Both answers must be well represented, or this test proves little.
    assert!(yes > 800 && no > 500, "linearizable {yes}, not {no}");
}
