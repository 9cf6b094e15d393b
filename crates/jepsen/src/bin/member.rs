//! The member the harness runs: `raftkv server` with the harness's faults
//! (`jepsen::faults`) at the server's injection points. This binary, and no shipped one, links
//! the fault code; without `--fault-*` flags it behaves as the real member.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "raftkv-jepsen-member",
    about = "One raftkv member with test-only fault injection (for the Jepsen harness only)"
)]
struct Cli {
    #[command(flatten)]
    args: server::ServerArgs,
    #[command(flatten)]
    faults: jepsen::faults::FaultArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = server::run_with_hooks(cli.args, cli.faults.hooks()) {
        eprintln!("raftkv-jepsen-member: {e:#}");
        std::process::exit(1);
    }
}
