//! One round of the node loop: how much input it may take, and the report of a round that
//! ran too long.
//!
//! Why a byte budget: everything a round takes is written by one WAL write and one fsync
//! (and, on the leader, handed to the apply stage) before the loop ticks again and the
//! heartbeats it owes go out. A count of
//! inputs alone does not bound that time: 500 clients writing 512 KiB values put 250 MiB
//! into one round, whose write and apply held the leader's thread for longer than an
//! election timeout, so its followers stopped hearing from it and elected another leader
//! (issue 18). With the budget, such a load is cut into rounds of a few MiB, with ticks
//! and heartbeats between them; the rest waits in the queue, in order.

use std::time::{Duration, Instant};

use tracing::warn;

use super::Input;
use crate::transport::{Frame, PeerEvent};

/// Payload bytes (proposals, forwarded proposals, received entries) one round takes
/// before it stops draining the queue. One input is always taken, however large: a round
/// never stalls. etcd bounds one Append at 1 MiB (`MaxSizePerMsg`); a few of those per
/// fsync keep the group commit's gain without letting one round run long.
pub const MAX_ROUND_BYTES: usize = 4 << 20;

/// The payload bytes a bulk input brings into the round (0 for control traffic, which the
/// budget does not count: proposals ahead of the line, the only control input with a
/// payload, are bounded by their own line, `node::AHEAD_ADMITTED_BYTES`).
pub fn payload_bytes<O>(input: &Input<O>) -> usize {
    match input {
        Input::Propose(data, _) => data.len(),
        Input::Peer(PeerEvent::Frame { frame, .. }) => match frame {
            Frame::Forward { data, .. } => data.len(),
            Frame::Raft(m) => match &m.body {
                raft::MessageBody::Append { entries, .. } => {
                    entries.iter().map(|e| e.data.len()).sum()
                }
                raft::MessageBody::InstallSnapshot { snapshot } => snapshot.data.len(),
                _ => 0,
            },
            _ => 0,
        },
        _ => 0,
    }
}

/// A round's byte count against [`MAX_ROUND_BYTES`].
#[derive(Default)]
pub struct RoundBudget {
    taken: usize,
}

impl RoundBudget {
    /// Count `input`; false once the round holds its budget (take no more inputs).
    pub fn take<O>(&mut self, input: &Input<O>) -> bool {
        self.taken = self.taken.saturating_add(payload_bytes(input));
        self.taken < MAX_ROUND_BYTES
    }

    pub fn bytes(&self) -> usize {
        self.taken
    }
}

/// Where one round's time went, for the warning a slow round logs.
pub struct RoundTimes {
    started: Instant,
    /// The node thread's CPU time when the round started.
    cpu_started: Duration,
    /// Inputs taken and their payload bytes.
    pub inputs: usize,
    pub bytes: usize,
    /// Time in the WAL write and fsync (applying is the apply stage's: `apply_stage.rs`).
    pub persist: Duration,
    /// Time spent waiting for input (not the round's work).
    pub idle: Duration,
}

impl RoundTimes {
    pub fn start() -> RoundTimes {
        RoundTimes {
            started: Instant::now(),
            cpu_started: thread_cpu_time(),
            inputs: 0,
            bytes: 0,
            persist: Duration::ZERO,
            idle: Duration::ZERO,
        }
    }

    /// Log the round if it took longer than `limit` (a heartbeat interval: a leader that
    /// spends longer in one round sends its heartbeats late, as etcd's "leader failed to
    /// send out heartbeat on time" says).
    pub fn report_if_slower_than(&self, limit: Duration) {
        let took = self.started.elapsed().saturating_sub(self.idle);
        if took > limit {
            // Wall time beyond the CPU time the thread used was spent waiting: for a CPU
            // (a loaded machine), a lock, or the disk.
            let cpu = thread_cpu_time().saturating_sub(self.cpu_started);
            warn!(
                took_ms = took.as_millis() as u64,
                cpu_ms = cpu.as_millis() as u64,
                inputs = self.inputs,
                payload_bytes = self.bytes,
                wal_ms = self.persist.as_millis() as u64,
                "node loop round took longer than a heartbeat interval; heartbeats went out late"
            );
        }
    }
}

/// CPU time the calling thread has used (zero where the clock is unavailable).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn propose(len: usize) -> Input<()> {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        Input::Propose(Bytes::from(vec![0u8; len]), tx)
    }

    #[test]
    fn a_round_stops_taking_input_once_it_holds_its_byte_budget() {
        let mut b = RoundBudget::default();
        let half = MAX_ROUND_BYTES / 2;
        assert!(b.take(&propose(half - 1)));
        assert!(b.take(&propose(1)) && b.take(&Input::<()>::Shutdown));
        // The input that reaches the budget is taken; the round takes nothing after it.
        assert!(!b.take(&propose(half)));
        assert_eq!(b.bytes(), MAX_ROUND_BYTES);
    }

    #[test]
    fn the_thread_cpu_clock_counts_work_done_on_this_thread() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        for _ in 0..20_000_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(
            thread_cpu_time() > before,
            "20 M multiplications took no CPU time"
        );
    }

    #[test]
    fn one_input_larger_than_the_budget_still_counts_and_ends_the_round() {
        let mut b = RoundBudget::default();
        assert!(!b.take(&propose(MAX_ROUND_BYTES * 2)));
    }

    #[test]
    fn received_entries_and_forwarded_proposals_count_control_traffic_does_not() {
        let entry = raft::Entry {
            term: 1,
            index: 1,
            kind: raft::EntryKind::Normal,
            data: Bytes::from(vec![0u8; 100]),
        };
        let append = raft::Message {
            from: 2,
            to: 1,
            term: 1,
            body: raft::MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![entry.clone(), entry],
                commit: 0,
            },
        };
        let frame = |f: Frame| Input::<()>::Peer(PeerEvent::Frame { from: 2, frame: f });
        assert_eq!(payload_bytes(&frame(Frame::Raft(append))), 200);
        let fwd = Frame::Forward {
            req_id: 7,
            data: Bytes::from(vec![0u8; 30]),
        };
        assert_eq!(payload_bytes(&frame(fwd)), 30);
        let hb = raft::Message {
            from: 2,
            to: 1,
            term: 1,
            body: raft::MessageBody::Heartbeat {
                commit: 0,
                read_seq: 0,
            },
        };
        assert_eq!(payload_bytes(&frame(Frame::Raft(hb))), 0);
    }
}
