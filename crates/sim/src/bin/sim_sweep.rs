//! Seed sweeps from the command line (see docs/simulator.md).
//!
//! ```text
//! sim-sweep --start 0 --count 100000 [--threads 2] [--fault-ticks 400] [--intense] [--membership]
//!           [--apply-stage on|off|seed]
//! sim-sweep --seed 1234 [--trace]       # replay one seed, print its trace on failure
//! ```
//! `--apply-stage` (default: `RAFTKV_SIM_APPLY_STAGE`, else `seed`) forces the apply
//! stage on or off for every seed, or lets each seed draw it.
//! Exits 1 if any seed fails, after printing each failure with its replay command.

use std::process::ExitCode;

use sim::fuzz::{run_seed, FuzzOptions};
use sim::sweep::sweep;

struct Args {
    start: u64,
    count: u64,
    threads: usize,
    seed: Option<u64>,
    options: FuzzOptions,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        start: 0,
        count: 100_000,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        seed: None,
        options: FuzzOptions {
            apply_stage: match std::env::var("RAFTKV_SIM_APPLY_STAGE") {
                Ok(v) => apply_stage(&v)?,
                Err(_) => None,
            },
            ..FuzzOptions::default()
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--start" => args.start = value("--start")?,
            "--count" => args.count = value("--count")?,
            "--threads" => args.threads = value("--threads")? as usize,
            "--seed" => args.seed = Some(value("--seed")?),
            "--fault-ticks" => args.options.fault_ticks = value("--fault-ticks")?,
            "--trace" => args.options.trace = true,
            "--intense" => args.options.intense = true,
            "--membership" => args.options.membership = true,
            "--apply-stage" => {
                let v = it.next().ok_or("--apply-stage needs on, off or seed")?;
                args.options.apply_stage = apply_stage(&v)?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `on` / `off`: the stage for every seed or none; `seed`: each seed draws it.
fn apply_stage(v: &str) -> Result<Option<bool>, String> {
    match v {
        "on" | "1" => Ok(Some(true)),
        "off" | "0" => Ok(Some(false)),
        "seed" | "" => Ok(None),
        other => Err(format!("--apply-stage: {other:?} is not on, off or seed")),
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim-sweep: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let report = run_seed(seed, &args.options);
        if args.options.trace {
            for line in &report.trace {
                println!("{line}");
            }
        }
        println!("seed {seed}: plan {:?}", report.plan);
        return match report.failure {
            None => {
                println!(
                    "seed {seed}: ok ({} ticks, {} proposals)",
                    report.ticks, report.proposals
                );
                ExitCode::SUCCESS
            }
            Some(f) => {
                println!("{f}");
                ExitCode::FAILURE
            }
        };
    }
    let summary = sweep(args.start, args.count, args.threads, &args.options);
    for f in &summary.failures {
        println!(
            "FAILED seed {}:\n{}",
            f.seed,
            f.failure.as_deref().unwrap_or("")
        );
    }
    println!("{}", summary.headline());
    if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
