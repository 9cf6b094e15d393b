#!/usr/bin/env bash
# Tear down the compose cluster: its containers, its network and its named volumes (the data
# dirs), nothing else. The image stays unless --image is given.
set -euo pipefail
. "$(dirname "$0")/docker-common.sh"

log "removing project $PROJECT (containers, network, volumes)"
compose --profile client down -v --remove-orphans --timeout 10
if [ "${1:-}" = --image ]; then
  log "removing image $RAFTKV_IMAGE"
  docker image rm "$RAFTKV_IMAGE" >/dev/null
fi
