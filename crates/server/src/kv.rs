//! The etcd MVCC store as the node's state machine: entries carry encoded
//! `raftkvpb::InternalRequest`s; applying one yields the etcd response (or etcd error)
//! that the proposing client receives.

use std::sync::Arc;

use bytes::Bytes;
use mvcc::auth::AuthApplied;
use mvcc::{MvccError, Response, Store};
use prost::Message as _;
use proto::raftkvpb::InternalRequest;
use raft::{Entry, EntryKind};

use crate::auth::tokens::SimpleTokens;
use crate::node::StateMachine;
use crate::watch::WatchHub;

/// The replicated store. Entries that are not client requests (no-ops, membership)
/// produce no output. Every apply that changed the store hands its events to the watch
/// hub, still under the state machine's write lock (the hub never blocks; `crate::watch`).
///
/// It also keeps this member's simple auth tokens current: applying a replicated
/// `Authenticate` teaches it the token `<prefix>.<entry index>` (and the apply output
/// carries that full token back to the proposer); deleting a user or changing its
/// password forgets its tokens; disabling auth forgets them all (crate::auth::tokens).
#[derive(Default)]
pub struct MvccMachine {
    pub store: Store,
    pub watch: Arc<WatchHub>,
    pub tokens: Arc<SimpleTokens>,
}

impl MvccMachine {
    /// Token bookkeeping after an auth change was applied (see the type's doc).
    fn follow_auth_change(
        &self,
        req: &InternalRequest,
        out: Result<Response, MvccError>,
        index: u64,
    ) -> Result<Response, MvccError> {
        use proto::raftkvpb::internal_request::Request as R;
        match (out, &req.request) {
            (Ok(Response::Auth(AuthApplied::Authenticated { name, token })), _) => {
                let token = format!("{token}.{index}");
                self.tokens
                    .assign(token.clone(), name.clone(), std::time::Instant::now());
                Ok(Response::Auth(AuthApplied::Authenticated { name, token }))
            }
            (Ok(out), Some(R::UserDelete(r))) => {
                self.tokens.invalidate_user(&r.name);
                Ok(out)
            }
            (Ok(out), Some(R::UserChangePassword(r))) => {
                self.tokens.invalidate_user(&r.name);
                Ok(out)
            }
            (Ok(out), Some(R::AuthDisable(_))) => {
                self.tokens.clear();
                Ok(out)
            }
            (out, _) => out,
        }
    }
}

impl StateMachine for MvccMachine {
    type Output = Result<Response, MvccError>;

    fn apply(&mut self, entry: &Entry) -> Option<Self::Output> {
        if entry.kind != EntryKind::Normal {
            return None;
        }
        // Every member decodes the same bytes, so a malformed entry fails identically
        // everywhere and changes nothing.
        let out = match InternalRequest::decode(entry.data.as_ref()) {
            Ok(req) => {
                let out = self.store.apply(&req);
                self.follow_auth_change(&req, out, entry.index)
            }
            Err(e) => Err(MvccError::Internal(format!(
                "undecodable log entry {}: {e}",
                entry.index
            ))),
        };
        if out.is_ok() {
            let events = self.store.last_events();
            if !events.is_empty() {
                self.watch.publish(self.store.current_revision(), events);
            }
        }
        Some(out)
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(self.store.snapshot())
    }

    fn restore(&mut self, image: &Bytes) -> anyhow::Result<()> {
        let unpublished = self.store.current_revision() + 1;
        self.store = Store::restore(image)
            .map_err(|e| anyhow::anyhow!("cannot restore the store from a snapshot: {e:?}"))?;
        // Revisions the snapshot skipped were never published: watchers catch up from the
        // restored history (or learn it was compacted).
        self.watch.restored(unpublished);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.store.approximate_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::PutRequest;
    use proto::raftkvpb::internal_request::Request;

    fn put_entry(index: u64, key: &'static [u8]) -> Entry {
        let req = InternalRequest {
            auth: None,
            request: Some(Request::Put(PutRequest {
                key: Bytes::from_static(key),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        };
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(req.encode_to_vec()),
        }
    }

    #[test]
    fn applies_requests_skips_noops_and_survives_garbage() {
        let mut m = MvccMachine::default();
        assert!(m
            .apply(&Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Noop,
                data: Bytes::new()
            })
            .is_none());
        match m.apply(&put_entry(2, b"k")) {
            Some(Ok(Response::Put(r))) => assert_eq!(r.header.unwrap().revision, 2),
            other => panic!("unexpected {other:?}"),
        }
        let garbage = Entry {
            term: 1,
            index: 3,
            kind: EntryKind::Normal,
            data: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert!(matches!(
            m.apply(&garbage),
            Some(Err(MvccError::Internal(_)))
        ));
        assert_eq!(m.store.current_revision(), 2);
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let mut m = MvccMachine::default();
        m.apply(&put_entry(1, b"a"));
        m.apply(&put_entry(2, b"b"));
        let image = m.snapshot();
        let mut other = MvccMachine::default();
        other.restore(&image).unwrap();
        assert!(other.store == m.store);
        assert!(other.restore(&Bytes::from_static(b"nonsense")).is_err());
    }
}
