//! A single register of integers with read, write and compare-and-set: the object of the Jepsen
//! etcd (0.4-era) CAS-register logs. `None` is the absent value (`nil`).

use crate::model::Model;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    Read,
    Write(i64),
    /// Set to `new` if the current value is `expected`.
    Cas {
        expected: i64,
        new: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    Read(Option<i64>),
    Write,
    /// Whether the comparison held (and the write happened). A CAS whose comparison failed is a
    /// completed operation with a known result, not a failure to execute.
    Cas(bool),
}

/// The register model. State: the current value.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Option<i64>> {
        match (input, output) {
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Read, Some(RegisterOutput::Read(v))) => (v == state).then_some(*state),
            (RegisterInput::Write(v), None | Some(RegisterOutput::Write)) => Some(Some(*v)),
            (RegisterInput::Cas { expected, new }, out) => {
                let holds = *state == Some(*expected);
                let next = if holds { Some(*new) } else { *state };
                match out {
                    None => Some(next),
                    Some(RegisterOutput::Cas(ok)) => (*ok == holds).then_some(next),
                    Some(_) => None,
                }
            }
            // An output of the wrong kind can never be explained.
            _ => None,
        }
    }

    fn written_value(&self, input: &RegisterInput) -> Option<String> {
        match input {
            RegisterInput::Write(v) | RegisterInput::Cas { new: v, .. } => Some(v.to_string()),
            RegisterInput::Read => None,
        }
    }

    fn observed_value(&self, input: &RegisterInput, output: &RegisterOutput) -> Option<String> {
        match (input, output) {
            (_, RegisterOutput::Read(v)) => v.map(|v| v.to_string()),
            (RegisterInput::Cas { expected, .. }, RegisterOutput::Cas(true)) => {
                Some(expected.to_string())
            }
            _ => None,
        }
    }

    fn describe_op(&self, input: &RegisterInput, output: Option<&RegisterOutput>) -> String {
        let show = |v: &Option<i64>| v.map_or("nil".to_string(), |x| x.to_string());
        match (input, output) {
            (RegisterInput::Read, Some(RegisterOutput::Read(v))) => format!("read -> {}", show(v)),
            (RegisterInput::Read, _) => "read -> ?".to_string(),
            (RegisterInput::Write(v), Some(_)) => format!("write {v}"),
            (RegisterInput::Write(v), None) => format!("write {v} (indeterminate)"),
            (RegisterInput::Cas { expected, new }, Some(RegisterOutput::Cas(ok))) => {
                format!(
                    "cas {expected}->{new} -> {}",
                    if *ok { "ok" } else { "failed" }
                )
            }
            (RegisterInput::Cas { expected, new }, _) => {
                format!("cas {expected}->{new} (indeterminate)")
            }
        }
    }

    fn describe_state(&self, state: &Option<i64>) -> String {
        state.map_or("nil".to_string(), |x| x.to_string())
    }
}
