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
    // etcd's (Go's) flag syntax, `-name x` included (server::go_flags).
    let cmd = Cli::command();
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = server::go_flags::normalise(&cmd, argv.split_off(1.min(argv.len())));
    argv.extend(flags.iter().cloned());
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| {
        // A bad flag or environment variable gets etcd's wording and exit status
        // (server::flag_errors).
        let program = "raftkv-member";
        let answer = server::flag_errors::env_answer(&e, &cmd, program, &flags)
            .or_else(|| server::flag_errors::etcd_answer(&e, &cmd, program));
        match answer {
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
