//! The simulator in the server's place: it runs the production node driver
//! (`crates/node`) and carries out its effects exactly in the order the contract
//! prescribes (send, persist — durably only where the driver asks for an fsync — send
//! dependent messages, apply, answer, advance), writes snapshots in the background on the
//! application's behalf, and runs the per-step checks. Every check that needs the shell's
//! view (what was handed out to persist, apply or answer) lives here; the pure invariants
//! live in `checkers`.

use node::{ApplyItem, Effects, Outcome, PeerFrame, PersistBatch, Reply};
use raft::{Entry, Index, Message, NodeId, ReadState, Role, Snapshot, Term};
use rand::Rng;

use crate::checkers::promotion::{LeaderView, LearnerLog};
use crate::checkers::{
    applied_within_commit, committed_entries::CommittedEntry, CommittedLedger, Violation,
};
use crate::cluster::{trace, CallResult, Cluster, CrashPoint, Sabotage, SnapshotInProgress};
use crate::network::{kind_name, Packet, SendFate};
use crate::state_machine::{AppliedRecord, StateMachine};

impl Cluster {
    pub(crate) fn index_of(&self, id: NodeId) -> Option<usize> {
        (id >= 1 && id as usize <= self.nodes.len()).then(|| (id - 1) as usize)
    }

    pub(crate) fn alive_index(&self, id: NodeId) -> Option<usize> {
        self.index_of(id)
            .filter(|&i| self.nodes[i].driver.is_some())
    }

    pub(crate) fn after_input(&mut self, idx: usize) {
        self.handle_ready(idx);
        self.check_node(idx);
    }

    pub(crate) fn violate(&mut self, checker: &'static str, detail: String) {
        self.record(Violation::new(checker, detail));
    }

    pub(crate) fn record(&mut self, v: Violation) {
        if self.violation.is_some() {
            return;
        }
        trace!(self, "VIOLATION {v}");
        self.violation = Some(v.clone());
        if self.config.panic_on_violation {
            self.fail(&v.to_string());
        }
    }

    pub(crate) fn check(&mut self, result: Result<(), Violation>) -> bool {
        match result {
            Ok(()) => true,
            Err(v) => {
                self.record(v);
                false
            }
        }
    }

    /// Polls `idx`'s driver and carries out each batch of effects in the order the
    /// contract prescribes (docs/node-driver.md).
    pub(crate) fn handle_ready(&mut self, idx: usize) {
        let id = idx as NodeId + 1;
        // After a violation the run is over: a batch may have been left half carried out.
        if self.violation.is_some() {
            return;
        }
        for _ in 0..10_000 {
            let fx = match self.nodes[idx].driver.as_mut() {
                Some(driver) => driver.poll(),
                None => return,
            };
            let Some(fx) = fx else { return };
            self.stats.readies += 1;
            if let Some(ss) = fx.soft_state {
                trace!(self, "node {id} soft state {ss:?}");
                self.nodes[idx].soft = Some(ss);
            }
            for m in &fx.messages {
                self.send(id, m);
            }
            for (to, frame) in &fx.frames {
                self.send_frame(id, *to, frame);
            }
            let done = if self.stage_enabled() {
                self.carry_out_with_stage(idx, fx)
            } else {
                self.carry_out(idx, fx)
            };
            if !done {
                return;
            }
        }
        self.violate(
            "ready-contract",
            format!("node {id} still has work after 10000 batches"),
        );
    }

    /// One batch after its early messages, applied on the node thread as the contract
    /// defines it: persist, acknowledge, install, apply, answer, `advance`, then start the
    /// snapshot asked for (a leader's `apply_first` batch applies before its entry write).
    /// False if the node crashed or a check failed.
    fn carry_out(&mut self, idx: usize, mut fx: Effects) -> bool {
        if fx.apply_first {
            self.stats.applied_first += 1;
            // A leader's batch: the commit index first (no fsync), then apply and
            // answer, then the entries (docs/node-driver.md).
            if !self.persist_commit_first(idx, &mut fx) {
                return false;
            }
            if !self.apply_and_answer(idx, &fx) || !self.persist_and_acknowledge(idx, &fx) {
                return false;
            }
        } else if !self.persist_and_acknowledge(idx, &fx) || !self.apply_and_answer(idx, &fx) {
            return false;
        }
        // Which learners await promotion is the applied state's to say: tell the
        // driver again whenever this batch may have changed it (the server does the same).
        let changed = fx.install_snapshot.is_some()
            || fx
                .apply
                .iter()
                .any(|i| i.entry.kind == raft::EntryKind::ConfChange);
        let node = &mut self.nodes[idx];
        let driver = node.driver.as_mut().expect("alive");
        driver.advance();
        if changed {
            driver.set_promotion_candidates(node.sm.promotion_candidates());
        }
        if !self.keep_installed_image(idx, &fx) {
            return false;
        }
        if let Some(meta) = fx.start_snapshot {
            self.start_snapshot(idx, meta);
        }
        self.violation.is_none()
    }

    /// One batch after its early messages, as the server's node thread carries it out with
    /// an apply stage: persist and acknowledge as before, but hand the state-machine work to
    /// the member's stage (in the contract's place: a leader's `apply_first` batch hands
    /// over between its commit and its entry write), tell the driver how far behind the
    /// stage is, and `advance` at once. False if the node crashed or a check failed.
    fn carry_out_with_stage(&mut self, idx: usize, mut fx: Effects) -> bool {
        if fx.apply_first {
            self.stats.applied_first += 1;
            if !self.persist_commit_first(idx, &mut fx) {
                return false;
            }
            if !self.check_and_hand_over(idx, &mut fx) || !self.persist_and_acknowledge(idx, &fx) {
                return false;
            }
        } else if !self.persist_and_acknowledge(idx, &fx) || !self.check_and_hand_over(idx, &mut fx)
        {
            return false;
        }
        let node = &mut self.nodes[idx];
        let lag = node.stage.queued_entries();
        let driver = node.driver.as_mut().expect("alive");
        driver.set_apply_lag(lag);
        driver.advance();
        self.keep_installed_image(idx, &fx) && self.violation.is_none()
    }

    /// The node-thread checks of what a batch hands out to apply (the same as without a
    /// stage), its read states and promotions, then the hand-over itself.
    fn check_and_hand_over(&mut self, idx: usize, fx: &mut Effects) -> bool {
        self.check_hand_over(idx, fx.install_snapshot.as_ref(), &fx.apply)
            && self.observe_read_states(idx, &fx.read_states)
            && self.check_promotions(idx, &fx.promotions)
            && self.hand_over(idx, fx)
    }

    /// An `apply_first` batch's commit index, written on its own without an fsync.
    fn persist_commit_first(&mut self, idx: usize, fx: &mut Effects) -> bool {
        let Some(hs) = fx.persist.as_mut().and_then(|b| b.take_commit()) else {
            return true;
        };
        let commit_only = PersistBatch {
            hard_state: Some(hs),
            ..PersistBatch::default()
        };
        self.persist(idx, &commit_only)
    }

    /// The server hands the core an installed snapshot's image again, mapped from its
    /// file; the store's copy (the same bytes) stands in for that here. Call after
    /// `advance`.
    fn keep_installed_image(&mut self, idx: usize, fx: &Effects) -> bool {
        if fx.install_snapshot.is_none() {
            return true;
        }
        let node = &mut self.nodes[idx];
        let driver = node.driver.as_mut().expect("alive");
        let kept = node
            .store
            .snapshot()
            .is_some_and(|s| driver.keep_snapshot_image(s.clone()));
        if !kept {
            self.violate(
                "ready-contract",
                format!(
                    "node {}: the core refused the snapshot it just installed",
                    idx + 1
                ),
            );
        }
        kept
    }

    /// The batch's durable write and the messages that wait for it, with the crash points
    /// around the write. False if the node crashed or a check failed.
    fn persist_and_acknowledge(&mut self, idx: usize, fx: &Effects) -> bool {
        let id = idx as NodeId + 1;
        if self.crash_strikes(idx, CrashPoint::BeforePersist) {
            return false;
        }
        if let Some(batch) = &fx.persist {
            if !self.persist(idx, batch) {
                return false;
            }
        }
        if self.crash_strikes(idx, CrashPoint::AfterPersist) {
            return false;
        }
        for m in &fx.persisted_messages {
            self.send(id, m);
        }
        true
    }

    /// Install, apply and answer, with the crash point before them. False if the node
    /// crashed or a check failed.
    fn apply_and_answer(&mut self, idx: usize, fx: &Effects) -> bool {
        if self.crash_strikes(idx, CrashPoint::BeforeApply) {
            return false;
        }
        if !self.apply(idx, fx) {
            return false;
        }
        if !self.check_promotions(idx, &fx.promotions) {
            return false;
        }
        for r in &fx.replies {
            if !self.answer(idx, r) {
                return false;
            }
        }
        true
    }

    pub(crate) fn crash_strikes(&mut self, idx: usize, point: CrashPoint) -> bool {
        if self.nodes[idx].crash_at == Some(point) {
            self.crash(idx as NodeId + 1);
            true
        } else {
            false
        }
    }

    pub(crate) fn send(&mut self, id: NodeId, m: &Message) {
        if m.from != id || self.index_of(m.to).is_none() || m.to == id {
            self.violate(
                "ready-contract",
                format!("node {id} emitted a misaddressed message {m:?}"),
            );
            return;
        }
        let fate = self
            .net
            .send(Packet::Raft(m.clone()), self.now, &mut self.rng);
        if self.trace.is_some() {
            let text = describe(m);
            let fate = match fate {
                SendFate::Queued {
                    copies: 1,
                    first_at,
                } => format!("due {first_at}"),
                SendFate::Queued { copies, first_at } => format!("x{copies} first due {first_at}"),
                SendFate::DroppedByFault => "lost".to_string(),
                SendFate::DroppedByPartition => "cut".to_string(),
            };
            trace!(self, "send {text} [{fate}]");
        }
    }

    /// One write: snapshot, entries and hard state together — durable at once if the
    /// batch says `sync` (the model of one fsync), else only until a crash comes first.
    pub(crate) fn persist(&mut self, idx: usize, rd: &PersistBatch) -> bool {
        let id = idx as NodeId + 1;
        if !rd.sync {
            // The contract: only a write that changes nothing but the commit index may
            // skip the fsync.
            let durable = self.nodes[idx].store.hard_state();
            let commit_only = rd.entries.is_empty()
                && rd.snapshot.is_none()
                && rd
                    .hard_state
                    .is_some_and(|h| h.term == durable.term && h.vote == durable.vote);
            if !commit_only {
                self.violate(
                    "ready-contract",
                    format!("node {id} was told to write {rd:?} without an fsync"),
                );
                return false;
            }
        }
        match self.config.sabotage {
            Some(Sabotage::LoseLastWriteOnCrash) => {
                self.nodes[idx].before_last_write = Some(self.nodes[idx].store.clone());
            }
            Some(Sabotage::SkipRequiredSync) if !rd.entries.is_empty() => {
                let node = &mut self.nodes[idx];
                if node.before_last_write.is_none() {
                    node.before_last_write = Some(node.store.clone());
                }
            }
            Some(Sabotage::SkipRequiredSync) if rd.sync => {
                self.nodes[idx].before_last_write = None;
            }
            _ => {}
        }
        let as_of = rd
            .hard_state
            .map_or(self.nodes[idx].store.hard_state().term, |h| h.term);
        if let Some(snap) = &rd.snapshot {
            if !self.persist_snapshot(idx, snap, as_of) {
                return false;
            }
        }
        if !rd.entries.is_empty() {
            trace!(
                self,
                "node {id} persists entries {}..={} (terms {}..={})",
                rd.entries[0].index,
                rd.entries[rd.entries.len() - 1].index,
                rd.entries[0].term,
                rd.entries[rd.entries.len() - 1].term
            );
            if !self.check_overwrites(idx, &rd.entries) {
                return false;
            }
            if let Err(e) = self.nodes[idx].store.append(&rd.entries) {
                self.violate("ready-contract", format!("node {id}: {e}"));
                return false;
            }
            for e in &rd.entries {
                let store = &self.nodes[idx].store;
                let Some(prev_term) = store.term_at(e.index - 1) else {
                    self.violate(
                        "ready-contract",
                        format!(
                            "node {id}: no term for index {} before a new entry",
                            e.index - 1
                        ),
                    );
                    return false;
                };
                let r = self.checks.log_matching.observe_entry(id, e, prev_term);
                if !self.check(r) {
                    return false;
                }
            }
        }
        let store = &mut self.nodes[idx].store;
        match (rd.hard_state, rd.sync) {
            (Some(hs), true) => store.set_hard_state(hs),
            (Some(hs), false) => store.set_hard_state_unsynced(hs),
            (None, true) => store.synced(),
            (None, false) => {}
        }
        if let Some(hs) = rd.hard_state {
            let how = if rd.sync { "" } else { " (no fsync)" };
            trace!(self, "node {id} persists {hs:?}{how}");
        }
        let store = &self.nodes[idx].store;
        let (hs, snap_index, last) = (
            store.hard_state(),
            store.snapshot_index(),
            store.last_index(),
        );
        let durable = store.durable_hard_state();
        let r = self
            .checks
            .monotonic
            .observe_durable(id, durable, snap_index);
        if !self.check(r) {
            return false;
        }
        let r = CommittedLedger::check_commit_covered(id, hs.commit, last);
        if !self.check(r) {
            return false;
        }
        // Everything up to the durable commit is now committed: put it in the ledger.
        let from = self.nodes[idx].ledger_mark.max(snap_index) + 1;
        for index in from..=hs.commit {
            let e = self.nodes[idx].store.entry(index).expect("covered").clone();
            let r = self
                .checks
                .committed
                .record(id, index, committed(&e), hs.term);
            if !self.check(r) {
                return false;
            }
        }
        let mark = &mut self.nodes[idx].ledger_mark;
        *mark = (*mark).max(hs.commit);
        true
    }

    /// Before a write that truncates the durable log: no durable copy of a committed entry
    /// may be replaced or cut off.
    pub(crate) fn check_overwrites(&mut self, idx: usize, entries: &[Entry]) -> bool {
        let id = idx as NodeId + 1;
        let store = &self.nodes[idx].store;
        let first = entries[0].index;
        // The leader that sent them leads this term or a later one.
        let writer_term = entries.iter().map(|e| e.term).max().unwrap_or(0);
        let mut result = Ok(());
        for index in first.max(store.snapshot_index() + 1)..=store.last_index() {
            let old = store.entry(index).expect("within the log");
            let new = entries
                .get((index - first) as usize)
                .map(|e| (e.term, &e.data));
            result = self.checks.committed.check_replaced(
                id,
                index,
                old.term,
                &old.data,
                new,
                writer_term,
            );
            if result.is_err() {
                break;
            }
        }
        self.check(result)
    }

    /// `as_of` is the member's term once this write is durable.
    pub(crate) fn persist_snapshot(&mut self, idx: usize, snap: &Snapshot, as_of: Term) -> bool {
        let id = idx as NodeId + 1;
        // What was handed out to apply (a stage may not have applied it yet).
        let applied = self.nodes[idx].handed_over;
        trace!(
            self,
            "node {id} installs snapshot {}/{} (applied {applied})",
            snap.meta.index,
            snap.meta.term
        );
        if snap.meta.index < applied {
            self.violate(
                "snapshot-install",
                format!(
                    "node {id} was handed snapshot {} although it already applied {applied}",
                    snap.meta.index
                ),
            );
            return false;
        }
        let records = match StateMachine::decode(&snap.data) {
            Ok(r) => r,
            Err(e) => {
                self.violate("snapshot-install", format!("node {id}: {e}"));
                return false;
            }
        };
        let last = records.last().map(|r| (r.index, r.term));
        if last != Some((snap.meta.index, snap.meta.term)) && snap.meta.index != 0 {
            self.violate(
                "snapshot-install",
                format!(
                    "node {id}: snapshot meta {}/{} does not match its contents ending at {last:?}",
                    snap.meta.index, snap.meta.term
                ),
            );
            return false;
        }
        for r in &records {
            let entry = CommittedEntry {
                term: r.term,
                kind: r.kind,
                data: r.data.clone(),
            };
            let res = self.checks.committed.record(id, r.index, entry, as_of);
            if !self.check(res) {
                return false;
            }
        }
        // The snapshot replaces the whole stored log: none of the entries past it may be a
        // durable copy of a committed entry (a stale, duplicated InstallSnapshot must not
        // wipe entries this member already acknowledged).
        let store = &self.nodes[idx].store;
        let mut result = Ok(());
        for index in (snap.meta.index + 1).max(store.snapshot_index() + 1)..=store.last_index() {
            let old = store.entry(index).expect("within the log");
            result = self
                .checks
                .committed
                // Kept strict: no stale snapshot has been seen to need the allowance.
                .check_replaced(id, index, old.term, &old.data, None, Term::MAX);
            if result.is_err() {
                break;
            }
        }
        if !self.check(result) {
            return false;
        }
        self.nodes[idx].store.install_snapshot(snap.clone());
        let mark = &mut self.nodes[idx].ledger_mark;
        *mark = (*mark).max(snap.meta.index);
        true
    }

    /// Loads a received snapshot, then applies committed entries, checking each and
    /// answering the client call it carries (without an apply stage: all at once).
    pub(crate) fn apply(&mut self, idx: usize, rd: &Effects) -> bool {
        let install = rd.install_snapshot.as_ref();
        self.check_hand_over(idx, install, &rd.apply)
            && self.apply_to_state_machine(idx, install, &rd.apply)
            && self.observe_read_states(idx, &rd.read_states)
    }

    /// What a batch hands out to apply, checked when it is handed out: nothing beyond the
    /// durable commit index, and each entry is the one the durable log holds (later
    /// writes may replace the log with a snapshot before a stage applies it).
    pub(crate) fn check_hand_over(
        &mut self,
        idx: usize,
        install: Option<&Snapshot>,
        items: &[ApplyItem],
    ) -> bool {
        let id = idx as NodeId + 1;
        if let Some(snap) = install {
            self.note_handed_over(idx, snap.meta.index);
        }
        for item in items {
            let e = &item.entry;
            if !self.check_within_durable_commit(idx, e.index) {
                return false;
            }
            let durable_term = self.nodes[idx].store.term_at(e.index);
            if durable_term != Some(e.term) {
                self.violate(
                    "ready-contract",
                    format!(
                        "node {id} was told to apply {}/{} but its durable log has {durable_term:?} there",
                        e.index, e.term
                    ),
                );
                return false;
            }
            self.note_handed_over(idx, e.index);
        }
        true
    }

    /// `applied_within_commit` for entry `index` on member `idx`, against its durable commit.
    fn check_within_durable_commit(&mut self, idx: usize, index: raft::Index) -> bool {
        let durable_commit = self.nodes[idx].store.hard_state().commit;
        let r = applied_within_commit::check(idx as NodeId + 1, index, durable_commit);
        self.check(r)
    }

    /// Loads `install` into the state machine, then applies `items`, checking each and
    /// answering the client call it carries.
    pub(crate) fn apply_to_state_machine(
        &mut self,
        idx: usize,
        install: Option<&Snapshot>,
        items: &[ApplyItem],
    ) -> bool {
        let id = idx as NodeId + 1;
        if let Some(snap) = install {
            let records = StateMachine::decode(&snap.data).expect("decoded at persist");
            for r in &records {
                let res = self.checks.state_machine.observe_apply(id, r.index - 1, r);
                if !self.observe_first_apply(res, r) {
                    return false;
                }
            }
            self.nodes[idx].sm.restore(records);
            self.reset_lessor(idx);
            self.stats.snapshots_installed += 1;
        }
        for item in items {
            let e = &item.entry;
            // Again when applied: a stage applies after later writes (the durable commit
            // only goes back at a crash, which empties the stage).
            if !self.check_within_durable_commit(idx, e.index) {
                return false;
            }
            let rec = AppliedRecord::from(e);
            let before = self.nodes[idx].sm.applied_index();
            let res = self.checks.state_machine.observe_apply(id, before, &rec);
            let first = matches!(res, Ok(true));
            if !self.observe_first_apply(res, &rec) {
                return false;
            }
            self.nodes[idx].sm.push(rec);
            if let Some(out) = self.nodes[idx].sm.last_lease().cloned() {
                if !self.observe_lease_apply(idx, e, &out, first) {
                    return false;
                }
            }
            if e.kind == raft::EntryKind::ConfChange {
                self.observe_conf_change_apply(idx, e);
            }
            let r = self.checks.clients.observe_apply(id, e.index, &e.data);
            if !self.check(r) {
                return false;
            }
            if let Some(req) = item.answers {
                let taken_at = self.calls.get(&req).map_or(self.now, |c| c.since);
                if !self.answer_write(idx, req, e) {
                    return false;
                }
                if !self.observe_lease_ack(idx, e, taken_at) {
                    return false;
                }
            }
        }
        true
    }

    /// Member `idx` applied the membership change `e`: removals and automatic
    /// promotions are counted (and the network drops a removed member's messages).
    fn observe_conf_change_apply(&mut self, idx: usize, e: &Entry) {
        let id = idx as NodeId + 1;
        let Ok(cc) = raft::ConfChange::decode(&e.data) else {
            return;
        };
        if cc.kind == raft::ConfChangeKind::Remove && self.removed.insert(cc.node) {
            self.stats.removals_applied += 1;
            trace!(self, "node {id} applied the removal of {}", cc.node);
        }
        let auto = self.promotion_entries.get(&(e.index, e.term)) == Some(&cc.node);
        if cc.kind == raft::ConfChangeKind::AddVoter && auto && self.auto_promoted.insert(cc.node) {
            self.stats.auto_promotions_applied += 1;
            trace!(self, "node {id} applied the promotion of {}", cc.node);
        }
    }

    /// Read points the core confirmed for contexts the driver did not ask for, checked.
    fn observe_read_states(&mut self, idx: usize, read_states: &[ReadState]) -> bool {
        let id = idx as NodeId + 1;
        for rs in read_states {
            trace!(self, "node {id} read state {rs:?}");
            let r = self.checks.reads.observe_read_state(id, rs);
            if !self.check(r) {
                return false;
            }
            self.nodes[idx].read_states.push(rs.clone());
        }
        true
    }

    /// Promotions the driver of `idx` proposed (its log holds them now): each is checked
    /// against the rule and against the learner's durable log (`checkers::promotion`).
    fn check_promotions(&mut self, idx: usize, promotions: &[node::Promotion]) -> bool {
        let id = idx as NodeId + 1;
        for p in promotions {
            trace!(self, "node {id} promotes learner {}: {p:?}", p.node);
            self.stats.auto_promotions += 1;
            let node = &self.nodes[idx];
            let leader = LeaderView {
                id,
                term: node.store.hard_state().term,
                added_as_voter: node.sm.promotion_candidates().contains(&p.node),
                term_at_matched: above_snapshot(&node.store, p.matched),
            };
            let Some(l) = self.index_of(p.node) else {
                self.violate(
                    "promotion",
                    format!("node {id} promoted {}, which does not exist", p.node),
                );
                return false;
            };
            let store = &self.nodes[l].store;
            let learner = LearnerLog {
                term: store.hard_state().term,
                snapshot_index: store.snapshot_index(),
                last_index: store.last_index(),
                term_at_matched: above_snapshot(store, p.matched),
            };
            let r = self.checks.promotion.observe(&leader, p, &learner);
            if !self.check(r) {
                return false;
            }
            self.promotion_entries.insert((p.index, p.term), p.node);
        }
        true
    }

    pub(crate) fn observe_first_apply(
        &mut self,
        res: Result<bool, Violation>,
        rec: &AppliedRecord,
    ) -> bool {
        match res {
            Ok(true) => {
                if rec.kind == raft::EntryKind::Normal {
                    self.payload_index
                        .entry(rec.data.clone())
                        .or_insert(rec.index);
                }
                true
            }
            Ok(false) => true,
            Err(v) => {
                self.record(v);
                false
            }
        }
    }

    /// The driver asked for a snapshot: serialise the state machine now (it is at
    /// `meta.index`) and let the write take a random while, as the server's background
    /// writer does; the member may crash before it completes.
    pub(crate) fn start_snapshot(&mut self, idx: usize, meta: raft::SnapshotMeta) {
        let id = idx as NodeId + 1;
        let node = &self.nodes[idx];
        let applied = node.sm.applied_index();
        if meta.index != applied || node.sm.record(applied).map(|r| r.term) != Some(meta.term) {
            self.violate(
                "ready-contract",
                format!(
                    "node {id} was asked for a snapshot at {}/{} but its state machine is at {applied}",
                    meta.index, meta.term
                ),
            );
            return;
        }
        let snapshot = Snapshot {
            meta,
            data: node.sm.encode(),
        };
        let due = self.now + self.rng.gen_range(0..=2 * crate::cluster::UNITS_PER_TICK);
        trace!(
            self,
            "node {id} starts a snapshot at {}/{} (done at {due})",
            snapshot.meta.index,
            snapshot.meta.term
        );
        let incarnation = node.incarnation;
        self.snapshots_in_progress.insert(
            idx,
            SnapshotInProgress {
                incarnation,
                due,
                snapshot,
            },
        );
    }

    /// Background snapshot writes that are done: tell the driver, and compact the stored
    /// log to the snapshot if it says so.
    pub(crate) fn complete_snapshots(&mut self) {
        let done: Vec<usize> = self
            .snapshots_in_progress
            .iter()
            .filter(|(_, s)| s.due <= self.now)
            .map(|(i, _)| *i)
            .collect();
        for idx in done {
            let Some(w) = self.snapshots_in_progress.remove(&idx) else {
                continue;
            };
            if self.nodes[idx].driver.is_none() || self.nodes[idx].incarnation != w.incarnation {
                continue;
            }
            if self.nodes[idx].stalled_until.is_some() {
                // Delivered when the stall ends, like any input.
                let mut w = w;
                w.due = self.nodes[idx].stalled_until.unwrap_or(self.now);
                self.snapshots_in_progress.insert(idx, w);
                continue;
            }
            self.complete_snapshot(idx, w.snapshot);
            self.after_input(idx);
        }
    }

    fn complete_snapshot(&mut self, idx: usize, snapshot: Snapshot) {
        let id = idx as NodeId + 1;
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let driver = self.nodes[idx].driver.as_mut().expect("alive");
        if !driver.snapshot_written(Ok(snapshot.clone())) {
            trace!(self, "node {id}: snapshot {index}/{term} no longer needed");
            return;
        }
        if self.nodes[idx].store.term_at(index) != Some(term) {
            self.violate(
                "ready-contract",
                format!("node {id}: snapshot {index}/{term} is not in its durable log"),
            );
            return;
        }
        trace!(self, "node {id} compacts to {index}/{term}");
        let store = &mut self.nodes[idx].store;
        store.compact_to(snapshot);
        store.synced();
        self.stats.snapshots_taken += 1;
        let store = &self.nodes[idx].store;
        let r = self.checks.monotonic.observe_durable(
            id,
            store.durable_hard_state(),
            store.snapshot_index(),
        );
        self.check(r);
    }

    /// Sends a driver's forwarding frame over the simulated network.
    pub(crate) fn send_frame(&mut self, from: NodeId, to: NodeId, frame: &PeerFrame) {
        if self.index_of(to).is_none() || to == from {
            self.violate(
                "ready-contract",
                format!("node {from} sent a misaddressed frame to {to}: {frame:?}"),
            );
            return;
        }
        let packet = Packet::Frame {
            from,
            to,
            frame: frame.clone(),
        };
        if let PeerFrame::Forward { req_id, data } = frame {
            if self.config.sabotage == Some(Sabotage::AckForwardedWriteEarly) {
                self.forwarded_payloads
                    .insert((from, *req_id), data.clone());
            }
        }
        let fate = self.net.send(packet, self.now, &mut self.rng);
        trace!(self, "send frame {from}->{to} {frame:?} [{fate:?}]");
    }

    /// The driver answered call `req` with the entry `e` it applied.
    fn answer_write(&mut self, idx: usize, req: node::RequestId, e: &Entry) -> bool {
        let id = idx as NodeId + 1;
        let Some(call) = self.calls.remove(&req) else {
            if self.config.sabotage == Some(Sabotage::AckForwardedWriteEarly) {
                return true; // answered early by the sabotaged shell
            }
            self.violate(
                "client-calls",
                format!("node {id} answered call {req}, which is not waiting"),
            );
            return false;
        };
        let Some(asked) = call.write.as_ref().filter(|_| call.node == id) else {
            self.violate(
                "client-calls",
                format!("node {id} answered call {req} ({call:?}) with a write result"),
            );
            return false;
        };
        let r = self
            .checks
            .clients
            .observe_write_ack(id, e.index, asked, &e.data);
        if !self.check(r) {
            return false;
        }
        trace!(self, "node {id} acknowledges call {req} at {}", e.index);
        self.results.insert(req, CallResult::Written(e.index));
        true
    }

    /// A reply from the driver: a read served, or a call failed.
    pub(crate) fn answer(&mut self, idx: usize, reply: &Reply) -> bool {
        let id = idx as NodeId + 1;
        let Some(call) = self.calls.remove(&reply.req) else {
            if self.config.sabotage == Some(Sabotage::AckForwardedWriteEarly) {
                return true; // answered early by the sabotaged shell
            }
            self.violate(
                "client-calls",
                format!(
                    "node {id} answered call {}, which is not waiting",
                    reply.req
                ),
            );
            return false;
        };
        if call.node != id {
            self.violate(
                "client-calls",
                format!(
                    "node {id} answered call {} made at node {}",
                    reply.req, call.node
                ),
            );
            return false;
        }
        let result = match reply.outcome {
            Outcome::ReadReady => {
                if call.write.is_some() {
                    self.violate(
                        "client-calls",
                        format!("node {id} answered write call {} as a read", reply.req),
                    );
                    return false;
                }
                let applied = self.nodes[idx].sm.applied_index();
                let r = self.checks.clients.observe_read(id, call.floor, applied);
                if !self.check(r) {
                    return false;
                }
                CallResult::Read(applied)
            }
            Outcome::Failed(e) => {
                if e == node::NodeError::TooManyRequests {
                    self.stats.too_many_requests += 1;
                }
                CallResult::Failed(e)
            }
        };
        trace!(self, "node {id} answers call {}: {result:?}", reply.req);
        self.results.insert(reply.req, result);
        true
    }

    /// `Sabotage::AckForwardedWriteEarly`: the follower tells its client "done" as soon as
    /// the leader says where the write landed.
    pub(crate) fn ack_forwarded_early(&mut self, idx: usize, frame: &PeerFrame) {
        let id = idx as NodeId + 1;
        let PeerFrame::ForwardResult {
            req_id,
            result: Ok((index, _)),
        } = frame
        else {
            return;
        };
        let Some(data) = self.forwarded_payloads.remove(&(id, *req_id)) else {
            return;
        };
        let Some((&req, _)) = self
            .calls
            .iter()
            .find(|(_, c)| c.node == id && c.write.as_ref() == Some(&data))
        else {
            return;
        };
        let call = self.calls.remove(&req).expect("found");
        let data = call.write.expect("a write");
        let r = self
            .checks
            .clients
            .observe_write_ack(id, *index, &data, &data);
        self.check(r);
        self.results.insert(req, CallResult::Written(*index));
    }

    /// The per-step checks on one member, after its Ready work is done.
    pub(crate) fn check_node(&mut self, idx: usize) {
        if self.violation.is_some() {
            return;
        }
        let node = &self.nodes[idx];
        let Some(driver) = node.driver.as_ref() else {
            return;
        };
        let raft = driver.core();
        let id = node.id;
        let s = raft.status();
        let store = &node.store;
        let durable = store.hard_state();
        let mut problems = Vec::new();
        if s.id != id {
            problems.push(format!("node {id} reports id {}", s.id));
        }
        if s.hard_state.term != durable.term || s.hard_state.vote != durable.vote {
            problems.push(format!(
                "node {id} runs with term/vote {}/{:?} but only {}/{:?} was handed out to persist",
                s.hard_state.term, s.hard_state.vote, durable.term, durable.vote
            ));
        }
        if s.last_index != store.last_index() {
            problems.push(format!(
                "node {id} has last index {} in memory but {} was handed out to persist",
                s.last_index,
                store.last_index()
            ));
        }
        if s.applied != node.handed_over {
            problems.push(format!(
                "node {id} reports applied {} but handed out {} to apply",
                s.applied, node.handed_over
            ));
        }
        if driver.status().applied != node.handed_over {
            problems.push(format!(
                "node {id}'s driver counts applied {} but handed out {} to apply",
                driver.status().applied,
                node.handed_over
            ));
        }
        problems.extend(self.stage_problem(idx));
        if let Some(p) = problems.into_iter().next() {
            self.violate("ready-contract", p);
            return;
        }
        let term = s.hard_state.term;
        let mut results = Vec::with_capacity(4);
        if s.role == Role::Leader {
            self.checks.lease_decisions.observe_leader(id, term);
            results.push(self.checks.election.observe_leader(id, term));
            results.push(self.checks.completeness.observe_leader(
                id,
                term,
                &self.checks.committed,
                store.snapshot_index(),
                |i| store.term_at(i),
            ));
        }
        results.push(self.checks.monotonic.observe_status(
            id,
            node.incarnation,
            term,
            s.hard_state.commit,
            s.applied,
        ));
        results.push(applied_within_commit::check(id, s.applied, durable.commit));
        for r in results {
            if !self.check(r) {
                return;
            }
        }
    }
}

/// The term of the entry at `index` in `store`'s log above its snapshot, if any.
fn above_snapshot(store: &crate::store::DurableStore, index: Index) -> Option<Term> {
    if index <= store.snapshot_index() {
        return None;
    }
    store.term_at(index)
}

fn committed(e: &Entry) -> CommittedEntry {
    CommittedEntry {
        term: e.term,
        kind: e.kind,
        data: e.data.clone(),
    }
}

/// One line per message for the trace.
pub(crate) fn describe(m: &Message) -> String {
    use raft::MessageBody as B;
    let detail = match &m.body {
        B::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "prev {prev_index}/{prev_term} entries {} commit {commit}",
            entries.len()
        ),
        B::InstallSnapshot { snapshot } => {
            format!("snapshot {}/{}", snapshot.meta.index, snapshot.meta.term)
        }
        other => format!("{other:?}"),
    };
    format!(
        "{}->{} t{} {} {detail}",
        m.from,
        m.to,
        m.term,
        kind_name(&m.body)
    )
}
