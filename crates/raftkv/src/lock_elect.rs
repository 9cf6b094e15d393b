//! `raftkv lock NAME [command…]` and `raftkv elect NAME [proposal]`, as etcdctl's: a session
//! lease (60 s, kept alive while the command runs) and the server's Lock / Election services.
//! The lock's owner key and its create revision (the fencing token, docs/lease.md) are
//! printed, and given to a command as `ETCD_LOCK_KEY` / `ETCD_LOCK_REV`.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use proto::etcdserverpb::{LeaseKeepAliveRequest, RangeRequest};
use proto::prost::bytes::Bytes;
use proto::v3electionpb::election_client::ElectionClient;
use proto::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use proto::v3lockpb::lock_client::LockClient;
use proto::v3lockpb::{LockRequest, UnlockRequest};

use crate::cli::GlobalOptions;
use raftkv_client::client::Client;

/// etcdctl's session TTL.
const SESSION_TTL: i64 = 60;

#[derive(Args, Debug)]
pub struct LockCommand {
    pub name: String,
    /// Run this command while holding the lock, then release it.
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ElectCommand {
    pub name: String,
    /// Campaign with this value; without it, observe the election.
    pub proposal: Option<String>,
    /// Observe the election (print each leader).
    #[arg(short, long)]
    pub listen: bool,
}

/// Grants the session lease and keeps it alive in the background until the returned task
/// is aborted.
async fn session(c: &Client) -> Result<(i64, tokio::task::JoinHandle<()>)> {
    let id = c.lease_grant(SESSION_TTL, 0).await?.id;
    let (tx, mut responses) = c.lease_keep_alive().await?;
    let task = tokio::spawn(async move {
        loop {
            if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                return;
            }
            match responses.message().await {
                Ok(Some(r)) if r.ttl > 0 => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_secs(SESSION_TTL as u64 / 3)).await;
        }
    });
    Ok((id, task))
}

fn status_error(s: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{s}")
}

pub async fn lock(global: &GlobalOptions, cmd: &LockCommand) -> Result<i32> {
    let c = crate::commands::client(global).await?;
    let (lease, keep_alive) = session(&c).await?;
    let mut locks = LockClient::new(c.first_channel());
    let key = locks
        .lock(c.request(LockRequest {
            name: Bytes::from(cmd.name.clone().into_bytes()),
            lease,
        }))
        .await
        .map_err(|s| status_error(s.message()))?
        .into_inner()
        .key;
    let rev = c
        .range(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await?
        .kvs
        .first()
        .map_or(0, |kv| kv.create_revision);
    let key_text = String::from_utf8_lossy(&key).into_owned();
    let code = if cmd.command.is_empty() {
        println!("{key_text}");
        tokio::signal::ctrl_c().await?;
        0
    } else {
        let status = tokio::process::Command::new(&cmd.command[0])
            .args(&cmd.command[1..])
            .env("ETCD_LOCK_KEY", &key_text)
            .env("ETCD_LOCK_REV", rev.to_string())
            .status()
            .await?;
        status.code().unwrap_or(1)
    };
    let _ = locks.unlock(c.request(UnlockRequest { key })).await;
    keep_alive.abort();
    let _ = c.lease_revoke(lease).await;
    Ok(code)
}

pub async fn elect(global: &GlobalOptions, cmd: &ElectCommand) -> Result<()> {
    let c = crate::commands::client(global).await?;
    let mut elections = ElectionClient::new(c.first_channel());
    let name = Bytes::from(cmd.name.clone().into_bytes());
    match (&cmd.proposal, cmd.listen) {
        (Some(value), false) => {
            let (lease, keep_alive) = session(&c).await?;
            let leader = elections
                .campaign(c.request(CampaignRequest {
                    name,
                    lease,
                    value: Bytes::from(value.clone().into_bytes()),
                }))
                .await
                .map_err(|s| status_error(s.message()))?
                .into_inner()
                .leader;
            println!(
                "{}\n{value}",
                leader
                    .as_ref()
                    .map(|l| String::from_utf8_lossy(&l.key).into_owned())
                    .unwrap_or_default()
            );
            tokio::signal::ctrl_c().await?;
            let _ = elections.resign(c.request(ResignRequest { leader })).await;
            keep_alive.abort();
            let _ = c.lease_revoke(lease).await;
        }
        (None, _) | (_, true) => {
            let mut stream = elections
                .observe(c.request(LeaderRequest { name }))
                .await
                .map_err(|s| status_error(s.message()))?
                .into_inner();
            loop {
                let next = tokio::select! {
                    r = stream.message() => r.map_err(|s| status_error(s.message()))?,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                };
                let Some(resp) = next else {
                    bail!("observe stream closed by the server");
                };
                if let Some(kv) = resp.kv {
                    println!(
                        "{}\n{}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value)
                    );
                }
            }
        }
    }
    Ok(())
}
