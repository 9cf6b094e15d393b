//! A bare member executable (`raftkv-member`, same flags as `raftkv server`), so this
//! crate's own tests can start, SIGKILL and restart real member processes without
//! depending on the `raftkv` binary crate.

use clap::{CommandFactory as _, Parser};

#[derive(Parser)]
#[command(
    name = "raftkv-member",
    about = "Run one raftkv member (same flags as `raftkv server`)"
)]
struct Cli {
    #[command(flatten)]
    args: server::ServerArgs,
    /// Check the configuration and exit.
    #[arg(long)]
    dry_run: bool,
}

/// mimalloc instead of glibc malloc: allocation was ~12 % of a busy member's CPU (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    server::adopt_etcd_env();
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // A bad flag gets etcd's wording and exit status (server::flag_errors).
        match server::flag_errors::etcd_answer(&e, &Cli::command(), "raftkv-member") {
            Some(answer) => {
                eprint!("{}", answer.text);
                std::process::exit(answer.status);
            }
            None => e.exit(),
        }
    });
    let result = if cli.dry_run {
        server::validate(&cli.args)
    } else {
        server::run(cli.args)
    };
    if let Err(e) = result {
        eprintln!("raftkv-member: {e:#}");
        std::process::exit(1);
    }
}
