#!/usr/bin/env bash
# Build the image (unless it exists and RAFTKV_REBUILD is not 1), start the 3-member compose
# cluster and wait until every member reports ready (/readyz: it knows a leader).
# Env: RAFTKV_COMPOSE_PROJECT (default raftkv-demo), RAFTKV_IMAGE, RAFTKV_REBUILD=1,
#      RAFTKV_UP_TIMEOUT seconds (default 60),
#      RAFTKV_TLS_DIR  run the mutual-TLS variant with the certificates of scripts/gen-certs.sh.
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
mapfile -t CURL_TLS < <(member_curl_args)
for m in raftkv-0 raftkv-1 raftkv-2; do
  EP[$m]=$(member_endpoint "$m")
  [ -n "${EP[$m]}" ] || die "$m has no published client port (is it running? 'compose ps' tells)"
  until curl -fsS --max-time 1 "${CURL_TLS[@]}" "$SCHEME://${EP[$m]}/readyz" >/dev/null 2>&1; do
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
  printf '   %s  client endpoint %s://%s\n' "$m" "$SCHEME" "${EP[$m]}"
done
TLS_FLAGS=""
if [ "$SCHEME" = https ]; then
  TLS_FLAGS=" --cacert $RAFTKV_TLS_DIR/client/ca.pem --cert $RAFTKV_TLS_DIR/client/client.pem --key $RAFTKV_TLS_DIR/client/client-key.pem"
fi
echo "   e.g. etcdctl --endpoints $SCHEME://${EP[raftkv-0]}$TLS_FLAGS put greeting hello"
echo "        raftkv status -w table --endpoints $SCHEME://${EP[raftkv-0]},$SCHEME://${EP[raftkv-1]},$SCHEME://${EP[raftkv-2]}$TLS_FLAGS"
