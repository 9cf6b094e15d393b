//! `--config-file`: etcd's YAML configuration file.
//!
//! etcd's file has one key per flag, named as the flag (`name`, `data-dir`,
//! `listen-client-urls`, ...), plus two nested sections for TLS, `client-transport-security`
//! and `peer-transport-security`, whose keys map to the TLS flags (`cert-file` →
//! `--cert-file` / `--peer-cert-file`, ...). The file is translated into a command line and
//! parsed by the same parser as real flags, so every flag, including ones added later
//! elsewhere, works through the file without a second list of keys to keep in step.
//!
//! As in etcd, a member started with a config file takes its whole configuration from the
//! file: other command-line flags and all `RAFTKV_*`/`ETCD_*` variables are ignored. Unlike
//! etcd (whose YAML decoder drops keys it does not know), an unknown key is an error naming
//! its line: a misspelt key must not silently fall back to a default.

use anyhow::{anyhow, bail, Context as _};
use clap::{CommandFactory as _, FromArgMatches as _};
use serde_norway::Value;

use crate::args::{ServerArgs, ServerCli};

/// Read and parse the config file at `path` into [`ServerArgs`].
pub fn load(path: &str) -> anyhow::Result<ServerArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --config-file {path}"))?;
    parse(&text).with_context(|| format!("--config-file {path}"))
}

/// Parse the text of a config file into [`ServerArgs`], ignoring the environment.
pub fn parse(text: &str) -> anyhow::Result<ServerArgs> {
    let argv = to_argv(text)?;
    let cmd = ServerCli::command().mut_args(|a| a.env(None::<&'static str>));
    let matches = cmd.try_get_matches_from(&argv).map_err(|e| {
        // Name the file's line for the key the parser stopped at, when it says which.
        let msg = e.render().to_string();
        let line = argv
            .iter()
            .filter_map(|a| a.strip_prefix("--"))
            .map(|a| a.split('=').next().unwrap_or(a))
            .find(|k| msg.contains(&format!("--{k}")))
            .and_then(|k| key_line(text, k));
        let first = msg
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        match line {
            Some(n) => anyhow!("line {n}: {first}"),
            None => anyhow!("{first}"),
        }
    })?;
    let cli = ServerCli::from_arg_matches(&matches).map_err(|e| anyhow!("{e}"))?;
    Ok(cli.args)
}

/// The command line equivalent to a config file: `--key=value` for each top-level key, the
/// TLS sections' keys under their flag names. Empty and null values mean "default", as an
/// empty field does in etcd's file.
pub fn to_argv(text: &str) -> anyhow::Result<Vec<String>> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| match e.location() {
        Some(l) => anyhow!("line {}: {}", l.line(), e),
        None => anyhow!("{e}"),
    })?;
    let map = match doc {
        Value::Mapping(m) => m,
        Value::Null => return Ok(Vec::new()),
        _ => bail!("line 1: the file must be a mapping of flag names to values"),
    };
    let flags = ServerCli::command();
    let mut argv = Vec::new();
    for (k, v) in map {
        let key = key_name(text, &k)?;
        match key.as_str() {
            "client-transport-security" | "peer-transport-security" => {
                let peer = key.starts_with("peer");
                let Value::Mapping(section) = v else {
                    if matches!(v, Value::Null) {
                        continue;
                    }
                    bail!("{}: {key} must be a mapping", at(text, &key));
                };
                for (sk, sv) in section {
                    let sub = key_name(text, &sk)?;
                    push(&flags, &mut argv, text, &tls_flag(&sub, peer), &sub, sv)?;
                }
            }
            // etcd 3.5/3.6's file spells this one key unlike its flag (a slip etcd keeps
            // for compatibility); both spellings name the flag.
            "experimental-snapshot-catch-up-entries" => push(
                &flags,
                &mut argv,
                text,
                "experimental-snapshot-catchup-entries",
                &key,
                v,
            )?,
            _ => push(&flags, &mut argv, text, &key, &key, v)?,
        }
    }
    Ok(argv)
}

/// The flag a key of a TLS section stands for.
fn tls_flag(key: &str, peer: bool) -> String {
    match (key, peer) {
        ("crl-file", false) => "client-crl-file".to_string(),
        ("allowed-hostname", false) => "client-cert-allowed-hostname".to_string(),
        ("allowed-cn", true) => "peer-cert-allowed-cn".to_string(),
        ("allowed-hostname", true) => "peer-cert-allowed-hostname".to_string(),
        (k, true) => format!("peer-{k}"),
        (k, false) => k.to_string(),
    }
}

fn key_name(text: &str, k: &Value) -> anyhow::Result<String> {
    match k {
        Value::String(s) => Ok(s.clone()),
        other => bail!(
            "{}: keys must be flag names, not {other:?}",
            at(text, &format!("{other:?}"))
        ),
    }
}

/// Append `--flag=value` for one key; `yaml_key` is the key as written (to find its line).
fn push(
    flags: &clap::Command,
    argv: &mut Vec<String>,
    text: &str,
    flag: &str,
    yaml_key: &str,
    v: Value,
) -> anyhow::Result<()> {
    let Some(arg) = flags.get_arguments().find(|a| {
        a.get_long() == Some(flag) || a.get_all_aliases().into_iter().flatten().any(|x| x == flag)
    }) else {
        bail!(
            "{}: unknown key {yaml_key:?} (no flag --{flag})",
            at(text, yaml_key)
        );
    };
    let takes_value = arg.get_action().takes_values();
    let value = match v {
        Value::Null => return Ok(()),
        Value::Bool(b) if !takes_value => {
            // A plain switch: present when true, absent when false.
            if b {
                argv.push(format!("--{flag}"));
            }
            return Ok(());
        }
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.is_empty() => return Ok(()),
        Value::String(s) => s,
        Value::Sequence(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => parts.push(s),
                    Value::Number(n) => parts.push(n.to_string()),
                    _ => bail!(
                        "{}: {yaml_key}: list items must be strings",
                        at(text, yaml_key)
                    ),
                }
            }
            parts.join(",")
        }
        _ => bail!(
            "{}: {yaml_key}: expected a single value",
            at(text, yaml_key)
        ),
    };
    argv.push(format!("--{flag}={value}"));
    Ok(())
}

/// "line N" for the first line defining `key`, or "the file" when it cannot be found.
fn at(text: &str, key: &str) -> String {
    key_line(text, key).map_or_else(|| "the file".to_string(), |n| format!("line {n}"))
}

fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches(['\'', '"']);
            t.strip_prefix(key).is_some_and(|r| {
                r.trim_start_matches(['\'', '"'])
                    .trim_start()
                    .starts_with(':')
            })
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat_args::CompactionMode;

    const SAMPLE: &str = "\
# etcd-style configuration
name: 'infra1'
data-dir: /var/lib/etcd/infra1
wal-dir:
snapshot-count: 5000
heartbeat-interval: 50
election-timeout: 500
listen-peer-urls: http://127.0.0.1:12380
listen-client-urls: http://127.0.0.1:12379
initial-advertise-peer-urls: http://127.0.0.1:12380
advertise-client-urls: http://127.0.0.1:12379
initial-cluster: infra1=http://127.0.0.1:12380
initial-cluster-token: 'tok'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: true
auto-compaction-mode: revision
auto-compaction-retention: \"100\"
log-outputs: [stderr]
";

    #[test]
    fn a_sample_file_sets_the_flags() {
        let a = parse(SAMPLE).unwrap();
        assert_eq!(a.name, "infra1");
        assert_eq!(a.data_dir(), "/var/lib/etcd/infra1");
        assert_eq!(a.snapshot_count, 5000);
        assert_eq!(a.heartbeat_interval, 50);
        assert_eq!(
            a.initial_cluster.as_deref(),
            Some("infra1=http://127.0.0.1:12380")
        );
        assert_eq!(a.initial_cluster_token, "tok");
        assert_eq!(a.compat.cluster.strict_reconfig_check, Some(false));
        assert_eq!(a.compat.http.enable_v2, Some(true));
        assert_eq!(a.compat.storage.wal_dir, None);
        assert_eq!(
            a.compat.storage.auto_compaction_mode,
            CompactionMode::Revision
        );
        assert_eq!(a.compat.storage.auto_compaction_retention, "100");
        assert_eq!(a.compat.logging.log_outputs, "stderr");
        // Unset keys keep etcd's defaults.
        assert_eq!(a.max_txn_ops, 128);
    }

    #[test]
    fn tls_sections_map_to_tls_flags() {
        let argv = to_argv(
            "client-transport-security:\n  cert-file: /c.crt\n  client-cert-auth: true\n  crl-file: /r.crl\n\
             peer-transport-security:\n  key-file: /p.key\n  auto-tls: false\n  allowed-cn: x\n",
        );
        // The TLS flags are defined elsewhere; until they are, their keys are unknown
        // (the error names the flag the key maps to) or, once defined, translated.
        match argv {
            Ok(v) => {
                assert!(v.contains(&"--cert-file=/c.crt".to_string()), "{v:?}");
                assert!(v.contains(&"--peer-key-file=/p.key".to_string()), "{v:?}");
                assert!(
                    v.iter().any(|a| a.starts_with("--client-crl-file")),
                    "{v:?}"
                );
                assert!(
                    v.iter().any(|a| a.starts_with("--peer-cert-allowed-cn")),
                    "{v:?}"
                );
            }
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("line 2") && e.contains("--cert-file"), "{e}");
            }
        }
        assert_eq!(tls_flag("crl-file", false), "client-crl-file");
        assert_eq!(tls_flag("crl-file", true), "peer-crl-file");
        assert_eq!(tls_flag("trusted-ca-file", true), "peer-trusted-ca-file");
        assert_eq!(
            tls_flag("allowed-hostname", false),
            "client-cert-allowed-hostname"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("name: a\n\nlisten-client-urls: [unclosed\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line "), "{e}");
        let e = parse("name: a\nsnapshot-count: 1\nno-such-flag: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 3: unknown key \"no-such-flag\""), "{e}");
        let e = parse("name: a\nsnapshot-count: many\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(e.contains("snapshot-count"), "{e}");
        let e = parse("- a\n- b\n").unwrap_err().to_string();
        assert!(e.contains("mapping"), "{e}");
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let a = parse("").unwrap();
        assert_eq!(a.name, "default");
    }
}
