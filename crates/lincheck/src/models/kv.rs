//! A key-value map with get, put and append (MIT 6.824 KV lab semantics: a missing key reads as
//! the empty string, append to a missing key acts on the empty string). Partition by key: the
//! state of a partition is one string.

use crate::model::Model;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput {
    Get,
    Put(String),
    Append(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    Get(String),
    Put,
    Append,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, state: &String, input: &KvInput, output: Option<&KvOutput>) -> Option<String> {
        match (input, output) {
            (KvInput::Get, None) => Some(state.clone()),
            (KvInput::Get, Some(KvOutput::Get(v))) => (v == state).then(|| state.clone()),
            (KvInput::Put(v), None | Some(KvOutput::Put)) => Some(v.clone()),
            (KvInput::Append(v), None | Some(KvOutput::Append)) => {
                let mut next = String::with_capacity(state.len() + v.len());
                next.push_str(state);
                next.push_str(v);
                Some(next)
            }
            _ => None,
        }
    }

    fn describe_op(&self, input: &KvInput, output: Option<&KvOutput>) -> String {
        let tail = if output.is_none() {
            " (indeterminate)"
        } else {
            ""
        };
        match (input, output) {
            (KvInput::Get, Some(KvOutput::Get(v))) => format!("get -> {v:?}"),
            (KvInput::Get, _) => "get -> ?".to_string(),
            (KvInput::Put(v), _) => format!("put {v:?}{tail}"),
            (KvInput::Append(v), _) => format!("append {v:?}{tail}"),
        }
    }

    fn describe_state(&self, state: &String) -> String {
        format!("{state:?}")
    }
}
