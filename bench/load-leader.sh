#!/usr/bin/env bash
# Load without leader changes (issue 18): drive the load shapes that used to depose raftkv's
# leader at a 3-member raftkv cluster and a 3-member etcd 3.4 cluster, alternately, and
# report per run: errors by gRPC code, p99, and the leader and term before and after (from
# `etcdctl endpoint status`), plus the "leader lost"/election lines of the member logs.
#
#   bench/load-leader.sh [SHAPE...]      SHAPE: big (default), xl, or both
#
#   big: 500 clients / 50 connections writing 512 KiB values for DURATION s over all members
#   xl:  check perf's xl shape over all members (1,000 connections and clients, 15,000/s,
#        276 B keys, 1 KiB values), as compare.sh's perf-xl-all case
#
# Knobs (environment): DURATION (20), ROUNDS (1: each round runs etcd then raftkv),
# SNAPSHOT_COUNT (100000), RAFTKV / BENCH (default: target/release/{raftkv,raftkv-bench};
# nothing is built here), ETCD / ETCDCTL (from PATH), PORT_BASE (13000: etcd uses
# PORT_BASE+101..103 client and +111..113 peer, raftkv +201..203 and +211..213).
# Both clusters: fsync on, --heartbeat-interval 100 --election-timeout 1000, fresh data
# dirs per run. Prints one line per run and exits non-zero if any raftkv run had an error
# or a term change. Raw JSON and member logs stay in $OUT (printed at the end).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-1}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-100000}
RAFTKV=${RAFTKV:-$ROOT/target/release/raftkv}
BENCH=${BENCH:-$ROOT/target/release/raftkv-bench}
ETCD=${ETCD:-$(command -v etcd)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl)}
PORT_BASE=${PORT_BASE:-13000}
SHAPES=("$@")
[[ ${#SHAPES[@]} -gt 0 ]] || SHAPES=(big)
[[ ${SHAPES[0]} == both ]] && SHAPES=(big xl)
OUT=${OUT:-$(mktemp -d /tmp/load-leader.XXXXXX)}
export ETCDCTL_API=3

declare -A PID
cleanup() {
  for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$OUT/data"
}
trap cleanup EXIT INT TERM

port() { # system client|peer index
  local off=100
  [[ $1 == raftkv ]] && off=200
  [[ $2 == peer ]] && off=$((off + 10))
  echo $((PORT_BASE + off + $3))
}
endpoints() { echo "127.0.0.1:$(port "$1" client 1),127.0.0.1:$(port "$1" client 2),127.0.0.1:$(port "$1" client 3)"; }

start_cluster() { # system
  local sys=$1 i cluster="" cmd
  if [[ $sys == etcd ]]; then cmd=("$ETCD"); else cmd=("$RAFTKV" server); fi
  for i in 1 2 3; do cluster+="${sys}$i=http://127.0.0.1:$(port "$sys" peer "$i"),"; done
  for i in 1 2 3; do
    "${cmd[@]}" --name "${sys}$i" --data-dir "$OUT/data/$sys/m$i" \
      --listen-client-urls "http://127.0.0.1:$(port "$sys" client "$i")" \
      --advertise-client-urls "http://127.0.0.1:$(port "$sys" client "$i")" \
      --listen-peer-urls "http://127.0.0.1:$(port "$sys" peer "$i")" \
      --initial-advertise-peer-urls "http://127.0.0.1:$(port "$sys" peer "$i")" \
      --initial-cluster "${cluster%,}" --initial-cluster-token "load-leader-$sys" \
      --initial-cluster-state new --heartbeat-interval 100 --election-timeout 1000 \
      --snapshot-count "$SNAPSHOT_COUNT" >"$LOGS/$sys-m$i.log" 2>&1 &
    PID[$sys-$i]=$!
  done
  local deadline=$((SECONDS + 60))
  for i in 1 2 3; do
    until "$ETCDCTL" --endpoints="127.0.0.1:$(port "$sys" client "$i")" --command-timeout=2s \
      put load-leader-ready x >/dev/null 2>&1; do
      ((SECONDS < deadline)) || { echo "$sys member $i not ready; see $LOGS" >&2; exit 1; }
      sleep 0.2
    done
  done
}

stop_cluster() {
  local i
  for i in 1 2 3; do
    kill -9 "${PID[$1-$i]}" 2>/dev/null || true
    wait "${PID[$1-$i]}" 2>/dev/null || true
    unset "PID[$1-$i]"
  done
  rm -rf "$OUT/data/$1"
}

# "leader-id:term" as every member sees it, e.g. "8e9e05c52164694d:2 8e9e...:2 ..."
leader_terms() {
  local i s
  for i in 1 2 3; do
    s=$("$ETCDCTL" --endpoints="127.0.0.1:$(port "$1" client "$i")" --command-timeout=5s \
      endpoint status -w json 2>/dev/null | python3 -c \
      'import json,sys; h=json.load(sys.stdin)[0]["Status"]; print("%x:%d" % (h["leader"], h["raftTerm"]))' \
      2>/dev/null) || s="?"
    printf '%s ' "$s"
  done
}

run_shape() { # system shape round
  local sys=$1 shape=$2 r=$3 global workload
  case $shape in
    big) global="--conns 50 --clients 500 --duration $DURATION --request-timeout-ms 30000"
         workload="put --key-size 8 --val-size 524288 --key-space-size 1000" ;;
    xl) global="--conns 1000 --clients 1000 --rate 15000 --duration $DURATION"
        workload="put --key-size 276 --val-size 1024 --key-space-size 1000000000" ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
  LOGS=$OUT/logs/$shape-$r-$sys
  mkdir -p "$LOGS"
  start_cluster "$sys"
  local before after load json
  before=$(leader_terms "$sys")
  # shellcheck disable=SC2086
  "$BENCH" --endpoints "$(endpoints "$sys")" $global -w json $workload >"$LOGS/bench.json" 2>"$LOGS/bench.err" || true
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  after=$(leader_terms "$sys")
  local lost elected
  if [[ $sys == raftkv ]]; then
    lost=$(cat "$LOGS"/raftkv-m*.log | grep -c 'leader lost' || true)
    elected=$(cat "$LOGS"/raftkv-m*.log | grep -c 'leader elected' || true)
  else
    lost=$(cat "$LOGS"/etcd-m*.log | grep -c 'lost leader' || true)
    elected=$(cat "$LOGS"/etcd-m*.log | grep -c 'elected leader' || true)
  fi
  json=$(python3 - "$LOGS/bench.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("no report (%s)" % e); sys.exit()
l = r["latency"]
print("ok %d errors %s req/s %.0f p50 %.1f ms p99 %.1f ms max %.1f ms" % (
    r["ok"], json.dumps(r["errors_by_code"], separators=(",", ":")), r["throughput"],
    l.get("p50_ms", 0), l.get("p99_ms", 0), l["max_ms"]))
PY
)
  stop_cluster "$sys"
  echo "$shape round $r $sys: $json | leader:term before [$before] after [$after] | 'leader lost' lines $lost, elections $elected | load $load"
  if [[ $sys == raftkv ]]; then
    if [[ $json != *'errors {}'* ]] || [[ $before != "$after" ]] || [[ $lost != 0 ]]; then FAILED=1; fi
  fi
}

FAILED=0
mkdir -p "$OUT/logs" "$OUT/data"
echo "load-leader: $(nproc) cores, load average at start $(cut -d' ' -f1-3 /proc/loadavg); raftkv $(cd "$ROOT" && git rev-parse --short HEAD); $("$ETCD" --version | head -1)"
for ((r = 1; r <= ROUNDS; r++)); do
  for shape in "${SHAPES[@]}"; do
    for sys in etcd raftkv; do run_shape "$sys" "$shape" "$r"; done
  done
done
echo "raw reports and member logs: $OUT/logs"
exit $FAILED
