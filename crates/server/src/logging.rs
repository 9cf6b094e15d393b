//! Log output: human-readable lines by default, one JSON object per line with
//! `--log-format json`; level from `RAFTKV_LOG` (or `RUST_LOG`), `info` if unset.

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Install the global subscriber (a no-op if one is already installed, e.g. in tests).
pub fn init(format: LogFormat) {
    let filter = std::env::var("RAFTKV_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
