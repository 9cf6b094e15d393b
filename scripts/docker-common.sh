# shellcheck shell=bash
# Shared by scripts/docker-{up,scenario,down}.sh; sourced, not run.
# Finds the compose tool (Compose v2 plugin or docker-compose 1.x), fixes the project name and
# the image reference so that the three scripts agree on what they created.
# With RAFTKV_TLS_DIR set (the --out directory of scripts/gen-certs.sh) they run the TLS
# variant: deploy/compose/compose.tls.yaml on top of compose.yaml.

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

COMPOSE_FILES=(-f "$COMPOSE_FILE")
SCHEME=http
if [ -n "${RAFTKV_TLS_DIR:-}" ]; then
  RAFTKV_TLS_DIR=$(cd "$RAFTKV_TLS_DIR" && pwd) || die "RAFTKV_TLS_DIR=$RAFTKV_TLS_DIR is not a directory"
  export RAFTKV_TLS_DIR
  for f in members/ca.pem client/client.pem client/client-key.pem; do
    [ -f "$RAFTKV_TLS_DIR/$f" ] || die "$RAFTKV_TLS_DIR/$f is missing (make the certificates with scripts/gen-certs.sh --out $RAFTKV_TLS_DIR --owner 65532:65532)"
  done
  COMPOSE_FILES+=(-f "$REPO_ROOT/deploy/compose/compose.tls.yaml")
  SCHEME=https
fi

compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }

# curl arguments for a member's client port: the CA and client certificate in the TLS variant.
# The certificates name 127.0.0.1, which is where the published ports are.
member_curl_args() {
  if [ "$SCHEME" = https ]; then
    printf '%s\n' --cacert "$RAFTKV_TLS_DIR/client/ca.pem" --cert "$RAFTKV_TLS_DIR/client/client.pem" --key "$RAFTKV_TLS_DIR/client/client-key.pem"
  fi
}

# The 127.0.0.1:<port> Docker published for member $1's client port (empty if not running).
member_endpoint() { compose port "$1" 2379 2>/dev/null | tail -n1; }
