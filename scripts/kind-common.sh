# shellcheck shell=bash
# Shared by scripts/kind-*.sh; sourced, not run. These scripts are for a user's own machine
# with internet access (kind pulls its node image and the registry image); they mirror the
# course's workflow: a kind cluster with a local registry and 4 workers, build and push the
# image, deploy the StatefulSet, run the client Job, kill the leader's pod, tear down.

die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
log() { printf '\n==> %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null || die "$1 is not installed ($2)"; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${RAFTKV_KIND_CLUSTER:-raftkv}
# shellcheck disable=SC2034 # used by the scripts that source this file
REG_NAME=${RAFTKV_KIND_REGISTRY:-raftkv-registry}
REG_PORT=${RAFTKV_KIND_REGISTRY_PORT:-5001}
NS=${RAFTKV_NAMESPACE:-raftkv}
VERSION=$(awk '/^\[workspace\.package\]/{p=1;next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/,"");print;exit}' "$REPO_ROOT/Cargo.toml")
# shellcheck disable=SC2034
IMAGE=localhost:$REG_PORT/raftkv:$VERSION
KCTX=kind-$CLUSTER

k() { kubectl --context "$KCTX" -n "$NS" "$@"; }

# Renders deploy/k8s for this cluster: our namespace and the image $IMAGE_REF (default
# $IMAGE) in our local registry. (The base kustomization names the image
# localhost:5001/raftkv:<version>; the overlay re-points that name.)
render() {
  local tmp rel ref=${IMAGE_REF:-$IMAGE}
  tmp=$(mktemp -d)
  rel=$(realpath --relative-to="$tmp" "$REPO_ROOT/deploy/k8s")
  cat >"$tmp/kustomization.yaml" <<KEOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $NS
resources:
  - $rel
images:
  - name: localhost:5001/raftkv
    newName: ${ref%:*}
    newTag: "${ref##*:}"
KEOF
  kubectl kustomize "$tmp"
  rm -rf "$tmp"
}

# `raftkv <args>` run inside member pod $1 (the image has no shell, but exec needs none).
rk() { local pod=$1; shift; k exec "$pod" -c raftkv -- /raftkv "$@"; }

endpoints() {
  local i out=""
  for i in 0 1 2; do out+="${out:+,}http://raftkv-$i.raftkv.$NS.svc.cluster.local:2379"; done
  echo "$out"
}
