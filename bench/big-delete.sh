#!/usr/bin/env bash
# One DeleteRange of N keys while a small writer goes on: what a long apply does to a
# member (issue 18). Starts a 3-member cluster of SYSTEM (raftkv or etcd) on loopback,
# fills N keys (16-byte keys, 64-byte values, so the fill is quick), then, while a
# writer puts one key at 100/s at the leader, deletes them all in one request. Prints:
# the delete's time, the writer's p50/p99/max and errors during it, the term before and
# after (a leader change), and what the raftkv members logged about slow node-loop rounds
# and slow applies.
#
# Usage: bench/big-delete.sh raftkv|etcd [N]     (N: 500000)
# RAFTKV, BENCH, ETCD, ETCDCTL name the binaries (default: release raftkv, raftkv-bench from
# target/release; etcd from Debian). Ports 26381-26383 / 26481-26483 (raftkv) and
# 26581-26583 / 26681-26683 (etcd). About a minute per run at N = 500,000.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SYSTEM=${1:?usage: bench/big-delete.sh raftkv|etcd [N]}
N=${2:-500000}
export ETCDCTL_API=3
[[ -n ${ETCD:-} && -n ${ETCDCTL:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server etcdctl:etcd-client >/dev/null
ETCD=${ETCD:-$(command -v etcd)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl)}
RAFTKV=${RAFTKV:-$ROOT/target/release/raftkv}
BENCH=${BENCH:-$ROOT/target/release/raftkv-bench}
WORK=$(mktemp -d /tmp/raftkv-big-delete.XXXXXX)
OUT=$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)-big-delete-$SYSTEM
mkdir -p "$OUT/logs"
CLUSTER_PORTS="26580 26380" CLUSTER_NAME=bigdel SNAPSHOT_COUNT=100000
# shellcheck source=bench/cluster-lib.sh
source "$ROOT/bench/cluster-lib.sh"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

for i in 1 2 3; do start_member "$SYSTEM" "$i"; done
wait_ready "$SYSTEM"
L=$(leader_of "$SYSTEM")
LEADER=$(client_url "$SYSTEM" "$L")
term() { "$ETCDCTL" --endpoints="$LEADER" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["raftTerm"])'; }
log "filling $N keys"
"$BENCH" --endpoints "$(endpoints "$SYSTEM")" --conns 50 --clients 500 -w json --no-progress put \
  --key-size 16 --val-size 64 --key-space-size "$N" --fill --total "$N" >"$OUT/fill.json"
TERM_BEFORE=$(term)
log "writer at 100/s, then the delete"
"$BENCH" --endpoints "${LEADER#http://}" --conns 1 --clients 4 -w json --no-progress put --key-size 8 --val-size 16 \
  --key-space-size 1 --rate 100 --duration 12 >"$OUT/writer.json" &
WRITER=$!
sleep 3
start=$(date +%s.%N)
"$ETCDCTL" --endpoints="$LEADER" --command-timeout=60s del "" --from-key >"$OUT/del.txt"
end=$(date +%s.%N)
wait "$WRITER"
TERM_AFTER=$(term)
python3 - "$OUT" "$start" "$end" "$TERM_BEFORE" "$TERM_AFTER" "$SYSTEM" <<'EOF'
import json, sys, re, glob
out, start, end, tb, ta, system = sys.argv[1:]
w = json.load(open(f"{out}/writer.json"))
deleted = open(f"{out}/del.txt").read().strip()
print(f"{system}: deleted {deleted} keys in {float(end) - float(start):.2f} s; term {tb} -> {ta}")
lat = w["latency"]
print(f"  writer (100 puts/s for 12 s around it): {w['ok']} puts, errors {w['errors']}, "
      f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms")
for f in sorted(glob.glob(f"{out}/logs/*.log")):
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(f).read())
    slow_rounds = [l for l in text.splitlines() if "node loop round took longer" in l]
    slow_applies = [l for l in text.splitlines() if "applying committed entries took too long" in l]
    lost = sum(1 for l in text.splitlines() if "leader lost" in l)
    worst = max((int(x) for l in slow_rounds for x in re.findall(r'took_ms\D{0,8}?(\d+)', l)), default=0)
    worst_apply = max((int(x) for l in slow_applies for x in re.findall(r'took_ms\D{0,8}?(\d+)', l)), default=0)
    print(f"  {f.rsplit('/', 1)[1]}: slow node-loop rounds {len(slow_rounds)} (longest {worst} ms), "
          f"slow applies {len(slow_applies)} (longest {worst_apply} ms), 'leader lost' {lost}")
print(f"  logs: {out}/logs")
EOF
