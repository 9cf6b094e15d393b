//! raftkv's own history format: one JSON event per line, written by the harness and read by the
//! checker (`--format etcd-jsonl` / `--format append-jsonl`).
//!
//! Single-key operations (checked with the etcd model, see [`crate::models::etcd`]):
//! ```text
//! {"type":"invoke","time":1200,"process":3,"key":"k1","input":{"put":{"value":"v7"}}}
//! {"type":"ok","time":1450,"process":3,"output":{"put":{"revision":42}}}
//! {"type":"info","time":9000,"process":4,"error":"deadline exceeded"}
//! {"type":"fail","time":9100,"process":5,"error":"no leader (rejected before sending)"}
//! {"type":"nemesis","time":9500,"fault":"partition leader"}
//! ```
//! List-append transactions (checked with [`crate::elle`]): `invoke` carries `"ops"` (reads
//! without `list`), `ok` carries `"ops"` again with every read's `list`:
//! ```text
//! {"type":"invoke","time":1,"process":0,"ops":[{"append":{"key":"a","element":5}},{"read":{"key":"b"}}]}
//! {"type":"ok","time":9,"process":0,"ops":[{"append":{"key":"a","element":5}},{"read":{"key":"b","list":[1,2]}}]}
//! ```
//! `time` is from one monotonic clock (e.g. nanoseconds since the run began); a process has at
//! most one pending operation and takes a new id after an `info`. `nemesis` lines (and any
//! unknown fields) are ignored by the checkers and kept for the timeline.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::elle::{MicroOp, Txn, TxnStatus};
use crate::history::{Completion, History, Operation, INFINITY};

/// One line of a single-key operation history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<I, O> {
    Invoke {
        time: u64,
        process: u64,
        key: String,
        input: I,
    },
    Ok {
        time: u64,
        process: u64,
        output: O,
    },
    /// Proven not executed.
    Fail {
        time: u64,
        process: u64,
        #[serde(default)]
        error: String,
    },
    /// Outcome unknown.
    Info {
        time: u64,
        process: u64,
        #[serde(default)]
        error: String,
    },
    /// A fault injected or healed.
    Nemesis {
        time: u64,
        #[serde(default)]
        fault: String,
    },
}

/// One line of a list-append transaction history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxnEvent {
    Invoke {
        time: u64,
        process: u64,
        ops: Vec<MicroOp>,
    },
    Ok {
        time: u64,
        process: u64,
        ops: Vec<MicroOp>,
    },
    Fail {
        time: u64,
        process: u64,
        #[serde(default)]
        error: String,
    },
    Info {
        time: u64,
        process: u64,
        #[serde(default)]
        error: String,
    },
    Nemesis {
        time: u64,
        #[serde(default)]
        fault: String,
    },
}

/// Serializes one event as a line (without the newline).
pub fn to_line<T: Serialize>(event: &T) -> String {
    serde_json::to_string(event).unwrap_or_else(|e| format!("{{\"unserializable\":\"{e}\"}}"))
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n + 1, l))
}

/// Reads a single-key operation history.
pub fn parse_events<I: DeserializeOwned, O: DeserializeOwned>(
    text: &str,
) -> Result<Vec<Operation<I, O>>> {
    let mut history = History::new();
    for (n, line) in lines(text) {
        let event: Event<I, O> =
            serde_json::from_str(line).with_context(|| format!("line {n}: {line}"))?;
        let step = match event {
            Event::Invoke {
                time,
                process,
                key,
                input,
            } => history.invoke(time, process, key, input).map(|_| ()),
            Event::Ok {
                time,
                process,
                output,
            } => history.complete_process(process, time, Completion::Ok(output)),
            Event::Fail { time, process, .. } => {
                history.complete_process(process, time, Completion::Fail)
            }
            Event::Info { time, process, .. } => {
                history.complete_process(process, time, Completion::Unknown)
            }
            Event::Nemesis { .. } => Ok(()),
        };
        step.with_context(|| format!("line {n}"))?;
    }
    Ok(history.into_operations())
}

/// Reads a list-append transaction history. Transactions never completed are `Info`.
pub fn parse_txns(text: &str) -> Result<Vec<Txn>> {
    let mut txns: Vec<Txn> = Vec::new();
    let mut pending: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut last_time = 0;
    for (n, line) in lines(text) {
        let event: TxnEvent =
            serde_json::from_str(line).with_context(|| format!("line {n}: {line}"))?;
        let (time, process) = match &event {
            TxnEvent::Nemesis { .. } => continue,
            TxnEvent::Invoke { time, process, .. }
            | TxnEvent::Ok { time, process, .. }
            | TxnEvent::Fail { time, process, .. }
            | TxnEvent::Info { time, process, .. } => (*time, *process),
        };
        if time < last_time {
            bail!("line {n}: time {time} goes back (previous event at {last_time})");
        }
        last_time = time;
        if let TxnEvent::Invoke { ops, .. } = event {
            if pending.contains_key(&process) {
                bail!("line {n}: process {process} invoked while a transaction is pending");
            }
            pending.insert(process, txns.len());
            txns.push(Txn {
                process,
                call: time,
                ret: INFINITY,
                status: TxnStatus::Info,
                ops,
            });
            continue;
        }
        let Some(idx) = pending.remove(&process) else {
            bail!("line {n}: process {process} completed a transaction it never invoked");
        };
        let txn = &mut txns[idx];
        match event {
            TxnEvent::Ok { ops, .. } => {
                txn.ops = ops;
                txn.status = TxnStatus::Ok;
                txn.ret = time;
            }
            TxnEvent::Fail { .. } => {
                txn.status = TxnStatus::Fail;
                txn.ret = time;
            }
            _ => {}
        }
    }
    // Reads of transactions that did not complete with `ok` were not observed.
    for txn in txns.iter_mut().filter(|t| t.status != TxnStatus::Ok) {
        for op in &mut txn.ops {
            if let MicroOp::Read { list, .. } = op {
                *list = None;
            }
        }
    }
    Ok(txns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::etcd::{EtcdInput, EtcdOutput};

    #[test]
    fn etcd_events_round_trip_and_pair_up() {
        let events: Vec<Event<EtcdInput, EtcdOutput>> = vec![
            Event::Invoke {
                time: 1,
                process: 3,
                key: "k".into(),
                input: EtcdInput::Get,
            },
            Event::Nemesis {
                time: 2,
                fault: "pause leader".into(),
            },
            Event::Invoke {
                time: 2,
                process: 4,
                key: "k".into(),
                input: EtcdInput::Put { value: "v".into() },
            },
            Event::Ok {
                time: 3,
                process: 3,
                output: EtcdOutput::Get {
                    value: None,
                    mod_revision: 0,
                    revision: 1,
                },
            },
            Event::Info {
                time: 9,
                process: 4,
                error: "timeout".into(),
            },
        ];
        let text: String = events.iter().map(|e| to_line(e) + "\n").collect();
        assert!(text.contains(r#""input":{"put":{"value":"v"}}"#), "{text}");
        let ops = parse_events::<EtcdInput, EtcdOutput>(&text).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].ret, 3);
        assert!(ops[1].is_indeterminate());
        assert!(parse_events::<EtcdInput, EtcdOutput>("{\"type\":\"ok\"}").is_err());
    }

    #[test]
    fn txn_events_pair_up_and_hide_unobserved_reads() {
        let text = r#"
{"type":"invoke","time":1,"process":0,"ops":[{"append":{"key":"a","element":5}},{"read":{"key":"b"}}]}
{"type":"invoke","time":2,"process":1,"ops":[{"read":{"key":"a","list":[9]}}]}
{"type":"ok","time":3,"process":0,"ops":[{"append":{"key":"a","element":5}},{"read":{"key":"b","list":[1,2]}}]}
{"type":"info","time":4,"process":1,"error":"timeout"}
"#;
        let txns = parse_txns(text).unwrap();
        assert_eq!(txns.len(), 2);
        assert_eq!(txns[0].status, TxnStatus::Ok);
        assert_eq!(
            txns[0].ops[1],
            MicroOp::Read {
                key: "b".into(),
                list: Some(vec![1, 2])
            }
        );
        assert_eq!(txns[1].status, TxnStatus::Info);
        assert_eq!(txns[1].ret, INFINITY);
        assert_eq!(
            txns[1].ops[0],
            MicroOp::Read {
                key: "a".into(),
                list: None
            }
        );
        assert!(parse_txns(r#"{"type":"ok","time":1,"process":7,"ops":[]}"#).is_err());
    }
}
