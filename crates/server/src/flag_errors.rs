//! A bad `raftkv server` command line answered in etcd's words.
//!
//! etcd parses its flags with Go's `flag` package, which prints one line naming the problem
//! (`flag provided but not defined: -foo`, `invalid value "x" for flag -heartbeat-interval:
//! parse error`, ...), then etcd's usage text, and exits with status 2. Scripts and
//! harnesses written against etcd match on that first line and that status, so raftkv
//! prints the same first line, byte for byte, and exits 2. None of those first lines names
//! the program, so nothing in them needs translating; the usage text after it is raftkv's
//! own (naming `raftkv server`). The one wording that does name the program, for a bare
//! word where a flag was expected (`error verifying flags, 'foo' is not a valid flag. See
//! 'etcd --help'.`, status 1), says `raftkv server` where etcd says `etcd`.
//!
//! clap finds the errors; this module only rewords them. Errors Go's parser has no wording
//! for (a value that fails one of raftkv's own checks later, `--help`) keep clap's.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The exit status of a flag error, as Go's `flag.ExitOnError` uses.
pub const FLAG_ERROR_STATUS: i32 = 2;

/// A value parser's error that carries etcd's own reason for refusing the value (the text
/// etcd's flag type returns from `Set`, e.g. `unrecognized feature gate: Foo`), printed
/// where Go's flag package prints it instead of a generic "parse error".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFlagValueError(pub String);

impl std::fmt::Display for GoFlagValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GoFlagValueError {}

/// The reason a value parser gave in etcd's words, when it gave one.
fn etcd_reason(err: &clap::Error) -> Option<String> {
    use std::error::Error as _;
    err.source()?
        .downcast_ref::<GoFlagValueError>()
        .map(|e| e.0.clone())
}

/// How etcd answers a command-line error: its text (one or more lines) and exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdAnswer {
    pub text: String,
    pub status: i32,
}

/// The usage hint printed after the first line of a flag error (etcd prints its own usage
/// text there).
pub fn usage_hint(program: &str) -> String {
    format!(
        "Usage:\n\n  {program} [flags]\n    Start a raftkv member (etcd's flags).\n\n  {program} --version\n    Show the version.\n\n  {program} -h | --help\n    Show the help information.\n"
    )
}

/// etcd's answer to a bad value that came from the environment rather than from `argv` (the
/// flags, without the program name, as clap parsed them): etcd's
/// `error verifying flags, invalid value "x" for ETCD_HEARTBEAT_INTERVAL: parse error. See
/// 'etcd --help'.`, exit status 1, naming the variable as the user wrote it (`ETCD_*` or
/// `RAFTKV_*`). `None` when the error is not about an environment value.
pub fn env_answer(
    err: &clap::Error,
    cmd: &clap::Command,
    program: &str,
    argv: &[std::ffi::OsString],
) -> Option<EtcdAnswer> {
    let kind = err.kind();
    if !matches!(kind, ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return None;
    }
    let (ContextValue::String(arg), ContextValue::String(value)) = (
        err.get(ContextKind::InvalidArg)?,
        err.get(ContextKind::InvalidValue)?,
    ) else {
        return None;
    };
    let name = go_flag_name(arg);
    let flag = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(name.as_str()))?;
    let on_command_line = argv.iter().filter_map(|a| a.to_str()).any(|a| {
        let body = a.trim_start_matches('-');
        a.starts_with('-')
            && std::iter::once(name.as_str())
                .chain(flag.get_all_aliases().unwrap_or_default())
                .any(|n| body == n || body.starts_with(&format!("{n}=")))
    });
    if on_command_line {
        return None;
    }
    let var = crate::args::env_origin(flag.get_env()?.to_str()?);
    let reason = if let Some(reason) = etcd_reason(err) {
        reason
    } else if kind == ErrorKind::InvalidValue && !is_bool(flag) {
        "invalid value".to_string()
    } else if out_of_range(err) {
        "value out of range".to_string()
    } else {
        "parse error".to_string()
    };
    Some(EtcdAnswer {
        text: format!(
            "error verifying flags, invalid value {value:?} for {var}: {reason}. See '{program} --help'.\n"
        ),
        status: 1,
    })
}

/// raftkv's boolean flags are the ones whose value is optional (`--pre-vote`,
/// `--pre-vote=false`), as Go's are.
fn is_bool(arg: &clap::Arg) -> bool {
    arg.get_num_args()
        .is_some_and(|r| r.min_values() == 0 && r.max_values() == 1)
}

/// etcd's answer to the error clap found in a `raftkv server` command line, or `None` when
/// clap's own answer is the right one (help, version, kinds Go has no wording for).
/// `program` names the command in the usage hint (`raftkv server`, `raftkv-member`).
pub fn etcd_answer(err: &clap::Error, cmd: &clap::Command, program: &str) -> Option<EtcdAnswer> {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let first = match err.kind() {
        ErrorKind::UnknownArgument => {
            let arg = context(ContextKind::InvalidArg)?;
            if !arg.starts_with('-') {
                return Some(EtcdAnswer {
                    text: format!(
                        "error verifying flags, '{arg}' is not a valid flag. See '{program} --help'.\n"
                    ),
                    status: 1,
                });
            }
            let name = go_flag_name(&arg);
            if arg.starts_with("---") {
                format!("bad flag syntax: {arg}")
            } else {
                format!("flag provided but not defined: -{name}")
            }
        }
        kind @ (ErrorKind::InvalidValue | ErrorKind::ValueValidation) => {
            let arg = context(ContextKind::InvalidArg)?;
            let value = context(ContextKind::InvalidValue)?;
            let name = go_flag_name(&arg);
            let is_bool = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(name.as_str()))
                .is_some_and(is_bool);
            if value.is_empty() && kind == ErrorKind::InvalidValue {
                format!("flag needs an argument: -{name}")
            } else if is_bool {
                format!("invalid boolean value {value:?} for -{name}: parse error")
            } else if let Some(reason) = etcd_reason(err) {
                format!("invalid value {value:?} for flag -{name}: {reason}")
            } else if kind == ErrorKind::InvalidValue {
                // One of a fixed set of values: etcd's selective flags answer "invalid value".
                format!("invalid value {value:?} for flag -{name}: invalid value")
            } else {
                let reason = if out_of_range(err) {
                    "value out of range"
                } else {
                    "parse error"
                };
                format!("invalid value {value:?} for flag -{name}: {reason}")
            }
        }
        _ => return None,
    };
    Some(EtcdAnswer {
        text: format!("{first}\n{}", usage_hint(program)),
        status: FLAG_ERROR_STATUS,
    })
}

/// The flag's name as Go prints it: without dashes, without `=value`, and without clap's
/// value placeholder (`--heartbeat-interval <HEARTBEAT_INTERVAL>`).
fn go_flag_name(arg: &str) -> String {
    let arg = arg.split_whitespace().next().unwrap_or(arg);
    let arg = arg.trim_start_matches('-');
    arg.split('=').next().unwrap_or(arg).to_string()
}

/// Whether a number failed to parse because it is too large or small for its type (Go:
/// "value out of range") rather than because it is not a number ("parse error").
fn out_of_range(err: &clap::Error) -> bool {
    use std::error::Error as _;
    use std::num::IntErrorKind;
    let Some(source) = err.source() else {
        return false;
    };
    source
        .downcast_ref::<std::num::ParseIntError>()
        .is_some_and(|e| {
            matches!(
                e.kind(),
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser as _};

    fn answer(argv: &[&str]) -> Option<EtcdAnswer> {
        let err = crate::args::ServerCli::try_parse_from(argv).err().unwrap();
        let cmd = crate::args::ServerCli::command();
        etcd_answer(&err, &cmd, "raftkv server")
    }

    fn first_line(argv: &[&str]) -> String {
        let a = answer(argv).unwrap();
        a.text.lines().next().unwrap().to_string()
    }

    #[test]
    fn go_flag_wording() {
        assert_eq!(
            first_line(&["--foo"]),
            "flag provided but not defined: -foo"
        );
        assert_eq!(
            first_line(&["--foo=bar"]),
            "flag provided but not defined: -foo"
        );
        assert_eq!(
            first_line(&["--heartbeat-interval=x"]),
            r#"invalid value "x" for flag -heartbeat-interval: parse error"#
        );
        assert_eq!(
            first_line(&["--heartbeat-interval", "99999999999999999999999"]),
            r#"invalid value "99999999999999999999999" for flag -heartbeat-interval: value out of range"#
        );
        assert_eq!(
            first_line(&["--pre-vote=maybe"]),
            r#"invalid boolean value "maybe" for -pre-vote: parse error"#
        );
        assert_eq!(first_line(&["--name"]), "flag needs an argument: -name");
        assert_eq!(
            first_line(&["--initial-cluster-state=bogus"]),
            r#"invalid value "bogus" for flag -initial-cluster-state: invalid value"#
        );
        let a = answer(&["--foo"]).unwrap();
        assert_eq!(a.status, 2);
        assert!(a.text.contains("raftkv server [flags]"), "{}", a.text);
        let a = answer(&["foo"]).unwrap();
        assert_eq!(a.status, 1);
        assert_eq!(
            a.text,
            "error verifying flags, 'foo' is not a valid flag. See 'raftkv server --help'.\n"
        );
    }

    #[test]
    fn help_keeps_clap_answer() {
        assert_eq!(answer(&["--help"]), None);
    }
}
