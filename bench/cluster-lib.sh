# Shared by the side-by-side benchmarks (bench/compare.sh, bench/lease.sh): a 3-member etcd
# and a 3-member raftkv cluster on loopback with the same flags, their cleanup, and the
# leader/readiness probes. Source it after setting:
#   ETCD, ETCDCTL, RAFTKV   the executables
#   WORK, OUT               data dirs go under $WORK/<system>/m<i>, logs to $OUT/logs
#   CLUSTER_PORTS           "ETCD_BASE RAFTKV_BASE": member i listens on BASE+i (client) and
#                           BASE+100+i (peer); keep them below 32768 and apart per script
#   CLUSTER_NAME            the --initial-cluster-token prefix and the readiness key's prefix
#   SNAPSHOT_COUNT          --snapshot-count for both systems
#   RAFTKV_FLAGS            (optional) extra flags for the raftkv members
#   ETCD_FLAGS              (optional) extra flags for the etcd members

declare -A PID         # "<system>-<i>" -> pid of a member this script started
cleanup() {
  for k in "${!PID[@]}"; do kill -9 "${PID[$k]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

base_port() { read -r e r <<<"$CLUSTER_PORTS"; [[ $1 == etcd ]] && echo "$e" || echo "$r"; }
client_url() { echo "http://127.0.0.1:$(( $(base_port "$1") + $2 ))"; }
peer_url() { echo "http://127.0.0.1:$(( $(base_port "$1") + 100 + $2 ))"; }
endpoints() { echo "127.0.0.1:$(( $(base_port "$1") + 1 )),127.0.0.1:$(( $(base_port "$1") + 2 )),127.0.0.1:$(( $(base_port "$1") + 3 ))"; }

start_member() { # system index
  local sys=$1 i=$2 cmd cluster=""
  local extra=()
  if [[ $sys == etcd ]]; then
    read -ra extra <<<"${ETCD_FLAGS:-}"
    cmd=("$ETCD" "${extra[@]}")
  else
    read -ra extra <<<"${RAFTKV_FLAGS:-}"
    cmd=("$RAFTKV" server "${extra[@]}")
  fi
  for j in 1 2 3; do cluster+="${sys}$j=$(peer_url "$sys" $j),"; done
  "${cmd[@]}" --name "${sys}$i" --data-dir "$WORK/$sys/m$i" \
    --listen-client-urls "$(client_url "$sys" "$i")" --advertise-client-urls "$(client_url "$sys" "$i")" \
    --listen-peer-urls "$(peer_url "$sys" "$i")" --initial-advertise-peer-urls "$(peer_url "$sys" "$i")" \
    --initial-cluster "${cluster%,}" --initial-cluster-token "$CLUSTER_NAME-$sys" --initial-cluster-state new \
    --heartbeat-interval 100 --election-timeout 1000 --snapshot-count "$SNAPSHOT_COUNT" \
    >>"$OUT/logs/$sys-m$i.log" 2>&1 &
  PID[$sys-$i]=$!
}

# Index (1-3) of the current leader of a system, polled until a member says it leads.
leader_of() {
  local sys=$1 deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    for i in 1 2 3; do
      local f id leader
      f=$("$ETCDCTL" --endpoints="$(client_url "$sys" "$i")" --command-timeout=2s endpoint status -w fields 2>/dev/null) || continue
      id=$(awk -F' : ' '/"MemberID"/ {print $2}' <<<"$f")
      leader=$(awk -F' : ' '/"Leader"/ {print $2}' <<<"$f")
      if [[ -n $id && $id == "$leader" ]]; then echo "$i"; return 0; fi
    done
    sleep 0.2
  done
  echo "no leader in $sys after 30s" >&2; return 1
}

# Waits until a put through every member succeeds.
wait_ready() {
  local sys=$1 deadline=$((SECONDS + 60))
  for i in 1 2 3; do
    until "$ETCDCTL" --endpoints="$(client_url "$sys" "$i")" --command-timeout=2s put "$CLUSTER_NAME-ready" x >/dev/null 2>&1; do
      ((SECONDS < deadline)) || { echo "$sys member $i not ready after 60s; see $OUT/logs" >&2; return 1; }
      sleep 0.2
    done
  done
}
