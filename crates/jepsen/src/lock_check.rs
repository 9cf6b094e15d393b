//! The lock workload's checker (`crate::lock`).
//!
//! Fenced critical sections must not overlap and no stale holder's fenced write may
//! succeed. From the sessions recorded and the shared list read back from every member:
//!
//! 1. **Lost appends.** Every acknowledged append is in every member's final list. The
//!    list is written back whole under the fence alone, so two holders inside their
//!    critical sections at once lose one another's appends.
//! 2. **Unexpected appends.** An append whose Txn answered "guard failed" (fenced out) or
//!    provably failed is in no list.
//! 3. **Token order.** Along the list, fencing tokens never decrease: a holder never wrote
//!    after a later holder did.
//! 4. **Disjoint sections.** The revisions of each holding's acknowledged appends form a
//!    range; for any two holdings the one with the smaller token ends before the other
//!    begins.
//! 5. **Stale writes.** No acknowledged append of a holding is at a revision after a
//!    holding with a larger token was known to hold the lock (the revision of the read that
//!    found its owner key).
//!
//! Also counted, not a violation: pairs of holdings whose *believed* intervals (Lock answer
//! to Unlock) overlap in real time, i.e. what a client that does not fence would suffer.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::lock::{AppendOutcome, Session};

/// What the lock checker found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LockReport {
    /// "valid", or the number of violations and the first.
    pub verdict: String,
    pub violations: Vec<String>,
    /// Holdings (Lock answers), and those with a fencing token.
    pub sessions: usize,
    pub fenced_sessions: usize,
    pub acknowledged_appends: usize,
    /// Appends turned away by the fence.
    pub fenced_out: usize,
    /// Appends made right after a stall past the TTL, and how many of them the fence
    /// turned away (the others failed before the fence was tried, e.g. their member was
    /// down, or succeeded because no leader had revoked the lease yet: legitimate while no
    /// one else held the lock, which checks 4 and 5 enforce).
    pub after_stall: usize,
    pub after_stall_fenced: usize,
    /// Pairs of holdings by different clients whose believed intervals overlapped, and
    /// the total time of those overlaps.
    pub believed_overlaps: usize,
    pub believed_overlap_ms: f64,
    /// Of those, the pairs where neither holder stalled on purpose: what the faults on the
    /// cluster alone did to clients that trust the lock without fencing.
    pub believed_overlaps_unstalled: usize,
}

impl LockReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn one_line(&self) -> String {
        format!(
            "lock {} ({} holdings, {} appends acknowledged, {} fenced out, {}/{} stalled appends fenced, \
             {} believed-held overlaps totalling {:.0} ms, {} without a stall)",
            self.verdict,
            self.sessions,
            self.acknowledged_appends,
            self.fenced_out,
            self.after_stall_fenced,
            self.after_stall,
            self.believed_overlaps,
            self.believed_overlap_ms,
            self.believed_overlaps_unstalled
        )
    }
}

/// Checks the sessions against each member's final list (`None`: unreadable there).
pub fn check(sessions: &[Session], finals: &[Option<Vec<(u64, u64)>>]) -> LockReport {
    let mut v = Vec::new();
    let mut r = LockReport {
        sessions: sessions.len(),
        fenced_sessions: sessions.iter().filter(|s| s.token != 0).count(),
        ..Default::default()
    };
    let mut acked: Vec<(u64, u64, u64)> = Vec::new(); // (element, token, revision)
    let mut not_written: Vec<(u64, u64)> = Vec::new();
    for s in sessions {
        for a in &s.appends {
            match a.outcome {
                AppendOutcome::Ok { revision } => acked.push((a.element, s.token, revision)),
                AppendOutcome::Fenced => {
                    r.fenced_out += 1;
                    not_written.push((a.element, s.token));
                }
                AppendOutcome::Fail => not_written.push((a.element, s.token)),
                AppendOutcome::Unknown => {}
            }
            if a.after_stall {
                r.after_stall += 1;
                r.after_stall_fenced += usize::from(a.outcome == AppendOutcome::Fenced);
            }
        }
    }
    r.acknowledged_appends = acked.len();

    for (m, list) in finals.iter().enumerate() {
        let Some(list) = list else {
            v.push(format!("member {}: the list could not be read", m + 1));
            continue;
        };
        let present: HashSet<(u64, u64)> = list.iter().copied().collect();
        for &(e, t, rev) in &acked {
            if !present.contains(&(e, t)) {
                v.push(format!(
                    "member {}: acknowledged append {e} (token {t}, revision {rev}) is missing: \
                     another holder overwrote the list inside its own critical section",
                    m + 1
                ));
            }
        }
        for &(e, t) in &not_written {
            if present.contains(&(e, t)) {
                v.push(format!(
                    "member {}: append {e} (token {t}) was refused but is in the list",
                    m + 1
                ));
            }
        }
        for w in list.windows(2) {
            let ((e1, t1), (e2, t2)) = (w[0], w[1]);
            if t2 < t1 {
                v.push(format!(
                    "member {}: append {e2} with token {t2} follows append {e1} with token {t1}: \
                     a stale holder wrote after a newer one",
                    m + 1
                ));
            }
        }
    }

    // Revision range of each holding's acknowledged appends, by token.
    let mut ranges: HashMap<u64, (u64, u64)> = HashMap::new();
    for &(_, t, rev) in &acked {
        let e = ranges.entry(t).or_insert((rev, rev));
        e.0 = e.0.min(rev);
        e.1 = e.1.max(rev);
    }
    let mut sorted: Vec<(u64, (u64, u64))> = ranges.into_iter().collect();
    sorted.sort_unstable();
    for (i, &(ta, (_, a_last))) in sorted.iter().enumerate() {
        for &(tb, (b_first, _)) in &sorted[i + 1..] {
            if a_last >= b_first {
                v.push(format!(
                    "fenced sections overlap: token {ta} wrote up to revision {a_last}, \
                     token {tb} from revision {b_first}"
                ));
            }
        }
    }
    for s in sessions
        .iter()
        .filter(|s| s.token != 0 && s.acquired_revision != 0)
    {
        for &(e, t, rev) in &acked {
            if t < s.token && rev > s.acquired_revision {
                v.push(format!(
                    "stale write: append {e} (token {t}) succeeded at revision {rev}, after \
                     token {} held the lock at revision {}",
                    s.token, s.acquired_revision
                ));
            }
        }
    }

    let mut by_start: Vec<&Session> = sessions.iter().collect();
    by_start.sort_by_key(|s| s.believed_from);
    for (i, a) in by_start.iter().enumerate() {
        for b in &by_start[i + 1..] {
            if b.believed_from >= a.believed_to {
                break;
            }
            if a.client != b.client {
                r.believed_overlaps += 1;
                let stalled = |s: &Session| s.appends.iter().any(|x| x.after_stall);
                r.believed_overlaps_unstalled += usize::from(!stalled(a) && !stalled(b));
                let overlap = a.believed_to.min(b.believed_to) - b.believed_from;
                r.believed_overlap_ms += overlap as f64 / 1e6;
            }
        }
    }

    r.verdict = match v.len() {
        0 => "valid".to_string(),
        n => format!("{n} violation(s), first: {}", v[0]),
    };
    r.violations = v;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::Append;

    fn ok(element: u64, revision: u64) -> Append {
        Append {
            element,
            outcome: AppendOutcome::Ok { revision },
            after_stall: false,
        }
    }

    fn session(
        client: usize,
        token: u64,
        acquired: u64,
        ms: (u64, u64),
        appends: Vec<Append>,
    ) -> Session {
        Session {
            client,
            token,
            acquired_revision: acquired,
            believed_from: ms.0 * 1_000_000,
            believed_to: ms.1 * 1_000_000,
            appends,
        }
    }

    /// Two holdings one after the other, the second after a stalled first holder was fenced
    /// out; the first believed it still held the lock for 50 ms of the second's holding.
    fn valid() -> (Vec<Session>, Vec<(u64, u64)>) {
        let stalled = Append {
            element: 3,
            outcome: AppendOutcome::Fenced,
            after_stall: true,
        };
        let first = session(0, 10, 11, (0, 150), vec![ok(1, 12), ok(2, 13), stalled]);
        let second = session(1, 20, 21, (100, 200), vec![ok(4, 22), ok(5, 23)]);
        (
            vec![first, second],
            vec![(1, 10), (2, 10), (4, 20), (5, 20)],
        )
    }

    #[test]
    fn a_fenced_history_is_valid_and_its_unfenced_overlap_is_counted() {
        let (sessions, list) = valid();
        let r = check(&sessions, &[Some(list.clone()), Some(list)]);
        assert!(r.passed(), "{:?}", r.violations);
        assert_eq!(r.verdict, "valid");
        assert_eq!(
            (r.sessions, r.acknowledged_appends, r.fenced_out),
            (2, 4, 1)
        );
        assert_eq!((r.after_stall, r.after_stall_fenced), (1, 1));
        assert_eq!((r.believed_overlaps, r.believed_overlaps_unstalled), (1, 0));
        assert!((r.believed_overlap_ms - 50.0).abs() < 1e-9);
    }

    #[test]
    fn a_lost_append_from_overlapping_holders_is_caught() {
        let (mut sessions, _) = valid();
        // Both read the list [1] and wrote it back: 4 overwrote 2.
        sessions[0].appends = vec![ok(1, 12), ok(2, 22)];
        sessions[1].appends = vec![ok(4, 22)];
        let r = check(&sessions, &[Some(vec![(1, 10), (4, 20)])]);
        assert!(!r.passed());
        let all = r.violations.join("\n");
        assert!(all.contains("acknowledged append 2 (token 10"), "{all}");
        assert!(all.contains("fenced sections overlap"), "{all}");
        assert!(all.contains("stale write: append 2"), "{all}");
    }

    #[test]
    fn a_stale_holder_whose_write_succeeded_is_caught() {
        let (mut sessions, _) = valid();
        // The stalled write got through after the second holder's.
        sessions[0].appends[2].outcome = AppendOutcome::Ok { revision: 24 };
        let list = vec![(1, 10), (2, 10), (4, 20), (5, 20), (3, 10)];
        let r = check(&sessions, &[Some(list)]);
        let all = r.violations.join("\n");
        assert!(
            all.contains("token 10 follows append 5 with token 20"),
            "{all}"
        );
        assert!(
            all.contains("stale write: append 3 (token 10) succeeded at revision 24"),
            "{all}"
        );
        assert!(all.contains("fenced sections overlap"), "{all}");
    }

    #[test]
    fn a_refused_append_in_the_list_and_an_unreadable_member_are_caught() {
        let (sessions, mut list) = valid();
        list.insert(2, (3, 10));
        let r = check(&sessions, &[Some(list), None]);
        let all = r.violations.join("\n");
        assert!(
            all.contains("append 3 (token 10) was refused but is in the list"),
            "{all}"
        );
        assert!(
            all.contains("member 2: the list could not be read"),
            "{all}"
        );
    }
}
