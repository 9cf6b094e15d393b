#!/usr/bin/env bash
# Resident memory of a member restarted from its own snapshot, against the same member before
# the restart and against etcd 3.4 in the same run (issue 18, "memory at small and medium
# scale").
#
# For each system: one member on loopback (fsync on) with --snapshot-count SNAPSHOT_COUNT,
# PUTS puts of VALUE_SIZE-byte values over KEYS keys (raftkv-bench, 100 clients, every one
# acknowledged), a wait until the member has taken the run's last snapshot, a few seconds to
# settle, VmRSS; then SIGTERM, a restart from the same data dir, a wait until it answers a
# read, a few seconds for the allocator to settle, VmRSS again. Prints one table row per system and binary. Every wait polls with a deadline.
#
# Usage: bench/restart-rss.sh [raftkv binaries...]   (default: the release build's raftkv)
# Knobs: PUTS (200000), KEYS (100000), VALUE_SIZE (1024), SNAPSHOT_COUNT (50000), SETTLE (3, s),
# BENCH (raftkv-bench), ETCD (etcd; ETCD=none skips it). Ports 29791 and 29891.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PUTS=${PUTS:-200000} KEYS=${KEYS:-100000} VALUE_SIZE=${VALUE_SIZE:-1024}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-50000} SETTLE=${SETTLE:-3}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/raftkv-bench}
BINARIES=("$@")
((${#BINARIES[@]})) || BINARIES=("${CARGO_TARGET_DIR:-$ROOT/target}/release/raftkv")
if [[ ${ETCD:-} != none ]]; then
  [[ -n ${ETCD:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server >/dev/null
  ETCD=${ETCD:-$(command -v etcd)}
fi
WORK=$(mktemp -d /tmp/raftkv-restart-rss.XXXXXX)
PID=""
trap '[[ -n $PID ]] && kill -9 "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
URL=http://127.0.0.1:29791 PEER=http://127.0.0.1:29891

# Runs raftkv-bench with the given arguments; succeeds only if every request succeeded (the
# tool exits 0 when requests fail or time out, and counts them in its report).
bench_ok() {
  local out
  out=$("$BENCH" --endpoints "$URL" --no-progress -w json "$@" 2>/dev/null) || return 1
  python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
e = r.get("errors", 0)
e = sum(e.values()) if isinstance(e, dict) else e
sys.exit(0 if e == 0 and r.get("ok", 1) > 0 else 1)' <<<"$out"
}
rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
start() { # program... ; starts the member on $WORK/data
  "$@" --name m1 --data-dir "$WORK/data" --listen-client-urls "$URL" --advertise-client-urls "$URL" \
    --listen-peer-urls "$PEER" --initial-advertise-peer-urls "$PEER" --initial-cluster "m1=$PEER" \
    --initial-cluster-state new --snapshot-count "$SNAPSHOT_COUNT" >>"$WORK/member.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 120))
  until bench_ok --total 1 range probe; do
    ((SECONDS < deadline)) || { echo "member did not answer within 120 s" >&2; tail "$WORK/member.log" >&2; exit 1; }
    sleep 0.2
  done
}
stop() {
  kill -TERM "$PID"
  local deadline=$((SECONDS + 30))
  while kill -0 "$PID" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill -9 "$PID"; break; }
    sleep 0.1
  done
  wait "$PID" 2>/dev/null || true
  PID=""
}
# The highest index among the data dir's snapshot files (<term>-<index>.snap in hex, as both
# systems name them), 0 if none.
newest_snapshot_index() {
  local max=0 f i
  while IFS= read -r f; do
    i=${f%.snap}
    i=$((16#${i#*-}))
    ((i > max)) && max=$i
  done < <(find "$WORK/data" -name '*.snap' -printf '%f\n')
  echo "$max"
}
# Until the data dir holds the run's last snapshot (index >= PUTS - SNAPSHOT_COUNT).
wait_for_snapshot() {
  local deadline=$((SECONDS + 120))
  until (($(newest_snapshot_index) >= PUTS - SNAPSHOT_COUNT)); do
    ((SECONDS < deadline)) || { echo "no snapshot within 120 s" >&2; exit 1; }
    sleep 0.2
  done
}
measure() { # label, program...
  local label=$1
  shift
  rm -rf "$WORK/data" "$WORK/member.log"
  start "$@"
  bench_ok --conns 10 --clients 100 --total "$PUTS" \
    put --key-size 16 --val-size "$VALUE_SIZE" --key-space-size "$KEYS" ||
    { echo "the load had failed requests" >&2; exit 1; }
  wait_for_snapshot
  sleep "$SETTLE" # for the allocator to give back what the load freed, not a synchronisation
  local before
  before=$(rss_mb "$PID")
  stop
  start "$@"
  sleep "$SETTLE"
  printf '| %s | %s | %s | %s |\n' "$label" "$before" "$(rss_mb "$PID")" \
    "$(du -sm "$WORK/data" | cut -f1)"
  stop
}

echo "PUTS=$PUTS KEYS=$KEYS VALUE_SIZE=$VALUE_SIZE SNAPSHOT_COUNT=$SNAPSHOT_COUNT; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| member | RSS before the restart, MB | RSS after the restart, MB | data dir, MB |"
echo "|---|---|---|---|"
for bin in "${BINARIES[@]}"; do measure "raftkv $bin" "$bin" server; done
[[ ${ETCD:-} == none ]] || measure "etcd $("$ETCD" --version | head -1 | awk '{print $3}')" "$ETCD"
