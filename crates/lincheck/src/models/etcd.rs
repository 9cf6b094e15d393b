//! One etcd v3 key with revisions: Range (get), Put, DeleteRange, and compare-and-set as a Txn
//! comparing the value or the mod_revision. Check histories partitioned by key.
//!
//! The store revision is global, so from one key's point of view a write takes *some* revision
//! larger than the key's previous one. When the history recorded it (the response header of a
//! write is the new mod_revision), the state knows it exactly; when it did not (indeterminate
//! write), the state keeps only a lower bound, pinned later by a read that returns it. Because
//! a Txn comparing mod_revision against a merely bounded revision may go either way, the model
//! is nondeterministic and is used through [`Powerset`].
//!
//! Recording etcd responses into it (for the harness):
//! - `Range` → [`EtcdOutput::Get`] with the kv's value and `mod_revision` (`None`/0 if no kv)
//!   and the header revision.
//! - `Put` → [`EtcdOutput::Put`] with the header revision.
//! - `DeleteRange` → [`EtcdOutput::Delete`] with `deleted > 0` and the header revision.
//! - `Txn{compare, success:[put|delete], failure:[]}` → [`EtcdOutput::Txn`] with `succeeded` and
//!   the header revision.
//!
//! A header revision of 0 means "not recorded" (etcd revisions start at 1): the model then
//! skips the revision constraints of that response.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::history::Operation;
use crate::model::{NondetModel, Powerset};

/// Serialized (JSON lines, see [`crate::jsonl`]) as `"get"`, `{"put":{"value":"v"}}`,
/// `"delete"`, `{"cas_value":{"expected":null,"new":"v"}}`,
/// `{"cas_mod_revision":{"expected":7,"new":"v"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcdInput {
    Get,
    Put {
        value: String,
    },
    Delete,
    /// `Txn If(value == expected) Then(Put(new))`; `expected: None` compares "key absent"
    /// (etcd: `create_revision == 0` or `version == 0`).
    CasValue {
        expected: Option<String>,
        new: String,
    },
    /// `Txn If(mod_revision == expected) Then(Put(new))`, or `Then(DeleteRange)` when `new`
    /// is `None`. `expected == 0` compares "key absent".
    CasModRevision {
        expected: u64,
        new: Option<String>,
    },
}

/// Serialized as `{"get":{"value":"v","mod_revision":7,"revision":9}}`,
/// `{"put":{"revision":9}}`, `{"delete":{"deleted":true,"revision":9}}`,
/// `{"txn":{"succeeded":false,"revision":9}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcdOutput {
    Get {
        value: Option<String>,
        mod_revision: u64,
        revision: u64,
    },
    Put {
        revision: u64,
    },
    Delete {
        deleted: bool,
        revision: u64,
    },
    Txn {
        succeeded: bool,
        revision: u64,
    },
}

/// What is known of the revision of the key's last change (put or delete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Revision {
    Exact(u64),
    /// Unknown, but at least this.
    AtLeast(u64),
}

impl Revision {
    fn lower(self) -> u64 {
        match self {
            Revision::Exact(r) | Revision::AtLeast(r) => r,
        }
    }

    /// The revision of a change made after this one, given the response's header revision
    /// (0 = not recorded). `None` if the recorded revision is impossible.
    fn advance(self, recorded: u64) -> Option<Revision> {
        if recorded == 0 {
            return Some(Revision::AtLeast(self.lower() + 1));
        }
        (recorded > self.lower()).then_some(Revision::Exact(recorded))
    }

    /// Whether a header revision read now is possible (it cannot be older than this change).
    fn header_ok(self, header: u64) -> bool {
        header == 0 || header >= self.lower()
    }
}

/// One possible state of a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtcdKeyState {
    pub value: Option<String>,
    pub revision: Revision,
}

/// The nondeterministic etcd key model; use [`etcd_model`] to get the checkable [`Powerset`].
#[derive(Clone, Copy, Debug, Default)]
pub struct EtcdKeyModel;

/// The etcd key-with-revisions model, ready for [`crate::check`].
pub fn etcd_model() -> Powerset<EtcdKeyModel> {
    Powerset(EtcdKeyModel)
}

impl EtcdKeyModel {
    /// Applies the write branch of an operation (`new: None` = delete) to `s`.
    fn write(s: &EtcdKeyState, new: &Option<String>, recorded: u64) -> Option<EtcdKeyState> {
        if new.is_none() && s.value.is_none() {
            // Deleting nothing changes nothing; etcd does not bump the revision for it.
            return s.revision.header_ok(recorded).then(|| s.clone());
        }
        Some(EtcdKeyState {
            value: new.clone(),
            revision: s.revision.advance(recorded)?,
        })
    }
}

impl NondetModel for EtcdKeyModel {
    type State = EtcdKeyState;
    type Input = EtcdInput;
    type Output = EtcdOutput;

    fn init(&self) -> EtcdKeyState {
        EtcdKeyState {
            value: None,
            revision: Revision::Exact(0),
        }
    }

    fn step_into(
        &self,
        s: &EtcdKeyState,
        input: &EtcdInput,
        output: Option<&EtcdOutput>,
        next: &mut Vec<EtcdKeyState>,
    ) {
        use EtcdInput as I;
        use EtcdOutput as O;
        match (input, output) {
            (I::Get, None) => next.push(s.clone()),
            (
                I::Get,
                Some(O::Get {
                    value,
                    mod_revision,
                    revision,
                }),
            ) => {
                if value != &s.value || !s.revision.header_ok(*revision) {
                    return;
                }
                if value.is_none() {
                    if *mod_revision == 0 {
                        next.push(s.clone());
                    }
                    return;
                }
                match s.revision {
                    Revision::Exact(m) if m == *mod_revision => next.push(s.clone()),
                    Revision::AtLeast(lb) if *mod_revision >= lb => next.push(EtcdKeyState {
                        value: s.value.clone(),
                        revision: Revision::Exact(*mod_revision),
                    }),
                    _ => {}
                }
            }
            (I::Put { value }, None) => next.extend(Self::write(s, &Some(value.clone()), 0)),
            (I::Put { value }, Some(O::Put { revision })) => {
                next.extend(Self::write(s, &Some(value.clone()), *revision))
            }
            (I::Delete, None) => next.extend(Self::write(s, &None, 0)),
            (I::Delete, Some(O::Delete { deleted, revision })) => {
                if *deleted == s.value.is_some() {
                    next.extend(Self::write(s, &None, *revision));
                }
            }
            (I::CasValue { expected, new }, out) => {
                let holds = &s.value == expected;
                let new = Some(new.clone());
                match out {
                    None if holds => next.extend(Self::write(s, &new, 0)),
                    None => next.push(s.clone()),
                    Some(O::Txn {
                        succeeded,
                        revision,
                    }) if *succeeded == holds => {
                        if holds {
                            next.extend(Self::write(s, &new, *revision));
                        } else if s.revision.header_ok(*revision) {
                            next.push(s.clone());
                        }
                    }
                    Some(_) => {}
                }
            }
            (I::CasModRevision { expected, new }, out) => {
                // Which outcomes of the comparison are possible, and the state each assumes.
                let mut branches: Vec<(bool, EtcdKeyState)> = Vec::with_capacity(2);
                match (&s.value, s.revision) {
                    (None, _) => branches.push((*expected == 0, s.clone())),
                    (Some(_), Revision::Exact(m)) => branches.push((m == *expected, s.clone())),
                    (Some(_), Revision::AtLeast(lb)) => {
                        if *expected != 0 && *expected >= lb {
                            let pinned = EtcdKeyState {
                                value: s.value.clone(),
                                revision: Revision::Exact(*expected),
                            };
                            branches.push((true, pinned));
                        }
                        // Failing keeps the bound (the fact "≠ expected" is dropped: permissive).
                        branches.push((false, s.clone()));
                    }
                }
                for (holds, assumed) in branches {
                    match out {
                        None if holds => next.extend(Self::write(&assumed, new, 0)),
                        None => next.push(assumed),
                        Some(O::Txn {
                            succeeded,
                            revision,
                        }) if *succeeded == holds => {
                            if holds {
                                next.extend(Self::write(&assumed, new, *revision));
                            } else if assumed.revision.header_ok(*revision) {
                                next.push(assumed);
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            // An output of the wrong kind can never be explained.
            (I::Get | I::Put { .. } | I::Delete, Some(_)) => {}
        }
    }

    fn written_value(&self, input: &EtcdInput) -> Option<String> {
        match input {
            EtcdInput::Put { value } | EtcdInput::CasValue { new: value, .. } => {
                Some(value.clone())
            }
            EtcdInput::CasModRevision { new, .. } => new.clone(),
            EtcdInput::Get | EtcdInput::Delete => None,
        }
    }

    fn observed_value(&self, input: &EtcdInput, output: &EtcdOutput) -> Option<String> {
        match (input, output) {
            (_, EtcdOutput::Get { value, .. }) => value.clone(),
            (
                EtcdInput::CasValue { expected, .. },
                EtcdOutput::Txn {
                    succeeded: true, ..
                },
            ) => expected.clone(),
            _ => None,
        }
    }

    fn describe_op(&self, input: &EtcdInput, output: Option<&EtcdOutput>) -> String {
        let inp = match input {
            EtcdInput::Get => "get".to_string(),
            EtcdInput::Put { value } => format!("put {value:?}"),
            EtcdInput::Delete => "delete".to_string(),
            EtcdInput::CasValue { expected, new } => format!("cas value {expected:?}->{new:?}"),
            EtcdInput::CasModRevision { expected, new } => {
                format!("cas mod_rev {expected}->{new:?}")
            }
        };
        let out = match output {
            None => "? (indeterminate)".to_string(),
            Some(EtcdOutput::Get {
                value,
                mod_revision,
                revision,
            }) => {
                format!("{value:?} mod_rev {mod_revision} (rev {revision})")
            }
            Some(EtcdOutput::Put { revision }) => format!("ok rev {revision}"),
            Some(EtcdOutput::Delete { deleted, revision }) => {
                format!("deleted={deleted} rev {revision}")
            }
            Some(EtcdOutput::Txn {
                succeeded,
                revision,
            }) => {
                format!("succeeded={succeeded} rev {revision}")
            }
        };
        format!("{inp} -> {out}")
    }
}

/// A violation of the global revision order, which the per-key search cannot see: etcd has one
/// revision counter for all keys, so revisions must agree with real time across keys too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevisionAnomaly {
    /// Two different successful writes reported the same revision (indices into the ops).
    DuplicateWriteRevision { revision: u64, a: usize, b: usize },
    /// `later` was invoked after `earlier` completed, yet reported an older revision (or, being
    /// a write, not a newer one).
    RevisionWentBack {
        earlier: usize,
        earlier_revision: u64,
        later: usize,
        later_revision: u64,
    },
}

impl std::fmt::Display for RevisionAnomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevisionAnomaly::DuplicateWriteRevision { revision, a, b } => {
                write!(f, "ops #{a} and #{b} both wrote revision {revision}")
            }
            RevisionAnomaly::RevisionWentBack {
                earlier,
                earlier_revision,
                later,
                later_revision,
            } => {
                write!(
                    f,
                    "op #{later} began after op #{earlier} (revision {earlier_revision}) completed, \
                     yet reported revision {later_revision}"
                )
            }
        }
    }
}

/// The header revision an operation reported (0 = not recorded) and whether it made a change.
fn observed_revision(op: &Operation<EtcdInput, EtcdOutput>) -> Option<(u64, bool)> {
    let (revision, wrote) = match (&op.input, op.output.as_ref()?) {
        (_, EtcdOutput::Get { revision, .. }) => (*revision, false),
        (_, EtcdOutput::Put { revision }) => (*revision, true),
        (_, EtcdOutput::Delete { deleted, revision }) => (*revision, *deleted),
        (
            EtcdInput::CasModRevision {
                expected: 0,
                new: None,
            },
            EtcdOutput::Txn { revision, .. },
        ) => (*revision, false),
        (
            _,
            EtcdOutput::Txn {
                succeeded,
                revision,
            },
        ) => (*revision, *succeeded),
    };
    (revision != 0).then_some((revision, wrote))
}

/// Checks the revisions of a whole etcd history (all keys) against real time, in
/// O(n log n): every operation must report a revision at least as new as any operation that
/// completed before it was invoked (strictly newer for a write), and no two writes share one.
pub fn revision_anomalies(ops: &[Operation<EtcdInput, EtcdOutput>]) -> Vec<RevisionAnomaly> {
    let mut anomalies = Vec::new();
    let known: Vec<(usize, u64, bool)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| observed_revision(op).map(|(r, w)| (i, r, w)))
        .collect();
    let mut writers: HashMap<u64, usize> = HashMap::new();
    for &(i, r, wrote) in &known {
        if wrote {
            if let Some(&other) = writers.get(&r) {
                anomalies.push(RevisionAnomaly::DuplicateWriteRevision {
                    revision: r,
                    a: other,
                    b: i,
                });
            } else {
                writers.insert(r, i);
            }
        }
    }
    let mut by_ret = known.clone();
    by_ret.sort_by_key(|&(i, _, _)| ops[i].ret);
    let mut by_call = known;
    by_call.sort_by_key(|&(i, _, _)| ops[i].call);
    let mut done = 0;
    let mut newest: Option<(u64, usize)> = None;
    for &(i, r, wrote) in &by_call {
        while done < by_ret.len() && ops[by_ret[done].0].ret < ops[i].call {
            let (j, rj, _) = by_ret[done];
            match newest {
                Some((m, _)) if m >= rj => {}
                _ => newest = Some((rj, j)),
            }
            done += 1;
        }
        if let Some((m, j)) = newest {
            if r < m || (wrote && r == m) {
                anomalies.push(RevisionAnomaly::RevisionWentBack {
                    earlier: j,
                    earlier_revision: m,
                    later: i,
                    later_revision: r,
                });
            }
        }
    }
    anomalies
}
