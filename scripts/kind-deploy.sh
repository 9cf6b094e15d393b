#!/usr/bin/env bash
# Build the image, push it to the local registry, deploy deploy/k8s into namespace `raftkv`
# and wait until the 3 members are ready (the client Job starts too).
set -euo pipefail
. "$(dirname "$0")/kind-common.sh"
need docker "https://docs.docker.com/engine/install/"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
kubectl config get-contexts "$KCTX" >/dev/null 2>&1 || die "no kind cluster $CLUSTER (run scripts/kind-up.sh)"

log "building the image"
RAFTKV_IMAGE=raftkv RAFTKV_TAG=$VERSION "$REPO_ROOT/scripts/docker-build.sh" >/dev/null
# Tag with the image's own id too: nodes cache images by tag (imagePullPolicy IfNotPresent),
# so a rebuilt image must get a new tag to be pulled, and the changed tag rolls the pods.
IMAGE_REF=$IMAGE-$(docker image inspect -f '{{.Id}}' "raftkv:$VERSION" | cut -d: -f2 | cut -c1-12)
docker tag "raftkv:$VERSION" "$IMAGE_REF"
log "pushing $IMAGE_REF"
docker push -q "$IMAGE_REF" >/dev/null

kubectl --context "$KCTX" get namespace "$NS" >/dev/null 2>&1 || kubectl --context "$KCTX" create namespace "$NS"
# A finished Job cannot be updated in place: replace it.
k delete job raftkv-scenario --ignore-not-found >/dev/null
log "applying deploy/k8s to namespace $NS"
render | kubectl --context "$KCTX" apply -f -
k rollout status statefulset/raftkv --timeout=300s
k get pods -o wide -l app.kubernetes.io/component=member
