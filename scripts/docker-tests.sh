#!/usr/bin/env bash
# The deployment's part of the test run (issue 5), one entry for scripts/test.sh:
#   1. scripts/validate-manifests.sh  Kubernetes schemas, kustomize output, compose file, and
#                                     the manifests' server flags through `raftkv server --dry-run`;
#   2. tests-docker/run.sh            the image and the container fault tests (t0-t8), the mutual-TLS compose run (t9) the compose scaling run 3 → 5 → 3 (t10),
#                                     replacing a wiped member (t11) and move-leader (t12).
# Uses the release binary the workspace tests just built (no extra cargo build):
# RAFTKV_BIN, else ${CARGO_TARGET_DIR:-target}/release/raftkv. Fails if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAFTKV_BIN=${RAFTKV_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/raftkv}
[ -x "$RAFTKV_BIN" ] || { echo "docker-tests: no raftkv binary at $RAFTKV_BIN (run 'cargo build --release -p raftkv' or set RAFTKV_BIN)" >&2; exit 1; }

printf '\n==> deployment manifests\n'
scripts/validate-manifests.sh
printf '\n==> container fault tests\n'
tests-docker/run.sh "$@"
