#!/usr/bin/env bash
# Long seed sweep of the deterministic simulator (docs/simulator.md).
#
#   scripts/sim-sweep.sh [START] [COUNT] [JOBS]
#
# START defaults to 0, COUNT to 100000, JOBS to the number of cores. The range is cut into
# JOBS contiguous slices, one sim-sweep process each (every seed is independent, so the split
# changes nothing but wall time). Extra knobs via the environment:
#   RAFTKV_SIM_FAULT_TICKS  mean fault-phase length per seed (default: the binary's, 400)
#   RAFTKV_SIM_INTENSE=1    the intense profile (up to 7 members, 3x the faults)
#   RAFTKV_SIM_SWEEP_LOG    directory for per-slice logs (default: target/sim-sweep)
# Exits non-zero if any seed failed; every failure is printed with its replay command.
set -euo pipefail
cd "$(dirname "$0")/.."

start=${1:-0}
count=${2:-100000}
jobs=${3:-$(nproc)}
logdir=${RAFTKV_SIM_SWEEP_LOG:-target/sim-sweep}
extra=()
if [[ -n "${RAFTKV_SIM_INTENSE:-}" ]]; then
  extra+=(--intense)
fi
if [[ -n "${RAFTKV_SIM_FAULT_TICKS:-}" ]]; then
  extra+=(--fault-ticks "$RAFTKV_SIM_FAULT_TICKS")
fi

cargo build --release -q -p raftkv-sim --bin sim-sweep
bin="${CARGO_TARGET_DIR:-target}/release/sim-sweep"
mkdir -p "$logdir"

began=$(date +%s.%N)
pids=()
per=$(( (count + jobs - 1) / jobs ))
for ((j = 0; j < jobs; j++)); do
  s=$(( start + j * per ))
  n=$(( per < start + count - s ? per : start + count - s ))
  (( n > 0 )) || continue
  "$bin" --start "$s" --count "$n" --threads 1 "${extra[@]}" >"$logdir/slice-$j.log" 2>&1 &
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
ended=$(date +%s.%N)

grep -h -A4 '^FAILED seed' "$logdir"/slice-*.log || true
grep -h '^swept seeds' "$logdir"/slice-*.log
awk -v n="$count" -v a="$began" -v b="$ended" -v j="$jobs" \
  'BEGIN { t = b - a; printf "sim-sweep: seeds %d..%d on %d jobs in %.1fs = %.0f seeds/s\n", '"$start"', '"$start"' + n, j, t, n / t }'
if (( status != 0 )); then
  echo "sim-sweep: FAILURES above; replay one with: cargo run -p raftkv-sim --release --bin sim-sweep -- --seed N --trace"
fi
exit $status
