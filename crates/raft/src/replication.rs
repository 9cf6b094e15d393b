//! Log replication: Appends and their answers, heartbeats, snapshots and the commit rule.
//!
//! The leader streams entries to each follower according to its `Progress` (see
//! `progress.rs`). A follower answers with the highest index it now shares with the leader, or
//! with a rejection whose hint lets the leader skip a whole conflicting term at once instead of
//! one entry per round trip. Every answer is a *persisted* message: it vouches for log entries,
//! so it may leave only once they are durable.

use crate::log::AppendOutcome;
use crate::node::RaftNode;
use crate::progress::ProgressState;
use crate::quorum::quorum_value;
use crate::types::*;

impl RaftNode {
    /// Send what every follower is missing (and, with `allow_empty`, at least an empty Append
    /// to those not paused, e.g. to announce a new commit index).
    pub(crate) fn broadcast_append(&mut self, allow_empty: bool) {
        for id in self.peers() {
            self.replicate_to(id, allow_empty);
        }
    }

    /// Send as many Appends to `to` as its flow-control state allows.
    pub(crate) fn replicate_to(&mut self, to: NodeId, allow_empty: bool) {
        let mut allow_empty = allow_empty;
        while self.send_append(to, allow_empty) {
            allow_empty = false;
        }
    }

    /// Send one Append (or the snapshot, if `to` needs compacted entries). Returns whether
    /// anything was sent.
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let prev_term = self.log.term(prev_index);
        let entries = self.log.slice(next, last + 1, self.config.max_size_per_msg);
        let (Some(prev_term), Some(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let bytes = entries.iter().map(Entry::size).sum();
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_entries(entries.len(), prev_index + entries.len() as u64, bytes);
        }
        let commit = self.log.committed;
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    /// The follower needs entries we compacted: send our latest snapshot, whole, and send it
    /// nothing else until it answers. Without a snapshot (never compacted since a restart)
    /// there is nothing we can send.
    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.snapshot_to_send.clone() else {
            return false;
        };
        if snapshot.meta.index < self.log.snapshot_index() {
            // It would not cover the gap; sending it would loop forever.
            return false;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(snapshot.meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        true
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let read_seq = self.reads.last_seq();
        for id in self.peers() {
            // Never announce a commit beyond what the follower is known to hold: its log past
            // `match_index` may still differ from ours.
            let matched = self.progress.get(&id).map_or(0, |p| p.match_index);
            let commit = self.log.committed.min(matched);
            self.send(id, MessageBody::Heartbeat { commit, read_seq });
        }
    }

    /// AppendEntries receiver.
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| Some(e.index) == prev_index.checked_add(1 + i as u64));
        if !contiguous {
            return; // malformed: a correct leader never sends this
        }
        let committed = self.log.committed;
        let (mut prev_index, mut prev_term) = (prev_index, prev_term);
        if prev_index < committed {
            // Our committed prefix is identical to the leader's (Leader Completeness): skip
            // the part of the message that covers it.
            let skip = (committed - prev_index) as usize;
            if entries.len() <= skip {
                self.send_append_ack(from, committed);
                return;
            }
            prev_term = entries[skip - 1].term;
            prev_index = committed;
            entries.drain(..skip);
        }
        let changes: Vec<Entry> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .cloned()
            .collect();
        match self.log.maybe_append(prev_index, prev_term, entries) {
            AppendOutcome::Accepted { last_new } => {
                // A conflict may have truncated changes; new ones are in force at once.
                let log = &self.log;
                self.confs.drop_replaced(|i| log.term(i));
                self.confs.record(&changes);
                self.conf_changed();
                // Only what this message proved identical may be marked committed: our log
                // past `last_new` might still differ from the leader's.
                if leader_commit > self.log.committed {
                    self.log.commit_to(leader_commit.min(last_new));
                }
                self.send_append_ack(from, last_new);
            }
            AppendOutcome::Mismatch => {
                let hint = self.reject_hint(prev_index);
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        rejected: Some((prev_index, hint)),
                        match_index: 0,
                    },
                );
            }
            AppendOutcome::ConflictsWithCommitted => {}
        }
    }

    fn send_append_ack(&mut self, to: NodeId, match_index: Index) {
        self.send(
            to,
            MessageBody::AppendResponse {
                rejected: None,
                match_index,
            },
        );
    }

    /// Where the leader should look next: our last entry if our log is too short, else the
    /// first entry of the term that conflicts at `prev_index` (the leader skips that term).
    fn reject_hint(&self, prev_index: Index) -> RejectHint {
        let last = self.log.last_index();
        if prev_index > last {
            return RejectHint {
                index: last,
                term: self.log.last_term(),
            };
        }
        let index = self.log.first_index_of_term_at(prev_index);
        RejectHint {
            index,
            term: self.log.term(index).unwrap_or(0),
        }
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        rejected: Option<(Index, RejectHint)>,
        match_index: Index,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        // Where our log may match the follower's, computed before borrowing its progress.
        let retry_from = rejected.map(|(rejected_index, hint)| {
            let bound = hint.index.min(rejected_index.saturating_sub(1));
            self.log.last_index_with_term_at_most(bound, hint.term)
        });
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match (rejected, retry_from) {
            (Some((rejected_index, _)), Some(retry_from)) => {
                if pr.rejected(rejected_index, retry_from) {
                    self.replicate_to(from, true);
                }
            }
            _ => {
                // A correct follower never acknowledges more than we sent it.
                let advanced = pr.acked(match_index.min(last));
                match pr.state {
                    ProgressState::Probe if advanced => pr.become_replicate(),
                    ProgressState::Snapshot { pending_index } if match_index >= pending_index => {
                        pr.become_replicate()
                    }
                    _ => {}
                }
                // A new commit index reaches followers with the next Append or heartbeat;
                // announcing it at once would double the messages per proposal.
                if advanced {
                    self.maybe_commit();
                }
                self.replicate_to(from, false);
                if advanced {
                    self.maybe_send_timeout_now(from);
                }
            }
        }
    }

    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: Index, read_seq: u64) {
        if commit > self.log.committed {
            self.log.commit_to(commit.min(self.log.last_index()));
        }
        self.send(from, MessageBody::HeartbeatResponse { read_seq });
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_seq: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let election_tick = self.config.election_tick;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if !std::mem::take(&mut pr.heartbeat_may_resend) {
            // An answer to a read round's heartbeat, or a second answer in one heartbeat
            // interval: it confirms reads, and resends nothing (`heartbeat_may_resend`).
            self.on_read_ack(from, read_seq);
            return;
        }
        // The follower is alive: a lost probe or lost Appends must not stall it forever.
        pr.probe_sent = false;
        match pr.state {
            ProgressState::Replicate if pr.inflights.full() => pr.inflights.free_first(),
            ProgressState::Snapshot { .. } if pr.snapshot_ticks >= election_tick => {
                pr.become_probe()
            }
            _ => {}
        }
        let stalled = pr.match_index == pr.match_at_last_heartbeat;
        pr.match_at_last_heartbeat = pr.match_index;
        if pr.match_index < last {
            // No progress over a whole heartbeat round: send an Append at `next_index` even
            // if empty, so a follower that lost earlier ones rejects it and probing restarts.
            // (Sending it on every heartbeat answer would double the traffic of a pipeline.)
            let probe = stalled || pr.state == ProgressState::Probe;
            self.replicate_to(from, probe);
        }
        self.on_read_ack(from, read_seq);
    }

    /// InstallSnapshot receiver. A snapshot that is not newer than our commit index is
    /// refused (it would roll back what may already be applied — safety rule 8) and answered
    /// like an append so the leader moves on. If our log already holds the snapshot's last
    /// entry, the suffix after it is kept. Otherwise the whole log is replaced.
    pub(crate) fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if index <= self.log.committed {
            let committed = self.log.committed;
            self.send_append_ack(from, committed);
            return;
        }
        if self.log.term(index) == Some(snapshot.meta.term) {
            self.log.commit_to(index);
            self.send_append_ack(from, index);
            return;
        }
        self.log.restore(&snapshot.meta);
        // Membership travels with the snapshot; an empty voter set is never a valid one.
        let conf = if snapshot.meta.conf_state.voters.is_empty() {
            self.conf_state.clone()
        } else {
            snapshot.meta.conf_state.clone()
        };
        self.confs.reset(conf);
        self.conf_changed();
        // This is now the newest image we hold: if we lead later, it is what followers behind
        // our log's start must receive (the one we compacted to earlier is too old).
        self.snapshot_to_send = Some(snapshot.clone());
        self.pending_snapshot = Some(snapshot);
        self.send_append_ack(from, index);
    }

    /// Figure 8's rule: advance the commit index only to an entry of *our* term held by a
    /// majority. Our own vote counts only up to what is durable locally (`persisted`), so a
    /// single-node cluster commits after its fsync, not before (safety rule 3).
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let me = self.id;
        let persisted = self.log.persisted;
        let progress = &self.progress;
        let index = quorum_value(&self.conf_state.voters, |id| {
            if id == me {
                persisted
            } else {
                progress.get(&id).map_or(0, |p| p.match_index)
            }
        });
        if index > self.log.committed && self.log.term(index) == Some(self.term) {
            self.log.commit_to(index);
            self.release_reads_waiting_for_commit();
            self.step_down_if_removed();
            true
        } else {
            false
        }
    }
}
