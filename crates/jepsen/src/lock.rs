//! Workload (d): a lock with fencing tokens.
//!
//! N clients contend for one lock through the `v3lockpb.Lock` service, each with a lease of
//! its own kept alive in the background. A client that got the lock reads its owner key:
//! the key's create revision is its **fencing token**. While it believes it holds the lock
//! it appends to one shared list (a space-separated string under [`LIST_KEY`]) by reading
//! the list and writing it back in a Txn guarded *only* by
//! `create_revision(owner key) == token`: the list has no guard of its own, so two holders
//! writing in the same stretch of revisions would lose one another's appends, and a holder
//! whose lease ran out has no owner key, so its writes must fail. See `crate::lock_check`.
//!
//! Some holders stall (stop their keep-alives and sleep past the TTL, as a process paused
//! by GC or SIGSTOP would) and then carry on appending as if nothing happened: the fence
//! must turn those writes away. How often two clients *believed* they held the lock at once
//! (from the Lock answer to the Unlock call) is recorded as well: that is what a user who
//! does not fence gets (Jepsen's etcd 3.4.3 analysis found the same of etcd).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, RangeRequest, TxnRequest,
};
use proto::v3lockpb::lock_client::LockClient;
use proto::v3lockpb::{LockRequest, UnlockRequest};
use raftkv_client::endpoint::lazy_channel;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::{attempt, put_op, Outcome};
use crate::recorder::{OpCounts, Recorder};

/// The lock every client contends for.
pub const LOCK_NAME: &str = "jepsen-lock";
/// The list the holders append to.
pub const LIST_KEY: &str = "lock-list";

/// The lease TTL: etcd's minimum with the harness's 1 s election timeout.
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// How long a stalled holder sleeps: past its TTL, and past the expiry scan and commit.
const STALL: Duration = Duration::from_millis(4_000);
/// The chance that a holder stalls before one of its appends.
const STALL_PROBABILITY: f64 = 0.15;
/// How long a client waits in `Lock` before giving up (its key is then withdrawn).
const LOCK_WAIT: Duration = Duration::from_secs(8);
/// Pause after a failed step before the next attempt.
const BACKOFF: Duration = Duration::from_millis(200);

/// What became of one fenced append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendOutcome {
    /// The Txn succeeded at this revision.
    Ok { revision: u64 },
    /// The Txn answered but its guard failed: the holder had been fenced out.
    Fenced,
    /// Provably not executed (an error before the Txn was sent, or a failed read).
    Fail,
    /// May or may not have taken effect.
    Unknown,
}

/// One fenced append attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    pub element: u64,
    pub outcome: AppendOutcome,
    /// The holder stalled past its TTL just before this append.
    pub after_stall: bool,
}

/// One holding of the lock by one client, from the Lock answer to the release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client: usize,
    /// The owner key's create revision (0: the key was gone, or unreadable, right after
    /// the Lock answer; no fenced write was tried).
    pub token: u64,
    /// The header revision of the read that found the owner key: the lock was held then.
    pub acquired_revision: u64,
    /// Harness time (ns since the run began) from the Lock answer to the Unlock call: the
    /// time the client believed it held the lock.
    pub believed_from: u64,
    pub believed_to: u64,
    pub appends: Vec<Append>,
}

/// Shared state of the lock workload.
pub struct Locks {
    /// Only for its clock: sessions are stamped on the run's timeline.
    clock: Arc<Recorder>,
    next_element: AtomicU64,
    pub sessions: Mutex<Vec<Session>>,
}

impl Locks {
    pub fn new(clock: Arc<Recorder>) -> Locks {
        Locks {
            clock,
            next_element: AtomicU64::new(1),
            sessions: Mutex::new(Vec::new()),
        }
    }
}

/// A list entry: `<element>@<token>`.
pub fn format_entry(element: u64, token: u64) -> String {
    format!("{element}@{token}")
}

/// Parses the list (`None`: not a list this workload wrote).
pub fn parse_list(value: &[u8]) -> Option<Vec<(u64, u64)>> {
    std::str::from_utf8(value)
        .ok()?
        .split_whitespace()
        .map(|e| {
            let (element, token) = e.split_once('@')?;
            Some((element.parse().ok()?, token.parse().ok()?))
        })
        .collect()
}

/// `create_revision(key) == token`: the fence.
pub fn fence(key: &[u8], token: u64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: Bytes::copy_from_slice(key),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::CreateRevision(
            i64::try_from(token).unwrap_or(i64::MAX),
        )),
    }
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// One client's connection (pinned to one member, never failing over).
struct LockConn {
    channel: Channel,
    deadline: Duration,
}

impl LockConn {
    async fn grant(&self) -> Outcome<i64> {
        let mut lease = LeaseClient::new(self.channel.clone());
        let req = LeaseGrantRequest {
            ttl: LEASE_TTL.as_secs() as i64,
            id: 0,
        };
        match attempt(self.deadline, lease.lease_grant(req)).await {
            Outcome::Ok(r) => Outcome::Ok(r.id),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Unknown(e) => Outcome::Unknown(e),
        }
    }

    async fn revoke(&self, id: i64) {
        let mut lease = LeaseClient::new(self.channel.clone());
        let _ = attempt(self.deadline, lease.lease_revoke(LeaseRevokeRequest { id })).await;
    }

    /// (value, create_revision, header revision) of `key`.
    async fn read(&self, key: &[u8]) -> Outcome<(Option<Bytes>, u64, u64)> {
        let mut kv = proto::etcdserverpb::kv_client::KvClient::new(self.channel.clone());
        let req = RangeRequest {
            key: Bytes::copy_from_slice(key),
            ..Default::default()
        };
        match attempt(self.deadline, kv.range(req)).await {
            Outcome::Ok(r) => {
                let header = r.header.as_ref().map_or(0, |h| rev(h.revision));
                Outcome::Ok(match r.kvs.first() {
                    Some(kv) => (Some(kv.value.clone()), rev(kv.create_revision), header),
                    None => (None, 0, header),
                })
            }
            Outcome::Fail(e) | Outcome::Unknown(e) => Outcome::Fail(e),
        }
    }

    /// Read the list, then write it back with `element` appended, fenced by `token`.
    async fn fenced_append(&self, owner: &[u8], token: u64, element: u64) -> AppendOutcome {
        let list = match self.read(LIST_KEY.as_bytes()).await {
            Outcome::Ok((value, _, _)) => value.unwrap_or_default(),
            _ => return AppendOutcome::Fail,
        };
        let mut text = String::from_utf8_lossy(&list).into_owned();
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format_entry(element, token));
        let txn = TxnRequest {
            compare: vec![fence(owner, token)],
            success: vec![put_op(LIST_KEY, &text)],
            failure: vec![],
        };
        let mut kv = proto::etcdserverpb::kv_client::KvClient::new(self.channel.clone());
        match attempt(self.deadline, kv.txn(txn)).await {
            Outcome::Ok(r) if r.succeeded => AppendOutcome::Ok {
                revision: r.header.map_or(0, |h| rev(h.revision)),
            },
            Outcome::Ok(_) => AppendOutcome::Fenced,
            Outcome::Fail(_) => AppendOutcome::Fail,
            Outcome::Unknown(_) => AppendOutcome::Unknown,
        }
    }
}

/// Keeps lease `id` alive on `channel` every third of its TTL until `stop` (or `paused`
/// while a holder stalls); reopens its stream after an error.
async fn keep_alive(channel: Channel, id: i64, stop: Arc<AtomicBool>, paused: Arc<AtomicBool>) {
    let every = LEASE_TTL / 3;
    while !stop.load(Ordering::Relaxed) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx.try_send(LeaseKeepAliveRequest { id });
        let opened = tokio::time::timeout(
            every,
            LeaseClient::new(channel.clone()).lease_keep_alive(ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(responses)) = opened else {
            tokio::time::sleep(every / 4).await;
            continue;
        };
        let mut responses = responses.into_inner();
        loop {
            match tokio::time::timeout(every, responses.message()).await {
                Ok(Ok(Some(r))) if r.ttl > 0 => {}
                // Gone (TTL 0) or the stream broke: the holder finds out from its fence.
                Ok(Ok(Some(_))) => return,
                _ => break,
            }
            tokio::time::sleep(every).await;
            while paused.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if stop.load(Ordering::Relaxed) || tx.send(LeaseKeepAliveRequest { id }).await.is_err()
            {
                return;
            }
        }
    }
}

/// One client: lease, lock, a few fenced appends, unlock, again, until `stop`.
pub async fn client_loop(
    locks: Arc<Locks>,
    client: usize,
    endpoint: String,
    deadline: Duration,
    mut rng: ChaCha8Rng,
    stop: Arc<AtomicBool>,
) -> OpCounts {
    let mut counts = OpCounts::default();
    let Ok(channel) = lazy_channel(&endpoint, deadline, None) else {
        return counts;
    };
    let conn = LockConn { channel, deadline };
    while !stop.load(Ordering::Relaxed) {
        let lease = match conn.grant().await {
            Outcome::Ok(id) => id,
            _ => {
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let (ka_stop, paused) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let ka = tokio::spawn(keep_alive(
            conn.channel.clone(),
            lease,
            ka_stop.clone(),
            paused.clone(),
        ));
        let mut lock = LockClient::new(conn.channel.clone());
        let req = LockRequest {
            name: Bytes::from_static(LOCK_NAME.as_bytes()),
            lease,
        };
        let owner = match attempt(LOCK_WAIT, lock.lock(req)).await {
            Outcome::Ok(r) => Some(r.key),
            _ => None,
        };
        if let Some(owner) = owner {
            hold(
                &locks,
                &conn,
                client,
                &owner,
                &paused,
                &mut rng,
                &mut counts,
            )
            .await;
            let _ = attempt(deadline, lock.unlock(UnlockRequest { key: owner })).await;
        } else {
            tokio::time::sleep(BACKOFF).await;
        }
        ka_stop.store(true, Ordering::Relaxed);
        ka.abort();
        conn.revoke(lease).await;
    }
    counts
}

/// The critical section of one holding: find the token, then append 1-4 times (stalling
/// now and then) while believing the lock held; record the session.
async fn hold(
    locks: &Locks,
    conn: &LockConn,
    client: usize,
    owner: &[u8],
    paused: &AtomicBool,
    rng: &mut ChaCha8Rng,
    counts: &mut OpCounts,
) {
    let believed_from = locks.clock.now();
    let (token, acquired_revision) = match conn.read(owner).await {
        Outcome::Ok((Some(_), create, header)) => (create, header),
        // The owner key is already gone (or unreadable): no token, so no fenced writes, but
        // the client still believed it held the lock (token 0).
        _ => (0, 0),
    };
    let mut appends = Vec::new();
    let rounds = if token == 0 { 0 } else { rng.gen_range(1..=4) };
    for _ in 0..rounds {
        let after_stall = rng.gen_bool(STALL_PROBABILITY);
        if after_stall {
            paused.store(true, Ordering::Relaxed);
            tokio::time::sleep(STALL).await;
            paused.store(false, Ordering::Relaxed);
        }
        let element = locks.next_element.fetch_add(1, Ordering::Relaxed);
        let outcome = conn.fenced_append(owner, token, element).await;
        match outcome {
            AppendOutcome::Ok { .. } => counts.ok += 1,
            AppendOutcome::Fenced | AppendOutcome::Fail => counts.fail += 1,
            AppendOutcome::Unknown => counts.indeterminate += 1,
        }
        let fenced = outcome == AppendOutcome::Fenced;
        appends.push(Append {
            element,
            outcome,
            after_stall,
        });
        if fenced {
            // The lock is lost for good; a careful client stops here.
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..100))).await;
    }
    let believed_to = locks.clock.now();
    crate::register::lock(&locks.sessions).push(Session {
        client,
        token,
        acquired_revision,
        believed_from,
        believed_to,
        appends,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_entries_round_trip_and_garbage_is_refused() {
        let text = [format_entry(3, 10), format_entry(4, 12)].join(" ");
        assert_eq!(parse_list(text.as_bytes()), Some(vec![(3, 10), (4, 12)]));
        assert_eq!(parse_list(b""), Some(vec![]));
        assert_eq!(parse_list(b"3@x"), None);
        assert_eq!(parse_list(b"3"), None);
    }
}
