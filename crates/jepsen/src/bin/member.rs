//! The member the harness runs: `raftkv server` with the test-only fault hooks compiled in
//! (`raftkv-server/fault-injection`). The hooks do nothing unless their environment variables
//! are set, which only the harness does.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "raftkv-jepsen-member",
    about = "One raftkv member with test-only fault hooks (for the Jepsen harness only)"
)]
struct Cli {
    #[command(flatten)]
    args: server::ServerArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = server::run(cli.args) {
        eprintln!("raftkv-jepsen-member: {e:#}");
        std::process::exit(1);
    }
}
