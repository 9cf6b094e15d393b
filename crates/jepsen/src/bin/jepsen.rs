//! `raftkv-jepsen`: the long version of the harness. Runs N histories one after another and
//! writes one directory per run plus `summary.md` under `--out`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use jepsen::{Fault, RunConfig, ALL_FAULTS};

#[derive(Parser)]
#[command(
    name = "raftkv-jepsen",
    about = "Jepsen-style fault-injection runs against raftkv"
)]
struct Cli {
    /// Number of histories.
    #[arg(long, default_value_t = 4)]
    runs: usize,
    /// Seconds of client traffic per history.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Comma-separated faults, or "all".
    #[arg(long, default_value = "all")]
    faults: String,
    /// Output directory (one sub-directory per run).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    members: usize,
    #[arg(long, default_value_t = 5)]
    register_clients: usize,
    #[arg(long, default_value_t = 3)]
    append_clients: usize,
    /// Clients contending for one lock with fenced appends (0: no lock workload).
    #[arg(long, default_value_t = 3)]
    lock_clients: usize,
    /// Run the deliberately broken build (reads without ReadIndex): must FAIL.
    #[arg(long)]
    stale_reads: bool,
    /// Members lose un-fsynced writes when killed (every kill fault becomes a power loss).
    #[arg(long)]
    lose_unsynced: bool,
    /// The member binary (default: raftkv-jepsen-member next to this executable).
    #[arg(long)]
    member: Option<PathBuf>,
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("raftkv-jepsen: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool> {
    let cli = Cli::parse();
    let faults: Vec<Fault> = if cli.faults == "all" {
        ALL_FAULTS.to_vec()
    } else {
        cli.faults
            .split(',')
            .map(|f| Fault::parse(f.trim()))
            .collect::<Result<_>>()?
    };
    let member = match cli.member {
        Some(m) => m,
        None => std::env::current_exe()?
            .parent()
            .context("no executable directory")?
            .join("raftkv-jepsen-member"),
    };
    std::fs::create_dir_all(&cli.out)?;
    let mut table = String::from(
        "| run | register | append | lock | reg ok/fail/info | append ok/fail/info | lock holdings / appends ok / fenced out | believed-held overlaps (ms; without a stall) | ok ops/s | faults | lost | hashes equal |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut all_passed = true;
    let mut totals = (0u64, 0u64);
    for i in 0..cli.runs {
        let name = format!("run-{:03}", i + 1);
        let mut config = RunConfig::new(&name, &cli.out.join(&name), &member);
        config.duration = Duration::from_secs(cli.duration);
        config.faults = faults.clone();
        config.seed = cli.seed + i as u64;
        config.members = cli.members;
        config.register_clients = cli.register_clients;
        config.append_clients = cli.append_clients;
        config.lock_clients = cli.lock_clients;
        config.stale_reads = cli.stale_reads;
        config.lose_unsynced = cli.lose_unsynced;
        let report = jepsen::run(&config)?;
        println!(
            "{} {}",
            if report.passed() { "PASS" } else { "FAIL" },
            report.one_line()
        );
        all_passed &= report.passed();
        totals.0 += report.register_ops.total();
        totals.1 += report.append_txns.total();
        table.push_str(&format!(
            "| {name} | {} | {} | {} | {}/{}/{} | {}/{}/{} | {}/{}/{} | {} ({:.0}; {}) | {:.0} | {} | {} | {} |\n",
            report.register_verdict,
            report.append_verdict,
            report.lock.verdict,
            report.register_ops.ok,
            report.register_ops.fail,
            report.register_ops.indeterminate,
            report.append_txns.ok,
            report.append_txns.fail,
            report.append_txns.indeterminate,
            report.lock.sessions,
            report.lock.acknowledged_appends,
            report.lock.fenced_out,
            report.lock.believed_overlaps,
            report.lock.believed_overlap_ms,
            report.lock.believed_overlaps_unstalled,
            report.ok_rate,
            report
                .faults
                .iter()
                .map(|(f, n)| format!("{f}:{n}"))
                .collect::<Vec<_>>()
                .join(" "),
            report.lost_writes.len(),
            report.hashes_equal
        ));
        std::fs::write(cli.out.join("summary.md"), &table)?;
    }
    table.push_str(&format!(
        "\n{} runs, {} register ops, {} append txns, all passed: {all_passed}\n",
        cli.runs, totals.0, totals.1
    ));
    std::fs::write(cli.out.join("summary.md"), &table)?;
    println!("{}", table);
    Ok(all_passed)
}
