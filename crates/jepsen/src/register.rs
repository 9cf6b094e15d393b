//! Workload (a): etcd registers. Clients get, put, delete and compare-and-set (Txn on the value
//! or on mod_revision) a few keys with unique values; checked with lincheck's etcd model per key
//! plus the cross-key revision order.
//!
//! Keys rotate: every slot moves to a fresh key after [`OPS_PER_KEY`] operations, which bounds
//! each partition the linearizability search has to explore.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lincheck::jsonl::Event;
use lincheck::models::etcd::{EtcdInput, EtcdOutput};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::client::{compare_mod_revision, compare_value, put_op, txn_revision, EtcdClient};
use crate::client::{Outcome, Read};
/// Pause after a failed operation before the next one.
const FAIL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

use crate::recorder::{OpCounts, ProcessIds, Recorder};

pub type RegisterEvent = Event<EtcdInput, EtcdOutput>;

/// Operations per key before its slot moves on to a new key.
pub const OPS_PER_KEY: u64 = 120;

/// Shared state of the register workload.
pub struct Registers {
    pub history: Arc<Recorder>,
    pub processes: Arc<ProcessIds>,
    slots: Vec<AtomicU64>,
    next_value: AtomicU64,
    /// Per key, the highest revision of an acknowledged write that left a value.
    pub acked_puts: Mutex<HashMap<String, u64>>,
    /// Keys some delete was invoked on (whatever its outcome): they may legitimately be absent.
    pub maybe_deleted: Mutex<HashSet<String>>,
    /// The highest header revision of any acknowledged operation: a revision every member
    /// must eventually report (the watchers note it with each progress request).
    pub acknowledged_revision: Arc<AtomicI64>,
}

impl Registers {
    pub fn new(history: Arc<Recorder>, processes: Arc<ProcessIds>, slots: usize) -> Registers {
        Registers {
            history,
            processes,
            slots: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next_value: AtomicU64::new(1),
            acked_puts: Mutex::new(HashMap::new()),
            maybe_deleted: Mutex::new(HashSet::new()),
            acknowledged_revision: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Picks the key for the next operation on a random slot.
    fn pick_key(&self, rng: &mut ChaCha8Rng) -> String {
        let slot = rng.gen_range(0..self.slots.len());
        let n = self.slots[slot].fetch_add(1, Ordering::Relaxed);
        format!("r{slot}-{}", n / OPS_PER_KEY)
    }

    /// Every key used so far (for the final reads).
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (slot, n) in self.slots.iter().enumerate() {
            let used = n.load(Ordering::Relaxed);
            for g in 0..=(used / OPS_PER_KEY) {
                keys.push(format!("r{slot}-{g}"));
            }
        }
        keys
    }

    fn unique_value(&self) -> String {
        format!("v{}", self.next_value.fetch_add(1, Ordering::Relaxed))
    }

    /// Records and performs one operation; returns its outcome class.
    pub async fn run_op(
        &self,
        client: &mut EtcdClient,
        process: u64,
        key: &str,
        input: EtcdInput,
    ) -> Outcome<EtcdOutput> {
        self.history.record(|time| RegisterEvent::Invoke {
            time,
            process,
            key: key.to_string(),
            input: input.clone(),
        });
        if matches!(
            input,
            EtcdInput::Delete | EtcdInput::CasModRevision { new: None, .. }
        ) {
            lock(&self.maybe_deleted).insert(key.to_string());
        }
        let outcome = perform(client, key, &input).await;
        let wrote_value = match (&input, &outcome) {
            (EtcdInput::Put { .. }, Outcome::Ok(EtcdOutput::Put { revision })) => Some(*revision),
            (
                EtcdInput::CasValue { .. } | EtcdInput::CasModRevision { new: Some(_), .. },
                Outcome::Ok(EtcdOutput::Txn {
                    succeeded: true,
                    revision,
                }),
            ) => Some(*revision),
            _ => None,
        };
        if let Outcome::Ok(output) = &outcome {
            let rev = match output {
                EtcdOutput::Get { revision, .. }
                | EtcdOutput::Put { revision }
                | EtcdOutput::Delete { revision, .. }
                | EtcdOutput::Txn { revision, .. } => *revision,
            };
            self.acknowledged_revision
                .fetch_max(rev as i64, Ordering::Relaxed);
        }
        if let Some(rev) = wrote_value {
            let mut acked = lock(&self.acked_puts);
            let e = acked.entry(key.to_string()).or_insert(0);
            *e = (*e).max(rev);
        }
        // A read that did not answer changed nothing: record it as failed.
        let outcome = match (outcome, &input) {
            (Outcome::Unknown(e), EtcdInput::Get) => Outcome::Fail(e),
            (o, _) => o,
        };
        match &outcome {
            Outcome::Ok(output) => self.history.record(|time| RegisterEvent::Ok {
                time,
                process,
                output: output.clone(),
            }),
            Outcome::Fail(error) => self.history.record(|time| RegisterEvent::Fail {
                time,
                process,
                error: error.clone(),
            }),
            Outcome::Unknown(error) => self.history.record(|time| RegisterEvent::Info {
                time,
                process,
                error: error.clone(),
            }),
        };
        outcome
    }
}

async fn perform(client: &mut EtcdClient, key: &str, input: &EtcdInput) -> Outcome<EtcdOutput> {
    use proto::etcdserverpb::TxnRequest;
    match input {
        EtcdInput::Get => match client.get(key).await {
            Outcome::Ok(Read {
                value,
                mod_revision,
                revision,
            }) => Outcome::Ok(EtcdOutput::Get {
                value,
                mod_revision,
                revision,
            }),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Unknown(e) => Outcome::Unknown(e),
        },
        EtcdInput::Put { value } => match client.put(key, value).await {
            Outcome::Ok(revision) => Outcome::Ok(EtcdOutput::Put { revision }),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Unknown(e) => Outcome::Unknown(e),
        },
        EtcdInput::Delete => match client.delete(key).await {
            Outcome::Ok((deleted, revision)) => {
                Outcome::Ok(EtcdOutput::Delete { deleted, revision })
            }
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Unknown(e) => Outcome::Unknown(e),
        },
        EtcdInput::CasValue { expected, new } => {
            let req = TxnRequest {
                compare: vec![compare_value(key, expected.as_deref())],
                success: vec![put_op(key, new)],
                failure: vec![],
            };
            txn_outcome(client.txn(req).await)
        }
        EtcdInput::CasModRevision { expected, new } => {
            let success = match new {
                Some(v) => vec![put_op(key, v)],
                None => vec![crate::append::delete_op(key)],
            };
            let req = TxnRequest {
                compare: vec![compare_mod_revision(key, *expected)],
                success,
                failure: vec![],
            };
            txn_outcome(client.txn(req).await)
        }
    }
}

fn txn_outcome(o: Outcome<proto::etcdserverpb::TxnResponse>) -> Outcome<EtcdOutput> {
    match o {
        Outcome::Ok(r) => Outcome::Ok(EtcdOutput::Txn {
            succeeded: r.succeeded,
            revision: txn_revision(&r),
        }),
        Outcome::Fail(e) => Outcome::Fail(e),
        Outcome::Unknown(e) => Outcome::Unknown(e),
    }
}

/// What one client last saw of each key, to make its compare-and-sets likely to succeed.
#[derive(Default)]
struct Seen {
    by_key: HashMap<String, (Option<String>, u64)>,
}

/// One client: operations back to back until `stop`, on its own connection.
pub async fn client_loop(
    regs: Arc<Registers>,
    mut client: EtcdClient,
    mut rng: ChaCha8Rng,
    stop: Arc<AtomicBool>,
) -> OpCounts {
    let mut counts = OpCounts::default();
    let mut process = regs.processes.next();
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let key = regs.pick_key(&mut rng);
        let known = seen.by_key.get(&key).cloned();
        let roll = rng.gen_range(0..100);
        let input = match roll {
            0..=39 => EtcdInput::Get,
            40..=62 => EtcdInput::Put {
                value: regs.unique_value(),
            },
            63..=66 => EtcdInput::Delete,
            67..=83 => EtcdInput::CasValue {
                expected: known.as_ref().and_then(|k| k.0.clone()),
                new: regs.unique_value(),
            },
            _ => EtcdInput::CasModRevision {
                expected: known.as_ref().map_or(0, |k| k.1),
                new: Some(regs.unique_value()),
            },
        };
        let outcome = regs.run_op(&mut client, process, &key, input.clone()).await;
        match outcome {
            Outcome::Ok(out) => {
                counts.ok += 1;
                if let EtcdOutput::Get {
                    value,
                    mod_revision,
                    ..
                } = out
                {
                    seen.by_key.insert(key, (value, mod_revision));
                }
            }
            Outcome::Fail(_) => {
                counts.fail += 1;
                // Typically the member is down or leaderless: do not spin on it.
                tokio::time::sleep(FAIL_BACKOFF).await;
            }
            Outcome::Unknown(_) => {
                counts.indeterminate += 1;
                process = regs.processes.next();
            }
        }
    }
    counts
}

/// Locks even if a client task panicked while holding the lock.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
