//! The apply stage: a thread of its own that applies committed entries to the state
//! machine, in the order the node thread hands them over, and answers the calls that wait
//! for them.
//!
//! Why not the node thread: applying takes the state machine's write lock and as long as
//! the entries need (one DeleteRange of 500,000 keys held every member's node thread for
//! 1–2 s and changed the leader), and while the node thread applies it neither ticks, nor
//! steps heartbeats, nor writes the next batch, nor learns commits. Here, the node thread hands a batch's work
//! over and goes on at once: a slow apply delays the answers that wait for it (and the
//! reads after it), never Raft's clock, the WAL or replication, and a leader's apply runs
//! beside its fsync instead of before it.
//!
//! The contract with the driver (docs/node-driver.md, "Applying on a stage of its own"):
//! the driver counts an entry applied once it is handed over. What makes that sound is
//! that the stage does a batch's work in the contract's order and one batch after
//! another: install the snapshot, apply the entries, answer their proposers, release the
//! batch's linearizable reads (so a read is served only after every entry handed over
//! before its release is applied), then take the view a snapshot asks for (the state is
//! then exactly at its index). The node thread keeps the driver told of how far behind
//! the stage is (`Driver::set_apply_lag`), so that proposals are refused with *too many
//! requests* when it falls more than `MAX_APPLY_GAP` entries behind, as before.
//!
//! What the node thread must learn from an apply (membership changes applied, peer URLs
//! changed, a snapshot that says this member was removed) comes back as one
//! [`Input::Applied`] on the control queue; only batches that have such news send one.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, RwLock};
use std::time::Instant;

use node::{ApplyItem, RequestId};
use raft::{Snapshot, SnapshotMeta};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::queue::ControlQueue;
use super::{probe, Input, ProposeResult, SharedStatus, Stamped, StateMachine};
use crate::errors::ServerError;
use crate::metrics::metrics;

/// A proposer waiting for its entry's result.
pub type Responder<O> = oneshot::Sender<ProposeResult<O>>;
/// A linearizable read waiting to be served.
pub type ReadWaiter = oneshot::Sender<Result<(), ServerError>>;

/// One batch's work, in the order the stage does it.
pub struct Job<O> {
    /// A snapshot from the leader (already durable): load it first.
    pub install: Option<Snapshot>,
    /// Committed entries, in log order, each with the proposer that waits for it here
    /// (a membership change's waiter stays with the node thread: [`Applied::changes`]).
    pub items: Vec<(ApplyItem, Option<Responder<O>>)>,
    /// Linearizable reads the batch released.
    pub reads: Vec<ReadWaiter>,
    /// Take a snapshot of the state once the rest is done, and write it in the background.
    pub snapshot: Option<(SnapshotMeta, storage::SnapshotWriter)>,
}

impl<O> Job<O> {
    pub fn new() -> Job<O> {
        Job {
            install: None,
            items: Vec::new(),
            reads: Vec::new(),
            snapshot: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.install.is_none()
            && self.items.is_empty()
            && self.reads.is_empty()
            && self.snapshot.is_none()
    }
}

/// What the node thread must act on after the stage applied a batch.
#[derive(Default)]
pub struct Applied {
    /// Membership changes applied, with the request (if any) that proposed each.
    pub changes: Vec<(raft::Entry, Option<RequestId>)>,
    /// The members the applied state now records as voters (after a change or a snapshot).
    pub candidates: Option<BTreeSet<u64>>,
    /// Members whose peer URLs the transport must (re)dial at.
    pub peer_urls: Vec<(u64, Vec<String>)>,
    /// An installed snapshot says this member was removed: the index it was installed at.
    pub removed_by_snapshot: Option<u64>,
}

impl Applied {
    fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.candidates.is_none()
            && self.peer_urls.is_empty()
            && self.removed_by_snapshot.is_none()
    }
}

/// The node thread's end: hands jobs over, in order.
pub struct StageHandle<O> {
    jobs: mpsc::Sender<Job<O>>,
    /// Index of the last entry (or installed snapshot) handed over.
    handed: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<O: Send + 'static> StageHandle<O> {
    /// Hand `job` over. `last` is the index the state reaches once it is done (unchanged
    /// for a job that applies nothing). Never blocks: the queue is bounded by the driver's
    /// backpressure, through [`StageHandle::lag`].
    pub fn hand_over(&mut self, job: Job<O>, last: Option<u64>) -> anyhow::Result<()> {
        if let Some(last) = last {
            self.handed = self.handed.max(last);
        }
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the apply stage stopped"))
    }

    /// Entries handed over that the stage has not applied yet.
    pub fn lag(&self, status: &SharedStatus) -> u64 {
        self.handed.saturating_sub(status.applied())
    }

    /// Whether everything up to `index` handed over is applied.
    pub fn has_applied(&self, status: &SharedStatus, index: u64) -> bool {
        status.applied() >= index
    }

    /// Let the stage finish what it was handed, then wait for its thread.
    pub fn stop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the stage for a state machine that reflects `applied`.
pub fn spawn<S: StateMachine>(
    id: u64,
    applied: u64,
    state: Arc<RwLock<S>>,
    shared: Arc<SharedStatus>,
    control: Arc<ControlQueue<S::Output>>,
    inbox: mpsc::SyncSender<Stamped<S::Output>>,
) -> std::io::Result<StageHandle<S::Output>> {
    let (tx, rx) = mpsc::channel::<Job<S::Output>>();
    shared.applied.store(applied, Ordering::Relaxed);
    let stage = Stage {
        id,
        state,
        shared,
        control,
        inbox,
    };
    let thread = std::thread::Builder::new()
        .name("apply-stage".into())
        .spawn(move || {
            // Answers to writes wait for it: the same share of the CPU as the node thread.
            super::priority::raise_current_thread("apply stage");
            stage.run(rx)
        })?;
    Ok(StageHandle {
        jobs: tx,
        handed: applied,
        thread: Some(thread),
    })
}

struct Stage<S: StateMachine> {
    id: u64,
    state: Arc<RwLock<S>>,
    shared: Arc<SharedStatus>,
    control: Arc<ControlQueue<S::Output>>,
    inbox: mpsc::SyncSender<Stamped<S::Output>>,
}

impl<S: StateMachine> Stage<S> {
    fn run(self, jobs: mpsc::Receiver<Job<S::Output>>) {
        while let Ok(job) = jobs.recv() {
            if let Err(e) = self.run_job(job) {
                // The node thread stops on it (a replica that cannot apply must not go on
                // acknowledging entries); nothing more is applied here.
                self.tell(Input::ApplyFailed(format!("{e:#}")));
                return;
            }
        }
    }

    fn run_job(&self, job: Job<S::Output>) -> anyhow::Result<()> {
        let mut news = Applied::default();
        if let Some(snap) = &job.install {
            self.install(snap, &mut news)?;
        }
        if !job.items.is_empty() {
            self.apply(job.items, &mut news)?;
        }
        for w in job.reads {
            let _ = w.send(Ok(()));
        }
        if let Some((meta, writer)) = job.snapshot {
            self.start_snapshot(meta, writer);
        }
        if !news.is_empty() {
            self.tell(Input::Applied(Box::new(news)));
        }
        Ok(())
    }

    /// Queue `input` for the node thread ahead of its bulk input; never blocks and never
    /// dropped (the control queue takes it whatever its length).
    fn tell(&self, input: Input<S::Output>) {
        let _ = self.control.push(input, true, &self.inbox);
    }

    fn install(&self, snap: &Snapshot, news: &mut Applied) -> anyhow::Result<()> {
        info!(
            index = snap.meta.index,
            term = snap.meta.term,
            bytes = snap.data.len(),
            "installing snapshot from the leader"
        );
        let mut sm = self
            .state
            .write()
            .map_err(|_| anyhow::anyhow!("state machine lock poisoned"))?;
        sm.restore(&snap.data)?;
        self.shared
            .applied
            .store(snap.meta.index, Ordering::Relaxed);
        // The snapshot's configuration replaces whatever the log said.
        let conf = &snap.meta.conf_state;
        news.peer_urls = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .map(|&id| (id, sm.peer_urls(id)))
            .collect();
        // Only a removal recorded in the snapshot's member list stops this member: a member
        // joining a running cluster may be sent a snapshot taken before it was added (the
        // log after it adds it).
        if sm.is_removed(self.id) {
            news.removed_by_snapshot = Some(snap.meta.index);
        }
        news.candidates = Some(sm.promotion_candidates());
        Ok(())
    }

    /// Apply committed entries in order and answer their proposers. A poisoned lock means
    /// a reader or an earlier apply panicked: stopping is the only safe answer
    /// (acknowledging entries we did not apply would silently diverge this replica).
    fn apply(
        &self,
        items: Vec<(ApplyItem, Option<Responder<S::Output>>)>,
        news: &mut Applied,
    ) -> anyhow::Result<()> {
        let last = items.last().map_or(0, |(i, _)| i.entry.index);
        let items_len = items.len();
        probe::mark("commit", last);
        let mut outputs = Vec::new();
        let started = Instant::now();
        let reader_wakes = {
            let mut sm = self
                .state
                .write()
                .map_err(|_| anyhow::anyhow!("state machine lock poisoned; cannot apply"))?;
            let reader_wakes = sm.hold_reader_wakes();
            for (item, responder) in items {
                let started = Instant::now();
                let out = sm.apply(&item.entry);
                if item.entry.kind == raft::EntryKind::ConfChange {
                    news.changes.push((item.entry.clone(), item.answers));
                }
                if started.elapsed() > crate::metrics::SLOW_APPLY {
                    metrics().slow_apply.inc();
                }
                if let Some(tx) = responder {
                    outputs.push((tx, out));
                }
            }
            if !news.changes.is_empty() {
                news.candidates = Some(sm.promotion_candidates());
            }
            // Our own URLs are what we listen on (flags); the others redial us there.
            news.peer_urls.extend(
                sm.take_peer_url_changes()
                    .into_iter()
                    .filter(|(id, _)| *id != self.id),
            );
            // Under the lock, so a reader that takes a view with the index sees both agree.
            self.shared.applied.store(last, Ordering::Relaxed);
            reader_wakes
        };
        let took = started.elapsed();
        if took > crate::metrics::SLOW_APPLY {
            // etcd's "apply request took too long": the answers and reads behind these
            // entries waited this long; Raft did not (it goes on on the node thread).
            warn!(
                took_ms = took.as_millis() as u64,
                entries = items_len,
                last,
                "applying committed entries took too long"
            );
        }
        let answered = !outputs.is_empty();
        for (tx, out) in outputs {
            let _ = tx.send(out.ok_or(ServerError::LeaderChanged));
        }
        if answered {
            probe::mark("answered", last);
        }
        // Only now the watch streams this batch fed (`StateMachine::hold_reader_wakes`).
        drop(reader_wakes);
        Ok(())
    }

    /// Take a view of the state now (it is at `meta.index`): O(1) under the read lock.
    /// The snapshot writer's thread serialises the view and writes the file; the node
    /// thread compacts the log when it hears the snapshot is durable.
    fn start_snapshot(&self, meta: SnapshotMeta, writer: storage::SnapshotWriter) {
        let started = Instant::now();
        let view = match self.state.read() {
            Ok(sm) => sm.view(),
            Err(_) => {
                self.tell(Input::SnapshotWritten(Err(
                    "state machine lock poisoned".to_string()
                )));
                return;
            }
        };
        info!(
            index = meta.index,
            term = meta.term,
            view_us = started.elapsed().as_micros() as u64,
            "snapshot started"
        );
        let inbox = self.inbox.clone();
        let control = self.control.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                super::priority::lower_snapshot_writer();
                let r = write_snapshot::<S>(meta, &writer, &view);
                // A blocking send: the result must reach the node even if its queue is full.
                let _ = inbox.send(Stamped(Instant::now(), Input::SnapshotWritten(r)));
                // This thread's encoding buffers (and the image, unless kept) are freed now.
                drop(view);
                crate::memory::release_freed();
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the snapshot writer");
            let _ = control.push(
                Input::SnapshotWritten(Err(format!("cannot start the snapshot writer: {e}"))),
                true,
                &self.inbox,
            );
        }
    }
}

/// Serialise `view` into a snapshot file and keep the image for the core: as the file's
/// pages where they can be mapped, read back into memory otherwise.
fn write_snapshot<S: StateMachine>(
    meta: SnapshotMeta,
    writer: &storage::SnapshotWriter,
    view: &S::View,
) -> Result<(storage::WrittenSnapshot, Snapshot), String> {
    let encoding = Instant::now();
    // Streamed into the file: the store is never held twice in memory.
    writer
        .write_with(&meta, &mut |sink| S::encode_to(view, sink))
        .and_then(|w| {
            info!(
                index = meta.index,
                bytes = w.file_size,
                took_ms = encoding.elapsed().as_millis() as u64,
                "snapshot encoded and written"
            );
            let data = match writer.map_image(&w) {
                Ok(Some(mapped)) => mapped,
                Ok(None) => writer.read_image(&w)?,
                Err(e) => {
                    warn!(error = %e, "cannot map the snapshot just written; reading it into memory");
                    writer.read_image(&w)?
                }
            };
            Ok((w, Snapshot { meta, data }))
        })
        .map_err(|e| e.to_string())
}
