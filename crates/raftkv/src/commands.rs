//! The etcdctl-like client commands: build the request from the flags, send it with
//! failover, print the response in the chosen format.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest,
};
use proto::prost::bytes::Bytes;

use crate::cli::{
    CompactCommand, Consistency, DelCommand, GetCommand, GlobalOptions, HashKvCommand,
    MoveLeaderCommand, Order, PutCommand, SortBy, TxnCommand, WatchCommand,
};
use crate::output::{self, RangePrint};
use crate::txn_script;
use raftkv_client::client::{prefix_range_end, Client};
use raftkv_client::WatchOptions;

/// A client for the global options' endpoints; with `--user`, authenticated first (etcd's
/// `Authenticate`), so every request carries the token.
pub async fn client(global: &GlobalOptions) -> Result<Client> {
    let mut client = global.client_for(&global.endpoints_or_default())?;
    if let Some(user) = &global.user {
        let (name, password) = crate::auth_cmd::split_user(user, global.password.as_deref())?;
        client
            .authenticate(&name, &password)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    }
    Ok(client)
}

pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// `[key, end)` for the range flags shared by get and del.
fn key_range(key: &str, range_end: Option<&str>, prefix: bool, from_key: bool) -> (Bytes, Bytes) {
    let key_bytes = key.as_bytes().to_vec();
    let end = if prefix {
        prefix_range_end(&key_bytes)
    } else if from_key {
        vec![0]
    } else {
        range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default()
    };
    (Bytes::from(key_bytes), Bytes::from(end))
}

pub async fn put(global: &GlobalOptions, cmd: &PutCommand) -> Result<()> {
    let value = match (&cmd.value, cmd.ignore_value) {
        (Some(_), true) => bail!("put with --ignore-value takes no value"),
        (None, false) => bail!("put needs a key and a value"),
        (v, _) => v.clone().unwrap_or_default(),
    };
    let lease = cmd
        .lease
        .as_deref()
        .map(txn_script::parse_lease)
        .transpose()?
        .unwrap_or(0);
    let response = client(global)
        .await?
        .put(PutRequest {
            key: Bytes::from(cmd.key.clone().into_bytes()),
            value: Bytes::from(value.into_bytes()),
            lease,
            prev_kv: cmd.prev_kv,
            ignore_value: cmd.ignore_value,
            ignore_lease: cmd.ignore_lease,
        })
        .await?;
    emit(&output::put(global.write_out, &response))
}

pub async fn get(global: &GlobalOptions, cmd: &GetCommand) -> Result<()> {
    let (key, range_end) = key_range(&cmd.key, cmd.range_end.as_deref(), cmd.prefix, cmd.from_key);
    let sort_target = match cmd.sort_by {
        None | Some(SortBy::Key) => SortTarget::Key,
        Some(SortBy::Version) => SortTarget::Version,
        Some(SortBy::Create) => SortTarget::Create,
        Some(SortBy::Modify) => SortTarget::Mod,
        Some(SortBy::Value) => SortTarget::Value,
    };
    // As etcd's client: ascending by key is the natural order, sent as NONE.
    let sort_order = match (cmd.order, sort_target) {
        (Some(Order::Descend), _) => SortOrder::Descend,
        (Some(Order::Ascend), SortTarget::Key) | (None, SortTarget::Key) => SortOrder::None,
        (_, _) => SortOrder::Ascend,
    };
    let request = RangeRequest {
        key,
        range_end,
        limit: cmd.limit,
        revision: cmd.rev,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: cmd.consistency == Consistency::S,
        keys_only: cmd.keys_only,
        count_only: cmd.count_only,
        ..Default::default()
    };
    let response = client(global).await?.range(request).await?;
    let how = RangePrint {
        keys_only: cmd.keys_only,
        count_only: cmd.count_only,
        print_value_only: cmd.print_value_only,
    };
    emit(&output::range(global.write_out, &response, how))
}

pub async fn del(global: &GlobalOptions, cmd: &DelCommand) -> Result<()> {
    let (key, range_end) = key_range(&cmd.key, cmd.range_end.as_deref(), cmd.prefix, cmd.from_key);
    let response = client(global)
        .await?
        .delete_range(DeleteRangeRequest {
            key,
            range_end,
            prev_kv: cmd.prev_kv,
        })
        .await?;
    emit(&output::delete(global.write_out, &response))
}

pub async fn txn(global: &GlobalOptions, cmd: &TxnCommand) -> Result<()> {
    if cmd.interactive {
        eprintln!("compares, then success requests, then failure requests; each block ends with an empty line:");
    }
    let mut script = String::new();
    std::io::stdin()
        .read_to_string(&mut script)
        .context("cannot read the transaction from stdin")?;
    let request = txn_script::parse_txn(&script)?;
    let response = client(global).await?.txn(request).await?;
    emit(&output::txn(global.write_out, &response))
}

pub async fn compact(global: &GlobalOptions, cmd: &CompactCommand) -> Result<()> {
    let response = client(global)
        .await?
        .compact(CompactionRequest {
            revision: cmd.revision,
            physical: cmd.physical,
        })
        .await?;
    emit(&output::compact(global.write_out, cmd.revision, &response))
}

/// Status of every endpoint. Unreachable endpoints are reported on stderr and make the
/// command fail after the reachable ones are printed (as etcdctl does).
pub async fn status(global: &GlobalOptions) -> Result<()> {
    let client = client(global).await?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (endpoint, one) in client.endpoints().into_iter().zip(client.each()) {
        match one.status().await {
            Ok(s) => rows.push((endpoint, s)),
            Err(e) => failures.push(format!("{endpoint}: {}", e.message())),
        }
    }
    emit(&output::status(global.write_out, &rows))?;
    if !failures.is_empty() {
        bail!("failed to get the status of {}", failures.join("; "));
    }
    Ok(())
}

pub async fn hashkv(global: &GlobalOptions, cmd: &HashKvCommand) -> Result<()> {
    let client = client(global).await?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (endpoint, one) in client.endpoints().into_iter().zip(client.each()) {
        match one.hash_kv(cmd.rev).await {
            Ok(h) => rows.push((endpoint, h)),
            Err(e) => failures.push(format!("{endpoint}: {}", e.message())),
        }
    }
    emit(&output::hash_kv(global.write_out, &rows))?;
    if !failures.is_empty() {
        bail!("failed to get the hash of {}", failures.join("; "));
    }
    Ok(())
}

pub async fn members(global: &GlobalOptions) -> Result<()> {
    let response = client(global).await?.member_list(true).await?;
    emit(&output::members(
        global.write_out,
        &response.members,
        response.header.as_ref(),
    ))
}

/// `etcdctl move-leader`: find the endpoint that leads (its Status names itself), ask it
/// to hand over, and print what etcdctl prints.
pub async fn move_leader(global: &GlobalOptions, cmd: &MoveLeaderCommand) -> Result<()> {
    let target = u64::from_str_radix(cmd.target.trim_start_matches("0x"), 16)
        .with_context(|| format!("bad member id {:?} (expected hex)", cmd.target))?;
    let client = client(global).await?;
    let endpoints = client.endpoints();
    for one in client.each() {
        let Ok(status) = one.status().await else {
            continue;
        };
        let me = status.header.as_ref().map_or(0, |h| h.member_id);
        if status.leader == 0 || status.leader != me {
            continue;
        }
        one.move_leader(target)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        return emit(&format!(
            "Leadership transferred from {me:x} to {target:x}\n"
        ));
    }
    bail!("no leader endpoint given at {endpoints:?}")
}

/// `etcdctl watch`: print every event until the stream ends or the server cancels the
/// watch (then fail with etcdctl's message).
pub async fn watch(global: &GlobalOptions, cmd: &WatchCommand) -> Result<()> {
    let (key, range_end) = key_range(&cmd.key, cmd.range_end.as_deref(), cmd.prefix, false);
    let create = WatchCreateRequest {
        key,
        range_end,
        start_revision: cmd.rev,
        prev_kv: cmd.prev_kv,
        progress_notify: cmd.progress_notify,
        ..Default::default()
    };
    // etcdctl sets require-leader on its watches.
    let options = WatchOptions {
        require_leader: true,
    };
    let mut stream = client(global).await?.watch(create, options).await?;
    loop {
        let Some(response) = stream.next().await? else {
            bail!("watch is canceled by the server");
        };
        if response.canceled {
            let reason = if response.compact_revision != 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else {
                response.cancel_reason.clone()
            };
            bail!("watch was canceled ({reason})");
        }
        if response.created {
            continue;
        }
        emit(&output::watch(global.write_out, &response))?;
    }
}
