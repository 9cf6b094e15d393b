#!/usr/bin/env bash
# Prove where the test-only fault injection is, and where it is not (issue 11).
#
# The faults live in crates/jepsen (module `faults`) and reach a process only through the
# harness's member binary, raftkv-jepsen-member. Shipped binaries (raftkv, raftkv-member, the
# container image) must not contain them. Two fingerprints, both from crates/jepsen/src/faults.rs:
#   - FAULT_BUILD_MARKER, a string the fault code writes to the member log (in .rodata, so it
#     survives `strip`, as in the image);
#   - the type name DeferredSyncFs, in the symbol names of its methods (unstripped builds).
#
# Usage: scripts/check-fault-hooks.sh present BINARY...   every BINARY has both fingerprints
#        scripts/check-fault-hooks.sh absent BINARY...    no BINARY has either
# Run `present` on the jepsen member in the same breath as `absent`: it keeps the check honest,
# since a renamed marker or type would otherwise make `absent` pass without looking at anything.
set -euo pipefail

MARKER=raftkv-test-only-fault-injection
SYMBOL=DeferredSyncFs

die() { printf 'check-fault-hooks: %s\n' "$*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 present|absent BINARY..."
mode=$1
shift
case $mode in present | absent) ;; *) die "unknown mode '$mode' (present or absent)" ;; esac

for bin in "$@"; do
  [ -f "$bin" ] || die "$bin does not exist (was it built?)"
  found=()
  for fingerprint in "$MARKER" "$SYMBOL"; do
    if grep -q -a -F -- "$fingerprint" "$bin"; then found+=("$fingerprint"); fi
  done
  if [ "$mode" = present ]; then
    [ "${#found[@]}" -eq 2 ] ||
      die "FAILED: $bin should contain the fault code but has only [${found[*]}] of [$MARKER $SYMBOL] (renamed in crates/jepsen/src/faults.rs? update this script)"
    printf 'check-fault-hooks: ok, %s contains the fault code (%s, %s)\n' "$bin" "$MARKER" "$SYMBOL"
  else
    [ "${#found[@]}" -eq 0 ] ||
      die "FAILED: $bin contains test-only fault code: [${found[*]}] — a shipped binary must not link crates/jepsen's faults"
    printf 'check-fault-hooks: ok, %s has no fault code\n' "$bin"
  fi
done
