#!/usr/bin/env bash
# Scale the compose cluster of scripts/docker-up.sh to N members (3, 4 or 5) with no member
# commands (docs/membership.md, "Scaling by itself").
#   up:   starts raftkv-3 (and raftkv-4) of the `scale` profile on empty volumes; each asks the
#         founders to add it (--auto-join), joins, and is promoted by the leader once caught
#         up. The script waits until each one is ready.
#   down: stops and removes the highest members' containers and their volumes; the leader
#         removes them from the cluster by itself once their names stop resolving and they
#         stay unreachable for RAFTKV_AUTO_REMOVE_DEPARTED_AFTER (compose.yaml: 30s). The
#         script waits until the member list no longer shows them.
# Usage: scripts/docker-scale.sh N
# Env:   as scripts/docker-up.sh; RAFTKV_SCALE_TIMEOUT seconds per step (default 120).
set -euo pipefail
. "$(dirname "$0")/docker-common.sh"

N=${1:-}
case "$N" in 3|4|5) ;; *) die "usage: $(basename "$0") N   (N = 3, 4 or 5)" ;; esac
[ -z "${RAFTKV_TLS_DIR:-}" ] || die "the TLS variant has no members beyond raftkv-0..2"
TIMEOUT=${RAFTKV_SCALE_TIMEOUT:-120}
scale() { compose --profile scale "$@"; }

# The member list as raftkv-0 sees it (its published client port, through the JSON gateway).
member_list() {
  local ep
  ep=$(member_endpoint raftkv-0)
  [ -n "$ep" ] || die "raftkv-0 is not running (scripts/docker-up.sh starts the cluster)"
  curl -fsS --max-time 5 -X POST -d '{}' "http://$ep/v3/cluster/member/list"
}

wait_until() { # DESCRIPTION COMMAND...
  local what=$1 deadline=$(( $(date +%s) + TIMEOUT ))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

listed() { member_list 2>/dev/null | grep -q "http://$1:2380"; }
not_listed() { member_list >/dev/null 2>&1 && ! listed "$1"; }
ready() {
  local ep
  ep=$(scale port "$1" 2379 2>/dev/null | tail -n1)
  [ -n "$ep" ] && curl -fsS --max-time 1 "http://$ep/readyz" >/dev/null 2>&1
}

for i in 3 4; do
  m=raftkv-$i
  if [ "$i" -lt "$N" ]; then
    if ready "$m"; then continue; fi
    log "starting $m"
    start=$(date +%s.%N)
    scale up -d --no-recreate "$m"
    wait_until "$m to be ready" ready "$m"
    wait_until "$m to be listed" listed "$m"
    log "$m ready and listed $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s after start"
  fi
done
# Down: every departing container and volume first, then wait for the cluster to remove them
# all (the leader removes one at a time, each once it has been gone long enough).
departing=()
for i in 4 3; do
  m=raftkv-$i
  if [ "$i" -ge "$N" ]; then
    if scale ps -q "$m" 2>/dev/null | grep -q .; then
      log "stopping and removing $m and its volume"
      scale rm -s -f "$m" >/dev/null
    fi
    docker volume rm -f "${PROJECT}_data-$i" >/dev/null 2>&1 || true
    if listed "$m"; then departing+=("$m"); fi
  fi
done
if [ "${#departing[@]}" -gt 0 ]; then
  start=$(date +%s.%N)
  for m in "${departing[@]}"; do
    wait_until "the cluster to remove $m" not_listed "$m"
    log "$m removed by the cluster $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s after the containers went"
  done
fi
log "members now (peer URLs): $(member_list | grep -o 'http://raftkv-[0-9]*:2380' | sort -u | paste -sd' ')"
