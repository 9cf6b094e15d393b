#!/usr/bin/env bash
# Side-by-side benchmark of etcd and raftkv on this machine.
#
# Starts a 3-member etcd and a 3-member raftkv on loopback (fsync on for both, the same
# flags, their own temp dirs and ports), runs the same workloads against each, alternating
# etcd, raftkv, etcd, raftkv, ... so slow drift in machine load hits both alike, then:
#   * etcdctl check perf --load=l and --load=xl against both (PASS/FAIL lines);
#   * resident memory of every member after a put load with compaction (scaled down);
#   * leader failover: SIGKILL of the leader -> first successful write, N trials each.
# Writes bench/results/compare.md and bench/results/compare.svg; raw results go to bench/out/.
# A script, not a test: one run takes about 10-12 minutes on the 2-core dev machine.
#
# Knobs (environment): DURATION (s per load run, 6), ROUNDS (2), FAILOVER_TRIALS (20),
# RSS_PUTS (50000; 0 skips the memory step), RSS_KEYS (5000), SNAPSHOT_COUNT (100000, both systems), PERF_LOADS ("l xl"; "" skips),
# CASES_ONLY (space-separated load-case names to run, e.g. "put-c1 range-l"; default all), SKIP_BUILD=1, ETCD, ETCDCTL,
# RAFTKV and BENCH (prebuilt binaries, with SKIP_BUILD=1), PROFILE_NOTE (how they were built),
# REPORT_NAME (compare: writes bench/results/<name>.md and .svg; use another name for partial runs).
# etcd and etcdctl come from Debian's etcd-server / etcd-client, installed if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export ETCDCTL_API=3
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-2}
FAILOVER_TRIALS=${FAILOVER_TRIALS:-20}
RSS_PUTS=${RSS_PUTS:-50000}
RSS_KEYS=${RSS_KEYS:-5000}
# Both systems get the same --snapshot-count: etcd 3.4's default (100,000). raftkv's own default
# is 3.6's 10,000; since issue 18 a snapshot is serialised off the node thread (Store::view).
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-100000}
PERF_LOADS=${PERF_LOADS-"l xl"}
REPORT_NAME=${REPORT_NAME:-compare}
[[ -n ${ETCD:-} && -n ${ETCDCTL:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server etcdctl:etcd-client
ETCD=${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl || echo /usr/bin/etcdctl)}
# The clusters use fixed ports: two runs at once would measure each other.
exec 9>/tmp/raftkv-compare.lock
flock -n 9 || { echo "another bench/compare.sh is running (lock /tmp/raftkv-compare.lock)" >&2; exit 1; }
OUT=$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/raftkv-compare.XXXXXX)
mkdir -p "$OUT/load" "$OUT/logs"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

[[ -x $ETCD && -x $ETCDCTL ]] || { echo "etcd/etcdctl not found (set ETCD, ETCDCTL)" >&2; exit 1; }
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building raftkv and raftkv-bench with --profile dist"
  (cd "$ROOT" && cargo build --profile dist -p raftkv -p raftkv-bench)
fi
# The members run the executable users run: `raftkv server`.
RAFTKV=${RAFTKV:-$CARGO_TARGET_DIR/dist/raftkv}
BENCH=${BENCH:-$CARGO_TARGET_DIR/dist/raftkv-bench}
PROFILE_NOTE=${PROFILE_NOTE:-"profile dist"}

# Ports (below the ephemeral range): etcd 27381-27383 client / 27481-27483 peer; raftkv 28381-28383 / 28481-28483.
CLUSTER_PORTS="27380 28380" CLUSTER_NAME=compare
# shellcheck source=bench/cluster-lib.sh
source "$ROOT/bench/cluster-lib.sh"

leader_endpoint() { local l; l=$(leader_of "$1"); echo "127.0.0.1:$(( $(base_port "$1") + l ))"; }

# CPU time (clock ticks, user+sys) used so far by the three members of a system.
members_cpu_ticks() {
  local t=0 i
  for i in 1 2 3; do t=$((t + $(awk '{print $14 + $15}' "/proc/${PID[$1-$i]}/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Versions: $("$ETCD" --version | head -1); raftkv $(cd "$ROOT" && git rev-parse --short HEAD) ($PROFILE_NOTE)."
  echo "Both clusters: 3 members on 127.0.0.1, fsync on (defaults), --heartbeat-interval 100 --election-timeout 1000 --snapshot-count $SNAPSHOT_COUNT, started together and left running."
  echo "Load runs: ${DURATION}s each, ${ROUNDS} rounds, client = raftkv-bench (same binary for both), requests sent to the leader's endpoint (cases named *-all: spread over all three members); keys 8 B, values 256 B unless the case says otherwise."
} >"$OUT/notes.md"

log "starting both clusters (work dir $WORK)"
for sys in etcd raftkv; do for i in 1 2 3; do start_member "$sys" "$i"; done; done
for sys in etcd raftkv; do wait_ready "$sys"; done

# --- Resident memory (fresh clusters first, so only this load is in them) -------------------
if ((RSS_PUTS > 0)); then
log "RSS: $RSS_PUTS puts of 1 KiB over $RSS_KEYS keys with compaction every 2 s"
for sys in etcd raftkv; do
  "$BENCH" --endpoints "$(leader_endpoint "$sys")" --conns 10 --clients 100 --total "$RSS_PUTS" --no-progress -w json \
    put --key-size 8 --val-size 1024 --key-space-size "$RSS_KEYS" --compact-interval 2 \
    >"$OUT/rss-load-$sys.json" 2>>"$OUT/logs/bench.log" || log "RSS load against $sys failed"
  for i in 1 2 3; do echo "${sys}$i $(rss_kb "${PID[$sys-$i]}")"; done >"$OUT/rss-$sys.txt"
done
scale="the target's scale: 1,000,000 puts over 100,000 keys"
((RSS_PUTS == 1000000 && RSS_KEYS == 100000)) || scale="the target is 1,000,000 puts over 100,000 keys; RSS_PUTS=1000000 RSS_KEYS=100000 runs it in full"
echo "Memory: RSS read from /proc after ${RSS_PUTS} puts of 1 KiB values over ${RSS_KEYS} keys with compaction every 2 s ($scale)." >>"$OUT/notes.md"
fi

# --- Load cases --------------------------------------------------------------------------
"$ETCDCTL" --endpoints="$(endpoints etcd)" put foo bar >/dev/null
"$ETCDCTL" --endpoints="$(endpoints raftkv)" put foo bar >/dev/null
declare -a CASES=(
  "put-c1|--conns 1 --clients 1|put --key-size 8 --val-size 256 --key-space-size 100000"
  "put-c100|--conns 10 --clients 100|put --key-size 8 --val-size 256 --key-space-size 100000"
  "put-c1000|--conns 100 --clients 1000|put --key-size 8 --val-size 256 --key-space-size 100000"
  "range-l|--conns 100 --clients 1000|range foo --consistency l"
  "range-s|--conns 100 --clients 1000|range foo --consistency s"
  "txn-mixed|--conns 10 --clients 100|txn-mixed --key-size 8 --val-size 256 --key-space-size 10000 --read-ratio 0.5"
  # check perf's l and xl loads, driven by raftkv-bench instead of etcdctl: etcdctl itself
  # spends 114-136 us of CPU per write here (see the CPU lines of check perf), so on 2 cores
  # it alone would need 1.5-1.8 cores for xl's 13,500 writes/s. Same shape: one connection
  # per client over all three members, 276 B keys, 1 KiB values, the same target rate.
  "perf-l-all|--conns 500 --clients 500 --rate 8000|put --key-size 276 --val-size 1024 --key-space-size 1000000000"
  "perf-xl-all|--conns 1000 --clients 1000 --rate 15000|put --key-size 276 --val-size 1024 --key-space-size 1000000000"
)
for round in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name global workload <<<"$c"
    if [[ -n ${CASES_ONLY:-} && " $CASES_ONLY " != *" $name "* ]]; then continue; fi
    for sys in etcd raftkv; do
      log "round $round: $name against $sys"
      # shellcheck disable=SC2086
      ep=$(leader_endpoint "$sys")
      [[ $name == *-all ]] && ep=$(endpoints "$sys")  # cases named *-all spread over every member
      "$BENCH" --endpoints "$ep" $global --duration "$DURATION" --no-progress -w json $workload \
        >"$OUT/load/$sys-$name-r$round.json" 2>>"$OUT/logs/bench.log" || log "$name against $sys failed"
    done
  done
done

# --- etcdctl check perf ------------------------------------------------------------------
for load in $PERF_LOADS; do
  for sys in etcd raftkv; do
    log "etcdctl check perf --load=$load against $sys (60 s)"
    before=$(members_cpu_ticks "$sys")
    { TIMEFORMAT='%U %S'; time "$ETCDCTL" --endpoints="$(endpoints "$sys")" check perf --load="$load" >"$OUT/perf-$sys-$load.txt" 2>&1 || true; } 2>"$OUT/perf-$sys-$load.time"
    after=$(members_cpu_ticks "$sys")
    # Where the CPU went: on 2 cores the client's own share bounds what any server can reach.
    read -r cu cs <"$OUT/perf-$sys-$load.time" || true
    wps=$(grep -o '[0-9]* writes/s' "$OUT/perf-$sys-$load.txt" | head -1 | cut -d' ' -f1)
    awk -v u="${cu:-0}" -v s="${cs:-0}" -v m=$((after - before)) -v w="${wps:-0}" 'BEGIN {
      c = u + s; ms = m / 100; n = w * 60
      printf "CPU (s, user+sys) during the 60 s run: etcdctl %.1f, the 3 members %.1f", c, ms
      if (n > 0) printf " (per write: etcdctl %.0f us, members %.0f us)", c * 1e6 / n, ms * 1e6 / n
      printf "\n" }' >>"$OUT/perf-$sys-$load.txt"
  done
done

# --- Leader failover ---------------------------------------------------------------------
for trial in $(seq 1 "$FAILOVER_TRIALS"); do
  for sys in etcd raftkv; do
    l=$(leader_of "$sys")
    others=""
    for i in 1 2 3; do [[ $i == "$l" ]] || others+="127.0.0.1:$(( $(base_port "$sys") + i )),"; done
    log "failover trial $trial: killing $sys member $l"
    "$BENCH" --endpoints "${others%,}" -w json failover --kill-pid "${PID[$sys-$l]}" --give-up-after 30 \
      >>"$OUT/failover-$sys.jsonl" 2>>"$OUT/logs/bench.log" || log "failover trial against $sys failed"
    wait "${PID[$sys-$l]}" 2>/dev/null || true
    start_member "$sys" "$l"
    wait_ready "$sys"
  done
done

echo "Machine load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the bench client and all six members share these cores; the A/B alternation spreads load drift over both systems)." >>"$OUT/notes.md"
"$BENCH" compare-report --dir "$OUT" --markdown "$ROOT/bench/results/$REPORT_NAME.md" --svg "$ROOT/bench/results/$REPORT_NAME.svg" \
  --command "bench/compare.sh (DURATION=$DURATION ROUNDS=$ROUNDS FAILOVER_TRIALS=$FAILOVER_TRIALS RSS_PUTS=$RSS_PUTS RSS_KEYS=$RSS_KEYS); raw results in bench/out/$(basename "$OUT")"
cat "$ROOT/bench/results/$REPORT_NAME.md"
