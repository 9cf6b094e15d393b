//! `raftkv-bench`: a load generator for the etcd v3 gRPC API.
//!
//! It drives etcd and raftkv with the same requests so the two can be compared in one run
//! (see `bench/compare.sh`). Workloads: `put`, `range` (linearizable or serializable) and
//! `txn-mixed`; the report gives throughput, latency percentiles from an HDR histogram and
//! errors by gRPC code, as text or JSON (`-w json`). `watch` (`crate::watch`, its own report
//! and `bench/watch.sh`) measures watchers; `lease` (`crate::lease`, `bench/lease.sh`) grants,
//! keeps alive and revokes leases.

pub mod args;
pub mod compare;
pub mod driver;
pub mod failover;
pub mod keys;
pub mod lease;
pub mod report;
pub mod schedule;
pub mod watch;
pub mod watch_codec;

use std::time::Duration;

use anyhow::{Context, Result};

pub use args::BenchArgs;
use args::{OutputFormat, Workload};

/// Runs the bench command on its own multi-threaded tokio runtime.
pub fn run(args: BenchArgs) -> Result<()> {
    args.validate()?;
    if let Workload::CompareReport {
        dir,
        markdown,
        svg,
        command,
    } = &args.workload
    {
        return compare::write_report(dir, markdown, svg, command);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Same scheduling as the server (see server::run): without the LIFO slot, a connection
    // task woken by many finishing requests writes their frames together.
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        if let Workload::Failover {
            kill_pid,
            give_up_after,
        } = &args.workload
        {
            let r = failover::run(
                &args.endpoint_urls(),
                *kill_pid,
                Duration::from_secs_f64(*give_up_after),
            )
            .await?;
            match args.write_out {
                OutputFormat::Json => println!("{}", serde_json::to_string(&r)?),
                OutputFormat::Text => println!(
                    "failover: first write succeeded {:.1} ms after the kill (on {})",
                    r.failover_ms, r.first_success_endpoint
                ),
            }
            return Ok(());
        }
        if let Workload::Watch(w) = &args.workload {
            let r = watch::run(&args, w).await?;
            match args.write_out {
                OutputFormat::Json => println!("{}", r.to_json()),
                OutputFormat::Text => print!("{}", r.to_text()),
            }
            return Ok(());
        }
        if let Workload::Lease(l) = &args.workload {
            let r = lease::run(&args, l).await?;
            match args.write_out {
                OutputFormat::Json => println!("{}", r.to_json()),
                OutputFormat::Text => print!("{}", r.to_text()),
            }
            return Ok(());
        }
        let report = driver::run_load(&args).await?;
        match args.write_out {
            OutputFormat::Json => println!("{}", report.to_json()),
            OutputFormat::Text => print!("{}", report.to_text()),
        }
        Ok(())
    })
}
