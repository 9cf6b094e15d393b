//! Workload (c): watchers. Each watcher follows the register keys (prefix `r`) from revision 1
//! with `prev_kv`, pinned to one member, while the register clients write and the nemesis
//! strikes; after any error it watches again from the revision after the last one it saw.
//! [`check`] then holds every watcher to what etcd's robustness suite checks, and more:
//!
//! - **ordered**: revisions only go up along a watcher's events;
//! - **unique**: no (revision, key) delivered twice;
//! - **atomic**: all events of one revision arrive in one response;
//! - **reliable / resumable**: every watcher saw exactly the revisions every other watcher saw
//!   over the range it covered, with the same events (identical sequences for all watchers of
//!   one range), across its re-watches;
//! - **no event below the start revision** of the stream that delivered it;
//! - **prev_kv**: every event on a key that had a live value carries `prev_kv`, and it is that
//!   value (same value and mod revision as the key's previous event);
//! - **IsCreate**: a put is a creation (`create_revision == mod_revision`, version 1) exactly
//!   when the key had no live value before it;
//! - **agrees with the store**: the last event of each key matches the final linearizable read
//!   (value and mod revision, or absent after a delete).
//!
//! The checker only reads the logs: [`tests`] show it catching each kind of violation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::etcdserverpb::WatchCreateRequest;
use proto::mvccpb::event::EventType;
use raftkv_client::{Client, WatchOptions};
use serde::Serialize;

use crate::watch_progress::{self, ProgressLog};

/// The key prefix the register workload writes under.
pub const PREFIX: &str = "r";

/// One event as a watcher received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SeenEvent {
    pub rev: i64,
    pub key: String,
    pub delete: bool,
    pub value: String,
    pub create_revision: i64,
    pub version: i64,
    /// `prev_kv`: (value, mod_revision).
    pub prev: Option<(String, i64)>,
    /// Which response of the watcher carried it (counted across re-watches).
    pub response: u64,
    /// The start revision of the stream that delivered it.
    pub stream_start: i64,
}

/// Everything one watcher saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WatcherLog {
    pub name: String,
    pub events: Vec<SeenEvent>,
    /// Streams opened (1 + re-watches).
    pub streams: u64,
    /// The highest header revision received: every event up to it was delivered.
    pub caught_up_to: i64,
    /// Why streams ended, in order (errors, cancels).
    pub interruptions: Vec<String>,
    /// Progress requests, their answers and the streams' ends (`crate::watch_progress`).
    pub progress: ProgressLog,
}

/// Follows [`PREFIX`] on `endpoint` from revision 1, re-watching after every error, until
/// `stop` is set and it has caught up to `final_revision` (set once the run has read the final
/// state), or `catch_up` has passed since `final_revision` was set. Every
/// [`watch_progress::ASK_EVERY`] it asks the stream for progress, noting `acknowledged` (the
/// highest revision acknowledged to any client so far) with the request.
pub async fn watcher_loop(
    name: String,
    endpoint: String,
    stop: Arc<AtomicBool>,
    final_revision: Arc<AtomicI64>,
    acknowledged: Arc<AtomicI64>,
    catch_up: Duration,
) -> WatcherLog {
    let started = tokio::time::Instant::now();
    let ms = move || started.elapsed().as_secs_f64() * 1000.0;
    let mut log = WatcherLog {
        name,
        ..WatcherLog::default()
    };
    let timeouts = raftkv_client::Timeouts {
        dial: Duration::from_secs(1),
        call: Duration::from_secs(2),
    };
    let Ok(client) = Client::new(std::slice::from_ref(&endpoint), timeouts) else {
        log.interruptions.push(format!("bad endpoint {endpoint}"));
        return log;
    };
    let mut next_rev = 1i64;
    let mut responses = 0u64;
    let mut deadline: Option<tokio::time::Instant> = None;
    // Over once the traffic stopped and this watcher has everything up to the final
    // revision, or its catch-up time is spent.
    let mut done = |log: &WatcherLog| {
        let target = final_revision.load(Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) || target == 0 {
            return false;
        }
        let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + catch_up);
        log.caught_up_to >= target || tokio::time::Instant::now() >= until
    };
    while !done(&log) {
        let create = WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec().into(),
            range_end: raftkv_client::prefix_range_end(PREFIX.as_bytes()).into(),
            start_revision: next_rev,
            prev_kv: true,
            ..WatchCreateRequest::default()
        };
        log.streams += 1;
        let stream_start = next_rev;
        let mut stream = match client
            .watch(
                create,
                WatchOptions {
                    require_leader: true,
                },
            )
            .await
        {
            Ok(s) => s,
            Err(e) => {
                log.interruptions.push(format!("open: {}", e.message()));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let stream_no = log.streams;
        let mut ask = tokio::time::interval(watch_progress::ASK_EVERY);
        ask.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Once done, the watcher asks FINAL_ASKS more times at once and then waits (up to
        // DRAIN) for every answer still due: on this healthy stream of a healed cluster, a
        // request the server dropped shows as unanswered.
        let mut drain: Option<tokio::time::Instant> = None;
        loop {
            if done(&log) {
                if drain.is_none() {
                    drain = Some(tokio::time::Instant::now() + DRAIN);
                    for _ in 0..FINAL_ASKS {
                        let known = acknowledged.load(Ordering::Relaxed);
                        let sent_ms = ms();
                        if stream.request_progress().await.is_ok() {
                            log.progress.asked(stream_no, sent_ms, known);
                        }
                    }
                }
                let until = drain.expect("set above");
                if log.progress.outstanding(stream_no) == 0 || tokio::time::Instant::now() >= until
                {
                    log.progress.stream_ended(stream_no, ms(), false);
                    return log;
                }
            }
            let next = tokio::select! {
                r = tokio::time::timeout(IDLE, stream.next()) => r,
                _ = ask.tick() => {
                    // Never more than a few pending: a stalled member must not fill the
                    // client's request queue (the send would then wait).
                    let known = acknowledged.load(Ordering::Relaxed);
                    let sent_ms = ms();
                    if drain.is_none()
                        && log.progress.outstanding(stream_no) < watch_progress::MAX_OUTSTANDING
                        && stream.request_progress().await.is_ok()
                    {
                        log.progress.asked(stream_no, sent_ms, known);
                    }
                    continue;
                }
            };
            let response = match next {
                Err(_) => continue,
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => {
                    log.progress.stream_ended(stream_no, ms(), true);
                    log.interruptions.push("stream ended".into());
                    break;
                }
                Ok(Err(e)) => {
                    log.progress.stream_ended(stream_no, ms(), true);
                    log.interruptions.push(e.message().to_string());
                    break;
                }
            };
            if response.canceled {
                log.progress.stream_ended(stream_no, ms(), true);
                log.interruptions.push(format!(
                    "canceled: {} (compact revision {})",
                    response.cancel_reason, response.compact_revision
                ));
                break;
            }
            responses += 1;
            if response.events.is_empty() && !response.created {
                // A progress notification: every event up to its revision was delivered.
                if let Some(h) = &response.header {
                    log.caught_up_to = log.caught_up_to.max(h.revision);
                    next_rev = next_rev.max(h.revision + 1);
                    if response.watch_id == -1 {
                        let before = log.events.len();
                        log.progress.answered(stream_no, ms(), h.revision, before);
                    }
                }
            }
            for ev in &response.events {
                let Some(kv) = &ev.kv else { continue };
                let seen = SeenEvent {
                    rev: kv.mod_revision,
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    delete: ev.r#type == EventType::Delete as i32,
                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                    create_revision: kv.create_revision,
                    version: kv.version,
                    prev: ev.prev_kv.as_ref().map(|p| {
                        (
                            String::from_utf8_lossy(&p.value).into_owned(),
                            p.mod_revision,
                        )
                    }),
                    response: responses,
                    stream_start,
                };
                next_rev = next_rev.max(seen.rev + 1);
                log.caught_up_to = log.caught_up_to.max(seen.rev);
                log.events.push(seen);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log
}

/// How long a stream may be silent before the watcher checks whether the run is over.
const IDLE: Duration = Duration::from_millis(500);

/// How long a watcher that is done waits for the answers to its last progress requests.
const DRAIN: Duration = Duration::from_secs(5);

/// Progress requests a watcher sends at once when it is done (fewer than the client's request
/// queue holds, whatever is still pending).
const FINAL_ASKS: usize = 10;

/// The final state of a key from a linearizable read: `None` if absent.
pub type FinalState = HashMap<String, Option<(String, i64)>>;

/// Checks every watcher's log; returns the violations found (empty: all hold).
pub fn check(watchers: &[WatcherLog], finals: &FinalState) -> Vec<String> {
    let mut violations = Vec::new();
    // The union of all watchers: revision → key → event (first reporter wins, disagreement
    // is a violation).
    let mut union: BTreeMap<i64, BTreeMap<String, (&SeenEvent, &str)>> = BTreeMap::new();
    for w in watchers {
        let mut last_rev = 0i64;
        let mut delivered = std::collections::HashSet::new();
        let mut response_of_rev: HashMap<i64, u64> = HashMap::new();
        for e in &w.events {
            // Within a revision keys come in the txn's order: only a lower revision is out
            // of order.
            if e.rev < last_rev {
                violations.push(format!(
                    "{}: ordered: revision {} after {last_rev}",
                    w.name, e.rev
                ));
            }
            last_rev = last_rev.max(e.rev);
            if !delivered.insert((e.rev, e.key.as_str())) {
                violations.push(format!(
                    "{}: unique: {} at revision {} delivered twice",
                    w.name, e.key, e.rev
                ));
            }
            match response_of_rev.get(&e.rev) {
                Some(&r) if r != e.response => violations.push(format!(
                    "{}: atomic: the events of revision {} came in responses {r} and {}",
                    w.name, e.rev, e.response
                )),
                _ => {
                    response_of_rev.insert(e.rev, e.response);
                }
            }
            if e.rev < e.stream_start {
                violations.push(format!(
                    "{}: revision {} delivered on a stream started at {}",
                    w.name, e.rev, e.stream_start
                ));
            }
            let slot = union.entry(e.rev).or_default();
            match slot.get(&e.key) {
                Some((seen, by)) if !same_event(seen, e) => violations.push(format!(
                    "{}: {} at revision {} is {:?}, but {by} saw {:?}",
                    w.name,
                    e.key,
                    e.rev,
                    brief(e),
                    brief(seen)
                )),
                Some(_) => {}
                None => {
                    slot.insert(e.key.clone(), (e, w.name.as_str()));
                }
            }
        }
    }
    // Reliable: each watcher saw every event of the union up to where it caught up.
    for w in watchers {
        let mine: std::collections::HashSet<(i64, &str)> =
            w.events.iter().map(|e| (e.rev, e.key.as_str())).collect();
        let upto = w.caught_up_to;
        let mut missing = Vec::new();
        for (rev, keys) in union.range(..=upto) {
            for key in keys.keys() {
                if !mine.contains(&(*rev, key.as_str())) {
                    missing.push(format!("{key}@{rev}"));
                }
            }
        }
        if !missing.is_empty() {
            violations.push(format!(
                "{}: reliable: missing {} event(s) up to revision {upto}: {}",
                w.name,
                missing.len(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    // prev_kv and IsCreate along each key's history, as each watcher saw it; progress.
    for w in watchers {
        violations.extend(key_histories(&w.name, w.events.iter()).1);
        violations.extend(watch_progress::check(&w.name, &w.progress, &w.events));
    }
    let union_events = union
        .values()
        .flat_map(|keys| keys.values().map(|(e, _)| *e));
    let live = key_histories("union", union_events).0;
    // Agrees with the final reads (when the watchers reached the final revision).
    for (key, state) in finals {
        let last = live.get(key.as_str()).map(|(v, r)| (v.to_string(), *r));
        if &last != state {
            violations.push(format!(
                "store: {key} reads {state:?} at the end, the watchers' last event leaves {last:?}"
            ));
        }
    }
    violations
}

/// Walks events in delivery order keeping each key's live value: the final live values, and
/// the prev_kv and IsCreate violations met on the way.
fn key_histories<'a>(
    name: &str,
    events: impl Iterator<Item = &'a SeenEvent>,
) -> (HashMap<&'a str, (&'a str, i64)>, Vec<String>) {
    let mut violations = Vec::new();
    let mut live: HashMap<&str, (&str, i64)> = HashMap::new();
    for e in events {
        let key = e.key.as_str();
        let before = live.get(key).copied();
        match (before, &e.prev) {
            (Some((v, r)), Some((pv, pr))) if (v, r) != (pv.as_str(), *pr) => {
                violations.push(format!(
                "{name}: prev_kv: {key} at revision {} names {pv:?}@{pr}, the key held {v:?}@{r}",
                e.rev
            ))
            }
            (Some((v, r)), None) => violations.push(format!(
                "{name}: prev_kv: {key} at revision {} has none; the key held {v:?}@{r}",
                e.rev
            )),
            (None, Some((pv, pr))) => violations.push(format!(
                "{name}: prev_kv: {key} at revision {} names {pv:?}@{pr} but the key had no value",
                e.rev
            )),
            _ => {}
        }
        if e.delete {
            live.remove(key);
        } else {
            let creates = e.create_revision == e.rev && e.version == 1;
            if creates != before.is_none() {
                violations.push(format!(
                    "{name}: IsCreate: {key} at revision {} has create revision {} version {}, \
                     but the key {} a value before",
                    e.rev,
                    e.create_revision,
                    e.version,
                    if before.is_some() { "had" } else { "had no" }
                ));
            }
            live.insert(key, (e.value.as_str(), e.rev));
        }
    }
    (live, violations)
}

fn same_event(a: &SeenEvent, b: &SeenEvent) -> bool {
    (a.delete, &a.value, a.create_revision, a.version, &a.prev)
        == (b.delete, &b.value, b.create_revision, b.version, &b.prev)
}

fn brief(e: &SeenEvent) -> String {
    format!(
        "{} {:?} create {} version {} prev {:?}",
        if e.delete { "DELETE" } else { "PUT" },
        e.value,
        e.create_revision,
        e.version,
        e.prev
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(
        rev: i64,
        key: &str,
        value: &str,
        created: i64,
        version: i64,
        prev: Option<(&str, i64)>,
    ) -> SeenEvent {
        SeenEvent {
            rev,
            key: key.into(),
            delete: false,
            value: value.into(),
            create_revision: created,
            version,
            prev: prev.map(|(v, r)| (v.to_string(), r)),
            response: rev as u64,
            stream_start: 1,
        }
    }

    fn del(rev: i64, key: &str, prev: Option<(&str, i64)>) -> SeenEvent {
        SeenEvent {
            delete: true,
            value: String::new(),
            create_revision: 0,
            version: 0,
            ..put(rev, key, "", 0, 0, prev)
        }
    }

    /// r1 created at 2, overwritten at 3, deleted at 4, created again at 5; r2 created at 6.
    fn history() -> Vec<SeenEvent> {
        vec![
            put(2, "r1", "a", 2, 1, None),
            put(3, "r1", "b", 2, 2, Some(("a", 2))),
            del(4, "r1", Some(("b", 3))),
            put(5, "r1", "c", 5, 1, None),
            put(6, "r2", "x", 6, 1, None),
        ]
    }

    fn watcher(name: &str, events: Vec<SeenEvent>) -> WatcherLog {
        WatcherLog {
            name: name.into(),
            caught_up_to: events.last().map_or(0, |e| e.rev),
            events,
            streams: 1,
            interruptions: vec![],
            progress: ProgressLog::default(),
        }
    }

    fn finals() -> FinalState {
        FinalState::from([
            ("r1".to_string(), Some(("c".to_string(), 5))),
            ("r2".to_string(), Some(("x".to_string(), 6))),
        ])
    }

    /// A change that breaks one watcher's copy of the history.
    type Breakage = Box<dyn FnOnce(&mut Vec<SeenEvent>)>;

    fn violations_with(change: impl FnOnce(&mut Vec<SeenEvent>)) -> Vec<String> {
        let mut broken = history();
        change(&mut broken);
        check(
            &[watcher("w0", history()), watcher("w1", broken)],
            &finals(),
        )
    }

    #[test]
    fn a_correct_history_passes() {
        assert_eq!(
            check(
                &[watcher("w0", history()), watcher("w1", history())],
                &finals()
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_kind_of_violation_is_caught() {
        let cases: Vec<(&str, Breakage)> = vec![
            (
                "reliable",
                Box::new(|h| {
                    h.remove(2);
                }),
            ),
            ("ordered", Box::new(|h| h.swap(1, 2))),
            (
                "unique",
                Box::new(|h| {
                    let again = h[1].clone();
                    h.insert(2, again);
                }),
            ),
            (
                "atomic",
                Box::new(|h| {
                    h.insert(4, put(5, "r3", "z", 5, 1, None));
                    h[4].response = 99;
                }),
            ),
            ("prev_kv", Box::new(|h| h[1].prev = None)),
            ("prev_kv", Box::new(|h| h[2].prev = Some(("a".into(), 2)))),
            (
                "IsCreate",
                Box::new(|h| {
                    h[3].create_revision = 2;
                    h[3].version = 3;
                }),
            ),
            ("but w0 saw", Box::new(|h| h[4].value = "y".into())),
            ("stream started", Box::new(|h| h[0].stream_start = 3)),
        ];
        for (expected, change) in cases {
            let found = violations_with(change);
            assert!(
                found.iter().any(|v| v.contains(expected)),
                "{expected} not caught: {found:?}"
            );
        }
    }

    #[test]
    fn a_watcher_that_missed_the_last_write_disagrees_with_the_store() {
        let mut short = history();
        short.pop();
        let found = check(&[watcher("w0", short)], &finals());
        assert!(
            found.iter().any(|v| v.starts_with("store: r2")),
            "{found:?}"
        );
    }

    #[test]
    fn a_watcher_behind_the_others_is_checked_only_up_to_where_it_caught_up() {
        let mut behind = history();
        behind.truncate(3);
        let found = check(
            &[watcher("w0", history()), watcher("w1", behind)],
            &finals(),
        );
        assert_eq!(found, Vec::<String>::new());
    }
}
