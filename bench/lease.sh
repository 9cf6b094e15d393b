#!/usr/bin/env bash
# Side-by-side lease benchmark of etcd 3.4 and raftkv on this machine (`raftkv bench lease`).
#
# Starts a 3-member etcd and a 3-member raftkv on loopback with bench/compare.sh's flags (fsync
# on, --heartbeat-interval 100 --election-timeout 1000 --snapshot-count 100000; their own temp
# dirs and ports) and runs the same `raftkv-bench lease` against each, alternating etcd,
# raftkv, etcd, raftkv, ..., always at the leader's endpoint:
#   * memory: MEM_LEASES (100,000) leases granted on the fresh clusters, RSS of every member
#     before and after (bytes per live lease), grant and revoke throughput at that scale;
#   * keepalive-max: 10,000 leases kept alive over 100 streams (10 connections) as fast as the
#     members answer: keep-alives/s, p50/p99, and the leader's CPU per keep-alive (from /proc);
#     then grant/s and revoke/s of those 10,000 (100 concurrent callers);
#   * keepalive-rate: the same 10,000 leases at a fixed RATE (5,000 keep-alives/s, i.e. each
#     lease renewed every 2 s): p50/p99 at a load both sustain;
#   * keepalive-pipelined: the same 10,000 leases over 10 streams (one connection each) of
#     PIPE_WINDOW (100) requests in flight, as fast as the members answer: the shape of etcd's
#     Go client, which sends all of a client's keep-alives on one stream without waiting.
# Writes bench/results/$REPORT_NAME.md (tables, ratios, load average before and after) and keeps
# the raw JSON in bench/out/<time>-lease/. One run takes about 6 minutes.
#
# Knobs (environment): DURATION (s per keep-alive case, 10), ROUNDS (2), RATE (5000), PIPE_WINDOW (100),
# MEM_LEASES (100000; 0 skips), SKIP_BUILD=1 with RAFTKV and BENCH (prebuilt binaries), ETCD,
# RAFTKV_FLAGS (extra flags for the raftkv members, e.g. --lease-keepalive-before-log),
# REPORT_NAME (lease), SNAPSHOT_COUNT (100000, both systems: with 1000 the grants' log entries are
# compacted away by snapshots while they are granted, so the memory case measures what a live
# lease keeps without the log's copy of its grant). Ports 15381-15383/15481-15483 (etcd), 15581-15583/15681-15683 (raftkv).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export ETCDCTL_API=3
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-5000}
PIPE_WINDOW=${PIPE_WINDOW:-100}
MEM_LEASES=${MEM_LEASES:-100000}
RAFTKV_FLAGS=${RAFTKV_FLAGS:-}
REPORT_NAME=${REPORT_NAME:-lease}
[[ -n ${ETCD:-} && -n ${ETCDCTL:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server etcdctl:etcd-client
ETCD=${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl || echo /usr/bin/etcdctl)}
exec 9>/tmp/raftkv-lease-bench.lock
flock -n 9 || { echo "another bench/lease.sh is running (lock /tmp/raftkv-lease-bench.lock)" >&2; exit 1; }
OUT=$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)-lease
WORK=$(mktemp -d /tmp/raftkv-lease-bench.XXXXXX)
mkdir -p "$OUT/logs"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building raftkv and raftkv-bench (release)"
  (cd "$ROOT" && cargo build --release -p raftkv -p raftkv-bench)
fi
RAFTKV=${RAFTKV:-$CARGO_TARGET_DIR/release/raftkv}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/raftkv-bench}

# The same layout and flags as bench/compare.sh (bench/cluster-lib.sh), other ports:
# etcd 15381-15383 / 15481-15483, raftkv 15581-15583 / 15681-15683.
CLUSTER_PORTS="15380 15580" CLUSTER_NAME=lease SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-100000}
# shellcheck source=bench/cluster-lib.sh
source "$ROOT/bench/cluster-lib.sh"

# One case against one system: the leader's endpoint, its pid first in --member-pid.
run_case() { # system name global-flags lease-flags
  local sys=$1 name=$2 global=$3 flags=$4 l pids
  l=$(leader_of "$sys")
  pids=${PID[$sys-$l]}
  for i in 1 2 3; do ((i == l)) || pids+=",${PID[$sys-$i]}"; done
  log "$name against $sys (leader m$l)"
  # shellcheck disable=SC2086
  "$BENCH" --endpoints "127.0.0.1:$(( $(base_port "$sys") + l ))" $global --no-progress -w json \
    lease $flags --member-pid "$pids" >"$OUT/$sys-$name.json" 2>>"$OUT/logs/bench.log" \
    || log "$name against $sys failed"
}

{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, shared with other agents' builds; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Versions: $("$ETCD" --version | head -1); raftkv $(cd "$ROOT" && git rev-parse --short HEAD) (release)${RAFTKV_FLAGS:+, members run with $RAFTKV_FLAGS}."
} >"$OUT/notes.md"

log "starting both clusters (work dir $WORK)"
for sys in etcd raftkv; do for i in 1 2 3; do start_member "$sys" "$i"; done; done
for sys in etcd raftkv; do wait_ready "$sys"; done

if ((MEM_LEASES > 0)); then
  for sys in etcd raftkv; do
    run_case "$sys" memory "--conns 10 --clients 100 --total 1000" "--leases $MEM_LEASES --ttl 600 --streams 100"
  done
fi
for round in $(seq 1 "$ROUNDS"); do
  for sys in etcd raftkv; do
    run_case "$sys" "keepalive-max-r$round" "--conns 10 --clients 100 --duration $DURATION" "--leases 10000 --ttl 300 --streams 100"
  done
  for sys in etcd raftkv; do
    run_case "$sys" "keepalive-rate-r$round" "--conns 10 --clients 100 --duration $DURATION --rate $RATE" "--leases 10000 --ttl 300 --streams 100"
  done
  for sys in etcd raftkv; do
    run_case "$sys" "keepalive-pipelined-r$round" "--conns 10 --clients 100 --duration $DURATION" "--leases 10000 --ttl 300 --streams 10 --window $PIPE_WINDOW"
  done
done
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$OUT/notes.md"

python3 - "$OUT" "$ROOT/bench/results/$REPORT_NAME.md" "$SNAPSHOT_COUNT" "DURATION=$DURATION ROUNDS=$ROUNDS RATE=$RATE PIPE_WINDOW=$PIPE_WINDOW MEM_LEASES=$MEM_LEASES SNAPSHOT_COUNT=$SNAPSHOT_COUNT${RAFTKV_FLAGS:+ RAFTKV_FLAGS=\"$RAFTKV_FLAGS\"} bench/lease.sh; raw results in bench/out/$(basename "$OUT")" <<'PY'
import json, os, sys
out, md, snapshot_count, command = sys.argv[1:5]
def load(sys_, name):
    try:
        with open(os.path.join(out, f"{sys_}-{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"
names = sorted({f.split("-", 1)[1][:-5] for f in os.listdir(out) if f.endswith(".json")})
lines = ["# Lease benchmark: raftkv vs etcd 3.4", "", open(os.path.join(out, "notes.md")).read().strip(), "",
         f"Command: `{command}`.", "",
         f"Both: 3 members on 127.0.0.1, fsync on, --heartbeat-interval 100 --election-timeout 1000 --snapshot-count {snapshot_count}.",
         "Client: `raftkv-bench lease` (the same binary against both) at the leader's endpoint; 10 connections,",
         "100 concurrent granters/revokers, keep-alives over 100 streams of one request in flight each",
         "(`pipelined`: 10 streams, each with a window of requests in flight).",
         "CPU per request: the member's user+system time over the phase (from /proc) / requests answered.", ""]
mem = [(s, load(s, "memory")) for s in ("etcd", "raftkv")]
if any(d for _, d in mem):
    lines += ["## Memory per live lease", "",
              "RSS of each member before granting and with every lease granted (fresh clusters), divided by the leases.",
              "The delta includes everything a grant leaves behind: the lease, allocator slack, and its log entry unless",
              f"a snapshot compacted it (every {snapshot_count} entries here).", "",
              "| system | leases | grant/s | revoke/s | leader B/lease | followers B/lease |", "|---|---|---|---|---|---|"]
    for s, d in mem:
        if not d:
            lines.append(f"| {s} | failed | | | | |")
            continue
        m = d["members"]
        lines.append(f"| {s} | {d['grant']['ok']} | {d['grant']['throughput']:.0f} | {d['revoke']['throughput']:.0f} | "
                     f"{m[0]['rss_bytes_per_lease']:.0f} | {' / '.join('%.0f' % x['rss_bytes_per_lease'] for x in m[1:])} |")
    e, r = mem[0][1], mem[1][1]
    if e and r:
        lines.append(f"\nraftkv / etcd, leader bytes per lease: {ratio(r['members'][0]['rss_bytes_per_lease'], e['members'][0]['rss_bytes_per_lease'])}.")
    lines.append("")
lines += ["## Keep-alives, grants, revokes (10,000 leases)", "",
          "`max`: as fast as the members answer; `rate`: a fixed total rate. Grant and revoke: the 10,000 leases of the case.", "",
          "| case | system | keep-alives/s | p50 ms | p99 ms | errors | TTL 0 | leader CPU µs/keep-alive | all members µs/keep-alive | client µs/keep-alive | grant/s | grant p99 ms | revoke/s | revoke p99 ms |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
sums = {}
for name in names:
    if name == "memory":
        continue
    for s in ("etcd", "raftkv"):
        d = load(s, name)
        if not d:
            lines.append(f"| {name} | {s} | failed | | | | | | | | | | | |")
            continue
        k, m = d["keepalive"], d["members"]
        cpu_all = sum(x["cpu_us_per_keepalive"] for x in m)
        # The bench client's own CPU (reported from 2026-12-06 on; "-" for older clients).
        client = f"{d['client_cpu_us_per_keepalive']:.1f}" if d.get("client_cpu_us_per_keepalive") else "-"
        sums.setdefault((name.rsplit("-r", 1)[0], s), []).append((k["throughput"], k["latency"]["p99_ms"], m[0]["cpu_us_per_keepalive"], d["grant"]["throughput"], d["revoke"]["throughput"]))
        lines.append(f"| {name} | {s} | {k['throughput']:.0f} | {k['latency']['p50_ms']:.2f} | {k['latency']['p99_ms']:.2f} | {k['errors']} | {d['keepalive_lost']} | "
                     f"{m[0]['cpu_us_per_keepalive']:.1f} | {cpu_all:.1f} | {client} | {d['grant']['throughput']:.0f} | {d['grant']['latency']['p99_ms']:.1f} | "
                     f"{d['revoke']['throughput']:.0f} | {d['revoke']['latency']['p99_ms']:.1f} |")
lines += ["", "## Ratios (raftkv / etcd, mean over rounds)", "",
          "| case | keep-alives/s | p99 | leader CPU per keep-alive | grant/s | revoke/s |", "|---|---|---|---|---|---|"]
for case in sorted({c for c, _ in sums}):
    e, r = sums.get((case, "etcd")), sums.get((case, "raftkv"))
    if not (e and r):
        continue
    mean = lambda xs, i: sum(x[i] for x in xs) / len(xs)
    lines.append(f"| {case} | " + " | ".join(ratio(mean(r, i), mean(e, i)) for i in range(5)) + " |")
with open(md, "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
