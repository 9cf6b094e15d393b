#!/usr/bin/env bash
# The long version of the Jepsen-style runs (the short version runs in the default test suite:
# crates/jepsen/tests/). Needs root, iproute2 and iptables: real raftkv members run in network
# namespaces of their own, joined by a bridge; partitions are iptables rules inside them.
#
#   scripts/jepsen.sh [RUNS] [SECONDS] [OUT_DIR] [extra raftkv-jepsen flags...]
#
# e.g. scripts/jepsen.sh 10 60 /tmp/jepsen-long --faults all --lose-unsynced
# Exit status: 0 every history passed, 1 some history failed a check, 2 the harness failed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
SECONDS_PER_RUN=${2:-60}
OUT=${3:-/tmp/raftkv-jepsen-$(date -u +%Y%m%dT%H%M%SZ)}
shift $(( $# < 3 ? $# : 3 ))
if [ "$(id -u)" != 0 ]; then echo "jepsen.sh: needs root (network namespaces)" >&2; exit 2; fi
command -v iptables >/dev/null || { echo "jepsen.sh: iptables missing (apt-get install iptables)" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -p raftkv-jepsen --bins
echo "writing runs to $OUT"
"$CARGO_TARGET_DIR/release/raftkv-jepsen" --runs "$RUNS" --duration "$SECONDS_PER_RUN" --out "$OUT" "$@"
