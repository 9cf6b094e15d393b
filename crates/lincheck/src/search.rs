//! The Wing–Gong search with Lowe's memoisation, for one partition (one key).
//!
//! Call and return entries of all operations are kept in one doubly linked list sorted by time.
//! In a configuration, the operations that may be linearized next are those whose call entry
//! comes before the first remaining return entry (that operation must be linearized before
//! anything invoked after its completion). Each candidate is tried in turn: the model must
//! accept its output in the current state; then both of its entries are unlinked and the search
//! goes one level deeper. When all candidates fail, the last choice is undone. Linearizing every
//! determinate operation means success; exhausting the root's candidates means failure.
//!
//! Lowe's memoisation prunes a configuration (set of linearized operations, model state) that
//! was already explored through another order: its outcome cannot differ.
//!
//! Indeterminate operations have no return entry (they complete at +infinity): they never force
//! a backtrack, and since the model accepts them in any state, the search may stop as soon as
//! every determinate operation is linearized (the rest go at the end).

use std::collections::HashMap;
use std::time::Instant;

use crate::history::{Operation, INFINITY};
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
    /// `ret[i]` is the completion time the search uses for op i ([`INFINITY`]: no return entry).
    fn new<I, O>(ops: &[&Operation<I, O>], ret: &[u64]) -> Self {
        // Sort key: time, then calls before returns at equal times (treating a tie as overlap is
        // the permissive choice: it can never produce a false violation), then op index.
        let mut entries: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            entries.push((op.call, 0, i));
            if ret[i] != INFINITY {
                entries.push((ret[i], 1, i));
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

/// Completion times for the search: an indeterminate write whose (unique) value a completed
/// operation observed must have taken effect before that operation completed.
fn effective_returns<M: Model>(model: &M, ops: &[&Operation<M::Input, M::Output>]) -> Vec<u64> {
    let mut ret: Vec<u64> = ops.iter().map(|o| o.ret).collect();
    if !ops.iter().any(|o| o.is_indeterminate()) {
        return ret;
    }
    // value -> its only writer (None once a second writer shows up).
    let mut writer: HashMap<String, Option<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(v) = model.written_value(&op.input) {
            writer.entry(v).and_modify(|w| *w = None).or_insert(Some(i));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        let Some(out) = op.output.as_ref() else {
            continue;
        };
        let Some(v) = model.observed_value(&op.input, out) else {
            continue;
        };
        if let Some(&Some(w)) = writer.get(&v) {
            if w != i && ops[w].is_indeterminate() {
                ret[w] = ret[w].min(op.ret);
            }
        }
    }
    ret
}

type Bits = Box<[u64]>;

/// Lowe's memo of explored configurations, with subsumption for unbounded indeterminate ops.
///
/// A configuration is (linearized set, state). Split the set into the "core" (operations with
/// a return entry) and the "free" part (indeterminate operations with none). If (core, I', s)
/// was explored, then (core, I, s) with I' ⊆ I cannot succeed where it did not: every
/// continuation of the latter is one of the former, which merely leaves the extra free
/// operations for the end. So a configuration is pruned when a visited one with the same core
/// and state has a subset of its free operations. Without this, each open timed-out write
/// doubled the configurations the search could visit.
struct Memo {
    core: Vec<u64>,
    free: Vec<u64>,
    is_free: Vec<bool>,
    seen: HashMap<(Bits, usize), Vec<Bits>>,
}

impl Memo {
    fn new(n: usize, ret: &[u64]) -> Self {
        let words = n.div_ceil(64);
        Memo {
            core: vec![0; words],
            free: vec![0; words],
            is_free: ret.iter().map(|&r| r == INFINITY).collect(),
            seen: HashMap::new(),
        }
    }

    fn bits(&mut self, op: usize) -> &mut Vec<u64> {
        if self.is_free[op] {
            &mut self.free
        } else {
            &mut self.core
        }
    }

    fn set(&mut self, op: usize) {
        self.bits(op)[op / 64] |= 1 << (op % 64);
    }

    fn clear(&mut self, op: usize) {
        self.bits(op)[op / 64] &= !(1 << (op % 64));
    }

    /// Records the current configuration with `state`; false if it is dominated by one seen.
    fn visit(&mut self, state: usize) -> bool {
        let key = (self.core.clone().into_boxed_slice(), state);
        let entry = self.seen.entry(key).or_default();
        let free = &self.free;
        if entry
            .iter()
            .any(|seen| seen.iter().zip(free).all(|(s, f)| s & !f == 0))
        {
            return false;
        }
        entry.push(free.clone().into_boxed_slice());
        true
    }
}

/// One level of the depth-first search. Its candidates are the call entries before the first
/// remaining return entry, walked lazily in two passes: operations with a return entry first,
/// then unbounded indeterminate ones. The set tried is the same either way (the search stays
/// complete), but configurations with fewer free operations are explored first, and those
/// dominate (see [`Memo`]) the ones with more. The list below a frame is restored before the
/// frame resumes, so its cursor stays valid.
struct Frame {
    /// The last entry tried (0, the head, before the first).
    cursor: usize,
    /// 0: bounded operations; 1: free ones; 2: exhausted.
    pass: u8,
    /// The operation whose linearization led here, and the state before it (none at the root).
    via: Option<(usize, usize)>,
}

impl Frame {
    fn new(via: Option<(usize, usize)>) -> Frame {
        Frame {
            cursor: 0,
            pass: 0,
            via,
        }
    }

    /// The next candidate to try, if any.
    fn advance(&mut self, list: &LinkedEntries, is_free: &[bool]) -> Option<usize> {
        while self.pass < 2 {
            let entry = list.next[self.cursor];
            if entry == END || !list.node_op[entry].1 {
                self.pass += 1;
                self.cursor = 0;
                continue;
            }
            self.cursor = entry;
            let op = list.node_op[entry].0;
            if is_free[op] == (self.pass == 1) {
                return Some(op);
            }
        }
        None
    }
}

/// The operation whose return entry bounds the current candidates, if any.
fn first_return(list: &LinkedEntries) -> Option<usize> {
    let mut entry = list.next[0];
    while entry != END {
        let (op, is_call) = list.node_op[entry];
        if !is_call {
            return Some(op);
        }
        entry = list.next[entry];
    }
    None
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
    let ret = effective_returns(model, ops);
    let mut list = LinkedEntries::new(ops, &ret);
    let mut table = StateTable {
        ids: HashMap::new(),
        states: Vec::new(),
    };
    let mut state = table.intern(model.init());
    let mut memo = Memo::new(ops.len(), &ret);
    let mut det_done = 0usize;
    // Longest partial linearization seen, for the witness.
    let mut best: Vec<usize> = Vec::new();
    let mut best_state = state;
    let mut blocking = first_return(&list);
    let mut stack = vec![Frame::new(None)];
    let mut path: Vec<usize> = Vec::new();
    let mut steps: u64 = 0;

    while let Some(frame) = stack.last_mut() {
        steps += 1;
        if steps & 0xfff == 0 && Instant::now() > deadline {
            return SearchOutcome::Timeout;
        }
        let Some(op_idx) = frame.advance(&list, &memo.is_free) else {
            // Every candidate of this configuration failed: undo the step that led here.
            let frame = stack.pop().unwrap_or(Frame::new(None));
            if let Some((op, prev_state)) = frame.via {
                state = prev_state;
                memo.clear(op);
                list.unlift(op);
                path.pop();
                if !ops[op].is_indeterminate() {
                    det_done -= 1;
                }
            }
            continue;
        };
        let op = ops[op_idx];
        let Some(next_state) = model.step(&table.states[state], &op.input, op.output.as_ref())
        else {
            continue;
        };
        let next_id = table.intern(next_state);
        if next_id == state && ret[op_idx] == INFINITY {
            // An unbounded indeterminate op that changes nothing here (e.g. a timed-out read):
            // linearizing it now is the same as placing it at the end, so do not branch on it.
            continue;
        }
        memo.set(op_idx);
        if !memo.visit(next_id) {
            memo.clear(op_idx);
            continue;
        }
        list.lift(op_idx);
        path.push(op_idx);
        let prev_state = state;
        state = next_id;
        if !op.is_indeterminate() {
            det_done += 1;
            if det_done == n_det {
                // The indeterminate operations left may all be placed at the end (or never).
                return SearchOutcome::Linearizable;
            }
        }
        if path.len() > best.len() {
            best.clone_from(&path);
            best_state = state;
            blocking = first_return(&list);
        }
        stack.push(Frame::new(Some((op_idx, prev_state))));
    }
    SearchOutcome::Illegal {
        best_state: table.states[best_state].clone(),
        best,
        blocking,
    }
}
