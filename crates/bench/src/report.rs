//! The result of a run: counts, latency percentiles from an HDR histogram, errors by gRPC
//! code, printed as text for people or JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs up to this many (60 s) at 3 significant
/// digits; anything slower is clamped to the top so a stuck request still shows as max.
const MAX_LATENCY_US: u64 = 60_000_000;

/// A fresh latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Records one request's latency, clamped into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
    hist.saturating_record(us);
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub stddev_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises a histogram of microsecond latencies (all zero when it is empty).
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: f64| us / 1000.0;
        if h.is_empty() {
            return Self {
                mean_ms: 0.0,
                stddev_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Self {
            mean_ms: ms(h.mean()),
            stddev_ms: ms(h.stdev()),
            p50_ms: ms(h.value_at_quantile(0.50) as f64),
            p90_ms: ms(h.value_at_quantile(0.90) as f64),
            p99_ms: ms(h.value_at_quantile(0.99) as f64),
            p999_ms: ms(h.value_at_quantile(0.999) as f64),
            max_ms: ms(h.max() as f64),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub workload: String,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub ok: u64,
    pub errors: u64,
    /// Failed requests per gRPC status code name (e.g. "Unavailable").
    pub errors_by_code: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// Successful requests per second of wall time.
    pub throughput: f64,
    pub latency: Latency,
}

impl Report {
    /// Builds the report from merged counts.
    pub fn new(
        workload: &str,
        endpoints: Vec<String>,
        conns: usize,
        clients: usize,
        hist: &Histogram<u64>,
        errors_by_code: BTreeMap<String, u64>,
        elapsed: Duration,
    ) -> Self {
        let ok = hist.len();
        let errors = errors_by_code.values().sum();
        let elapsed_s = elapsed.as_secs_f64();
        let throughput = if elapsed_s > 0.0 {
            ok as f64 / elapsed_s
        } else {
            0.0
        };
        Self {
            workload: workload.to_string(),
            endpoints,
            conns,
            clients,
            ok,
            errors,
            errors_by_code,
            elapsed_s,
            throughput,
            latency: Latency::from_histogram(hist),
        }
    }

    /// Human-readable report.
    pub fn to_text(&self) -> String {
        let l = &self.latency;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Summary ({}; {} clients over {} conns to {}):",
            self.workload,
            self.clients,
            self.conns,
            self.endpoints.join(",")
        );
        let _ = writeln!(s, "  Requests ok:  {}", self.ok);
        let _ = writeln!(s, "  Errors:       {}", self.errors);
        let _ = writeln!(s, "  Elapsed:      {:.3} s", self.elapsed_s);
        let _ = writeln!(s, "  Throughput:   {:.1} req/s", self.throughput);
        let _ = writeln!(s, "Latency (ms):");
        let _ = writeln!(s, "  mean {:.3}  stddev {:.3}", l.mean_ms, l.stddev_ms);
        let _ = writeln!(
            s,
            "  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if !self.errors_by_code.is_empty() {
            let _ = writeln!(s, "Errors by code:");
            for (code, n) in &self.errors_by_code {
                let _ = writeln!(s, "  {code}: {n}");
            }
        }
        s
    }

    /// Machine-readable report (one JSON object).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut h = new_histogram();
        for ms in 1..=100u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let mut errs = BTreeMap::new();
        errs.insert("Unavailable".to_string(), 3);
        errs.insert("DeadlineExceeded".to_string(), 2);
        Report::new(
            "put",
            vec!["http://127.0.0.1:2379".into()],
            1,
            4,
            &h,
            errs,
            Duration::from_secs(2),
        )
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let r = sample();
        assert_eq!(r.ok, 100);
        assert_eq!(r.errors, 5);
        assert!((r.throughput - 50.0).abs() < 1e-9);
        // 3 significant digits: within 0.1% of the exact value.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(r.latency.p50_ms, 50.0), "{}", r.latency.p50_ms);
        assert!(close(r.latency.p90_ms, 90.0), "{}", r.latency.p90_ms);
        assert!(close(r.latency.p99_ms, 99.0), "{}", r.latency.p99_ms);
        assert!(close(r.latency.max_ms, 100.0), "{}", r.latency.max_ms);
        assert!(close(r.latency.mean_ms, 50.5), "{}", r.latency.mean_ms);
    }

    #[test]
    fn latency_beyond_the_range_is_clamped_not_lost() {
        let mut h = new_histogram();
        record(&mut h, Duration::from_secs(3600));
        record(&mut h, Duration::ZERO);
        assert_eq!(h.len(), 2);
        // Clamped to 60 s; HDR reports the top of that bucket (3 significant digits).
        let max = Latency::from_histogram(&h).max_ms;
        assert!((60_000.0..=60_000.0 * 1.001).contains(&max), "{max}");
    }

    #[test]
    fn empty_run_reports_zeros() {
        let r = Report::new(
            "range",
            vec![],
            1,
            1,
            &new_histogram(),
            BTreeMap::new(),
            Duration::ZERO,
        );
        assert_eq!(r.ok, 0);
        assert_eq!(r.throughput, 0.0);
        assert_eq!(r.latency.max_ms, 0.0);
    }

    #[test]
    fn json_has_the_documented_shape_and_round_trips() {
        let r = sample();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for field in [
            "workload",
            "endpoints",
            "conns",
            "clients",
            "ok",
            "errors",
            "errors_by_code",
            "elapsed_s",
            "throughput",
            "latency",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        for field in [
            "mean_ms",
            "stddev_ms",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
        ] {
            assert!(v["latency"].get(field).is_some(), "missing latency.{field}");
        }
        assert_eq!(v["errors_by_code"]["Unavailable"], 3);
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn text_lists_percentiles_and_error_codes() {
        let t = sample().to_text();
        for needle in [
            "Throughput:",
            "p50",
            "p99.9",
            "max",
            "Unavailable: 3",
            "DeadlineExceeded: 2",
        ] {
            assert!(t.contains(needle), "missing {needle} in\n{t}");
        }
    }
}
