//! HashKV over the peer connections: how the corruption checks (`crate::corrupt_check`,
//! `crate::corrupt_monitor`) ask a peer for its store's hash, as etcd 3.4 asks its peers'
//! peer URLs (`/members/hashkv`, through its peer transport). Asking over the peer
//! connection needs what the peer connection already has, and nothing else: peer TLS
//! (`https://` peer URLs, `--peer-client-cert-auth`) protects it, and no client
//! credentials are involved, so the check works whatever the client URLs' scheme and
//! whether authentication is on — as in etcd, whose peer endpoint checks neither.
//!
//! The question travels on our connection to the peer (`Frame::HashKv`); the answer comes
//! back on that same connection (`Frame::HashKvResult`, the only frame an acceptor writes
//! after the handshake), like an HTTP reply, so it does not depend on the peer's own
//! connection to us being up (after a restart it often is not yet). Our dialler hands it
//! to the waiting caller ([`Waiters::complete`]). Only peers whose handshake advertised
//! [`super::codec::FEATURE_HASHKV`] are asked: an older acceptor would not answer, and an
//! older dialler would take the answer for a broken connection (it is never sent one,
//! since it never asks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::codec::PeerHashKv;

/// Computes this member's answer to a [`Frame::HashKv`](super::codec::Frame::HashKv):
/// HashKV at a revision, or etcd's error text.
pub type HashSource = Arc<dyn Fn(i64) -> Result<PeerHashKv, String> + Send + Sync>;

/// Callers waiting for a peer's answer, by request id.
#[derive(Default)]
pub struct Waiters {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<PeerHashKv, String>>>>,
}

impl Waiters {
    /// A new request id and the receiver its answer will arrive on.
    pub fn register(&self) -> (u64, oneshot::Receiver<Result<PeerHashKv, String>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id, tx);
        }
        (id, rx)
    }

    /// Hand an answer to its caller; an answer nobody waits for (timed out) is dropped.
    pub fn complete(&self, req_id: u64, result: Result<PeerHashKv, String>) {
        let waiter = self.waiting.lock().ok().and_then(|mut w| w.remove(&req_id));
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }

    /// Forget a request whose caller gave up.
    pub fn forget(&self, req_id: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&req_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_caller_and_strays_are_dropped() {
        let w = Waiters::default();
        let (a, rx_a) = w.register();
        let (b, rx_b) = w.register();
        assert_ne!(a, b);
        w.complete(b, Err("mvcc: required revision has been compacted".into()));
        w.complete(999, Err("nobody asked".into()));
        assert!(rx_b.await.unwrap().is_err());
        let answer = PeerHashKv {
            member_id: 2,
            hash: 9,
            hash_revision: 5,
            compact_revision: 1,
            current_revision: 6,
        };
        w.complete(a, Ok(answer));
        assert_eq!(rx_a.await.unwrap(), Ok(answer));
        w.forget(a);
    }
}
