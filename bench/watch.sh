#!/usr/bin/env bash
# Side-by-side watch benchmark of etcd 3.4 and raftkv on this machine (`raftkv bench watch`).
#
# Starts a 1-member etcd and a 1-member raftkv on loopback (fsync on for both, same flags,
# their own temp dirs and ports), then for every case runs the same `raftkv-bench watch`
# against etcd, then raftkv:
#   * N watchers (1, 1,000, 10,000) on one key and on distinct keys, N/100 streams (at least
#     one) over up to 10 connections; one writer at a fixed rate (RATE puts/s) and 8 writers
#     as fast as they can: put->event latency p50/p99, delivered events/s, put throughput;
#   * member memory (VmRSS) with idle watchers: 100,000 watches on one stream (per watcher)
#     and 10,000 streams of one watch each over 10 connections (per stream), each case on
#     members started fresh for it, after the connections and one warm-up watch per
#     connection are open. The counts are large because VmRSS moves in steps of up to 2 MiB
#     (the allocator commits memory in large chunks): at 10,000 watchers one step alone is
#     ~210 B per watcher, at 100,000 it is ~21 B;
#   * put throughput without watchers (`put-none`: the same 8 writers, one connection, one key,
#     16-byte values, through `raftkv-bench put`), against which the put rates of `max-one-1000`
#     (1,000 watchers of the written key) and `max-distinct-1000` (1,000 watchers of 1,000
#     written keys) are compared (issue 13: with 1,000 watchers at least 80 % of it), and
#     those of `max-prefix-1000` / `max-prefix-10000` (each watcher on its own prefix, a
#     range watch: what finding the matching ranges costs the member per put);
#   * the CPU the member and the benchmark client used during each watch case (from /proc),
#     to show which of them was the bottleneck on the shared cores.
# Writes bench/results/watch.md (the table, the ratios, the load average before and after)
# and keeps the raw JSON in bench/out/<time>-watch/. One run takes about 8 minutes.
#
# Knobs (environment): DURATION (s per case, 5), RATE (puts/s of the fixed-rate cases, 100),
# WRITERS (writer counts of the flat-out cases and put-none, "8"; e.g. "8 32": the first count
# keeps the plain case names, each other count N adds cases named <case>-wN, so that a system
# whose put rate is bound by the latency of a closed loop of 8 writers rather than by CPU
# shows it), SKIP_BUILD=1 with RAFTKV and BENCH (prebuilt binaries), ETCD, CASES_ONLY (names,
# e.g. "rate-one-1000 mem-watchers"; a name selects its -wN variants too), REPORT_NAME (watch).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-5}
RATE=${RATE:-100}
read -r -a WRITER_COUNTS <<<"${WRITERS:-8}"
# The name suffix of a flat-out case with $1 writers ("" for the first count).
wsuffix() { [[ $1 == "${WRITER_COUNTS[0]}" ]] || echo "-w$1"; }
REPORT_NAME=${REPORT_NAME:-watch}
[[ -n ${ETCD:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server
ETCD=${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}
exec 9>/tmp/raftkv-watch-bench.lock
flock -n 9 || { echo "another bench/watch.sh is running (lock /tmp/raftkv-watch-bench.lock)" >&2; exit 1; }
OUT=$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)-watch
WORK=$(mktemp -d /tmp/raftkv-watch-bench.XXXXXX)
mkdir -p "$OUT/logs"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building raftkv and raftkv-bench (release)"
  (cd "$ROOT" && cargo build --release -p raftkv -p raftkv-bench)
fi
RAFTKV=${RAFTKV:-$CARGO_TARGET_DIR/release/raftkv}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/raftkv-bench}

declare -A PID
cleanup() {
  for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Ports below the ephemeral range, apart from bench/compare.sh's.
port() { [[ $1 == etcd ]] && echo 27391 || echo 28391; }
url() { echo "http://127.0.0.1:$(port "$1")"; }

start_member() { # system
  local sys=$1 cmd
  if [[ $sys == etcd ]]; then cmd=("$ETCD"); else cmd=("$RAFTKV" server); fi
  local peer="http://127.0.0.1:$(( $(port "$sys") + 100 ))"
  "${cmd[@]}" --name "${sys}1" --data-dir "$WORK/$sys" \
    --listen-client-urls "$(url "$sys")" --advertise-client-urls "$(url "$sys")" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "${sys}1=$peer" --initial-cluster-token "watch-$sys" --initial-cluster-state new \
    --heartbeat-interval 100 --election-timeout 1000 \
    >>"$OUT/logs/$sys.log" 2>&1 &
  PID[$sys]=$!
  log "$sys member started, pid ${PID[$sys]}"
}

wait_ready() { # system: a put answered within 30 s
  local sys=$1 deadline=$((SECONDS + 30))
  until "$BENCH" --endpoints "$(url "$sys")" --total 1 --no-progress put >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "$sys not ready after 30s; see $OUT/logs" >&2; return 1; }
    sleep 0.2
  done
}

{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, shared with other builds; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Versions: $("$ETCD" --version | head -1); raftkv $(cd "$ROOT" && git rev-parse --short HEAD) (release)."
} >"$OUT/notes.md"

log "starting etcd and raftkv (work dir $WORK)"
for sys in etcd raftkv; do start_member "$sys"; done
for sys in etcd raftkv; do wait_ready "$sys"; done

# name | global flags | watch flags
declare -a CASES=(
  "mem-watchers|--conns 1 --clients 1 --total 1|--watchers 100000 --streams 1"
  "mem-streams|--conns 10 --clients 1 --total 1|--watchers 10000 --streams 10000"
)
for n in 1 1000 10000; do
  streams=$(( n >= 100 ? n / 100 : 1 ))
  conns=$(( streams < 10 ? streams : 10 ))
  CASES+=("rate-one-$n|--conns $conns --clients 1 --rate $RATE --duration $DURATION|--watchers $n --streams $streams")
  for w in "${WRITER_COUNTS[@]}"; do
    CASES+=("max-one-$n$(wsuffix "$w")|--conns $conns --clients $w --duration $DURATION|--watchers $n --streams $streams")
  done
  if ((n > 1)); then
    CASES+=("rate-distinct-$n|--conns $conns --clients 1 --rate $RATE --duration $DURATION|--watchers $n --streams $streams --distinct-keys")
    for w in "${WRITER_COUNTS[@]}"; do
      CASES+=("max-distinct-$n$(wsuffix "$w")|--conns $conns --clients $w --duration $DURATION|--watchers $n --streams $streams --distinct-keys")
      # Range watchers: each watches its key as a prefix (the member has to find, per put,
      # the one range of thousands that holds the key).
      CASES+=("max-prefix-$n$(wsuffix "$w")|--conns $conns --clients $w --duration $DURATION|--watchers $n --streams $streams --distinct-keys --prefix-watches")
    done
  fi
done
# Isolation (issue 13): 10,000 watchers on distinct keys over 100 streams at the fixed rate,
# 64 KiB values (6.4 MB/s that the stalled stream does not read: far more than any HTTP/2 window),
# without and with one extra stream that watches the whole prefix and is never
# read. The stalled stream must not delay the others, slow the puts, or grow the member.
for stalled in 0 1; do
  CASES+=("iso-stalled$stalled-10000|--conns 10 --clients 1 --rate $RATE --duration $DURATION|--watchers 10000 --streams 100 --distinct-keys --val-size 65536 --stalled-streams $stalled")
done
for w in "${WRITER_COUNTS[@]}"; do
  CASES+=("put-none$(wsuffix "$w")|--conns 1 --clients $w --duration $DURATION|")
done
for c in "${CASES[@]}"; do
  IFS='|' read -r name global flags <<<"$c"
  if [[ -n ${CASES_ONLY:-} && " $CASES_ONLY " != *" ${name%-w[0-9]*} "* ]]; then continue; fi
  if [[ $name == mem-* ]]; then
    # Fresh members: memory a previous case freed would be reused and not show.
    for sys in etcd raftkv; do
      kill -9 "${PID[$sys]}" 2>/dev/null || true
      wait "${PID[$sys]}" 2>/dev/null || true
      rm -rf "${WORK:?}/$sys"
      start_member "$sys"
    done
    for sys in etcd raftkv; do wait_ready "$sys"; done
  fi
  for sys in etcd raftkv; do
    log "$name against $sys"
    if [[ $name == put-none* ]]; then
      # shellcheck disable=SC2086
      "$BENCH" --endpoints "$(url "$sys")" $global --no-progress -w json \
        put --key-size 16 --val-size 16 --key-space-size 1 \
        >"$OUT/$sys-$name.json" 2>>"$OUT/logs/bench.log" || log "$name against $sys failed"
      continue
    fi
    # shellcheck disable=SC2086
    "$BENCH" --endpoints "$(url "$sys")" $global --no-progress -w json \
      watch $flags --key-prefix "$name/" --member-pid "${PID[$sys]}" \
      >"$OUT/$sys-$name.json" 2>>"$OUT/logs/bench.log" || log "$name against $sys failed"
  done
done
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$OUT/notes.md"

FIRST_WRITERS=${WRITER_COUNTS[0]} python3 - "$OUT" "$ROOT/bench/results/$REPORT_NAME.md" "DURATION=$DURATION RATE=$RATE WRITERS=\"${WRITER_COUNTS[*]}\" bench/watch.sh; raw results in bench/out/$(basename "$OUT")" <<'PY'
import json, os, sys
out, md, command = sys.argv[1:4]
def load(sys_, name):
    try:
        with open(os.path.join(out, f"{sys_}-{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
import re
def base_name(n):
    """A case's name without its writer-count suffix (`-w32`)."""
    return re.sub(r"-w[0-9]+$", "", n)
def sort_key(n):
    b = base_name(n)
    last = b.rsplit("-", 1)[1]
    return (not n.startswith("mem"), n.split("-")[0], int(last) if last.isdigit() else 0, b, len(n), n)
names = sorted({f.split("-", 1)[1][:-5] for f in os.listdir(out) if f.endswith(".json")}, key=sort_key)
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"
lines = ["# Watch benchmark: raftkv vs etcd 3.4", "", open(os.path.join(out, "notes.md")).read().strip(), "",
         f"Command: `{command}`.", "",
         "Both: 1 member on 127.0.0.1, fsync on, --heartbeat-interval 100 --election-timeout 1000.",
         "Client: `raftkv-bench watch` (the same binary against both); put->event latency is measured",
         "from the send time stamped in each value to the event's arrival, for every watcher.", "",
         "## Memory with idle watchers", "",
         "| case | etcd | raftkv | raftkv / etcd |", "|---|---|---|---|"]
for name, field, label in [("mem-watchers", "rss_bytes_per_watcher", "bytes per watcher (100,000 on 1 stream)"),
                           ("mem-streams", "rss_bytes_per_stream", "bytes per stream (10,000 streams of 1 watch, 10 connections)")]:
    e, r = load("etcd", name), load("raftkv", name)
    ev = e and e.get(field); rv = r and r.get(field)
    lines.append(f"| {label} | {ev:.0f} | {rv:.0f} | {ratio(rv, ev)} |" if ev is not None and rv is not None else f"| {label} | - | - | - |")
lines += ["", "## Events", "",
          f"`rate-*`: one writer at the fixed rate; `max-*`: {os.environ.get('FIRST_WRITERS', '8')} writers as fast as they can (`-wN`: N writers). `one`: every watcher on one key;",
          "`distinct`: one key per watcher, the writers cycling through them; `prefix`: the same, each watcher watching its key",
          "as a prefix (a range watch). Events/s counts delivered events from the first",
          "put to the last event; `delivered` is of those the acknowledged puts should produce (the rest had not arrived 10 s",
          "after the writers stopped). CPU: of the member and of the benchmark client, from the first put until the events",
          "were drained, in % of one core (the machine has 2, shared with whatever else runs).", "",
          "| case | system | puts/s | put p99 ms | events/s | delivered | put->event p50 ms | p99 ms | CPU % member / client | events/s ratio | p99 ratio |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
for name in names:
    if name.startswith(("mem", "put")):
        continue
    e, r = load("etcd", name), load("raftkv", name)
    for label, d in (("etcd", e), ("raftkv", r)):
        if not d:
            lines.append(f"| {name} | {label} | failed | | | | | | | | |")
            continue
        extra = ("| | |" if label == "etcd" else
                 f"| {ratio(d['events_per_s'], e and e['events_per_s'])} | {ratio(d['event_latency']['p99_ms'], e and e['event_latency']['p99_ms'])} |")
        cpu = lambda k: f"{d[k]:.0f}" if d.get(k) is not None else "-"
        lines.append(f"| {name} | {label} | {d['put_throughput']:.0f} | {d['put_latency']['p99_ms']:.1f} | {d['events_per_s']:.0f} | "
                     f"{d['events_delivered']}/{d['events_expected']} | {d['event_latency']['p50_ms']:.2f} | {d['event_latency']['p99_ms']:.2f} | "
                     f"{cpu('member_cpu_pct')} / {cpu('client_cpu_pct')} {extra}")
# One table per writer count: the first count's cases have no suffix, the others `-wN`.
suffixes = [""] + sorted({n[len(base_name(n)):] for n in names if n != base_name(n)}, key=lambda s: int(s[2:]))
def put_rows(rows):
    """One line per system: puts/s without watchers, then with each case and its ratio."""
    out = []
    for label, a, *cases in rows:
        if not a:
            out.append(f"| {label} | failed |" + " | |" * len(cases))
            continue
        pr = lambda d: f"{d['put_throughput']:.0f}" if d else "-"
        out.append(f"| {label} | {a['throughput']:.0f} | " +
                   " | ".join(f"{pr(d)} | {ratio(d and d['put_throughput'], a['throughput'])}" for d in cases) + " |")
    return out
for sfx in suffixes:
    base = [(label, load(label, "put-none" + sfx), load(label, "max-one-1000" + sfx), load(label, "max-distinct-1000" + sfx)) for label in ("etcd", "raftkv")]
    prefix = [(label, load(label, "put-none" + sfx), load(label, "max-prefix-1000" + sfx), load(label, "max-prefix-10000" + sfx)) for label in ("etcd", "raftkv")]
    heading = f"## Put throughput with active watchers{' (' + sfx[2:] + ' writers)' if sfx else ''}"
    shown = [rows for rows in (base, prefix) if any(a and (b or c) for _, a, b, c in rows)]
    if not shown:
        continue
    lines += ["", heading, "",
              "Writers as fast as they can on one connection; `put-none" + sfx + "`: the same writers without any watcher",
              "(`raftkv-bench put`, one key). Target (issue 13): with 1,000 watchers >= 80 % of without."]
    if base in shown:
        lines += ["", f"`max-one-1000{sfx}`: 1,000 watchers of the written key over 10 streams (each put is 1,000 events);",
                  f"`max-distinct-1000{sfx}`: 1,000 watchers on 1,000 distinct keys that the writers cycle through (each put is one event).", "",
                  "| system | puts/s without watchers | with 1,000 on one key | ratio | with 1,000 on distinct keys | ratio |",
                  "|---|---|---|---|---|---|"] + put_rows(base)
    if prefix in shown:
        lines += ["", f"Range watchers: `max-prefix-N{sfx}`, N watchers each on its own prefix (N/100 streams), the writers cycling",
                  "through one key under each (each put is one event).", "",
                  "| system | puts/s without watchers | with 1,000 prefixes | ratio | with 10,000 prefixes | ratio |",
                  "|---|---|---|---|---|---|"] + put_rows(prefix)
iso = [(label, load(label, "iso-stalled0-10000"), load(label, "iso-stalled1-10000")) for label in ("etcd", "raftkv")]
if any(a and b for _, a, b in iso):
    lines += ["", "## Isolation: one stream that never reads", "",
              "10,000 watchers on distinct keys over 100 streams, one writer at the fixed rate, 64 KiB values; `stalled`:",
              "one more stream watching every key, never read. Memory growth is the member's RSS when the writers stopped",
              "minus its RSS with every watch created (the 64 MiB of values written are in it, in both runs); what the stalled",
              "stream cost is the difference. Targets: put->event p99 of the others <= 100 ms, put p99 moves <= 10 %,",
              "memory grows <= 64 MiB.", "",
              "| system | put->event p99 ms (base / stalled) | put p99 ms (base / stalled) | put p99 change | RSS growth MiB (base / stalled) | growth due to the stalled stream MiB | delivered (stalled) |",
              "|---|---|---|---|---|---|---|"]
    for label, a, b in iso:
        if not (a and b):
            lines.append(f"| {label} | failed | | | | | |")
            continue
        grow = lambda d: (d["rss_end_kib"] - d["rss_idle_kib"]) / 1024 if d.get("rss_end_kib") is not None and d.get("rss_idle_kib") is not None else float("nan")
        pa, pb = a["put_latency"]["p99_ms"], b["put_latency"]["p99_ms"]
        lines.append(f"| {label} | {a['event_latency']['p99_ms']:.1f} / {b['event_latency']['p99_ms']:.1f} | {pa:.1f} / {pb:.1f} | "
                     f"{(pb / pa - 1) * 100:+.0f} % | {grow(a):.1f} / {grow(b):.1f} | {grow(b) - grow(a):+.1f} | {b['events_delivered']}/{b['events_expected']} |")
with open(md, "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
