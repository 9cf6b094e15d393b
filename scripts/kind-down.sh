#!/usr/bin/env bash
# Delete the kind cluster `raftkv` (with its volumes) and the local registry container that
# scripts/kind-up.sh started. Nothing else.
set -euo pipefail
. "$(dirname "$0")/kind-common.sh"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
fi
if docker inspect "$REG_NAME" >/dev/null 2>&1; then
  log "removing registry container $REG_NAME"
  docker rm -f "$REG_NAME" >/dev/null
fi
