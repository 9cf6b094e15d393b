//! Human-readable witnesses of a violation: a text report and an SVG timeline.

use std::fmt::Write as _;
use std::path::Path;

use crate::checker::{Violation, WindowOp, WindowRole};

fn show_ret(op: &WindowOp) -> String {
    op.ret.map_or("+inf".to_string(), |r| r.to_string())
}

/// A text report of the violation window, one operation per line with its times.
pub fn text(v: &Violation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "key {:?}: not linearizable", v.key);
    let _ = writeln!(
        s,
        "The history of this key up to time {} ({} of {} ops; later ops dropped, ops still \
         pending then treated as indeterminate) is already not linearizable.",
        v.cut_time, v.ops_in_cut, v.ops_in_partition
    );
    let _ = writeln!(
        s,
        "Longest partial linearization: {} ops, leaving the state at {}.",
        v.linearized_count, v.state_after_prefix
    );
    if v.older_indeterminate_not_linearized > 0 {
        let _ = writeln!(
            s,
            "{} older indeterminate op(s) were left out; placing them does not help.",
            v.older_indeterminate_not_linearized
        );
    }
    let _ = writeln!(
        s,
        "Window (times are the history's clock; +inf = indeterminate):"
    );
    for op in &v.window {
        let tag = match op.role {
            WindowRole::LinearizedContext => "  linearized ",
            WindowRole::NotLinearized => "  stuck      ",
            WindowRole::Blocking => "  BLOCKING   ",
        };
        let _ = writeln!(
            s,
            "{tag} process {:>4}  [{:>8}, {:>8}]  {}",
            op.process,
            op.call,
            show_ret(op),
            op.description
        );
    }
    let _ = writeln!(
        s,
        "No order of the 'stuck' ops after the linearized prefix is legal; the BLOCKING op \
         completed before it could be placed."
    );
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG timeline of the window: one lane per process, one bar per operation from invocation
/// to completion (to the right edge when indeterminate).
pub fn svg(v: &Violation) -> String {
    const LANE: f64 = 34.0;
    const LEFT: f64 = 110.0;
    const WIDTH: f64 = 900.0;
    const TOP: f64 = 50.0;
    let mut processes: Vec<u64> = v.window.iter().map(|o| o.process).collect();
    processes.sort_unstable();
    processes.dedup();
    let t0 = v.window.iter().map(|o| o.call).min().unwrap_or(0);
    let t1 = v
        .window
        .iter()
        .map(|o| o.ret.unwrap_or(o.call))
        .chain([v.cut_time])
        .max();
    let t1 = t1.unwrap_or(t0).max(t0 + 1);
    let span = (t1 - t0) as f64;
    let x = |t: u64| LEFT + (t.saturating_sub(t0) as f64 / span) * (WIDTH - 40.0);
    let height = TOP + LANE * processes.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="monospace" font-size="11">"##,
        LEFT + WIDTH
    );
    let _ = writeln!(
        s,
        r##"<text x="8" y="18" font-size="13">key {}: not linearizable (cut at t={}, {} ops linearized, state {})</text>"##,
        escape(&format!("{:?}", v.key)),
        v.cut_time,
        v.linearized_count,
        escape(&v.state_after_prefix)
    );
    let _ = writeln!(
        s,
        r##"<text x="8" y="34" fill="#555">grey: linearized context; orange: stuck; red: blocking; dashed end: indeterminate</text>"##
    );
    for (lane, p) in processes.iter().enumerate() {
        let y = TOP + LANE * lane as f64;
        let _ = writeln!(
            s,
            r##"<text x="8" y="{}">process {p}</text><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>"##,
            y + 16.0,
            y + 26.0,
            LEFT + WIDTH,
            y + 26.0
        );
    }
    for op in &v.window {
        let lane = processes.iter().position(|p| *p == op.process).unwrap_or(0);
        let y = TOP + LANE * lane as f64;
        let (fill, stroke) = match op.role {
            WindowRole::LinearizedContext => ("#e0e0e0", "#888"),
            WindowRole::NotLinearized => ("#ffd8a8", "#e8590c"),
            WindowRole::Blocking => ("#ffa8a8", "#c92a2a"),
        };
        let x0 = x(op.call);
        let x1 = op.ret.map_or(LEFT + WIDTH - 4.0, x).max(x0 + 3.0);
        let dash = if op.ret.is_none() {
            r##" stroke-dasharray="4 3""##
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r##"<g><title>{}</title><rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="22" fill="{fill}" stroke="{stroke}"{dash}/><text x="{:.1}" y="{:.1}">{}</text></g>"##,
            escape(&format!(
                "[{}, {}] {}",
                op.call,
                show_ret(op),
                op.description
            )),
            y + 4.0,
            x1 - x0,
            x0 + 3.0,
            y + 19.0,
            escape(&op.description)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{}" fill="#555">t={t0}</text><text x="{}" y="{}" fill="#555" text-anchor="end">t={t1}</text>"##,
        height - 12.0,
        LEFT + WIDTH - 40.0,
        height - 12.0
    );
    s.push_str("</svg>\n");
    s
}

/// Writes the SVG timeline of `v` to `path`.
pub fn write_svg(v: &Violation, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, svg(v))
}
