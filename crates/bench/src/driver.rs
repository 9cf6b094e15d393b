//! Runs a load workload: opens the connections, drives the clients, collects the report.
//!
//! Each client is one task issuing one request at a time (closed loop, like etcd's
//! benchmark); with --rate the requests are spread on a fixed global schedule instead.
//! Every client keeps its own histogram so the hot path shares nothing but two atomics.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use proto::etcdserverpb::{
    kv_client::KvClient, request_op, CompactionRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use raftkv_client::endpoint::{connect, lazy_channel_tls};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the auth token (`--user`) to every request, as etcd's clients do.
#[derive(Clone)]
pub struct WithToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            r.metadata_mut().insert("token", token.clone());
        }
        Ok(r)
    }
}

/// The KV stub every load client uses.
type Kv = KvClient<InterceptedService<Channel, WithToken>>;

/// The connections of a run: TLS when any TLS flag is given or an endpoint is https://
/// (dialled, and checked with a Status call, before the clock starts), plain otherwise.
async fn open_channels(args: &BenchArgs, urls: &[String]) -> Result<Vec<Channel>> {
    let tls_options = args.tls();
    let tls = if tls_options.any() || urls.iter().any(|u| u.starts_with("https://")) {
        Some(tls_options.client_config()?)
    } else {
        None
    };
    let mut channels = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let url = &urls[i % urls.len()];
        let channel = match &tls {
            None => connect(url, DIAL_TIMEOUT).await?,
            Some(config) => {
                let address = url.strip_prefix("http://").unwrap_or(url);
                let channel = lazy_channel_tls(address, DIAL_TIMEOUT, Some(config))?;
                proto::etcdserverpb::maintenance_client::MaintenanceClient::new(channel.clone())
                    .status(proto::etcdserverpb::StatusRequest {})
                    .await
                    .with_context(|| format!("cannot reach {url} over TLS"))?;
                channel
            }
        };
        channels.push(channel);
    }
    Ok(channels)
}

/// `--user name:password`: a token from Authenticate, or none.
async fn token(args: &BenchArgs, channel: &Channel) -> Result<WithToken> {
    let Some(user) = &args.user else {
        return Ok(WithToken(None));
    };
    let (name, password) = user
        .split_once(':')
        .context("--user must be name:password")?;
    let response = proto::etcdserverpb::auth_client::AuthClient::new(channel.clone())
        .authenticate(proto::etcdserverpb::AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("authenticating as {name}: {}", s.message()))?;
    let value = MetadataValue::try_from(response.into_inner().token.as_str())
        .context("the server's token is not valid metadata")?;
    Ok(WithToken(Some(value)))
}

use crate::args::{BenchArgs, Consistency, StopAt, Workload};
use crate::keys::{make_value, KeyPicker};
use crate::report::{self, Report};

/// Dial limit of the load's connections (opened before the clock starts).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What one client sends.
enum Job {
    Put {
        keys: KeyPicker,
        value: Bytes,
    },
    Range {
        key: Bytes,
        end: Bytes,
        serializable: bool,
    },
    TxnMixed {
        keys: KeyPicker,
        value: Bytes,
        read_ratio: f64,
        serializable: bool,
    },
}

impl Job {
    fn new(workload: &Workload, client: u64) -> Option<Self> {
        Some(match workload {
            Workload::Put { keys, .. } => Job::Put {
                keys: KeyPicker::new(keys, client),
                value: make_value(keys.val_size),
            },
            Workload::Range {
                key,
                end,
                consistency,
            } => Job::Range {
                key: Bytes::from(key.clone().into_bytes()),
                end: end
                    .clone()
                    .map(|e| Bytes::from(e.into_bytes()))
                    .unwrap_or_default(),
                serializable: *consistency == Consistency::Serializable,
            },
            Workload::TxnMixed {
                keys,
                read_ratio,
                consistency,
            } => Job::TxnMixed {
                keys: KeyPicker::new(keys, client),
                value: make_value(keys.val_size),
                read_ratio: *read_ratio,
                serializable: *consistency == Consistency::Serializable,
            },
            Workload::Failover { .. }
            | Workload::CompareReport { .. }
            | Workload::Watch(_)
            | Workload::Lease(_) => return None,
        })
    }

    async fn issue(
        &mut self,
        kv: &mut Kv,
        rng: &mut SmallRng,
        slot: u64,
    ) -> Result<(), tonic::Status> {
        match self {
            Job::Put { keys, value } => {
                let req = PutRequest {
                    key: keys.next_key(rng, slot),
                    value: value.clone(),
                    ..Default::default()
                };
                kv.put(req).await.map(drop)
            }
            Job::Range {
                key,
                end,
                serializable,
            } => {
                let req = RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    serializable: *serializable,
                    ..Default::default()
                };
                kv.range(req).await.map(drop)
            }
            Job::TxnMixed {
                keys,
                value,
                read_ratio,
                serializable,
            } => {
                let key = keys.next_key(rng, slot);
                let op = if rng.gen_bool(*read_ratio) {
                    request_op::Request::RequestRange(RangeRequest {
                        key,
                        serializable: *serializable,
                        ..Default::default()
                    })
                } else {
                    request_op::Request::RequestPut(PutRequest {
                        key,
                        value: value.clone(),
                        ..Default::default()
                    })
                };
                let req = TxnRequest {
                    success: vec![RequestOp { request: Some(op) }],
                    ..Default::default()
                };
                kv.txn(req).await.map(drop)
            }
        }
    }
}

/// State shared by all clients of one run.
struct Shared {
    /// Request slots handed out so far (for --total and the --rate schedule).
    issued: AtomicU64,
    /// Requests finished, ok or not (for the progress bar).
    done: AtomicU64,
    start: Instant,
    stop: StopAt,
    rate: f64,
    timeout: Duration,
    /// `--trace`: one line per finished request, flushed per line so a writer stopped by a
    /// signal leaves a complete trace.
    trace: Option<Mutex<LineWriter<File>>>,
}

impl Shared {
    /// The next request slot, or None when the run is over.
    fn next_slot(&self) -> Option<u64> {
        let slot = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.stop {
            StopAt::Total(n) if slot >= n => None,
            StopAt::Duration(d) if self.start.elapsed() >= d => None,
            _ => Some(slot),
        }
    }

    /// Append a request's outcome to the `--trace` file, stamped with the wall clock now
    /// (the other tools of a run, and the script reading the trace, use the same clock).
    fn trace(&self, outcome: &Result<(), tonic::Status>) {
        let Some(trace) = &self.trace else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut w = trace.lock().unwrap_or_else(|p| p.into_inner());
        // A failed trace write shows as a short file; the run itself goes on.
        let _ = match outcome {
            Ok(()) => writeln!(w, "{now:.6} ok"),
            Err(status) => writeln!(w, "{now:.6} err {:?}", status.code()),
        };
    }

    /// When slot `n` may start under --rate (None = immediately).
    fn scheduled(&self, slot: u64) -> Option<Instant> {
        (self.rate > 0.0).then(|| self.start + Duration::from_secs_f64(slot as f64 / self.rate))
    }
}

struct ClientResult {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

async fn client_loop(mut kv: Kv, mut job: Job, shared: Arc<Shared>, seed: u64) -> ClientResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut hist = report::new_histogram();
    let mut errors = BTreeMap::new();
    while let Some(slot) = shared.next_slot() {
        if let Some(at) = shared.scheduled(slot) {
            if let StopAt::Duration(d) = shared.stop {
                if at >= shared.start + d {
                    break;
                }
            }
            tokio::time::sleep_until(at.into()).await;
        }
        let began = Instant::now();
        let outcome =
            match tokio::time::timeout(shared.timeout, job.issue(&mut kv, &mut rng, slot)).await {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded(
                    "client-side request timeout",
                )),
            };
        shared.trace(&outcome);
        match outcome {
            Ok(()) => report::record(&mut hist, began.elapsed()),
            Err(status) => *errors.entry(format!("{:?}", status.code())).or_insert(0) += 1,
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    ClientResult { hist, errors }
}

/// Compacts at the current revision every `every`, until `stop` is set. Keeps the store's
/// history bounded during long put loads, as an operator's auto-compaction would.
async fn compactor(mut kv: Kv, every: Duration, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let probe = RangeRequest {
            key: Bytes::from_static(b"\0"),
            limit: 1,
            ..Default::default()
        };
        let rev = match kv.range(probe).await {
            Ok(r) => r.into_inner().header.map(|h| h.revision).unwrap_or(0),
            Err(_) => 0,
        };
        if rev > 0 {
            if let Err(e) = kv
                .compact(CompactionRequest {
                    revision: rev,
                    physical: false,
                })
                .await
            {
                if !warned {
                    eprintln!("compaction at revision {rev} failed: {e}");
                    warned = true;
                }
            }
        }
    }
}

fn progress_bar(args: &BenchArgs) -> ProgressBar {
    if args.no_progress {
        return ProgressBar::hidden();
    }
    match args.stop_at() {
        StopAt::Total(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} req  {per_sec}  eta {eta}")
                .expect("static template"),
        ),
        StopAt::Duration(d) => ProgressBar::new(d.as_millis() as u64)
            .with_style(
                ProgressStyle::with_template("{bar:40} {elapsed}/{msg}  {prefix} req")
                    .expect("static template"),
            )
            .with_message(format!("{}s", d.as_secs_f64())),
    }
}

/// Runs the load workload in `args` and returns its report.
pub async fn run_load(args: &BenchArgs) -> Result<Report> {
    let urls = args.endpoint_urls();
    let channels = open_channels(args, &urls).await?;
    let token = token(args, &channels[0]).await?;
    let trace = match &args.trace {
        Some(path) => Some(Mutex::new(LineWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ))),
        None => None,
    };
    let start = Instant::now();
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        start,
        stop: args.stop_at(),
        rate: args.rate,
        timeout: Duration::from_millis(args.request_timeout_ms),
        trace,
    });
    let stop_compactor = Arc::new(AtomicBool::new(false));
    if let Workload::Put {
        compact_interval, ..
    } = &args.workload
    {
        if *compact_interval > 0.0 {
            let kv = KvClient::with_interceptor(channels[0].clone(), token.clone());
            tokio::spawn(compactor(
                kv,
                Duration::from_secs_f64(*compact_interval),
                stop_compactor.clone(),
            ));
        }
    }
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let kv = KvClient::with_interceptor(channels[c % channels.len()].clone(), token.clone());
        let job = Job::new(&args.workload, c as u64).context("not a load workload")?;
        tasks.push(tokio::spawn(client_loop(
            kv,
            job,
            shared.clone(),
            0x5eed ^ c as u64,
        )));
    }

    let bar = progress_bar(args);
    let ticker = {
        let (bar, shared) = (bar.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                let done = shared.done.load(Ordering::Relaxed);
                match shared.stop {
                    StopAt::Total(_) => bar.set_position(done),
                    StopAt::Duration(_) => {
                        bar.set_position(shared.start.elapsed().as_millis() as u64);
                        bar.set_prefix(done.to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut hist = report::new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let r = t.await.context("a client task panicked")?;
        hist.add(&r.hist).context("merging histograms")?;
        for (code, n) in r.errors {
            *errors.entry(code).or_insert(0) += n;
        }
    }
    let elapsed = start.elapsed();
    if let Some(trace) = &shared.trace {
        let mut w = trace.lock().unwrap_or_else(|p| p.into_inner());
        w.flush().context("writing the --trace file")?;
    }
    ticker.abort();
    stop_compactor.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    Ok(Report::new(
        workload_name(&args.workload),
        urls,
        args.conns,
        args.clients,
        &hist,
        errors,
        elapsed,
    ))
}

/// The short name used in reports.
pub fn workload_name(w: &Workload) -> &'static str {
    match w {
        Workload::Put { .. } => "put",
        Workload::Range {
            consistency: Consistency::Linearizable,
            ..
        } => "range-l",
        Workload::Range {
            consistency: Consistency::Serializable,
            ..
        } => "range-s",
        Workload::TxnMixed { .. } => "txn-mixed",
        Workload::Failover { .. } => "failover",
        Workload::Watch(_) => "watch",
        Workload::Lease(_) => "lease",
        Workload::CompareReport { .. } => "compare-report",
    }
}
