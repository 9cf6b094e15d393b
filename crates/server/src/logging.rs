//! Log output: human-readable lines by default, one JSON object per line with
//! `--log-format json` (or etcd's `--logger zap`); written to stderr, stdout and/or files
//! (`--log-outputs`); level from `RAFTKV_LOG` (or `RUST_LOG`) in tracing's filter syntax,
//! else `--log-level` / `--debug`, else `info`.

use std::fs::{File, OpenOptions};
use std::sync::Arc;

use anyhow::Context as _;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt as _};
use tracing_subscriber::EnvFilter;

use crate::args::{LogFormat, ServerArgs};
use crate::compat_args::{LogLevel, Logger};

/// One `--log-outputs` destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    /// A file, appended to.
    File(String),
}

/// The logging part of the configuration.
#[derive(Clone, Debug)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Used when neither `RAFTKV_LOG` nor `RUST_LOG` is set.
    pub level: LogLevel,
    pub outputs: Vec<LogOutput>,
}

impl LogSettings {
    /// Read `--log-format`, `--logger`, `--log-level`, `--debug` and `--log-outputs`.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<LogSettings> {
        let l = &args.compat.logging;
        let format = match l.logger {
            Some(Logger::Zap) => LogFormat::Json,
            _ => args.log_format,
        };
        let level = if l.debug == Some(true) {
            LogLevel::Debug
        } else {
            l.log_level.unwrap_or(LogLevel::Info)
        };
        let mut outputs = Vec::new();
        for o in l
            .log_outputs
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            let out = match o {
                "default" | "stderr" => LogOutput::Stderr,
                "stdout" => LogOutput::Stdout,
                path => LogOutput::File(path.to_string()),
            };
            if !outputs.contains(&out) {
                outputs.push(out);
            }
        }
        if outputs.is_empty() {
            anyhow::bail!("--log-outputs must name at least one output");
        }
        Ok(LogSettings {
            format,
            level,
            outputs,
        })
    }

    /// stderr only, text, info: for callers without flags.
    pub fn stderr(format: LogFormat) -> LogSettings {
        LogSettings {
            format,
            level: LogLevel::Info,
            outputs: vec![LogOutput::Stderr],
        }
    }
}

/// Install the global subscriber (a no-op if one is already installed, e.g. in tests).
/// Fails only when a log file cannot be opened.
pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let filter = std::env::var("RAFTKV_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(settings.level.directive()));
    let mut writer: Option<BoxMakeWriter> = None;
    let mut to_file = false;
    for out in &settings.outputs {
        let w = match out {
            LogOutput::Stderr => BoxMakeWriter::new(std::io::stderr),
            LogOutput::Stdout => BoxMakeWriter::new(std::io::stdout),
            LogOutput::File(path) => {
                to_file = true;
                let f: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("--log-outputs: cannot open {path}"))?;
                BoxMakeWriter::new(Arc::new(f))
            }
        };
        writer = Some(match writer {
            None => w,
            Some(prev) => BoxMakeWriter::new(prev.and(w)),
        });
    }
    let writer = writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // No colour escapes in files.
    let builder = if to_file {
        builder.with_ansi(false)
    } else {
        builder
    };
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(argv: &[&str]) -> anyhow::Result<LogSettings> {
        let cli = crate::args::ServerCli::try_parse_from(argv).unwrap();
        LogSettings::from_args(&cli.args)
    }

    #[test]
    fn etcd_logging_flags() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.format, LogFormat::Text);
        assert_eq!(s.level, LogLevel::Info);
        assert_eq!(s.outputs, vec![LogOutput::Stderr]);
        let s = settings(&["--logger", "zap", "--debug"]).unwrap();
        assert_eq!(s.format, LogFormat::Json);
        assert_eq!(s.level, LogLevel::Debug);
        let s = settings(&[
            "--log-level",
            "warn",
            "--log-outputs",
            "stdout,default,/x.log,stderr",
        ])
        .unwrap();
        assert_eq!(s.level.directive(), "warn");
        assert_eq!(
            s.outputs,
            vec![
                LogOutput::Stdout,
                LogOutput::Stderr,
                LogOutput::File("/x.log".into())
            ]
        );
        assert!(settings(&["--log-outputs", ","]).is_err());
    }
}
