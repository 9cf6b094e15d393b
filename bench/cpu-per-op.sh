#!/usr/bin/env bash
# Where the CPU goes: starts a 3-member cluster of etcd or raftkv on loopback (fsync on), runs
# one raftkv-bench load against it and prints the CPU time (user+sys, from /proc) that each
# member, the leader's threads and the bench client used, per request.
#
# Usage: bench/cpu-per-op.sh etcd|raftkv "GLOBAL BENCH FLAGS" "WORKLOAD" [all]
#   e.g. bench/cpu-per-op.sh raftkv "--conns 100 --clients 1000 --duration 5" "put --val-size 256"
#   With "all" as the 4th argument the load is spread over every member instead of the leader.
# RAFTKV and BENCH name the binaries (default: the dist build in target/); raftkv members run
# as `raftkv server`, the executable users run. Ports 29381-29383
# and 29481-29483 (raftkv), 29581-29583 and 29681-29683 (etcd).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SYS=$1 GLOBAL=$2 WORKLOAD=$3 SPREAD=${4:-leader}
RAFTKV=${RAFTKV:-${CARGO_TARGET_DIR:-$ROOT/target}/dist/raftkv}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/dist/raftkv-bench}
[[ $SYS == etcd || $SYS == raftkv ]] || { echo "first argument: etcd or raftkv" >&2; exit 2; }
"$ROOT/scripts/ensure-packages.sh" etcd:etcd-server etcdctl:etcd-client
base=29380 cmd=("$RAFTKV" server)
[[ $SYS == etcd ]] && base=29580 cmd=("$(command -v etcd)")
WORK=$(mktemp -d /tmp/raftkv-cpu.XXXXXX)
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
cluster=""
for j in 1 2 3; do cluster+="m$j=http://127.0.0.1:$((base + 100 + j)),"; done
for i in 1 2 3; do
  "${cmd[@]}" --name "m$i" --data-dir "$WORK/m$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 100 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 100 + i))" \
    --initial-cluster "${cluster%,}" --initial-cluster-token cpu --initial-cluster-state new \
    --heartbeat-interval 100 --election-timeout 1000 >"$WORK/m$i.log" 2>&1 &
  pids+=($!)
done
all="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
deadline=$((SECONDS + 30))
until ETCDCTL_API=3 etcdctl --endpoints="$all" --command-timeout=2s put cpu-ready x >/dev/null 2>&1; do
  ((SECONDS < deadline)) || { echo "cluster not ready; logs in $WORK" >&2; trap - EXIT; exit 1; }
  sleep 0.2
done
leader=""
for i in 1 2 3; do
  f=$(ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$((base + i))" endpoint status -w fields 2>/dev/null) || continue
  [[ $(awk -F' : ' '/"MemberID"/ {print $2}' <<<"$f") == $(awk -F' : ' '/"Leader"/ {print $2}' <<<"$f") ]] && leader=$i
done
[[ -n $leader ]] || { echo "no leader found" >&2; exit 1; }
endpoints="127.0.0.1:$((base + leader))"
[[ $SPREAD == all ]] && endpoints=$all
ticks() { awk '{print $14 + $15}' "$1"; }
declare -a before
for k in 0 1 2; do before[k]=$(ticks "/proc/${pids[k]}/stat"); done
declare -A tbefore
for t in /proc/${pids[leader-1]}/task/*; do tbefore[$t]=$(ticks "$t/stat"); done
# shellcheck disable=SC2086
/usr/bin/env TIMEFORMAT='%U %S' bash -c "time '$BENCH' --endpoints '$endpoints' $GLOBAL --no-progress -w json $WORKLOAD >'$WORK/out.json'" 2>"$WORK/bench.time"
ops=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ok'])" "$WORK/out.json")
rate=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['throughput']))" "$WORK/out.json")
hz=$(getconf CLK_TCK)
per_op() { awk -v t="$1" -v n="$ops" -v hz="$hz" 'BEGIN { printf "%.1f", (n > 0) ? t / hz * 1e6 / n : 0 }'; }
echo "$SYS: $ops requests, $rate req/s; CPU µs per request:"
for k in 0 1 2; do
  role=follower; ((k + 1 == leader)) && role=leader
  echo "  member $((k + 1)) ($role): $(per_op $(( $(ticks "/proc/${pids[k]}/stat") - before[k] )))"
done
declare -A by_name
for t in /proc/${pids[leader-1]}/task/*; do
  [[ -n ${tbefore[$t]:-} ]] || continue
  name=$(cat "$t/comm")
  by_name[$name]=$(( ${by_name[$name]:-0} + $(ticks "$t/stat") - tbefore[$t] ))
done
for name in "${!by_name[@]}"; do echo "    leader threads '$name': $(per_op "${by_name[$name]}")"; done
read -r bu bs <"$WORK/bench.time"
echo "  bench client: $(awk -v u="$bu" -v s="$bs" -v n="$ops" 'BEGIN { printf "%.1f", (u + s) * 1e6 / n }')"
