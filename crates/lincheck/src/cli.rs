//! The `lincheck` command: checks history files and prints one verdict per file.
//!
//! `raftkv lincheck ...` delegates here ([`main`] with the arguments after the subcommand).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::checker::{check, CheckOptions, CheckResult, Verdict};
use crate::elle::{self, ElleOptions, ElleResult};
use crate::models::etcd::{etcd_model, revision_anomalies, EtcdInput, EtcdOutput, RevisionAnomaly};
use crate::models::kv::KvModel;
use crate::models::register::RegisterModel;
use crate::{jsonl, parse, report};

/// The history formats the command reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Jepsen etcd CAS-register logs, checked with the register + CAS model (one key).
    JepsenEtcd,
    /// MIT KV lab logs, checked with the get/put/append model partitioned by key.
    Kv,
    /// raftkv JSON lines of single-key etcd operations ([`crate::jsonl::Event`]), checked with
    /// the etcd model per key plus the cross-key revision order.
    EtcdJsonl,
    /// raftkv JSON lines of list-append transactions ([`crate::jsonl::TxnEvent`]), checked
    /// with the Elle-style checker (real-time edges on).
    AppendJsonl,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "jepsen-etcd" => Ok(Format::JepsenEtcd),
            "kv" => Ok(Format::Kv),
            "etcd-jsonl" => Ok(Format::EtcdJsonl),
            "append-jsonl" => Ok(Format::AppendJsonl),
            other => bail!(
                "unknown format {other:?} (expected jepsen-etcd, kv, etcd-jsonl or append-jsonl)"
            ),
        }
    }
}

/// Settings of a run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub check: CheckOptions,
    /// Where to write `<file name>.txt` (and `.svg` for a linearizability witness) for each
    /// violation.
    pub report_dir: Option<PathBuf>,
    /// Also print the text report of each violation.
    pub verbose: bool,
}

/// What was found in one file.
#[derive(Clone, Debug)]
pub enum Detail {
    Linearizability {
        result: CheckResult,
        revision_anomalies: Vec<RevisionAnomaly>,
    },
    ListAppend(ElleResult),
}

/// The verdict on one file. For list-append histories, `Linearizable` stands for "no anomaly"
/// (strict serializability) and `NotLinearizable` for "some anomaly".
#[derive(Clone, Debug)]
pub struct FileVerdict {
    pub path: PathBuf,
    pub verdict: Verdict,
    pub detail: Detail,
}

impl FileVerdict {
    /// The linearizability result, if this was a linearizability check.
    pub fn result(&self) -> Option<&CheckResult> {
        match &self.detail {
            Detail::Linearizability { result, .. } => Some(result),
            Detail::ListAppend(_) => None,
        }
    }

    /// What the command prints after the file name.
    pub fn summary(&self) -> String {
        match &self.detail {
            Detail::Linearizability { .. } => self.verdict.to_string(),
            Detail::ListAppend(r) if r.is_valid() => "valid".to_string(),
            Detail::ListAppend(r) => {
                let mut names: Vec<&str> = r.anomalies.iter().map(|a| a.name()).collect();
                names.sort_unstable();
                names.dedup();
                format!("invalid: {}", names.join(","))
            }
        }
    }

    /// The full text report ("" when nothing is wrong).
    pub fn report(&self) -> String {
        match &self.detail {
            Detail::Linearizability {
                result,
                revision_anomalies,
            } => {
                let mut s = result
                    .violation
                    .as_ref()
                    .map(report::text)
                    .unwrap_or_default();
                for a in revision_anomalies {
                    s.push_str(&format!("revision order: {a}\n"));
                }
                s
            }
            Detail::ListAppend(r) if r.is_valid() => String::new(),
            Detail::ListAppend(r) => r.report(),
        }
    }
}

/// Checks each file with default options, printing `<name> <verdict>` per file.
pub fn run(format: &str, files: &[PathBuf], out: &mut dyn Write) -> Result<Vec<FileVerdict>> {
    run_with(format.parse()?, files, out, &Options::default())
}

/// Checks one file.
pub fn check_file(format: Format, path: &Path, options: &CheckOptions) -> Result<FileVerdict> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = || path.display().to_string();
    let linearizability = |result: CheckResult, revision_anomalies: Vec<RevisionAnomaly>| {
        let verdict = if revision_anomalies.is_empty() {
            result.verdict
        } else {
            Verdict::NotLinearizable
        };
        FileVerdict {
            path: path.to_path_buf(),
            verdict,
            detail: Detail::Linearizability {
                result,
                revision_anomalies,
            },
        }
    };
    Ok(match format {
        Format::JepsenEtcd => {
            let ops = parse::jepsen_etcd(&text).with_context(name)?;
            linearizability(check(&RegisterModel, &ops, options), Vec::new())
        }
        Format::Kv => {
            let ops = parse::kv(&text).with_context(name)?;
            linearizability(check(&KvModel, &ops, options), Vec::new())
        }
        Format::EtcdJsonl => {
            let ops = jsonl::parse_events::<EtcdInput, EtcdOutput>(&text).with_context(name)?;
            let anomalies = revision_anomalies(&ops);
            linearizability(check(&etcd_model(), &ops, options), anomalies)
        }
        Format::AppendJsonl => {
            let txns = jsonl::parse_txns(&text).with_context(name)?;
            let r = elle::check(&txns, &ElleOptions::default());
            let verdict = if r.is_valid() {
                Verdict::Linearizable
            } else {
                Verdict::NotLinearizable
            };
            FileVerdict {
                path: path.to_path_buf(),
                verdict,
                detail: Detail::ListAppend(r),
            }
        }
    })
}

/// Checks each file, printing `<name> <verdict>` per file (and reports, as asked).
pub fn run_with(
    format: Format,
    files: &[PathBuf],
    out: &mut dyn Write,
    options: &Options,
) -> Result<Vec<FileVerdict>> {
    let mut verdicts = Vec::with_capacity(files.len());
    for path in files {
        let verdict = check_file(format, path, &options.check)?;
        writeln!(out, "{} {}", path.display(), verdict.summary())?;
        let text = verdict.report();
        if !text.is_empty() {
            if options.verbose {
                write!(out, "{text}")?;
            }
            if let Some(dir) = &options.report_dir {
                std::fs::create_dir_all(dir)?;
                let name = path
                    .file_name()
                    .map_or("history".into(), |n| n.to_string_lossy());
                std::fs::write(dir.join(format!("{name}.txt")), &text)?;
                if let Some(v) = verdict.result().and_then(|r| r.violation.as_ref()) {
                    report::write_svg(v, &dir.join(format!("{name}.svg")))?;
                }
            }
        }
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

pub const USAGE: &str = "usage: lincheck --format jepsen-etcd|kv|etcd-jsonl|append-jsonl \
[--budget SECONDS] [--report DIR] [--verbose] FILE...
exit status: 0 all linearizable, 1 some not linearizable, 2 some unknown (none violating)";

/// Parses command-line arguments (without the program name), runs, and returns the exit code.
pub fn main(args: impl IntoIterator<Item = String>, out: &mut dyn Write) -> Result<i32> {
    let mut format = None;
    let mut options = Options::default();
    let mut files = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--format" => format = Some(value("--format")?.parse::<Format>()?),
            "--budget" => {
                let secs: f64 = value("--budget")?.parse().context("--budget SECONDS")?;
                if !(secs.is_finite() && secs > 0.0) {
                    bail!("--budget must be a positive number of seconds");
                }
                options.check.budget = Duration::from_secs_f64(secs);
            }
            "--report" => options.report_dir = Some(PathBuf::from(value("--report")?)),
            "--verbose" | "-v" => options.verbose = true,
            "--help" | "-h" => {
                writeln!(out, "{USAGE}")?;
                return Ok(0);
            }
            flag if flag.starts_with("--") => bail!("unknown option {flag}\n{USAGE}"),
            file => files.push(PathBuf::from(file)),
        }
    }
    let Some(format) = format else {
        bail!("--format is required\n{USAGE}")
    };
    if files.is_empty() {
        bail!("no FILE given\n{USAGE}");
    }
    let verdicts = run_with(format, &files, out, &options)?;
    let code = if verdicts
        .iter()
        .any(|v| v.verdict == Verdict::NotLinearizable)
    {
        1
    } else if verdicts.iter().any(|v| v.verdict == Verdict::Unknown) {
        2
    } else {
        0
    };
    Ok(code)
}
