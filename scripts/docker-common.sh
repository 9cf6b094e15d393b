# shellcheck shell=bash
# Shared by scripts/docker-{up,scenario,down}.sh; sourced, not run.
# Finds the compose tool (Compose v2 plugin or docker-compose 1.x), fixes the project name and
# the image reference so that the three scripts agree on what they created.

die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

command -v docker >/dev/null || die "docker is not installed"
if docker compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE_CMD=(docker-compose)
else
  die "neither 'docker compose' nor 'docker-compose' is available"
fi

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE_FILE=$REPO_ROOT/deploy/compose/compose.yaml
# A project name of our own: `down` then removes only the containers, network and volumes
# labelled with it, never anything else on the machine.
PROJECT=${RAFTKV_COMPOSE_PROJECT:-raftkv-demo}
workspace_version() {
  awk '/^\[workspace\.package\]/{p=1;next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/,"");print;exit}' "$REPO_ROOT/Cargo.toml"
}
export RAFTKV_IMAGE=${RAFTKV_IMAGE:-raftkv:$(workspace_version)}

compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

# The 127.0.0.1:<port> Docker published for member $1's client port (empty if not running).
member_endpoint() { compose port "$1" 2379 2>/dev/null | tail -n1; }
