#!/usr/bin/env bash
# The cost of TLS and of auth (issue 16's figures), measured side by side on loopback:
#   raftkv plain      3 members, http client and peer ports
#   raftkv tls        3 members, mutual TLS on both ports (scripts/gen-certs.sh certificates)
#   etcd tls          the same flags on etcd 3.4
#   raftkv auth       the plain cluster with auth enabled; requests carry a simple token of
#                     a user with READWRITE on the keys (not root: the permission check runs)
# Workloads (raftkv-bench, each DURATION s): put (100 clients / 10 conns, 256 B values over
# 100,000 keys), linearizable range of one key (100 clients / 10 conns), and put with one
# client. Systems alternate run by run, ROUNDS times, so drifting machine load hits all alike.
# Prints a markdown table (median of the rounds) and the load average; raw JSON in $OUT.
# Env: DURATION (5), ROUNDS (2), RAFTKV, BENCH (default target/release/{raftkv,raftkv-bench}),
#      ETCD, ETCDCTL, OUT (default bench/out/tls-auth-<time>).
# Ports 29300-29599 on 127.0.0.1: run it in a network namespace of its own on a shared machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-2}
RAFTKV=${RAFTKV:-$ROOT/target/release/raftkv}
BENCH=${BENCH:-$ROOT/target/release/raftkv-bench}
[[ -n ${ETCD:-} && -n ${ETCDCTL:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server etcdctl:etcd-client
ETCD=${ETCD:-$(command -v etcd)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl)}
OUT=${OUT:-$ROOT/bench/out/tls-auth-$(date -u +%Y%m%dT%H%M%SZ)}
export ETCDCTL_API=3
for b in "$RAFTKV" "$BENCH" "$ETCD" "$ETCDCTL"; do [[ -x $b ]] || { echo "missing $b" >&2; exit 1; }; done
WORK=$(mktemp -d /tmp/raftkv-tls-auth.XXXXXX)
mkdir -p "$OUT"
declare -A PID
cleanup() {
  for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

"$ROOT/scripts/gen-certs.sh" --out "$WORK/certs" 2>/dev/null
M=$WORK/certs/members C=$WORK/certs/client
CLIENT_TLS=(--cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client-key.pem")

# system -> base port; member i (1..3) listens on base+i (client) and base+100+i (peer).
declare -A BASE=([raftkv-plain]=29300 [raftkv-tls]=29310 [etcd-tls]=29320)
scheme() { [[ $1 == *-tls ]] && echo https || echo http; }
endpoints() {
  local s=$1 b=${BASE[$1]} out="" i
  for i in 1 2 3; do out+="$(scheme "$s")://127.0.0.1:$((b + i)),"; done
  echo "${out%,}"
}
tls_args() { [[ $1 == *-tls ]] && printf '%s\n' "${CLIENT_TLS[@]}"; return 0; }

start_cluster() {
  local s=$1 b=${BASE[$1]} sc i cluster="" cmd
  sc=$(scheme "$s")
  for i in 1 2 3; do cluster+="m$i=$sc://127.0.0.1:$((b + 100 + i)),"; done
  for i in 1 2 3; do
    if [[ $s == etcd-* ]]; then cmd=("$ETCD"); else cmd=("$RAFTKV" server); fi
    local extra=()
    if [[ $sc == https ]]; then
      local n=$((i - 1))
      extra=(--cert-file "$M/raftkv-$n.pem" --key-file "$M/raftkv-$n-key.pem" --trusted-ca-file "$M/ca.pem" --client-cert-auth
             --peer-cert-file "$M/raftkv-$n.pem" --peer-key-file "$M/raftkv-$n-key.pem" --peer-trusted-ca-file "$M/ca.pem" --peer-client-cert-auth)
    fi
    "${cmd[@]}" --name "m$i" --data-dir "$WORK/$s/m$i" \
      --listen-client-urls "$sc://127.0.0.1:$((b + i))" --advertise-client-urls "$sc://127.0.0.1:$((b + i))" \
      --listen-peer-urls "$sc://127.0.0.1:$((b + 100 + i))" --initial-advertise-peer-urls "$sc://127.0.0.1:$((b + 100 + i))" \
      --initial-cluster "${cluster%,}" --initial-cluster-token "tls-auth-$s" --initial-cluster-state new \
      --heartbeat-interval 100 --election-timeout 1000 --snapshot-count 100000 "${extra[@]}" \
      >>"$OUT/$s-m$i.log" 2>&1 &
    PID[$s-$i]=$!
  done
  local deadline=$(( $(date +%s) + 60 ))
  mapfile -t tls < <(tls_args "$s")
  until "$ETCDCTL" --endpoints "$(endpoints "$s")" "${tls[@]}" --command-timeout=2s put foo bar >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || { echo "$s did not come up" >&2; exit 1; }
    sleep 0.2
  done
}

# The auth variant: a user "bench" with READWRITE on every key, auth enabled.
enable_auth() {
  local ep
  ep=$(endpoints raftkv-plain)
  e() { "$ETCDCTL" --endpoints "$ep" "$@" >/dev/null; }
  e user add root:rootpw
  e user grant-role root root
  e role add bench
  e role grant-permission bench readwrite "" --from-key
  e user add bench:benchpw
  e user grant-role bench bench
  e auth enable
}

declare -a CASES=(
  "put-c1|--conns 1 --clients 1|put --key-size 8 --val-size 256 --key-space-size 100000"
  "put-c100|--conns 10 --clients 100|put --key-size 8 --val-size 256 --key-space-size 100000"
  "range-l-c100|--conns 10 --clients 100|range foo --consistency l"
)

run_case() { # system label global workload round
  local s=$1 label=$2 global=$3 workload=$4 r=$5 extra=()
  mapfile -t extra < <(tls_args "$s")
  [[ $label == raftkv-auth ]] && extra+=(--user bench:benchpw)
  # shellcheck disable=SC2086
  "$BENCH" --endpoints "$(endpoints "$s" | cut -d, -f1)" $global "${extra[@]}" --duration "$DURATION" \
    --no-progress -w json $workload >"$OUT/$label-${name}-r$r.json" 2>>"$OUT/bench.log" || log "$label $name failed"
}

log "starting raftkv plain, raftkv TLS, etcd TLS"
for s in raftkv-plain raftkv-tls etcd-tls; do start_cluster "$s"; done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name global workload <<<"$c"
    for s in raftkv-plain raftkv-tls etcd-tls; do
      log "round $r: $name against $s"
      run_case "$s" "$s" "$global" "$workload" "$r"
    done
  done
done
log "enabling auth on the plain raftkv cluster (user bench, READWRITE on every key)"
enable_auth
for r in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r name global workload <<<"$c"
    log "round $r: $name against raftkv with auth"
    run_case raftkv-plain raftkv-auth "$global" "$workload" "$r"
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$OUT" "$ROUNDS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, os, statistics, sys
out, rounds, before, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
systems = ["raftkv-plain", "raftkv-tls", "etcd-tls", "raftkv-auth"]
cases = ["put-c1", "put-c100", "range-l-c100"]
def med(label, case, key):
    vals = []
    for r in range(1, rounds + 1):
        p = os.path.join(out, f"{label}-{case}-r{r}.json")
        if os.path.exists(p) and os.path.getsize(p) > 0:
            j = json.load(open(p))
            if j["errors"] == 0 or j["ok"] > 0:
                vals.append(j["throughput"] if key == "tput" else j["latency"]["p99_ms"])
    return statistics.median(vals) if vals else float("nan")
print(f"load average before {before}, after {after}\n")
print("| case | " + " | ".join(systems) + " | TLS/plain (raftkv) | raftkv TLS / etcd TLS | auth/plain (raftkv) |")
print("|---|" + "---|" * (len(systems) + 3))
for c in cases:
    t = {s: med(s, c, "tput") for s in systems}
    p = {s: med(s, c, "p99") for s in systems}
    cells = [f"{t[s]:,.0f}/s, p99 {p[s]:.2f} ms" for s in systems]
    ratio = lambda a, b: f"{t[a]/t[b]:.2f}× req/s, {p[a]/p[b]:.2f}× p99"
    print(f"| {c} | " + " | ".join(cells) + f" | {ratio('raftkv-tls','raftkv-plain')} | {ratio('raftkv-tls','etcd-tls')} | {ratio('raftkv-auth','raftkv-plain')} |")
PY
