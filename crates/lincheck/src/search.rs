//! The Wing–Gong search with Lowe's memoisation, for one partition (one key).
//!
//! Call and return entries of all operations are kept in one doubly linked list sorted by time.
//! Walking the list, at a call entry we try to linearize that operation now (the model must
//! accept its output in the current state); on success both of its entries are unlinked and the
//! walk restarts at the head. Reaching a return entry means that operation had to be linearized
//! already: undo the last choice and try the next candidate. An empty list of determinate
//! operations means success; undoing past the first choice means failure.
//!
//! Lowe's memoisation prunes a configuration (set of linearized operations, model state) that
//! was already explored through another order: its outcome cannot differ.
//!
//! Indeterminate operations have no return entry (they complete at +infinity): they never force
//! a backtrack, and since the model accepts them in any state, the search may stop as soon as
//! every determinate operation is linearized (the rest go at the end).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::history::Operation;
use crate::model::Model;

const END: usize = usize::MAX;

/// Outcome of the search over one partition.
#[derive(Debug)]
pub(crate) enum SearchOutcome<S> {
    Linearizable,
    Illegal {
        /// The longest partial linearization found (indices into the ops), in order.
        best: Vec<usize>,
        /// The model state after `best`.
        best_state: S,
        /// The operation whose completion stopped the longest partial linearization.
        blocking: Option<usize>,
    },
    /// The deadline passed first.
    Timeout,
}

struct LinkedEntries {
    /// Node k (1-based) is entry k-1; node 0 is the head sentinel.
    next: Vec<usize>,
    prev: Vec<usize>,
    /// (op, is_call) per node.
    node_op: Vec<(usize, bool)>,
    call_node: Vec<usize>,
    ret_node: Vec<Option<usize>>,
}

impl LinkedEntries {
    fn new<I, O>(ops: &[&Operation<I, O>]) -> Self {
        // Sort key: time, then calls before returns at equal times (treating a tie as overlap is
        // the permissive choice: it can never produce a false violation), then op index.
        let mut entries: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            entries.push((op.call, 0, i));
            if !op.is_indeterminate() {
                entries.push((op.ret, 1, i));
            }
        }
        entries.sort_unstable();
        let m = entries.len();
        let mut next = vec![END; m + 1];
        let mut prev = vec![0; m + 1];
        let mut node_op = vec![(0, false); m + 1];
        let mut call_node = vec![0; ops.len()];
        let mut ret_node = vec![None; ops.len()];
        for (k, &(_, kind, op)) in entries.iter().enumerate() {
            let node = k + 1;
            next[k] = node;
            prev[node] = k;
            node_op[node] = (op, kind == 0);
            if kind == 0 {
                call_node[op] = node;
            } else {
                ret_node[op] = Some(node);
            }
        }
        LinkedEntries {
            next,
            prev,
            node_op,
            call_node,
            ret_node,
        }
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != END {
            self.prev[n] = x;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(r) = self.ret_node[op] {
            self.unlink(r);
        }
    }

    /// Exact inverse of `lift` (dancing links: relink in reverse order).
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.ret_node[op] {
            self.relink(r);
        }
        self.relink(self.call_node[op]);
    }
}

/// Interns model states so the memo cache stores a small id instead of a state.
struct StateTable<S> {
    ids: HashMap<S, usize>,
    states: Vec<S>,
}

impl<S: Clone + Eq + std::hash::Hash> StateTable<S> {
    fn intern(&mut self, s: S) -> usize {
        if let Some(&id) = self.ids.get(&s) {
            return id;
        }
        let id = self.states.len();
        self.states.push(s.clone());
        self.ids.insert(s, id);
        id
    }
}

/// Runs the search over `ops` (all of one partition). Checks the clock every few thousand
/// steps and gives up with `Timeout` after `deadline`.
pub(crate) fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    deadline: Instant,
) -> SearchOutcome<M::State> {
    let n_det = ops.iter().filter(|o| !o.is_indeterminate()).count();
    if n_det == 0 {
        return SearchOutcome::Linearizable;
    }
    let mut list = LinkedEntries::new(ops);
    let mut table = StateTable {
        ids: HashMap::new(),
        states: Vec::new(),
    };
    let mut state = table.intern(model.init());
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut cache: HashSet<(Box<[u64]>, usize)> = HashSet::new();
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut det_done = 0usize;
    let mut best: Vec<usize> = Vec::new();
    let mut best_state = state;
    let mut blocking = None;
    let mut at_best = false;
    let mut steps: u64 = 0;

    let mut entry = list.next[0];
    loop {
        steps += 1;
        if steps & 0xfff == 0 && Instant::now() > deadline {
            return SearchOutcome::Timeout;
        }
        let is_call = entry != END && list.node_op[entry].1;
        if is_call {
            let op_idx = list.node_op[entry].0;
            let op = ops[op_idx];
            if let Some(next_state) =
                model.step(&table.states[state], &op.input, op.output.as_ref())
            {
                let next_id = table.intern(next_state);
                linearized[op_idx / 64] |= 1 << (op_idx % 64);
                if cache.insert((linearized.clone().into_boxed_slice(), next_id)) {
                    stack.push((op_idx, state));
                    state = next_id;
                    list.lift(op_idx);
                    if !op.is_indeterminate() {
                        det_done += 1;
                        if det_done == n_det {
                            return SearchOutcome::Linearizable;
                        }
                    }
                    if stack.len() > best.len() {
                        best = stack.iter().map(|&(o, _)| o).collect();
                        best_state = state;
                        blocking = None;
                        at_best = true;
                    }
                    entry = list.next[0];
                    continue;
                }
                linearized[op_idx / 64] &= !(1 << (op_idx % 64));
            }
            entry = list.next[entry];
        } else {
            // A return entry (or, defensively, the end): backtrack.
            if at_best && entry != END {
                blocking = Some(list.node_op[entry].0);
            }
            let Some((op_idx, prev_state)) = stack.pop() else {
                return SearchOutcome::Illegal {
                    best_state: table.states[best_state].clone(),
                    best,
                    blocking,
                };
            };
            at_best = false;
            state = prev_state;
            linearized[op_idx / 64] &= !(1 << (op_idx % 64));
            list.unlift(op_idx);
            if !ops[op_idx].is_indeterminate() {
                det_done -= 1;
            }
            entry = list.next[list.call_node[op_idx]];
        }
    }
}
