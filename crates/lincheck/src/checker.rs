//! The linearizability checker: partitions a history by key, searches each partition within a
//! time budget, and on a violation narrows it to a small witness window for the report.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use crate::history::{Operation, INFINITY};
use crate::model::Model;
use crate::search::{search, SearchOutcome};

/// The three honest answers. `Unknown` (budget exhausted) must never be reported as a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not-linearizable",
            Verdict::Unknown => "unknown",
        })
    }
}

/// Checker settings.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Wall-clock budget for the whole history (all partitions, plus narrowing a violation).
    pub budget: Duration,
    /// Whether to narrow a violation to its shortest non-linearizable prefix (a few extra
    /// searches); without it the witness is taken from the whole partition.
    pub minimise: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            budget: Duration::from_secs(60),
            minimise: true,
        }
    }
}

/// The result of checking one history.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub verdict: Verdict,
    /// Number of partitions (keys) in the history.
    pub partitions: usize,
    /// Largest partition, in operations.
    pub largest_partition: usize,
    /// Keys whose search ran out of budget (the verdict is `Unknown` if this is not empty and no
    /// violation was found).
    pub unknown_keys: Vec<String>,
    /// The witness, when the verdict is `NotLinearizable`.
    pub violation: Option<Violation>,
    pub elapsed: Duration,
}

/// Why an operation appears in a violation window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowRole {
    /// Part of the longest partial linearization (shown for context: it set up the state).
    LinearizedContext,
    /// Not linearizable after the longest partial linearization.
    NotLinearized,
    /// Its completion is where the longest partial linearization got stuck.
    Blocking,
}

/// One operation of a violation window, already described by the model.
#[derive(Clone, Debug)]
pub struct WindowOp {
    pub process: u64,
    pub call: u64,
    /// `None` for an indeterminate operation (completes at +infinity).
    pub ret: Option<u64>,
    pub description: String,
    pub role: WindowRole,
}

/// A witness of non-linearizability within one key.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: String,
    /// The history of this key, cut at this time (operations invoked later dropped, operations
    /// still pending then made indeterminate), is already not linearizable. Such a cut can only
    /// be more permissive than the real history, so it is a sound witness.
    pub cut_time: u64,
    pub ops_in_cut: usize,
    pub ops_in_partition: usize,
    /// Length of the longest partial linearization the search found in the cut.
    pub linearized_count: usize,
    /// Model state after that partial linearization.
    pub state_after_prefix: String,
    /// Last few linearized operations, then every operation that could not follow them.
    pub window: Vec<WindowOp>,
    /// Indeterminate operations invoked before the window that were left out of the partial
    /// linearization (they could have been placed, and did not help).
    pub older_indeterminate_not_linearized: usize,
}

/// How many linearized operations to show before the stuck point.
const CONTEXT_OPS: usize = 3;

/// Checks `ops` against `model`, each key on its own.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    options: &CheckOptions,
) -> CheckResult {
    let start = Instant::now();
    let deadline = start + options.budget;
    let mut by_key: BTreeMap<&str, Vec<&OpOf<M>>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut partitions: Vec<(&str, Vec<&OpOf<M>>)> = by_key.into_iter().collect();
    // Small partitions first, so one hard key does not eat the budget of all the easy ones.
    partitions.sort_by_key(|(_, p)| p.len());
    let mut result = CheckResult {
        verdict: Verdict::Linearizable,
        partitions: partitions.len(),
        largest_partition: partitions.iter().map(|(_, p)| p.len()).max().unwrap_or(0),
        unknown_keys: Vec::new(),
        violation: None,
        elapsed: Duration::ZERO,
    };
    for (key, part) in &partitions {
        match search(model, part, deadline) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::Timeout => result.unknown_keys.push(key.to_string()),
            SearchOutcome::Illegal {
                best,
                best_state,
                blocking,
            } => {
                result.verdict = Verdict::NotLinearizable;
                result.violation = Some(witness(
                    model,
                    key,
                    part,
                    (best, best_state, blocking),
                    deadline,
                    options.minimise,
                ));
                break;
            }
        }
    }
    if result.verdict != Verdict::NotLinearizable && !result.unknown_keys.is_empty() {
        result.verdict = Verdict::Unknown;
    }
    result.elapsed = start.elapsed();
    result
}

type Failure<S> = (Vec<usize>, S, Option<usize>);
type OpOf<M> = Operation<<M as Model>::Input, <M as Model>::Output>;
/// A failing cut: its time, its operations, and how the search failed on it.
type FailingCut<M> = (u64, Vec<OpOf<M>>, Failure<<M as Model>::State>);

/// The partition cut at `t`: operations invoked after `t` dropped, those completing after `t`
/// made indeterminate.
fn cut_at<I: Clone, O: Clone>(part: &[&Operation<I, O>], t: u64) -> Vec<Operation<I, O>> {
    part.iter()
        .filter(|o| o.call <= t)
        .map(|o| {
            let mut o = (*o).clone();
            if o.ret > t {
                o.ret = INFINITY;
                o.output = None;
            }
            o
        })
        .collect()
}

/// Narrows a failing partition to its shortest failing cut (binary search: failing cuts are
/// upward closed), then describes the stuck point of that cut.
fn witness<M: Model>(
    model: &M,
    key: &str,
    part: &[&Operation<M::Input, M::Output>],
    full_failure: Failure<M::State>,
    deadline: Instant,
    minimise: bool,
) -> Violation {
    let mut times: Vec<u64> = part
        .iter()
        .filter(|o| !o.is_indeterminate())
        .map(|o| o.ret)
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut chosen: Option<FailingCut<M>> = None;
    if minimise && !times.is_empty() {
        let (mut lo, mut hi) = (0usize, times.len() - 1);
        // Invariant: cuts at indices > hi fail (the full partition fails); find the first.
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let cut = cut_at(part, times[mid]);
            let refs: Vec<&Operation<M::Input, M::Output>> = cut.iter().collect();
            match search(model, &refs, deadline) {
                SearchOutcome::Illegal {
                    best,
                    best_state,
                    blocking,
                } => {
                    chosen = Some((times[mid], cut, (best, best_state, blocking)));
                    if mid == 0 {
                        break;
                    }
                    hi = mid - 1;
                }
                SearchOutcome::Linearizable => lo = mid + 1,
                // Out of budget: keep the best cut proven so far.
                SearchOutcome::Timeout => break,
            }
        }
    }
    let (cut_time, ops, failure) = match chosen {
        Some(c) => c,
        None => (
            times.last().copied().unwrap_or(0),
            part.iter().map(|o| (*o).clone()).collect(),
            full_failure,
        ),
    };
    describe(model, key, part.len(), cut_time, &ops, failure)
}

fn describe<M: Model>(
    model: &M,
    key: &str,
    ops_in_partition: usize,
    cut_time: u64,
    ops: &[Operation<M::Input, M::Output>],
    (best, best_state, blocking): Failure<M::State>,
) -> Violation {
    let in_best: HashSet<usize> = best.iter().copied().collect();
    let window_start = ops
        .iter()
        .enumerate()
        .filter(|(i, o)| !in_best.contains(i) && !o.is_indeterminate())
        .map(|(_, o)| o.call)
        .min()
        .unwrap_or(0);
    let to_window = |i: usize, role: WindowRole| {
        let o = &ops[i];
        WindowOp {
            process: o.process,
            call: o.call,
            ret: (o.ret != INFINITY).then_some(o.ret),
            description: model.describe_op(&o.input, o.output.as_ref()),
            role,
        }
    };
    let mut window: Vec<WindowOp> = best[best.len().saturating_sub(CONTEXT_OPS)..]
        .iter()
        .map(|&i| to_window(i, WindowRole::LinearizedContext))
        .collect();
    let mut older = 0;
    let mut rest: Vec<usize> = (0..ops.len()).filter(|i| !in_best.contains(i)).collect();
    rest.sort_by_key(|&i| (ops[i].call, i));
    for i in rest {
        if ops[i].is_indeterminate() && ops[i].call < window_start {
            older += 1;
            continue;
        }
        let role = if Some(i) == blocking {
            WindowRole::Blocking
        } else {
            WindowRole::NotLinearized
        };
        window.push(to_window(i, role));
    }
    Violation {
        key: key.to_string(),
        cut_time,
        ops_in_cut: ops.len(),
        ops_in_partition,
        linearized_count: best.len(),
        state_after_prefix: model.describe_state(&best_state),
        window,
        older_indeterminate_not_linearized: older,
    }
}
