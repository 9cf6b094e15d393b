//! Turns the result directory of `bench/compare.sh` into the side-by-side Markdown table and
//! the latency-vs-throughput SVG chart.
//!
//! Layout of the directory (written by the script):
//! * `load/<system>-<case>-r<round>.json`: one [`Report`] per run;
//! * `perf-<system>-<load>.txt`: output of `etcdctl check perf`;
//! * `failover-<system>.jsonl`: one failover trial per line;
//! * `rss-<system>.txt`: `<member> <kB>` per line;
//! * `notes.md`: free text from the script (machine, load, scaling), copied verbatim.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::report::Report;

/// The two systems, in table order.
pub const SYSTEMS: [&str; 2] = ["etcd", "raftkv"];

/// Median of `v` (mean of the middle two for even lengths); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// The `q` quantile (nearest rank) of `v`; None when empty.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

/// Median figures of one (system, case) over its rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseStats {
    pub rounds: usize,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

impl CaseStats {
    /// Medians over the rounds; errors are summed.
    pub fn from_reports(reports: &[Report]) -> Option<Self> {
        let col = |f: fn(&Report) -> f64| median(&reports.iter().map(f).collect::<Vec<_>>());
        Some(Self {
            rounds: reports.len(),
            throughput: col(|r| r.throughput)?,
            p50_ms: col(|r| r.latency.p50_ms)?,
            p99_ms: col(|r| r.latency.p99_ms)?,
            max_ms: col(|r| r.latency.max_ms)?,
            errors: reports.iter().map(|r| r.errors).sum(),
        })
    }
}

/// Splits `<system>-<case>-r<round>` into (system, case).
fn parse_load_name(stem: &str) -> Option<(String, String)> {
    let (rest, round) = stem.rsplit_once("-r")?;
    round.parse::<u32>().ok()?;
    let (system, case) = rest.split_once('-')?;
    Some((system.to_string(), case.to_string()))
}

/// All load reports, grouped by case then system.
fn load_reports(dir: &Path) -> Result<BTreeMap<String, BTreeMap<String, Vec<Report>>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<Report>>> = BTreeMap::new();
    let load = dir.join("load");
    let Ok(entries) = std::fs::read_dir(&load) else {
        return Ok(out);
    };
    for e in entries {
        let path = e?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some((system, case)) = parse_load_name(stem) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        // A run that failed leaves an empty or partial file; it is reported as missing.
        let Ok(report) = serde_json::from_str::<Report>(&text) else {
            continue;
        };
        out.entry(case)
            .or_default()
            .entry(system)
            .or_default()
            .push(report);
    }
    Ok(out)
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn ratio(num: f64, den: f64) -> String {
    if den > 0.0 {
        format!("{:.2}×", num / den)
    } else {
        "–".into()
    }
}

/// The order of cases in the table (others follow alphabetically).
const CASE_ORDER: [&str; 7] = [
    "put-c1",
    "put-c10",
    "put-c100",
    "put-c1000",
    "range-l",
    "range-s",
    "txn-mixed",
];

fn ordered_cases<'a>(cases: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = cases.cloned().collect();
    v.sort_by_key(|c| {
        (
            CASE_ORDER.iter().position(|o| o == c).unwrap_or(usize::MAX),
            c.clone(),
        )
    });
    v
}

/// Writes the Markdown report and the SVG chart.
pub fn write_report(dir: &Path, markdown: &Path, svg: &Path, command: &str) -> Result<()> {
    let reports = load_reports(dir)?;
    let stats: BTreeMap<String, BTreeMap<String, CaseStats>> = reports
        .iter()
        .map(|(case, by_sys)| {
            let s = by_sys
                .iter()
                .filter_map(|(sys, rs)| Some((sys.clone(), CaseStats::from_reports(rs)?)))
                .collect();
            (case.clone(), s)
        })
        .collect();
    let md = render_markdown(dir, &stats, command, svg)?;
    std::fs::write(markdown, md).with_context(|| format!("writing {}", markdown.display()))?;
    std::fs::write(svg, render_svg(&stats))
        .with_context(|| format!("writing {}", svg.display()))?;
    Ok(())
}

fn render_markdown(
    dir: &Path,
    stats: &BTreeMap<String, BTreeMap<String, CaseStats>>,
    command: &str,
    svg: &Path,
) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "# raftkv vs etcd, side by side\n");
    let _ = writeln!(s, "Produced by `{command}`. Medians over the rounds (runs alternate etcd, raftkv, etcd, raftkv, … to cancel drift).");
    let _ = writeln!(s, "Ratios are raftkv / etcd: above 1× is better for throughput, below 1× is better for latency.\n");
    if let Ok(notes) = std::fs::read_to_string(dir.join("notes.md")) {
        let _ = writeln!(s, "{}\n", notes.trim());
    }
    let _ = writeln!(s, "## Load\n");
    let _ = writeln!(s, "| case | rounds | etcd req/s | raftkv req/s | ratio | etcd p50 ms | raftkv p50 ms | ratio | etcd p99 ms | raftkv p99 ms | ratio | etcd max ms | raftkv max ms | errors etcd/raftkv |");
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let empty = CaseStats::default();
    for case in ordered_cases(stats.keys()) {
        let e = stats[&case].get("etcd").unwrap_or(&empty);
        let r = stats[&case].get("raftkv").unwrap_or(&empty);
        let _ = writeln!(
            s,
            "| {case} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            e.rounds,
            r.rounds,
            fmt_num(e.throughput),
            fmt_num(r.throughput),
            ratio(r.throughput, e.throughput),
            fmt_num(e.p50_ms),
            fmt_num(r.p50_ms),
            ratio(r.p50_ms, e.p50_ms),
            fmt_num(e.p99_ms),
            fmt_num(r.p99_ms),
            ratio(r.p99_ms, e.p99_ms),
            fmt_num(e.max_ms),
            fmt_num(r.max_ms),
            e.errors,
            r.errors
        );
    }
    let _ = writeln!(
        s,
        "\nChart: `{}` (p50 and p99 latency against throughput for the put sweep).\n",
        svg.display()
    );

    let _ = writeln!(s, "## etcdctl check perf\n");
    for load in ["l", "xl"] {
        for sys in SYSTEMS {
            let path = dir.join(format!("perf-{sys}-{load}.txt"));
            let lines: Vec<String> = std::fs::read_to_string(&path)
                .map(|t| {
                    t.lines()
                        .filter(|l| {
                            ["PASS", "FAIL", "too ", "Error", "CPU"]
                                .iter()
                                .any(|w| l.contains(w))
                        })
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_else(|_| vec!["(not run)".into()]);
            let _ = writeln!(s, "- `--load={load}` against **{sys}**:");
            for l in lines {
                let _ = writeln!(s, "  - {}", l.trim());
            }
        }
    }

    let _ = writeln!(
        s,
        "\n## Leader failover (SIGKILL of the leader → first successful write)\n"
    );
    let _ = writeln!(s, "| system | trials | p50 ms | p99 ms | max ms |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for sys in SYSTEMS {
        let ms = read_failover(&dir.join(format!("failover-{sys}.jsonl")));
        let q = |p: f64| quantile(&ms, p).map(fmt_num).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {sys} | {} | {} | {} | {} |",
            ms.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }

    let _ = writeln!(
        s,
        "\n## Resident memory after the put load with compaction\n"
    );
    let _ = writeln!(s, "| system | member RSS (MiB) | max |");
    let _ = writeln!(s, "|---|---|---|");
    let mut max_rss = BTreeMap::new();
    for sys in SYSTEMS {
        let rss = read_rss(&dir.join(format!("rss-{sys}.txt")));
        let list = rss
            .iter()
            .map(|(m, kb)| format!("{m}: {:.1}", *kb as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ");
        let max = rss.iter().map(|(_, kb)| *kb).max().unwrap_or(0);
        max_rss.insert(sys, max);
        let _ = writeln!(
            s,
            "| {sys} | {} | {:.1} |",
            if list.is_empty() { "–".into() } else { list },
            max as f64 / 1024.0
        );
    }
    let _ = writeln!(
        s,
        "\nRatio of the largest member, raftkv / etcd: {}",
        ratio(max_rss["raftkv"] as f64, max_rss["etcd"] as f64)
    );
    Ok(s)
}

fn read_failover(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("failover_ms").and_then(|x| x.as_f64()))
        .collect()
}

fn read_rss(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// One line of the chart: system, colour, points (throughput, latency, label), is-p99.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64, String)>, bool);

/// Latency (log scale) against throughput (log scale) for the put sweep of each system.
pub fn render_svg(stats: &BTreeMap<String, BTreeMap<String, CaseStats>>) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 460.0, 80.0, 170.0, 40.0, 60.0);
    let series: Vec<Series> = SYSTEMS
        .iter()
        .flat_map(|&sys| {
            let colour = if sys == "etcd" { "#1f77b4" } else { "#d62728" };
            let pts = |p99: bool| -> Vec<(f64, f64, String)> {
                ordered_cases(stats.keys())
                    .into_iter()
                    .filter(|c| c.starts_with("put-c"))
                    .filter_map(|c| {
                        let st = stats[&c].get(sys)?;
                        let lat = if p99 { st.p99_ms } else { st.p50_ms };
                        (st.throughput > 0.0 && lat > 0.0)
                            .then(|| (st.throughput, lat, c.trim_start_matches("put-").to_string()))
                    })
                    .collect()
            };
            [
                (sys, colour, pts(false), false),
                (sys, colour, pts(true), true),
            ]
        })
        .collect();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| (p.0, p.1)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Put latency vs throughput (3 members, loopback, fsync on)</text>"#,
        (w - right + left) / 2.0
    );
    if all.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no put results</text></svg>"#,
            w / 2.0,
            h / 2.0
        );
        return out;
    }
    let decade = |v: f64, up: bool| {
        if up {
            10f64.powf(v.log10().ceil())
        } else {
            10f64.powf(v.log10().floor())
        }
    };
    let (xmin, xmax) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (xmin, mut xmax, ymin, mut ymax) = (
        decade(xmin, false),
        decade(xmax, true),
        decade(ymin, false),
        decade(ymax, true),
    );
    if xmax <= xmin {
        xmax = xmin * 10.0;
    }
    if ymax <= ymin {
        ymax = ymin * 10.0;
    }
    let pw = w - left - right;
    let ph = h - top - bottom;
    let px = |x: f64| left + (x.log10() - xmin.log10()) / (xmax.log10() - xmin.log10()) * pw;
    let py = |y: f64| top + ph - (y.log10() - ymin.log10()) / (ymax.log10() - ymin.log10()) * ph;
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let mut x = xmin;
    while x <= xmax * 1.0001 {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            px(x),
            top + ph,
            top + ph + 16.0,
            x
        );
        x *= 10.0;
    }
    let mut y = ymin;
    while y <= ymax * 1.0001 {
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(y),
            left + pw,
            left - 6.0,
            py(y) + 4.0,
            y
        );
        y *= 10.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">throughput (req/s, log scale)</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency (ms, log scale)</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, (sys, colour, pts, p99)) in series.iter().enumerate() {
        let dash = if *p99 {
            ""
        } else {
            r#" stroke-dasharray="5,4""#
        };
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        for p in pts {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{colour}">{}</text>"#,
                px(p.0),
                py(p.1),
                px(p.0) + 5.0,
                py(p.1) - 5.0,
                p.2
            );
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        let lx = left + pw + 15.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{sys} {}</text>"#,
            lx + 30.0,
            lx + 36.0,
            ly + 4.0,
            if *p99 { "p99" } else { "p50" }
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="10">cN = N clients</text>"#,
        left + pw + 15.0,
        top + 100.0
    );
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;

    #[test]
    fn median_and_quantile() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), Some(20.0));
        assert_eq!(quantile(&v, 0.5), Some(10.0));
    }

    #[test]
    fn load_file_names_parse() {
        assert_eq!(
            parse_load_name("etcd-put-c1000-r2"),
            Some(("etcd".into(), "put-c1000".into()))
        );
        assert_eq!(
            parse_load_name("raftkv-range-l-r1"),
            Some(("raftkv".into(), "range-l".into()))
        );
        assert_eq!(parse_load_name("notes"), None);
    }

    fn report(tp: f64, p50: f64) -> Report {
        Report {
            workload: "put".into(),
            endpoints: vec![],
            conns: 1,
            clients: 1,
            ok: 1,
            errors: 1,
            errors_by_code: Default::default(),
            elapsed_s: 1.0,
            throughput: tp,
            latency: Latency {
                mean_ms: p50,
                stddev_ms: 0.0,
                p50_ms: p50,
                p90_ms: p50,
                p99_ms: p50 * 2.0,
                p999_ms: p50,
                max_ms: p50 * 3.0,
            },
        }
    }

    #[test]
    fn report_directory_becomes_table_and_chart() {
        let dir = std::env::temp_dir().join(format!("raftkv-bench-compare-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("load")).unwrap();
        let put = |name: &str, r: Report| {
            std::fs::write(dir.join("load").join(name), r.to_json()).unwrap()
        };
        put("etcd-put-c1-r1.json", report(100.0, 10.0));
        put("etcd-put-c1-r2.json", report(300.0, 20.0));
        put("raftkv-put-c1-r1.json", report(400.0, 5.0));
        put("raftkv-put-c1-r2.json", report(400.0, 5.0));
        put("raftkv-put-c1000-r1.json", report(9000.0, 50.0));
        std::fs::write(dir.join("load/etcd-put-c1000-r1.json"), "{ truncated").unwrap();
        std::fs::write(
            dir.join("failover-raftkv.jsonl"),
            "{\"failover_ms\": 900.0}\n{\"failover_ms\": 1200.0}\n",
        )
        .unwrap();
        std::fs::write(dir.join("rss-etcd.txt"), "e1 40960\ne2 51200\n").unwrap();
        std::fs::write(dir.join("rss-raftkv.txt"), "m1 10240\n").unwrap();
        std::fs::write(
            dir.join("perf-raftkv-xl.txt"),
            "noise\nPASS: Throughput is 15000 writes/s\nCPU (s, user+sys): etcdctl 61.2, members 80.1\n",
        )
        .unwrap();
        let (md, svg) = (dir.join("out.md"), dir.join("out.svg"));
        write_report(&dir, &md, &svg, "bench/compare.sh").unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        // etcd put-c1: median throughput (100+300)/2 = 200, raftkv 400 → 2.00×; p50 15 vs 5 → 0.33×.
        assert!(
            text.contains("| put-c1 | 2/2 | 200 | 400 | 2.00× | 15.0 | 5.00 | 0.33× |"),
            "{text}"
        );
        // The truncated etcd file is missing, not a crash.
        assert!(
            text.contains("| put-c1000 | 0/1 | 0.00 | 9000 | – |"),
            "{text}"
        );
        assert!(text.contains("PASS: Throughput is 15000 writes/s"));
        assert!(text.contains("CPU (s, user+sys): etcdctl 61.2, members 80.1"));
        assert!(!text.contains("noise"));
        assert!(
            text.contains("| raftkv | 2 | 900 | 1200 | 1200 |"),
            "{text}"
        );
        assert!(text.contains("raftkv / etcd: 0.20×"), "{text}");
        let chart = std::fs::read_to_string(&svg).unwrap();
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert_eq!(chart.matches("<polyline").count(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
