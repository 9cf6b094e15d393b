//! `raftkv endpoint health|status|hashkv [--cluster]`, as etcdctl's: one line or row per
//! endpoint; `--cluster` asks the given endpoints for the member list and uses every
//! member's client URLs instead.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::cli::{EndpointCommand, GlobalOptions, HashKvCommand};
use crate::commands;

/// `global` with `--cluster` applied: every member's client URLs, in member-list order.
async fn targets(global: &GlobalOptions, cluster: bool) -> Result<GlobalOptions> {
    if !cluster {
        return Ok(global.clone());
    }
    let client = crate::commands::client(global).await?;
    let members = client.member_list(false).await?.members;
    let urls: Vec<String> = members
        .iter()
        .flat_map(|m| m.client_ur_ls.iter().cloned())
        .collect();
    if urls.is_empty() {
        bail!("no member has a client URL yet");
    }
    let mut g = global.clone();
    g.endpoints = Some(urls);
    Ok(g)
}

pub async fn run(global: &GlobalOptions, cmd: &EndpointCommand) -> Result<()> {
    match cmd {
        EndpointCommand::Health { cluster } => health(&targets(global, *cluster).await?).await,
        EndpointCommand::Status { cluster } => {
            commands::status(&targets(global, *cluster).await?).await
        }
        EndpointCommand::Hashkv { cluster, rev } => {
            commands::hashkv(
                &targets(global, *cluster).await?,
                &HashKvCommand { rev: *rev },
            )
            .await
        }
    }
}

/// Healthy: a linearizable read commits through the endpoint and no alarm is active
/// (etcdctl 3.5's check; 3.4 skipped the alarms).
async fn health(global: &GlobalOptions) -> Result<()> {
    let client = crate::commands::client(global).await?;
    let mut unhealthy = 0;
    for (endpoint, one) in client.endpoints().into_iter().zip(client.each()) {
        let started = Instant::now();
        let verdict = match one.get_str("health", false).await {
            Err(e) => Err(format!("failed to commit proposal: {}", e.message())),
            Ok(_) => match one.alarms().await {
                Err(e) => Err(format!("failed to fetch alarms: {}", e.message())),
                Ok(a) if !a.alarms.is_empty() => Err(format!(
                    "Active Alarm(s): {}",
                    a.alarms
                        .iter()
                        .map(|m| format!("memberID:{} alarm:{} ", m.member_id, alarm_name(m.alarm)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Ok(_) => Ok(started.elapsed()),
            },
        };
        match verdict {
            Ok(took) => {
                println!("{endpoint} is healthy: successfully committed proposal: took = {took:?}")
            }
            Err(why) => {
                unhealthy += 1;
                eprintln!("{endpoint} is unhealthy: {why}");
            }
        }
    }
    if unhealthy > 0 {
        bail!("unhealthy cluster");
    }
    Ok(())
}

fn alarm_name(alarm: i32) -> &'static str {
    proto::etcdserverpb::AlarmType::try_from(alarm)
        .map(|a| a.as_str_name())
        .unwrap_or("NONE")
}
