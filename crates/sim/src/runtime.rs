//! The simulator in the node-runtime role: draining each member's Ready bundles exactly in
//! the order the contract prescribes (send, persist, send dependent messages, apply,
//! advance), compacting on the application's behalf, and running the per-step checks.
//! Every check that needs the runtime's view (what was handed out to persist or apply)
//! lives here; the pure invariants live in `checkers`.

use raft::{Entry, Message, NodeId, Ready, Role, Snapshot, SnapshotMeta, Term};

use crate::checkers::{
    applied_within_commit, committed_entries::CommittedEntry, CommittedLedger, Violation,
};
use crate::cluster::{trace, Cluster, CrashPoint, Sabotage};
use crate::network::{kind_name, SendFate};
use crate::state_machine::{AppliedRecord, StateMachine};

impl Cluster {
    pub(crate) fn index_of(&self, id: NodeId) -> Option<usize> {
        (id >= 1 && id as usize <= self.nodes.len()).then(|| (id - 1) as usize)
    }

    pub(crate) fn alive_index(&self, id: NodeId) -> Option<usize> {
        self.index_of(id).filter(|&i| self.nodes[i].raft.is_some())
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

    /// Drains `idx`'s Ready bundles in the order the contract prescribes.
    pub(crate) fn handle_ready(&mut self, idx: usize) {
        let id = idx as NodeId + 1;
        for _ in 0..10_000 {
            let rd = match self.nodes[idx].raft.as_mut() {
                Some(raft) if raft.has_ready() => raft.ready(),
                _ => return,
            };
            self.stats.readies += 1;
            let ack = rd.ack();
            if let Some(ss) = rd.soft_state {
                trace!(self, "node {id} soft state {ss:?}");
                self.nodes[idx].soft = Some(ss);
            }
            for m in &rd.messages {
                self.send(id, m);
            }
            if self.crash_strikes(idx, CrashPoint::BeforePersist) {
                return;
            }
            if !self.persist(idx, &rd) {
                return;
            }
            if self.crash_strikes(idx, CrashPoint::AfterPersist) {
                return;
            }
            for m in &rd.persisted_messages {
                self.send(id, m);
            }
            if self.crash_strikes(idx, CrashPoint::BeforeApply) {
                return;
            }
            if !self.apply(idx, &rd) {
                return;
            }
            self.nodes[idx].raft.as_mut().expect("alive").advance(ack);
            self.maybe_compact(idx);
            if self.violation.is_some() {
                return;
            }
        }
        self.violate(
            "ready-contract",
            format!("node {id} still has work after 10000 Ready rounds"),
        );
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
        let fate = self.net.send(m.clone(), self.now, &mut self.rng);
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

    /// The "fsync": snapshot, entries and hard state become durable together.
    pub(crate) fn persist(&mut self, idx: usize, rd: &Ready) -> bool {
        let id = idx as NodeId + 1;
        if self.config.sabotage == Some(Sabotage::LoseLastWriteOnCrash)
            && (rd.hard_state.is_some() || !rd.entries.is_empty() || rd.snapshot.is_some())
        {
            self.nodes[idx].before_last_write = Some(self.nodes[idx].store.clone());
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
        if let Some(hs) = rd.hard_state {
            trace!(self, "node {id} persists {hs:?}");
            self.nodes[idx].store.set_hard_state(hs);
        }
        let store = &self.nodes[idx].store;
        let (hs, snap_index, last) = (
            store.hard_state(),
            store.snapshot_index(),
            store.last_index(),
        );
        let r = self.checks.monotonic.observe_durable(id, hs, snap_index);
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
        let mut result = Ok(());
        for index in first.max(store.snapshot_index() + 1)..=store.last_index() {
            let old = store.entry(index).expect("within the log");
            let new = entries
                .get((index - first) as usize)
                .map(|e| (e.term, &e.data));
            result = self
                .checks
                .committed
                .check_replaced(id, index, old.term, &old.data, new);
            if result.is_err() {
                break;
            }
        }
        self.check(result)
    }

    /// `as_of` is the member's term once this write is durable.
    pub(crate) fn persist_snapshot(&mut self, idx: usize, snap: &Snapshot, as_of: Term) -> bool {
        let id = idx as NodeId + 1;
        let applied = self.nodes[idx].sm.applied_index();
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
                .check_replaced(id, index, old.term, &old.data, None);
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

    /// Loads a received snapshot, then applies committed entries, checking each.
    pub(crate) fn apply(&mut self, idx: usize, rd: &Ready) -> bool {
        let id = idx as NodeId + 1;
        if let Some(snap) = &rd.snapshot {
            let records = StateMachine::decode(&snap.data).expect("decoded at persist");
            for r in &records {
                let res = self.checks.state_machine.observe_apply(id, r.index - 1, r);
                if !self.observe_first_apply(res, r) {
                    return false;
                }
            }
            self.nodes[idx].sm.restore(records);
            self.stats.snapshots_installed += 1;
        }
        for e in &rd.committed_entries {
            let durable_commit = self.nodes[idx].store.hard_state().commit;
            let r = applied_within_commit::check(id, e.index, durable_commit);
            if !self.check(r) {
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
            let rec = AppliedRecord::from(e);
            let before = self.nodes[idx].sm.applied_index();
            let res = self.checks.state_machine.observe_apply(id, before, &rec);
            if !self.observe_first_apply(res, &rec) {
                return false;
            }
            self.nodes[idx].sm.push(rec);
        }
        for rs in &rd.read_states {
            trace!(self, "node {id} read state {rs:?}");
            let r = self.checks.reads.observe_read_state(id, rs);
            if !self.check(r) {
                return false;
            }
            self.nodes[idx].read_states.push(rs.clone());
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

    /// The application snapshots its state machine every `compact_every` entries and tells
    /// the core, which then drops its log prefix (and may ship the snapshot to laggards).
    pub(crate) fn maybe_compact(&mut self, idx: usize) {
        let Some(every) = self.config.compact_every else {
            return;
        };
        let id = idx as NodeId + 1;
        let node = &self.nodes[idx];
        let applied = node.sm.applied_index();
        if applied < node.store.snapshot_index() + every.max(1) {
            return;
        }
        let term = node.sm.record(applied).expect("applied").term;
        if node.store.term_at(applied) != Some(term) {
            self.violate(
                "ready-contract",
                format!("node {id}: applied entry {applied} is not in its durable log"),
            );
            return;
        }
        let raft = node.raft.as_ref().expect("alive");
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: applied,
                term,
                conf_state: raft.status().conf_state,
            },
            data: node.sm.encode(),
        };
        trace!(self, "node {id} compacts to {applied}/{term}");
        let res = self.nodes[idx]
            .raft
            .as_mut()
            .expect("alive")
            .compact(snapshot.clone());
        if let Err(e) = res {
            self.violate(
                "ready-contract",
                format!("node {id} refused a snapshot at its applied index {applied}: {e:?}"),
            );
            return;
        }
        self.nodes[idx].store.compact_to(snapshot);
        self.stats.snapshots_taken += 1;
        let store = &self.nodes[idx].store;
        let r =
            self.checks
                .monotonic
                .observe_durable(id, store.hard_state(), store.snapshot_index());
        self.check(r);
    }

    /// The per-step checks on one member, after its Ready work is done.
    pub(crate) fn check_node(&mut self, idx: usize) {
        if self.violation.is_some() {
            return;
        }
        let node = &self.nodes[idx];
        let Some(raft) = node.raft.as_ref() else {
            return;
        };
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
        if s.applied != node.sm.applied_index() {
            problems.push(format!(
                "node {id} reports applied {} but handed out {} to apply",
                s.applied,
                node.sm.applied_index()
            ));
        }
        if let Some(p) = problems.into_iter().next() {
            self.violate("ready-contract", p);
            return;
        }
        let term = s.hard_state.term;
        let mut results = Vec::with_capacity(4);
        if s.role == Role::Leader {
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
