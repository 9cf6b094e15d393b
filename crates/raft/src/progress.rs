//! What a leader knows about each follower's log, and how fast it may send to it.
//!
//! A follower is in one of three states (the etcd-raft design, in our own words):
//!
//! * **Probe** — we do not know where its log matches ours. Send one Append at a time and
//!   wait for the answer (or a heartbeat response) before sending the next, backing off with
//!   the reject hint until a match is found.
//! * **Replicate** — it accepted our last probe: stream Appends optimistically, advancing
//!   `next_index` as we send, bounded by an in-flight window (count *and* bytes) so a slow
//!   follower cannot make us buffer unbounded data.
//! * **Snapshot** — it needs entries we compacted; one snapshot is on its way and nothing else
//!   is sent until it is acknowledged (or presumed lost after an election timeout).

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    Probe,
    Replicate,
    Snapshot { pending_index: Index },
}

/// The un-acknowledged Appends sent in the replicate state: (last index, bytes) per message.
#[derive(Debug)]
pub(crate) struct Inflights {
    sent: VecDeque<(Index, usize)>,
    bytes: usize,
    max_msgs: usize,
    max_bytes: usize,
}

impl Inflights {
    pub(crate) fn new(max_msgs: usize, max_bytes: usize) -> Inflights {
        Inflights {
            sent: VecDeque::new(),
            bytes: 0,
            max_msgs: max_msgs.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    pub(crate) fn add(&mut self, last_index: Index, bytes: usize) {
        self.sent.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Everything up to `index` was acknowledged.
    pub(crate) fn free_up_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.sent.front() {
            if last > index {
                break;
            }
            self.bytes -= bytes;
            self.sent.pop_front();
        }
    }

    /// Make room for one more message (a heartbeat response proves the follower is alive, so
    /// a lost Append must not stall the stream forever).
    pub(crate) fn free_first(&mut self) {
        if let Some((_, bytes)) = self.sent.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.sent.len() >= self.max_msgs || self.bytes >= self.max_bytes
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.sent.len()
    }

    pub(crate) fn reset(&mut self) {
        self.sent.clear();
        self.bytes = 0;
    }
}

#[derive(Debug)]
pub(crate) struct Progress {
    /// Highest index known to be replicated (and durable) on the follower. Never a guess.
    pub(crate) match_index: Index,
    /// Next index to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// In Probe: an Append is outstanding, wait before sending another.
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from in the current check-quorum period.
    pub(crate) recent_active: bool,
    /// Highest ReadIndex round the follower echoed back in this term.
    pub(crate) read_ack: u64,
    /// Ticks spent in the Snapshot state (to resend a snapshot presumed lost).
    pub(crate) snapshot_ticks: u32,
    /// `match_index` when the previous resending heartbeat answer arrived: if a whole
    /// heartbeat round passes without progress while entries are outstanding, they are
    /// presumed lost.
    pub(crate) match_at_last_heartbeat: Index,
    /// A periodic heartbeat went out since the last heartbeat answer that was allowed to
    /// resend (un-pause a probe, free an inflight slot, re-probe a stalled follower).
    /// Why: read rounds send heartbeats too, as often as clients read, and if every answer
    /// resent, a leader would build an Append of up to `max_size_per_msg` per answer to a
    /// follower behind its log: thousands per second, tens of seconds of CPU in one round
    /// after a partition healed (Jepsen `short_runs`). Recovery from lost messages keeps
    /// the pace of the periodic heartbeat, whatever the read load.
    pub(crate) heartbeat_may_resend: bool,
}

impl Progress {
    pub(crate) fn new(next_index: Index, max_msgs: usize, max_bytes: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_msgs, max_bytes),
            recent_active: false,
            read_ack: 0,
            snapshot_ticks: 0,
            match_at_last_heartbeat: 0,
            heartbeat_may_resend: false,
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.next_index = match self.state {
            ProgressState::Snapshot { pending_index } => {
                (self.match_index + 1).max(pending_index + 1)
            }
            _ => self.match_index + 1,
        };
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_snapshot(&mut self, pending_index: Index) {
        self.state = ProgressState::Snapshot { pending_index };
        self.probe_sent = false;
        self.snapshot_ticks = 0;
        self.inflights.reset();
    }

    /// Record an Append carrying entries up to `last_index` (`bytes` of them).
    pub(crate) fn sent_entries(&mut self, entries: usize, last_index: Index, bytes: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entries > 0 {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// A success acknowledgement up to `index`. Returns false if it told us nothing new.
    pub(crate) fn acked(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
        }
        // Whatever happened before, never offer the follower what it already acknowledged:
        // re-sending from below `match_index` can loop forever (raftkv-sim seed 108686).
        self.next_index = self.next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflights.free_up_to(index);
        advanced
    }

    /// A rejection of the Append after `rejected`. `retry_from` is where the leader's search
    /// says the logs may match. Returns false for a stale rejection (of an Append we already
    /// know the fate of), which must not move `next_index` backwards.
    pub(crate) fn rejected(&mut self, rejected: Index, retry_from: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.become_probe();
                self.next_index = (retry_from + 1).max(self.match_index + 1);
                true
            }
            ProgressState::Probe => {
                // Only the outstanding probe's answer counts, and never one contradicting
                // what the follower already acknowledged.
                if rejected.checked_add(1) != Some(self.next_index) || rejected <= self.match_index
                {
                    return false;
                }
                self.next_index = (retry_from + 1).max(self.match_index + 1).min(rejected);
                self.next_index = self.next_index.max(1);
                self.probe_sent = false;
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_counts_messages_and_bytes() {
        let mut w = Inflights::new(3, 100);
        w.add(1, 10);
        w.add(2, 10);
        assert!(!w.full());
        w.add(3, 10);
        assert!(w.full()); // by count
        w.free_up_to(2);
        assert_eq!(w.count(), 1);
        assert!(!w.full());
        w.add(4, 95);
        assert!(w.full()); // by bytes
        w.free_first();
        assert!(!w.full());
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(5, 4, 1000);
        assert!(!p.is_paused());
        p.sent_entries(2, 6, 10);
        assert!(p.is_paused());
        assert_eq!(p.next_index, 5); // probe does not move next optimistically
        assert!(p.acked(6));
        p.become_replicate();
        assert_eq!(p.next_index, 7);
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(10, 4, 1000);
        p.acked(5);
        p.become_replicate();
        p.sent_entries(3, 8, 30);
        assert!(!p.rejected(4, 0)); // about an index already matched
        assert!(p.rejected(7, 6));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, 7);
        assert!(!p.rejected(3, 0)); // probe: not the outstanding one
        assert!(p.rejected(6, 2));
        assert_eq!(p.next_index, 6); // never below match + 1
    }

    #[test]
    fn probe_rejection_at_or_below_match_is_stale() {
        let mut p = Progress::new(1, 4, 1000);
        p.acked(5);
        assert_eq!(p.next_index, 6);
        assert!(!p.rejected(5, 3)); // the follower already acknowledged 5
        assert_eq!(p.next_index, 6);
        // And an ack can always repair a next_index that fell behind.
        p.next_index = 2;
        p.acked(3);
        assert_eq!(p.next_index, 6);
    }

    #[test]
    fn replicate_window_pauses_stream() {
        let mut p = Progress::new(1, 2, 1 << 20);
        p.become_replicate();
        p.sent_entries(1, 1, 10);
        p.sent_entries(1, 2, 10);
        assert!(p.is_paused());
        p.acked(1);
        assert!(!p.is_paused());
        assert_eq!(p.next_index, 3);
    }
}
