#!/usr/bin/env bash
# Maintenance and big reads, raftkv vs etcd 3.4 side by side (issue 18, beyond-etcd.md §1.4-1.5).
#
# Starts a 3-member etcd and a 3-member raftkv on loopback with bench/compare.sh's flags
# (bench/cluster-lib.sh: fsync on, heartbeat 100 ms, election 1 s) and measures, per system:
#
#  A. Put latency under a steady write load at a fixed rate (RATE puts/s of 256 B over HIST_KEYS
#     keys, WINDOW_CLIENTS (500) clients over 10 connections to all three members, DURATION s
#     per window; with that many clients a stall delays every request scheduled during it,
#     not only the few in flight, so p99 shows it) in three windows:
#       none     no maintenance;
#       compact  `etcdctl compact --physical <current revision>` issued MAINT_AFTER s into the
#                window, after HIST_PUTS puts of history (all of it is compacted);
#       defrag   `etcdctl defrag` of all three members, MAINT_AFTER s into the window. etcd
#                rewrites its bbolt file, blocking each member in turn; raftkv's Defragment
#                takes a snapshot of an O(1) view and truncates its log (docs/operations.md).
#     p50/p99/max of each window, the time the maintenance call took, and p99 during / p99
#     without per system. Rounds alternate etcd, raftkv (ROUNDS, each with fresh history).
#  B. A store of BIG_KEYS keys × BIG_VAL bytes (256 MiB by default; BIG_KEYS=1048576 for
#     1 GiB), compacted, then READERS concurrent unpaginated Range reads of the whole key space
#     (key "\0", range_end "\0", what `etcdctl get "" --prefix` sends) at the leader. The
#     readers are curl processes speaking gRPC over HTTP/2 whose output is read to the end by
#     a checker (gRPC length prefix = bytes received, grpc-status 0; the first reader also
#     parses the whole message: kvs fields = count = keys in the store), so each answer is
#     really read, with constant client memory. The member's RSS is sampled every 0.1 s:
#     before, peak, and peak - before. A member whose RSS passes MEM_CAP (4 GiB) is killed
#     (by the sampler, and by a memory cgroup where the kernel applies it to a moved process)
#     so that a system that needs 100 × the answer cannot take the shared machine down (etcd
#     3.4 reached 20 GiB at 256 MiB × 100 before this cap); the report says if it was killed.
#
# Writes bench/results/$REPORT_NAME.md and keeps raw JSON and logs in bench/out/<time>-maint/.
# Bounded in time: every load and read has a deadline; about 10 minutes with the defaults.
# Knobs: RATE (500), DURATION (8), WINDOW_CLIENTS (500), MAINT_AFTER (2), ROUNDS (2), HIST_KEYS (20000), HIST_PUTS
# (200000), BIG_KEYS (262144; 0 skips part B), BIG_VAL (1024), READERS (100), READ_TIMEOUT
# (300 s), MEM_CAP (4G), PARTS ("A B"), SKIP_BUILD=1 with RAFTKV and BENCH, ETCD, ETCDCTL,
# RAFTKV_FLAGS, ETCD_FLAGS, REPORT_NAME (maintenance).
# Ports: etcd 17381-17383/17481-17483, raftkv 17581-17583/17681-17683. Needs root for the cgroup
# (without it part B runs uncapped and says so).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export ETCDCTL_API=3
RATE=${RATE:-500}
DURATION=${DURATION:-8}
WINDOW_CLIENTS=${WINDOW_CLIENTS:-500}
MAINT_AFTER=${MAINT_AFTER:-2}
ROUNDS=${ROUNDS:-2}
HIST_KEYS=${HIST_KEYS:-20000}
HIST_PUTS=${HIST_PUTS:-200000}
BIG_KEYS=${BIG_KEYS:-262144}
BIG_VAL=${BIG_VAL:-1024}
READERS=${READERS:-100}
READ_TIMEOUT=${READ_TIMEOUT:-300}
MEM_CAP=${MEM_CAP:-4G}
CAP_KIB=$(numfmt --from=iec "$MEM_CAP"); CAP_KIB=$((CAP_KIB / 1024))
PARTS=${PARTS:-A B}
REPORT_NAME=${REPORT_NAME:-maintenance}
# Room for the big store on both systems (etcd's default quota is 2 GiB).
QUOTA=$((8 * 1024 * 1024 * 1024))
export RAFTKV_FLAGS="${RAFTKV_FLAGS:-} --quota-backend-bytes $QUOTA"
export ETCD_FLAGS="${ETCD_FLAGS:-} --quota-backend-bytes $QUOTA"
[[ -n ${ETCD:-} && -n ${ETCDCTL:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server etcdctl:etcd-client
ETCD=${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl || echo /usr/bin/etcdctl)}
command -v curl >/dev/null || { echo "bench/maintenance.sh needs curl (HTTP/2)" >&2; exit 1; }
exec 9>/tmp/raftkv-maintenance-bench.lock
flock -n 9 || { echo "another bench/maintenance.sh is running (lock /tmp/raftkv-maintenance-bench.lock)" >&2; exit 1; }
OUT=$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)-maint
WORK=$(mktemp -d /tmp/raftkv-maintenance-bench.XXXXXX)
mkdir -p "$OUT/logs"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building raftkv and raftkv-bench (release)"
  (cd "$ROOT" && cargo build --release -p raftkv -p raftkv-bench)
fi
RAFTKV=${RAFTKV:-$CARGO_TARGET_DIR/release/raftkv}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/raftkv-bench}

CLUSTER_PORTS="17380 17580" CLUSTER_NAME=maint SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-100000}
# shellcheck source=bench/cluster-lib.sh
source "$ROOT/bench/cluster-lib.sh"

CGROUP=""
lib_cleanup() { cleanup; [[ -n $CGROUP && -d $CGROUP ]] && rmdir "$CGROUP" 2>/dev/null || true; }
trap lib_cleanup EXIT INT TERM

revision_of() { # system -> the current revision, from member 1's status header
  "$ETCDCTL" --endpoints="$(client_url "$1" 1)" --command-timeout=10s endpoint status -w json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])'
}

all_urls() { echo "$(client_url "$1" 1),$(client_url "$1" 2),$(client_url "$1" 3)"; }

# One load window: a fixed-rate put load; with a maintenance command, it starts MAINT_AFTER s in
# and its duration is recorded.
window() { # system name maintenance-command...
  local sys=$1 name=$2; shift 2
  local json="$OUT/$sys-$name.json" load
  "$BENCH" --endpoints "$(endpoints "$sys")" --conns 10 --clients "$WINDOW_CLIENTS" --rate "$RATE" \
    --duration "$DURATION" --request-timeout-ms 10000 --no-progress -w json \
    put --val-size 256 --key-space-size "$HIST_KEYS" >"$json" 2>>"$OUT/logs/bench.log" &
  load=$!
  if (($# > 0)); then
    sleep "$MAINT_AFTER" # where in the window the maintenance starts, not a synchronisation
    local t0 t1
    t0=$(date +%s.%N)
    if timeout 120 "$@" >>"$OUT/logs/maintenance.log" 2>&1; then ok=True; else ok=False; fi
    t1=$(date +%s.%N)
    python3 -c "import json; print(json.dumps({'seconds': $t1 - $t0, 'ok': $ok}))" >"$OUT/$sys-$name.maint.json"
  fi
  wait "$load" || log "$name load against $sys failed"
}

part_a_round() { # system round
  local sys=$1 r=$2 rev
  log "A: $sys round $r: $HIST_PUTS puts of history over $HIST_KEYS keys"
  "$BENCH" --endpoints "$(endpoints "$sys")" --conns 10 --clients 100 --total "$HIST_PUTS" \
    --no-progress -w json put --val-size 256 --key-space-size "$HIST_KEYS" \
    >"$OUT/$sys-history-r$r.json" 2>>"$OUT/logs/bench.log"
  log "A: $sys round $r: no maintenance"
  window "$sys" "none-r$r"
  rev=$(revision_of "$sys")
  log "A: $sys round $r: compact at $rev"
  window "$sys" "compact-r$r" "$ETCDCTL" --endpoints="$(client_url "$sys" 1)" --command-timeout=100s compact --physical "$rev"
  log "A: $sys round $r: defrag"
  window "$sys" "defrag-r$r" "$ETCDCTL" --endpoints="$(all_urls "$sys")" --command-timeout=100s defrag
}

# The gRPC request of `etcdctl get "" --prefix`: RangeRequest{key: "\0", range_end: "\0"},
# behind gRPC's 5-byte prefix (uncompressed, length 6).
printf '\x00\x00\x00\x00\x06\x0a\x01\x00\x12\x01\x00' >"$WORK/range-all.bin"

# Reads one answer from stdin to the end: checks the gRPC prefix against the bytes received and,
# with --parse, walks every top-level field (kvs counted, count read). Prints JSON.
cat >"$WORK/reader.py" <<'PY'
import json, struct, sys
parse = "--parse" in sys.argv
inp = sys.stdin.buffer
head = inp.read(5)
out = {"bytes": 0, "declared": None, "kvs": None, "count": None}
if len(head) == 5:
    out["declared"] = struct.unpack(">I", head[1:5])[0]
buf = bytearray()
total = 0
kvs = count = 0
def varint(b, i):
    v = s = 0
    while True:
        c = b[i]; i += 1
        v |= (c & 0x7F) << s; s += 7
        if c < 0x80:
            return v, i
while True:
    chunk = inp.read(1 << 20)
    if not chunk:
        break
    total += len(chunk)
    if not parse:
        continue
    buf += chunk
    i = 0
    n = len(buf)
    while i < n:
        try:
            tag, j = varint(buf, i)
            wt = tag & 7
            if wt == 2:
                ln, j = varint(buf, j)
                if j + ln > n:
                    break
                if tag >> 3 == 2:
                    kvs += 1
                j += ln
            elif wt == 0:
                v, j = varint(buf, j)
                if tag >> 3 == 4:
                    count = v
            else:
                raise SystemExit("unexpected wire type %d" % wt)
        except IndexError:
            break
        i = j
    del buf[:i]
out["bytes"] = total
if parse:
    out["kvs"], out["count"], out["leftover"] = kvs, count, len(buf)
print(json.dumps(out))
PY

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

part_b() { # system
  local sys=$1 l pid port sampler rss0 t0 t1 i
  log "B: $sys: loading $BIG_KEYS keys × $BIG_VAL B"
  "$BENCH" --endpoints "$(endpoints "$sys")" --conns 10 --clients 100 --total "$BIG_KEYS" \
    --request-timeout-ms 30000 --no-progress -w json \
    put --fill --key-size 16 --val-size "$BIG_VAL" --key-space-size "$BIG_KEYS" \
    >"$OUT/$sys-big-load.json" 2>>"$OUT/logs/bench.log"
  "$ETCDCTL" --endpoints="$(client_url "$sys" 1)" --command-timeout=100s compact --physical "$(revision_of "$sys")" >>"$OUT/logs/maintenance.log" 2>&1 || true
  l=$(leader_of "$sys")
  pid=${PID[$sys-$l]}
  port=$(( $(base_port "$sys") + l ))
  if [[ -n $CGROUP ]]; then echo "$pid" >"$CGROUP/cgroup.procs"; fi
  rss0=$(rss_kib "$pid")
  mkdir -p "$OUT/reads-$sys"
  # The sampler is also the cap's enforcement: a member above MEM_CAP is killed (the cgroup
  # does not hold a process moved into it on every kernel; the machine is shared).
  ( peak=0; while kill -0 "$pid" 2>/dev/null; do
      r=$(rss_kib "$pid"); ((r > peak)) && { peak=$r; echo "$peak" >"$OUT/reads-$sys/peak"; }
      if ((r > CAP_KIB)); then kill -9 "$pid"; echo "$r" >"$OUT/reads-$sys/killed-at-cap"; break; fi
      [[ -f $OUT/reads-$sys/stop ]] && break
      sleep 0.1
    done ) &
  sampler=$!
  log "B: $sys: $READERS concurrent reads of the whole key space at member $l (RSS $((rss0 / 1024)) MiB)"
  t0=$(date +%s.%N)
  local readers=()
  for i in $(seq 1 "$READERS"); do
    local parse=""; ((i == 1)) && parse=--parse
    ( curl -sS --http2-prior-knowledge --max-time "$READ_TIMEOUT" -H 'content-type: application/grpc' \
        -H 'te: trailers' --data-binary @"$WORK/range-all.bin" -D "$OUT/reads-$sys/h$i" \
        "http://127.0.0.1:$port/etcdserverpb.KV/Range" 2>"$OUT/reads-$sys/e$i" |
        python3 "$WORK/reader.py" $parse >"$OUT/reads-$sys/r$i.json" ) &
    readers+=($!)
  done
  for i in "${readers[@]}"; do wait "$i" || true; done
  t1=$(date +%s.%N)
  touch "$OUT/reads-$sys/stop"; wait "$sampler" 2>/dev/null || true
  local alive=true; kill -0 "$pid" 2>/dev/null || alive=false
  [[ -f $OUT/reads-$sys/killed-at-cap ]] && alive=killed-at-cap
  python3 - "$OUT/reads-$sys" "$sys" "$READERS" "$rss0" "$alive" "$t0" "$t1" "$(rss_kib "$pid")" "$BIG_KEYS" >"$OUT/$sys-reads.json" <<'PY'
import json, os, re, sys
d, sys_, n, rss0, alive, t0, t1, rss_after, big = sys.argv[1:]
ok = 0; problems = []; parsed = None
for i in range(1, int(n) + 1):
    try:
        r = json.load(open(os.path.join(d, f"r{i}.json")))
    except (OSError, ValueError):
        problems.append(f"reader {i}: no result"); continue
    h = open(os.path.join(d, f"h{i}"), errors="replace").read() if os.path.exists(os.path.join(d, f"h{i}")) else ""
    st = re.findall(r"grpc-status: *(\d+)", h)
    good = r["declared"] is not None and r["bytes"] == r["declared"] and st[-1:] == ["0"]
    if i == 1:
        parsed = r
        good = good and r["kvs"] == r["count"] and r["count"] >= int(big) and r.get("leftover") == 0
    if good:
        ok += 1
    elif len(problems) < 5:
        err = open(os.path.join(d, f"e{i}"), errors="replace").read().strip()[:200]
        problems.append(f"reader {i}: {r} status {st} {err}")
peak = int(open(os.path.join(d, "peak")).read()) if os.path.exists(os.path.join(d, "peak")) else 0
print(json.dumps({"system": sys_, "readers": int(n), "ok": ok, "rss_before_kib": int(rss0),
                  "rss_peak_kib": peak, "rss_after_kib": int(rss_after), "alive": alive if alive != "true" else True,
                  "seconds": float(t1) - float(t0), "answer_bytes": parsed and parsed["bytes"],
                  "kvs": parsed and parsed["kvs"], "problems": problems}))
PY
}

{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, shared with other agents' builds and benchmarks; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Versions: $("$ETCD" --version | head -1); raftkv $(cd "$ROOT" && git rev-parse --short HEAD) ($RAFTKV)."
} >"$OUT/notes.md"

log "starting both clusters (work dir $WORK)"
for sys in etcd raftkv; do for i in 1 2 3; do start_member "$sys" "$i"; done; done
for sys in etcd raftkv; do wait_ready "$sys"; done

if [[ " $PARTS " == *" A "* ]]; then
  for r in $(seq 1 "$ROUNDS"); do
    for sys in etcd raftkv; do part_a_round "$sys" "$r"; done
  done
fi
if [[ " $PARTS " == *" B "* ]] && ((BIG_KEYS > 0)); then
  if [[ -d /sys/fs/cgroup/memory ]] && mkdir -p /sys/fs/cgroup/memory/raftkv-maint-bench 2>/dev/null; then
    CGROUP=/sys/fs/cgroup/memory/raftkv-maint-bench
    echo "$MEM_CAP" >"$CGROUP/memory.limit_in_bytes"
    echo "Part B: the read member runs in a memory cgroup capped at $MEM_CAP, and is killed by the sampler above it." >>"$OUT/notes.md"
  else
    echo "Part B: no memory cgroup here (not root, or inside \`ip netns exec\`, which remounts /sys): the sampler's kill at $MEM_CAP is the only cap." >>"$OUT/notes.md"
  fi
  for sys in etcd raftkv; do part_b "$sys"; done
fi
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$OUT/notes.md"

python3 - "$OUT" "$ROOT/bench/results/$REPORT_NAME.md" "RATE=$RATE DURATION=$DURATION WINDOW_CLIENTS=$WINDOW_CLIENTS MAINT_AFTER=$MAINT_AFTER ROUNDS=$ROUNDS HIST_KEYS=$HIST_KEYS HIST_PUTS=$HIST_PUTS BIG_KEYS=$BIG_KEYS BIG_VAL=$BIG_VAL READERS=$READERS MEM_CAP=$MEM_CAP PARTS=\"$PARTS\" bench/maintenance.sh; raw results in bench/out/$(basename "$OUT")" <<'PY'
import glob, json, os, sys
out, md, command = sys.argv[1:4]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
lines = ["# Maintenance and big reads: raftkv vs etcd 3.4", "", open(os.path.join(out, "notes.md")).read().strip(), "",
         f"Command: `{command}`.", ""]
rounds = sorted({int(f.rsplit("-r", 1)[1].split(".")[0]) for f in os.listdir(out) if f.startswith(("etcd-none-r", "raftkv-none-r"))})
if rounds:
    lines += ["## A. Put latency during compaction and defragmentation", "",
              "Fixed-rate puts over all three members; `compact`/`defrag` windows run the maintenance call inside the window.", "",
              "| round | system | window | puts ok | errors | p50 ms | p99 ms | max ms | maintenance s | p99 / p99 without |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    worst = {}
    for r in rounds:
        for s in ("etcd", "raftkv"):
            base = load(f"{s}-none-r{r}.json")
            for w in ("none", "compact", "defrag"):
                d = load(f"{s}-{w}-r{r}.json")
                m = load(f"{s}-{w}-r{r}.maint.json")
                if not d:
                    lines.append(f"| {r} | {s} | {w} | failed | | | | | | |"); continue
                L = d["latency"]
                ratio = L["p99_ms"] / base["latency"]["p99_ms"] if base and base["latency"]["p99_ms"] else None
                if w != "none" and ratio is not None:
                    worst.setdefault((s, w), []).append(ratio)
                ms = "" if not m else f"{m['seconds']:.2f}" + ("" if m["ok"] else " (failed)")
                lines.append(f"| {r} | {s} | {w} | {d['ok']} | {d['errors']} | {L['p50_ms']:.2f} | {L['p99_ms']:.2f} | {L['max_ms']:.1f} | {ms} | "
                             + (f"{ratio:.2f}" if ratio is not None and w != "none" else "") + " |")
    lines += ["", "p99 during / p99 without, per round: " + "; ".join(
        f"{s} {w} {', '.join('%.2f' % x for x in v)}" for (s, w), v in sorted(worst.items())) + ".", ""]
reads = [load(f"{s}-reads.json") for s in ("etcd", "raftkv")]
if any(reads):
    lines += ["## B. Concurrent unpaginated reads of the whole key space", "",
              "| system | store (keys, answer bytes) | readers ok | seconds | RSS before MiB | peak MiB | growth MiB | after MiB | member alive |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s, d in zip(("etcd", "raftkv"), reads):
        if not d:
            lines.append(f"| {s} | failed | | | | | | | |"); continue
        lines.append(f"| {s} | {d['kvs']}, {d['answer_bytes']} | {d['ok']} / {d['readers']} | {d['seconds']:.1f} | {d['rss_before_kib']/1024:.0f} | "
                     f"{d['rss_peak_kib']/1024:.0f} | {(d['rss_peak_kib'] - d['rss_before_kib'])/1024:.0f} | {d['rss_after_kib']/1024:.0f} | {d['alive']} |")
        for p in d["problems"]:
            lines.append(f"\n{s}: {p}")
    lines.append("")
with open(md, "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
