//! Parsers for the public histories in `shared/reference/histories/`.
//!
//! Neither format carries timestamps; events are in real-time order, so the line number serves
//! as the clock.

use anyhow::{anyhow, bail, Context, Result};

use crate::history::{Completion, History, Operation};
use crate::models::kv::{KvInput, KvOutput};
use crate::models::register::{RegisterInput, RegisterOutput};

/// Parses a Jepsen etcd CAS-register log (`INFO  jepsen.util - <process> :<type> :<f> <value>`).
///
/// `:fail` on a `cas` means the comparison did not hold: the CAS executed and returned false, a
/// known result. `:fail` on anything else means it did not happen (dropped). `:info`, or no
/// completion at all, means unknown.
pub fn jepsen_etcd(text: &str) -> Result<Vec<Operation<RegisterInput, RegisterOutput>>> {
    let mut history = History::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        parse_jepsen_line(&mut history, n as u64, line)
            .with_context(|| format!("line {}: {line:?}", n + 1))?;
    }
    Ok(history.into_operations())
}

fn parse_jepsen_line(
    history: &mut History<RegisterInput, RegisterOutput>,
    time: u64,
    line: &str,
) -> Result<()> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let dash = tokens
        .iter()
        .position(|t| *t == "-")
        .ok_or_else(|| anyhow!("no ' - ' marker"))?;
    let fields = tokens.get(dash + 1..).unwrap_or(&[]);
    let [process, kind, f, value @ ..] = fields else {
        bail!("expected '<process> :<type> :<f> <value>'");
    };
    let process: u64 = process.parse().context("process id")?;
    let value = value.join(" ");
    let int = |s: &str| {
        s.parse::<i64>()
            .with_context(|| format!("integer value {s:?}"))
    };
    match (*kind, *f) {
        (":invoke", f) => {
            let input = match f {
                ":read" => RegisterInput::Read,
                ":write" => RegisterInput::Write(int(&value)?),
                ":cas" => {
                    let (expected, new) = parse_pair(&value)?;
                    RegisterInput::Cas {
                        expected: int(expected)?,
                        new: int(new)?,
                    }
                }
                other => bail!("unknown operation {other}"),
            };
            history.invoke(time, process, "", input)?;
        }
        (":ok", f) => {
            let out = match f {
                ":read" if value == "nil" => RegisterOutput::Read(None),
                ":read" => RegisterOutput::Read(Some(int(&value)?)),
                ":write" => RegisterOutput::Write,
                ":cas" => RegisterOutput::Cas(true),
                other => bail!("unknown operation {other}"),
            };
            history.complete_process(process, time, Completion::Ok(out))?;
        }
        (":fail", ":cas") => {
            history.complete_process(process, time, Completion::Ok(RegisterOutput::Cas(false)))?
        }
        (":fail", _) => history.complete_process(process, time, Completion::Fail)?,
        (":info", _) => history.complete_process(process, time, Completion::Unknown)?,
        (other, _) => bail!("unknown event type {other}"),
    }
    Ok(())
}

fn parse_pair(value: &str) -> Result<(&str, &str)> {
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| anyhow!("expected [old new], got {value:?}"))?;
    let mut parts = inner.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Ok((a, b)),
        _ => bail!("expected [old new], got {value:?}"),
    }
}

/// A value of the EDN-like map syntax of the KV logs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EdnValue {
    Nil,
    Str(String),
    Keyword(String),
    Bare(String),
}

/// Parses one `{:a 1, :b "x", :c :kw, :d nil}` line into (name, value) pairs.
fn parse_edn_map(line: &str) -> Result<Vec<(String, EdnValue)>> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .ok_or_else(|| anyhow!("expected a {{...}} map"))?;
    let mut chars = body.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(c) = chars.next() else { break };
        if c != ':' {
            bail!("expected a :key, found {c:?}");
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = match chars.peek() {
            Some('"') => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(other) => s.push(other),
                            None => bail!("unterminated string"),
                        },
                        Some(other) => s.push(other),
                        None => bail!("unterminated string"),
                    }
                }
                EdnValue::Str(s)
            }
            Some(_) => {
                let tok: String =
                    std::iter::from_fn(|| chars.next_if(|c| *c != ',' && !c.is_whitespace()))
                        .collect();
                match tok.as_str() {
                    "nil" => EdnValue::Nil,
                    t if t.starts_with(':') => EdnValue::Keyword(t[1..].to_string()),
                    _ => EdnValue::Bare(tok),
                }
            }
            None => bail!("missing value for :{name}"),
        };
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Parses a KV log (`{:process P, :type :invoke|:ok|:fail|:info, :f :get|:put|:append,
/// :key "K", :value V}` per line).
pub fn kv(text: &str) -> Result<Vec<Operation<KvInput, KvOutput>>> {
    let mut history = History::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        parse_kv_line(&mut history, n as u64, line)
            .with_context(|| format!("line {}: {line:?}", n + 1))?;
    }
    Ok(history.into_operations())
}

fn parse_kv_line(history: &mut History<KvInput, KvOutput>, time: u64, line: &str) -> Result<()> {
    let pairs = parse_edn_map(line)?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| anyhow!("missing :{name}"))
    };
    let process: u64 = match get("process")? {
        EdnValue::Bare(p) => p.parse().context("process id")?,
        other => bail!("bad :process {other:?}"),
    };
    let (EdnValue::Keyword(kind), EdnValue::Keyword(f)) = (get("type")?, get("f")?) else {
        bail!(":type and :f must be keywords");
    };
    let text_value = || match get("value") {
        Ok(EdnValue::Str(s)) => Ok(s.clone()),
        Ok(EdnValue::Nil) => Ok(String::new()),
        Ok(other) => bail!("expected a string :value, got {other:?}"),
        Err(e) => Err(e),
    };
    match kind.as_str() {
        "invoke" => {
            let key = match get("key")? {
                EdnValue::Str(k) | EdnValue::Bare(k) | EdnValue::Keyword(k) => k.clone(),
                EdnValue::Nil => bail!("nil :key"),
            };
            let input = match f.as_str() {
                "get" => KvInput::Get,
                "put" => KvInput::Put(text_value()?),
                "append" => KvInput::Append(text_value()?),
                other => bail!("unknown :f {other}"),
            };
            history.invoke(time, process, key, input)?;
        }
        "ok" => {
            let out = match f.as_str() {
                "get" => KvOutput::Get(text_value()?),
                "put" => KvOutput::Put,
                "append" => KvOutput::Append,
                other => bail!("unknown :f {other}"),
            };
            history.complete_process(process, time, Completion::Ok(out))?;
        }
        "fail" => history.complete_process(process, time, Completion::Fail)?,
        "info" => history.complete_process(process, time, Completion::Unknown)?,
        other => bail!("unknown :type {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jepsen_lines_with_tabs_or_spaces_parse() {
        let log = "INFO  jepsen.util - 0\t:invoke\t:cas\t[3 0]\n\
                   INFO  jepsen.util - 1 :invoke :read nil\n\
                   INFO  jepsen.util - 0\t:fail\t:cas\t[3 0]\n\
                   INFO  jepsen.util - 1 :ok :read 4\n\
                   INFO  jepsen.util - 2 :invoke :write 5\n\
                   INFO  jepsen.util - 2 :info :write :timed-out\n";
        let ops = jepsen_etcd(log).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            ops[0].input,
            RegisterInput::Cas {
                expected: 3,
                new: 0
            }
        );
        assert_eq!(ops[0].output, Some(RegisterOutput::Cas(false)));
        assert_eq!(ops[1].output, Some(RegisterOutput::Read(Some(4))));
        assert!(ops[2].is_indeterminate());
    }

    #[test]
    fn bad_jepsen_lines_are_errors_not_panics() {
        assert!(jepsen_etcd("garbage\n").is_err());
        assert!(jepsen_etcd("INFO x - 0 :invoke :cas [1]\n").is_err());
        assert!(jepsen_etcd("INFO x - 0 :ok :read 1\n").is_err());
    }

    #[test]
    fn kv_lines_parse() {
        let log = "{:process 0, :type :invoke, :f :get, :key \"5\", :value nil}\n\
                   {:process 1, :type :invoke, :f :append, :key \"5\", :value \"x 1 0 y\"}\n\
                   {:process 0, :type :ok, :f :get, :key \"5\", :value \"\"}\n\
                   {:process 1, :type :info, :f :append, :key \"5\", :value \"x 1 0 y\"}\n";
        let ops = kv(log).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].key, "5");
        assert_eq!(ops[0].output, Some(KvOutput::Get(String::new())));
        assert_eq!(ops[1].input, KvInput::Append("x 1 0 y".into()));
        assert!(ops[1].is_indeterminate());
        assert!(kv("{:process 0, :type :invoke\n").is_err());
        assert!(kv("{:process x, :type :invoke, :f :get, :key \"1\", :value nil}\n").is_err());
    }
}
