//! The history model: operations with an invocation and a completion on one monotonic clock.
//!
//! A client records `invoke` *before* sending a request and `complete` *after* it has the answer,
//! both read from the same monotonic clock of the one recording process. How an operation ends
//! decides what the checker may assume about it:
//!
//! - [`Completion::Ok`]: the operation took effect exactly once, somewhere between its invocation
//!   and its completion, and returned this output.
//! - [`Completion::Fail`]: an error that *proves* the operation never executed (e.g. rejected
//!   before it was sent). The operation is dropped from the history.
//! - [`Completion::Unknown`]: timeout, broken connection, `UNAVAILABLE` after sending... The
//!   operation may or may not have taken effect, at any time after its invocation. It is kept
//!   with its completion at +infinity and no output. An operation never completed is the same.

use std::collections::HashMap;
use std::fmt;

/// The completion time of an indeterminate operation: it may take effect at any time after its
/// invocation.
pub const INFINITY: u64 = u64::MAX;

/// One operation of a history, as the checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client (Jepsen "process") that issued it. A client whose operation was indeterminate
    /// must continue under a new id, because it cannot know when that operation ends.
    pub process: u64,
    /// The partition the operation belongs to (a key). Operations on different keys must be
    /// independent for the model: the checker checks each key on its own (P-compositionality).
    pub key: String,
    pub input: I,
    /// `None` when the result is unknown (indeterminate operation).
    pub output: Option<O>,
    /// Invocation time.
    pub call: u64,
    /// Completion time; [`INFINITY`] for an indeterminate operation.
    pub ret: u64,
}

impl<I, O> Operation<I, O> {
    /// True if the operation may or may not have happened (no known output).
    pub fn is_indeterminate(&self) -> bool {
        self.output.is_none()
    }
}

/// How an invoked operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion<O> {
    /// It took effect and returned this output.
    Ok(O),
    /// It provably never took effect: dropped from the history.
    Fail,
    /// It may or may not have taken effect: completes at +infinity with an unknown output.
    Unknown,
}

/// Identifies an invoked operation inside a [`History`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(usize);

/// Errors that reveal a malformed history (a recorder bug, or a corrupt log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    UnknownOp,
    AlreadyCompleted,
    CompletedBeforeInvoked { call: u64, ret: u64 },
    ProcessBusy { process: u64 },
    ProcessIdle { process: u64 },
    ClockWentBack { last: u64, now: u64 },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::UnknownOp => write!(f, "unknown operation id"),
            HistoryError::AlreadyCompleted => write!(f, "operation completed twice"),
            HistoryError::CompletedBeforeInvoked { call, ret } => {
                write!(
                    f,
                    "operation completes at {ret}, before its invocation at {call}"
                )
            }
            HistoryError::ProcessBusy { process } => write!(
                f,
                "process {process} invoked a new operation while one is still pending \
                 (a client must take a new id after an indeterminate operation)"
            ),
            HistoryError::ProcessIdle { process } => {
                write!(
                    f,
                    "process {process} completed an operation it never invoked"
                )
            }
            HistoryError::ClockWentBack { last, now } => {
                write!(
                    f,
                    "event at time {now} recorded after an event at time {last}"
                )
            }
        }
    }
}

impl std::error::Error for HistoryError {}

#[derive(Clone, Debug)]
struct Slot<I, O> {
    op: Operation<I, O>,
    state: SlotState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Pending,
    Done,
    Failed,
}

/// A history being recorded. Either address operations by the [`OpId`] that `invoke` returns,
/// or (Jepsen style, at most one pending operation per process) by process.
#[derive(Clone, Debug)]
pub struct History<I, O> {
    slots: Vec<Slot<I, O>>,
    pending_by_process: HashMap<u64, usize>,
    last_time: u64,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History {
            slots: Vec::new(),
            pending_by_process: HashMap::new(),
            last_time: 0,
        }
    }
}

impl<I, O> History<I, O> {
    pub fn new() -> Self {
        Self::default()
    }

    fn tick(&mut self, time: u64) -> Result<(), HistoryError> {
        if time < self.last_time {
            return Err(HistoryError::ClockWentBack {
                last: self.last_time,
                now: time,
            });
        }
        self.last_time = time;
        Ok(())
    }

    /// Records an invocation at `time` (must not go back in time). Errors if `process` still
    /// has a pending operation.
    pub fn invoke(
        &mut self,
        time: u64,
        process: u64,
        key: impl Into<String>,
        input: I,
    ) -> Result<OpId, HistoryError> {
        if self.pending_by_process.contains_key(&process) {
            return Err(HistoryError::ProcessBusy { process });
        }
        self.tick(time)?;
        let idx = self.slots.len();
        self.slots.push(Slot {
            op: Operation {
                process,
                key: key.into(),
                input,
                output: None,
                call: time,
                ret: INFINITY,
            },
            state: SlotState::Pending,
        });
        self.pending_by_process.insert(process, idx);
        Ok(OpId(idx))
    }

    /// Records how operation `id` ended, at `time`.
    pub fn complete(
        &mut self,
        id: OpId,
        time: u64,
        completion: Completion<O>,
    ) -> Result<(), HistoryError> {
        let slot = self.slots.get(id.0).ok_or(HistoryError::UnknownOp)?;
        if slot.state != SlotState::Pending {
            return Err(HistoryError::AlreadyCompleted);
        }
        if time < slot.op.call {
            return Err(HistoryError::CompletedBeforeInvoked {
                call: slot.op.call,
                ret: time,
            });
        }
        self.tick(time)?;
        let slot = &mut self.slots[id.0];
        match completion {
            Completion::Ok(out) => {
                slot.op.output = Some(out);
                slot.op.ret = time;
                slot.state = SlotState::Done;
            }
            Completion::Fail => slot.state = SlotState::Failed,
            Completion::Unknown => slot.state = SlotState::Done,
        }
        let process = slot.op.process;
        self.pending_by_process.remove(&process);
        Ok(())
    }

    /// Completes the pending operation of `process` (Jepsen-style logs).
    pub fn complete_process(
        &mut self,
        process: u64,
        time: u64,
        completion: Completion<O>,
    ) -> Result<(), HistoryError> {
        let idx = *self
            .pending_by_process
            .get(&process)
            .ok_or(HistoryError::ProcessIdle { process })?;
        self.complete(OpId(idx), time, completion)
    }

    /// The operations to check: failed ones dropped, pending ones indeterminate.
    pub fn into_operations(self) -> Vec<Operation<I, O>> {
        self.slots
            .into_iter()
            .filter(|s| s.state != SlotState::Failed)
            .map(|s| s.op)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_ops_are_dropped_and_pending_ones_become_indeterminate() {
        let mut h: History<&str, u32> = History::new();
        let a = h.invoke(1, 1, "k", "a").unwrap();
        let b = h.invoke(2, 2, "k", "b").unwrap();
        let _c = h.invoke(3, 3, "k", "c").unwrap();
        let d = h.invoke(4, 4, "k", "d").unwrap();
        h.complete(a, 5, Completion::Ok(7)).unwrap();
        h.complete(b, 6, Completion::Fail).unwrap();
        h.complete(d, 7, Completion::Unknown).unwrap();
        let ops = h.into_operations();
        let names: Vec<_> = ops.iter().map(|o| o.input).collect();
        assert_eq!(names, vec!["a", "c", "d"]);
        assert_eq!(ops[0].output, Some(7));
        assert_eq!(ops[0].ret, 5);
        assert!(ops[1].is_indeterminate() && ops[1].ret == INFINITY);
        assert!(ops[2].is_indeterminate() && ops[2].ret == INFINITY);
    }

    #[test]
    fn malformed_histories_are_rejected() {
        let mut h: History<(), ()> = History::new();
        let a = h.invoke(10, 1, "k", ()).unwrap();
        assert_eq!(
            h.invoke(11, 1, "k", ()),
            Err(HistoryError::ProcessBusy { process: 1 })
        );
        assert!(h.complete(a, 9, Completion::Ok(())).is_err());
        h.complete(a, 12, Completion::Ok(())).unwrap();
        assert_eq!(
            h.complete(a, 13, Completion::Ok(())),
            Err(HistoryError::AlreadyCompleted)
        );
        assert_eq!(
            h.complete_process(1, 14, Completion::Ok(())),
            Err(HistoryError::ProcessIdle { process: 1 })
        );
        assert!(matches!(
            h.invoke(5, 2, "k", ()),
            Err(HistoryError::ClockWentBack { .. })
        ));
    }
}
