//! Runs the command over the public histories nobody here wrote and checks every verdict:
//! `jepsen-etcd/VERDICTS.txt` for the etcd logs (register + CAS model), the -ok / -bad suffix for
//! the KV logs (get/put/append, partitioned by key). Missing data is a failure, never a skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lincheck::cli::{self, Format, Options};
use lincheck::{CheckOptions, Verdict};

fn histories_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/histories");
    assert!(
        dir.join("jepsen-etcd/VERDICTS.txt").is_file() && dir.join("kv").is_dir(),
        "the shared histories folder is missing: expected {} (with jepsen-etcd/VERDICTS.txt and \
         kv/) next to the repository",
        dir.display()
    );
    dir
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

fn options() -> Options {
    // Every file takes well under a second; the budget only guards against a hang.
    Options {
        check: CheckOptions {
            budget: Duration::from_secs(60),
            minimise: true,
        },
        ..Default::default()
    }
}

fn parse_verdict(s: &str) -> Verdict {
    match s {
        "linearizable" => Verdict::Linearizable,
        "not-linearizable" => Verdict::NotLinearizable,
        other => panic!("unexpected verdict {other:?} in VERDICTS.txt"),
    }
}

#[test]
fn jepsen_etcd_logs_match_their_known_verdicts() {
    let dir = histories_dir().join("jepsen-etcd");
    let text = std::fs::read_to_string(dir.join("VERDICTS.txt")).unwrap();
    let expected: BTreeMap<String, Verdict> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap().to_string();
            (
                name,
                parse_verdict(parts.next().expect("a verdict per line")),
            )
        })
        .collect();
    let files = files_with(&dir, "log");
    assert_eq!(files.len(), expected.len(), "one verdict per log file");
    assert!(expected.values().any(|v| *v == Verdict::Linearizable));
    assert!(expected.values().any(|v| *v == Verdict::NotLinearizable));
    let start = Instant::now();
    let mut out = Vec::new();
    let verdicts = cli::run_with(Format::JepsenEtcd, &files, &mut out, &options()).unwrap();
    eprintln!(
        "jepsen-etcd: {} files in {:?}",
        files.len(),
        start.elapsed()
    );
    let mut wrong = Vec::new();
    for v in &verdicts {
        let name = v.path.file_name().unwrap().to_string_lossy().to_string();
        let want = expected
            .get(&name)
            .unwrap_or_else(|| panic!("{name} not in VERDICTS.txt"));
        if v.verdict != *want {
            wrong.push(format!("{name}: got {}, expected {want}", v.verdict));
        }
    }
    assert!(
        wrong.is_empty(),
        "verdict mismatches:\n{}",
        wrong.join("\n")
    );
    // The printed form is "<path> <verdict>" per file.
    let printed = String::from_utf8(out).unwrap();
    assert_eq!(printed.lines().count(), files.len());
    assert!(printed
        .lines()
        .all(|l| l.ends_with(" linearizable") || l.ends_with(" not-linearizable")));
}

#[test]
fn kv_logs_match_their_suffix() {
    let dir = histories_dir().join("kv");
    let files = files_with(&dir, "txt");
    assert!(files.len() >= 2, "no kv logs in {}", dir.display());
    let start = Instant::now();
    let mut out = Vec::new();
    let verdicts = cli::run_with(Format::Kv, &files, &mut out, &options()).unwrap();
    eprintln!("kv: {} files in {:?}", files.len(), start.elapsed());
    for v in &verdicts {
        let name = v.path.file_name().unwrap().to_string_lossy().to_string();
        let want = if name.contains("-ok") {
            Verdict::Linearizable
        } else if name.contains("-bad") {
            Verdict::NotLinearizable
        } else {
            panic!("{name}: neither -ok nor -bad");
        };
        assert_eq!(v.verdict, want, "{name}");
        assert!(
            v.result().unwrap().partitions > 1 || name.starts_with("c01"),
            "{name} is checked per key"
        );
        if want == Verdict::NotLinearizable {
            let violation = v.result().unwrap().violation.as_ref().expect("a witness");
            assert!(!violation.window.is_empty());
        }
    }
}

#[test]
fn the_command_entry_point_prints_a_verdict_per_file() {
    let dir = histories_dir().join("kv");
    let files = vec![dir.join("c01-ok.txt"), dir.join("c01-bad.txt")];
    let mut out = Vec::new();
    let verdicts = cli::run("kv", &files, &mut out).unwrap();
    assert_eq!(verdicts.len(), 2);
    let printed = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].ends_with("c01-ok.txt linearizable"), "{printed}");
    assert!(
        lines[1].ends_with("c01-bad.txt not-linearizable"),
        "{printed}"
    );
    assert!(cli::run("nope", &files, &mut Vec::new()).is_err());

    let report_dir = std::env::temp_dir().join(format!("lincheck-report-{}", std::process::id()));
    let args = ["--format", "kv", "--report"]
        .iter()
        .map(|s| s.to_string())
        .chain([report_dir.display().to_string()])
        .chain(files.iter().map(|f| f.display().to_string()));
    let code = cli::main(args, &mut Vec::new()).unwrap();
    assert_eq!(code, 1, "exit status 1 when a history is not linearizable");
    let txt = std::fs::read_to_string(report_dir.join("c01-bad.txt.txt")).unwrap();
    assert!(txt.contains("not linearizable"));
    assert!(std::fs::read_to_string(report_dir.join("c01-bad.txt.svg"))
        .unwrap()
        .starts_with("<svg"));
    std::fs::remove_dir_all(&report_dir).unwrap();
}
