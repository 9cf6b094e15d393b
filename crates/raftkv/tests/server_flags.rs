//! `raftkv server` answers a bad flag as `etcd` does: the same first line (checked against
//! the real etcd binary, Debian's etcd-server) and exit status 2, then its own usage hint.

use std::process::Command;

const ETCD: &str = "/usr/bin/etcd";

fn answer(program: &str, args: &[&str]) -> (String, String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let first = stderr.lines().next().unwrap_or_default().to_string();
    (first, stderr, out.status.code())
}

#[test]
fn raftkv_server_words_a_bad_flag_as_etcd_does() {
    for args in [
        &["--foo"][..],
        &["--heartbeat-interval=x"],
        &["--pre-vote=maybe"],
    ] {
        let (etcd_line, _, etcd_code) = answer(ETCD, args);
        let mut ours = vec!["server"];
        ours.extend_from_slice(args);
        let (line, text, code) = answer(env!("CARGO_BIN_EXE_raftkv"), &ours);
        assert!(!etcd_line.is_empty(), "{args:?}: etcd printed nothing");
        assert_eq!((&line, code), (&etcd_line, etcd_code), "{args:?}: {text}");
        assert_eq!(code, Some(2));
        assert!(text.contains("raftkv server [flags]"), "{text}");
    }
    // Other subcommands keep clap's own answer.
    let (line, _, code) = answer(env!("CARGO_BIN_EXE_raftkv"), &["get", "--foo"]);
    assert!(line.contains("unexpected argument '--foo'"), "{line}");
    assert_eq!(code, Some(2));
}
