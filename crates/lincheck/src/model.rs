//! Sequential specifications the checker tests histories against.

use std::fmt::Debug;
use std::hash::Hash;

/// A deterministic sequential specification of one partition (one key) of an object.
///
/// `step` must be pure. With `output == None` (an indeterminate operation) it must accept in
/// every state (return `Some`): the checker relies on this to place indeterminate operations
/// after everything else when they are not needed, which is what "completes at +infinity" means.
pub trait Model {
    /// The state of one partition. Hashing and equality drive Lowe's memoisation, so two states
    /// that behave the same should compare equal.
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug;

    /// The state of a partition that no operation has touched yet.
    fn init(&self) -> Self::State;

    /// Applies `input` in `state`; `None` if the observed `output` is impossible there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// The value a write-like operation stores, when the workload writes unique values. Used
    /// only to bound indeterminate writes (see [`Model::observed_value`]); `None` disables that.
    fn written_value(&self, _input: &Self::Input) -> Option<String> {
        None
    }

    /// The value a completed operation proves was stored when it took effect (a read's result,
    /// a successful compare's expected value). If exactly one operation of a partition writes
    /// that value, it must have taken effect before this operation completed, so the checker
    /// gives an indeterminate writer this completion time instead of +infinity. This is sound
    /// only for values that no initial state holds; it turns histories with many timed-out
    /// writes from exponential back into tractable ones.
    fn observed_value(&self, _input: &Self::Input, _output: &Self::Output) -> Option<String> {
        None
    }

    /// Human-readable operation, for reports.
    fn describe_op(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(out) => format!("{input:?} -> {out:?}"),
            None => format!("{input:?} -> ?"),
        }
    }

    /// Human-readable state, for reports.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// A specification whose step may lead to several states (e.g. an indeterminate compare-and-set
/// whose comparison the checker cannot decide). [`Powerset`] turns it into a [`Model`] whose
/// state is the sorted set of possible states.
pub trait NondetModel {
    type State: Clone + Ord + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug;
    fn init(&self) -> Self::State;
    /// See [`Model::written_value`].
    fn written_value(&self, _input: &Self::Input) -> Option<String> {
        None
    }
    /// See [`Model::observed_value`].
    fn observed_value(&self, _input: &Self::Input, _output: &Self::Output) -> Option<String> {
        None
    }
    /// Pushes every state `input` can lead to from `state` given `output` into `next`.
    fn step_into(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
        next: &mut Vec<Self::State>,
    );
    fn describe_op(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(out) => format!("{input:?} -> {out:?}"),
            None => format!("{input:?} -> ?"),
        }
    }
}

/// Adapter from a [`NondetModel`] to a [`Model`] over sets of states (kept sorted and
/// deduplicated so equal sets compare and hash equal).
#[derive(Clone, Debug, Default)]
pub struct Powerset<N>(pub N);

impl<N: NondetModel> Model for Powerset<N> {
    type State = Vec<N::State>;
    type Input = N::Input;
    type Output = N::Output;

    fn init(&self) -> Self::State {
        vec![self.0.init()]
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State> {
        let mut next = Vec::new();
        for s in state {
            self.0.step_into(s, input, output, &mut next);
        }
        if next.is_empty() {
            return None;
        }
        next.sort();
        next.dedup();
        Some(next)
    }

    fn written_value(&self, input: &Self::Input) -> Option<String> {
        self.0.written_value(input)
    }

    fn observed_value(&self, input: &Self::Input, output: &Self::Output) -> Option<String> {
        self.0.observed_value(input, output)
    }

    fn describe_op(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        self.0.describe_op(input, output)
    }

    fn describe_state(&self, state: &Self::State) -> String {
        if state.len() == 1 {
            format!("{:?}", state[0])
        } else {
            format!("one of {state:?}")
        }
    }
}
