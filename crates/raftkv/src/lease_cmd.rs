//! `raftkv lease grant|revoke|timetolive|list|keep-alive`, printed as etcdctl 3.4 prints
//! them: simple (lease IDs in 16-digit hexadecimal) or `-w json` (decimal IDs, the
//! header's fields beside the lease's); `-w table` fails, with etcdctl's message and status.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use proto::etcdserverpb::LeaseKeepAliveRequest;

use crate::cli::GlobalOptions;
use crate::commands::emit;
use crate::output::{self, OutputFormat};
use crate::txn_script::parse_lease;
use raftkv_client::client::Client;

/// etcdctl's exit statuses where they are not 1 (what `main` gives any error), so scripts
/// that tell failures apart by status see the same ones.
const EXIT_BAD_CONNECTION: i32 = 2;
const EXIT_BAD_FEATURE: i32 = 4;

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds.
    Grant { ttl: i64 },
    /// Revoke a lease (deletes every key attached to it).
    Revoke { id: String },
    /// Show a lease's granted and remaining TTL.
    Timetolive {
        id: String,
        /// List the keys attached to the lease.
        #[arg(long)]
        keys: bool,
    },
    /// List the leases that exist.
    List,
    /// Keep a lease alive until it expires or Ctrl-C.
    KeepAlive(KeepAliveArgs),
}

#[derive(Args, Debug)]
pub struct KeepAliveArgs {
    pub id: String,
    /// Send one keep-alive and exit.
    #[arg(long)]
    pub once: bool,
}

pub async fn run(global: &GlobalOptions, cmd: &LeaseCommand) -> Result<()> {
    let c = crate::commands::client(global).await?;
    let format = global.write_out;
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let r = c.lease_grant(*ttl, 0).await?;
            print(
                format,
                || format!("lease {:016x} granted with TTL({}s)", r.id, r.ttl),
                || output::lease_grant_json(&r),
            )?;
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease(id)?;
            // etcdctl's wording, which has the server's message only.
            let r = c
                .lease_revoke(id)
                .await
                .map_err(|e| anyhow!("failed to revoke lease ({})", e.message()))?;
            print(
                format,
                || format!("lease {id:016x} revoked"),
                || output::lease_revoke_json(&r),
            )?;
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = parse_lease(id)?;
            let r = c.lease_time_to_live(id, *keys).await?;
            print(
                format,
                || time_to_live_line(&r),
                || output::lease_time_to_live_json(&r),
            )?;
        }
        LeaseCommand::List => {
            let r = c.lease_leases().await?;
            let simple = || {
                let mut text = format!("found {} leases", r.leases.len());
                for l in &r.leases {
                    text.push_str(&format!("\n{:016x}", l.id));
                }
                text
            };
            print(format, simple, || output::lease_leases_json(&r))?;
        }
        LeaseCommand::KeepAlive(args) => {
            let id = parse_lease(&args.id)?;
            if args.once {
                let r = match c.lease_keep_alive_once(id).await {
                    Ok(r) if r.ttl > 0 => r,
                    Ok(_) => {
                        exit_with(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found")
                    }
                    Err(e) => exit_with(EXIT_BAD_CONNECTION, &e.to_string()),
                };
                print(
                    format,
                    || format!("lease {id:016x} keepalived with TTL({})", r.ttl),
                    || output::lease_keep_alive_json(&r),
                )?;
            } else {
                keep_alive_forever(&c, id, format).await?;
            }
        }
    }
    Ok(())
}

/// Prints one answer as a line in `format`. etcdctl has no table for leases, and it finds
/// that out only when printing: the call has been made, so a grant, revoke or keep-alive
/// took effect before the error, here as there.
fn print(
    format: OutputFormat,
    simple: impl FnOnce() -> String,
    json: impl FnOnce() -> String,
) -> Result<()> {
    let line = match format {
        OutputFormat::Simple => simple(),
        OutputFormat::Json => json(),
        OutputFormat::Table => exit_with(EXIT_BAD_FEATURE, "table not supported as output format"),
    };
    emit(&format!("{line}\n"))
}

/// Ends the process as etcdctl's `ExitWithError` does: `Error: MESSAGE` on stderr and
/// `status`, which `main` (any error: 1) cannot give.
fn exit_with(status: i32, message: &str) -> ! {
    eprintln!("Error: {message}");
    std::process::exit(status)
}

/// etcdctl's time-to-live line.
pub fn time_to_live_line(r: &proto::etcdserverpb::LeaseTimeToLiveResponse) -> String {
    if r.granted_ttl == 0 && r.ttl == -1 {
        return format!("lease {:016x} already expired", r.id);
    }
    let mut line = format!(
        "lease {:016x} granted with TTL({}s), remaining({}s)",
        r.id, r.granted_ttl, r.ttl
    );
    if !r.keys.is_empty() {
        let keys: Vec<String> = r
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        line.push_str(&format!(", attached keys([{}])", keys.join(" ")));
    }
    line
}

/// Renews every third of the TTL, as etcd's client does, printing each answer.
async fn keep_alive_forever(c: &Client, id: i64, format: OutputFormat) -> Result<()> {
    let (tx, mut responses) = c.lease_keep_alive().await?;
    loop {
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            bail!("keep-alive stream closed");
        }
        let next = tokio::select! {
            r = responses.message() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(r) = next else {
            bail!("keep-alive stream closed by the server");
        };
        if r.ttl <= 0 {
            // etcdctl says so in simple format only; its JSON lines just stop.
            if format == OutputFormat::Simple {
                emit(&format!("lease {id:016x} expired or revoked.\n"))?;
            }
            return Ok(());
        }
        print(
            format,
            || format!("lease {id:016x} keepalived with TTL({})", r.ttl),
            || output::lease_keep_alive_json(&r),
        )?;
        let wait = Duration::from_millis((r.ttl as u64 * 1000 / 3).max(500));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::LeaseTimeToLiveResponse;
    use proto::prost::bytes::Bytes;

    #[test]
    fn time_to_live_prints_as_etcdctl() {
        let mut r = LeaseTimeToLiveResponse {
            id: 0x1234,
            ttl: -1,
            ..Default::default()
        };
        assert_eq!(
            time_to_live_line(&r),
            "lease 0000000000001234 already expired"
        );
        r.ttl = 2;
        r.granted_ttl = 3;
        r.keys = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        assert_eq!(
            time_to_live_line(&r),
            "lease 0000000000001234 granted with TTL(3s), remaining(2s), attached keys([a b])"
        );
    }
}
