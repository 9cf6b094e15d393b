#!/usr/bin/env bash
# Create the kind cluster `raftkv` (1 control plane + 4 workers) wired to a local registry on
# 127.0.0.1:5001, as the course's kind-with-registry.sh did. Idempotent.
set -euo pipefail
. "$(dirname "$0")/kind-common.sh"
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"

if [ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null || true)" != true ]; then
  log "starting the local registry $REG_NAME on 127.0.0.1:$REG_PORT"
  docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always --name "$REG_NAME" -p "127.0.0.1:$REG_PORT:5000" registry:2 >/dev/null
fi

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "kind cluster $CLUSTER exists"
else
  log "creating kind cluster $CLUSTER: 1 control plane, 4 workers"
  # containerd reads per-registry settings from /etc/containerd/certs.d (filled in below).
  kind create cluster --name "$CLUSTER" --wait 120s --config - <<KEOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
nodes:
  - role: control-plane
  - role: worker
  - role: worker
  - role: worker
  - role: worker
KEOF
fi

# Inside a node, localhost:$REG_PORT is the node itself: send pulls of that name to the
# registry container over the kind network instead.
for node in $(kind get nodes --name "$CLUSTER"); do
  docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$REG_PORT"
  printf '[host."http://%s:5000"]\n' "$REG_NAME" |
    docker exec -i "$node" tee "/etc/containerd/certs.d/localhost:$REG_PORT/hosts.toml" >/dev/null
done
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REG_NAME")" = null ]; then
  docker network connect kind "$REG_NAME"
fi
# Tells tools where the local registry is (the "local registry hosting" convention).
kubectl --context "$KCTX" apply -f - >/dev/null <<KEOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$REG_PORT"
KEOF
kubectl --context "$KCTX" get nodes -o wide
