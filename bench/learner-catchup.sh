#!/usr/bin/env bash
# Side-by-side learner catch-up of etcd 3.4 and raftkv on a large store (issue 15's figure:
# time from `member add` to the new learner being caught up with a 1 GiB store, and the write
# unavailability while a learner is added and promoted).
#
# For each system in turn (etcd first, then raftkv; one cluster at a time, so the two never
# share the machine), with bench/cluster-lib.sh's flags (fsync on, --heartbeat-interval 100
# --election-timeout 1000, the same --snapshot-count and --quota-backend-bytes for both):
#   1. start 3 members on loopback and fill the store through the leader: KEYS keys of VAL_SIZE
#      bytes (16-byte keys), each written once (`raftkv-bench put --fill`, FILL_CLIENTS clients);
#   2. start a steady writer (`raftkv-bench put --rate WRITE_RATE --trace`, spread over the three
#      members, keys within the filled space so the live data keeps its size) that records the
#      wall-clock time of every acknowledged write and every error;
#   3. `member add --learner` a 4th member, start it with an empty data dir and
#      `--initial-cluster-state existing`, and poll the leader and the learner (Status, every
#      POLL_MS): the learner is *caught up* at the first poll where its revision is at least the
#      leader's revision read just before it in the same poll;
#   4. `member promote` the learner (retried while the leader answers "not in sync"), then keep
#      the writer going TAIL seconds and stop it; optionally (VERIFY_HASH=1) compare HashKV of
#      all four members at one revision once the writer stopped.
# Reported per system: fill time and rate, catch-up time (add -> caught up), promote latency,
# the writer's longest gap between consecutive acknowledged writes and its errors in each phase
# (before the add, add -> learner started, catch-up, promote), the learner's peak RSS (VmHWM)
# and its RSS at the end (VmRSS, TAIL seconds after the promote), and the leader's peak RSS;
# then raftkv/etcd ratios. Writes bench/results/$REPORT_NAME.md; raw traces and logs stay in
# bench/out/<time>-learner-catchup/.
#
# Not a test (a 1 GiB run takes about 15-25 minutes on the 2-core dev machine and ~10 GB of
# disk); the smoke size `SIZE_MIB=10` takes about a minute.
#
# Knobs (environment): SIZE_MIB (1024: live data = KEYS x VAL_SIZE), VAL_SIZE (1024), KEYS
# (SIZE_MIB MiB / VAL_SIZE), FILL_CLIENTS (200), FILL_CONNS (10), WRITE_RATE (100 puts/s),
# WRITER_CLIENTS (6), BASELINE (5 s of writes before the add), TAIL (5 s after the promote),
# CATCHUP_TIMEOUT (900 s), POLL_MS (100), SNAPSHOT_COUNT (100000, both systems),
# QUOTA_BYTES (8 GiB, both systems), SYSTEMS ("etcd raftkv"), VERIFY_HASH (1), PORT_BASE
# (15000: etcd clients PORT_BASE+1..4, peers +101..104; raftkv +201..204 / +301..304),
# WORK_ROOT (/tmp: data dirs, removed at the end), REPORT_NAME (learner-catchup),
# SKIP_BUILD=1 with RAFTKV and BENCH (prebuilt binaries), ETCD, ETCDCTL, RAFTKV_FLAGS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export ETCDCTL_API=3
SIZE_MIB=${SIZE_MIB:-1024}
VAL_SIZE=${VAL_SIZE:-1024}
KEYS=${KEYS:-$((SIZE_MIB * 1048576 / VAL_SIZE))}
FILL_CLIENTS=${FILL_CLIENTS:-200}
FILL_CONNS=${FILL_CONNS:-10}
WRITE_RATE=${WRITE_RATE:-100}
WRITER_CLIENTS=${WRITER_CLIENTS:-6}
BASELINE=${BASELINE:-5}
TAIL=${TAIL:-5}
CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-900}
POLL_MS=${POLL_MS:-100}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-100000}
QUOTA_BYTES=${QUOTA_BYTES:-$((8 << 30))}
SYSTEMS=${SYSTEMS:-"etcd raftkv"}
VERIFY_HASH=${VERIFY_HASH:-1}
PORT_BASE=${PORT_BASE:-15000}
WORK_ROOT=${WORK_ROOT:-/tmp}
REPORT_NAME=${REPORT_NAME:-learner-catchup}
[[ -n ${ETCD:-} && -n ${ETCDCTL:-} ]] || "$ROOT/scripts/ensure-packages.sh" etcd:etcd-server etcdctl:etcd-client
ETCD=${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl || echo /usr/bin/etcdctl)}
exec 9>/tmp/raftkv-learner-catchup.lock
flock -n 9 || { echo "another bench/learner-catchup.sh is running (lock /tmp/raftkv-learner-catchup.lock)" >&2; exit 1; }
OUT=$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)-learner-catchup
WORK=$(mktemp -d "$WORK_ROOT/raftkv-learner-catchup.XXXXXX")
mkdir -p "$OUT/logs"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building raftkv and raftkv-bench (release)"
  (cd "$ROOT" && cargo build --release -p raftkv -p raftkv-bench)
fi
RAFTKV=${RAFTKV:-$CARGO_TARGET_DIR/release/raftkv}
BENCH=${BENCH:-$CARGO_TARGET_DIR/release/raftkv-bench}
[[ -x $ETCD && -x $ETCDCTL && -x $RAFTKV && -x $BENCH ]] || { echo "missing etcd, etcdctl, raftkv or raftkv-bench" >&2; exit 1; }

CLUSTER_PORTS="$PORT_BASE $((PORT_BASE + 200))" CLUSTER_NAME=learner-catchup
ETCD_FLAGS="--quota-backend-bytes $QUOTA_BYTES"
RAFTKV_FLAGS="--quota-backend-bytes $QUOTA_BYTES ${RAFTKV_FLAGS:-}"
# shellcheck source=bench/cluster-lib.sh
source "$ROOT/bench/cluster-lib.sh"
WRITER_PID=""
stop_writer() { [[ -z $WRITER_PID ]] || { kill -TERM "$WRITER_PID" 2>/dev/null || true; wait "$WRITER_PID" 2>/dev/null || true; WRITER_PID=""; }; }
trap 'stop_writer; cleanup' EXIT INT TERM

df -h "$WORK_ROOT" | tail -1 | awk -v need="$((SIZE_MIB * 10))" '{print "disk under the work dir: " $4 " free; this size needs about " need " MiB"}' >&2
{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Versions: $("$ETCD" --version | head -1); raftkv $(cd "$ROOT" && git rev-parse --short HEAD) (release)."
} >"$OUT/notes.md"

status_field() { # endpoint field -> value from `endpoint status -w fields`
  "$ETCDCTL" --endpoints="$1" --command-timeout=5s endpoint status -w fields 2>/dev/null |
    awk -F' : ' -v f="\"$2\"" '$1 == f {print $2; exit}' || true # a member not answering yet: empty
}
rss_mib() { awk -v k="$2" '$1 == k":" {printf "%.0f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# One whole run against one system; results go to $OUT/<sys>.env as shell assignments.
run_system() {
  local sys=$1 l lurl learner_url i res="$OUT/$sys.env"
  log "$sys: starting 3 members (data under $WORK/$sys)"
  for i in 1 2 3; do start_member "$sys" "$i"; done
  wait_ready "$sys"
  l=$(leader_of "$sys")
  lurl=$(client_url "$sys" "$l")
  echo "leader=$sys$l" >"$res"

  log "$sys: filling $KEYS keys x $VAL_SIZE B through the leader ($FILL_CLIENTS clients)"
  local t0 t1
  t0=$(now)
  "$BENCH" --endpoints="$lurl" --conns "$FILL_CONNS" --clients "$FILL_CLIENTS" --total "$KEYS" \
    --no-progress -w json put --fill --key-size 16 --val-size "$VAL_SIZE" --key-space-size "$KEYS" \
    >"$OUT/$sys-fill.json"
  t1=$(now)
  python3 - "$OUT/$sys-fill.json" "$t0" "$t1" >>"$res" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
errors = sum(r.get("errors", {}).values()) if isinstance(r.get("errors"), dict) else r.get("errors", 0)
print(f"fill_s={float(sys.argv[3]) - float(sys.argv[2]):.1f}")
print(f"fill_errors={errors}")
EOF
  local db; db=$(status_field "$lurl" DBSize)
  echo "db_size_mib=$(( ${db:-0} / 1048576 ))" >>"$res"
  echo "leader_rss_before_mib=$(rss_mib "${PID[$sys-$l]}" VmRSS)" >>"$res"

  log "$sys: steady writer at $WRITE_RATE puts/s over the three members"
  local duration=$((BASELINE + CATCHUP_TIMEOUT + 300))
  "$BENCH" --endpoints="$(endpoints "$sys")" --conns 3 --clients "$WRITER_CLIENTS" --rate "$WRITE_RATE" \
    --duration "$duration" --request-timeout-ms 5000 --no-progress --trace "$OUT/$sys-writer.trace" -w json \
    put --key-size 16 --val-size "$VAL_SIZE" --key-space-size "$((KEYS < 10000 ? KEYS : 10000))" \
    >"$OUT/$sys-writer.json" 2>"$OUT/logs/$sys-writer.err" &
  WRITER_PID=$!
  sleep "$BASELINE"

  learner_url=$(client_url "$sys" 4)
  local cluster="" j
  for j in 1 2 3 4; do cluster+="${sys}$j=$(peer_url "$sys" "$j"),"; done
  local t_add t_added t_started t_caught="" t_promote t_promoted member_id out
  t_add=$(now)
  out=$("$ETCDCTL" --endpoints="$lurl" --command-timeout=30s member add "${sys}4" --learner --peer-urls="$(peer_url "$sys" 4)")
  t_added=$(now)
  echo "$out" >"$OUT/$sys-member-add.txt"
  member_id=$(awk '/^Member / {print $2; exit}' <<<"$out")
  [[ -n $member_id ]] || { echo "$sys: member add printed no id: $out" >&2; return 1; }
  local cmd extra=()
  if [[ $sys == etcd ]]; then read -ra extra <<<"$ETCD_FLAGS"; cmd=("$ETCD" "${extra[@]}")
  else read -ra extra <<<"$RAFTKV_FLAGS"; cmd=("$RAFTKV" server "${extra[@]}"); fi
  "${cmd[@]}" --name "${sys}4" --data-dir "$WORK/$sys/m4" \
    --listen-client-urls "$learner_url" --advertise-client-urls "$learner_url" \
    --listen-peer-urls "$(peer_url "$sys" 4)" --initial-advertise-peer-urls "$(peer_url "$sys" 4)" \
    --initial-cluster "${cluster%,}" --initial-cluster-token "$CLUSTER_NAME-$sys" --initial-cluster-state existing \
    --heartbeat-interval 100 --election-timeout 1000 --snapshot-count "$SNAPSHOT_COUNT" \
    >>"$OUT/logs/$sys-m4.log" 2>&1 &
  PID[$sys-4]=$!
  t_started=$(now)
  log "$sys: learner $member_id added and started; polling until it is caught up"

  local deadline=$((SECONDS + CATCHUP_TIMEOUT)) rl rn polls="$OUT/$sys-polls.txt"
  while ((SECONDS < deadline)); do
    kill -0 "${PID[$sys-4]}" 2>/dev/null || { echo "$sys: the learner exited; see $OUT/logs/$sys-m4.log" >&2; return 1; }
    rl=$(status_field "$lurl" Revision)
    rn=$(status_field "$learner_url" Revision)
    echo "$(now) leader=${rl:-?} learner=${rn:-?} learner_rss_mib=$(rss_mib "${PID[$sys-4]}" VmRSS)" >>"$polls"
    if [[ -n $rl && -n $rn ]] && ((rn >= rl)); then t_caught=$(now); break; fi
    sleep "$(awk -v m="$POLL_MS" 'BEGIN {print m / 1000}')"
  done
  [[ -n $t_caught ]] || { echo "$sys: learner not caught up within ${CATCHUP_TIMEOUT}s; see $OUT/logs" >&2; return 1; }
  log "$sys: caught up at revision $rn; promoting"

  local attempts=0
  t_promote=$(now)
  until out=$("$ETCDCTL" --endpoints="$lurl" --command-timeout=30s member promote "$member_id" 2>&1); do
    attempts=$((attempts + 1))
    grep -q "in sync" <<<"$out" && ((attempts < 100)) || { echo "$sys: promote failed: $out" >&2; return 1; }
    sleep 0.1
  done
  t_promoted=$(now)
  sleep "$TAIL"
  stop_writer
  {
    echo "t_add=$t_add"; echo "t_added=$t_added"; echo "t_started=$t_started"; echo "t_caught=$t_caught"
    echo "t_promote=$t_promote"; echo "t_promoted=$t_promoted"; echo "promote_refusals=$attempts"
    echo "learner_peak_rss_mib=$(rss_mib "${PID[$sys-4]}" VmHWM)"
    echo "learner_rss_end_mib=$(rss_mib "${PID[$sys-4]}" VmRSS)"
    echo "leader_peak_rss_mib=$(rss_mib "${PID[$sys-$l]}" VmHWM)"
    echo "learner_snap_mib=$(du -sm "$WORK/$sys/m4" | cut -f1)"
  } >>"$res"

  if [[ $VERIFY_HASH == 1 ]]; then
    log "$sys: HashKV of the four members at one revision"
    local rev hashes=""
    rev=$(status_field "$lurl" Revision)
    for i in 1 2 3 4; do
      local h="" d=$((SECONDS + 120))
      until [[ -n $h ]] || ((SECONDS > d)); do
        h=$("$ETCDCTL" --endpoints="$(client_url "$sys" "$i")" --command-timeout=120s endpoint hashkv --rev="$rev" -w fields 2>/dev/null |
          awk -F' : ' '$1 == "\"Hash\"" {print $2}') || true
        [[ -n $h ]] || sleep 0.5
      done
      hashes+="${h:-none} "
    done
    echo "hashkv_rev=$rev" >>"$res"
    echo "hashkv=\"${hashes% }\"" >>"$res"
  fi
  for i in 1 2 3 4; do kill -9 "${PID[$sys-$i]}" 2>/dev/null || true; wait "${PID[$sys-$i]}" 2>/dev/null || true; unset "PID[$sys-$i]"; done
  rm -rf "${WORK:?}/$sys"
  log "$sys: done"
}

# The report is written even when a system fails (say, a learner that never catches up): the
# figures measured until then are worth having, and the failure is named in it.
report() {
  echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$OUT/notes.md"
  mkdir -p "$ROOT/bench/results"
  python3 "$ROOT/bench/learner-catchup-report.py" "$OUT" "$SYSTEMS" \
    "SIZE_MIB=$SIZE_MIB VAL_SIZE=$VAL_SIZE KEYS=$KEYS WRITE_RATE=$WRITE_RATE SNAPSHOT_COUNT=$SNAPSHOT_COUNT bench/learner-catchup.sh" \
    >"$ROOT/bench/results/$REPORT_NAME.md" && cat "$ROOT/bench/results/$REPORT_NAME.md"
  log "report: bench/results/$REPORT_NAME.md; raw: $OUT"
}
trap 'rc=$?; stop_writer; report || true; cleanup; exit $rc' EXIT
trap 'exit 130' INT TERM

for sys in $SYSTEMS; do run_system "$sys"; done
