#!/usr/bin/env bash
# The one command that runs every test of raftkv (README: "Run all the tests").
# It installs what the tests need that a fresh machine with only the Rust toolchain lacks,
# then runs format and lint checks and the whole test suite. Nothing is skipped silently:
# a test whose prerequisite is missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# etcd and etcdctl: the differential, etcdctl and benchmark-side tests. protoc: the etcd-client
# crate (a dev-dependency of the CLI tests) runs it in its build script. ip and iptables: the
# Jepsen-style harness builds its own network namespaces and partitions them. chromium: the
# dashboard test renders the page in a real headless browser.
scripts/ensure-packages.sh etcd:etcd-server etcdctl:etcd-client protoc:protobuf-compiler \
  ip:iproute2 iptables:iptables chromium:chromium
# The Debian package may start a system etcd on 2379; our tests use their own ports only.
# python3 with venv: the gateway test installs an HTTP-only etcd client library from PyPI into
# a virtualenv (crates/raftkv/tests/python_gateway_client.rs).
scripts/ensure-packages.sh python3:python3
# (Debian's python3 makes virtualenvs only with python3-venv, which brings ensurepip.)
if ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --release -- -D warnings

log "cargo test (release)"
cargo test --workspace --release -- --test-threads="${RAFTKV_TEST_THREADS:-2}"

# Issue 11: the fault injection of the Jepsen harness must be in its member binary and in no
# binary we ship or run the integration tests against, as this very test run built them
# (feature unification once slipped it into all of them). `present` keeps the check honest.
log "fault injection only in the Jepsen member"
RELEASE_DIR=${CARGO_TARGET_DIR:-target}/release
scripts/check-fault-hooks.sh present "$RELEASE_DIR/raftkv-jepsen-member"
scripts/check-fault-hooks.sh absent "$RELEASE_DIR/raftkv" "$RELEASE_DIR/raftkv-member"

# The alert rules shipped in deploy/monitoring: promtool accepts them, each fires on the
# series meant to fire it, and the PrometheusRule manifest holds the same rules.
log "alert rules (scripts/check-alert-rules.sh)"
bash scripts/check-alert-rules.sh

# etcd 3.4's own e2e suite, strict mode (etcd's exact command line), the tests listed in the
# script; it installs Go and the suite's Debian package itself (docs/testing.md).
log "etcd's e2e suite against raftkv (scripts/etcd-e2e.sh)"
RAFTKV_BIN="$RELEASE_DIR/raftkv" bash scripts/etcd-e2e.sh

log "container and Kubernetes-manifest tests (Docker, real containers)"
bash scripts/docker-tests.sh
