//! Progress requests in the watch workload, and what the checker demands of their answers.
//!
//! Kubernetes keeps its watch cache fresh by asking the stream for progress (a
//! `progress_request`, answered with `watch_id = -1` and a revision up to which every event of
//! the stream was delivered) every 100 ms while a reader waits for a revision. etcd 3.4 may
//! answer before pending events (etcd#15220) and later versions silently drop a request while a
//! watcher lags; raftkv promises to answer every one once the stream has caught up
//! (`docs/watch.md`). So each watcher asks as Kubernetes does, and [`check`] requires:
//!
//! - **bookmarkable**: no event at or below a progress revision arrives after it; progress
//!   revisions never go down along a watcher (across its re-watches too); a progress revision
//!   is at least the last event revision delivered before it;
//! - **answered**: every request is answered (answers are matched to requests in order, one
//!   each), unless its stream ended first; a stream that stays open [`ANSWER_BOUND_MS`] after a
//!   request without answering it (or one the watcher closed itself while a request older than
//!   [`FINAL_GRACE_MS`] was pending) is a violation.
//!
//! [`stats`] reports how long answers took and how often the answer already covered every write
//! acknowledged before the request was sent (the revision a Kubernetes reader waits for).

use serde::Serialize;

use crate::watch::{SeenEvent, WatcherLog};

/// How often a watcher asks, as Kubernetes' progress requester does.
pub const ASK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Requests a watcher leaves outstanding on one stream before it stops asking (so that a
/// stalled member never fills the client's request queue).
pub const MAX_OUTSTANDING: usize = 8;

/// A request pending this long on a stream that stayed open is a violation. It exceeds the
/// longest pause the nemesis holds (a paused member answers nothing until it resumes).
pub const ANSWER_BOUND_MS: f64 = 10_000.0;

/// A request still pending when the watcher closed a healthy stream itself is a violation if
/// it was sent this long before (the run was over and healed by then, and the watcher waited
/// up to 5 s for its last answers before closing).
pub const FINAL_GRACE_MS: f64 = 1_000.0;

/// One progress request and its answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProgressAsk {
    /// The watcher's stream it was sent on (1 = the first).
    pub stream: u64,
    /// Milliseconds since the watcher started.
    pub sent_ms: f64,
    /// The highest revision acknowledged to any client before it was sent.
    pub known_rev: i64,
    pub answered_ms: Option<f64>,
    pub answer_rev: Option<i64>,
}

/// A progress notification as delivered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    pub stream: u64,
    pub rev: i64,
    /// How many of the watcher's events were delivered before it.
    pub events_before: usize,
}

/// How a stream ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamEnd {
    pub stream: u64,
    pub at_ms: f64,
    /// Ended by an error, a cancel or the server (rather than by the watcher, done).
    pub by_error: bool,
}

/// Everything about progress one watcher saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProgressLog {
    pub asks: Vec<ProgressAsk>,
    pub notifications: Vec<Notification>,
    pub stream_ends: Vec<StreamEnd>,
}

impl ProgressLog {
    /// Requests sent on `stream` and not answered yet.
    pub fn outstanding(&self, stream: u64) -> usize {
        self.asks
            .iter()
            .rev()
            .take_while(|a| a.stream == stream)
            .filter(|a| a.answered_ms.is_none())
            .count()
    }

    pub fn asked(&mut self, stream: u64, sent_ms: f64, known_rev: i64) {
        self.asks.push(ProgressAsk {
            stream,
            sent_ms,
            known_rev,
            answered_ms: None,
            answer_rev: None,
        });
    }

    /// A `watch_id = -1` response: it answers the oldest pending request of its stream. An
    /// answer nobody asked for stays a notification and is reported by [`check`].
    pub fn answered(&mut self, stream: u64, at_ms: f64, rev: i64, events_before: usize) {
        self.notifications.push(Notification {
            stream,
            rev,
            events_before,
        });
        let pending = self
            .asks
            .iter_mut()
            .find(|a| a.stream == stream && a.answered_ms.is_none());
        if let Some(ask) = pending {
            ask.answered_ms = Some(at_ms);
            ask.answer_rev = Some(rev);
        } else {
            self.asks.push(ProgressAsk {
                stream,
                sent_ms: f64::NAN,
                known_rev: 0,
                answered_ms: Some(at_ms),
                answer_rev: Some(rev),
            });
        }
    }

    pub fn stream_ended(&mut self, stream: u64, at_ms: f64, by_error: bool) {
        self.stream_ends.push(StreamEnd {
            stream,
            at_ms,
            by_error,
        });
    }
}

/// The progress violations of one watcher whose events are `events`.
pub fn check(name: &str, log: &ProgressLog, events: &[SeenEvent]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut highest = i64::MIN;
    for n in &log.notifications {
        if n.rev < highest {
            violations.push(format!(
                "{name}: bookmarkable: progress revision {} after {highest} (stream {})",
                n.rev, n.stream
            ));
        }
        highest = highest.max(n.rev);
        if let Some(before) = n.events_before.checked_sub(1).map(|i| &events[i]) {
            if before.rev > n.rev {
                violations.push(format!(
                    "{name}: bookmarkable: progress revision {} after an event at revision {}",
                    n.rev, before.rev
                ));
            }
        }
        if let Some(after) = events.get(n.events_before) {
            if after.rev <= n.rev {
                violations.push(format!(
                    "{name}: bookmarkable: {} at revision {} arrived after progress revision {}",
                    after.key, after.rev, n.rev
                ));
            }
        }
    }
    for a in &log.asks {
        if a.sent_ms.is_nan() {
            violations.push(format!(
                "{name}: answered: a progress answer (revision {:?}) on stream {} that no request asked for",
                a.answer_rev, a.stream
            ));
            continue;
        }
        if a.answered_ms.is_some() {
            continue;
        }
        let end = log.stream_ends.iter().find(|e| e.stream == a.stream);
        let waited = end.map(|e| e.at_ms - a.sent_ms);
        let bound = match end {
            Some(e) if !e.by_error => FINAL_GRACE_MS,
            _ => ANSWER_BOUND_MS,
        };
        match waited {
            Some(w) if w >= bound => violations.push(format!(
                "{name}: answered: the progress request sent at {:.0} ms on stream {} was never \
                 answered; the stream stayed open {:.0} ms after it",
                a.sent_ms, a.stream, w
            )),
            Some(_) => {}
            None => violations.push(format!(
                "{name}: answered: the progress request sent at {:.0} ms on stream {} was never \
                 answered, and the stream's end was not recorded",
                a.sent_ms, a.stream
            )),
        }
    }
    violations
}

/// Answer figures over every watcher of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProgressStats {
    pub asked: usize,
    pub answered: usize,
    /// Answers whose revision covered every write acknowledged before the request was sent.
    pub fresh: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl ProgressStats {
    pub fn one_line(&self) -> String {
        format!(
            "progress {}/{} answered ({} fresh), p50 {:.1} ms p99 {:.1} ms max {:.0} ms",
            self.answered, self.asked, self.fresh, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

pub fn stats(watchers: &[WatcherLog]) -> ProgressStats {
    let asks: Vec<&ProgressAsk> = watchers
        .iter()
        .flat_map(|w| &w.progress.asks)
        .filter(|a| !a.sent_ms.is_nan())
        .collect();
    let mut waits: Vec<f64> = asks
        .iter()
        .filter_map(|a| a.answered_ms.map(|t| t - a.sent_ms))
        .collect();
    waits.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        waits
            .get(((waits.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    ProgressStats {
        asked: asks.len(),
        answered: waits.len(),
        fresh: asks
            .iter()
            .filter(|a| a.answer_rev.is_some_and(|r| r >= a.known_rev))
            .count(),
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        max_ms: waits.last().copied().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rev: i64) -> SeenEvent {
        SeenEvent {
            rev,
            key: format!("r{rev}"),
            delete: false,
            value: "v".into(),
            create_revision: rev,
            version: 1,
            prev: None,
            response: rev as u64,
            stream_start: 1,
        }
    }

    /// Stream 1: events 2 and 3, a request answered at 3, event 4, a request answered at 4;
    /// then the watcher closes the stream itself.
    fn healthy() -> (ProgressLog, Vec<SeenEvent>) {
        let mut log = ProgressLog::default();
        log.asked(1, 10.0, 3);
        log.answered(1, 12.0, 3, 2);
        log.asked(1, 110.0, 4);
        log.answered(1, 111.0, 4, 3);
        log.stream_ended(1, 5_000.0, false);
        (log, vec![event(2), event(3), event(4)])
    }

    #[test]
    fn a_healthy_log_passes_and_its_figures_add_up() {
        let (log, events) = healthy();
        assert_eq!(check("w", &log, &events), Vec::<String>::new());
        let w = WatcherLog {
            name: "w".into(),
            progress: log,
            ..WatcherLog::default()
        };
        let s = stats(&[w]);
        assert_eq!((s.asked, s.answered, s.fresh), (2, 2, 2));
        assert_eq!(s.max_ms, 2.0);
    }

    #[test]
    fn each_kind_of_progress_violation_is_caught() {
        type Breakage = Box<dyn Fn(&mut ProgressLog, &mut Vec<SeenEvent>)>;
        let cases: Vec<(&str, Breakage)> = vec![
            // An event at the progress revision delivered after it.
            (
                "arrived after progress revision",
                Box::new(|_, ev| ev.insert(2, event(3))),
            ),
            // The second answer goes back.
            (
                "progress revision 2 after 3",
                Box::new(|l, _| l.notifications[1].rev = 2),
            ),
            // A progress revision below an event already delivered.
            (
                "after an event at revision 3",
                Box::new(|l, _| l.notifications[0].rev = 2),
            ),
            // The second request never answered, on a stream open 4.9 s longer.
            (
                "never answered",
                Box::new(|l, _| {
                    l.notifications.pop();
                    l.asks[1].answered_ms = None;
                    l.asks[1].answer_rev = None;
                }),
            ),
            // An answer without a request.
            (
                "no request asked for",
                Box::new(|l, _| l.answered(1, 200.0, 4, 3)),
            ),
        ];
        for (expected, breakage) in cases {
            let (mut log, mut events) = healthy();
            breakage(&mut log, &mut events);
            let found = check("w", &log, &events);
            assert!(
                found.iter().any(|v| v.contains(expected)),
                "{expected} not caught: {found:?}"
            );
        }
    }

    #[test]
    fn a_request_pending_when_its_stream_broke_is_excused_but_not_a_long_wait() {
        let mut log = ProgressLog::default();
        log.asked(1, 10.0, 3);
        log.stream_ended(1, 2_000.0, true);
        assert_eq!(check("w", &log, &[]), Vec::<String>::new());
        // The same request on a stream that stayed open past the bound.
        log.stream_ends[0].at_ms = 10.0 + ANSWER_BOUND_MS;
        assert_eq!(check("w", &log, &[]).len(), 1);
    }

    #[test]
    fn answers_match_requests_in_order_per_stream() {
        let mut log = ProgressLog::default();
        log.asked(1, 0.0, 1);
        log.asked(1, 100.0, 2);
        assert_eq!(log.outstanding(1), 2);
        log.answered(1, 150.0, 2, 0);
        assert_eq!(log.asks[0].answered_ms, Some(150.0));
        assert_eq!(log.asks[1].answered_ms, None);
        assert_eq!(log.outstanding(1), 1);
        log.stream_ended(1, 160.0, true);
        log.asked(2, 200.0, 2);
        assert_eq!(log.outstanding(2), 1);
    }
}
