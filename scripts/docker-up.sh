#!/usr/bin/env bash
# Build the image (unless it exists and RAFTKV_REBUILD is not 1), start the 3-member compose
# cluster and wait until every member reports ready (/readyz: it knows a leader).
# Env: RAFTKV_COMPOSE_PROJECT (default raftkv-demo), RAFTKV_IMAGE, RAFTKV_REBUILD=1,
#      RAFTKV_UP_TIMEOUT seconds (default 60).
set -euo pipefail
. "$(dirname "$0")/docker-common.sh"

if [ "${RAFTKV_REBUILD:-0}" = 1 ] || ! docker image inspect "$RAFTKV_IMAGE" >/dev/null 2>&1; then
  RAFTKV_IMAGE_NAME=${RAFTKV_IMAGE%:*} RAFTKV_TAG=${RAFTKV_IMAGE##*:}
  RAFTKV_IMAGE=$RAFTKV_IMAGE_NAME RAFTKV_TAG=$RAFTKV_TAG "$REPO_ROOT/scripts/docker-build.sh" >/dev/null
fi

log "starting project $PROJECT with $RAFTKV_IMAGE"
start=$(date +%s.%N)
compose up -d raftkv-0 raftkv-1 raftkv-2

deadline=$(( $(date +%s) + ${RAFTKV_UP_TIMEOUT:-60} ))
declare -A EP
for m in raftkv-0 raftkv-1 raftkv-2; do
  EP[$m]=$(member_endpoint "$m")
  [ -n "${EP[$m]}" ] || die "$m has no published client port (is it running? 'compose ps' tells)"
  until curl -fsS --max-time 1 "http://${EP[$m]}/readyz" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      compose logs --tail 30 "$m" >&2 || true
      die "$m did not become ready within ${RAFTKV_UP_TIMEOUT:-60}s (logs above); scripts/docker-down.sh cleans up"
    fi
    sleep 0.2
  done
done
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
log "all 3 members ready ${elapsed}s after 'up'"
for m in raftkv-0 raftkv-1 raftkv-2; do
  printf '   %s  client endpoint http://%s\n' "$m" "${EP[$m]}"
done
echo "   e.g. etcdctl --endpoints ${EP[raftkv-0]} put greeting hello"
echo "        raftkv status -w table --endpoints ${EP[raftkv-0]},${EP[raftkv-1]},${EP[raftkv-2]}"
