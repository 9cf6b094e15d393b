//! Standalone entry point of the bench tool (`raftkv bench` runs the same code).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "raftkv-bench",
    about = "Benchmark an etcd v3 API server (etcd or raftkv)"
)]
struct Cli {
    #[command(flatten)]
    args: bench::BenchArgs,
}

/// mimalloc instead of glibc malloc: allocation was ~12 % of a busy member's CPU (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = bench::run(cli.args) {
        eprintln!("raftkv-bench: {e:#}");
        std::process::exit(1);
    }
}
