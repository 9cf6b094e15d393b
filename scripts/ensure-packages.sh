#!/usr/bin/env bash
# Install the Debian packages that provide missing commands.
# Usage: scripts/ensure-packages.sh COMMAND:PACKAGE ...   (e.g. etcd:etcd-server)
# Used by the test command and the benchmark scripts, so a fresh machine with only the Rust
# toolchain gets what they run; a command that is already on PATH is left alone.
set -euo pipefail
need=()
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
((${#need[@]})) || exit 0
echo "==> installing ${need[*]} (Debian packages)" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
