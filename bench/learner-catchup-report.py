#!/usr/bin/env python3
"""The report of bench/learner-catchup.sh: reads <out>/<sys>.env (the script's measurements)
and <out>/<sys>-writer.trace (`raftkv-bench --trace`: one line per finished write) and prints
a markdown table, both systems side by side with raftkv/etcd ratios.

Usage: learner-catchup-report.py OUT_DIR "etcd raftkv" "the command line"
"""

import os
import sys


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


def read_trace(path):
    oks, errs = [], []
    if not os.path.exists(path):
        return oks, errs
    for line in open(path):
        parts = line.split()
        if len(parts) >= 2:
            (oks if parts[1] == "ok" else errs).append(float(parts[0]))
    oks.sort()
    return oks, errs


def longest_gap(oks, a, b):
    """Longest time between consecutive acknowledged writes, over the gaps that overlap
    [a, b] (a gap that began before the phase and ended in it counts: no write was
    acknowledged during that part of the phase)."""
    best = 0.0
    for x, y in zip(oks, oks[1:]):
        if y > a and x < b:
            best = max(best, y - x)
    return best


def main():
    out, systems, command = sys.argv[1], sys.argv[2].split(), sys.argv[3]
    rows = []  # (label, {sys: value}, format, ratio?)
    data = {}
    for s in systems:
        env_path = os.path.join(out, f"{s}.env")
        if not os.path.exists(env_path):
            continue
        env = read_env(env_path)
        oks, errs = read_trace(os.path.join(out, f"{s}-writer.trace"))
        f = lambda k: float(env[k]) if k in env else None
        d = {}
        d["fill_s"] = f("fill_s")
        d["db_size_mib"] = f("db_size_mib")
        t_add, t_started, t_caught = f("t_add"), f("t_started"), f("t_caught")
        t_promote, t_promoted = f("t_promote"), f("t_promoted")
        if t_caught is not None:
            d["add_s"] = (f("t_added") - t_add) * 1000
            d["catchup_s"] = t_caught - t_add
            d["catchup_after_start_s"] = t_caught - t_started
        if t_promoted is not None:
            d["promote_ms"] = (t_promoted - t_promote) * 1000
            d["promote_refusals"] = f("promote_refusals")
        phases = {
            "before the add": (oks[0] if oks else 0, t_add),
            "add + learner start": (t_add, t_started),
            "catch-up": (t_started, t_caught),
            "promote": (t_promote, t_promoted),
            "whole change (add -> promoted)": (t_add, t_promoted),
        }
        for name, (a, b) in phases.items():
            if a is None or b is None:
                continue
            d[f"gap:{name}"] = longest_gap(oks, a, b) * 1000
            d[f"err:{name}"] = sum(1 for t in errs if a <= t <= b)
        d["acked"] = len(oks)
        d["errors_total"] = len(errs)
        d["learner_peak_rss_mib"] = f("learner_peak_rss_mib")
        d["leader_peak_rss_mib"] = f("leader_peak_rss_mib")
        d["learner_rss_end_mib"] = f("learner_rss_end_mib")
        d["learner_disk_mib"] = f("learner_snap_mib")
        d["hashkv"] = env.get("hashkv")
        d["hashkv_rev"] = env.get("hashkv_rev")
        data[s] = d

    notes = open(os.path.join(out, "notes.md")).read().strip()
    print(f"Command: `{command}`\n")
    print(notes + "\n")
    print(
        "Caught up = the first poll (every POLL_MS) where the learner's Status revision is at "
        "least the leader's, read just before it in the same poll. Gaps are between "
        "consecutive acknowledged writes of the steady writer (times of the answers); a phase "
        "counts every gap that overlaps it.\n"
    )
    cols = [s for s in systems if s in data]
    ratio = "etcd" in data and "raftkv" in data
    header = "| figure | " + " | ".join(cols) + (" | raftkv / etcd |" if ratio else " |")
    print(header)
    print("|" + "---|" * (len(cols) + 1 + (1 if ratio else 0)))

    def row(label, key, fmt, with_ratio=True):
        vals = [data[s].get(key) for s in cols]
        cells = ["—" if v is None else fmt.format(v) for v in vals]
        line = f"| {label} | " + " | ".join(cells)
        if ratio:
            e, r = data["etcd"].get(key), data["raftkv"].get(key)
            if with_ratio and e not in (None, 0) and r is not None:
                line += f" | {r / e:.2f}×"
            else:
                line += " | "
        print(line + " |")

    row("fill time (s)", "fill_s", "{:.0f}")
    row("store size after the fill (Status dbSize, MiB)", "db_size_mib", "{:.0f}")
    row("`member add --learner` answered (ms)", "add_s", "{:.0f}")
    row("**catch-up: add -> learner caught up (s)**", "catchup_s", "{:.1f}")
    row("  of which after the learner started (s)", "catchup_after_start_s", "{:.1f}")
    row("`member promote` latency (ms)", "promote_ms", "{:.0f}")
    row("  promote refused as not in sync first (times)", "promote_refusals", "{:.0f}", False)
    for name in [
        "before the add",
        "add + learner start",
        "catch-up",
        "promote",
        "whole change (add -> promoted)",
    ]:
        row(f"longest write gap, {name} (ms)", f"gap:{name}", "{:.0f}")
        row(f"write errors, {name}", f"err:{name}", "{:.0f}", False)
    row("writes acknowledged / errors in the whole run", "acked", "{:.0f}", False)
    row("learner peak RSS (VmHWM, MiB)", "learner_peak_rss_mib", "{:.0f}")
    row("leader peak RSS (VmHWM, MiB)", "leader_peak_rss_mib", "{:.0f}")
    row("learner RSS at the end (VmRSS, MiB)", "learner_rss_end_mib", "{:.0f}")
    row("learner data dir after catch-up (MiB)", "learner_disk_mib", "{:.0f}")
    for s in cols:
        d = data[s]
        if d.get("promote_ms") is None:
            print(f"\n**{s}: the run did not finish** (no promote; see the logs of the run).")
        if d.get("hashkv"):
            hashes = d["hashkv"].split()
            same = len(set(hashes)) == 1 and "none" not in hashes
            print(
                f"\n{s}: HashKV of the 4 members at revision {d['hashkv_rev']}: "
                f"{'all equal' if same else 'DIFFER'} ({d['hashkv']}); "
                f"{d['acked']} writes acknowledged, {d['errors_total']} errors."
            )


main()
