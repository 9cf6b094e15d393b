//! etcdctl's `txn` input format, so scripts written for `etcdctl txn` work with `raftkv txn`.
//!
//! The input is three blocks separated by blank lines: compares, then the operations to run
//! if every compare holds, then those to run otherwise. A compare reads
//! `<target>("<key>") <op> "<value>"` with target `version`/`ver`, `create`/`c`, `mod`/`m`,
//! `value`/`val` or `lease`, and op `=`, `!=`, `<` or `>`. An operation is a `put`, `get` or
//! `del` command line as typed after `etcdctl` (with double quotes for values containing
//! spaces, and the same flags as the top-level commands).

use anyhow::{bail, Context, Result};
use proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proto::prost::bytes::Bytes;

use raftkv_client::client::prefix_range_end;

/// Parses a whole txn script (all three blocks) into a request.
pub fn parse_txn(input: &str) -> Result<TxnRequest> {
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in input.lines() {
        let line = line.trim();
        if line.is_empty() {
            if blocks.len() == 3 {
                break;
            }
            blocks.push(Vec::new());
        } else {
            blocks.last_mut().expect("never empty").push(line);
        }
    }
    blocks.resize(3, Vec::new());
    let compare = blocks[0]
        .iter()
        .map(|l| parse_compare(l).with_context(|| format!("bad compare {l:?}")))
        .collect::<Result<Vec<_>>>()?;
    let success = blocks[1]
        .iter()
        .map(|l| parse_op(l).with_context(|| format!("bad operation {l:?}")))
        .collect::<Result<Vec<_>>>()?;
    let failure = blocks[2]
        .iter()
        .map(|l| parse_op(l).with_context(|| format!("bad operation {l:?}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

/// Parses one compare line, e.g. `mod("key") > "12"`.
pub fn parse_compare(line: &str) -> Result<Compare> {
    let open = line.find('(').context("expected <target>(\"<key>\")")?;
    let target_name = line[..open].trim();
    let rest = &line[open + 1..];
    let (key, rest) = quoted(rest.trim_start()).context("the key must be in double quotes")?;
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix(')')
        .context("expected ')' after the key")?;
    let rest = rest.trim_start();
    let op_len = rest
        .find(|c: char| !matches!(c, '=' | '!' | '<' | '>'))
        .unwrap_or(rest.len());
    let result = match &rest[..op_len] {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        other => bail!("unknown comparison {other:?} (use =, !=, < or >)"),
    };
    let value_text = rest[op_len..].trim();
    let value = match quoted(value_text) {
        Some((v, tail)) if tail.trim().is_empty() => v,
        Some(_) => bail!("unexpected text after the value"),
        None => value_text.to_string(),
    };
    let number = || -> Result<i64> {
        value
            .parse::<i64>()
            .with_context(|| format!("{value:?} is not an integer"))
    };
    let (target, union) = match target_name {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(Bytes::from(value.clone().into_bytes())),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(parse_lease(&value)?),
        ),
        other => {
            bail!("unknown compare target {other:?} (use version, create, mod, value or lease)")
        }
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: Bytes::from(key.into_bytes()),
        target_union: Some(union),
        range_end: Bytes::new(),
    })
}

/// A lease id as etcdctl writes it: hexadecimal.
pub fn parse_lease(text: &str) -> Result<i64> {
    let digits = text.trim_start_matches("0x");
    i64::from_str_radix(digits, 16)
        .with_context(|| format!("{text:?} is not a hexadecimal lease id"))
}

/// A double-quoted string at the start of `text` (with `\"` and `\\` escapes); returns the
/// unquoted string and the rest.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, next) = chars.next()?;
                out.push(next);
            }
            '"' => return Some((out, &body[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// Splits a command line into words, honouring double quotes.
pub fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (word, tail) = quoted(rest).context("unterminated double quote")?;
            words.push(word);
            rest = tail.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Ok(words)
}

/// Parses one operation line: `put k v [--prev-kv]`, `get k [end] [--prefix|--from-key]
/// [--limit=N] [--rev=N] [--keys-only] [--count-only]`, `del k [end] [--prefix|--from-key]
/// [--prev-kv]`.
pub fn parse_op(line: &str) -> Result<RequestOp> {
    let words = split_words(line)?;
    let (command, args) = words.split_first().context("empty operation")?;
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    for arg in args {
        if arg.starts_with("--") {
            flags.push(arg.as_str());
        } else {
            positional.push(arg.as_str());
        }
    }
    let flag_value = |name: &str| -> Result<Option<i64>> {
        for f in &flags {
            if let Some(v) = f.strip_prefix(&format!("--{name}=")) {
                return Ok(Some(
                    v.parse()
                        .with_context(|| format!("--{name} needs an integer"))?,
                ));
            }
        }
        Ok(None)
    };
    let has = |name: &str| flags.iter().any(|f| *f == format!("--{name}"));
    let key_range = |positional: &[&str]| -> Result<(Bytes, Bytes)> {
        let key = positional
            .first()
            .context("missing key")?
            .as_bytes()
            .to_vec();
        let end = if has("prefix") {
            prefix_range_end(&key)
        } else if has("from-key") {
            vec![0]
        } else {
            positional
                .get(1)
                .map(|e| e.as_bytes().to_vec())
                .unwrap_or_default()
        };
        Ok((Bytes::from(key), Bytes::from(end)))
    };
    let request = match command.as_str() {
        "put" => {
            let [key, value] = positional[..] else {
                bail!("put needs a key and a value");
            };
            Request::RequestPut(PutRequest {
                key: Bytes::from(key.as_bytes().to_vec()),
                value: Bytes::from(value.as_bytes().to_vec()),
                prev_kv: has("prev-kv"),
                ..Default::default()
            })
        }
        "get" => {
            if positional.len() > 2 {
                bail!("get takes a key and an optional range end");
            }
            let (key, range_end) = key_range(&positional)?;
            Request::RequestRange(RangeRequest {
                key,
                range_end,
                limit: flag_value("limit")?.unwrap_or(0),
                revision: flag_value("rev")?.unwrap_or(0),
                keys_only: has("keys-only"),
                count_only: has("count-only"),
                ..Default::default()
            })
        }
        "del" | "delete" => {
            if positional.len() > 2 {
                bail!("del takes a key and an optional range end");
            }
            let (key, range_end) = key_range(&positional)?;
            Request::RequestDeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: has("prev-kv"),
            })
        }
        other => bail!("unknown operation {other:?} (use put, get or del)"),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_lines_parse_every_target() {
        let c = parse_compare(r#"mod("key1") > "0""#).unwrap();
        assert_eq!(c.target, CompareTarget::Mod as i32);
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(&c.key[..], b"key1");
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(0)));

        let c = parse_compare(r#"value("k") = "hello world""#).unwrap();
        assert_eq!(
            c.target_union,
            Some(TargetUnion::Value(Bytes::from_static(b"hello world")))
        );
        let c = parse_compare(r#"ver("k") != "3""#).unwrap();
        assert_eq!(c.result, CompareResult::NotEqual as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Version(3)));
        let c = parse_compare(r#"c("k") < "7""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(7)));
        let c = parse_compare(r#"lease("k") = "1f""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Lease(0x1f)));
    }

    #[test]
    fn bad_compares_are_errors_not_panics() {
        for bad in [
            "",
            "mod",
            r#"mod("k""#,
            r#"mod("k") >> "1""#,
            r#"mod("k") > "x""#,
            r#"size("k") = "1""#,
            r#"value("k") = "a" trailing"#,
        ] {
            assert!(parse_compare(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn operations_parse_with_quotes_and_flags() {
        let op = parse_op(r#"put k "a value""#).unwrap();
        let Some(Request::RequestPut(put)) = op.request else {
            panic!()
        };
        assert_eq!(&put.value[..], b"a value");

        let op = parse_op("get p --prefix --limit=2").unwrap();
        let Some(Request::RequestRange(range)) = op.request else {
            panic!()
        };
        assert_eq!(&range.range_end[..], b"q");
        assert_eq!(range.limit, 2);

        let op = parse_op("del a --from-key --prev-kv").unwrap();
        let Some(Request::RequestDeleteRange(del)) = op.request else {
            panic!()
        };
        assert_eq!(&del.range_end[..], b"\0");
        assert!(del.prev_kv);

        assert!(parse_op("put onlykey").is_err());
        assert!(parse_op("watch k").is_err());
        assert!(parse_op(r#"put k "unterminated"#).is_err());
    }

    #[test]
    fn script_has_three_blank_separated_blocks() {
        let txn = parse_txn("mod(\"k\") > \"0\"\n\nput k v\nget k\n\nput k w\n\n").unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (1, 2, 1)
        );
        // Missing trailing blocks are empty, not errors.
        let txn = parse_txn("value(\"k\") = \"v\"\n").unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (1, 0, 0)
        );
        let txn = parse_txn("\nput k v\n").unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (0, 1, 0)
        );
    }
}
