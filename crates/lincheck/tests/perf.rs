//! Performance: a generated 10-client, 10-key, 10,000-operation linearizable etcd history
//! (get / put / delete / CAS on value and on mod_revision, ~1% indeterminate) must check in
//! under 10 s, in the workspace's test profile (opt-level 1).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lincheck::models::etcd::{etcd_model, EtcdInput, EtcdOutput};
use lincheck::{check, CheckOptions, Operation, Verdict, INFINITY};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Planned {
    process: u64,
    key: String,
    call: u64,
    ret: u64,
    /// When it takes effect (inside [call, ret]).
    at: u64,
    indeterminate: bool,
    /// Indeterminate operations may also never take effect.
    applies: bool,
}

/// Simulates 10 clients against a real etcd-like map with a global revision, applying each
/// operation at a random instant inside its interval, so the history is linearizable by
/// construction; the inputs of CAS are chosen at that instant to make both outcomes frequent.
fn generate(
    seed: u64,
    clients: u64,
    keys: u64,
    total: usize,
) -> Vec<Operation<EtcdInput, EtcdOutput>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plans = Vec::with_capacity(total);
    let mut clock = vec![0u64; clients as usize];
    let mut process_id: Vec<u64> = (0..clients).collect();
    let mut next_process = clients;
    for i in 0..total {
        let c = i % clients as usize;
        let call = clock[c] + rng.gen_range(0..5);
        let ret = call + rng.gen_range(1..30);
        let indeterminate = rng.gen_bool(0.01);
        plans.push(Planned {
            process: process_id[c],
            key: format!("k{}", rng.gen_range(0..keys)),
            call,
            ret,
            at: rng.gen_range(call..=ret),
            indeterminate,
            applies: !indeterminate || rng.gen_bool(0.5),
        });
        clock[c] = ret + 1;
        if indeterminate {
            // A client whose operation is indeterminate continues under a new id.
            process_id[c] = next_process;
            next_process += 1;
        }
    }
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| (plans[i].at, i));
    let mut store: HashMap<String, (String, u64)> = HashMap::new();
    let mut revision = 1u64;
    let mut ops: Vec<Option<Operation<EtcdInput, EtcdOutput>>> =
        (0..plans.len()).map(|_| None).collect();
    for i in order {
        let p = &plans[i];
        let current = store.get(&p.key).cloned();
        let kind = rng.gen_range(0..10);
        let value = format!("v{i}");
        let (input, output) = match kind {
            0..=3 => {
                let (v, m) = current.clone().map_or((None, 0), |(v, m)| (Some(v), m));
                (
                    EtcdInput::Get,
                    EtcdOutput::Get {
                        value: v,
                        mod_revision: m,
                        revision,
                    },
                )
            }
            4..=5 => {
                if p.applies {
                    revision += 1;
                    store.insert(p.key.clone(), (value.clone(), revision));
                }
                (EtcdInput::Put { value }, EtcdOutput::Put { revision })
            }
            6 => {
                let deleted = current.is_some() && p.applies;
                if deleted {
                    revision += 1;
                    store.remove(&p.key);
                }
                (EtcdInput::Delete, EtcdOutput::Delete { deleted, revision })
            }
            7 => {
                let expected = if rng.gen_bool(0.6) {
                    current.clone().map(|c| c.0)
                } else {
                    Some("stale".into())
                };
                let holds = current.clone().map(|c| c.0) == expected;
                if holds && p.applies {
                    revision += 1;
                    store.insert(p.key.clone(), (value.clone(), revision));
                }
                (
                    EtcdInput::CasValue {
                        expected,
                        new: value,
                    },
                    EtcdOutput::Txn {
                        succeeded: holds,
                        revision,
                    },
                )
            }
            _ => {
                let m = current.clone().map_or(0, |c| c.1);
                let expected = if rng.gen_bool(0.6) { m } else { m + 1000 };
                let holds = m == expected;
                if holds && p.applies {
                    revision += 1;
                    store.insert(p.key.clone(), (value.clone(), revision));
                }
                (
                    EtcdInput::CasModRevision {
                        expected,
                        new: Some(value),
                    },
                    EtcdOutput::Txn {
                        succeeded: holds,
                        revision,
                    },
                )
            }
        };
        ops[i] = Some(Operation {
            process: p.process,
            key: p.key.clone(),
            input,
            output: (!p.indeterminate).then_some(output),
            call: p.call,
            ret: if p.indeterminate { INFINITY } else { p.ret },
        });
    }
    ops.into_iter()
        .map(|o| o.expect("every planned op was applied"))
        .collect()
}

#[test]
fn ten_thousand_ops_check_in_under_ten_seconds() {
    let ops = generate(7, 10, 10, 10_000);
    assert_eq!(ops.len(), 10_000);
    let indeterminate = ops.iter().filter(|o| o.is_indeterminate()).count();
    let options = CheckOptions {
        budget: Duration::from_secs(60),
        minimise: true,
    };
    let start = Instant::now();
    let result = check(&etcd_model(), &ops, &options);
    let took = start.elapsed();
    eprintln!(
        "perf: 10 clients, 10 keys, {} ops ({indeterminate} indeterminate), largest partition {}: {:?} in {took:?}",
        ops.len(),
        result.largest_partition,
        result.verdict
    );
    assert_eq!(result.verdict, Verdict::Linearizable);
    assert_eq!(result.partitions, 10);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn the_generator_is_not_trivially_linearizable() {
    // Swap the outputs of two reads of one key that saw different values in different periods:
    // the checker must notice, or the performance test above proves nothing.
    let mut ops = generate(7, 10, 10, 2_000);
    let quick = CheckOptions {
        budget: Duration::from_secs(60),
        minimise: false,
    };
    assert_eq!(
        check(&etcd_model(), &ops, &quick).verdict,
        Verdict::Linearizable
    );
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            ops[i].key == "k0"
                && matches!(ops[i].output, Some(EtcdOutput::Get { value: Some(_), .. }))
        })
        .collect();
    let (a, b) = (reads[0], *reads.last().unwrap());
    assert_ne!(ops[a].output, ops[b].output);
    let tmp = ops[a].output.clone();
    ops[a].output = ops[b].output.clone();
    ops[b].output = tmp;
    let r = check(&etcd_model(), &ops, &quick);
    assert_eq!(r.verdict, Verdict::NotLinearizable);
}

#[test]
fn one_hot_key_with_ten_clients() {
    // The hard shape for the search: every client on the same key, so up to 10 operations are
    // concurrent and indeterminate ones stay open forever. Larger hot keys with more timeouts
    // get slow fast (see bench/results/lincheck.md): keep harness keys to a few hundred ops.
    let ops = generate(11, 10, 1, 1_000);
    let options = CheckOptions {
        budget: Duration::from_secs(60),
        minimise: true,
    };
    let start = Instant::now();
    let result = check(&etcd_model(), &ops, &options);
    let took = start.elapsed();
    let indeterminate = ops.iter().filter(|o| o.is_indeterminate()).count();
    eprintln!(
        "perf: 10 clients, 1 key, {} ops ({indeterminate} indeterminate): {:?} in {took:?}",
        ops.len(),
        result.verdict
    );
    assert_eq!(result.verdict, Verdict::Linearizable);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
