//! The `watch` workload: N watchers on one key or on distinct keys, writers putting those
//! keys at a fixed rate or as fast as they can; measures the time from a put being sent to
//! each watcher receiving its event, events delivered per second, and (given the member's
//! pid) the member's resident memory per idle watcher.
//!
//! Latency needs no clock shared with the server: every put's value starts with the time
//! it was sent, as microseconds since the run's start, and the watcher that receives the
//! event (in the same process) subtracts it from the time of arrival.
//!
//! Watchers are spread round-robin over `--streams` Watch streams, which are spread over
//! `--conns` connections; the writers (`--clients`) have a connection of their own so
//! that their requests never queue behind watch traffic in the client. Responses are
//! decoded by a lean walker ([`crate::watch_codec`]) that reads every event's stamp and
//! nothing else, so that the client leaves the shared cores to the member; the CPU both
//! used during the run is reported (from `/proc`), to tell which one was the bottleneck.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use proto::etcdserverpb::{
    kv_client::KvClient, watch_request::RequestUnion, PutRequest, WatchCreateRequest, WatchRequest,
};
use raftkv_client::endpoint::connect;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::args::{BenchArgs, WatchArgs};
use crate::driver::DIAL_TIMEOUT;
use crate::report::{self, Latency};
use crate::schedule::Schedule;
use crate::watch_codec::{Tally, TallyCodec};

/// How long the watchers may still take, once the writers stop, to receive the events of
/// the puts that were acknowledged.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Creates sent on a stream before its `created` answers are read (etcd and raftkv both
/// answer in order; a bound keeps either side's queues short).
const CREATE_WINDOW: usize = 64;

/// What a watch run measured.
#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    pub workload: &'static str,
    pub endpoints: Vec<String>,
    pub watchers: usize,
    pub streams: usize,
    pub distinct_keys: bool,
    /// Each watcher watched its key as a prefix (a range) instead of the key alone.
    pub prefix_watches: bool,
    pub writers: usize,
    /// `--rate` (0: as fast as the writers can).
    pub rate: f64,
    pub elapsed_s: f64,
    /// Puts acknowledged, and per second of the write phase.
    pub puts: u64,
    pub put_errors: u64,
    pub put_throughput: f64,
    pub put_latency: Latency,
    /// Events the acknowledged puts should produce (each put reaches every watcher of its
    /// key), and those that arrived before the drain limit.
    pub events_expected: u64,
    pub events_delivered: u64,
    /// Events delivered per second, from the first put to the last event (at most the
    /// write phase plus the drain).
    pub events_per_s: f64,
    /// Responses that carried the delivered events (events per response tells how much
    /// the member batched).
    pub event_responses: u64,
    /// From a put being sent to one watcher receiving its event.
    pub event_latency: Latency,
    /// Watches the server refused or canceled.
    pub watches_canceled: u64,
    /// The member's resident memory before anything was opened (`cold`), once the
    /// connections and one warm-up watch per connection were open (`before`), and once
    /// every watch was created (`idle`), when `--member-pid` was given.
    pub rss_cold_kib: Option<u64>,
    pub rss_before_kib: Option<u64>,
    pub rss_idle_kib: Option<u64>,
    /// (idle - before) / watchers, in bytes.
    pub rss_bytes_per_watcher: Option<f64>,
    /// (idle - before) / streams, in bytes.
    pub rss_bytes_per_stream: Option<f64>,
    /// `--stalled-streams`: streams that were never read during the run.
    pub stalled_streams: usize,
    /// The member's resident memory when the writers stopped (`--member-pid`).
    pub rss_end_kib: Option<u64>,
    /// CPU time (user + system) from the first put until the events were drained, of the
    /// member (`--member-pid`) and of this client, in percent of one core over that time.
    pub cpu_window_s: f64,
    pub member_cpu_pct: Option<f64>,
    pub client_cpu_pct: Option<f64>,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// CPU time (user + system, all threads) of process `pid` so far, in seconds.
fn cpu_s(pid: &str, ticks_per_s: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields 14 and 15 (utime, stime); the command name (field 2) may hold spaces but ends
    // at the last ')'.
    let rest = stat.rsplit_once(')').context("no ')' in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / ticks_per_s)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless asked).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The key of watcher `i` (all watchers share key 0 unless `--distinct-keys`).
fn watch_key(args: &WatchArgs, i: usize) -> Bytes {
    let i = if args.distinct_keys { i } else { 0 };
    Bytes::from(format!("{}{i:06}", args.key_prefix))
}

/// A put's value: the send time (µs since `epoch`, 8 bytes little-endian), padded.
fn stamped_value(epoch: Instant, size: usize) -> Bytes {
    let us = epoch.elapsed().as_micros() as u64;
    let mut v = Vec::with_capacity(size.max(8));
    v.extend_from_slice(&us.to_le_bytes());
    v.resize(size.max(8), b'v');
    Bytes::from(v)
}

/// When a value stamped by [`stamped_value`] with `stamp` was sent.
fn sent_at(epoch: Instant, stamp: u64) -> Instant {
    epoch + Duration::from_micros(stamp)
}

/// One open stream: its request sender (kept so the stream stays open) and responses.
struct OpenStream {
    _requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<Tally>,
}

/// Open a stream and create a watch on it for each `(key, range_end)` (an empty
/// `range_end`: the key alone), waiting for every `created`.
async fn open_stream(ch: Channel, keys: Vec<(Bytes, Bytes)>) -> Result<(OpenStream, u64)> {
    let create = |(key, range_end): &(Bytes, Bytes)| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            ..Default::default()
        })),
    };
    let (tx, rx) = mpsc::channel(CREATE_WINDOW * 2);
    // The first create goes out with the call: etcd (grpc-go) sends the response headers,
    // which the call waits for, only with its first response.
    tx.try_send(create(&keys[0]))
        .expect("an empty channel has room");
    let mut client = tonic::client::Grpc::new(ch).max_decoding_message_size(usize::MAX >> 1);
    client
        .ready()
        .await
        .map_err(|e| anyhow::anyhow!("connection not ready: {e}"))?;
    let mut responses = client
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
            TallyCodec,
        )
        .await
        .context("opening a Watch stream")?
        .into_inner();
    let mut canceled = 0;
    let mut answered = 0;
    for (sent, key) in keys.iter().enumerate() {
        if sent > 0 {
            tx.send(create(key))
                .await
                .context("the Watch stream closed")?;
        }
        while sent + 1 - answered >= CREATE_WINDOW
            || (sent + 1 == keys.len() && answered < sent + 1)
        {
            let r = responses
                .message()
                .await?
                .context("the Watch stream ended while creating")?;
            if r.created {
                answered += 1;
                canceled += u64::from(r.canceled);
            }
        }
    }
    Ok((
        OpenStream {
            _requests: tx,
            responses,
        },
        canceled,
    ))
}

struct StreamResult {
    hist: Histogram<u64>,
    events: u64,
    /// Responses that carried events.
    responses: u64,
    canceled: u64,
    last_event: Option<Instant>,
}

/// Polls `fut` once: its output if it is ready now, else `None` (it stays registered to
/// wake the task).
async fn ready_now<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *fut).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Read a stream until `stop` says the run is over (and nothing more is ready), recording
/// each event's latency.
///
/// Per response the reader does only what the measure needs (one clock reading, one
/// histogram entry per event): what it has counted goes to the shared `delivered` counter
/// only when it runs out of responses to read, not once per response (a counter every
/// reader writes, from both cores, at millions of events a second).
async fn read_stream(
    mut s: OpenStream,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> StreamResult {
    let mut hist = report::new_histogram();
    let mut events = 0u64;
    let mut responses = 0u64;
    let mut unpublished = 0u64;
    let mut canceled = 0;
    let mut last_event = None;
    loop {
        let next = {
            let mut msg = std::pin::pin!(s.responses.message());
            match ready_now(&mut msg).await {
                Some(r) => r,
                None => {
                    delivered.fetch_add(std::mem::take(&mut unpublished), Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Wake up now and then to notice `stop`.
                    match tokio::time::timeout(Duration::from_millis(200), msg).await {
                        Ok(r) => r,
                        Err(_) => continue,
                    }
                }
            }
        };
        let Ok(Some(r)) = next else { break };
        if r.canceled {
            canceled += 1;
        }
        if r.events == 0 {
            continue;
        }
        let now = Instant::now();
        for stamp in r.stamps() {
            report::record(
                &mut hist,
                now.saturating_duration_since(sent_at(epoch, stamp)),
            );
        }
        events += u64::from(r.events);
        responses += 1;
        unpublished += u64::from(r.events);
        last_event = Some(now);
    }
    delivered.fetch_add(unpublished, Ordering::Relaxed);
    StreamResult {
        hist,
        events,
        responses,
        canceled,
        last_event,
    }
}

struct WriterResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    /// Acknowledged puts per watched key index.
    per_key: Vec<u64>,
}

/// One writer: puts the watched keys (round-robin over them, starting at its own offset)
/// on the shared schedule until the run ends.
async fn writer(
    mut kv: KvClient<Channel>,
    keys: Arc<Vec<Bytes>>,
    epoch: Instant,
    shared: Arc<Schedule>,
    offset: usize,
    val_size: usize,
    timeout: Duration,
) -> WriterResult {
    let mut hist = report::new_histogram();
    let (mut ok, mut errors) = (0, 0);
    let mut per_key = vec![0u64; keys.len()];
    let mut next = offset;
    while let Some(at) = shared.next_slot() {
        if let Some(at) = at {
            tokio::time::sleep_until(at.into()).await;
        }
        let k = next % keys.len();
        next += 1;
        let began = Instant::now();
        let put = PutRequest {
            key: keys[k].clone(),
            value: stamped_value(epoch, val_size),
            ..Default::default()
        };
        match tokio::time::timeout(timeout, kv.put(put)).await {
            Ok(Ok(_)) => {
                report::record(&mut hist, began.elapsed());
                ok += 1;
                per_key[k] += 1;
            }
            _ => errors += 1,
        }
    }
    WriterResult {
        hist,
        ok,
        errors,
        per_key,
    }
}

/// Runs the watch workload.
pub async fn run(args: &BenchArgs, w: &WatchArgs) -> Result<WatchReport> {
    if w.watchers == 0 || w.streams == 0 || w.streams > w.watchers {
        bail!("--watchers must be at least 1 and at least --streams (at least 1)");
    }
    let urls = args.endpoint_urls();
    let epoch = Instant::now();
    let mut channels = Vec::new();
    for i in 0..args.conns.min(w.streams) {
        channels.push(connect(&urls[i % urls.len()], DIAL_TIMEOUT).await?);
    }
    // One watch on each connection, on a key no writer touches, before the first memory
    // reading: what the member spends once (the connections, the first stream, the
    // allocator's first pages of each size it uses) is then not charged to the watchers
    // and streams being measured. Held until the report is made.
    let rss_cold = w.member_pid.map(rss_kib).transpose()?;
    let mut warm_up = Vec::new();
    for ch in &channels {
        let key = Bytes::from(format!("{}warm-up", w.key_prefix));
        warm_up.push(open_stream(ch.clone(), vec![(key, Bytes::new())]).await?.0);
    }
    let rss_before = w.member_pid.map(rss_kib).transpose()?;
    // Watchers round-robin over streams; every stream's creates go out concurrently.
    let mut per_stream: Vec<Vec<(Bytes, Bytes)>> = vec![Vec::new(); w.streams];
    for i in 0..w.watchers {
        let key = watch_key(w, i);
        let end = if w.prefix_watches {
            Bytes::from(raftkv_client::client::prefix_range_end(&key))
        } else {
            Bytes::new()
        };
        per_stream[i % w.streams].push((key, end));
    }
    let mut opening = Vec::new();
    for (i, keys) in per_stream.into_iter().enumerate() {
        let ch = channels[i % channels.len()].clone();
        opening.push(tokio::spawn(open_stream(ch, keys)));
    }
    let mut streams = Vec::new();
    let mut refused = 0;
    for o in opening {
        let (s, c) = o.await.context("a stream task panicked")??;
        refused += c;
        streams.push(s);
    }
    // The stalled streams: opened and created like the others, then never read again
    // (kept alive until the report is made).
    let mut stalled = Vec::new();
    if w.stalled_streams > 0 {
        let ch = connect(&urls[0], DIAL_TIMEOUT).await?;
        let prefix = Bytes::from(w.key_prefix.clone());
        let end = Bytes::from(raftkv_client::client::prefix_range_end(
            w.key_prefix.as_bytes(),
        ));
        for _ in 0..w.stalled_streams {
            let (s, c) = open_stream(ch.clone(), vec![(prefix.clone(), end.clone())]).await?;
            refused += c;
            stalled.push(s);
        }
    }
    let rss_idle = w.member_pid.map(rss_kib).transpose()?;

    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(read_stream(s, epoch, delivered.clone(), stop.clone())))
        .collect();

    let distinct = if w.distinct_keys { w.watchers } else { 1 };
    let keys: Arc<Vec<Bytes>> = Arc::new((0..distinct).map(|i| watch_key(w, i)).collect());
    let writer_ch = connect(&urls[0], DIAL_TIMEOUT).await?;
    let ticks = clock_ticks();
    let member_pid = w.member_pid.map(|p| p.to_string());
    let cpu = move || -> Result<(Option<f64>, f64)> {
        let member = member_pid.as_deref().map(|p| cpu_s(p, ticks)).transpose()?;
        Ok((member, cpu_s("self", ticks)?))
    };
    let cpu_start = cpu()?;
    let start = Instant::now();
    let schedule = Arc::new(Schedule::new(args.stop_at(), args.rate));
    let writers: Vec<_> = (0..args.clients)
        .map(|c| {
            tokio::spawn(writer(
                KvClient::new(writer_ch.clone()),
                keys.clone(),
                epoch,
                schedule.clone(),
                c * distinct / args.clients,
                w.val_size,
                Duration::from_millis(args.request_timeout_ms),
            ))
        })
        .collect();
    let mut put_hist = report::new_histogram();
    let (mut puts, mut put_errors) = (0, 0);
    let mut per_key = vec![0u64; distinct];
    for t in writers {
        let r = t.await.context("a writer panicked")?;
        put_hist.add(&r.hist).context("merging histograms")?;
        puts += r.ok;
        put_errors += r.errors;
        for (a, b) in per_key.iter_mut().zip(r.per_key) {
            *a += b;
        }
    }
    let write_phase = start.elapsed();
    let rss_end = w.member_pid.map(rss_kib).transpose()?;
    // Every watcher of a key gets each acknowledged put of it.
    let watchers_per_key = |k: usize| -> u64 {
        if w.distinct_keys {
            u64::from(k < w.watchers)
        } else {
            w.watchers as u64
        }
    };
    let expected: u64 = per_key
        .iter()
        .enumerate()
        .map(|(k, n)| n * watchers_per_key(k))
        .sum();
    // Let the watchers drain what was acknowledged, up to the limit.
    let drain_until = Instant::now() + DRAIN_LIMIT;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_end = cpu()?;
    let cpu_window = start.elapsed().as_secs_f64();
    let pct = |used: f64| used / cpu_window.max(1e-9) * 100.0;
    stop.store(true, Ordering::Relaxed);
    let mut hist = report::new_histogram();
    let (mut events, mut responses, mut canceled) = (0, 0, refused);
    let mut last_event = start;
    for r in readers {
        let r = r.await.context("a reader panicked")?;
        hist.add(&r.hist).context("merging histograms")?;
        events += r.events;
        responses += r.responses;
        canceled += r.canceled;
        if let Some(t) = r.last_event {
            last_event = last_event.max(t);
        }
    }
    let delivery_s = last_event
        .duration_since(start)
        .max(write_phase)
        .as_secs_f64();
    let per = |kib: u64, n: usize| kib as f64 * 1024.0 / n as f64;
    let grown = rss_before.zip(rss_idle).map(|(b, i)| i.saturating_sub(b));
    // Held open, unread, until every reader is done.
    drop(stalled);
    drop(warm_up);
    Ok(WatchReport {
        workload: "watch",
        endpoints: urls,
        watchers: w.watchers,
        streams: w.streams,
        distinct_keys: w.distinct_keys,
        prefix_watches: w.prefix_watches,
        writers: args.clients,
        rate: args.rate,
        elapsed_s: write_phase.as_secs_f64(),
        puts,
        put_errors,
        put_throughput: puts as f64 / write_phase.as_secs_f64().max(1e-9),
        put_latency: Latency::from_histogram(&put_hist),
        events_expected: expected,
        events_delivered: events,
        events_per_s: events as f64 / delivery_s.max(1e-9),
        event_responses: responses,
        event_latency: Latency::from_histogram(&hist),
        watches_canceled: canceled,
        rss_cold_kib: rss_cold,
        rss_before_kib: rss_before,
        rss_idle_kib: rss_idle,
        rss_bytes_per_watcher: grown.map(|g| per(g, w.watchers)),
        rss_bytes_per_stream: grown.map(|g| per(g, w.streams)),
        stalled_streams: w.stalled_streams,
        rss_end_kib: rss_end,
        cpu_window_s: cpu_window,
        member_cpu_pct: cpu_start.0.zip(cpu_end.0).map(|(a, b)| pct(b - a)),
        client_cpu_pct: Some(pct(cpu_end.1 - cpu_start.1)),
    })
}

impl WatchReport {
    pub fn to_text(&self) -> String {
        let (p, e) = (&self.put_latency, &self.event_latency);
        let mut s = format!(
            "Summary (watch; {} watchers on {} over {} streams, {} writers, rate {}):\n  \
             Puts ok:      {} ({} errors) in {:.3} s, {:.1} puts/s, p50 {:.3} ms p99 {:.3} ms\n  \
             Events:       {} of {} delivered, {:.1} events/s, in {} responses\n  \
             put->event:   p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n  \
             Canceled:     {}\n",
            self.watchers,
            match (self.distinct_keys, self.prefix_watches) {
                (true, true) => "distinct prefixes",
                (true, false) => "distinct keys",
                (false, true) => "one prefix",
                (false, false) => "one key",
            },
            self.streams,
            self.writers,
            if self.rate > 0.0 {
                format!("{}/s", self.rate)
            } else {
                "unlimited".into()
            },
            self.puts,
            self.put_errors,
            self.elapsed_s,
            self.put_throughput,
            p.p50_ms,
            p.p99_ms,
            self.events_delivered,
            self.events_expected,
            self.events_per_s,
            self.event_responses,
            e.p50_ms,
            e.p90_ms,
            e.p99_ms,
            e.max_ms,
            self.watches_canceled,
        );
        if let (Some(c), Some(b), Some(i), Some(w), Some(st)) = (
            self.rss_cold_kib,
            self.rss_before_kib,
            self.rss_idle_kib,
            self.rss_bytes_per_watcher,
            self.rss_bytes_per_stream,
        ) {
            s.push_str(&format!(
                "  Member RSS:   {c} KiB cold, {b} KiB after the connections and warm-up watches, {i} KiB with the idle watches: {w:.0} B per watcher, {st:.0} B per stream\n"
            ));
        }
        let pct = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.0} %"));
        s.push_str(&format!(
            "  CPU:          member {}, client {} of one core over {:.1} s\n",
            pct(self.member_cpu_pct),
            pct(self.client_cpu_pct),
            self.cpu_window_s
        ));
        if let (Some(i), Some(e)) = (self.rss_idle_kib, self.rss_end_kib) {
            s.push_str(&format!(
                "  Member RSS:   {e} KiB when the writers stopped ({:+} KiB over idle; {} stalled streams)\n",
                e as i64 - i as i64,
                self.stalled_streams
            ));
        }
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_carries_its_send_time() {
        let epoch = Instant::now() - Duration::from_secs(3);
        let v = stamped_value(epoch, 32);
        assert_eq!(v.len(), 32);
        let at = sent_at(epoch, u64::from_le_bytes(v[..8].try_into().unwrap()));
        assert!(at <= Instant::now() && at >= epoch + Duration::from_secs(3));
        // Shorter than a stamp: still a stamp.
        assert_eq!(stamped_value(epoch, 2).len(), 8);
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let ticks = clock_ticks();
        let before = cpu_s("self", ticks).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // Spin until the kernel has charged at least two ticks (or give up at the deadline).
        let mut x = 0u64;
        while cpu_s("self", ticks).unwrap() < before + 2.0 / ticks && Instant::now() < deadline {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(cpu_s("self", ticks).unwrap() >= before + 2.0 / ticks);
        assert!(cpu_s("999999999", ticks).is_err());
    }

    #[test]
    fn watchers_share_one_key_unless_asked_for_distinct_ones() {
        let mut w = WatchArgs {
            watchers: 3,
            streams: 1,
            distinct_keys: false,
            prefix_watches: false,
            val_size: 16,
            key_prefix: "w/".into(),
            member_pid: None,
            stalled_streams: 0,
        };
        assert_eq!(watch_key(&w, 0), watch_key(&w, 2));
        w.distinct_keys = true;
        assert_ne!(watch_key(&w, 0), watch_key(&w, 2));
    }
}
