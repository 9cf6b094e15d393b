//! `--auto-compaction-mode` / `--auto-compaction-retention`: the leader compacts the key
//! history on its own, as etcd's compactors do, by proposing an ordinary Compaction through
//! the log (so every member compacts at the same point of the history).
//!
//! - periodic (retention P): the revision is sampled every `min(P, 1h) / 10`; once P has
//!   passed since start-up (and then every `min(P, 1h)`), history is compacted up to the
//!   newest sample at least P old, so at least P of history is always kept.
//! - revision (retention N): every 5 minutes, compact up to `current - N`.
//!
//! Only the leader proposes; a follower that becomes leader starts from its own samples.
//! A compaction that fails (lost leadership, already compacted) is simply tried again at
//! the next opportunity.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use proto::etcdserverpb::CompactionRequest;
use proto::raftkvpb::{internal_request::Request as Internal, InternalRequest};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::compat_args::AutoCompaction;
use crate::kv::MvccMachine;
use crate::node::NodeHandle;

/// etcd's revision compactor runs every 5 minutes.
pub const REVISION_INTERVAL: Duration = Duration::from_secs(300);

/// The periodic compactor's memory: revision samples and when the next compaction is due.
#[derive(Debug)]
pub struct Periodic {
    retention: Duration,
    samples: VecDeque<(Instant, i64)>,
    next_due: Instant,
}

impl Periodic {
    pub fn new(retention: Duration, start: Instant) -> Periodic {
        Periodic {
            retention,
            samples: VecDeque::new(),
            next_due: start + retention,
        }
    }

    /// How often to sample the revision.
    pub fn step(&self) -> Duration {
        (self.retention.min(Duration::from_secs(3600)) / 10).max(Duration::from_millis(10))
    }

    /// Record the revision `rev` seen at `now`; return the revision to compact to, if a
    /// compaction is due. `compacted` is the store's compacted revision.
    pub fn sample(&mut self, now: Instant, rev: i64, compacted: i64) -> Option<i64> {
        self.samples.push_back((now, rev));
        let horizon = now.checked_sub(self.retention)?;
        // Keep the newest sample at least `retention` old at the front.
        while self.samples.len() > 1 && self.samples[1].0 <= horizon {
            self.samples.pop_front();
        }
        if now < self.next_due {
            return None;
        }
        let &(at, target) = self.samples.front()?;
        if at > horizon || target <= compacted {
            return None;
        }
        self.next_due = now + self.retention.min(Duration::from_secs(3600));
        Some(target)
    }
}

/// The revision compactor's decision: compact to `current - keep` when that moved on.
pub fn revision_target(current: i64, keep: i64, compacted: i64) -> Option<i64> {
    let target = current - keep;
    (target > 0 && target > compacted).then_some(target)
}

/// Run the compactor for `policy` until `shutdown`.
pub async fn run(
    node: NodeHandle<MvccMachine>,
    policy: AutoCompaction,
    shutdown: CancellationToken,
) {
    let revisions = |node: &NodeHandle<MvccMachine>| {
        node.state
            .read()
            .map(|s| (s.store.current_revision(), s.store.compact_revision()))
            .unwrap_or((0, 0))
    };
    let mut periodic = match policy {
        AutoCompaction::Off => return,
        AutoCompaction::Periodic(p) => Some(Periodic::new(p, Instant::now())),
        AutoCompaction::Revision(_) => None,
    };
    let step = periodic.as_ref().map_or(REVISION_INTERVAL, Periodic::step);
    let mut ticker = tokio::time::interval(step);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (current, compacted) = revisions(&node);
        let target = match (&mut periodic, policy) {
            (Some(p), _) => p.sample(Instant::now(), current, compacted),
            (None, AutoCompaction::Revision(keep)) => revision_target(current, keep, compacted),
            _ => None,
        };
        let Some(target) = target else { continue };
        if node.status.leader() != Some(node.id) {
            continue;
        }
        let entry = InternalRequest {
            auth: None,
            request: Some(Internal::Compaction(CompactionRequest {
                revision: target,
                physical: false,
            })),
        };
        match node.propose(Bytes::from(entry.encode_to_vec())).await {
            Ok(Ok(_)) => info!(revision = target, "completed auto compaction"),
            Ok(Err(e)) => debug!(revision = target, error = %e, "auto compaction refused"),
            Err(e) => debug!(revision = target, error = %e, "auto compaction not committed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_keeps_at_least_the_retention() {
        let t0 = Instant::now();
        let p_len = Duration::from_secs(100);
        let mut p = Periodic::new(p_len, t0);
        assert_eq!(p.step(), Duration::from_secs(10));
        let mut done = Vec::new();
        // One write per second; sample every 10 s for 400 s.
        for i in 0..=40u64 {
            let now = t0 + Duration::from_secs(10 * i);
            let rev = 1 + 10 * i as i64;
            let compacted = done.last().copied().unwrap_or(0);
            if let Some(t) = p.sample(now, rev, compacted) {
                // Everything newer than `retention` ago is kept.
                let rev_at_horizon = 1 + (10 * i as i64 - 100);
                assert!(t <= rev_at_horizon, "compacted to {t} at {i}");
                done.push(t);
            }
        }
        // Nothing before the first retention period; then once per period.
        assert_eq!(done, vec![1, 101, 201, 301]);
    }

    #[test]
    fn periodic_waits_for_a_full_retention() {
        let t0 = Instant::now();
        let mut p = Periodic::new(Duration::from_secs(10), t0);
        assert_eq!(p.sample(t0, 5, 0), None);
        assert_eq!(p.sample(t0 + Duration::from_secs(9), 8, 0), None);
        assert_eq!(p.sample(t0 + Duration::from_secs(10), 9, 0), Some(5));
        // Nothing new to compact: no proposal.
        let mut q = Periodic::new(Duration::from_secs(10), t0);
        q.sample(t0, 5, 0);
        assert_eq!(q.sample(t0 + Duration::from_secs(10), 5, 5), None);
    }

    #[test]
    fn revision_mode_keeps_n_revisions() {
        assert_eq!(revision_target(1000, 100, 0), Some(900));
        assert_eq!(revision_target(1000, 100, 900), None);
        assert_eq!(revision_target(50, 100, 0), None);
    }
}
