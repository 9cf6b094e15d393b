//! The `lincheck` command: checks history files and prints one verdict per file.
//!
//! `raftkv lincheck ...` delegates here ([`main`] with the arguments after the subcommand).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::checker::{check, CheckOptions, CheckResult, Verdict};
use crate::models::kv::KvModel;
use crate::models::register::RegisterModel;
use crate::{parse, report};

/// The history formats the command reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Jepsen etcd CAS-register logs, checked with the register + CAS model (one key).
    JepsenEtcd,
    /// MIT KV lab logs, checked with the get/put/append model partitioned by key.
    Kv,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "jepsen-etcd" => Ok(Format::JepsenEtcd),
            "kv" => Ok(Format::Kv),
            other => bail!("unknown format {other:?} (expected jepsen-etcd or kv)"),
        }
    }
}

/// Settings of a run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub check: CheckOptions,
    /// Where to write `<file name>.txt` and `<file name>.svg` for each violation.
    pub report_dir: Option<PathBuf>,
    /// Also print the text report of each violation.
    pub verbose: bool,
}

/// The verdict on one file.
#[derive(Clone, Debug)]
pub struct FileVerdict {
    pub path: PathBuf,
    pub verdict: Verdict,
    pub result: CheckResult,
}

/// Checks each file with default options, printing `<name> <verdict>` per file.
pub fn run(format: &str, files: &[PathBuf], out: &mut dyn Write) -> Result<Vec<FileVerdict>> {
    run_with(format.parse()?, files, out, &Options::default())
}

/// Checks one file.
pub fn check_file(format: Format, path: &Path, options: &CheckOptions) -> Result<CheckResult> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let result = match format {
        Format::JepsenEtcd => {
            let ops = parse::jepsen_etcd(&text).with_context(|| path.display().to_string())?;
            check(&RegisterModel, &ops, options)
        }
        Format::Kv => {
            let ops = parse::kv(&text).with_context(|| path.display().to_string())?;
            check(&KvModel, &ops, options)
        }
    };
    Ok(result)
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
        let result = check_file(format, path, &options.check)?;
        writeln!(out, "{} {}", path.display(), result.verdict)?;
        if let Some(v) = &result.violation {
            if options.verbose {
                write!(out, "{}", report::text(v))?;
            }
            if let Some(dir) = &options.report_dir {
                std::fs::create_dir_all(dir)?;
                let name = path
                    .file_name()
                    .map_or("history".into(), |n| n.to_string_lossy());
                std::fs::write(dir.join(format!("{name}.txt")), report::text(v))?;
                report::write_svg(v, &dir.join(format!("{name}.svg")))?;
            }
        }
        verdicts.push(FileVerdict {
            path: path.clone(),
            verdict: result.verdict,
            result,
        });
    }
    Ok(verdicts)
}

pub const USAGE: &str = "usage: lincheck --format jepsen-etcd|kv [--budget SECONDS] \
[--report DIR] [--verbose] FILE...
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
