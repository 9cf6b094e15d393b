#!/usr/bin/env bash
# The one command that runs every test of raftkv (README: "Run all the tests").
# It installs what the tests need that a fresh machine with only the Rust toolchain lacks,
# then runs format and lint checks and the whole test suite. Nothing is skipped silently:
# a test whose prerequisite is missing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
# The etcd-client crate (a dev-dependency of the CLI tests) runs protoc in its build script.
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# The Jepsen-style harness builds its own network namespaces and partitions them.
command -v ip >/dev/null || need_apt+=(iproute2)
command -v iptables >/dev/null || need_apt+=(iptables)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]} (Debian packages the tests use)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The Debian package may start a system etcd on 2379; our tests use their own ports only.

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --release -- -D warnings

log "cargo test (release)"
cargo test --workspace --release -- --test-threads="${RAFTKV_TEST_THREADS:-2}"

log "container and Kubernetes-manifest tests (Docker, real containers)"
bash scripts/docker-tests.sh
