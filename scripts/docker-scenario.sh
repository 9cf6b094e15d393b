#!/usr/bin/env bash
# Run the course scenario (`raftkv demo`, the non-destructive part) from a client container on
# the cluster's private network, as the course's client pod did. Exit status is the demo's.
# Extra arguments replace the client's command, e.g.
#   scripts/docker-scenario.sh get --endpoints http://raftkv-0:2379 k1
set -euo pipefail
. "$(dirname "$0")/docker-common.sh"

running=$(compose ps -q raftkv-0 raftkv-1 raftkv-2 | wc -l)
[ "$running" -eq 3 ] || die "the cluster of project $PROJECT is not up (run scripts/docker-up.sh)"
log "running the client container of project $PROJECT"
compose run --rm client "$@"
