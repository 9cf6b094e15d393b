#!/usr/bin/env bash
# Build the raftkv container image `raftkv:<version>` FROM scratch.
#
# Why this way: no base image can be pulled on the build machine (there is no registry), and
# none is needed. We build the release binary on the host with the host's own toolchain (no
# `rustup target add`), then stage a minimal root filesystem holding the binary, exactly the
# shared libraries `ldd` reports for it (plus the dynamic loader), a passwd/group with an
# unprivileged user, and an nsswitch.conf so glibc resolves container names via DNS.
#
# Usage: scripts/docker-build.sh            build with cargo (profile `dist`), then the image
#        RAFTKV_BIN=/path/raftkv scripts/docker-build.sh   use an already built binary
# Env:   RAFTKV_IMAGE   image name (default raftkv)      RAFTKV_PROFILE  cargo profile (default dist)
#        RAFTKV_TAG     tag (default: the workspace version from Cargo.toml)
# Prints the image reference on the last line of stdout (for scripts) and its size on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'docker-build: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (is it running? are you allowed to use it?)"
[ "$(uname -s)" = Linux ] || die "the image holds the host-built Linux binary: build it on Linux"

workspace_version() {
  # The `version` line of [workspace.package] in the root Cargo.toml.
  awk '/^\[workspace\.package\]/{p=1;next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/,"");print;exit}' Cargo.toml
}

IMAGE=${RAFTKV_IMAGE:-raftkv}
TAG=${RAFTKV_TAG:-$(workspace_version)}
[ -n "$TAG" ] || die "could not read the workspace version from Cargo.toml"
PROFILE=${RAFTKV_PROFILE:-dist}

if [ -n "${RAFTKV_BIN:-}" ]; then
  BIN=$RAFTKV_BIN
  [ -x "$BIN" ] || die "RAFTKV_BIN=$BIN is not an executable file"
else
  log "cargo build --profile $PROFILE -p raftkv"
  cargo build --profile "$PROFILE" -p raftkv >&2
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/raftkv
  [ -x "$BIN" ] || die "cargo did not produce $BIN"
fi

CTX=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/rootfs/etc" "$CTX/rootfs/tmp" "$CTX/data"
chmod 1777 "$CTX/rootfs/tmp"
chmod 0755 "$CTX/rootfs" "$CTX/rootfs/etc" "$CTX/data"

cp "$BIN" "$CTX/rootfs/raftkv"
# Symbols are of no use in the image; stripping the copy roughly halves it.
if command -v strip >/dev/null; then strip --strip-all "$CTX/rootfs/raftkv"; fi
chmod 0755 "$CTX/rootfs/raftkv"
# The image is what we ship: refuse one whose binary carries the Jepsen harness's fault code.
scripts/check-fault-hooks.sh absent "$CTX/rootfs/raftkv" >&2

# Every library ldd lists, copied (symlinks resolved) to the very path the loader will look at.
# Lines look like "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file and is skipped.
LDD_OUT=$(ldd "$BIN" 2>&1 || true)
if grep -q "not found" <<<"$LDD_OUT"; then
  die "ldd cannot resolve every library of $BIN:
$LDD_OUT"
fi
if grep -qE "statically linked|not a dynamic executable" <<<"$LDD_OUT"; then
  log "binary is static: no shared libraries to stage"
else
  while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$CTX/rootfs$(dirname "$lib")"
    cp -L "$lib" "$CTX/rootfs$lib"
    log "staged $lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$LDD_OUT" | sort -u)
fi

cat >"$CTX/rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
raftkv:x:65532:65532:raftkv:/data:/sbin/nologin
EOF
cat >"$CTX/rootfs/etc/group" <<'EOF'
root:x:0:
raftkv:x:65532:
EOF
# glibc >= 2.34 has the files and dns NSS modules built in, so this file is all it needs.
echo "hosts: files dns" >"$CTX/rootfs/etc/nsswitch.conf"
chmod 0644 "$CTX/rootfs/etc/"*

cp deploy/docker/Dockerfile "$CTX/Dockerfile"

REF="$IMAGE:$TAG"
log "docker build -t $REF"
docker build --quiet --build-arg VERSION="$TAG" --label "org.opencontainers.image.revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" -t "$REF" "$CTX" >&2

SIZE=$(docker image inspect -f '{{.Size}}' "$REF")
printf '==> image %s: %s bytes (%s MB); target under 30 MB\n' "$REF" "$SIZE" "$(awk -v s="$SIZE" 'BEGIN{printf "%.1f", s/1000000}')" >&2
if [ "$SIZE" -ge 30000000 ]; then
  log "WARNING: the image is over the 30 MB target"
fi
echo "$REF"
