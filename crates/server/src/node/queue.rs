//! The node thread's two input queues: Raft control traffic ahead of bulk data.
//!
//! Why two: heartbeats, their answers, append acknowledgements and votes are what keeps a
//! leader a leader; proposals and Appends with entries are what makes a member busy. In
//! one FIFO queue, a heartbeat that arrives behind a few hundred MiB of proposals waits for
//! all of them to be written and applied, and a leader's check-quorum or a follower's
//! election timer runs out although every member is alive (issue 18). So control inputs
//! go to their own small queue, which the node thread empties before it takes each bulk
//! input: control may overtake bulk data that arrived before it, never the other way
//! round. Raft tolerates any reordering of messages; the one order the runtime relies on,
//! a follower hearing a `ForwardResult` before the commit of its entry, is kept because
//! both are control traffic or the commit comes in an Append sent after the result.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use super::{Input, Stamped};
use crate::transport::{Frame, PeerEvent};

/// Control inputs the queue holds at most; past that, a control frame is dropped (Raft
/// retransmits) and a client's control call is refused as busy, as with the bulk queue (a
/// proposal ahead of the line then takes the admission line instead). Client calls can
/// hold only part of it: proposals ahead of the line at most 1,024
/// (`node::AHEAD_ADMITTED_BYTES`).
pub const CONTROL_QUEUE: usize = 32 * 1024;

/// Whether `input` is control traffic (small: what keeps leadership, the small client
/// calls, and proposals that must not wait behind bulk writes) rather than bulk data
/// (proposals, entries, snapshots) or a connection event (kept in order with the frames of
/// that connection).
pub fn is_control<O>(input: &Input<O>) -> bool {
    match input {
        Input::Peer(PeerEvent::Frame { frame, .. }) => match frame {
            Frame::Raft(m) => !matches!(
                m.body,
                raft::MessageBody::Append { .. } | raft::MessageBody::InstallSnapshot { .. }
            ),
            Frame::Forward { .. } => false,
            _ => true,
        },
        Input::Peer(_) | Input::Propose(..) | Input::SnapshotWritten(_) | Input::Wake => false,
        Input::Read(_)
        | Input::ProposeAhead(..)
        | Input::Compact(_)
        | Input::TransferLeader(..)
        | Input::Change(..)
        | Input::Applied(_)
        | Input::ApplyFailed(_)
        | Input::Shutdown => true,
    }
}

/// The control queue was full; the input was dropped.
#[derive(Debug)]
pub struct Full;

/// The control queue. Whoever pushes wakes the node thread through the bulk channel with
/// an [`Input::Wake`] (at most one pending at a time), since the thread blocks on that one.
pub struct ControlQueue<O> {
    items: Mutex<VecDeque<Stamped<O>>>,
    wake_pending: AtomicBool,
}

impl<O> Default for ControlQueue<O> {
    fn default() -> Self {
        ControlQueue {
            items: Mutex::new(VecDeque::new()),
            wake_pending: AtomicBool::new(false),
        }
    }
}

impl<O> ControlQueue<O> {
    /// Queue `input` and wake the node. `Err` (the input dropped) when the queue is full,
    /// unless `must` (a stop), which is queued regardless.
    pub fn push(
        &self,
        input: Input<O>,
        must: bool,
        wake: &mpsc::SyncSender<Stamped<O>>,
    ) -> Result<(), Full> {
        {
            let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
            if items.len() >= CONTROL_QUEUE && !must {
                return Err(Full);
            }
            items.push_back(Stamped(Instant::now(), input));
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A full bulk queue means the thread is busy taking from it, and it empties
            // this queue before each bulk input: no wake-up is needed then.
            let _ = wake.try_send(Stamped(Instant::now(), Input::Wake));
        }
        Ok(())
    }

    /// Everything queued, oldest first (the node thread's side).
    pub fn take_all(&self) -> VecDeque<Stamped<O>> {
        self.wake_pending.store(false, Ordering::Release);
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn raft_frame(body: raft::MessageBody) -> Input<()> {
        Input::Peer(PeerEvent::Frame {
            from: 2,
            frame: Frame::Raft(raft::Message {
                from: 2,
                to: 1,
                term: 1,
                body,
            }),
        })
    }

    #[test]
    fn heartbeats_acks_and_votes_are_control_entries_and_proposals_are_bulk() {
        let hb = raft::MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        };
        assert!(is_control(&raft_frame(hb)));
        let ack = raft::MessageBody::AppendResponse {
            rejected: None,
            match_index: 3,
        };
        assert!(is_control(&raft_frame(ack)));
        assert!(is_control(&raft_frame(raft::MessageBody::TimeoutNow)));
        let append = raft::MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: Vec::new(),
            commit: 0,
        };
        assert!(!is_control(&raft_frame(append)));
        let (tx, _rx) = tokio::sync::oneshot::channel();
        assert!(!is_control(&Input::<()>::Propose(Bytes::new(), tx)));
        let forward = Input::<()>::Peer(PeerEvent::Frame {
            from: 2,
            frame: Frame::Forward {
                req_id: 1,
                data: Bytes::new(),
            },
        });
        assert!(!is_control(&forward));
        let result = Input::<()>::Peer(PeerEvent::Frame {
            from: 2,
            frame: Frame::ForwardResult {
                req_id: 1,
                result: Ok((5, 1)),
            },
        });
        assert!(is_control(&result));
        // Connection events stay in order with the frames of their connection.
        assert!(!is_control(&Input::<()>::Peer(PeerEvent::Connected {
            peer: 2
        })));
    }

    #[test]
    fn one_wake_per_batch_of_pushes_and_a_full_queue_refuses_all_but_a_stop() {
        let (tx, rx) = mpsc::sync_channel::<Stamped<()>>(4);
        let q = ControlQueue::<()>::default();
        for _ in 0..3 {
            assert!(q.push(Input::Shutdown, false, &tx).is_ok());
        }
        assert!(matches!(rx.try_recv(), Ok(Stamped(_, Input::Wake))));
        assert!(rx.try_recv().is_err(), "one wake for pushes not yet taken");
        assert_eq!(q.take_all().len(), 3);
        assert!(q.push(Input::Shutdown, false, &tx).is_ok());
        assert!(
            matches!(rx.try_recv(), Ok(Stamped(_, Input::Wake))),
            "a push after the node took the queue wakes it again"
        );
        for _ in 1..CONTROL_QUEUE {
            assert!(q.push(Input::Shutdown, false, &tx).is_ok());
        }
        assert!(q.push(Input::Shutdown, false, &tx).is_err());
        assert!(q.push(Input::Shutdown, true, &tx).is_ok());
        assert_eq!(q.take_all().len(), CONTROL_QUEUE + 1);
    }
}
