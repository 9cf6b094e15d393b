#!/usr/bin/env bash
# The assignment's validation on the kind cluster (after kind-up.sh and kind-deploy.sh):
#   1. run the client Job (`raftkv demo` inside the cluster) and print its report;
#   2. find the leader, write a marker key through it;
#   3. delete the leader's pod; time the election of a new leader among the other two;
#      wait for the StatefulSet to recreate the pod and for it to be ready;
#   4. check that the recreated member has the marker in its own state (a local read).
# RAFTKV_KILL_NODE=1 then also stops the leader's whole kind node (`docker stop`), as the
# assignment's last step does, and checks the same recovery once the node is back.
set -euo pipefail
. "$(dirname "$0")/kind-common.sh"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
kubectl config get-contexts "$KCTX" >/dev/null 2>&1 || die "no kind cluster $CLUSTER (run scripts/kind-up.sh)"

EPS=$(endpoints)
PODS=(raftkv-0 raftkv-1 raftkv-2)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# Whether pod $1's member says it is the leader (asked over the pod's own loopback).
# `raftkv status -w simple` prints "endpoint, id, version, size, is-leader, ...".
is_leader() {
  [ "$(rk "$1" status -w simple --endpoints http://127.0.0.1:2379 --command-timeout 1s 2>/dev/null |
    awk -F', ' 'NR==1{print $5}')" = true ]
}
# The leader among the pods given as arguments (empty if none claims it).
leader_among() {
  local p
  for p in "$@"; do if is_leader "$p"; then echo "$p"; return 0; fi; done
  return 1
}
# Waits (up to $1 s) until command "${@:2}" succeeds.
wait_for() {
  local limit=$1 t0; shift
  t0=$(date +%s)
  until "$@"; do
    [ $(( $(date +%s) - t0 )) -lt "$limit" ] || return 1
    sleep 0.2
  done
}
# The marker, read locally (serializable) from pod $1's own member state.
has_marker() {
  [ "$(rk "$1" get --consistency s --print-value-only --endpoints http://127.0.0.1:2379 "$MARKER" 2>/dev/null)" = present ]
}
pod_uid() { k get pod "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null || true; }
pod_ready() { [ "$(k get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
new_pod_ready() { [ "$(pod_uid "$1")" != "$2" ] && [ -n "$(pod_uid "$1")" ] && pod_ready "$1"; }

log "members"
k rollout status statefulset/raftkv --timeout=300s
k get pods -o wide -l app.kubernetes.io/component=member

log "1. the client Job: raftkv demo from inside the cluster"
# The client runs the same image as the members (kind-deploy.sh tags each build uniquely).
IMAGE_REF=$(k get statefulset raftkv -o jsonpath='{.spec.template.spec.containers[0].image}')
k delete job raftkv-scenario --ignore-not-found >/dev/null
render | kubectl --context "$KCTX" apply -f - -l app.kubernetes.io/component=client >/dev/null
if ! k wait --for=condition=complete job/raftkv-scenario --timeout=300s; then
  k logs job/raftkv-scenario --tail=50 || true
  die "the client Job did not complete"
fi
k logs job/raftkv-scenario

log "2. the leader, and a marker written through it"
LEADER=$(wait_for 30 leader_among "${PODS[@]}" >/dev/null && leader_among "${PODS[@]}") || die "no leader found"
MARKER=recovery/marker-$(date +%s)
rk "$LEADER" put --endpoints "$EPS" "$MARKER" present >/dev/null
rk "$LEADER" status -w table --endpoints "$EPS"
echo "leader: $LEADER on node $(k get pod "$LEADER" -o jsonpath='{.spec.nodeName}')"

log "3. deleting the leader's pod $LEADER"
OTHERS=()
for p in "${PODS[@]}"; do [ "$p" = "$LEADER" ] || OTHERS+=("$p"); done
OLD_UID=$(pod_uid "$LEADER")
t0=$(now)
k delete pod "$LEADER" --wait=false >/dev/null
wait_for 60 leader_among "${OTHERS[@]}" >/dev/null || die "no new leader among ${OTHERS[*]} within 60 s"
echo "==> new leader $(leader_among "${OTHERS[@]}") after $(since "$t0") s"
wait_for 300 new_pod_ready "$LEADER" "$OLD_UID" || die "$LEADER was not recreated and ready within 300 s"
echo "==> $LEADER recreated on $(k get pod "$LEADER" -o jsonpath='{.spec.nodeName}') and ready after $(since "$t0") s"

log "4. recovery of $LEADER"
wait_for 60 has_marker "$LEADER" || die "$LEADER does not have the marker written before its deletion"
echo "==> $LEADER has the marker written before its deletion: recovered"
rk "${OTHERS[0]}" status -w table --endpoints "$EPS"

if [ "${RAFTKV_KILL_NODE:-0}" = 1 ]; then
  need docker "https://docs.docker.com/engine/install/"
  LEADER=$(wait_for 30 leader_among "${PODS[@]}" >/dev/null && leader_among "${PODS[@]}") || die "no leader found"
  NODE=$(k get pod "$LEADER" -o jsonpath='{.spec.nodeName}')
  MARKER=recovery/node-marker-$(date +%s)
  rk "$LEADER" put --endpoints "$EPS" "$MARKER" present >/dev/null
  OTHERS=()
  for p in "${PODS[@]}"; do [ "$p" = "$LEADER" ] || OTHERS+=("$p"); done
  log "5. stopping the leader's node $NODE (docker stop), leader $LEADER"
  t0=$(now)
  docker stop "$NODE" >/dev/null
  wait_for 60 leader_among "${OTHERS[@]}" >/dev/null || { docker start "$NODE" >/dev/null; die "no new leader within 60 s"; }
  echo "==> new leader $(leader_among "${OTHERS[@]}") after $(since "$t0") s"
  node_not_ready() { [ "$(kubectl --context "$KCTX" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" != True ]; }
  wait_for 180 node_not_ready || { docker start "$NODE" >/dev/null; die "$NODE never became NotReady"; }
  echo "==> $NODE is NotReady; force-deleting $LEADER (Kubernetes cannot know it is dead)"
  OLD_UID=$(pod_uid "$LEADER")
  k delete pod "$LEADER" --force --grace-period=0 >/dev/null 2>&1 || true
  k get pod "$LEADER" -o wide || true
  echo "==> its volume lives on $NODE: starting the node again"
  docker start "$NODE" >/dev/null
  wait_for 300 new_pod_ready "$LEADER" "$OLD_UID" || die "$LEADER did not come back within 300 s"
  wait_for 60 has_marker "$LEADER" || die "$LEADER lacks the marker after the node came back"
  echo "==> $LEADER is back on $(k get pod "$LEADER" -o jsonpath='{.spec.nodeName}') with its data: recovered"
fi

echo "PASS: scenario, leader pod deletion and recovery"
