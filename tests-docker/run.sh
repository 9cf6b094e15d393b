#!/usr/bin/env bash
# Container fault tests of raftkv (issue 5, tests 1-9 and the image checks) and membership
# changes (issue 15: t10 scaling 3 → 5 → 3, t11 replacing a wiped member, t12 move-leader).
#
#   tests-docker/run.sh            build a test image from the release binary, run all tests
#   tests-docker/run.sh t4         only the tests whose name contains t4
# Env: RAFTKV_IMAGE     use this existing image instead of building one
#      RAFTKV_BIN       build the test image from this binary (default: cargo build --release)
#      RAFTKV_DOCKER_TIMEOUT   seconds for the whole run (default 1500)
#
# Needs Docker, root (the tests reach members through their network namespace with nsenter),
# and etcdctl (installed from Debian's etcd-client if missing). Everything it creates carries
# a per-run label and is removed on exit, also on failure or Ctrl-C: its containers, networks,
# volumes, its compose project and the test image it built. Nothing else is touched.
# Prints every measured figure at the end; exit status is that of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() { printf 'tests-docker: %s\n' "$*" >&2; exit 1; }
log() { printf '\n==> %s\n' "$*"; }

command -v docker >/dev/null || die "docker is not installed (needed by the container tests)"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (needed by the container tests)"
[ "$(id -u)" = 0 ] || die "run as root: the tests use nsenter to reach members"
command -v nsenter >/dev/null || die "nsenter (util-linux) is missing"
command -v curl >/dev/null || die "curl is missing"
if ! command -v etcdctl >/dev/null; then
  log "installing etcdctl (Debian package etcd-client)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-client >/dev/null
fi

RUN_ID=$(printf '%x%x' "$(date +%s)" "$$" | tail -c 8)
export RAFTKV_DOCKER_RUN_ID=$RUN_ID
export RAFTKV_REPO_ROOT=$ROOT
RESULTS=$(mktemp "${TMPDIR:-/tmp}/raftkv-docker-results.XXXXXX")
export RAFTKV_DOCKER_RESULTS=$RESULTS
BUILT_IMAGE=""

cleanup() {
  local status=$?
  # Only resources labelled with this run's id (or its compose projects) are removed.
  local filters=("label=raftkv-docker-test=$RUN_ID")
  for p in $(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | sort -u | grep "^rkvt-$RUN_ID-" || true); do
    filters+=("label=com.docker.compose.project=$p")
  done
  for f in "${filters[@]}"; do
    ids=$(docker ps -aq --filter "$f")
    if [ -n "$ids" ]; then
      docker unpause $ids >/dev/null 2>&1 || true
      docker rm -f -v $ids >/dev/null 2>&1 || true
    fi
    for n in $(docker network ls -q --filter "$f"); do docker network rm "$n" >/dev/null 2>&1 || true; done
    for v in $(docker volume ls -q --filter "$f"); do docker volume rm "$v" >/dev/null 2>&1 || true; done
  done
  for v in $(docker volume ls -q | grep "^rkvt-$RUN_ID-" || true); do docker volume rm "$v" >/dev/null 2>&1 || true; done
  for n in $(docker network ls --format '{{.Name}}' | grep "^rkvt-$RUN_ID-" || true); do docker network rm "$n" >/dev/null 2>&1 || true; done
  if [ -n "$BUILT_IMAGE" ]; then docker image rm "$BUILT_IMAGE" >/dev/null 2>&1 || true; fi
  rm -f "$RESULTS"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${RAFTKV_IMAGE:-}" ]; then
  docker image inspect "$RAFTKV_IMAGE" >/dev/null 2>&1 || die "RAFTKV_IMAGE=$RAFTKV_IMAGE does not exist"
else
  if [ -z "${RAFTKV_BIN:-}" ]; then
    log "cargo build --release -p raftkv (the binary the test image holds)"
    cargo build --release -p raftkv
    RAFTKV_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/raftkv
  fi
  log "building the test image from $RAFTKV_BIN"
  BUILT_IMAGE=raftkv-test:$RUN_ID
  RAFTKV_BIN=$RAFTKV_BIN RAFTKV_IMAGE=raftkv-test RAFTKV_TAG=$RUN_ID scripts/docker-build.sh >/dev/null
  export RAFTKV_IMAGE=$BUILT_IMAGE
fi

log "tests-docker: cargo fmt --check and clippy"
cargo fmt --manifest-path tests-docker/Cargo.toml -- --check
cargo clippy --release --manifest-path tests-docker/Cargo.toml --all-targets -- -D warnings

log "container fault tests against $RAFTKV_IMAGE (run id $RUN_ID)"
# In a process group of its own, so that an interrupt stops cargo, the test binary and the
# docker commands it runs together, before the cleanup above removes what they created.
set +e
setsid timeout -k 15 "${RAFTKV_DOCKER_TIMEOUT:-1500}" \
  cargo test --release --manifest-path tests-docker/Cargo.toml -- --test-threads=1 --nocapture "$@" &
TEST_PID=$!
trap 'kill -TERM -- "-$TEST_PID" 2>/dev/null; wait "$TEST_PID"; exit 130' INT TERM
wait "$TEST_PID"
status=$?
set -e
[ "$status" = 124 ] && echo "tests-docker: the run exceeded ${RAFTKV_DOCKER_TIMEOUT:-1500}s and was stopped" >&2

log "measured figures"
sed 's/^MEASURE /  /' "$RESULTS" || true
exit "$status"
