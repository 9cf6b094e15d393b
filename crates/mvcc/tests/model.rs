//! Randomised comparison against a deliberately naive model that keeps a full copy of the
//! keyspace for every revision. Also checks determinism (two stores, same entries) and that
//! restoring a snapshot mid-way changes nothing. Failures print the seed; rerun one seed
//! with MVCC_MODEL_SEED=<n>.

mod common;
use std::collections::BTreeMap;

use common::*;
use mvcc::{key_range::KeyRange, MvccError, Store};
use proto::etcdserverpb::{RangeRequest, TxnRequest};
use proto::mvccpb::KeyValue;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Keyspace = BTreeMap<Vec<u8>, KeyValue>;

/// `states[r]` is the keyspace at revision r (index 0 unused, 1 = empty).
struct Model {
    states: Vec<Keyspace>,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![Keyspace::new(), Keyspace::new()],
            compacted: -1,
        }
    }
    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }
    fn latest(&self) -> &Keyspace {
        self.states.last().unwrap()
    }
    fn put_into(ks: &mut Keyspace, key: &str, value: &str, rev: i64) {
        let prev = ks.get(key.as_bytes()).cloned();
        ks.insert(
            key.as_bytes().to_vec(),
            KeyValue {
                key: b(key),
                create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                mod_revision: rev,
                version: prev.as_ref().map_or(1, |p| p.version + 1),
                value: b(value),
                lease: 0,
            },
        );
    }
    fn delete_from(ks: &mut Keyspace, key: &str, end: &str) -> usize {
        let range = KeyRange::new(key.as_bytes(), end.as_bytes());
        let doomed: Vec<Vec<u8>> = ks.keys().filter(|k| range.contains(k)).cloned().collect();
        for k in &doomed {
            ks.remove(k);
        }
        doomed.len()
    }
    fn commit(&mut self, next: Keyspace, changed: bool) {
        if changed {
            self.states.push(next);
        }
    }
    fn range(&self, key: &str, end: &str, rev: i64) -> Result<Vec<KeyValue>, MvccError> {
        if rev > self.current() {
            return Err(MvccError::FutureRevision);
        }
        let rev = if rev <= 0 { self.current() } else { rev };
        if rev < self.compacted {
            return Err(MvccError::Compacted);
        }
        let range = KeyRange::new(key.as_bytes(), end.as_bytes());
        Ok(self.states[rev as usize]
            .values()
            .filter(|kv| range.contains(&kv.key))
            .cloned()
            .collect())
    }
}

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

fn random_end(rng: &mut ChaCha8Rng) -> &'static str {
    ["", "", "\0", "c", "e", "f"][rng.gen_range(0..6)]
}

fn run(seed: u64, steps: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut store = Store::new();
    let mut twin = Store::new();
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        match rng.gen_range(0..10) {
            0..=3 => {
                let value = rng.gen_range(0..100).to_string();
                let rev = model.current() + 1;
                let mut next = model.latest().clone();
                Model::put_into(&mut next, key, &value, rev);
                model.commit(next, true);
                for s in [&mut store, &mut twin] {
                    assert_eq!(must_put(s, key, &value), rev, "{ctx}");
                }
            }
            4..=5 => {
                let end = random_end(&mut rng);
                let mut next = model.latest().clone();
                let n = Model::delete_from(&mut next, key, end);
                model.commit(next, n > 0);
                for s in [&mut store, &mut twin] {
                    let resp = do_del(s, del(key, end)).unwrap();
                    assert_eq!(resp.deleted as usize, n, "{ctx}");
                    assert_eq!(resp.header.unwrap().revision, model.current(), "{ctx}");
                }
            }
            6 => {
                // If version(key) == v then put other := value, else delete other's range.
                let v = rng.gen_range(0..3);
                let other = KEYS[rng.gen_range(0..KEYS.len())];
                let end = random_end(&mut rng);
                let holds = model
                    .latest()
                    .get(key.as_bytes())
                    .map_or(0, |kv| kv.version)
                    == v;
                let rev = model.current() + 1;
                let mut next = model.latest().clone();
                let changed = if holds {
                    Model::put_into(&mut next, other, "txn", rev);
                    true
                } else {
                    Model::delete_from(&mut next, other, end) > 0
                };
                model.commit(next, changed);
                let request: TxnRequest = txn(
                    vec![cmp(key, Equal, T::Version(v))],
                    vec![op_put(put(other, "txn"))],
                    vec![op_del(del(other, end))],
                );
                for s in [&mut store, &mut twin] {
                    let resp = do_txn(s, request.clone()).unwrap();
                    assert_eq!(resp.succeeded, holds, "{ctx}");
                    assert_eq!(resp.header.unwrap().revision, model.current(), "{ctx}");
                }
            }
            7 => {
                let rev = rng.gen_range((model.compacted).max(0)..=model.current() + 1);
                let expected = if rev <= model.compacted {
                    Err(MvccError::Compacted)
                } else if rev > model.current() {
                    Err(MvccError::FutureRevision)
                } else {
                    model.compacted = rev;
                    Ok(())
                };
                for s in [&mut store, &mut twin] {
                    assert_eq!(do_compact(s, rev), expected, "{ctx}");
                }
            }
            _ => {
                let end = random_end(&mut rng);
                let rev = rng.gen_range(0..=model.current() + 1);
                let got = store
                    .range(&RangeRequest {
                        revision: rev,
                        ..get(key, end)
                    })
                    .map(|r| {
                        assert_eq!(r.count as usize, r.kvs.len(), "{ctx}");
                        r.kvs
                    });
                assert_eq!(
                    got,
                    model.range(key, end, rev),
                    "{ctx}: range {key}..{end:?} at {rev}"
                );
            }
        }
        assert_eq!(store, twin, "{ctx}: replicas diverged");
        assert_eq!(store.current_revision(), model.current(), "{ctx}");
        if step % 50 == 49 {
            // A member that restarts from a snapshot continues exactly like the others.
            twin = Store::restore(&twin.snapshot()).expect("restore");
            assert_eq!(store.hash_kv(0), twin.hash_kv(0), "{ctx}");
        }
    }
}

#[test]
fn store_matches_a_naive_full_copy_model() {
    if let Some(seed) = std::env::var("MVCC_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed, 400);
        return;
    }
    for seed in 0..40 {
        run(seed, 400);
    }
}

/// The model comparison must be able to fail: feed it a store that diverged.
#[test]
fn the_model_comparison_catches_a_wrong_value() {
    let mut model = Model::new();
    let mut next = model.latest().clone();
    Model::put_into(&mut next, "a", "1", 2);
    model.commit(next, true);
    let mut store = Store::new();
    must_put(&mut store, "a", "2");
    let got = store.range(&get("a", "")).unwrap().kvs;
    assert_ne!(Ok(got), model.range("a", "", 0));
}
