//! `raftkv`: one executable for the server, the client commands, the demo and a local cluster.

use std::process::ExitCode;

use clap::Parser;
use raftkv::cli::{Cli, Command};
use raftkv::{cluster_cmd, commands, demo};

/// mimalloc instead of glibc malloc: allocation was ~12 % of a busy member's CPU (docs/performance.md).
/// The `system-alloc` feature keeps the system allocator, for heap profilers that intercept
/// `malloc` (`valgrind --tool=dhat`, docs/watch.md "Memory").
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // An environment written for etcd (ETCD_NAME, ...) configures `raftkv server`; this runs
    // before any thread exists, as it sets variables.
    #[cfg(feature = "server")]
    server::adopt_etcd_env();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `raftkv server` takes etcd's (Go's) flag syntax, `-name x` included.
    #[cfg(feature = "server")]
    let argv = {
        use clap::CommandFactory as _;
        match Cli::command().find_subcommand("server") {
            Some(server_cmd) => server::go_flags::normalise_server_subcommand(server_cmd, argv),
            None => argv,
        }
    };
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| parse_error(e, &argv));
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Answer a command line clap refused and exit (never returns; typed to fit
/// `unwrap_or_else`). A bad `raftkv server` flag gets etcd's wording and exit status, so
/// scripts written for `etcd` see what they expect (server::flag_errors); everything else
/// gets clap's answer.
fn parse_error(e: clap::Error, argv: &[std::ffi::OsString]) -> Cli {
    #[cfg(feature = "server")]
    {
        use clap::CommandFactory as _;
        // The subcommand is the first word that is not an option (global options come
        // as `--flag=value` before it, or not at all).
        let at = argv
            .iter()
            .skip(1)
            .position(|a| a.to_str().is_some_and(|a| !a.starts_with('-')))
            .map(|i| i + 1);
        let is_server = at.is_some_and(|i| argv[i] == "server");
        let flags = at.map_or(&[][..], |i| &argv[i + 1..]);
        let cli = Cli::command();
        if let Some(cmd) = cli.find_subcommand("server").filter(|_| is_server) {
            let program = "raftkv server";
            let answer = server::flag_errors::env_answer(&e, cmd, program, flags)
                .or_else(|| server::flag_errors::etcd_answer(&e, cmd, program));
            if let Some(answer) = answer {
                eprint!("{}", answer.text);
                std::process::exit(answer.status);
            }
        }
    }
    #[cfg(not(feature = "server"))]
    let _ = argv;
    e.exit()
}

/// A single-threaded runtime: the client commands make a handful of calls, and the demo and
/// the local cluster spawn their member processes from this thread, which the members'
/// parent-death signal is tied to (a runtime worker thread could exit and take them along).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        #[cfg(not(feature = "server"))]
        Command::Server(_) => anyhow::bail!("this raftkv was built without the server feature"),
        #[cfg(feature = "server")]
        Command::Server(cmd) => {
            if cmd.dry_run {
                server::validate(&cmd.args)?;
                println!("ok");
            } else {
                // The server builds and owns its runtime.
                server::run(cmd.args)?;
            }
        }
        #[cfg(feature = "server")]
        Command::Snapshot(cmd) => {
            use raftkv::cli::SnapshotCommand;
            use raftkv::snapshot_cmd;
            match cmd {
                SnapshotCommand::Save { file } => {
                    runtime()?.block_on(snapshot_cmd::save(&global, &file))?
                }
                SnapshotCommand::Status { file } => snapshot_cmd::status(&global, &file)?,
                SnapshotCommand::Restore {
                    file,
                    bump_revision,
                    mark_compacted,
                    args,
                } => snapshot_cmd::restore(
                    &file,
                    &args,
                    server::restore::RestoreOptions {
                        bump_revision,
                        mark_compacted,
                    },
                )?,
            }
        }
        Command::Lincheck(cmd) => {
            let mut stdout = std::io::stdout();
            let code = lincheck::cli::main(cmd.args, &mut stdout)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Command::Bench(cmd) => {
            /// The bench tool's own command line, parsed after `raftkv bench`.
            #[derive(clap::Parser)]
            #[command(name = "raftkv bench")]
            struct BenchCli {
                #[command(flatten)]
                args: bench::BenchArgs,
            }
            let mut argv = vec!["raftkv bench".to_string()];
            if let Some(endpoints) = &global.endpoints {
                argv.push(format!("--endpoints={}", endpoints.join(",")));
            }
            argv.extend(cmd.args);
            let parsed =
                <BenchCli as clap::Parser>::try_parse_from(argv).unwrap_or_else(|e| e.exit());
            bench::run(parsed.args)?;
        }
        Command::Demo(cmd) => {
            let options = demo::DemoOptions {
                data_dir: cmd.data_dir,
                heartbeat_ms: cmd.heartbeat_interval,
                election_ms: cmd.election_timeout,
                etcd_binary: cmd.with_etcd,
                endpoints: global.endpoints.clone(),
                timeouts: global.timeouts(),
                tls: global.tls(),
            };
            let held = runtime()?.block_on(async {
                tokio::select! {
                    result = demo::run(options) => result,
                    _ = cluster_cmd::shutdown_signal() => {
                        // Dropping the demo future drops its cluster, which kills the members.
                        anyhow::bail!("interrupted; the demo's members were stopped")
                    }
                }
            })?;
            return Ok(if held {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Cluster(cmd) => {
            runtime()?.block_on(cluster_cmd::run(cmd.data_dir, cmd.free_ports))?
        }
        Command::Put(cmd) => runtime()?.block_on(commands::put(&global, &cmd))?,
        Command::Get(cmd) => runtime()?.block_on(commands::get(&global, &cmd))?,
        Command::Del(cmd) => runtime()?.block_on(commands::del(&global, &cmd))?,
        Command::Txn(cmd) => runtime()?.block_on(commands::txn(&global, &cmd))?,
        Command::Compact(cmd) => runtime()?.block_on(commands::compact(&global, &cmd))?,
        Command::Watch(cmd) => runtime()?.block_on(commands::watch(&global, &cmd))?,
        Command::Lease(cmd) => runtime()?.block_on(raftkv::lease_cmd::run(&global, &cmd))?,
        Command::Lock(cmd) => {
            let code = runtime()?.block_on(raftkv::lock_elect::lock(&global, &cmd))?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Command::Elect(cmd) => runtime()?.block_on(raftkv::lock_elect::elect(&global, &cmd))?,
        Command::Status => runtime()?.block_on(commands::status(&global))?,
        Command::Members => runtime()?.block_on(commands::members(&global))?,
        Command::Member(cmd) => runtime()?.block_on(raftkv::member_cmd::run(&global, &cmd))?,
        Command::MoveLeader(cmd) => runtime()?.block_on(commands::move_leader(&global, &cmd))?,
        Command::Hashkv(cmd) => runtime()?.block_on(commands::hashkv(&global, &cmd))?,
        Command::User(cmd) => runtime()?.block_on(raftkv::auth_cmd::user(&global, &cmd))?,
        Command::Role(cmd) => runtime()?.block_on(raftkv::auth_cmd::role(&global, &cmd))?,
        Command::Auth(cmd) => runtime()?.block_on(raftkv::auth_cmd::auth(&global, &cmd))?,
        Command::Endpoint(cmd) => runtime()?.block_on(raftkv::endpoint_cmd::run(&global, &cmd))?,
        Command::Peer(cmd) => runtime()?.block_on(raftkv::peer_cmd::run(&global, &cmd))?,
    }
    Ok(ExitCode::SUCCESS)
}
