//! `raftkv lease grant|revoke|timetolive|list|keep-alive`, printed as etcdctl 3.4 prints
//! them (simple format; lease IDs in 16-digit hexadecimal).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use proto::etcdserverpb::LeaseKeepAliveRequest;

use crate::cli::GlobalOptions;
use crate::txn_script::parse_lease;
use raftkv_client::client::Client;

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
    match cmd {
        LeaseCommand::Grant { ttl } => {
            let r = c.lease_grant(*ttl, 0).await?;
            println!("lease {:016x} granted with TTL({}s)", r.id, r.ttl);
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease(id)?;
            c.lease_revoke(id).await?;
            println!("lease {id:016x} revoked");
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = parse_lease(id)?;
            let r = c.lease_time_to_live(id, *keys).await?;
            println!("{}", time_to_live_line(&r));
        }
        LeaseCommand::List => {
            let r = c.lease_leases().await?;
            println!("found {} leases", r.leases.len());
            for l in &r.leases {
                println!("{:016x}", l.id);
            }
        }
        LeaseCommand::KeepAlive(args) => {
            let id = parse_lease(&args.id)?;
            if args.once {
                let r = c.lease_keep_alive_once(id).await?;
                if r.ttl <= 0 {
                    bail!("etcdserver: requested lease not found");
                }
                println!("lease {id:016x} keepalived with TTL({})", r.ttl);
            } else {
                keep_alive_forever(&c, id).await?;
            }
        }
    }
    Ok(())
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
async fn keep_alive_forever(c: &Client, id: i64) -> Result<()> {
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
            println!("lease {id:016x} expired or revoked.");
            return Ok(());
        }
        println!("lease {id:016x} keepalived with TTL({})", r.ttl);
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
