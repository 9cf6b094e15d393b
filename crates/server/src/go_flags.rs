//! etcd's command-line syntax, which is Go's `flag` package's, turned into clap's before
//! parsing: `-name x`, `-name=x`, `--name x` and `--name=x` are one flag, and a boolean
//! flag takes its value only after `=` (`-pre-vote=false`; `-pre-vote false` is the flag
//! followed by a stray word). clap only knows `--name`; so every flag is rewritten to
//! `--name=value` (or `--name` for a boolean without a value), which clap reads the same
//! way whatever the value looks like (`--quota-backend-bytes=-1`).
//!
//! As in Go, the flags end at `--` or at the first word that is not a flag; what follows
//! is left as it is (clap then refuses it, `crate::flag_errors` in etcd's words). `-h`
//! stays clap's short help. A name no flag has is rewritten too (`-foo` → `--foo`), so the
//! error names it as etcd does (`flag provided but not defined: -foo`).

use std::ffi::OsString;

/// How a flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    /// A value, `=value` or the next argument.
    Value,
    /// Only `=value` (booleans; `--dry-run`).
    Inline,
}

fn takes(cmd: &clap::Command, name: &str) -> Option<Takes> {
    let arg = cmd.get_arguments().find(|a| {
        a.get_long() == Some(name)
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })?;
    let optional = arg.get_num_args().is_some_and(|r| r.min_values() == 0);
    Some(if arg.get_action().takes_values() && !optional {
        Takes::Value
    } else {
        Takes::Inline
    })
}

/// Rewrite the flags of `args` (without the program name) in Go's syntax for `cmd`.
pub fn normalise(cmd: &clap::Command, args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            break;
        };
        // Go's end of flags: `--`, a lone `-`, or a word.
        if text == "--" || text == "-" || !text.starts_with('-') || text == "-h" {
            let stop = text != "-h";
            out.push(arg);
            if stop {
                break;
            }
            continue;
        }
        let dashes = if text.starts_with("--") { 2 } else { 1 };
        let body = &text[dashes..];
        if body.starts_with('-') || body.starts_with('=') {
            // `---x`, `-=x`: Go's "bad flag syntax", which clap's error path words.
            out.push(arg);
            continue;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        match (inline, takes(cmd, name)) {
            (Some(v), _) => out.push(format!("--{name}={v}").into()),
            (None, Some(Takes::Value)) => match rest.next() {
                Some(value) => {
                    let mut joined = OsString::from(format!("--{name}="));
                    joined.push(value);
                    out.push(joined);
                }
                // clap answers "flag needs an argument" for it.
                None => out.push(format!("--{name}").into()),
            },
            (None, _) => out.push(format!("--{name}").into()),
        }
    }
    out.extend(rest);
    out
}

/// `argv` (with the program name first) with the `raftkv server` flags in Go's syntax
/// normalised: everything after the first word when that word is `server`. Global options
/// of `raftkv` come as `--flag=value` before it, so the first word is the subcommand.
pub fn normalise_server_subcommand(server: &clap::Command, argv: Vec<OsString>) -> Vec<OsString> {
    let Some(at) = argv
        .iter()
        .skip(1)
        .position(|a| a.to_str().is_some_and(|s| !s.starts_with('-')))
        .map(|i| i + 1)
    else {
        return argv;
    };
    if argv[at] != "server" {
        return argv;
    }
    let mut argv = argv;
    let flags = argv.split_off(at + 1);
    argv.extend(normalise(server, flags));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn norm(args: &[&str]) -> Vec<String> {
        let cmd = crate::args::ServerCli::command();
        normalise(&cmd, args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn every_go_spelling_becomes_one_clap_flag() {
        for argv in [
            &["-name", "x"][..],
            &["-name=x"],
            &["--name", "x"],
            &["--name=x"],
        ] {
            assert_eq!(norm(argv), ["--name=x"], "{argv:?}");
        }
        // A value that looks like a flag is still the value, as in Go.
        assert_eq!(
            norm(&["-quota-backend-bytes", "-1"]),
            ["--quota-backend-bytes=-1"]
        );
        // Aliases are flags too.
        assert_eq!(norm(&["-log-output", "stderr"]), ["--log-output=stderr"]);
    }

    #[test]
    fn booleans_take_a_value_only_after_equals() {
        assert_eq!(norm(&["-pre-vote"]), ["--pre-vote"]);
        assert_eq!(norm(&["-pre-vote=false"]), ["--pre-vote=false"]);
        // `false` is a stray word: flags end there, as in Go.
        assert_eq!(
            norm(&["-pre-vote", "false", "-name", "x"]),
            ["--pre-vote", "false", "-name", "x"]
        );
    }

    #[test]
    fn unknown_flags_help_and_the_end_of_flags() {
        assert_eq!(norm(&["-foo", "-name", "x"]), ["--foo", "--name=x"]);
        assert_eq!(norm(&["-h"]), ["-h"]);
        assert_eq!(norm(&["-help"]), ["--help"]);
        assert_eq!(norm(&["-name"]), ["--name"]);
        assert_eq!(norm(&["--", "-name", "x"]), ["--", "-name", "x"]);
        assert_eq!(norm(&["---name", "x"]), ["---name", "x"]);
    }

    #[test]
    fn only_the_server_subcommand_is_rewritten() {
        let server = crate::args::ServerCli::command();
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            normalise_server_subcommand(&server, argv(&["raftkv", "server", "-name", "a"])),
            argv(&["raftkv", "server", "--name=a"])
        );
        assert_eq!(
            normalise_server_subcommand(&server, argv(&["raftkv", "get", "-w", "json"])),
            argv(&["raftkv", "get", "-w", "json"])
        );
    }
}
