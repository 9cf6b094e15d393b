//! Which batches a caller may apply before writing their entries (`Effects::apply_first`):
//! a leader's, so that its clients do not wait for the fsync of entries proposed after
//! theirs; never a follower's, whose acknowledgements the leader's commit waits for.

use std::time::Duration;

mod common;

use bytes::Bytes;
use common::TICK;
use node::{Driver, Effects};
use raft::{Message, Role};

/// Two members wired back to back: every message is delivered at the end of the round.
struct Pair {
    drivers: Vec<Driver>,
    now: Duration,
}

/// What a member's batches did during one round.
#[derive(Default)]
struct Seen {
    apply_first: usize,
    answered_early: usize,
    wrote_and_applied: usize,
}

impl Pair {
    fn new() -> Pair {
        let drivers = (1..=2)
            .map(|id| {
                Driver::new(
                    common::member(id, vec![1, 2]),
                    common::config(),
                    (0, 0),
                    Duration::ZERO,
                )
            })
            .collect();
        Pair {
            drivers,
            now: Duration::ZERO,
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..2).find(|&i| self.drivers[i].status().core.role == Role::Leader)
    }

    /// Polls both members until they have nothing left, checking each batch, then
    /// delivers what they sent.
    fn round(&mut self) -> [Seen; 2] {
        let mut seen = [Seen::default(), Seen::default()];
        let mut mail: Vec<Message> = Vec::new();
        for (i, d) in self.drivers.iter_mut().enumerate() {
            let term = d.status().core.hard_state.term;
            while let Some(fx) = d.poll() {
                let writes = fx.persist.as_ref().is_some_and(|p| !p.entries.is_empty());
                if writes && !fx.apply.is_empty() {
                    seen[i].wrote_and_applied += 1;
                }
                if fx.apply_first {
                    assert_eq!(d.status().core.role, Role::Leader, "only a leader");
                    assert_safe_to_apply_first(&fx, term);
                    seen[i].apply_first += 1;
                    seen[i].answered_early +=
                        fx.apply.iter().filter(|a| a.answers.is_some()).count();
                }
                mail.extend(fx.messages.iter().cloned());
                mail.extend(fx.persisted_messages.iter().cloned());
                d.advance();
            }
        }
        for m in mail {
            let to = (m.to - 1) as usize;
            let _ = self.drivers[to].step(m);
        }
        self.now += TICK;
        for d in &mut self.drivers {
            d.tick(self.now);
        }
        seen
    }
}

/// What a batch marked `apply_first` must hold for the early apply to be safe: entries to
/// write, nothing to install, no term or vote to record, and only entries to apply that
/// earlier batches wrote.
fn assert_safe_to_apply_first(fx: &Effects, term: u64) {
    let persist = fx.persist.as_ref().expect("an entry write");
    assert!(persist.snapshot.is_none() && fx.install_snapshot.is_none());
    let first_new = persist.entries.first().expect("new entries").index;
    if let Some(hs) = persist.hard_state {
        assert_eq!(
            hs.term, term,
            "a term change must be fsynced before anything"
        );
        // Written before the entries: it may not name one of them (storage refuses a
        // commit index past its log).
        assert!(
            hs.commit < first_new,
            "commit {} written before its entry",
            hs.commit
        );
    }
    for item in &fx.apply {
        assert!(
            item.entry.index < first_new,
            "entry {} applied before its own write",
            item.entry.index
        );
    }
}

#[test]
fn a_leader_answers_before_writing_later_proposals_and_a_follower_acknowledges_first() {
    let mut pair = Pair::new();
    while pair.leader().is_none() {
        assert!(pair.now < Duration::from_secs(10), "no leader elected");
        pair.round();
    }
    let leader = pair.leader().expect("a leader");
    let follower = 1 - leader;
    // Until the leader's no-op is committed and applied on both, proposals wait for it.
    for _ in 0..5 {
        pair.round();
    }
    let applied = |p: &Pair, i: usize| p.drivers[i].status().applied;
    assert!(applied(&pair, leader) > 0 && applied(&pair, follower) == applied(&pair, leader));
    let (mut leader_seen, mut follower_seen) = (Seen::default(), Seen::default());
    for req in 1..=20u64 {
        // One proposal per round. A message is stepped at the end of the round it was sent
        // in, and the follower answers in the next round, so the round that writes proposal
        // n applies proposal n - 2: all but the first two rounds apply and write together.
        pair.drivers[leader].propose(req, Bytes::from(format!("v{req}")));
        let seen = pair.round();
        leader_seen.apply_first += seen[leader].apply_first;
        leader_seen.answered_early += seen[leader].answered_early;
        follower_seen.apply_first += seen[follower].apply_first;
        follower_seen.wrote_and_applied += seen[follower].wrote_and_applied;
    }
    assert_eq!(
        leader_seen.apply_first, 18,
        "rounds that let the leader apply first"
    );
    assert!(
        leader_seen.answered_early >= 18,
        "only {} of 20 proposals were answered before the next write",
        leader_seen.answered_early
    );
    assert!(
        // The follower learns each commit from the next append: it too writes and applies
        // in one batch in all rounds but the first few.
        follower_seen.wrote_and_applied >= 17,
        "the follower's batches did not both write and apply ({})",
        follower_seen.wrote_and_applied
    );
    assert_eq!(
        follower_seen.apply_first, 0,
        "a follower's acknowledgement must not wait for its apply"
    );
}
